"""What every trainer shares: RNG state for exact resume, the learning-rate schedule, stopping cleanly
on a signal."""

from __future__ import annotations

import math
import random
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import numpy as np
import torch


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


from ..checkpoint import load_codec  # noqa: E402,F401 (moved to checkpoint.py; this module goes next)
