"""Train the SpeechX AR and NAR models, from one CPU process to many GPUs, with exact resume.

    python -m speechx_cli.train.lm_train train --data shards/train --dev shards/dev --out runs/s1 \
        --stage tts --preset demo --max-steps 20000
    torchrun --nproc_per_node=8 -m speechx_cli.train.lm_train train ...      (same flags, DDP)
    python -m speechx_cli.train.lm_train train --out runs/s1 --resume        (after a kill)
    python -m speechx_cli.train.lm_train train --data ... --out runs/s2 --stage all \
        --init-from runs/s1/lm_train.pt
    python -m speechx_cli.train.lm_train export runs/s2/lm_train.pt model.safetensors --codec-checkpoint C

Batches. One update consumes one *global batch*: a list of example indices that every rank draws
identically from `BucketSampler` (length-bucketed; with task_sampling="update", all from one task
drawn uniformly per update, as in the paper). Rank r of G takes batch[r::G] and splits it into
grad_accum micro-batches. Every rank knows the whole global batch, hence its token counts N_ar
(sum of T_b + 1: frames and <eos>) and N_nar (sum of T_b), so each rank backpropagates
    G * (sum of its token losses_ar / N_ar + sum of its token losses_nar / N_nar)
and DDP's gradient average (sum over ranks / G) is exactly the gradient of the token-mean loss of
the global batch: G processes with B/G examples each match one process with B, up to float
summation order. The counts need no all_reduce because they are computed from the shared index
list; an all_reduce of per-rank counts would give the same numbers. NAR levels are drawn per
example from (seed, step), so they do not depend on G either. Dropout masks do (per-rank RNG).

Stages. Stage 1 (stage="tts") trains on TTS examples only; stage 2 (stage="all", init_from=the
stage-1 checkpoint) samples all six tasks uniformly. The task tokens (<ns>, <sr>, <tse>, <soe>,
<eoe>, <mask>) own rows of the acoustic embedding tables that exist from the start (reserved slots,
prompts.py), so a stage-1 checkpoint loads into stage 2 strictly with no reshaping; those rows get
no gradient in stage 1 and are excluded from weight decay, so stage 2 starts them exactly at their
random initialisation: "new task-token embeddings", as in the paper.

Checkpoints (lm_train.pt, torch.save, read with weights_only=True): models, optimizer, scheduler,
step, sampler position, RNG states (python, numpy, torch, CUDA) of every rank, config. Everything
random in the loop derives from (seed, step) or those RNG states, so --resume continues the same run.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
import typer
from torch import Tensor, nn

from .. import checkpoint
from ..model import ARModel, ModelConfig, NARModel
from ..prompts import Batch
from ..files import atomic_path
from .batching import BucketSampler, length_batches, make_batch, nar_levels  # noqa: F401 (re-exported)
from . import common
from .common import load_codec, set_rng_state, stop_requests
from .distributed import Dist, all_sum, gather_rng, init_distributed, pick_device, rank_slices
from .losses import ar_loss, nar_loss
from .shards import TASK_ID, TASKS, ShardSet

CHECKPOINT_KIND = "speechx_lm_training"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "lm_train.pt"
LOG_NAME = "log.jsonl"
RESUMABLE_CHANGES = ("data", "dev", "out_dir", "device", "max_steps", "eval_every", "ckpt_every", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """Everything an LM training run needs; saved in its checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig.demo)
    data: Optional[str] = None  # shard folder (None: the caller passes a dataset)
    dev: Optional[str] = None
    out_dir: str = "runs/lm"
    stage: str = "all"  # "tts": stage 1 (TTS only); "all": stage 2 (six tasks, uniform)
    train: str = "both"  # "both" (sum of the AR and NAR losses), "ar" or "nar"
    task_sampling: str = "update"  # one task per update (paper), or "example" (mixed batches)
    batch_frames: int = 0  # global budget of padded positions per update (0: by examples only)
    batch_size: int = 8  # examples per update (a cap when batch_frames > 0; 0 = no cap)
    bucket_pool: int = 32  # batches' worth of examples sorted by length together
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01  # Linear weights only
    warmup_steps: int = 1000
    decay: str = "cosine"  # "cosine", "linear" or "none", down to min_lr_ratio * lr at max_steps
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # per model (0 = off)
    grad_accum: int = 1
    max_steps: int = 10_000
    init_from: Optional[str] = None  # training or inference checkpoint whose weights start the run
    eval_every: int = 500
    ckpt_every: int = 500
    log_every: int = 10
    dev_per_task: int = 64  # dev examples per task in each evaluation
    seed: int = 0
    # "auto": bf16 autocast on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX: 1.7-1.8x the tokens/s
    # of fp32 on this project's CPU, dev losses equal to 1e-4 after 150 steps), else fp32; "fp32" or "bf16"
    precision: str = "auto"
    device: str = "auto"  # "auto", "cpu" or "cuda"

    def validate(self) -> "TrainConfig":
        choices = {"stage": ("tts", "all"), "train": ("both", "ar", "nar"), "decay": ("cosine", "linear", "none"),
                   "task_sampling": ("update", "example"), "precision": ("auto", "fp32", "bf16")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.batch_frames <= 0 and self.batch_size <= 0:
            raise ValueError("set batch_size or batch_frames")
        if min(self.grad_accum, self.max_steps, self.eval_every, self.ckpt_every, self.log_every) < 1:
            raise ValueError("grad_accum, max_steps and the intervals must be >= 1")
        if self.lr <= 0 or self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("lr must be > 0, warmup_steps >= 0, min_lr_ratio in [0, 1]")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists: JSON- and weights_only-safe

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        values = dict(d)
        values["model"] = ModelConfig(**values["model"])
        values["betas"] = tuple(values["betas"])
        return cls(**values)


# ---- models, optimizer, schedule ------------------------------------------------------------------

class LMPair(nn.Module):
    """The trained models under one module: one forward/backward for DDP. Returns summed token losses."""

    def __init__(self, ar: ARModel | None, nar: NARModel | None):
        super().__init__()
        self.ar, self.nar = ar, nar

    def forward(self, batch: Batch, levels: Tensor) -> Tensor:
        zero = batch.tokens.new_zeros((), dtype=torch.float32)
        ar_sum = ar_loss(self.ar, batch, reduction="sum")[0] if self.ar is not None else zero
        nar_sum = nar_loss(self.nar, batch, level=levels, reduction="sum")[0] if self.nar is not None else zero
        return torch.stack([ar_sum, nar_sum])  # (2,)


def param_groups(models: list[nn.Module], weight_decay: float) -> list[dict]:
    """Decay Linear weights only: embeddings (incl. untrained task-token rows), norms, biases stay."""
    decay = {id(m.weight) for model in models for m in model.modules() if isinstance(m, nn.Linear)}
    params = [p for model in models for p in model.parameters()]
    return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively here (CUDA, or a CPU oneDNN has bf16 kernels for)."""
    if device.type == "cuda":
        return True
    try:
        return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private op: absent from some builds
        return False


def uses_bf16(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def lr_multiplier(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine or linear decay to min_lr_ratio at max_steps."""
    return common.lr_multiplier(step, warmup=cfg.warmup_steps, decay_start=cfg.warmup_steps,
                                end=cfg.max_steps, min_ratio=cfg.min_lr_ratio, shape=cfg.decay)


def read_weights(path: str | Path) -> tuple[dict, dict, dict]:
    """(model config, AR state, NAR state) from a training (.pt) or inference (.safetensors) checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        meta = checkpoint.read_header(path)
        parts: dict[str, dict] = {"ar": {}, "nar": {}}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                group, _, name = key.partition(".")
                if group in parts:
                    parts[group][name] = f.get_tensor(key)
        return json.loads(meta["model_config"]), parts["ar"], parts["nar"]
    ckpt = load_training_checkpoint(path)
    return ckpt["model_config"], ckpt["ar"], ckpt["nar"]


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise ValueError(f"{path} is not an LM training checkpoint")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: LM training checkpoint version {ckpt.get('version')} is not supported")
    return ckpt


# ---- training state -----------------------------------------------------------------------------

@dataclass
class TrainState:
    cfg: TrainConfig
    ar: ARModel
    nar: NARModel
    pair: nn.Module  # LMPair, DDP-wrapped when world > 1
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    sampler: BucketSampler
    data: Any  # ShardSet or ExampleSet
    d: Dist
    device: torch.device
    step: int = 0
    tokens: int = 0  # condition + output positions of every example trained on
    saved_step: int = -1

    @property
    def trained(self) -> list[nn.Module]:
        return [m for m, on in ((self.ar, self.cfg.train != "nar"), (self.nar, self.cfg.train != "ar")) if on]

    @property
    def autocast(self):
        bf16 = uses_bf16(self.cfg.precision, self.device)
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def build_state(cfg: TrainConfig, data, d: Dist, device: torch.device, resume: Mapping | None) -> TrainState:
    """Models (fresh, init_from, or resumed), optimizer, schedule and sampler, on `device`."""
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    ar, nar = ARModel(cfg.model), NARModel(cfg.model)
    source = resume if resume is not None else (_weights_from(cfg.init_from) if cfg.init_from else None)
    if source is not None:
        saved = ModelConfig(**source["model_config"])
        if replace(saved, dropout=cfg.model.dropout) != cfg.model:  # dropout may change between stages
            raise ValueError(f"checkpoint model config {saved} differs from {cfg.model}")
        ar.load_state_dict(source["ar"])
        nar.load_state_dict(source["nar"])
    ar.to(device).train()
    nar.to(device).train()
    pair: nn.Module = LMPair(ar if cfg.train != "nar" else None, nar if cfg.train != "ar" else None)
    trained = [m for m in (pair.ar, pair.nar) if m is not None]
    if d.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        pair = nn.parallel.DistributedDataParallel(pair, device_ids=ids, forward_sync_buffers=False)
    opt = torch.optim.AdamW(param_groups(trained, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, cfg))
    sampler = BucketSampler(data.lengths, data.tasks, cfg, min_examples=d.world * cfg.grad_accum)
    st = TrainState(cfg, ar, nar, pair, opt, sched, sampler, data, d, device)
    torch.manual_seed(cfg.seed + 1 + d.rank)  # dropout stream of this rank
    if resume is not None:
        _restore(st, resume)
    return st


def _weights_from(path: str) -> dict:
    model_config, ar, nar = read_weights(path)
    return {"model_config": model_config, "ar": ar, "nar": nar}


def _restore(st: TrainState, ckpt: Mapping) -> None:
    st.opt.load_state_dict(ckpt["optimizer"])
    st.sched.load_state_dict(ckpt["scheduler"])
    st.sampler.load_state_dict(ckpt["sampler"])
    st.step, st.tokens = int(ckpt["step"]), int(ckpt["tokens"])
    states = ckpt["rng"]
    if len(states) != st.d.world:
        print(f"warning: checkpoint written by {len(states)} processes, resuming with {st.d.world}: "
              "data order is kept, dropout masks are not")
    set_rng_state(states[st.d.rank % len(states)])


def save_training_checkpoint(st: TrainState, path: Path) -> None:
    """Rank 0 writes (atomically); every rank must call it (RNG states are gathered)."""
    states = gather_rng(st.d)
    st.saved_step = st.step
    if st.d.main:
        state = {
            "kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "step": st.step, "tokens": st.tokens,
            "config": st.cfg.to_dict(), "model_config": st.cfg.model.to_dict(),
            "codec_config": getattr(st.data, "codec_config", None),
            "codec_fingerprint": getattr(st.data, "codec_fingerprint", None),
            "ar": st.ar.state_dict(), "nar": st.nar.state_dict(),
            "optimizer": st.opt.state_dict(), "scheduler": st.sched.state_dict(),
            "sampler": st.sampler.state_dict(), "rng": states, "world_size": st.d.world,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    if st.d.world > 1:
        dist.barrier()


# ---- one update, evaluation ---------------------------------------------------------------------

def train_step(st: TrainState) -> dict[str, float]:
    """One optimizer update on the global batch of step `st.step`."""
    cfg, v = st.cfg, st.cfg.model.codebook_size
    group, indices = st.sampler.batch(st.step)
    levels = nar_levels(cfg.seed, st.step, len(indices), cfg.model.n_codebooks)
    frames = st.data.target_lengths[indices]
    n_ar, n_nar = float(frames.sum() + len(frames)), float(frames.sum())  # global token counts
    micro = rank_slices(indices, levels, st.d, cfg.grad_accum)
    sums = torch.zeros(2, device=st.device)
    for m, (idx, lv) in enumerate(micro):
        batch = make_batch(st.data, idx, v).to(st.device)
        sync = st.d.world == 1 or m == len(micro) - 1
        with nullcontext() if sync else st.pair.no_sync():
            with st.autocast:
                s = st.pair(batch, torch.as_tensor(lv))  # (2,) summed token losses
            ((s[0] / n_ar + s[1] / n_nar) * st.d.world).backward()
        sums += s.detach()
    norms = [float(nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)) if cfg.grad_clip > 0 else 0.0
             for m in st.trained]
    st.opt.step()
    st.sched.step()
    st.opt.zero_grad(set_to_none=True)
    st.step += 1
    st.tokens += int(st.data.lengths[indices].sum())
    return {"group": group, "sums": sums, "n_ar": n_ar, "n_nar": n_nar, "grad_norm": max(norms),
            "lr": st.sched.get_last_lr()[0]}


def dev_batches(dev, cfg: TrainConfig) -> list[tuple[int, np.ndarray]]:
    """(task id, indices) batches over the first dev_per_task examples of each task."""
    return [(TASK_ID[t], b) for t in TASKS
            for b in length_batches(np.flatnonzero(dev.tasks == TASK_ID[t])[: cfg.dev_per_task], dev.lengths, cfg)]


@torch.no_grad()
def evaluate(st: TrainState, dev, batches: list[tuple[int, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Mean AR and NAR token losses per dev task (fixed NAR levels; ranks split the batches)."""
    sums = torch.zeros(len(TASKS), 4, device=st.device)  # ar sum, ar count, nar sum, nar count
    st.ar.eval(), st.nar.eval()
    try:
        for task, ix in batches[st.d.rank::st.d.world]:
            batch = make_batch(dev, ix, st.cfg.model.codebook_size).to(st.device)
            lv = torch.as_tensor([int(np.random.default_rng([st.cfg.seed, 3_000_017, int(i)]).integers(
                1, st.cfg.model.n_codebooks)) for i in ix])  # fixed per dev example
            with st.autocast:
                a, na = ar_loss(st.ar, batch, reduction="sum")
                n, nn_ = nar_loss(st.nar, batch, level=lv, reduction="sum")
            sums[task] += torch.stack([a.float(), na.float(), n.float(), nn_.float()])
    finally:
        st.ar.train(), st.nar.train()
    sums = all_sum(sums, st.d).cpu()
    return {t.value: {"ar": float(sums[i, 0] / sums[i, 1]), "nar": float(sums[i, 2] / sums[i, 3])}
            for i, t in enumerate(TASKS) if sums[i, 1] > 0}


# ---- driver -------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    step: int
    last: dict[str, Any]  # the last logged values
    dev: dict[str, dict[str, float]]  # the last dev losses per task
    checkpoint: Path
    ar: ARModel
    nar: NARModel


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("lm"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.3f} (ar {task.fields[ar]:.3f} nar {task.fields[nar]:.3f})"),
                    TextColumn("{task.fields[tps]:.0f} tok/s"), TimeRemainingColumn(), disable=not enabled)


def check_data(cfg: TrainConfig, data) -> None:
    for name in ("codebook_size", "n_codebooks"):
        have = getattr(data, name, None)
        if have is not None and have != getattr(cfg.model, name):
            raise ValueError(f"data has {name}={have}, model config has {getattr(cfg.model, name)}")


def train(cfg: TrainConfig, train_set=None, dev_set=None, *, resume: bool = False, force: bool = False,
          progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Train until cfg.max_steps (or `stop_at`, as if killed there after a checkpoint).

    train_set / dev_set: datasets (shards.ShardSet or shards.ExampleSet); default cfg.data / cfg.dev.
    resume: continue the run saved in cfg.out_dir (its config must agree, see RESUMABLE_CHANGES).
    """
    cfg.validate()
    d, owned = init_distributed(cfg.device)
    try:
        device = pick_device(cfg.device, d)
        out = Path(cfg.out_dir)
        ckpt_path = out / CHECKPOINT_NAME
        ckpt = _resume_checkpoint(cfg, ckpt_path, resume, force)
        train_set = train_set if train_set is not None else ShardSet(cfg.data)
        if dev_set is None and cfg.dev:
            dev_set = ShardSet(cfg.dev, expect_codec=train_set.codec_config)
        check_data(cfg, train_set)
        st = build_state(cfg, train_set, d, device, ckpt)
        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            if ckpt is None:
                (out / LOG_NAME).unlink(missing_ok=True)  # a new run gets a new log
        if d.main and st.sampler.missing:
            print(f"warning: no training examples for {', '.join(st.sampler.missing)}: not trained")
        last, dev = _loop(st, dev_set, ckpt_path, out / LOG_NAME, progress and d.main, stop_at)
        if st.saved_step != st.step:
            save_training_checkpoint(st, ckpt_path)
        return TrainResult(st.step, last, dev, ckpt_path, st.ar, st.nar)
    finally:
        if owned:
            dist.destroy_process_group()


def _resume_checkpoint(cfg: TrainConfig, path: Path, resume: bool, force: bool) -> dict | None:
    if not path.exists():
        return None
    if not (resume or force):
        raise FileExistsError(f"{path} exists: pass --resume to continue it or --force to start over")
    if not resume:
        return None
    ckpt = load_training_checkpoint(path)
    saved = TrainConfig.from_dict(ckpt["config"])
    changed = [f for f in asdict(cfg) if f not in RESUMABLE_CHANGES and getattr(cfg, f) != getattr(saved, f)]
    if changed:
        raise ValueError(f"{path}: resume must keep the run's settings; changed: {', '.join(changed)}")
    return ckpt


def _loop(st: TrainState, dev, ckpt_path: Path, log_path: Path, show: bool, stop_at: int | None):
    cfg, last, dev_losses = st.cfg, {}, {}
    batches = dev_batches(dev, cfg) if dev is not None else []
    end = cfg.max_steps if stop_at is None else min(stop_at, cfg.max_steps)
    show = show and st.step < end  # a finished run resumed: nothing to show
    t0, tokens0 = time.perf_counter(), st.tokens
    with _progress(show) as bar, stop_requests() as flag, _log_file(log_path, st.d.main) as log:
        task = bar.add_task("lm", total=cfg.max_steps, completed=st.step, loss=math.nan, ar=math.nan,
                            nar=math.nan, tps=0.0)
        if batches and st.step == 0:  # the untrained baseline
            dev_losses = _dev_report(st, dev, batches, bar.console if show else None, log)
        while st.step < end:
            r = train_step(st)
            stop = torch.tensor([float(flag["stop"])], device=st.device)
            sums = all_sum(torch.cat([r["sums"], stop]), st.d).cpu()
            ar, nar = float(sums[0]) / r["n_ar"], float(sums[1]) / r["n_nar"]
            tps = (st.tokens - tokens0) / (time.perf_counter() - t0)
            bar.update(task, completed=st.step, loss=ar + nar, ar=ar, nar=nar, tps=tps)
            last = {"step": st.step, "task": r["group"], "loss": ar + nar, "ar": ar, "nar": nar,
                    "lr": r["lr"], "grad_norm": r["grad_norm"], "tokens_per_s": tps, "tokens": st.tokens}
            if log and st.step % cfg.log_every == 0:
                log.write(json.dumps(last) + "\n")
            if batches and (st.step % cfg.eval_every == 0 or st.step == cfg.max_steps):
                dev_losses = _dev_report(st, dev, batches, bar.console if show else None, log)
            if st.step % cfg.ckpt_every == 0:
                save_training_checkpoint(st, ckpt_path)
            if sums[2] > 0:  # any rank was asked to stop: all stop after this update
                if show:
                    bar.console.print(f"stopped at step {st.step}; resume with --resume")
                break
    return last, dev_losses


def _dev_report(st: TrainState, dev, batches, console, log) -> dict[str, dict[str, float]]:
    losses = evaluate(st, dev, batches)
    if console is not None:
        console.print(f"step {st.step} dev ar/nar: " + "  ".join(
            f"{t} {v['ar']:.3f}/{v['nar']:.3f}" for t, v in losses.items()))
    if log:
        log.write(json.dumps({"step": st.step, "dev": losses}) + "\n")
    return losses


@contextmanager
def _log_file(path: Path, enabled: bool):
    """JSON lines, line-buffered (rank 0 only; None elsewhere)."""
    if not enabled:
        yield None
        return
    with open(path, "a", buffering=1) as f:
        yield f


# ---- export -------------------------------------------------------------------------------------

def export(training_ckpt: str | Path, codec, out_path: str | Path, info: dict | None = None,
           half: bool = False) -> Path:
    """Write an inference checkpoint (checkpoint.save) from a training checkpoint and its codec.

    Refuses a codec other than the one the training data were encoded with (config and weights).
    """
    ckpt = load_training_checkpoint(training_ckpt)
    want, have = ckpt["codec_config"], codec.config()
    if want is not None and have != want:
        keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"the codec differs from the one the training data were encoded with in: {', '.join(keys)}")
    if ckpt["codec_fingerprint"] is not None:
        from .shards import codec_fingerprint

        if codec_fingerprint(codec) != ckpt["codec_fingerprint"]:
            raise ValueError("the codec's encoder or codebooks differ from those the training data were "
                             "encoded with")
    cfg = ModelConfig(**ckpt["model_config"])
    ar, nar = ARModel(cfg), NARModel(cfg)
    ar.load_state_dict(ckpt["ar"])
    nar.load_state_dict(ckpt["nar"])
    run = ckpt["config"]
    meta = {"step": ckpt["step"], "stage": run["stage"], "tokens": ckpt["tokens"], "data": run["data"],
            **(info or {})}
    return checkpoint.save(out_path, ar.eval(), nar.eval(), codec, info=meta, half=half)


# ---- command line -------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, no_args_is_help=True)
PRESETS = ("tiny", "demo", "paper")


def _model_config(preset: str, data: Path, dropout: Optional[float]) -> ModelConfig:
    from .shards import read_index

    index = read_index(data)
    extra = {} if dropout is None else {"dropout": dropout}
    return getattr(ModelConfig, preset)(codebook_size=index["codebook_size"], n_codebooks=index["n_codebooks"],
                                        **extra)


@app.command("train")
def train_cli(
    out: Annotated[Path, typer.Option("--out", help="run folder (checkpoint, log)")] = Path("runs/lm"),
    data: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False, help="training shards")] = None,
    dev: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False, help="dev shards")] = None,
    preset: Annotated[str, typer.Option(help="model size: tiny, demo or paper")] = "demo",
    dropout: Annotated[Optional[float], typer.Option(help="override the preset's dropout")] = None,
    stage: Annotated[str, typer.Option(help="tts (stage 1) or all (stage 2)")] = "all",
    models: Annotated[str, typer.Option("--train", help="both, ar or nar")] = "both",
    init_from: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False,
                                                      help="start from these weights (stage 1 -> 2)")] = None,
    batch_size: Annotated[int, typer.Option(help="examples per update (cap if --batch-frames)")] = 8,
    batch_frames: Annotated[int, typer.Option(help="padded positions per update, all ranks")] = 0,
    grad_accum: Annotated[int, typer.Option()] = 1,
    lr: Annotated[float, typer.Option()] = 5e-4,
    warmup: Annotated[int, typer.Option(help="warmup steps")] = 1000,
    decay: Annotated[str, typer.Option(help="cosine, linear or none")] = "cosine",
    weight_decay: Annotated[float, typer.Option()] = 0.01,
    grad_clip: Annotated[float, typer.Option()] = 1.0,
    max_steps: Annotated[Optional[int], typer.Option(help="default 10000; on --resume, extends the run")] = None,
    eval_every: Annotated[int, typer.Option()] = 500,
    ckpt_every: Annotated[int, typer.Option()] = 500,
    seed: Annotated[int, typer.Option()] = 0,
    precision: Annotated[str, typer.Option(help="auto (bf16 where native: CUDA, AVX512-BF16/AMX CPUs), fp32 or bf16")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    threads: Annotated[Optional[int], typer.Option()] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    force: Annotated[bool, typer.Option("--force", help="start over, replacing the run in --out")] = False,
) -> None:
    """Train the AR and NAR models; Ctrl-C stops after the current update and saves."""
    if threads:
        torch.set_num_threads(threads)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        saved = TrainConfig.from_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True)["config"])
        changes = {"out_dir": str(out), "device": device, "eval_every": eval_every, "ckpt_every": ckpt_every}
        changes |= {k: str(v) for k, v in (("data", data), ("dev", dev)) if v is not None}
        cfg = replace(saved, **changes, **({} if max_steps is None else {"max_steps": max_steps}))
    else:
        if data is None:
            raise typer.BadParameter("--data is required (unless --resume finds a run in --out)")
        if preset not in PRESETS:
            raise typer.BadParameter(f"one of {PRESETS}", param_hint="--preset")
        cfg = TrainConfig(
            model=_model_config(preset, data, dropout), data=str(data), dev=str(dev) if dev else None,
            out_dir=str(out), stage=stage, train=models, batch_size=batch_size, batch_frames=batch_frames,
            grad_accum=grad_accum, lr=lr, warmup_steps=warmup, decay=decay, weight_decay=weight_decay,
            grad_clip=grad_clip, max_steps=max_steps or 10_000, init_from=str(init_from) if init_from else None,
            eval_every=eval_every, ckpt_every=ckpt_every, seed=seed, precision=precision, device=device)
    try:
        result = train(cfg, resume=resume, force=force)
    except (FileExistsError, ValueError) as err:
        raise typer.BadParameter(str(err)) from err
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"step {result.step}: checkpoint {result.checkpoint}")


@app.command("export")
def export_cli(
    training_checkpoint: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Argument(help="inference checkpoint (.safetensors)")],
    codec_checkpoint: Annotated[str, typer.Option(help="the codec the shards were encoded with")],
    force: Annotated[bool, typer.Option("--force", help="overwrite OUT")] = False,
    half: Annotated[bool, typer.Option("--half", help="store weights as float16 (half the size)")] = False,
    info: Annotated[Optional[str], typer.Option(help="JSON object added to the checkpoint's info")] = None,
) -> None:
    """Turn a training checkpoint into an inference checkpoint (safetensors)."""
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists (use --force)", param_hint="OUT")
    try:
        path = export(training_checkpoint, load_codec(codec_checkpoint), out,
                      info=json.loads(info) if info else None, half=half)
    except (FileNotFoundError, ValueError) as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
