"""Batches for LM training: length-bucketed, identical on every rank, resumable by cursor."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ..prompts import Batch, Task, collate
from .lm_config import TrainConfig
from .dataset import TASK_ID, TASKS


def length_batches(pool: np.ndarray, lengths: np.ndarray, cfg: TrainConfig, min_examples: int = 1
                   ) -> list[np.ndarray]:
    """Sort `pool` by length and cut it into batches of <= batch_size examples whose padded size
    (count x longest) stays under batch_frames; a batch never has fewer than min_examples."""
    cap = cfg.batch_size if cfg.batch_size > 0 else len(pool)
    out, current = [], []
    for i in pool[np.argsort(lengths[pool], kind="stable")]:
        fits = len(current) < cap and (cfg.batch_frames <= 0 or (len(current) + 1) * lengths[i] <= cfg.batch_frames)
        if current and not fits and len(current) >= min_examples:
            out.append(np.array(current))
            current = []
        current.append(int(i))
    if len(current) >= min_examples:
        out.append(np.array(current))
    return out


class BucketSampler:
    """Global batches of example indices, the same on every rank.

    Per group (a task, or all examples with task_sampling="example") and epoch, a permutation from
    (seed, group, epoch) is cut into pools of ~bucket_pool batches; each pool is sorted by length and
    cut into batches under the frame budget; the epoch's batches are shuffled. The group of step s
    comes from (seed, s). The state is one (epoch, position) cursor per group: the data position.
    """

    def __init__(self, lengths: np.ndarray, tasks: np.ndarray, cfg: TrainConfig, min_examples: int):
        self.lengths, self.cfg, self.min_examples = lengths, cfg, max(1, min_examples)
        allowed = [Task.TTS] if cfg.stage == "tts" else list(TASKS)
        keep = np.isin(tasks, [TASK_ID[t] for t in allowed])
        if cfg.task_sampling == "update":
            groups = {t.value: np.flatnonzero(keep & (tasks == TASK_ID[t])) for t in allowed}
        else:
            groups = {"mixed": np.flatnonzero(keep)}
        self.groups = {g: ix for g, ix in groups.items() if len(ix) >= self.min_examples}
        self.missing = sorted(set(groups) - set(self.groups))  # too few examples: never drawn
        if not self.groups:
            raise ValueError(f"no task has {self.min_examples} examples for stage {cfg.stage!r}")
        self.names = sorted(self.groups)
        self.cursors = {g: [0, 0] for g in self.names}
        self._epochs: dict[str, tuple[int, tuple[np.ndarray, ...]]] = {}  # group -> (epoch, batches)

    def epoch(self, group: str, epoch: int) -> tuple[np.ndarray, ...]:
        """The batches of one group's epoch (the current one per group is kept)."""
        cached = self._epochs.get(group)
        if cached is None or cached[0] != epoch:
            self._epochs[group] = cached = (epoch, self._make_epoch(group, epoch))
        return cached[1]

    def _make_epoch(self, group: str, epoch: int) -> tuple[np.ndarray, ...]:
        ix = self.groups[group]
        rng = np.random.default_rng([self.cfg.seed, self.names.index(group), epoch])
        order = ix[rng.permutation(len(ix))]
        per_batch = self.cfg.batch_size if self.cfg.batch_frames <= 0 else max(
            1, self.cfg.batch_frames // max(1, int(self.lengths[ix].mean())))
        size = max(self.min_examples, self.cfg.bucket_pool * per_batch)
        batches = [b for a in range(0, len(order), size) for b in length_batches(
            order[a:a + size], self.lengths, self.cfg, self.min_examples)]
        return tuple(batches[i] for i in rng.permutation(len(batches)))

    def batch(self, step: int) -> tuple[str, np.ndarray]:
        rng = np.random.default_rng([self.cfg.seed, 1_000_003, step])
        group = self.names[int(rng.integers(len(self.names)))]
        cursor = self.cursors[group]
        if cursor[1] >= len(self.epoch(group, cursor[0])):
            cursor[:] = [cursor[0] + 1, 0]
        batch = self.epoch(group, cursor[0])[cursor[1]]
        cursor[1] += 1
        return group, batch

    def state_dict(self) -> dict[str, list[int]]:
        return {g: list(c) for g, c in self.cursors.items()}

    def load_state_dict(self, state: Mapping[str, list[int]]) -> None:
        self.cursors = {g: list(state.get(g, [0, 0])) for g in self.names}


def nar_levels(seed: int, key: int, n: int, n_codebooks: int) -> np.ndarray:
    """The NAR codebook (1..K-1) of each example of a batch: from (seed, key), not from rank."""
    return np.random.default_rng([seed, 2_000_003, key]).integers(1, n_codebooks, size=n)


def make_batch(data, indices, codebook_size: int) -> Batch:
    examples = [data[int(i)] for i in indices]
    return collate([e.prompt(codebook_size) for e in examples], [e.target for e in examples])
