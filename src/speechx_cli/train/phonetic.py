"""A phonetic first level for the small codec: a phoneme loss that teaches codebook level 1 the phonemes.

Where demo v2 loses its words (docs/demo-v2.md): with the shipped tokenizer the words live in levels
2-8, which the NAR fills without reading the text; the AR, which reads it, writes level 1 only. A
tokenizer whose first level carries the phonetic content would put the words where the AR writes.
SpeechTokenizer (Zhang et al. 2024) does that by distilling HuBERT features into its first RVQ level;
no such teacher is available offline here, but the corpus knows what is said and when (each word's
start and end), so the teacher is the transcript itself. A linear head (linear on purpose: what it
reads must hold the phonemes, not compute them) reads, frame by frame, either level 1's quantized
vectors (`level1`: the gradient reaches the encoder through the straight-through estimator and the EMA
codebook follows) or the encoder's output before the quantizer (`latent`: level 1's k-means codebook then
follows a more phonetic latent), and is trained on each frame's phoneme (`frames`: cross-entropy; a word's
phonemes share its frames evenly, 0 between words) or on the window's phoneme sequence (`ctc`). 39
classes, stress removed, plus the blank / between-words class.

Training windows are whole words: a window starts where a word starts and ends where the last word
that fits into the segment length ends, so its phonemes are exactly the words it holds. The plain arm
of a comparison draws the same windows with the loss weighted 0. Measured (docs/codec-study.md): on
`level1` at weight 1 training diverged (the code does not move until the codebook follows); `latent` at
weight 1 trained stably and raised level 1's PNMI from 0.24 to 0.34.

    python -m speechx_cli.train.codec_cli --words data/corpus-v2/manifest.jsonl --phonetic-weight 1 \\
        --phonetic-input latent --init-from runs/codec-study/models/shipped.safetensors --out runs/phonetic ...
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import text
from .segments import AudioBank

PHONES: tuple[str, ...] = text.VOWELS + text.CONSONANTS  # 39, stress removed; class 0 is the blank
BLANK = 0  # CTC's blank; in frame labels, the silence between words
IGNORE = -100  # frame labels of the padding
LOSSES = ("frames", "ctc")
INPUTS = ("level1", "latent")
STATE_KEY = "phonetic_head"  # the head's entry in a codec training checkpoint (training only)


@functools.lru_cache(maxsize=None)
def word_phones(word: str) -> tuple[int, ...]:
    """A word's phoneme classes (1..39), from the project's pronunciation front end (text.py)."""
    ids = []
    for w in text.words(word):
        for p in w.phonemes:
            base = p.rstrip("012")
            if base in PHONES:
                ids.append(PHONES.index(base) + 1)
    return tuple(ids)


@dataclass
class Utterance:
    bank: AudioBank  # its audio (read a window at a time)
    index: int  # ... is the bank's item `index`
    starts: np.ndarray  # (W,) word starts, samples at the bank's rate
    ends: np.ndarray  # (W,) word ends, samples
    phones: list[tuple[int, ...]]  # each word's phoneme classes

    @property
    def n_samples(self) -> int:
        return self.bank.lengths[self.index]

    @property
    def wave(self) -> Tensor:
        """(N,) float32 at the bank's rate."""
        return self.window(0, self.n_samples)

    def window(self, start: int, end: int) -> Tensor:
        return self.bank.window(self.index, start, end - start)


def read_manifest(path: str | Path, sample_rate: int, split: str = "train") -> tuple[list[Utterance], list[str]]:
    """The transcribed utterances of a corpus manifest's `split` (their edit readings too), each file checked
    and then read a window at a time (train/segments.AudioBank); and the one-line reasons of those left out
    (unreadable audio, no word timings)."""
    root, utterances, skipped, bank = Path(path).parent, [], [], AudioBank(sample_rate=sample_rate)
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped.append(f"{path}:{n}: not JSON")
            continue
        if row.get("split") != split:
            continue
        readings = [row] + ([row["edit"]] if row.get("edit") else [])
        for reading in readings:
            words = [w for w in reading.get("words") or [] if w.get("end", 0) > w.get("start", 0)]
            if not words:
                skipped.append(f"{row.get('id')}: no word timings")
                continue
            try:
                index = bank.add(root / reading["path"])
            except Exception as err:  # one bad file never stops the run: named in the summary
                skipped.append(f"{row.get('id')}: {err}")
                continue
            utterances.append(Utterance(
                bank, index, np.array([round(w["start"] * sample_rate) for w in words]),
                np.array([round(w["end"] * sample_rate) for w in words]),
                [word_phones(w["word"]) for w in words]))
    return utterances, skipped


def frame_labels(u: Utterance, start: int, end: int, words: range, n_frames: int, hop: int) -> Tensor:
    """Each frame's phoneme in u's samples [start, end) (frames of `hop` samples from `start`): a word's
    phonemes share its frames evenly (the corpus has word timings, not phone timings; a word is short, so
    a label is off by at most about a phone), 0 outside words, IGNORE past `end`."""
    labels = torch.full((n_frames,), IGNORE, dtype=torch.long)
    centres = (np.arange(n_frames) + 0.5) * hop + start  # sample positions in the utterance
    labels[: math.ceil((end - start) / hop)] = 0
    for w in words:
        phones = u.phones[w]
        inside = np.flatnonzero((centres >= u.starts[w]) & (centres < u.ends[w]))
        if phones and len(inside):
            share = (centres[inside] - u.starts[w]) / (u.ends[w] - u.starts[w])
            labels[inside] = torch.tensor(phones)[np.minimum((share * len(phones)).astype(int), len(phones) - 1)]
    return labels


@dataclass
class WordBatch:
    wave: Tensor  # (B, L), zero-padded windows
    lengths: Tensor  # (B,) samples of each window
    targets: Tensor  # concatenated phoneme classes (CTC's layout)
    target_lengths: Tensor  # (B,)
    frames: Tensor  # (B, ceil(L / hop)) each frame's phoneme class (0 between words, IGNORE in the padding)


class WordWindowSampler:
    """Random whole-word windows of at most `segment` samples; its state is the data position."""

    def __init__(self, utterances: list[Utterance], segment: int, batch_size: int, seed: int,
                 gain_db: float = 0.0, hop: int = 320):
        self.utterances = [u for u in utterances if int((u.ends - u.starts).min()) <= segment]
        if not self.utterances:
            raise ValueError("no transcribed training audio with a word shorter than the segment")
        self.segment, self.batch_size, self.gain_db, self.hop = segment, batch_size, gain_db, hop
        lengths = np.array([u.n_samples for u in self.utterances], dtype=np.float64)
        self.p = lengths / lengths.sum()
        self.rng = np.random.default_rng(seed)

    def _window(self, u: Utterance) -> tuple[int, int, range]:
        fits = np.flatnonzero(u.ends - u.starts <= self.segment)
        first = int(fits[self.rng.integers(len(fits))])
        last = first
        while last + 1 < len(u.starts) and u.ends[last + 1] - u.starts[first] <= self.segment:
            last += 1
        return int(u.starts[first]), int(u.ends[last]), range(first, last + 1)

    def next_batch(self) -> WordBatch:
        wave = torch.zeros(self.batch_size, self.segment)
        n_frames = math.ceil(self.segment / self.hop)
        lengths, targets, target_lengths, frames = [], [], [], []
        files = self.rng.choice(len(self.utterances), size=self.batch_size, p=self.p)
        gains = 10 ** (self.rng.uniform(-self.gain_db, self.gain_db, self.batch_size) / 20)
        for b, (i, g) in enumerate(zip(files, gains)):
            u = self.utterances[i]
            start, end, words = self._window(u)
            piece = u.window(start, end)
            wave[b, :len(piece)] = piece * float(g)
            lengths.append(len(piece))
            phones = [p for w in words for p in u.phones[w]]
            targets += phones
            target_lengths.append(len(phones))
            frames.append(frame_labels(u, start, end, words, n_frames, self.hop))
        return WordBatch(wave, torch.tensor(lengths), torch.tensor(targets, dtype=torch.long),
                         torch.tensor(target_lengths), torch.stack(frames))

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


class PhoneticHead(nn.Module):
    """Frame vectors (B, D, F), level 1's quantized ones or the latent -> a loss on the windows' phonemes:
    cross-entropy on each frame's phoneme (`frames`, nats per frame) or CTC on the window's sequence (`ctc`,
    nats per phoneme)."""

    def __init__(self, dimension: int):
        super().__init__()
        self.proj = nn.Linear(dimension, len(PHONES) + 1)

    def log_probs(self, vectors: Tensor) -> Tensor:
        return self.proj(vectors.transpose(1, 2)).float().log_softmax(-1)  # (B, F, C)

    def loss(self, vectors: Tensor, batch: WordBatch, hop: int, kind: str = "frames") -> Tensor:
        if kind == "frames":
            logits = self.proj(vectors.transpose(1, 2)).float()  # (B, F, C)
            labels = batch.frames[:, : logits.shape[1]]
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
        frames = torch.clamp((batch.lengths + hop - 1) // hop, max=vectors.shape[-1])
        log_probs = self.log_probs(vectors)
        # zero_infinity: a window with more phonemes than frames adds nothing rather than inf
        total = F.ctc_loss(log_probs.transpose(0, 1), batch.targets, frames, batch.target_lengths,
                           blank=BLANK, reduction="sum", zero_infinity=True)
        return total / max(int(batch.target_lengths.sum()), 1)
