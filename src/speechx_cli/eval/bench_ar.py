"""The AR half of `speechx bench`: the engine's cached decoding against a baseline that re-runs the
full forward every step, and the timings of each (sampled context lengths, extrapolated exactly for
costs linear plus quadratic in the step)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from ..engine import (DecodingOptions, decode_step, escape_rows, generate_ar, make_caches, prefill, row_generators,
                      sample)
from ..model import ARModel
from ..prompts import Batch, eos_class

def run_cached(model: ARModel, batch: Batch, steps: int, opts: DecodingOptions) -> torch.Tensor:
    """The engine's AR decoding of exactly `steps` frames per row -> (B, steps) codes."""
    b = batch.types.shape[0]
    limits = torch.full((b,), steps, dtype=torch.long)
    known = torch.ones(b, dtype=torch.bool)
    no_prefix = torch.zeros(b, 0, dtype=torch.long)
    return torch.stack(generate_ar(model, batch, opts, limits, known, no_prefix, torch.zeros(b, 0, dtype=torch.bool)))


@torch.inference_mode()
def generate_uncached(model: ARModel, batch: Batch, steps: int, opts: DecodingOptions) -> torch.Tensor:
    """Baseline without a KV cache: every step re-runs ARModel.forward over the condition and all
    outputs so far. Same rules as the engine for a known length (no <eos>) -> (B, steps) codes."""
    b, v = batch.types.shape[0], model.cfg.codebook_size
    generator = row_generators(batch, opts)  # the engine's streams: the same samples
    out = torch.full((b, steps + 1), ARModel.bos(v), dtype=torch.long)  # (B, 1 + steps): <bos>, codes
    valid = torch.ones(b, steps + 1, dtype=torch.bool)
    for t in range(steps):
        logits = model(batch.tokens, batch.types, batch.positions, out[:, : t + 1], valid[:, : t + 1])
        logits = logits[:, -1].float()  # (B, V + 1)
        logits[:, eos_class(v)] = float("-inf")
        out[:, t + 1] = sample(logits, opts, generator, escape_rows(out[:, 1:t + 1], opts))
    return out[:, 1:]


@torch.inference_mode()
def uncached_step_seconds(model: ARModel, batch: Batch, step: int) -> float:
    """Wall time of uncached step `step`: one forward over C + step + 1 positions."""
    b, v = batch.types.shape[0], model.cfg.codebook_size
    out = torch.randint(0, v, (b, step + 1))
    out[:, 0] = ARModel.bos(v)
    valid = torch.ones_like(out, dtype=torch.bool)
    t0 = time.perf_counter()
    model(batch.tokens, batch.types, batch.positions, out, valid)
    return time.perf_counter() - t0


def quadratic_total(step_seconds: Callable[[int], float], steps: int) -> float:
    """Sum over t < steps of the quadratic through step_seconds(t) at the first, middle and last
    step: exact when a step's cost is linear (matmuls) plus quadratic (attention) in t."""
    ts = sorted({0, (steps - 1) // 2, steps - 1})
    coef = np.polyfit(ts, [step_seconds(t) for t in ts], len(ts) - 1)
    return float(np.polyval(coef, np.arange(steps)).sum())


def _filled_caches(model: ARModel, batch: Batch, steps: int):
    """Caches and key mask sized for `steps` outputs, prefilled; also the prefill time."""
    b, c = batch.types.shape
    caches = make_caches(model, b, c + steps + 1, "cpu", next(model.parameters()).dtype)
    key_valid = torch.ones(b, c + steps + 1, dtype=torch.bool)
    key_valid[:, :c] = batch.cond_valid
    t0 = time.perf_counter()
    prefill(model, batch, caches)
    return caches, key_valid, time.perf_counter() - t0


@torch.inference_mode()
def cached_seconds_sampled(model: ARModel, batch: Batch, steps: int, block: int = 4) -> tuple[float, float]:
    """(prefill, extrapolated total) seconds of cached decoding: prefill, then `block`
    consecutive decode steps timed at each of 3 context lengths. Sampling (~0.1 ms) is left out."""
    b, c = batch.types.shape
    caches, key_valid, prefill_s = _filled_caches(model, batch, steps)
    token = torch.full((b,), ARModel.bos(model.cfg.codebook_size), dtype=torch.long)

    def step_seconds(t: int) -> float:  # mean of `block` steps from t (from the end for the last)
        n = min(block, steps)
        first = min(t, steps - n)
        t0 = time.perf_counter()
        for i in range(first, first + n):
            decode_step(model, token, i, c, key_valid, caches)
        return (time.perf_counter() - t0) / n

    return prefill_s, prefill_s + quadratic_total(step_seconds, steps)


@torch.inference_mode()
def cached_mem_pass(model: ARModel, batch: Batch, steps: int) -> float:
    """The cached run's allocations (full-size cache, prefill, two decode steps); prefill seconds."""
    b, c = batch.types.shape
    caches, key_valid, prefill_s = _filled_caches(model, batch, steps)
    token = torch.full((b,), ARModel.bos(model.cfg.codebook_size), dtype=torch.long)
    for t in range(2):
        decode_step(model, token, t, c, key_valid, caches)
    return prefill_s


