"""Train the small codec (SmallCodec) on a folder of audio; resumable exactly after a kill.

Losses: 0.1 x L1 waveform + multi-scale log-mel L1 + VQ commitment, and, from a chosen step on,
encodec's MS-STFT discriminator (hinge loss + feature matching). Batches are random 1 s segments
drawn by a seeded generator whose state is saved with the model, the optimizers and the global
RNG states, so `--resume` continues the very same run.

    python -m speechx_cli.train.codec_train --data DIR --dev DEVDIR --out runs/codec --steps 20000

Decoder-only fine-tuning (`--init-from runs/codec/codec_train.pt --freeze-tokenizer`) starts from a
trained codec and trains its decoder alone, usually against the discriminator: the encoder and the
codebooks stay fixed, so shards and language models made with the first codec stay valid.

The run's progress, log, stop requests, checkpoints and resume are the training loop's (train/loop.py);
this module holds the codec's data, update, losses and dev metrics.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
import typer
from torch import Tensor, nn

from .. import audio, checkpoint
from ..codec import SmallCodec, SmallCodecConfig, quiet_weight_norm
from .loop import RunFolder, Schedule, Trainer, lr_multiplier, rng_state, set_rng_state
from .losses import MultiScaleMelLoss, feature_matching_loss, hinge_d_loss, hinge_g_loss

CHECKPOINT_NAME = "codec_train.pt"
BEST_NAME = "codec_best.pt"
TOKENIZER_PARTS = ("encoder.", "quantizer.")


@dataclass(frozen=True)
class CodecTrainConfig:
    """Everything a codec training run needs; saved in its checkpoint."""

    data: tuple[str, ...]  # audio files, folders (searched recursively) or .txt lists of files
    out_dir: str = "runs/codec"
    dev: tuple[str, ...] = ()
    codec: SmallCodecConfig = field(default_factory=SmallCodecConfig.demo)
    steps: int = 10_000
    batch_size: int = 8
    segment_s: float = 1.0
    random_gain_db: float = 6.0  # each segment scaled by a uniform gain in +-this
    lr: float = 3e-4
    lr_decay_start: Optional[int] = None  # from this step a cosine decay to lr_min_ratio x lr at `steps`
    lr_min_ratio: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    quantizer_warmup_steps: int = 150  # k-means then starts from meaningful encodings
    l1_weight: float = 0.1
    mel_weight: float = 1.0
    commit_weight: float = 1.0
    mel_n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)
    n_mels: int = 64
    adv_start_step: Optional[int] = None  # None: never train against a discriminator
    init_from: Optional[str] = None  # a codec training checkpoint whose weights start this run
    freeze_tokenizer: bool = False  # train the decoder only (the codes stay what they were)
    disc_filters: int = 16
    # Relative to the mean log-mel L1 (HiFi-GAN weighs mel 45x its adversarial term). EnCodec's
    # 3 and 3 drowned that term here: dev STOI fell from 0.68 to 0.56 in 500 decoder steps.
    adv_weight: float = 0.05
    feat_weight: float = 0.1
    best_metric: Optional[str] = None  # e.g. "dev_pesq_wb": also keep the best evaluated checkpoint
    log_every: int = 10
    eval_every: int = 500
    ckpt_every: int = 200
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["codec"] = self.codec.to_dict()
        return json.loads(json.dumps(d))  # tuples -> lists: JSON- and weights_only-safe

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CodecTrainConfig:
        values = dict(d)
        values["codec"] = SmallCodecConfig.from_dict(values["codec"])
        tuples = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})

    def quantized_at(self, step: int) -> bool:
        """Whether step `step` goes through the quantizer: not during the warmup of a fresh codec
        (its codebooks are empty); always when the codebooks come trained (init_from) or fixed."""
        return self.freeze_tokenizer or self.init_from is not None or step >= self.quantizer_warmup_steps

    def lr_at(self, step: int) -> float:
        """Flat, or from lr_decay_start a cosine decay to lr_min_ratio x lr at `steps`."""
        if self.lr_decay_start is None:
            return self.lr
        return self.lr * lr_multiplier(step, warmup=0, decay_start=self.lr_decay_start, end=self.steps,
                                       min_ratio=self.lr_min_ratio)

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_s * self.codec.sample_rate))


# ---- data --------------------------------------------------------------------------------------

def find_audio_files(paths: tuple[str, ...] | list[str]) -> list[Path]:
    """Expand folders (recursively) and .txt lists into a sorted, de-duplicated file list."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [f for f in p.rglob("*") if f.is_file() and audio.is_audio_path(f)]
        elif p.suffix == ".txt":
            found += [Path(line.strip()) for line in p.read_text().splitlines() if line.strip()]
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such audio file or folder: {p}")
    return sorted(set(found))


def load_waves(paths: list[Path], sample_rate: int) -> list[Tensor]:
    """Each file as float32 mono (N,) at sample_rate, all in memory (36 min at 16 kHz: 140 MB)."""
    return [torch.from_numpy(audio.load(p, sample_rate, max_seconds=math.inf)[0]) for p in paths]


class SegmentSampler:
    """Random fixed-length segments from in-memory waveforms; its state is the data position."""

    def __init__(self, waves: list[Tensor], segment: int, batch_size: int, seed: int,
                 gain_db: float = 0.0):
        if not waves:
            raise ValueError("no training audio")
        self.waves, self.segment, self.batch_size = waves, segment, batch_size
        self.gain_db = gain_db
        lengths = np.array([max(len(w), 1) for w in waves], dtype=np.float64)
        self.p = lengths / lengths.sum()  # every second of audio is equally likely
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> Tensor:
        batch = torch.zeros(self.batch_size, self.segment)  # (B, L), short files zero-padded
        files = self.rng.choice(len(self.waves), size=self.batch_size, p=self.p)
        starts = self.rng.random(self.batch_size)
        gains = 10 ** (self.rng.uniform(-self.gain_db, self.gain_db, self.batch_size) / 20)
        for b, (i, s, g) in enumerate(zip(files, starts, gains)):
            wav = self.waves[i]
            start = int(s * (max(len(wav) - self.segment, 0) + 1))
            piece = wav[start:start + self.segment]
            batch[b, :len(piece)] = piece * float(g)
        return batch

    def state(self) -> dict[str, Any]:
        return self.rng.bit_generator.state

    def load_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


# ---- metrics -----------------------------------------------------------------------------------

def si_sdr(ref: Tensor, est: Tensor, eps: float = 1e-8) -> float:
    """Scale-invariant SDR in dB of a single (N,) estimate."""
    ref, est = ref - ref.mean(), est - est.mean()
    target = (est @ ref) / (ref @ ref + eps) * ref
    return float(10 * torch.log10(target.pow(2).sum() / ((est - target).pow(2).sum() + eps) + eps))


def _optional_metrics(ref: np.ndarray, est: np.ndarray, sr: int) -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        from pystoi import stoi

        out["stoi"] = float(stoi(ref, est, sr))
    except ImportError:
        pass
    try:
        from pesq import pesq

        if sr == 16_000:
            out["pesq_wb"] = float(pesq(sr, ref, est, "wb"))
    except (ImportError, Exception):  # pesq raises on silent input
        pass
    return out


# ---- the trainer --------------------------------------------------------------------------------

def run_folder(cfg: CodecTrainConfig) -> RunFolder:
    return RunFolder(Path(cfg.out_dir), CHECKPOINT_NAME, BEST_NAME)


class CodecTrainer(Trainer):
    """The codec (and, for adversarial training, its discriminator), their optimizers and the sampler."""

    kind = checkpoint.CODEC_TRAINING
    label = "codec"

    def __init__(self, cfg: CodecTrainConfig, train_waves: list[Tensor], dev_waves: list[Tensor] = ()):
        super().__init__(run_folder(cfg), Schedule(cfg.steps, cfg.log_every, cfg.eval_every, cfg.ckpt_every,
                                                   cfg.best_metric))
        self.cfg, self.dev_waves = cfg, list(dev_waves)
        torch.manual_seed(cfg.seed)
        self.codec = SmallCodec(cfg.codec).train()
        if cfg.freeze_tokenizer:
            self.codec.freeze_tokenizer()
        trained = [p for p in self.codec.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(trained, lr=cfg.lr, betas=cfg.betas)
        self.disc: Optional[nn.Module] = None
        self.opt_d: Optional[torch.optim.Optimizer] = None
        if cfg.adv_start_step is not None:
            # encodec's modules import torchaudio: only after codec.py has made that import work
            from encodec.msstftd import MultiScaleSTFTDiscriminator

            with quiet_weight_norm():
                self.disc = MultiScaleSTFTDiscriminator(filters=cfg.disc_filters).train()
            self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.sampler = SegmentSampler(train_waves, cfg.segment_samples, cfg.batch_size, cfg.seed,
                                      cfg.random_gain_db)
        self.mel_loss = MultiScaleMelLoss(cfg.codec.sample_rate, cfg.mel_n_ffts, cfg.n_mels)

    def init_weights(self, path: str) -> None:
        """A fresh run's starting weights from another run's checkpoint (the optimizer starts anew). A
        decoder of another width (decoder_filters) on a frozen tokenizer takes only the encoder and
        codebooks and starts from scratch."""
        start = checkpoint.read_training(path, checkpoint.CODEC_TRAINING)
        theirs, mine = dict(start["codec_config"]), self.codec.config()
        if theirs == mine:
            self.codec.load_state_dict(start["model"])
            return
        other_decoder = SmallCodecConfig.tokenizer_part(theirs) == SmallCodecConfig.tokenizer_part(mine)
        if not (other_decoder and self.cfg.freeze_tokenizer):
            raise ValueError(f"{path} holds another codec: {theirs}" + (
                " (a decoder of another width needs --freeze-tokenizer)" if other_decoder else ""))
        tokenizer = {k: v for k, v in start["model"].items() if k.startswith(TOKENIZER_PARTS)}
        missing = [k for k in self.codec.load_state_dict(tokenizer, strict=False).missing_keys
                   if not k.startswith("decoder.")]
        if missing:
            raise ValueError(f"{path} lacks tokenizer weights: {missing[:3]}")

    def train_step(self) -> dict[str, Any]:
        """One update of the codec (and of the discriminator once adversarial training is on)."""
        cfg, batch = self.cfg, self.sampler.next_batch()
        self.codec.quantizer_enabled = cfg.quantized_at(self.step)
        recon, codes, commit = self.codec(batch)  # (B, N), (B, K, F) or None, ()
        recon = recon[..., :batch.shape[-1]]
        l1, mel = F.l1_loss(recon, batch), self.mel_loss(recon, batch)
        loss = cfg.l1_weight * l1 + cfg.mel_weight * mel + cfg.commit_weight * commit
        logs = {"l1": l1.item(), "mel": mel.item(), "commit": commit.item()}
        if codes is not None:
            # codes used in this batch by the first and the last (finest) codebook: residual levels collapse first
            logs["codes_used"] = float(len(torch.unique(codes[:, 0])))
            logs["codes_used_last"] = float(len(torch.unique(codes[:, -1])))
        adversarial = self.disc is not None and self.step >= (cfg.adv_start_step or 0)
        if adversarial:
            real_logits, real_fmaps = self.disc(batch[:, None])
            fake_logits, fake_fmaps = self.disc(recon[:, None])
            g_adv, feat = hinge_g_loss(fake_logits), feature_matching_loss(real_fmaps, fake_fmaps)
            loss = loss + cfg.adv_weight * g_adv + cfg.feat_weight * feat
            logs |= {"g_adv": g_adv.item(), "feat": feat.item()}
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        lr = cfg.lr_at(self.step)
        for opt in (self.opt, self.opt_d) if adversarial else (self.opt,):
            for group in opt.param_groups:
                group["lr"] = lr
        logs["lr"] = lr
        self.opt.step()
        if adversarial:  # the real branch's graph is untouched by the generator's backward
            fake_logits_d, _ = self.disc(recon.detach()[:, None])
            d_loss = hinge_d_loss(real_logits, fake_logits_d)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            logs["d_loss"] = d_loss.item()
        self.step += 1
        logs["loss"] = loss.item()
        return logs

    def evaluates_at(self, step: int) -> bool:
        # before the first quantized step the codebooks are empty: nothing to measure
        return (step > 0 and bool(self.dev_waves) and self.cfg.quantized_at(step - 1)
                and step % self.cfg.eval_every == 0)

    def evaluate(self) -> dict[str, float]:
        return evaluate(self.codec, self.dev_waves, self.mel_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.cfg.to_dict(), "codec_config": self.codec.config(),
                "model": self.codec.state_dict(), "optimizer": self.opt.state_dict(),
                "discriminator": self.disc.state_dict() if self.disc is not None else None,
                "disc_optimizer": self.opt_d.state_dict() if self.opt_d is not None else None,
                "rng": rng_state(), "data": self.sampler.state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["codec_config"] != self.codec.config():
            raise ValueError("the checkpoint's codec differs from the configured one: "
                             f"{state['codec_config']} vs {self.codec.config()}")
        if (state["discriminator"] is None) != (self.disc is None):
            raise ValueError("resume must keep the adversarial setting (adv_start_step) of the run")
        self.codec.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.disc is not None:
            self.disc.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["disc_optimizer"])
        self.sampler.load_state(state["data"])
        set_rng_state(state["rng"])


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    return checkpoint.read_training(path, checkpoint.CODEC_TRAINING)


# ---- evaluation --------------------------------------------------------------------------------

def evaluate(codec: SmallCodec, dev_waves: list[Tensor], mel_loss: MultiScaleMelLoss) -> dict:
    """Mean reconstruction metrics of dev utterances through the real encode/decode path."""
    was_training = codec.training
    codec.eval()
    totals: dict[str, list[float]] = {}
    try:
        for ref in dev_waves:
            est = codec.decode(codec.encode(ref))[: len(ref)]
            metrics = {"mel_distance": float(mel_loss(est[None], ref[None])),
                       "si_sdr": si_sdr(ref, est),
                       **_optional_metrics(ref.numpy(), est.numpy(), codec.sample_rate)}
            for k, v in metrics.items():
                totals.setdefault(k, []).append(v)
    finally:
        codec.train(was_training)
    return {f"dev_{k}": float(np.mean(v)) for k, v in totals.items()}


# ---- driver ------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    codec: SmallCodec
    step: int
    last: dict[str, float]  # the last step's losses (and dev metrics, if it was evaluated)
    checkpoint: Path


def train_codec(cfg: CodecTrainConfig, *, resume: bool = False, progress: bool = True,
                force: bool = False) -> TrainResult:
    """Train (or, with resume, continue) until cfg.steps; checkpoints go to cfg.out_dir."""
    run = run_folder(cfg)
    ckpt = run.open(checkpoint.CODEC_TRAINING, resume=resume, force=force)
    sr = cfg.codec.sample_rate
    train_waves = load_waves(find_audio_files(cfg.data), sr)
    dev_waves = load_waves(find_audio_files(cfg.dev), sr) if cfg.dev else []
    trainer = CodecTrainer(cfg, train_waves, dev_waves)
    if ckpt is not None:
        trainer.restore(ckpt)
    elif cfg.init_from is not None:
        trainer.init_weights(cfg.init_from)
    last = trainer.fit(progress=progress)
    return TrainResult(trainer.codec.eval(), trainer.step, last, run.checkpoint)


class Preset(str, Enum):
    demo = "demo"
    tiny = "tiny"


app = typer.Typer(add_completion=False)


@app.command()
def _cli(
    data: Annotated[list[Path], typer.Option("--data", exists=True,
                                             help="audio file, folder or .txt list")],
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/codec"),
    dev: Annotated[Optional[list[Path]], typer.Option("--dev", exists=True)] = None,
    preset: Annotated[Preset, typer.Option("--preset")] = Preset.demo,
    steps: Annotated[int, typer.Option("--steps")] = 10_000,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr_decay_start: Annotated[Optional[int], typer.Option(
        "--lr-decay-start", help="from this step a cosine decay to 0.1 x the learning rate at --steps")] = None,
    dead_code_threshold: Annotated[Optional[float], typer.Option(
        "--dead-code-threshold", help="EMA usage below which a code is replaced; at most batch frames / this "
        "many codes stay alive (8 x 1 s = 400 frames)", show_default="the preset's")] = None,
    quantizer_warmup: Annotated[int, typer.Option("--quantizer-warmup")] = 150,
    adv_start: Annotated[Optional[int], typer.Option("--adv-start",
                                                     help="step to start the GAN")] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        "--init-from", exists=True, help="start from this codec training checkpoint")] = None,
    freeze_tokenizer: Annotated[bool, typer.Option(
        "--freeze-tokenizer", help="train the decoder only: existing shards and LMs stay valid")] = False,
    decoder_filters: Annotated[Optional[int], typer.Option(
        "--decoder-filters", min=1, help="decoder width (with --init-from and --freeze-tokenizer: a new decoder "
        "of this width on the checkpoint's tokenizer)", show_default="the preset's")] = None,
    adv_weight: Annotated[float, typer.Option(
        "--adv-weight", help="adversarial loss weight")] = CodecTrainConfig.adv_weight,
    feat_weight: Annotated[float, typer.Option(
        "--feat-weight", help="feature matching weight")] = CodecTrainConfig.feat_weight,
    best_metric: Annotated[Optional[str], typer.Option(
        "--best-metric", help=f"also keep {BEST_NAME}, the best by this dev metric (e.g. dev_pesq_wb)")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every")] = 500,
    ckpt_every: Annotated[int, typer.Option("--ckpt-every")] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite the run in --out")] = False,
) -> None:
    """Train the small codec (SmallCodec); Ctrl-C stops after the current step and saves."""
    if threads:
        torch.set_num_threads(threads)
    codec = getattr(SmallCodecConfig, preset.value)()
    if dead_code_threshold is not None:
        codec = replace(codec, dead_code_threshold=dead_code_threshold)
    if decoder_filters is not None:
        codec = replace(codec, decoder_filters=decoder_filters)
    cfg = CodecTrainConfig(
        data=tuple(map(str, data)), out_dir=str(out), dev=tuple(map(str, dev or ())),
        codec=codec, steps=steps, batch_size=batch_size, lr_decay_start=lr_decay_start,
        quantizer_warmup_steps=quantizer_warmup, adv_start_step=adv_start,
        init_from=str(init_from) if init_from else None, freeze_tokenizer=freeze_tokenizer,
        adv_weight=adv_weight, feat_weight=feat_weight, best_metric=best_metric,
        eval_every=eval_every, ckpt_every=ckpt_every, seed=seed)
    try:
        result = train_codec(cfg, resume=resume, force=force)
    except FileExistsError as err:
        raise typer.BadParameter(str(err), param_hint="--out") from err
    typer.echo(f"step {result.step}: checkpoint {result.checkpoint}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
