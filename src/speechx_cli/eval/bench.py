"""Benchmark: what the hot path costs on this machine (`speechx bench`, `make bench`).

Per model config, with random weights of the real shapes:
  AR decoding tokens/s at batch 1 and 8, the engine (KV cache) against a baseline that recomputes
  the full forward every step; NAR time for all K-1 levels; codec encode/decode of 10 s of audio;
  the real-time factor of `pipeline.run` on a 10 s denoise and remove-speech (with frame detectors, as the
  demo checkpoint carries them: remove-speech takes two passes); peak memory of each phase; FLOPs per
  token and the fraction of this machine's measured matmul FLOP/s and memory bandwidth that batch-1
  cached decoding achieves (gpt-fast's "bandwidth achieved").
Plus whole-process runs (bench_process.py): folder throughput, one `speechx denoise IN_DIR OUT_DIR`
against one process per file, and the peak memory of a long file against a 1-minute one. How a
phase is timed and its memory read, and the machine's bounds: measure.py.

Every number is wall-clock on a machine others may share: trust the ratios measured within one
run; absolute numbers move with the machine's load (recorded in the output).
"""

from __future__ import annotations

import os
import platform
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from encodec import EncodecModel
from rich.table import Table

from .. import checkpoint as ckpt
from .. import pipeline as PL
from .. import prompts as P
from ..checkpoint import SpeechX
from ..codec import Codec, SmallCodec, SmallCodecConfig, quiet_weight_norm
from ..codecs.encodec24 import PretrainedEncodec
from ..detector import DetectorConfig, FrameDetector
from ..engine import DecodingOptions, generate_nar
from ..model import ARModel, ModelConfig, NARModel
from ..prompts import Batch, Task
from ..text import PHONEME_TABLE
from .bench_ar import (cached_mem_pass, cached_seconds_sampled, generate_uncached, quadratic_total, run_cached,
                       uncached_step_seconds)
from .bench_process import Log, bench_folder, bench_long
from .measure import MB, Phase, achieved, machine_bounds, max_rss_bytes, measure, measure_alternating

CONFIGS = ("demo", "paper", "tiny")
BATCHES = (1, 8)
TARGETS = {"cache_speedup": 10.0, "batch8_over_batch1": 3.0, "folder_speedup": 5.0,
           "long_memory_ratio": 1.5}  # the last one is a ceiling: lower is better


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
# AR: the engine (KV cache) against a full forward every step (timing primitives: bench_ar.py)
# ---------------------------------------------------------------------------------------------

def _cached(s: Setup, batches: dict[int, Batch], plan: Plan, opts: DecodingOptions) -> dict[int, tuple[Phase, float]]:
    """Per batch size: (phase, prefill seconds) of the engine's cached decoding, the batch sizes
    timed in alternation (`cached_rounds` rounds) so that their ratio sees one machine state."""
    steps = plan.new_frames
    mem = {b: (lambda x=x: cached_mem_pass(s.ar, x, steps)) for b, x in batches.items()}
    if plan.cached_every_step:
        fns = {b: (lambda x=x: run_cached(s.ar, x, steps, opts)) for b, x in batches.items()}
        phases = measure_alternating(fns, plan.cached_rounds, mem)
        return {b: (phases[b], min(cached_mem_pass(s.ar, x, steps) for _ in range(plan.cached_rounds)))
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
    opts = DecodingOptions()  # the CLI's default sampling
    batches = {b: ar_batch(s.cfg, b, plan.prompt_frames, seed=b) for b in BATCHES}
    log(f"{s.name}: AR with the KV cache, batch {' and '.join(map(str, BATCHES))}, {steps} frames")
    cached = _cached(s, batches, plan, opts)
    res: dict = {"prompt_frames": plan.prompt_frames, "new_frames": steps,
                 "sampling": f"temperature {opts.temperature}, engine rules for a known length"}
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
    no_prefix, zero = torch.zeros(1, 0, k, dtype=torch.long), torch.zeros(1, 0, dtype=torch.bool)
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
    """pipeline.run on one request of `audio_seconds` (default window and decoding) for denoise and for
    remove-speech, with frame detectors of random weights as the demo checkpoint carries (remove-speech then
    takes its two passes)."""
    detectors = {task: FrameDetector(DetectorConfig(sample_rate=s.codec.sample_rate, hop_length=s.codec.hop_length,
                                                    task=task)).eval() for task in ("sr", "ns")}
    sx = SpeechX(s.ar, s.nar, s.codec, s.cfg, list(PHONEME_TABLE), {"note": "random weights"}, detectors)
    rng = np.random.default_rng(3)
    audio = (0.1 * rng.standard_normal(int(plan.audio_seconds * s.codec.sample_rate))).astype(np.float32)
    out = {}
    for key, task, name in (("pipeline", Task.NS, "denoise"), ("pipeline_sr", Task.SR, "remove-speech")):
        log(f"{s.name}: pipeline.run {name} of {plan.audio_seconds:g} s")
        phase = measure(lambda: PL.run(sx, [PL.Request(task, audio=audio)], DecodingOptions()), plan.repeat)
        memory[key] = phase.memory()
        out[key] = {"task": name, "audio_s": plan.audio_seconds, "draws": PL.WindowOptions().n_draws,
                    "passes": PL.WindowOptions().n_passes(task, detectors), "seconds": phase.seconds,
                    "rtf": phase.seconds / plan.audio_seconds}
    return out


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
        res |= bench_pipeline(s, plan, memory, log)
    res["memory"] = memory
    return res


# ---------------------------------------------------------------------------------------------
# Driver and report
# ---------------------------------------------------------------------------------------------

def _bench_long(minutes: int, log: Log, threads: int) -> dict:
    """bench_long on a tiny random-weight checkpoint written for it."""
    with tempfile.TemporaryDirectory(prefix="speechx-long-") as tmp:
        s = build("tiny")
        return bench_long(ckpt.save(Path(tmp) / "tiny.safetensors", s.ar, s.nar, s.codec), minutes, log, threads)


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
    opts.validate()
    checkpoint = opts.checkpoint or ckpt.default_path()
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
            result["long"] = _bench_long(opts.n_long_minutes, log, opts.threads)
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
    for p in (res[k] for k in ("pipeline", "pipeline_sr") if k in res):
        yield (f"pipeline {p['task']} {p['audio_s']:g} s", f"RTF {_fmt(p['rtf'])}",
               f"{_fmt(p['seconds'])} s, {p['draws']} draws decoded together, {p['passes']} pass(es), detector")
    yield "weights AR + NAR", f"{_fmt(res['model']['weights_mb'])} MB", "held through every phase below"
    for phase, m in res["memory"].items():
        torch_mb = "n/a" if m["torch_peak_mb"] is None else _fmt(m["torch_peak_mb"])
        yield f"  mem {phase}", f"{_fmt(m['rss_peak_mb'])} MB", f"RSS +{_fmt(m['rss_growth_mb'])} MB, torch {torch_mb} MB"


def table(result: dict):
    """The result as a rich Table (measure, value, note), one section per config."""
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
