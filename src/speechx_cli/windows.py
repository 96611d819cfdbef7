"""Long inputs of the known-length tasks: cut into overlapping windows, and the windows' outputs joined
with linear crossfades over the overlaps, both streaming (bounded memory)."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np


def split_windows(blocks: Iterable[np.ndarray], window: int, overlap: int) -> Iterator[np.ndarray]:
    """Cut a stream of sample blocks into windows of `window` samples, consecutive ones sharing
    `overlap` samples; the last window is shorter. Holds at most one window plus one block."""
    hop = window - overlap
    buf = np.zeros(0, dtype=np.float32)
    emitted = False
    for block in blocks:
        buf = np.concatenate([buf, np.asarray(block, dtype=np.float32)])
        while len(buf) >= window:
            yield buf[:window]
            emitted = True
            buf = buf[hop:]
    if len(buf) > (overlap if emitted else 0):
        yield buf


MAX_WINDOW_GAIN = 2.0  # a window is scaled by at most this factor (or its inverse) at a join


def _matching_gain(reference: np.ndarray, x: np.ndarray) -> float:
    ref, cur = float(np.sqrt(np.mean(reference**2))), float(np.sqrt(np.mean(x**2)))
    if min(ref, cur) < 1e-4:  # silence says nothing about level
        return 1.0
    return float(np.clip(ref / cur, 1 / MAX_WINDOW_GAIN, MAX_WINDOW_GAIN))


class WindowJoiner:
    """Joins consecutive window outputs with linear crossfades over their overlaps, streaming:
    push() returns the samples that are final, finish() the rest.

    Both windows cover the overlap, so they should agree on its level: a window whose overlap is
    louder or quieter than its predecessor's is scaled to match (within MAX_WINDOW_GAIN), so the
    level does not jump at a join."""

    def __init__(self, overlap: int):
        self.overlap = overlap
        self.tail: np.ndarray | None = None

    def push(self, piece: np.ndarray) -> np.ndarray:
        piece = np.array(piece, dtype=np.float32)
        if self.tail is not None:
            n = len(self.tail)
            piece *= _matching_gain(self.tail, piece[:n])
            fade = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1]
            piece[:n] = self.tail * (1 - fade) + piece[:n] * fade
        keep = min(self.overlap, len(piece))
        self.tail = piece[len(piece) - keep:]
        return piece[: len(piece) - keep]

    def finish(self) -> np.ndarray:
        tail, self.tail = self.tail, None
        return np.zeros(0, dtype=np.float32) if tail is None else tail
