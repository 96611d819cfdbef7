"""Timing and memory of a phase of work, and this machine's bounds (`speechx bench`).

A phase is timed by its fastest run and its memory read two ways: the process's peak RSS while it
runs (the kernel's high-water mark, reset at entry) and the most bytes of torch tensors alive at once
(the profiler's count, from a separate pass). The machine's copy bandwidth and matmul FLOP/s say what
fraction of the hardware batch-1 decoding achieves (gpt-fast's "bandwidth achieved").
"""

from __future__ import annotations

import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

from ..model import ARModel

MB = 2**20


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def max_rss_bytes() -> int:
    """The process's peak RSS (since the last RssPeak reset, on Linux)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb if sys.platform == "darwin" else kb * 1024  # macOS reports bytes


class RssPeak:
    """Peak RSS while the block runs, without a sampling thread (which would slow decoding).

    On Linux the kernel's high-water mark (VmHWM) is reset at entry through /proc/self/clear_refs;
    elsewhere the peak is the process's lifetime peak, and `exact` is False.
    """

    def __enter__(self) -> "RssPeak":
        self.start = (_proc_status_kb("VmRSS") or 0) * 1024
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS to the current RSS (Linux >= 4.0)
            self.exact = True
        except OSError:
            self.exact = False
        return self

    def __exit__(self, *exc) -> None:
        hwm = _proc_status_kb("VmHWM") if self.exact else None
        self.peak = hwm * 1024 if hwm is not None else max_rss_bytes()


@contextmanager
def _quiet_stderr_fd() -> Iterator[None]:
    """Hide the profiler's C++ start/stop lines, which bypass Python's sys.stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def torch_peak_bytes(fn: Callable[[], object]) -> int | None:
    """Most bytes of torch CPU tensors allocated by fn that were alive at once (profiler count).

    Tensors that existed before fn (the weights) are not included. None if the profiler's event
    tree is unavailable in this torch.
    """
    with _quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
    except AttributeError:
        return None
    peak = 0
    while stack:
        node = stack.pop()
        peak = max(peak, getattr(node.extra_fields, "total_allocated", 0) or 0)
        stack.extend(node.children)
    return peak


@dataclass
class Phase:
    """One timed phase: fastest wall time and the memory it took."""

    seconds: float
    rss_peak_mb: float  # process RSS at its highest during the phase
    rss_growth_mb: float  # that peak minus the RSS when the phase began
    torch_peak_mb: float | None = None  # see torch_peak_bytes (from a separate, untimed pass)
    value: object = None  # what the timed function returned (fastest run)

    def memory(self) -> dict:
        return {"rss_peak_mb": self.rss_peak_mb, "rss_growth_mb": self.rss_growth_mb,
                "torch_peak_mb": self.torch_peak_mb}


def measure_alternating(fns: dict, repeat: int = 1, mem_fns: dict | None = None) -> dict:
    """Phases of several functions: each mem_fn (default: its fn) is profiled for torch memory,
    which also warms up kernels and allocator; then the fns are timed in turn, `repeat` rounds
    (the fastest counts), so a change in the machine's load hits them alike."""
    mem_fns = mem_fns or {}
    peaks = {k: torch_peak_bytes(mem_fns.get(k, fn)) for k, fn in fns.items()}
    best = {k: float("inf") for k in fns}
    rss_start, rss_peak, values = {}, {}, {}
    for _ in range(repeat):
        for k, fn in fns.items():
            with RssPeak() as rss:
                t0 = time.perf_counter()
                value = fn()
                seconds = time.perf_counter() - t0
            if seconds < best[k]:  # the fastest round counts, with what it returned
                best[k], values[k] = seconds, value
            rss_start[k] = min(rss_start.get(k, rss.start), rss.start)
            rss_peak[k] = max(rss_peak.get(k, 0), rss.peak)
    return {k: Phase(best[k], rss_peak[k] / MB, (rss_peak[k] - rss_start[k]) / MB,
                     None if peaks[k] is None else peaks[k] / MB, values[k]) for k in fns}


def measure(fn: Callable[[], object], repeat: int = 1, mem_fn: Callable[[], object] | None = None) -> Phase:
    """measure_alternating for one function."""
    return measure_alternating({0: fn}, repeat, None if mem_fn is None else {0: mem_fn})[0]


# --- machine bounds and what decoding achieves of them ----------------------------------------

def _best_of(n: int, fn: Callable[[], object]) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_bounds(quick: bool = False) -> dict:
    """Memory bandwidth from a large tensor copy (read + write) and fp32 matmul FLOP/s."""
    n = (16 if quick else 64) * MB // 4  # float32 elements: 64 or 256 MB, far beyond the caches
    src = torch.rand(n)
    dst = torch.empty_like(src)
    copy_s = _best_of(5, lambda: dst.copy_(src))
    m = 512 if quick else 2048
    a, b = torch.rand(m, m), torch.rand(m, m)
    mm_s = _best_of(5, lambda: torch.matmul(a, b))
    return {"bandwidth_gb_s": 2 * src.nbytes / copy_s / 1e9, "copy_mb": src.nbytes / MB,
            "matmul_gflop_s": 2 * m**3 / mm_s / 1e9, "matmul_n": m, "threads": torch.get_num_threads()}


def decode_bytes_per_token(model: ARModel, context: int) -> float:
    """Bytes batch-1 decoding reads per token: every weight of the blocks and head, plus the K/V
    cache of `context` positions (embedding tables contribute only a row or two)."""
    cfg = model.cfg
    weights = sum(p.numel() * p.element_size()
                  for part in (model.blocks, model.norm, model.head) for p in part.parameters())
    kv = 2 * cfg.n_layers * context * cfg.d_model * next(model.parameters()).element_size()
    return float(weights + kv)


def achieved(model: ARModel, ar: dict, bounds: dict) -> dict:
    """Batch-1 cached decoding against the measured bounds, at the average context length."""
    context = ar["prompt_frames"] + ar["new_frames"] // 2
    tok_s = ar["batch1"]["cached_decode_tok_s"]
    flops = model.cfg.flops_per_token(context)
    nbytes = decode_bytes_per_token(model, context)
    return {
        "context": context, "flops_per_token": flops, "bytes_per_token": nbytes,
        "gflop_s": flops * tok_s / 1e9, "flop_fraction": flops * tok_s / 1e9 / bounds["matmul_gflop_s"],
        "bandwidth_gb_s": nbytes * tok_s / 1e9,
        "bandwidth_fraction": nbytes * tok_s / 1e9 / bounds["bandwidth_gb_s"],
    }
