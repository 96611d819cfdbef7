"""The settings of an LM training run (lm_train.py), saved in its checkpoint; batching.py reads them too."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional

from ..model import ModelConfig
from .loop import lr_multiplier

# what a resumed run may change; everything else must match the run it continues
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
    # Alignment aids, off by default (runs, checkpoints and logs without them are as before):
    aux_ctc_weight: float = 0.0  # > 0: auxiliary CTC loss on the target's phonemes from the AR (aux_ctc.py)
    curriculum_steps: int = 0  # > 0: the first N steps draw short targets first, up to all (curriculum.py)

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
        if self.aux_ctc_weight < 0 or self.curriculum_steps < 0:
            raise ValueError("aux_ctc_weight and curriculum_steps must be >= 0")
        if self.aux_ctc_weight > 0 and self.model.ar_levels > 1:
            raise ValueError("the auxiliary CTC loss reads the states of a one-level AR (ar_levels 1)")
        if self.model.ar_levels == self.model.n_codebooks and self.train != "ar":
            raise ValueError("an AR over every level leaves the NAR nothing to learn: train 'ar'")
        if self.aux_ctc_weight > 0 and self.train == "nar":
            raise ValueError("the auxiliary CTC loss reads the AR's states: it needs train 'both' or 'ar'")
        return self

    def lr_multiplier(self, step: int) -> float:
        """Linear warmup, then cosine or linear decay to min_lr_ratio at max_steps."""
        return lr_multiplier(step, warmup=self.warmup_steps, decay_start=self.warmup_steps, end=self.max_steps,
                             min_ratio=self.min_lr_ratio, shape=self.decay)

    def changed_from(self, saved: "TrainConfig") -> list[str]:
        """The settings that differ from `saved` and that a resumed run must keep."""
        return [f for f in asdict(self) if f not in RESUMABLE_CHANGES and getattr(self, f) != getattr(saved, f)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return json.loads(json.dumps(d))  # tuples -> lists: JSON- and weights_only-safe

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        values = dict(d)
        values["model"] = ModelConfig(**values["model"])
        values["betas"] = tuple(values["betas"])
        return cls(**values)
