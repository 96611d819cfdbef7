"""Batches for LM training: length-bucketed, identical on every rank, resumable by cursor; optionally
a curriculum from short targets up for the first steps."""

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


def pool_size(cfg: TrainConfig, lengths: np.ndarray, min_examples: int) -> int:
    """Examples sorted by length together: ~bucket_pool batches of examples this long on average."""
    per_batch = cfg.batch_size if cfg.batch_frames <= 0 else max(1, cfg.batch_frames // max(1, int(lengths.mean())))
    return max(min_examples, cfg.bucket_pool * per_batch)


class Curriculum:
    """Short targets first: at step s < curriculum_steps a group draws only examples whose target is at
    most cap(s) frames, cap growing linearly from the group's shortest target to its longest (sequence
    length warmup, Li, Zhang & He 2022: linear over the first part of training; for TTS a short
    utterance is also a short alignment to find). The pool never holds fewer than the group's shortest
    `pool_size` examples, so the first batches vary.

    A curriculum batch is a pure function of (seed, group, step): nothing to save, the same on every
    rank and after a resume. The sampler's epoch cursors stay put meanwhile; its epochs begin after.
    """

    def __init__(self, groups: dict[str, np.ndarray], target_lengths: np.ndarray, lengths: np.ndarray,
                 cfg: TrainConfig, min_examples: int):
        self.cfg, self.lengths, self.min_examples = cfg, lengths, min_examples
        self.order = {g: ix[np.argsort(target_lengths[ix], kind="stable")] for g, ix in groups.items()}
        self.sorted = {g: target_lengths[o] for g, o in self.order.items()}  # ascending target frames
        self.floor = {g: pool_size(cfg, lengths[o], min_examples) for g, o in self.order.items()}

    def cap(self, group: str, step: int) -> int:
        """The longest target (frames) `group` may draw at `step`."""
        t, progress = self.sorted[group], min(1.0, step / self.cfg.curriculum_steps)
        return int(t[0] + (t[-1] - t[0]) * progress)

    def pool(self, group: str, step: int) -> np.ndarray:
        n = max(self.floor[group], int(np.searchsorted(self.sorted[group], self.cap(group, step), side="right")))
        return self.order[group][:n]

    def batch(self, group: str, step: int) -> np.ndarray:
        """A length-bucketed batch from a random pool-sized draw of the allowed examples."""
        pool = self.pool(group, step)
        rng = np.random.default_rng([self.cfg.seed, 4_000_037, step])
        drawn = pool[rng.permutation(len(pool))[: pool_size(self.cfg, self.lengths[pool], self.min_examples)]]
        batches = length_batches(drawn, self.lengths, self.cfg, self.min_examples)
        return batches[int(rng.integers(len(batches)))]


class BucketSampler:
    """Global batches of example indices, the same on every rank.

    Per group (a task, or all examples with task_sampling="example") and epoch, a permutation from
    (seed, group, epoch) is cut into pools of ~bucket_pool batches; each pool is sorted by length and
    cut into batches under the frame budget; the epoch's batches are shuffled. The group of step s
    comes from (seed, s). The state is one (epoch, position) cursor per group: the data position.
    With cfg.curriculum_steps > 0 (and the examples' target lengths) the first steps' batches come
    from the Curriculum instead.
    """

    def __init__(self, lengths: np.ndarray, tasks: np.ndarray, cfg: TrainConfig, min_examples: int,
                 target_lengths: np.ndarray | None = None):
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
        self.curriculum = None
        if cfg.curriculum_steps > 0:
            if target_lengths is None:
                raise ValueError("a curriculum needs the examples' target lengths")
            self.curriculum = Curriculum(self.groups, target_lengths, lengths, cfg, self.min_examples)
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
        size = pool_size(self.cfg, self.lengths[ix], self.min_examples)
        batches = [b for a in range(0, len(order), size) for b in length_batches(
            order[a:a + size], self.lengths, self.cfg, self.min_examples)]
        return tuple(batches[i] for i in rng.permutation(len(batches)))

    def batch(self, step: int) -> tuple[str, np.ndarray]:
        rng = np.random.default_rng([self.cfg.seed, 1_000_003, step])
        group = self.names[int(rng.integers(len(self.names)))]
        if self.curriculum is not None and step < self.cfg.curriculum_steps:
            return group, self.curriculum.batch(group, step)
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


def nar_levels(seed: int, key: int, n: int, n_codebooks: int, ar_levels: int = 1) -> np.ndarray:
    """The NAR codebook (0-based, ar_levels..K-1: the levels the AR does not predict) of each example of
    a batch: from (seed, key), not from rank. An AR over every level leaves none (the NAR is then not trained):
    the last level stands in."""
    low = min(ar_levels, n_codebooks - 1)
    return np.random.default_rng([seed, 2_000_003, key]).integers(low, n_codebooks, size=n)


def make_batch(data, indices, codebook_size: int) -> Batch:
    examples = [data[int(i)] for i in indices]
    return collate([e.prompt(codebook_size) for e in examples], [e.target for e in examples])
