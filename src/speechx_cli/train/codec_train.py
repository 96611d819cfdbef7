"""Train a codec of any trainable kind on a folder of audio; resumable exactly after a kill.

Kinds (`--kind`): small (EnCodec architecture, codec.SmallCodec), dac (codecs/dac.py) and vocos (a Vocos
decoder on the frozen tokens of a trained codec, `--base CKPT`; codecs/vocos.py). Each trains with its
anchor's recipe (train/discriminators.py): the small codec with 0.1 x L1 + mean log-mel L1 + commitment
and, from `--adv-start` on, EnCodec's MS-STFT discriminator; DAC and Vocos with DAC's summed multi-scale
mel loss (x15), commitment (x0.25) and codebook (x1) losses and, from `--adv-start` on, multi-period and
multi-band STFT discriminators (least squares, feature matching x2). Batches are random 1 s segments
drawn by a seeded generator whose state is saved with the model, the optimizers (the discriminators'
too) and the global RNG states, so `--resume` continues the very same run.

    speechx train codec --data DIR --dev DEVDIR --out runs/codec --steps 20000
    speechx train codec --kind dac --data DIR --dev DEVDIR --out runs/dac --adv-start 2000
    speechx train codec --kind vocos --base runs/codec/codec_train.pt --data DIR --out runs/vocos

Decoder-only fine-tuning (`--init-from runs/codec/codec_train.pt --freeze-tokenizer`) starts from a
trained codec and trains its decoder alone, usually against the discriminator: the encoder and the
codebooks stay fixed, so shards and language models made with the first codec stay valid (so do they
under a Vocos decoder, whose tokens are its base's).

The run's progress, log, stop requests, checkpoints and resume are the training loop's (train/loop.py);
this module holds the codec's update and losses, train/codec_metrics.py what it measures, train/segments.py its data,
train/codec_cli.py its command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import checkpoint
from ..codec import Codec, SmallCodec, SmallCodecConfig
from ..codecs import token_config
from ..codecs.dac import DacCodec, DacConfig
from ..codecs.vocos import TOKENIZER_PARTS, VocosCodec, VocosConfig
from .codec_metrics import DEV_MEL, codebook_use, evaluate
from .discriminators import Adversary, Recipe
from . import phonetic
from .loop import RunFolder, Schedule, Trainer, lr_multiplier, rng_state, set_rng_state
from .phonetic import PhoneticHead, Utterance, WordBatch, WordWindowSampler
from .losses import MultiScaleMelLoss
from .segments import AudioBank, SegmentSampler, find_audio_files, load_waves

CHECKPOINT_NAME = "codec_train.pt"
BEST_NAME = "codec_best.pt"
CodecConfig = Union[SmallCodecConfig, DacConfig, VocosConfig]
TRAINABLE: dict[str, tuple[type[Codec], type]] = {
    SmallCodec.kind: (SmallCodec, SmallCodecConfig), DacCodec.kind: (DacCodec, DacConfig),
    VocosCodec.kind: (VocosCodec, VocosConfig)}


def codec_kind(cfg: CodecConfig) -> str:
    return next(kind for kind, (_, config_class) in TRAINABLE.items() if isinstance(cfg, config_class))


def codec_config_from_dict(d: Mapping[str, Any]) -> CodecConfig:
    """A trainable codec's config from its dict (older runs' dicts have no kind: the small codec)."""
    kind = d.get("kind", SmallCodec.kind)
    if kind not in TRAINABLE:
        raise ValueError(f"codec kind {kind!r} is not trainable here (trainable: {', '.join(TRAINABLE)})")
    return TRAINABLE[kind][1].from_dict(d)


def build_codec(cfg: CodecConfig) -> Codec:
    """An untrained codec of the config's kind."""
    return TRAINABLE[codec_kind(cfg)][0](cfg)


@dataclass(frozen=True)
class CodecTrainConfig:
    """Everything a codec training run needs; saved in its checkpoint."""

    data: tuple[str, ...]  # audio files, folders (searched recursively) or .txt lists of files
    out_dir: str = "runs/codec"
    dev: tuple[str, ...] = ()
    codec: CodecConfig = field(default_factory=SmallCodecConfig.demo)
    base: Optional[str] = None  # vocos: the codec checkpoint whose encoder and codebooks it reads
    steps: int = 10_000
    batch_size: int = 8
    segment_s: float = 1.0
    random_gain_db: float = 6.0  # each segment scaled by a uniform gain in +-this
    lr: float = 3e-4
    lr_decay_start: Optional[int] = None  # from this step a cosine decay to lr_min_ratio x lr at `steps`
    lr_min_ratio: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    quantizer_warmup_steps: int = 150  # the small codec's: k-means then starts from meaningful encodings
    recipe: Optional[Recipe] = None  # losses, weights, discriminators; None: the kind's anchor's (Recipe.for_kind)
    adv_start_step: Optional[int] = None  # None: never train against the discriminators
    init_from: Optional[str] = None  # a codec training checkpoint whose weights start this run
    freeze_tokenizer: bool = False  # train the decoder only (the codes stay what they were)
    words: Optional[str] = None  # a corpus manifest: whole-word windows of its transcribed train utterances
    phonetic_weight: float = 0.0  # > 0: a loss on the phonemes from level 1 (train/phonetic.py; needs words)
    phonetic_loss: str = "frames"  # each frame's phoneme (cross-entropy) or "ctc" on the window's phonemes
    # what the head reads: the "latent" before the quantizer (default: stable) or level 1's quantized vectors
    # ("level1": both runs at weight 1 diverged, docs/codec-study.md)
    phonetic_input: str = "latent"
    # > 0: the small codec also decodes level 1 alone (straight through) and adds that reconstruction's loss x
    # this: the decoder learns to render level 1 by itself and, unless the tokenizer is frozen, the encoder is
    # pushed to put in level 1 what the sound needs most (at weight 1 that destabilized it: docs/codec-study.md)
    first_level_weight: float = 0.0
    best_metric: Optional[str] = None  # e.g. "dev_pesq_wb": also keep the best evaluated checkpoint
    log_every: int = 10
    eval_every: int = 500
    ckpt_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.recipe is None:
            object.__setattr__(self, "recipe", Recipe.for_kind(self.kind))
        if self.phonetic_weight and (self.words is None or self.kind != SmallCodec.kind or self.freeze_tokenizer):
            raise ValueError("a phonetic first level needs word timings (--words) and a small codec whose "
                             "tokenizer trains")
        if self.first_level_weight and self.kind != SmallCodec.kind:
            raise ValueError("decoding level 1 alone in training needs a small codec")
        if self.phonetic_loss not in phonetic.LOSSES or self.phonetic_input not in phonetic.INPUTS:
            raise ValueError(f"phonetic_loss must be one of {', '.join(phonetic.LOSSES)}, phonetic_input one "
                             f"of {', '.join(phonetic.INPUTS)}")

    @property
    def kind(self) -> str:
        return codec_kind(self.codec)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["codec"] = {"kind": self.kind, **self.codec.to_dict()}
        d["recipe"] = self.recipe.to_dict()
        return json.loads(json.dumps(d))  # tuples -> lists: JSON- and weights_only-safe

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CodecTrainConfig:
        values = dict(d)
        values["codec"] = codec_config_from_dict(values["codec"])
        values["recipe"] = Recipe.from_dict(values["recipe"]) if values.get("recipe") else None
        tuples = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})

    def quantized_at(self, step: int) -> bool:
        """Whether step `step` goes through the quantizer: not during the warmup of a fresh small codec
        (its codebooks are empty); always when the codebooks come trained (init_from) or fixed, and for
        the other kinds (their codebooks need no k-means start)."""
        return (self.kind != SmallCodec.kind or self.freeze_tokenizer or self.init_from is not None
                or step >= self.quantizer_warmup_steps)

    def lr_at(self, step: int) -> float:
        """Flat, or from lr_decay_start a cosine decay to lr_min_ratio x lr at `steps`."""
        if self.lr_decay_start is None:
            return self.lr
        return self.lr * lr_multiplier(step, warmup=0, decay_start=self.lr_decay_start, end=self.steps,
                                       min_ratio=self.lr_min_ratio)

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_s * self.codec.sample_rate))


# ---- the trainer --------------------------------------------------------------------------------

def run_folder(cfg: CodecTrainConfig) -> RunFolder:
    return RunFolder(Path(cfg.out_dir), CHECKPOINT_NAME, BEST_NAME)


class CodecTrainer(Trainer):
    """The codec (and, for adversarial training, the recipe's discriminators), their optimizers and the sampler."""

    kind = checkpoint.CODEC_TRAINING
    label = "codec"

    def __init__(self, cfg: CodecTrainConfig, train: AudioBank | list[Tensor] | list[Utterance],
                 dev_waves: list[Tensor] = ()):
        """`train`: the training audio (or waveforms), or with cfg.words the manifest's utterances
        (phonetic.read_manifest)."""
        super().__init__(run_folder(cfg), Schedule(cfg.steps, cfg.log_every, cfg.eval_every, cfg.ckpt_every,
                                                   cfg.best_metric))
        self.cfg, self.dev_waves = cfg, list(dev_waves)
        torch.manual_seed(cfg.seed)
        self.codec = build_codec(cfg.codec).train()
        if cfg.freeze_tokenizer and hasattr(self.codec, "freeze_tokenizer"):  # a Vocos decoder's always is
            self.codec.freeze_tokenizer()
        self.phonetic = PhoneticHead(cfg.codec.dimension) if cfg.phonetic_weight else None
        trained = [p for p in self.codec.parameters() if p.requires_grad]
        trained += list(self.phonetic.parameters()) if self.phonetic is not None else []
        self.opt = torch.optim.Adam(trained, lr=cfg.lr, betas=cfg.betas)
        self.adversary = Adversary(cfg.recipe, cfg.lr, cfg.betas) if cfg.adv_start_step is not None else None
        sampler = WordWindowSampler if cfg.words is not None else SegmentSampler
        self.sampler = sampler(train, cfg.segment_samples, cfg.batch_size, cfg.seed, cfg.random_gain_db,
                               **({"hop": self.codec.hop_length} if cfg.words is not None else {}))
        self.mel_loss = cfg.recipe.mel_loss(cfg.codec.sample_rate)
        self.dev_mel = MultiScaleMelLoss(cfg.codec.sample_rate, *DEV_MEL)

    def init_weights(self, path: str) -> None:
        """A fresh run's starting weights from another run's checkpoint or an inference checkpoint's
        codec (the optimizer starts anew); a codec with a content level takes a plain one's encoder and decoder
        (its quantizer starts anew). A decoder of another size on a frozen tokenizer that makes the
        same tokens takes only the encoder and codebooks and starts from scratch; so does a checkpoint whose
        codec is a Vocos decoder (its base's tokenizer: the shipped demo's)."""
        start = checkpoint.load_codec(path)
        tokenizer_only = isinstance(start, VocosCodec) and not isinstance(self.codec, VocosCodec)
        if tokenizer_only:
            start = start.base
        theirs, mine, weights = start.config(), self.codec.config(), start.state_dict()
        if theirs == mine and not tokenizer_only:
            self.codec.load_state_dict(weights)
            return
        if mine.get("content_dim") and {**theirs, "content_dim": mine["content_dim"]} == mine:
            # a content level over a plain codec's encoder and decoder: its quantizer starts anew
            self.codec.load_state_dict({k: v for k, v in weights.items() if not k.startswith("quantizer.")},
                                       strict=False)
            return
        same_tokens = theirs.get("kind") == mine["kind"] and token_config(theirs) == token_config(mine)
        if not (same_tokens and self.cfg.freeze_tokenizer):
            raise ValueError(f"{path} holds another codec: {theirs}" + (
                " (a new decoder on its tokenizer needs --freeze-tokenizer)" if same_tokens else ""))
        tokenizer = {k: v for k, v in weights.items() if k.startswith(TOKENIZER_PARTS)}
        missing = [k for k in self.codec.load_state_dict(tokenizer, strict=False).missing_keys
                   if not k.startswith("decoder.")]
        if missing:
            raise ValueError(f"{path} lacks tokenizer weights: {missing[:3]}")

    def load_base(self, path: str) -> None:
        """A fresh Vocos decoder's tokenizer: the encoder and codebooks of the codec in `path` (an
        inference or a codec training checkpoint), which must be the base its config names."""
        base = checkpoint.load_codec(path)
        if base.config() != dict(self.cfg.codec.base):
            raise ValueError(f"{path} holds another codec than the decoder's base: {base.config()}")
        self.codec.load_base(base.state_dict())

    def train_step(self) -> dict[str, Any]:
        """One update of the codec (and of the discriminators once adversarial training is on)."""
        cfg, recipe, drawn = self.cfg, self.cfg.recipe, self.sampler.next_batch()
        batch = drawn.wave if isinstance(drawn, WordBatch) else drawn  # (B, N)
        if isinstance(self.codec, SmallCodec):
            self.codec.quantizer_enabled = cfg.quantized_at(self.step)
        out = self.codec(batch)
        recon = out.recon[..., :batch.shape[-1]]  # (B, N)
        l1, mel = F.l1_loss(recon, batch), self.mel_loss(recon, batch)
        loss = recipe.l1_weight * l1 + recipe.mel_weight * mel
        for name, term in out.losses.items():  # commitment, codebook
            loss = loss + recipe.weight(name) * term
        logs = {"l1": l1.item(), "mel": mel.item(), **{name: term.item() for name, term in out.losses.items()}}
        if cfg.first_level_weight and out.first_level is not None:
            alone = self.codec.synthesize(out.first_level)[..., :batch.shape[-1]]
            l1_alone, mel_alone = F.l1_loss(alone, batch), self.mel_loss(alone, batch)
            loss = loss + cfg.first_level_weight * (recipe.l1_weight * l1_alone + recipe.mel_weight * mel_alone)
            logs |= {"l1_level1": l1_alone.item(), "mel_level1": mel_alone.item()}
        if self.phonetic is not None and out.first_level is not None:
            read = out.first_level if cfg.phonetic_input == "level1" else out.latent
            term = self.phonetic.loss(read, drawn, self.codec.hop_length, cfg.phonetic_loss)
            loss = loss + cfg.phonetic_weight * term
            logs[f"phone_{cfg.phonetic_loss}"] = term.item()
        if out.codes is not None:
            logs |= codebook_use(out.codes, out.levels)
        adversarial = self.adversary is not None and self.step >= cfg.adv_start_step
        if adversarial:
            g_adv, feat = self.adversary.generator_terms(batch, recon)
            loss = loss + recipe.adv_weight * g_adv + recipe.feat_weight * feat
            logs |= {"g_adv": g_adv.item(), "feat": feat.item()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = cfg.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        logs["lr"] = lr
        self.opt.step()
        if adversarial:
            logs["d_loss"] = self.adversary.update(recon, lr)
        self.step += 1
        logs["loss"] = loss.item()
        return logs

    def evaluates_at(self, step: int) -> bool:
        # before the first quantized step the codebooks are empty: nothing to measure
        return (step > 0 and bool(self.dev_waves) and self.cfg.quantized_at(step - 1)
                and step % self.cfg.eval_every == 0)

    def evaluate(self) -> dict[str, float]:
        dev = evaluate(self.codec, self.dev_waves, self.dev_mel)
        if hasattr(self.codec, "usage_report"):  # codes alive per level (the usage EMA over recent batches)
            dev |= {f"codes_alive_{r['level']}": float(r["alive"]) for r in self.codec.usage_report()}
        return dev

    def state_dict(self) -> dict[str, Any]:
        adversary = self.adversary.state_dict() if self.adversary is not None else {}
        return {"config": self.cfg.to_dict(), "codec_config": self.codec.config(),
                "model": self.codec.state_dict(), "optimizer": self.opt.state_dict(),
                "discriminator": adversary.get("model"), "disc_optimizer": adversary.get("optimizer"),
                phonetic.STATE_KEY: self.phonetic.state_dict() if self.phonetic is not None else None,
                "rng": rng_state(), "data": self.sampler.state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["codec_config"] != self.codec.config():
            raise ValueError("the checkpoint's codec differs from the configured one: "
                             f"{state['codec_config']} vs {self.codec.config()}")
        if (state["discriminator"] is None) != (self.adversary is None):
            raise ValueError("resume must keep the adversarial setting (adv_start_step) of the run")
        if (state.get(phonetic.STATE_KEY) is None) != (self.phonetic is None):
            raise ValueError("resume must keep the phonetic loss setting (phonetic_weight) of the run")
        self.codec.load_state_dict(state["model"])
        if self.phonetic is not None:
            self.phonetic.load_state_dict(state[phonetic.STATE_KEY])
        self.opt.load_state_dict(state["optimizer"])
        if self.adversary is not None:
            self.adversary.load_state_dict({"model": state["discriminator"], "optimizer": state["disc_optimizer"]})
        self.sampler.load_state(state["data"])
        set_rng_state(state["rng"])


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    return checkpoint.read_training(path, checkpoint.CODEC_TRAINING)


# ---- driver ------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    codec: Codec
    step: int
    last: dict[str, float]  # the last step's losses (and dev metrics, if it was evaluated)
    checkpoint: Path


def train_codec(cfg: CodecTrainConfig, *, resume: bool = False, progress: bool = True,
                force: bool = False) -> TrainResult:
    """Train (or, with resume, continue) until cfg.steps; checkpoints go to cfg.out_dir."""
    if cfg.kind == VocosCodec.kind and not (cfg.base or cfg.init_from or resume):
        raise ValueError("a Vocos decoder reads a trained codec's tokens: give its checkpoint (--base)")
    run = run_folder(cfg)
    ckpt = run.open(checkpoint.CODEC_TRAINING, resume=resume, force=force)
    sr = cfg.codec.sample_rate
    if cfg.words is not None:
        train, skipped = phonetic.read_manifest(cfg.words, sr)
        if skipped and progress:
            print(f"{len(skipped)} readings of {cfg.words} left out, e.g. {skipped[0]}")
    else:
        train = AudioBank(find_audio_files(cfg.data), sr)  # read a window at a time where it can be
        if train.memory_bytes and progress:
            print(f"{sum(isinstance(i, Tensor) for i in train.items)} of {len(train)} training files held in "
                  f"memory ({train.memory_bytes / 2**20:.0f} MB: formats only FFmpeg reads)")
    dev_waves = load_waves(find_audio_files(cfg.dev), sr) if cfg.dev else []
    trainer = CodecTrainer(cfg, train, dev_waves)
    if ckpt is not None:
        trainer.restore(ckpt)
    elif cfg.init_from is not None:
        trainer.init_weights(cfg.init_from)
    elif cfg.base is not None:
        trainer.load_base(cfg.base)
    last = trainer.fit(progress=progress)
    return TrainResult(trainer.codec.eval(), trainer.step, last, run.checkpoint)
