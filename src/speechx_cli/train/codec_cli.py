"""`speechx train codec`: the command line of codec training (train/codec_train.py), from flags to a
`CodecTrainConfig`, each refusal a one-line error. Alone: `python -m speechx_cli.train.codec_cli`.

    python -m speechx_cli.train.codec_cli --data DIR --dev DEVDIR --out runs/codec --steps 20000
    python -m speechx_cli.train.codec_cli --kind dac --data DIR --dev DEVDIR --out runs/dac --adv-start 2000
    python -m speechx_cli.train.codec_cli --kind vocos --base runs/codec/codec_train.pt --data DIR --out runs/vocos
"""

from __future__ import annotations

from dataclasses import fields, replace
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import torch
import typer

from .. import checkpoint
from ..audioinfo import AudioError
from ..codec import SmallCodec
from ..codecs.dac import DacCodec
from ..codecs.vocos import VocosCodec, VocosConfig
from .codec_train import BEST_NAME, TRAINABLE, CodecConfig, CodecTrainConfig, train_codec
from .discriminators import Recipe


class Preset(str, Enum):
    demo = "demo"
    tiny = "tiny"


class Kind(str, Enum):
    small = "small"
    dac = "dac"
    vocos = "vocos"


class Style(str, Enum):
    dac = "dac"
    encodec = "encodec"


KIND_NAMES = {Kind.small: SmallCodec.kind, Kind.dac: DacCodec.kind, Kind.vocos: VocosCodec.kind}


def codec_config(kind: Kind, preset: Preset, base: Optional[Path], **changes: Any) -> CodecConfig:
    """The preset's config of `kind` with `changes` (fields left None keep the preset's); a Vocos
    decoder's preset sits on the codec in `base`."""
    changes = {k: v for k, v in changes.items() if v is not None}
    if kind is Kind.vocos:
        if base is None:
            raise ValueError("--kind vocos needs --base, the codec checkpoint whose tokens it decodes")
        cfg = getattr(VocosConfig, preset.value)(checkpoint.load_codec(base).config())
    else:
        cfg = getattr(TRAINABLE[KIND_NAMES[kind]][1], preset.value)()
    unknown = sorted(set(changes) - {f.name for f in fields(cfg)})
    if unknown:
        raise ValueError(f"--{unknown[0].replace('_', '-')} does not apply to a {kind.value} codec")
    return replace(cfg, **changes).validate()


app = typer.Typer(add_completion=False)


@app.command()
def _cli(
    data: Annotated[Optional[list[Path]], typer.Option(
        "--data", exists=True, help="audio file, folder or .txt list (or --words)")] = None,
    words: Annotated[Optional[Path], typer.Option(
        "--words", exists=True, dir_okay=False, help="train on whole-word windows of a corpus manifest's "
        "transcribed train utterances (manifest.jsonl) instead of --data")] = None,
    phonetic_weight: Annotated[float, typer.Option(
        "--phonetic-weight", min=0, help="small codec with --words: weight of a phoneme loss that teaches "
        "codebook level 1 the phonemes (a phonetic first level; see --phonetic-loss, --phonetic-input)")] = 0.0,
    phonetic_loss: Annotated[str, typer.Option(
        "--phonetic-loss", help="frames: each frame's phoneme (a word's phonemes share its frames evenly); "
        "ctc: the window's phoneme sequence")] = "frames",
    phonetic_input: Annotated[str, typer.Option(
        "--phonetic-input", help="what the phoneme head reads: latent (the encoder's output before the "
        "quantizer) or level1 (codebook level 1's quantized vectors, straight through: diverged at weight 1 on a plain codec, "
        "stable on a content level, --content-dim)")] = "latent",
    first_level_weight: Annotated[float, typer.Option(
        "--first-level-weight", min=0, help="small codec: also decode codebook level 1 alone and add its "
        "reconstruction loss x this; with --freeze-tokenizer only the decoder learns to render level 1 (with the "
        "tokenizer training, weight 1 destabilized the quantizer)")] = 0.0,
    out: Annotated[Path, typer.Option("--out", help="run folder")] = Path("runs/codec"),
    dev: Annotated[Optional[list[Path]], typer.Option("--dev", exists=True)] = None,
    kind: Annotated[Kind, typer.Option("--kind", help="small: EnCodec architecture; dac: DAC-style; vocos: a "
                                       "Vocos decoder on --base's tokens")] = Kind.small,
    base: Annotated[Optional[Path], typer.Option(
        "--base", exists=True, help="vocos: the codec (inference or codec training checkpoint) whose tokens it decodes")] = None,
    preset: Annotated[Preset, typer.Option("--preset")] = Preset.demo,
    steps: Annotated[int, typer.Option("--steps")] = 10_000,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option("--lr")] = CodecTrainConfig.lr,
    lr_decay_start: Annotated[Optional[int], typer.Option(
        "--lr-decay-start", help="from this step a cosine decay to 0.1 x the learning rate at --steps")] = None,
    dead_code_threshold: Annotated[Optional[float], typer.Option(
        "--dead-code-threshold", help="small: EMA usage below which a code is replaced; at most batch frames / "
        "this many codes stay alive (8 x 1 s = 400 frames); dac: share of the mean use", show_default="the preset's")] = None,
    quantizer_dropout: Annotated[Optional[float], typer.Option(
        "--quantizer-dropout", min=0, max=1, help="dac: share of items trained with a random number of levels",
        show_default="the preset's")] = None,
    quantizer_warmup: Annotated[int, typer.Option("--quantizer-warmup")] = 150,
    adv_start: Annotated[Optional[int], typer.Option("--adv-start", help="step to start the GAN")] = None,
    init_from: Annotated[Optional[Path], typer.Option(
        "--init-from", exists=True, help="start from this codec training checkpoint")] = None,
    freeze_tokenizer: Annotated[bool, typer.Option(
        "--freeze-tokenizer", help="train the decoder only: existing shards and LMs stay valid")] = False,
    content_dim: Annotated[Optional[int], typer.Option(
        "--content-dim", min=1, help="small: level 1 becomes a content level quantized from a projection of "
        "this width (phonetic with --phonetic-weight and --phonetic-input level1); --init-from a plain codec "
        "takes its encoder and decoder")] = None,
    decoder_filters: Annotated[Optional[int], typer.Option(
        "--decoder-filters", min=1, help="small: decoder width (with --init-from and --freeze-tokenizer: a new "
        "decoder of this width on the checkpoint's tokenizer)", show_default="the preset's")] = None,
    style: Annotated[Optional[Style], typer.Option(
        "--style", help="losses and discriminators: dac (MPD + multi-band STFT, LSGAN) or encodec (MS-STFT, hinge)",
        show_default="encodec for small, dac otherwise")] = None,
    mel_weight: Annotated[Optional[float], typer.Option("--mel-weight", show_default="the style's")] = None,
    adv_weight: Annotated[Optional[float], typer.Option(
        "--adv-weight", help="adversarial loss weight", show_default="the style's")] = None,
    feat_weight: Annotated[Optional[float], typer.Option(
        "--feat-weight", help="feature matching weight", show_default="the style's")] = None,
    disc_width: Annotated[Optional[int], typer.Option(
        "--disc-width", min=1, help="discriminator channels", show_default="the style's")] = None,
    best_metric: Annotated[Optional[str], typer.Option(
        "--best-metric", help=f"also keep {BEST_NAME}, the best by this dev metric (e.g. dev_pesq_wb)")] = None,
    eval_every: Annotated[int, typer.Option("--eval-every")] = 500,
    ckpt_every: Annotated[int, typer.Option("--ckpt-every")] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out")] = False,
    force: Annotated[bool, typer.Option("--force", help="overwrite the run in --out")] = False,
) -> None:
    """Train a codec (--kind small, dac or vocos); Ctrl-C stops after the current step and saves."""
    if threads:
        torch.set_num_threads(threads)
    try:
        codec = codec_config(kind, preset, base, dead_code_threshold=dead_code_threshold,
                             quantizer_dropout=quantizer_dropout, decoder_filters=decoder_filters,
                             content_dim=content_dim)
        overrides = {k: v for k, v in dict(mel_weight=mel_weight, adv_weight=adv_weight, feat_weight=feat_weight,
                                           disc_width=disc_width).items() if v is not None}
        recipe = getattr(Recipe, style.value)(**overrides) if style else Recipe.for_kind(KIND_NAMES[kind], **overrides)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    if (data is None) == (words is None):
        raise typer.BadParameter("give the training audio: --data or --words (one of them)")
    try:
        cfg = CodecTrainConfig(
            data=tuple(map(str, data or ())), words=str(words) if words else None, phonetic_weight=phonetic_weight,
            phonetic_loss=phonetic_loss, phonetic_input=phonetic_input, first_level_weight=first_level_weight,
            out_dir=str(out), dev=tuple(map(str, dev or ())), codec=codec,
            base=str(base) if base else None, steps=steps, batch_size=batch_size, lr=lr,
            lr_decay_start=lr_decay_start, quantizer_warmup_steps=quantizer_warmup, recipe=recipe,
            adv_start_step=adv_start, init_from=str(init_from) if init_from else None,
            freeze_tokenizer=freeze_tokenizer, best_metric=best_metric, eval_every=eval_every,
            ckpt_every=ckpt_every, seed=seed)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    try:
        result = train_codec(cfg, resume=resume, force=force)
    except FileExistsError as err:
        raise typer.BadParameter(str(err), param_hint="--out") from err
    except AudioError as err:  # a training or dev file that cannot be read: the run has not started
        raise typer.BadParameter(str(err), param_hint="--data/--dev") from err
    except ValueError as err:  # a start or resume checkpoint that does not fit the configured run
        raise typer.BadParameter(str(err), param_hint="--init-from/--resume") from err
    typer.echo(f"step {result.step}: checkpoint {result.checkpoint}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
