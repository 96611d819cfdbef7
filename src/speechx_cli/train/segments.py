"""Training audio for the codec trainer: files found, read a window at a time (or, where that cannot be done
exactly, held in memory), and cut into random segments by a seeded sampler whose state is the data position
(saved with a run, so a resumed run draws the same batches)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf
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


class AudioBank:
    """Training audio that need not fit in memory. A file libsndfile seeks in exactly (WAV, FLAC, AIFF, ...)
    stays on disk and each segment reads only its window, resampled from an aligned start with a margin:
    the samples `audio.load` gives, to float rounding (exactly, at the codec's own rate). Any other file
    (a format only FFmpeg reads) is held in memory. Every file is read once up front with `audio.load`'s
    checks, so a bad file stops the run before its first step and is named."""

    MARGIN_S = 0.05  # input read on each side of a resampled window: the resampler's transients fall there

    def __init__(self, paths: Sequence[Path] = (), sample_rate: int = 16_000, waves: Sequence[Tensor] = ()):
        self.sample_rate = sample_rate
        self.items: list[tuple[Path, int] | Tensor] = list(waves)  # (path, its rate): read by window
        self.lengths = [len(w) for w in waves]  # samples at sample_rate
        for p in paths:
            self.add(p)

    def add(self, path: str | Path) -> int:
        """Check the file (audio.load's errors) and add it; its index."""
        path = Path(path)
        wave, rate = audio.load(path, self.sample_rate, max_seconds=math.inf)
        self.items.append((path, rate) if _seekable(path) else torch.from_numpy(wave))
        self.lengths.append(len(wave))
        return len(self.items) - 1

    def __len__(self) -> int:
        return len(self.items)

    @property
    def memory_bytes(self) -> int:
        return sum(item.numel() * 4 for item in self.items if isinstance(item, Tensor))

    def window(self, i: int, start: int, n: int) -> Tensor:
        """Samples start..start+n of item i at the bank's rate (fewer at its end)."""
        item = self.items[i]
        if isinstance(item, Tensor):
            return item[start:start + n]
        path, rate = item
        target = self.sample_rate
        # input samples first..last cover the window; `first` is where an input and an output sample
        # coincide (a multiple of rate / gcd), so the block's resampled grid is the whole file's
        align = rate // math.gcd(rate, target)
        margin = 0 if rate == target else int(self.MARGIN_S * rate)
        first = max(0, start * rate // target - margin)
        first -= first % align
        last = -(-(start + n) * rate // target) + margin
        with sf.SoundFile(str(path)) as f:
            f.seek(first)
            block = f.read(last - first, dtype="float32", always_2d=True).mean(axis=1, dtype=np.float32)
        offset = start - first * target // rate
        return torch.from_numpy(audio.resample(block, rate, target)[offset:offset + n])


SEEKABLE = {"WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF"}  # libsndfile seeks these sample-exactly


def _seekable(path: Path) -> bool:
    """Whether a window of the file can be read exactly without reading the rest."""
    try:
        return sf.info(str(path)).format in SEEKABLE
    except (sf.LibsndfileError, RuntimeError):
        return False


class SegmentSampler:
    """Random fixed-length segments of the training audio; its state is the data position."""

    def __init__(self, waves: AudioBank | list[Tensor], segment: int, batch_size: int, seed: int,
                 gain_db: float = 0.0):
        self.bank = waves if isinstance(waves, AudioBank) else AudioBank(waves=waves)
        if not len(self.bank):
            raise ValueError("no training audio")
        self.segment, self.batch_size, self.gain_db = segment, batch_size, gain_db
        lengths = np.array([max(n, 1) for n in self.bank.lengths], dtype=np.float64)
        self.p = lengths / lengths.sum()  # every second of audio is equally likely
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> Tensor:
        batch = torch.zeros(self.batch_size, self.segment)  # (B, L), short files zero-padded
        files = self.rng.choice(len(self.bank), size=self.batch_size, p=self.p)
        starts = self.rng.random(self.batch_size)
        gains = 10 ** (self.rng.uniform(-self.gain_db, self.gain_db, self.batch_size) / 20)
        for b, (i, s, g) in enumerate(zip(files, starts, gains)):
            start = int(s * (max(self.bank.lengths[i] - self.segment, 0) + 1))
            piece = self.bank.window(i, start, self.segment)
            batch[b, :len(piece)] = piece * float(g)
        return batch

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state
