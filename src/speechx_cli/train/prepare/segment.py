"""Long recordings (LibriLight-style chapters) cut at pauses into utterances of MIN..MAX seconds.

Cut points are chosen from candidates (time, weight): the middles of silent runs, weighted by their
length, for audio without a transcript; the middles of the pauses between aligned words for audio
with one. From each segment's start the next cut is the heaviest candidate between MIN and MAX
seconds later that leaves at least MIN seconds after it (ties: the later one); where there is none,
the cut falls at MAX (or earlier, to leave MIN). Energies are computed block by block, so a
recording is never held whole: an hour costs ~1 MB of frame energies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Sequence

import numpy as np

MIN_SECONDS = 3.0
MAX_SECONDS = 20.0
FRAME_SECONDS = 0.02  # energy frames
SILENCE_BELOW_LOUD_DB = 35.0  # a frame this far below the recording's loud level is silent ...
SILENCE_ABOVE_FLOOR_DB = 6.0  # ... unless it is within this of the noise floor's level: then that decides
MIN_PAUSE_SECONDS = 0.06  # shorter silent runs are not pauses
SPEECH_SHARE = 0.1  # a segment with fewer non-silent frames than this is silence, dropped


@dataclass(frozen=True)
class Energies:
    """Frame levels (dB) of a recording and its silence threshold."""

    db: np.ndarray  # (F,)
    frame_seconds: float

    @cached_property
    def threshold(self) -> float:
        if not len(self.db):
            return 0.0
        loud, floor = np.percentile(self.db, 95), np.percentile(self.db, 10)
        return float(max(loud - SILENCE_BELOW_LOUD_DB, floor + SILENCE_ABOVE_FLOOR_DB))

    @cached_property
    def silent(self) -> np.ndarray:
        return self.db < self.threshold

    def speech_share(self, start: float, end: float) -> float:
        a = int(start / self.frame_seconds)
        b = min(len(self.db), max(int(end / self.frame_seconds), a + 1))
        return float(np.mean(~self.silent[a:b])) if b > a else 0.0


def frame_energies(blocks: Iterable[np.ndarray], sample_rate: int) -> Energies:
    """Levels of FRAME_SECONDS frames over a stream of mono blocks."""
    hop = max(1, int(round(FRAME_SECONDS * sample_rate)))
    out, rest = [], np.zeros(0, np.float32)
    for block in blocks:
        x = np.concatenate([rest, block])
        n = len(x) // hop
        frames = x[: n * hop].reshape(n, hop).astype(np.float64)
        out.append(10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-12))
        rest = x[n * hop:]
    if len(rest):
        out.append(np.array([10 * np.log10(np.mean(rest.astype(np.float64) ** 2) + 1e-12)]))
    return Energies(np.concatenate(out) if out else np.zeros(0), hop / sample_rate)


def pause_candidates(energies: Energies) -> list[tuple[float, float]]:
    """(middle time s, length s) of every silent run of at least MIN_PAUSE_SECONDS."""
    silent = energies.silent.astype(np.int8)
    edges = np.diff(np.concatenate([[0], silent, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    fs = energies.frame_seconds
    return [((a + b) / 2 * fs, (b - a) * fs) for a, b in zip(starts, ends) if (b - a) * fs >= MIN_PAUSE_SECONDS]


def word_candidates(words: Sequence[dict]) -> list[tuple[float, float]]:
    """(middle, length) of the pause between each pair of consecutive words (zero-length pauses too)."""
    return [((a["end"] + b["start"]) / 2, max(0.0, b["start"] - a["end"])) for a, b in zip(words, words[1:])]


def choose_cuts(candidates: Sequence[tuple[float, float]], duration: float, low: float = MIN_SECONDS,
                high: float = MAX_SECONDS) -> list[tuple[float, float]]:
    """Segments (start, end) covering [0, duration], each low..high s long (one shorter segment only
    when the whole recording is shorter than low)."""
    cands = sorted(candidates)
    segments, start = [], 0.0
    while duration - start > high:
        last = min(start + high, duration - low)
        eligible = [(w, t) for t, w in cands if start + low <= t <= last]
        cut = max(eligible)[1] if eligible else max(last, start + low)
        segments.append((start, cut))
        start = cut
    segments.append((start, duration))
    return segments


def words_in(words: Sequence[dict], start: float, end: float) -> list[dict]:
    """The words whose middle lies in [start, end), their times relative to start (clamped to it)."""
    out = []
    for w in words:
        if start <= (w["start"] + w["end"]) / 2 < end:
            a, b = max(w["start"], start) - start, min(w["end"], end) - start
            out.append({"word": w["word"], "start": round(a, 3), "end": round(max(a, b), 3)})
    return out
