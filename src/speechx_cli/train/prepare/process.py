"""One recording -> manifest records: read and check its audio, time its words, cut it if long.

A recording the sound file library reads is referenced where it lies (no copy); one it cannot
(m4a, ...) is converted to FLAC, and the pieces of a cut recording are written as FLAC, under
OUT/audio/<speaker>/. Word timings come from the item's TextGrid, else from the offline aligner
(pocketsphinx, speechx_cli/align.py) with a per-utterance score. What goes wrong becomes a problem
row {"id", "path", "problem", "action"} and never an exception.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ... import audio as A
from ...align import align_words
from ...text import normalize_words
from . import segment as S
from .items import Item, slug
from .textgrid import TextGridError, read_words

SKIPPED = "skipped"
NO_TEXT = "kept without transcript (text-optional tasks only)"
NO_TIMINGS = "kept with its transcript, without word timings"
ALIGNED_INSTEAD = "aligned with pocketsphinx instead"
CONVERTED_SAMPLE_RATE = 24_000  # Hz: converted audio keeps what the 24 kHz EnCodec hears
ALIGN_SAMPLE_RATE = 16_000  # Hz, what align.py works at
WORDLESS_MAX_SECONDS = 10.0  # an utterance this short needs no word timings (simulate.py crops longer ones on words)
BLOCK_SECONDS = 30.0


@dataclass(frozen=True)
class PrepareOptions:
    layout: str = "auto"
    textgrids: str | None = None  # a folder of MFA TextGrids besides those next to the audio
    dev_fraction: float = 0.05  # speakers held out when the layout names none
    min_seconds: float = 0.5  # shorter recordings are skipped
    long_seconds: float = 30.0  # longer recordings are cut at pauses into MIN..MAX s utterances
    max_hours: float = 4.0  # longer recordings are skipped
    max_words_per_second: float = 8.0  # a transcript faster than this does not belong to its audio
    max_align_seconds: float = 600.0  # a longer transcribed recording is cut without its transcript
    chunk: int = 200  # recordings per resumable unit of work

    def validate(self) -> "PrepareOptions":
        if not (0 <= self.dev_fraction < 1 and 0 < self.min_seconds < S.MIN_SECONDS
                and self.long_seconds >= S.MAX_SECONDS and self.max_words_per_second > 0 and self.chunk >= 1):
            raise ValueError("bad prepare options: dev fraction in [0, 1), 0 < min seconds < 3, "
                             "long seconds >= 20, chunk >= 1")
        return self

    def settings(self) -> dict:
        """What decides the manifest (prepare.json); workers and chunking do not."""
        return {k: v for k, v in asdict(self).items() if k != "chunk"}


class Skip(Exception):
    """The recording cannot be used; the message says why."""


def problem(item: Item, why: str, action: str = SKIPPED) -> dict:
    return {"id": item.id, "path": item.audio, "problem": why, "action": action}


# ---- word timings -------------------------------------------------------------------------------

@dataclass
class Timing:
    text: str  # "" without a transcript
    words: list[dict]
    method: str | None = None  # "textgrid" | "aligner"
    score: float | None = None


def _align(x: np.ndarray, sr: int, words: list[str]) -> Timing:
    aligned = align_words(x, sr, words, guess_unknown=True)
    return Timing("", [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in aligned],
                  "aligner", round(min(w.score for w in aligned), 3))


def time_words(item: Item, audio: Callable[[], np.ndarray], sr: int, duration: float,
               problems: list[dict], max_words_per_second: float) -> Timing:
    """The item's transcript and word timings; problems noted, Skip when the transcript cannot belong
    to the audio. `audio()` gives the samples at `sr` (read only when the aligner needs them)."""
    if item.text is None:
        if item.text_problem:
            problems.append(problem(item, item.text_problem, NO_TEXT))
        return Timing("", [])
    words = normalize_words(item.text)
    if not words:
        problems.append(problem(item, "the transcript has no words", NO_TEXT))
        return Timing("", [])
    if len(words) / duration > max_words_per_second:
        raise Skip(f"absurd duration: {len(words)} words in {duration:.2f} s")
    if item.textgrid:
        try:
            return Timing(item.text, read_words(item.textgrid, duration), "textgrid")
        except TextGridError as e:
            problems.append(problem(item, f"TextGrid {Path(item.textgrid).name}: {e}", ALIGNED_INSTEAD))
    try:
        timing = _align(audio(), sr, words)
        timing.text = item.text
        return timing
    except ValueError as e:
        if duration <= WORDLESS_MAX_SECONDS:
            problems.append(problem(item, f"alignment failed ({e})", NO_TIMINGS))
            return Timing(item.text, [])
        problems.append(problem(item, f"alignment failed ({e})", NO_TEXT))
        return Timing("", [])


# ---- one recording ------------------------------------------------------------------------------

def _record(item: Item, path: str, sr: int, duration: float, timing: Timing, **extra) -> dict:
    return {"id": item.id, "speaker": item.speaker, "split": item.split, "text": timing.text, "path": path,
            "sample_rate": sr, "duration": round(duration, 4), "words": timing.words, "edit": None,
            "timing": timing.method, "align_score": timing.score, **extra}


def _written(out_dir: Path, item: Item, name: str, x: np.ndarray, sr: int) -> str:
    rel = f"audio/{slug(item.speaker)}/{slug(name)}.flac"
    A.save(out_dir / rel, x, sr, force=True)
    return rel


def process_item(item: Item, out_dir: Path, opts: PrepareOptions) -> tuple[list[dict], list[dict]]:
    """(manifest records, problems) of one recording."""
    if item.problem:
        return [], [problem(item, item.problem)]
    problems: list[dict] = []
    try:
        records = _process(item, out_dir, opts, problems)
    except Skip as e:
        return [], problems + [problem(item, str(e))]
    except A.AudioError as e:
        return [], problems + [problem(item, str(e).removeprefix(f"{item.audio}: "))]
    except (OSError, RuntimeError, ValueError) as e:  # a decoder's failure on a damaged file
        return [], problems + [problem(item, f"unreadable audio ({type(e).__name__}: {e})")]
    return records, problems


def _process(item: Item, out_dir: Path, opts: PrepareOptions, problems: list[dict]) -> list[dict]:
    path = Path(item.audio)
    try:
        header = A.info(path)
        sr, duration, native = header.sample_rate, header.duration_s, True
    except A.AudioError:
        if not path.is_file() or path.stat().st_size == 0:
            raise
        x, _ = A.load(path, CONVERTED_SAMPLE_RATE, max_seconds=opts.max_hours * 3600)  # other decoders
        sr, duration, native = CONVERTED_SAMPLE_RATE, len(x) / CONVERTED_SAMPLE_RATE, False
    if duration < opts.min_seconds:
        raise Skip(f"absurd duration: {duration:.2f} s")
    if duration > opts.max_hours * 3600:
        raise Skip(f"absurd duration: {duration / 3600:.1f} h")
    if duration > opts.long_seconds:
        blocks = (lambda: A.iter_blocks(path, sr, BLOCK_SECONDS)) if native else (lambda: iter([x]))
        return _cut(item, out_dir, opts, problems, blocks, sr, duration)
    if native:
        x, _ = A.load(path, sr)
    if float(np.max(np.abs(x))) < A.SILENCE_PEAK:
        raise Skip("silent")
    timing = time_words(item, lambda: x, sr, len(x) / sr, problems, opts.max_words_per_second)
    where = item.audio if native else _written(out_dir, item, item.id, x, sr)
    extra = {} if native else {"source": item.audio}
    return [_record(item, where, sr, len(x) / sr, timing, **extra)]


def _cut(item: Item, out_dir: Path, opts: PrepareOptions, problems: list[dict],
         blocks: Callable[[], Iterator[np.ndarray]], sr: int, duration: float) -> list[dict]:
    """A long recording in pieces: at the pauses between its aligned words, else at silences."""
    energies = S.frame_energies(blocks(), sr)
    if energies.speech_share(0.0, duration) < S.SPEECH_SHARE:
        raise Skip("silent")
    timing = Timing("", [])
    if item.text is not None and duration > opts.max_align_seconds:
        problems.append(problem(item, f"{duration:.0f} s is too long to align", NO_TEXT))
    elif item.text is not None:
        timing = time_words(item, lambda: np.concatenate([A.resample(b, sr, ALIGN_SAMPLE_RATE) for b in blocks()]),
                            ALIGN_SAMPLE_RATE, duration, problems, opts.max_words_per_second)
    candidates = S.word_candidates(timing.words) if timing.words else S.pause_candidates(energies)
    records = []
    for k, (start, end), piece in _pieces(blocks(), sr, S.choose_cuts(candidates, duration)):
        if energies.speech_share(start, end) < S.SPEECH_SHARE:
            continue
        words = S.words_in(timing.words, start, end) if timing.words else []
        text = " ".join(w["word"] for w in words)
        name = f"{item.id}-s{k:04d}"
        rel = _written(out_dir, item, name, piece, sr)
        seg = Timing(text, words, timing.method if words else None, timing.score if words else None)
        records.append({**_record(item, rel, sr, len(piece) / sr, seg, source=item.audio,
                                  offset=round(start, 3)), "id": name})
    return records


def _pieces(blocks: Iterator[np.ndarray], sr: int, segments: list[tuple[float, float]]
            ) -> Iterator[tuple[int, tuple[float, float], np.ndarray]]:
    """(index, (start, end) s, samples) of each segment, from a stream of blocks."""
    bounds = [(int(round(a * sr)), int(round(b * sr))) for a, b in segments]
    bounds[-1] = (bounds[-1][0], math.inf)  # the last piece takes every sample left
    k, position, buffer = 0, 0, []
    for block in blocks:
        buffer.append(block)
        position += len(block)
        while k < len(bounds) and position >= bounds[k][1]:
            joined = np.concatenate(buffer)
            first = position - len(joined)
            a, b = bounds[k]
            yield k, segments[k], joined[a - first: b - first]
            buffer = [joined[b - first:]]
            k += 1
    if k < len(bounds):
        joined = np.concatenate(buffer) if buffer else np.zeros(0, np.float32)
        first = position - len(joined)
        yield k, segments[k], joined[bounds[k][0] - first:]
