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

Checkpoints (lm_train.pt, written and read by the training loop, train/loop.py): models, optimizer,
scheduler, step, sampler position, RNG states (python, numpy, torch, CUDA) of every rank, config.
Everything random in the loop derives from (seed, step) or those RNG states, so --resume continues
the same run. Progress, the log, stop requests and checkpoint timing are the loop's; this module
holds the LM's update, its dev losses and its resumable state.
"""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
import typer
from safetensors import SafetensorError
from torch import Tensor, nn

from .. import checkpoint
from ..codecs import fingerprint as codec_fingerprint, token_config
from ..model import ARModel, ModelConfig, NARModel
from ..prompts import Batch
from .aux_ctc import STATE_KEY as CTC_STATE, CTCHead, ctc_rows, phoneme_count
from .batching import BucketSampler, length_batches, make_batch, nar_levels
from .dataset import TASK_ID, TASKS, ShardSet, read_index
from .distributed import Dist, all_sum, gather_rng, init_distributed, pick_device, rank_slices
from .lm_config import TrainConfig
from .loop import RunFolder, Schedule, Trainer, set_rng_state
from .losses import ar_level_losses, ar_loss_and_states, nar_loss

CHECKPOINT_NAME = "lm_train.pt"


# ---- models, optimizer, schedule ------------------------------------------------------------------

class LMPair(nn.Module):
    """The trained modules under one module: one forward/backward for DDP. Returns summed losses:
    AR and NAR tokens, and the auxiliary CTC loss of the `ctc_rows` (zero without a CTC head)."""

    def __init__(self, ar: ARModel | None, nar: NARModel | None, ctc: CTCHead | None = None):
        super().__init__()
        self.ar, self.nar, self.ctc = ar, nar, ctc

    def forward(self, batch: Batch, levels: Tensor, ctc_rows: Tensor | None = None) -> Tensor:
        ar_sum = nar_sum = ctc_sum = batch.tokens.new_zeros((), dtype=torch.float32)
        if self.ar is not None:
            ar_sum, _, states = ar_loss_and_states(self.ar, batch, reduction="sum")
            if self.ctc is not None:
                ctc_sum = self.ctc.loss_sum(states, batch, ctc_rows)
        if self.nar is not None:
            nar_sum = nar_loss(self.nar, batch, level=levels, reduction="sum")[0]
        return torch.stack([ar_sum, nar_sum, ctc_sum])  # (3,)


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


def read_weights(path: str | Path) -> tuple[dict, dict, dict]:
    """(model config, AR state, NAR state) from a training (.pt) or inference (.safetensors) checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = checkpoint.read_header(path)
        parts = checkpoint.read_tensors(path, ("ar", "nar"))
        return json.loads(meta["model_config"]), parts["ar"], parts["nar"]
    ckpt = load_training_checkpoint(path)
    return ckpt["model_config"], ckpt["ar"], ckpt["nar"]


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    return checkpoint.read_training(path, checkpoint.LM_TRAINING)


# ---- the trainer --------------------------------------------------------------------------------

def run_folder(cfg: TrainConfig) -> RunFolder:
    return RunFolder(Path(cfg.out_dir), CHECKPOINT_NAME)


class LMTrainer(Trainer):
    """The AR and NAR models, their optimizer, schedule and sampler on this rank, on `device`."""

    kind = checkpoint.LM_TRAINING
    label = "lm"
    shown = "loss {loss:.3f} (ar {ar:.3f} nar {nar:.3f})"
    rate = ("tokens_per_s", "{:.0f} tok/s")

    def __init__(self, cfg: TrainConfig, data, dev, d: Dist, device: torch.device, init: Mapping | None = None):
        """data, dev: dataset.ShardSet or dataset.ExampleSet (dev may be None); init: starting weights
        (model_config, ar, nar) of a fresh run."""
        super().__init__(run_folder(cfg),
                         Schedule(cfg.max_steps, cfg.log_every, cfg.eval_every, cfg.ckpt_every), main=d.main)
        self.cfg, self.data, self.dev, self.d, self.device = cfg, data, dev, d, device
        self.tokens = 0  # condition + output positions of every example trained on
        self.dev_losses: dict[str, dict[str, float]] = {}  # the last evaluation's, per task
        torch.manual_seed(cfg.seed)  # same initial weights on every rank
        self.ar, self.nar = ARModel(cfg.model), NARModel(cfg.model)
        # training-only (never exported); a run started from --init-from weights begins a fresh head
        self.ctc = CTCHead(cfg.model.d_model, cfg.model.n_text_tokens).to(device) if cfg.aux_ctc_weight > 0 else None
        if init is not None:
            self._load_weights(init)
        self.ar.to(device).train()
        self.nar.to(device).train()
        pair: nn.Module = LMPair(self.ar if cfg.train != "nar" else None, self.nar if cfg.train != "ar" else None,
                                 self.ctc)
        if d.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            pair = nn.parallel.DistributedDataParallel(pair, device_ids=ids, forward_sync_buffers=False)
        self.pair = pair  # LMPair, DDP-wrapped when world > 1
        self.opt = torch.optim.AdamW(param_groups(self.trained, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: cfg.lr_multiplier(s))
        self.sampler = BucketSampler(data.lengths, data.tasks, cfg, min_examples=d.world * cfg.grad_accum,
                                     target_lengths=data.target_lengths)
        self.dev_batches = dev_batches(dev, cfg) if dev is not None else []
        torch.manual_seed(cfg.seed + 1 + d.rank)  # dropout stream of this rank

    @property
    def trained(self) -> list[nn.Module]:
        on = [m for m, on in ((self.ar, self.cfg.train != "nar"), (self.nar, self.cfg.train != "ar")) if on]
        return on + ([self.ctc] if self.ctc is not None else [])

    @property
    def autocast(self):
        bf16 = uses_bf16(self.cfg.precision, self.device)
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else nullcontext()

    def _load_weights(self, source: Mapping) -> None:
        saved = ModelConfig(**source["model_config"])
        # dropout may change between stages; an AR may grow levels (their heads start fresh)
        grows = saved.ar_levels <= self.cfg.model.ar_levels
        if not grows or replace(saved, dropout=self.cfg.model.dropout,
                                ar_levels=self.cfg.model.ar_levels) != self.cfg.model:
            raise ValueError(f"checkpoint model config {saved} differs from {self.cfg.model}")
        missing, unexpected = self.ar.load_state_dict(source["ar"], strict=False)
        fresh = {k for k in self.ar.state_dict() if k.startswith("level_heads.")
                 and int(k.split(".")[1]) >= saved.ar_levels - 1}
        if unexpected or set(missing) != fresh:
            raise ValueError(f"AR weights do not match: missing {sorted(set(missing) - fresh)[:3]}, "
                             f"unexpected {unexpected[:3]}")
        self.nar.load_state_dict(source["nar"])

    def train_step(self) -> dict[str, Any]:
        """One optimizer update on the global batch of step `self.step`."""
        cfg, v = self.cfg, self.cfg.model.codebook_size
        group, indices = self.sampler.batch(self.step)
        levels = nar_levels(cfg.seed, self.step, len(indices), cfg.model.n_codebooks, cfg.model.ar_levels)
        frames = self.data.target_lengths[indices]
        n_ar, n_nar = float(frames.sum() + len(frames)), float(frames.sum())  # global token counts
        n_ctc = phoneme_count(self.data, indices) if self.ctc is not None else 0
        micro = rank_slices(indices, levels, self.d, cfg.grad_accum)
        sums = torch.zeros(3, device=self.device)
        for m, (idx, lv) in enumerate(micro):
            batch = make_batch(self.data, idx, v).to(self.device)
            rows = None if self.ctc is None else torch.as_tensor(ctc_rows(self.data, idx), device=self.device)
            sync = self.d.world == 1 or m == len(micro) - 1
            with nullcontext() if sync else self.pair.no_sync():
                with self.autocast:
                    s = self.pair(batch, torch.as_tensor(lv), rows)  # (3,) summed losses
                loss = s[0] / n_ar + s[1] / n_nar
                if self.ctc is not None:  # always in the graph (DDP); s[2] is 0 when no row has text
                    loss = loss + cfg.aux_ctc_weight * s[2] / max(n_ctc, 1)
                (loss * self.d.world).backward()
            sums += s.detach()
        norms = [float(nn.utils.clip_grad_norm_(m.parameters(), cfg.grad_clip)) if cfg.grad_clip > 0 else 0.0
                 for m in self.trained]
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += int(self.data.lengths[indices].sum())
        sums = all_sum(sums, self.d).cpu()
        ar, nar = float(sums[0]) / n_ar, float(sums[1]) / n_nar
        ctc = {"ctc": float(sums[2]) / n_ctc} if n_ctc else {}  # nats per phoneme; "loss" stays AR + NAR
        return {"task": group, "loss": ar + nar, "ar": ar, "nar": nar, **ctc, "lr": self.sched.get_last_lr()[0],
                "grad_norm": max(norms), "tokens": self.tokens}

    def evaluates_at(self, step: int) -> bool:
        return bool(self.dev_batches) and (step % self.cfg.eval_every == 0 or step == self.cfg.max_steps)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Mean AR and NAR token losses per dev task (fixed NAR levels; ranks split the batches)."""
        sums = torch.zeros(len(TASKS), 4, device=self.device)  # ar sum, ar count, nar sum, nar count
        a = self.cfg.model.ar_levels
        levels = torch.zeros(len(TASKS), 2, a, device=self.device)  # per AR level: sum, count
        self.ar.eval(), self.nar.eval()
        try:
            for task, ix in self.dev_batches[self.d.rank::self.d.world]:
                batch = make_batch(self.dev, ix, self.cfg.model.codebook_size).to(self.device)
                lv = torch.as_tensor([int(np.random.default_rng([self.cfg.seed, 3_000_017, int(i)]).integers(
                    min(a, self.cfg.model.n_codebooks - 1), self.cfg.model.n_codebooks)) for i in ix])  # fixed per example
                with self.autocast:
                    per, counts, _ = ar_level_losses(self.ar, batch)
                    n, nn_ = nar_loss(self.nar, batch, level=lv, reduction="sum")
                sums[task] += torch.stack([per.sum().float(), counts[0].float(), n.float(), nn_.float()])
                levels[task] += torch.stack([per.float(), counts.float()])
        finally:
            self.ar.train(), self.nar.train()
        sums, levels = all_sum(sums, self.d).cpu(), all_sum(levels, self.d).cpu()
        self.dev_losses = {t.value: {"ar": float(sums[i, 0] / sums[i, 1]), "nar": float(sums[i, 2] / sums[i, 3]),
                                     # several AR levels: each one's nats per label ("ar" is their sum per frame)
                                     **({"ar_levels": (levels[i, 0] / levels[i, 1]).tolist()} if a > 1 else {})}
                           for i, t in enumerate(TASKS) if sums[i, 1] > 0}
        return {"dev": self.dev_losses}

    def describe(self, dev: Mapping[str, Any]) -> str:
        def ar(v: Mapping[str, Any]) -> str:
            return "+".join(f"{x:.3f}" for x in v["ar_levels"]) if "ar_levels" in v else f"{v['ar']:.3f}"
        return "dev ar/nar: " + "  ".join(f"{t} {ar(v)}/{v['nar']:.3f}" for t, v in dev["dev"].items())

    def work(self) -> float:
        return self.tokens

    def agree_to_stop(self, requested: bool) -> bool:
        return bool(all_sum(torch.tensor([float(requested)], device=self.device), self.d)[0] > 0)

    def barrier(self) -> None:
        if self.d.world > 1:
            dist.barrier()

    def state_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "config": self.cfg.to_dict(), "model_config": self.cfg.model.to_dict(),
                "codec_config": getattr(self.data, "codec_config", None),
                "codec_fingerprint": getattr(self.data, "codec_fingerprint", None),
                "ar": self.ar.state_dict(), "nar": self.nar.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "sampler": self.sampler.state_dict(), "rng": gather_rng(self.d), "world_size": self.d.world,
                **({CTC_STATE: self.ctc.state_dict()} if self.ctc is not None else {})}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        changed = self.cfg.changed_from(TrainConfig.from_dict(state["config"]))
        if changed:
            raise ValueError(f"{self.run.checkpoint}: resume must keep the run's settings; "
                             f"changed: {', '.join(changed)}")
        self._load_weights(state)
        if self.ctc is not None:
            self.ctc.load_state_dict(state[CTC_STATE])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.tokens = int(state["tokens"])
        states = state["rng"]
        if len(states) != self.d.world:
            print(f"warning: checkpoint written by {len(states)} processes, resuming with {self.d.world}: "
                  "data order is kept, dropout masks are not")
        set_rng_state(states[self.d.rank % len(states)])


def dev_batches(dev, cfg: TrainConfig) -> list[tuple[int, np.ndarray]]:
    """(task id, indices) batches over the first dev_per_task examples of each task."""
    return [(TASK_ID[t], b) for t in TASKS
            for b in length_batches(np.flatnonzero(dev.tasks == TASK_ID[t])[: cfg.dev_per_task], dev.lengths, cfg)]


# ---- driver -------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    step: int
    last: dict[str, Any]  # the last step's logged values
    dev: dict[str, dict[str, float]]  # the last dev losses per task
    checkpoint: Path
    ar: ARModel
    nar: NARModel


def check_data(cfg: TrainConfig, data) -> None:
    for name in ("codebook_size", "n_codebooks"):
        have = getattr(data, name, None)
        if have is not None and have != getattr(cfg.model, name):
            raise ValueError(f"data has {name}={have}, model config has {getattr(cfg.model, name)}")


def train(cfg: TrainConfig, train_set=None, dev_set=None, *, resume: bool = False, force: bool = False,
          progress: bool = True, stop_at: int | None = None) -> TrainResult:
    """Train until cfg.max_steps (or `stop_at`, as if killed there after a checkpoint).

    train_set / dev_set: datasets (dataset.ShardSet or dataset.ExampleSet); default cfg.data / cfg.dev.
    resume: continue the run saved in cfg.out_dir (its config must agree, see lm_config.RESUMABLE_CHANGES).
    """
    cfg.validate()
    d, owned = init_distributed(cfg.device)
    try:
        device = pick_device(cfg.device, d)
        run = run_folder(cfg)
        ckpt = run.open(checkpoint.LM_TRAINING, resume=resume, force=force, main=d.main)
        train_set = train_set if train_set is not None else ShardSet(cfg.data)
        if dev_set is None and cfg.dev:
            dev_set = ShardSet(cfg.dev, expect_codec=train_set.codec_config)
        check_data(cfg, train_set)
        init = _weights_from(cfg.init_from) if cfg.init_from and ckpt is None else None
        trainer = LMTrainer(cfg, train_set, dev_set, d, device, init)
        if ckpt is not None:
            trainer.restore(ckpt)
        if d.main and trainer.sampler.missing:
            print(f"warning: no training examples for {', '.join(trainer.sampler.missing)}: not trained")
        last = trainer.fit(stop_at, progress)
        return TrainResult(trainer.step, last, trainer.dev_losses, run.checkpoint, trainer.ar, trainer.nar)
    finally:
        if owned:
            dist.destroy_process_group()


def _weights_from(path: str) -> dict:
    model_config, ar, nar = read_weights(path)
    return {"model_config": model_config, "ar": ar, "nar": nar}


# ---- export -------------------------------------------------------------------------------------

def export(training_ckpt: str | Path, codec, out_path: str | Path, info: dict | None = None,
           half: bool = False, detectors=()) -> Path:
    """Write an inference checkpoint (checkpoint.save) from a training checkpoint and its codec (and the
    frame detectors given: remove-speech's speech-free, denoise's noise-free frames).

    Refuses a codec other than the one the training data were encoded with (config and weights).
    """
    ckpt = load_training_checkpoint(training_ckpt)
    # only what decides the tokens must agree: a new decoder (wider, fine-tuned, Vocos) keeps the LM valid
    want, have = ckpt["codec_config"], codec.config()
    if want is not None and token_config(have) != token_config(want):
        want, have = token_config(want), token_config(have)
        keys = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        raise ValueError(f"the codec's tokens differ from those the training data were encoded with in: "
                         f"{', '.join(keys)}")
    if ckpt["codec_fingerprint"] is not None and codec_fingerprint(codec) != ckpt["codec_fingerprint"]:
        raise ValueError("the codec's encoder or codebooks differ from those the training data were encoded with")
    cfg = ModelConfig(**ckpt["model_config"])
    ar, nar = ARModel(cfg), NARModel(cfg)
    ar.load_state_dict(ckpt["ar"])
    nar.load_state_dict(ckpt["nar"])
    run = ckpt["config"]
    meta = {"step": ckpt["step"], "stage": run["stage"], "tokens": ckpt["tokens"], "data": run["data"],
            **(info or {})}
    return checkpoint.save(out_path, ar.eval(), nar.eval(), codec, info=meta, half=half, detectors=detectors)


# ---- command line -------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, no_args_is_help=True)
PRESETS = ("tiny", "demo", "paper")


def _model_config(preset: str, data: Path, dropout: Optional[float], ar_levels: int = 1) -> ModelConfig:
    index = read_index(data)
    extra = {} if dropout is None else {"dropout": dropout}
    return getattr(ModelConfig, preset)(codebook_size=index["codebook_size"], n_codebooks=index["n_codebooks"],
                                        ar_levels=ar_levels, **extra)


@app.command("train")
def train_cli(
    out: Annotated[Path, typer.Option("--out", help="run folder (checkpoint, log)")] = Path("runs/lm"),
    data: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False, help="training shards")] = None,
    dev: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False, help="dev shards")] = None,
    preset: Annotated[str, typer.Option(help="model size: tiny, demo or paper")] = "demo",
    dropout: Annotated[Optional[float], typer.Option(help="override the preset's dropout")] = None,
    ar_levels: Annotated[int, typer.Option(help="codebook levels the AR predicts, in the delay pattern (1: the "
                                                "paper's AR); --init-from an AR with fewer adds fresh heads")] = 1,
    stage: Annotated[str, typer.Option(help="tts (stage 1) or all (stage 2)")] = "all",
    models: Annotated[str, typer.Option("--train", help="both, ar or nar")] = "both",
    init_from: Annotated[Optional[Path], typer.Option("--init-from", "--init", exists=True, dir_okay=False,
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
    aux_ctc_weight: Annotated[float, typer.Option(help="alignment aid: auxiliary CTC loss on the target's "
                                                       "phonemes from the AR's states, this weight (0: off; "
                                                       "try 0.1-0.3)")] = 0.0,
    curriculum_steps: Annotated[int, typer.Option(help="alignment aid: the first N steps draw short targets first, "
                                                       "the length cap growing linearly to all (0: off)")] = 0,
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
        saved = TrainConfig.from_dict(load_training_checkpoint(ckpt_path)["config"])
        changes = {"out_dir": str(out), "device": device, "eval_every": eval_every, "ckpt_every": ckpt_every}
        changes |= {k: str(v) for k, v in (("data", data), ("dev", dev)) if v is not None}
        cfg = replace(saved, **changes, **({} if max_steps is None else {"max_steps": max_steps}))
    else:
        if data is None:
            raise typer.BadParameter("--data is required (unless --resume finds a run in --out)")
        if preset not in PRESETS:
            raise typer.BadParameter(f"one of {PRESETS}", param_hint="--preset")
        try:
            model = _model_config(preset, data, dropout, ar_levels)
        except ValueError as err:  # e.g. --ar-levels outside 1..K of the shards' codec
            raise typer.BadParameter(str(err)) from err
        cfg = TrainConfig(
            model=model, data=str(data), dev=str(dev) if dev else None,
            out_dir=str(out), stage=stage, train=models, batch_size=batch_size, batch_frames=batch_frames,
            grad_accum=grad_accum, lr=lr, warmup_steps=warmup, decay=decay, weight_decay=weight_decay,
            grad_clip=grad_clip, max_steps=max_steps or 10_000, init_from=str(init_from) if init_from else None,
            eval_every=eval_every, ckpt_every=ckpt_every, seed=seed, precision=precision, device=device,
            aux_ctc_weight=aux_ctc_weight, curriculum_steps=curriculum_steps)
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
    codec_checkpoint: Annotated[str, typer.Option(
        help="the codec the shards were encoded with, or one that makes the same tokens (a new decoder, Vocos)")],
    force: Annotated[bool, typer.Option("--force", help="overwrite OUT")] = False,
    half: Annotated[bool, typer.Option("--half", help="store weights as float16 (half the size)")] = False,
    info: Annotated[Optional[str], typer.Option(help="JSON object added to the checkpoint's info")] = None,
    detector: Annotated[Optional[list[Path]], typer.Option(
        exists=True, dir_okay=False, help="a frame detector to include (detector.safetensors of python -m "
                                          "speechx_cli.train.detector_train; repeat for remove-speech's and denoise's; "
                                          "an inference checkpoint keeps its own of the other tasks)")] = None,
) -> None:
    """Turn a training checkpoint into an inference checkpoint (safetensors); given an inference checkpoint,
    swap its codec for one that makes the same tokens (e.g. a Vocos decoder trained on them)."""
    if out.exists() and not force:
        raise typer.BadParameter(f"{out} exists (use --force)", param_hint="OUT")
    try:
        codec, extra = checkpoint.load_codec(codec_checkpoint), json.loads(info) if info else None
        from .detector_train import load as load_detector
        detectors = [load_detector(d) for d in detector or ()]
        if training_checkpoint.suffix == ".safetensors":
            path = checkpoint.replace_codec(training_checkpoint, codec, out, info=extra, half=half, detectors=detectors)
        else:
            path = export(training_checkpoint, codec, out, info=extra, half=half, detectors=detectors)
    except (FileNotFoundError, ValueError, KeyError, SafetensorError) as err:
        raise typer.BadParameter(str(err)) from err
    typer.echo(f"wrote {path}")


if __name__ == "__main__":
    app()
