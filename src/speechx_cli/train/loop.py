"""One training skeleton for every trainer (after audiocraft's solvers/base.py).

A run lives in one folder: the training checkpoint, the JSON-lines log and, when a dev metric is
chosen, the best checkpoint by that metric. `Trainer.fit` runs the updates with a progress bar,
logs every `log_every` steps (an evaluation step is always logged and carries the dev metrics),
evaluates on the dev set, checkpoints every `ckpt_every` steps and at the end, and on the first
Ctrl-C or SIGTERM stops after the current step. A checkpoint holds the trainer's whole state: models,
optimizers, data position and every RNG state, so a resumed run continues the very same run.

A trainer (codec_train.CodecTrainer, lm_train.LMTrainer) writes only its own parts: `train_step`
(one update and its losses), `evaluate` (the dev metrics), `state_dict` / `load_state_dict`.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, TextIO

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .. import checkpoint

LOG_NAME = "log.jsonl"


# ---- random state, learning rate, stop requests -------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states, as tensors/tuples torch.save keeps."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def lr_multiplier(step: int, *, warmup: int, decay_start: int, end: int, min_ratio: float,
                  shape: str = "cosine") -> float:
    """Linear warmup over `warmup` steps, flat until `decay_start`, then a cosine (or linear) decay to
    `min_ratio` at `end`; shape "none" stays flat after the warmup."""
    if step < warmup:
        return (step + 1) / warmup
    if shape == "none" or step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, end - decay_start))
    fall = 0.5 * (1 + math.cos(math.pi * progress)) if shape == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * fall


@contextmanager
def stop_requests() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step (and save);
    a second one acts as usual."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request(signum: int, _frame: Any) -> None:
        flag["stop"] = True
        signal.signal(signum, previous[signum])

    for sig in previous:
        signal.signal(sig, request)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---- the run folder -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RunFolder:
    """Where a run keeps its checkpoint, its log and (optionally) its best checkpoint."""

    root: Path
    checkpoint_name: str
    best_name: str | None = None

    @property
    def checkpoint(self) -> Path:
        return self.root / self.checkpoint_name

    @property
    def log(self) -> Path:
        return self.root / LOG_NAME

    @property
    def best(self) -> Path | None:
        return self.root / self.best_name if self.best_name else None

    def open(self, kind: str, *, resume: bool, force: bool, main: bool = True) -> dict | None:
        """The checkpoint to resume, or None for a fresh run, whose folder is made and cleared of an
        older run's log and best checkpoint (they are not this run's). Without resume or force an
        existing run is never replaced."""
        if self.checkpoint.exists() and not (resume or force):
            raise FileExistsError(f"{self.checkpoint} exists: pass --resume to continue it or --force to start over")
        if resume and self.checkpoint.exists():
            return checkpoint.read_training(self.checkpoint, kind)
        if main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in (self.log, self.best):
                if stale is not None:
                    stale.unlink(missing_ok=True)
        return None


# ---- the skeleton -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    steps: int  # the run's last step
    log_every: int
    eval_every: int
    ckpt_every: int
    best_metric: str | None = None  # a flat dev metric: also keep the best checkpoint by it


def better(metric: str, value: float, best: float | None) -> bool:
    """Distances and losses fall as a model improves; the other dev metrics (STOI, PESQ, SI-SDR) rise."""
    return best is None or (value < best if "distance" in metric or "loss" in metric else value > best)


def best_in_log(log: Path, metric: str | None) -> float | None:
    """The best value of `metric` in an existing log (a resumed run keeps its best checkpoint)."""
    best = None
    if metric and log.exists():
        for line in log.read_text().splitlines():
            value = json.loads(line).get(metric)
            if value is not None and better(metric, value, best):
                best = value
    return best


class Trainer(ABC):
    """What the loop needs from a trainer; `step` counts finished updates."""

    kind: ClassVar[str]  # its checkpoints' kind (checkpoint.CODEC_TRAINING, checkpoint.LM_TRAINING)
    label: ClassVar[str]  # the progress bar's name
    shown: ClassVar[str] = "loss {loss:.3f}"  # the progress bar's text, from train_step's values
    rate: ClassVar[tuple[str, str]] = ("steps_per_s", "{:.2f} steps/s")  # log key and bar text of the speed

    def __init__(self, run: RunFolder, schedule: Schedule, main: bool = True):
        self.run, self.schedule, self.main = run, schedule, main  # main: the process that logs and writes
        self.step = 0
        self.saved_step = -1
        self.trained_s = 0.0  # wall seconds of training so far, every resumed part added (checkpointed)
        self._since: float | None = None  # perf_counter when this process's part began (inside fit)

    # ---- what each trainer writes

    @abstractmethod
    def train_step(self) -> dict[str, Any]:
        """One update (self.step += 1); the values to log, with "loss"."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the step: config, models, optimizers, data position,
        RNG states. Every process calls it (a distributed trainer gathers its ranks' RNG states)."""

    @abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take back a `state_dict` (refusing one of an incompatible run)."""

    def evaluates_at(self, step: int) -> bool:
        """Whether to evaluate after step `step` (0: an untrained baseline before the first update)."""
        return False

    def evaluate(self) -> dict[str, Any]:
        """Dev metrics, logged on the step's line."""
        return {}

    def describe(self, dev: Mapping[str, Any]) -> str:
        """The console line of an evaluation."""
        return ", ".join(f"{k} {v:.3f}" for k, v in dev.items())

    def work(self) -> float:
        """What `rate` counts: steps, or e.g. tokens."""
        return self.step

    def agree_to_stop(self, requested: bool) -> bool:
        """Whether to stop now; distributed trainers stop together if any rank was asked to."""
        return requested

    def barrier(self) -> None:
        """Wait for every process (after rank 0 wrote a checkpoint)."""

    # ---- the skeleton

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Continue the run a checkpoint (RunFolder.open) saved."""
        self.load_state_dict(ckpt)
        self.step = int(ckpt["step"])
        self.trained_s = float(ckpt.get("trained_s", 0.0))  # absent from checkpoints before it was kept

    def elapsed(self) -> float:
        """Wall seconds this run has trained, over all its resumed parts."""
        return self.trained_s + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def save_checkpoint(self, path: Path | None = None) -> None:
        """Write the run's checkpoint (or `path`) from the main process; every process must call it."""
        state = {"kind": self.kind, "version": checkpoint.TRAINING_VERSION, "step": self.step,
                 "trained_s": self.elapsed(), **self.state_dict()}
        if self.main:
            checkpoint.save_training(path or self.run.checkpoint, state)
        if path is None:
            self.saved_step = self.step
        self.barrier()

    def fit(self, end: int | None = None, progress: bool = True) -> dict[str, Any]:
        """Train until the schedule's last step (or `end`, as if killed there after a checkpoint) or a
        stop request; checkpoint at the end. Returns the last step's values (empty if none ran)."""
        s = self.schedule
        end = s.steps if end is None else min(end, s.steps)
        verbose = progress and self.main
        best, last = best_in_log(self.run.log, s.best_metric), {}
        start, t0 = self.work(), time.perf_counter()
        self._since = t0
        with self._progress(verbose and self.step < end) as bar, stop_requests() as flag, \
                _log_file(self.run.log, self.main) as log:
            task = bar.add_task(self.label, total=s.steps, completed=self.step, text="", rate="")
            if self.step == 0 and self.evaluates_at(0):  # the untrained baseline
                self._evaluate({"step": 0}, bar if verbose else None, log, None)
            while self.step < end:
                values = self.train_step()
                speed = (self.work() - start) / (time.perf_counter() - t0)
                values[self.rate[0]] = speed
                bar.update(task, completed=self.step, text=self.shown.format(**values),
                           rate=self.rate[1].format(speed))
                last = {"step": self.step, **values, "trained_s": self.elapsed()}
                if self.evaluates_at(self.step):
                    best = self._evaluate(last, bar if verbose else None, log, best)
                elif log and self.step % s.log_every == 0:
                    _write(log, last)
                if self.step % s.ckpt_every == 0:
                    self.save_checkpoint()
                if self.agree_to_stop(flag["stop"]):
                    if verbose:
                        bar.console.print(f"stopped at step {self.step}; resume with --resume")
                    break
        if self.saved_step != self.step:
            self.save_checkpoint()
        self.trained_s, self._since = self.elapsed(), None
        return last

    def _evaluate(self, line: dict[str, Any], bar: Progress | None, log: TextIO | None,
                  best: float | None) -> float | None:
        """Evaluate, log `line` with the dev metrics added, keep the best checkpoint; the best value so far."""
        dev = self.evaluate()
        line |= dev
        if bar is not None:
            bar.console.print(f"step {self.step} {self.describe(dev)}")
        if log:
            _write(log, line)
        metric = self.schedule.best_metric
        if metric in dev and self.run.best is not None and better(metric, dev[metric], best):
            best = dev[metric]
            self.save_checkpoint(self.run.best)
        return best

    def _progress(self, enabled: bool) -> Progress:
        return Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[text]}"),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), disable=not enabled)


def _write(log: TextIO, line: Mapping[str, Any]) -> None:
    log.write(json.dumps(line) + "\n")


@contextmanager
def _log_file(path: Path, enabled: bool) -> Iterator[TextIO | None]:
    """JSON lines, line-buffered, appended (the main process only; None elsewhere)."""
    if not enabled:
        yield None
        return
    with open(path, "a", buffering=1) as f:
        yield f
