"""Training audio for the codec trainer: files found, loaded into memory, and cut into random segments
by a seeded sampler whose state is the data position (saved with a run, so a resumed run draws the
same batches)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import audio


def find_audio_files(paths: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand folders (recursively) and .txt lists into a sorted, de-duplicated file list."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [f for f in p.rglob("*") if f.is_file() and audio.is_audio_path(f)]
        elif p.suffix == ".txt":
            found += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such audio file or folder: {p}")
    return sorted(set(found))


def load_waves(paths: list[Path], sample_rate: int) -> list[Tensor]:
    """Each file as float32 mono (N,) at sample_rate, all in memory (36 min at 16 kHz: 140 MB)."""
    return [torch.from_numpy(audio.load(p, sample_rate, max_seconds=math.inf)[0]) for p in paths]


class SegmentSampler:
    """Random fixed-length segments from in-memory waveforms; its state is the data position."""

    def __init__(self, waves: list[Tensor], segment: int, batch_size: int, seed: int,
                 gain_db: float = 0.0):
        if not waves:
            raise ValueError("no training audio")
        self.waves, self.segment, self.batch_size = waves, segment, batch_size
        self.gain_db = gain_db
        lengths = np.array([max(len(w), 1) for w in waves], dtype=np.float64)
        self.p = lengths / lengths.sum()  # every second of audio is equally likely
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> Tensor:
        batch = torch.zeros(self.batch_size, self.segment)  # (B, L), short files zero-padded
        files = self.rng.choice(len(self.waves), size=self.batch_size, p=self.p)
        starts = self.rng.random(self.batch_size)
        gains = 10 ** (self.rng.uniform(-self.gain_db, self.gain_db, self.batch_size) / 20)
        for b, (i, s, g) in enumerate(zip(files, starts, gains)):
            wav = self.waves[i]
            start = int(s * (max(len(wav) - self.segment, 0) + 1))
            piece = wav[start:start + self.segment]
            batch[b, :len(piece)] = piece * float(g)
        return batch

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
