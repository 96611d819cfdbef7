"""Benchmark: what the hot path costs on this machine (`speechx bench`, `make bench`).

Per model config, with random weights of the real shapes:
  AR decoding tokens/s at batch 1 and 8, the engine (KV cache) against a baseline that recomputes
  the full forward every step; NAR time for all K-1 levels; codec encode/decode of 10 s of audio;
  the real-time factor of `pipeline.run` on a 10 s denoise; peak memory of each phase; FLOPs per
  token and the fraction of this machine's measured matmul FLOP/s and memory bandwidth that batch-1
  cached decoding achieves (gpt-fast's "bandwidth achieved").
Plus folder throughput: one `speechx denoise IN_DIR OUT_DIR` against one process per file.

Every number is wall-clock on a machine others may share: trust the ratios measured within one
run; absolute numbers move with the machine's load (recorded in the output).
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .. import prompts as P
from ..codec import Codec, PretrainedEncodec, SmallCodec, SmallCodecConfig, quiet_weight_norm
from ..engine import (DecodingOptions, decode_step, escape_rows, generate_ar, generate_nar, make_caches, prefill,
                      sample)
from ..model import ARModel, ModelConfig, NARModel
from ..prompts import Batch, Task, eos_class

CONFIGS = ("demo", "paper", "tiny")
BATCHES = (1, 8)
MB = 2**20
FOLDER_SAMPLE_RATE = 16_000  # Hz of the generated folder files; speechx resamples to its codec
TARGETS = {"cache_speedup": 10.0, "batch8_over_batch1": 3.0, "folder_speedup": 5.0,
           "long_memory_ratio": 1.5}  # the last one is a ceiling: lower is better

Log = Callable[[str], None]


@dataclass(frozen=True)
class Plan:
    """How much work the measurements of one config do.

    Big configs time a few AR steps and extrapolate: a cached or uncached step's cost depends only
    on its context length, linearly (matmuls) plus quadratically (attention), so a quadratic through
    the first, middle and last step gives the total (`quadratic_total`).
    """

    prompt_frames: int = 300  # AR condition positions (<ns> + codec frames)
    new_frames: int = 375  # AR frames generated
    audio_seconds: float = 10.0  # NAR, codec and pipeline input
    uncached_every_step: tuple[int, ...] = (1,)  # batch sizes whose baseline runs every step
    cached_every_step: bool = True  # False: prefill + decode steps at 3 context lengths
    cached_rounds: int = 2  # alternating rounds of the cached batch-1 and batch-8 runs (best counts)
    repeat: int = 1  # timed runs of each phase after its warm-up (the fastest counts)
    pipeline: bool = True  # time pipeline.run end to end


_SAMPLED = dict(uncached_every_step=(), cached_every_step=False, pipeline=False)
_QUICK = Plan(prompt_frames=30, new_frames=24, audio_seconds=1.0, uncached_every_step=(1, 8))
PLANS = {"tiny": Plan(uncached_every_step=(1, 8)), "demo": Plan(), "paper": Plan(**_SAMPLED)}


def plan_for(name: str, quick: bool) -> Plan:
    if not quick:
        return PLANS[name]
    return replace(_QUICK, **_SAMPLED) if name == "paper" else _QUICK


@dataclass(frozen=True)
class BenchOptions:
    configs: tuple[str, ...] = ("demo", "paper")
    quick: bool = False
    checkpoint: Path | None = None  # for the folder run; None = checkpoint.default_path()
    folder_files: int | None = None  # None = 20 (2 with quick); 0 skips the folder run
    threads: int = 0  # torch intra-op threads; 0 = torch's default (what the CLI uses)
    long_minutes: int | None = None  # long-file memory run: None = 60 (2 with quick); 0 skips it

    def validate(self) -> "BenchOptions":
        unknown = [c for c in self.configs if c not in CONFIGS]
        if not self.configs or unknown:
            raise ValueError(f"unknown config {', '.join(unknown) or '(none)'}: choose from {', '.join(CONFIGS)}")
        if self.folder_files is not None and self.folder_files < 0:
            raise ValueError("folder files must be >= 0")
        if self.threads < 0:
            raise ValueError("threads must be >= 0 (0 = torch's default)")
        return self

    @property
    def n_long_minutes(self) -> int:
        return self.long_minutes if self.long_minutes is not None else (2 if self.quick else 60)

    @property
    def n_files(self) -> int:
        return self.folder_files if self.folder_files is not None else (2 if self.quick else 20)


# ---------------------------------------------------------------------------------------------
# Timing and memory
# ---------------------------------------------------------------------------------------------

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
    from torch.profiler import ProfilerActivity, profile

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


# ---------------------------------------------------------------------------------------------
# Models with random weights
# ---------------------------------------------------------------------------------------------

@dataclass
class Setup:
    name: str
    cfg: ModelConfig
    ar: ARModel
    nar: NARModel
    codec: Codec


def _random_codebooks(codec: SmallCodec) -> SmallCodec:
    """Untrained codebooks are all zeros until k-means runs; random ones give varied codes."""
    for layer in codec.quantizer.vq.layers:
        book = layer._codebook
        book.embed.data.normal_()
        book.inited.data.fill_(1)
    return codec


def build(name: str, seed: int = 0) -> Setup:
    """The AR/NAR models and codec of a named config, random weights, eval mode, CPU."""
    torch.manual_seed(seed)
    if name == "paper":
        from encodec import EncodecModel

        with quiet_weight_norm():
            state = EncodecModel.encodec_model_24khz(pretrained=False).state_dict()
        codec: Codec = PretrainedEncodec(state_dict=state)
        make = ModelConfig.paper
    else:
        small = SmallCodecConfig.demo() if name == "demo" else SmallCodecConfig.tiny()
        codec = _random_codebooks(SmallCodec(small))
        make = ModelConfig.demo if name == "demo" else ModelConfig.tiny
    cfg = make(codebook_size=codec.codebook_size, n_codebooks=codec.n_codebooks)
    return Setup(name, cfg, ARModel(cfg).eval(), NARModel(cfg).eval(), codec.eval())


def rand_codes(cfg: ModelConfig, frames: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, cfg.codebook_size, (frames, cfg.n_codebooks), generator=g)  # (T, K)


def ar_batch(cfg: ModelConfig, batch: int, prompt_frames: int, seed: int = 0) -> Batch:
    """`batch` noise-suppression conditions of `prompt_frames` positions (<ns> + frames)."""
    g = torch.Generator().manual_seed(seed)
    return P.collate([P.ns(rand_codes(cfg, prompt_frames - 1, g), cfg.codebook_size) for _ in range(batch)])


# ---------------------------------------------------------------------------------------------
# AR: the engine (KV cache) against a full forward every step
# ---------------------------------------------------------------------------------------------

def run_cached(model: ARModel, batch: Batch, steps: int, opts: DecodingOptions) -> torch.Tensor:
    """The engine's AR decoding of exactly `steps` frames per row -> (B, steps) codes."""
    b = batch.types.shape[0]
    limits = torch.full((b,), steps, dtype=torch.long)
    known = torch.ones(b, dtype=torch.bool)
    no_prefix = torch.zeros(b, 0, dtype=torch.long)
    return torch.stack(generate_ar(model, batch, opts, limits, known, no_prefix, torch.zeros(b, dtype=torch.long)))


@torch.inference_mode()
def generate_uncached(model: ARModel, batch: Batch, steps: int, opts: DecodingOptions) -> torch.Tensor:
    """Baseline without a KV cache: every step re-runs ARModel.forward over the condition and all
    outputs so far. Same rules as the engine for a known length (no <eos>) -> (B, steps) codes."""
    b, v = batch.types.shape[0], model.cfg.codebook_size
    generator = None
    if opts.seed is not None and opts.draws:
        generator = torch.Generator().manual_seed(opts.seed)
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
def _cached_mem_pass(model: ARModel, batch: Batch, steps: int) -> float:
    """The cached run's allocations (full-size cache, prefill, two decode steps); prefill seconds."""
    b, c = batch.types.shape
    caches, key_valid, prefill_s = _filled_caches(model, batch, steps)
    token = torch.full((b,), ARModel.bos(model.cfg.codebook_size), dtype=torch.long)
    for t in range(2):
        decode_step(model, token, t, c, key_valid, caches)
    return prefill_s


def _cached(s: Setup, batches: dict[int, Batch], plan: Plan, opts: DecodingOptions) -> dict[int, tuple[Phase, float]]:
    """Per batch size: (phase, prefill seconds) of the engine's cached decoding, the batch sizes
    timed in alternation (`cached_rounds` rounds) so that their ratio sees one machine state."""
    steps = plan.new_frames
    mem = {b: (lambda x=x: _cached_mem_pass(s.ar, x, steps)) for b, x in batches.items()}
    if plan.cached_every_step:
        fns = {b: (lambda x=x: run_cached(s.ar, x, steps, opts)) for b, x in batches.items()}
        phases = measure_alternating(fns, plan.cached_rounds, mem)
        return {b: (phases[b], min(_cached_mem_pass(s.ar, x, steps) for _ in range(plan.cached_rounds)))
                for b, x in batches.items()}
    fns = {b: (lambda x=x: cached_seconds_sampled(s.ar, x, steps)) for b, x in batches.items()}
    phases = measure_alternating(fns, plan.cached_rounds, mem)
    out = {}
    for b, phase in phases.items():
        prefill_s, phase.seconds = phase.value  # the extrapolated total of the fastest round
        out[b] = (phase, prefill_s)
    return out


def _uncached(s: Setup, batch: Batch, plan: Plan, opts: DecodingOptions) -> tuple[Phase, bool]:
    """(phase, extrapolated) of the no-cache baseline; its memory pass is its last, longest step."""
    b, steps = batch.types.shape[0], plan.new_frames
    mem = lambda: uncached_step_seconds(s.ar, batch, steps - 1)  # noqa: E731
    if b in plan.uncached_every_step:
        return measure(lambda: generate_uncached(s.ar, batch, steps, opts), 1, mem_fn=mem), False
    step = lambda t: uncached_step_seconds(s.ar, batch, t)  # noqa: E731
    phase = measure(lambda: quadratic_total(step, steps), 1, mem_fn=mem)
    phase.seconds = float(phase.value)  # the extrapolated total, not the 3 steps' own time
    return phase, True


def bench_ar(s: Setup, plan: Plan, memory: dict, log: Log) -> dict:
    steps = plan.new_frames
    opts = DecodingOptions()  # temperature-1 sampling, as the CLI decodes
    batches = {b: ar_batch(s.cfg, b, plan.prompt_frames, seed=b) for b in BATCHES}
    log(f"{s.name}: AR with the KV cache, batch {' and '.join(map(str, BATCHES))}, {steps} frames")
    cached = _cached(s, batches, plan, opts)
    res: dict = {"prompt_frames": plan.prompt_frames, "new_frames": steps,
                 "sampling": "temperature 1, engine rules for a known length"}
    for b, batch in batches.items():
        log(f"{s.name}: AR without a cache, batch {b}")
        uncached, uncached_extrapolated = _uncached(s, batch, plan, opts)
        (phase, prefill_s), tokens = cached[b], b * steps
        memory[f"ar_cached_b{b}"], memory[f"ar_uncached_b{b}"] = phase.memory(), uncached.memory()
        res[f"batch{b}"] = {
            "cached_s": phase.seconds, "prefill_s": prefill_s, "cached_extrapolated": not plan.cached_every_step,
            "cached_tok_s": tokens / phase.seconds,
            "cached_decode_tok_s": tokens / max(phase.seconds - prefill_s, 1e-9),
            "uncached_s": uncached.seconds, "uncached_tok_s": tokens / uncached.seconds,
            "uncached_extrapolated": uncached_extrapolated,
            "cache_speedup": uncached.seconds / phase.seconds,
        }
    res["batch8_over_batch1"] = res["batch8"]["cached_tok_s"] / res["batch1"]["cached_tok_s"]
    res["batch8_over_batch1_decode"] = res["batch8"]["cached_decode_tok_s"] / res["batch1"]["cached_decode_tok_s"]
    return res


# ---------------------------------------------------------------------------------------------
# Machine bounds and what decoding achieves of them
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# NAR, codec, pipeline
# ---------------------------------------------------------------------------------------------

def bench_nar(s: Setup, plan: Plan, memory: dict, log: Log) -> dict:
    """The engine's NAR (all K-1 levels) for `audio_seconds` of output after an equally long <ns>
    condition."""
    frames = s.codec.frames_for(int(plan.audio_seconds * s.codec.sample_rate))
    g = torch.Generator().manual_seed(1)
    batch = P.collate([P.ns(rand_codes(s.cfg, frames, g), s.cfg.codebook_size)])
    first = [rand_codes(s.cfg, frames, g)[:, 0]]
    k = s.cfg.n_codebooks
    no_prefix, zero = torch.zeros(1, 0, k, dtype=torch.long), torch.zeros(1, dtype=torch.long)
    log(f"{s.name}: NAR, {k - 1} levels x {frames} frames")
    phase = measure(lambda: generate_nar(s.nar, batch, first, no_prefix, zero), plan.repeat)
    memory["nar"] = phase.memory()
    return {"frames": frames, "levels": k - 1, "seconds": phase.seconds}


def bench_codec(s: Setup, plan: Plan, memory: dict, log: Log) -> dict:
    g = torch.Generator().manual_seed(2)
    wav = 0.1 * torch.randn(1, int(plan.audio_seconds * s.codec.sample_rate), generator=g)  # (1, N)
    log(f"{s.name}: codec encode/decode of {plan.audio_seconds:g} s")
    enc = measure(lambda: s.codec.encode(wav), plan.repeat)
    dec = measure(lambda: s.codec.decode(enc.value), plan.repeat)
    memory["codec_encode"], memory["codec_decode"] = enc.memory(), dec.memory()
    return {"kind": s.codec.kind, "audio_s": plan.audio_seconds, "frame_rate": s.codec.frame_rate,
            "encode_s": enc.seconds, "decode_s": dec.seconds,
            "rtf": (enc.seconds + dec.seconds) / plan.audio_seconds}


def bench_pipeline(s: Setup, plan: Plan, memory: dict, log: Log) -> dict:
    """pipeline.run on one denoise request of `audio_seconds` (default window and decoding)."""
    from .. import pipeline as PL
    from ..checkpoint import SpeechX
    from ..text import PHONEME_TABLE

    sx = SpeechX(s.ar, s.nar, s.codec, s.cfg, list(PHONEME_TABLE), {"note": "random weights"})
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(int(plan.audio_seconds * s.codec.sample_rate))).astype(np.float32)
    request = PL.Request(Task.NS, audio=audio)
    log(f"{s.name}: pipeline.run denoise of {plan.audio_seconds:g} s")
    phase = measure(lambda: PL.run(sx, [request], DecodingOptions()), plan.repeat)
    memory["pipeline"] = phase.memory()
    return {"task": "denoise", "audio_s": plan.audio_seconds, "seconds": phase.seconds,
            "rtf": phase.seconds / plan.audio_seconds}


def bench_config(name: str, plan: Plan, bounds: dict, log: Log) -> dict:
    log(f"{name}: building random-weight models")
    s = build(name)
    memory: dict = {}
    params = s.ar.num_params() + s.nar.num_params()
    weights_mb = params * next(s.ar.parameters()).element_size() / MB
    res: dict = {"model": {**s.cfg.to_dict(), "ar_params": s.ar.num_params(), "nar_params": s.nar.num_params(),
                           "weights_mb": weights_mb}, "plan": asdict(plan)}
    res["ar"] = bench_ar(s, plan, memory, log)
    res["decode_bounds"] = achieved(s.ar, res["ar"], bounds)
    res["nar"] = bench_nar(s, plan, memory, log)
    res["codec"] = bench_codec(s, plan, memory, log)
    if plan.pipeline:
        res["pipeline"] = bench_pipeline(s, plan, memory, log)
    res["memory"] = memory
    return res


# ---------------------------------------------------------------------------------------------
# Folder throughput: one process for a folder against one process per file
# ---------------------------------------------------------------------------------------------

def _speechx_command() -> list[str]:
    """The installed `speechx` script beside this Python, else `python -m speechx_cli.cli`."""
    script = Path(sys.executable).parent / "speechx"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "speechx_cli.cli"]


def _write_inputs(folder: Path, n_files: int) -> None:
    from .. import audio as A

    rng = np.random.default_rng(4)
    for i in range(n_files):
        seconds = 1.0 + i / max(1, n_files - 1)  # 1 to 2 s
        t = np.arange(int(seconds * FOLDER_SAMPLE_RATE)) / FOLDER_SAMPLE_RATE
        x = 0.3 * np.sin(2 * np.pi * (150 + 10 * i) * t) + 0.05 * rng.standard_normal(len(t))
        A.save(folder / f"clip{i:02d}.wav", x.astype(np.float32), FOLDER_SAMPLE_RATE)


def _timed_shell(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"folder benchmark: {' '.join(argv[:3])} ... failed ({last})")
    return seconds


def bench_folder(checkpoint: Path, n_files: int, log: Log, threads: int = 0) -> dict:
    """`speechx denoise IN_DIR OUT_DIR` once, then a shell loop of one `speechx denoise` per file."""
    cmd = _speechx_command()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory(prefix="speechx-bench-") as tmp:
        root = Path(tmp)
        _write_inputs(root / "in", n_files)
        log(f"folder: one `speechx denoise` over {n_files} files")
        folder_s = _timed_shell([*cmd, "denoise", str(root / "in"), str(root / "out1"),
                                 "-c", str(checkpoint), "--force"], env)
        log(f"folder: a shell loop of {n_files} `speechx denoise` runs")
        loop = ('for f in "$IN"/*.wav; do "$@" denoise "$f" "$OUT/$(basename "$f")" -c "$CK" --force '
                '|| exit 1; done')
        os.makedirs(root / "out2")
        paths = {"IN": str(root / "in"), "OUT": str(root / "out2"), "CK": str(checkpoint)}
        loop_s = _timed_shell(["bash", "-c", loop, "bash", *cmd], {**env, **paths})
        written = len(list((root / "out1").glob("*.wav"))), len(list((root / "out2").glob("*.wav")))
    if written != (n_files, n_files):
        raise RuntimeError(f"folder benchmark: expected {n_files} outputs each, got {written}")
    return {"files": n_files, "seconds_per_file": "1-2", "checkpoint": str(checkpoint),
            "folder_s": folder_s, "loop_s": loop_s, "folder_speedup": loop_s / folder_s}


def _write_tone_file(path: Path, minutes: int) -> None:
    """A long synthetic input written minute by minute (bounded memory here too)."""
    from .. import audio as A

    rng = np.random.default_rng(5)
    t = np.arange(60 * FOLDER_SAMPLE_RATE) / FOLDER_SAMPLE_RATE
    with A.BlockWriter(path, FOLDER_SAMPLE_RATE) as w:
        for _ in range(minutes):
            x = 0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
            w.write((x + 0.05 * rng.standard_normal(len(t))).astype(np.float32))


def _peak_rss_of(argv: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command, measured by a fresh parent of its own."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr[-300:]) if r.returncode else None; "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env)
    seconds, kb, rc = done.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"long-file benchmark: {' '.join(argv[:3])} ... failed ({done.stderr.strip()[-200:]})")
    return float(seconds), int(kb) / 1024


def bench_long(minutes: int, log: Log, threads: int = 0) -> dict:
    """Peak memory of denoising a `minutes`-long file vs a 1-minute one (streamed in blocks).

    Uses a tiny random-weight checkpoint: memory scaling with file length is what is measured,
    and it does not depend on the model's quality (the bigger model only adds a constant)."""
    from .. import checkpoint as ckpt

    cmd = _speechx_command()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory(prefix="speechx-long-") as tmp:
        root = Path(tmp)
        s = build("tiny")
        model = ckpt.save(root / "tiny.safetensors", s.ar, s.nar, s.codec)
        rows = {}
        for m in (1, minutes):
            _write_tone_file(root / f"in{m}.wav", m)
            log(f"long file: denoise {m} min")
            rows[m] = _peak_rss_of([*cmd, "denoise", str(root / f"in{m}.wav"), str(root / f"out{m}.wav"),
                                    "-c", str(model), "--force"], env)
    return {"minutes": minutes, "short_s": rows[1][0], "short_peak_mb": rows[1][1], "long_s": rows[minutes][0],
            "long_peak_mb": rows[minutes][1], "memory_ratio": rows[minutes][1] / rows[1][1],
            "realtime_factor": rows[minutes][0] / (60 * minutes)}


# ---------------------------------------------------------------------------------------------
# Driver and report
# ---------------------------------------------------------------------------------------------

def machine_info() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "load_before": list(os.getloadavg())}


def targets(result: dict) -> list[dict]:
    """Each required ratio: value, target, met, and whether it rests on an extrapolation."""
    rows = []
    for name, res in result["configs"].items():
        for b in BATCHES:
            r = res["ar"][f"batch{b}"]
            rows.append({"name": f"{name}: KV cache speedup, batch {b}", "value": r["cache_speedup"],
                         "target": TARGETS["cache_speedup"],
                         "extrapolated": r["uncached_extrapolated"] or r["cached_extrapolated"]})
        rows.append({"name": f"{name}: batch 8 / batch 1 tokens/s", "value": res["ar"]["batch8_over_batch1"],
                     "target": TARGETS["batch8_over_batch1"],
                     "extrapolated": any(res["ar"][f"batch{b}"]["cached_extrapolated"] for b in BATCHES)})
    if "folder" in result:
        rows.append({"name": "folder run / per-file loop", "value": result["folder"]["folder_speedup"],
                     "target": TARGETS["folder_speedup"], "extrapolated": False})
    for row in rows:
        row["met"] = row["value"] >= row["target"]
    if "long" in result:
        value = result["long"]["memory_ratio"]
        rows.append({"name": f"peak memory, {result['long']['minutes']} min / 1 min file", "value": value,
                     "target": TARGETS["long_memory_ratio"], "extrapolated": False,
                     "met": value <= TARGETS["long_memory_ratio"]})
    return rows


def run(opts: BenchOptions, log: Log = lambda msg: None) -> dict:
    """Every measurement `opts` asks for, as one JSON-ready dict."""
    from ..checkpoint import default_path

    opts.validate()
    checkpoint = opts.checkpoint or default_path()
    if opts.n_files and checkpoint is None:
        raise ValueError("folder benchmark: no checkpoint (pass --checkpoint or set SPEECHX_CHECKPOINT)")
    default_threads = torch.get_num_threads()
    torch.set_num_threads(opts.threads or default_threads)
    try:
        result: dict = {"note": "wall-clock on a possibly shared machine: compare ratios within this run",
                        "quick": opts.quick, "machine": machine_info()}
        log(f"machine: memory bandwidth and matmul FLOP/s ({torch.get_num_threads()} threads)")
        result["bounds"] = machine_bounds(opts.quick)
        result["configs"] = {name: bench_config(name, plan_for(name, opts.quick), result["bounds"], log)
                             for name in opts.configs}
        if opts.n_files:
            result["folder"] = bench_folder(Path(checkpoint), opts.n_files, log, opts.threads)
        if opts.n_long_minutes:
            result["long"] = bench_long(opts.n_long_minutes, log, opts.threads)
    finally:
        torch.set_num_threads(default_threads)
    result["targets"] = targets(result)
    result["machine"]["load_after"] = list(os.getloadavg())
    peaks = [m["rss_peak_mb"] for res in result["configs"].values() for m in res["memory"].values()]
    result["machine"]["max_rss_mb"] = max(peaks + [max_rss_bytes() / MB])
    return result


def _fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:,.0f}"


def _config_rows(name: str, res: dict) -> Iterator[tuple[str, str, str]]:
    ar = res["ar"]
    for b in BATCHES:
        r = ar[f"batch{b}"]
        how = {True: "extrapolated from 3 context lengths", False: "every step timed"}
        yield (f"AR tok/s b{b}, KV cache", _fmt(r["cached_tok_s"]),
               f"{how[r['cached_extrapolated']]}; incl. prefill {_fmt(r['prefill_s'])} s")
        yield f"AR tok/s b{b}, no cache", _fmt(r["uncached_tok_s"]), how[r["uncached_extrapolated"]]
        yield f"  cache speedup b{b}", _fmt(r["cache_speedup"]) + "x", f"target >= {TARGETS['cache_speedup']:g}x"
    yield ("  batch 8 / batch 1", _fmt(ar["batch8_over_batch1"]) + "x",
           f"target >= {TARGETS['batch8_over_batch1']:g}x; decode alone {_fmt(ar['batch8_over_batch1_decode'])}x")
    d = res["decode_bounds"]
    yield "FLOPs/token (ctx %d)" % d["context"], _fmt(d["flops_per_token"] / 1e6) + " M", ""
    yield "  b1 decode GFLOP/s", _fmt(d["gflop_s"]), f"{d['flop_fraction']:.1%} of matmul peak"
    yield "  b1 decode GB/s", _fmt(d["bandwidth_gb_s"]), \
        f"{d['bandwidth_fraction']:.1%} of copy bandwidth ({_fmt(d['bytes_per_token'] / MB)} MB/token)"
    n, c = res["nar"], res["codec"]
    yield f"NAR {n['levels']} levels, {n['frames']} frames", _fmt(n["seconds"]) + " s", "condition prefilled once"
    yield f"codec encode {c['audio_s']:g} s", _fmt(c["encode_s"]) + " s", c["kind"]
    yield f"codec decode {c['audio_s']:g} s", _fmt(c["decode_s"]) + " s", ""
    if "pipeline" in res:
        p = res["pipeline"]
        yield f"pipeline denoise {p['audio_s']:g} s", f"RTF {_fmt(p['rtf'])}", f"{_fmt(p['seconds'])} s"
    yield "weights AR + NAR", f"{_fmt(res['model']['weights_mb'])} MB", "held through every phase below"
    for phase, m in res["memory"].items():
        torch_mb = "n/a" if m["torch_peak_mb"] is None else _fmt(m["torch_peak_mb"])
        yield f"  mem {phase}", f"{_fmt(m['rss_peak_mb'])} MB", f"RSS +{_fmt(m['rss_growth_mb'])} MB, torch {torch_mb} MB"


def table(result: dict):
    """The result as a rich Table (measure, value, note), one section per config."""
    from rich.table import Table

    b, m = result["bounds"], result["machine"]
    t = Table(title="speechx bench: random weights; compare ratios within one run", title_justify="left",
              caption=f"machine: {_fmt(b['bandwidth_gb_s'])} GB/s copy, {_fmt(b['matmul_gflop_s'])} GFLOP/s matmul, "
                      f"{b['threads']} torch threads, {m['cpus']} CPUs, load {m['load_before'][0]:.1f} -> "
                      f"{m['load_after'][0]:.1f} (absolute numbers move with the load)", caption_justify="left")
    t.add_column("measure", no_wrap=True)
    t.add_column("value", justify="right", no_wrap=True)
    t.add_column("note")
    for name, res in result["configs"].items():
        t.add_row(f"[bold]{name}[/bold]", "", f"d_model {res['model']['d_model']}, {res['model']['n_layers']} layers")
        for row in _config_rows(name, res):
            t.add_row(*row)
        t.add_section()
    if "folder" in result:
        f = result["folder"]
        t.add_row("[bold]folder[/bold]", "", f"{f['files']} files of 1-2 s, {Path(f['checkpoint']).name}")
        t.add_row("one speechx run", _fmt(f["folder_s"]) + " s", "")
        t.add_row("shell loop, one per file", _fmt(f["loop_s"]) + " s", "")
        t.add_row("  folder speedup", _fmt(f["folder_speedup"]) + "x", f"target >= {TARGETS['folder_speedup']:g}x")
    if "long" in result:
        g = result["long"]
        t.add_row("[bold]long file[/bold]", "", "denoise, tiny random-weight model, streamed")
        t.add_row("1 min: peak RSS", _fmt(g["short_peak_mb"]) + " MB", f"{_fmt(g['short_s'])} s")
        t.add_row(f"{g['minutes']} min: peak RSS", _fmt(g["long_peak_mb"]) + " MB",
                  f"{_fmt(g['long_s'])} s, RTF {_fmt(g['realtime_factor'])}")
        t.add_row("  memory ratio", _fmt(g["memory_ratio"]) + "x", f"target <= {TARGETS['long_memory_ratio']:g}x")
        t.add_section()
    t.add_row("[bold]targets[/bold]", "", "")
    for r in result["targets"]:
        verdict = "met" if r["met"] else "MISSED"
        how = " (extrapolated)" if r["extrapolated"] else ""
        bound = "<=" if r["name"].startswith("peak memory") else ">="
        t.add_row(r["name"], _fmt(r["value"]) + "x", f"{verdict}: target {bound} {r['target']:g}x{how}")
    return t
