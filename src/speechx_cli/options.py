"""Typer option types shared by the task commands (cli.py) and `speechx eval` (eval/cli.py).

Their own module because cli.py registers eval/cli.py's app, so eval/cli.py cannot import cli.py
while it loads.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .engine import ESCAPE_AFTER
from .mask import Resynth


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DeviceOpt = Annotated[Device, typer.Option(help="Where to run the model.")]
CheckpointOpt = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", envvar="SPEECHX_CHECKPOINT", help="Inference checkpoint (.safetensors).",
    show_default="the bundled demo checkpoint")]
TempOpt = Annotated[float, typer.Option(help=(
    f"Sampling temperature (0 = greedy: the most likely code each frame, except one sampled code after "
    f"{ESCAPE_AFTER} identical ones in a row, where greedy decoding would lock into silence)."))]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Keep the k most likely codes (0 = off).")]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass (1 = off).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Prompts decoded together.")]
ResynthOpt = Annotated[Resynth, typer.Option(
    help="mask: the generated audio's band energies as gains on the input (keeps the input's phase and "
         "detail); codec: the codec's own waveform.")]
MaskOpt = Annotated[Optional[str], typer.Option(
    "--mask", help="With --resynth mask: override the task's mask settings by name, e.g. 'floor=0.1' (cut up to "
                   "20 dB) or 'bands=32,exponent=1'; names: bands, exponent, floor, smooth_frames, codec_reference.",
    show_default="the task's own (model card)")]


class OutputFormat(str, Enum):
    """--format: the format of every output of a folder run (each one a format audio.py writes)."""

    wav = "wav"
    flac = "flac"
    ogg = "ogg"
    opus = "opus"
    mp3 = "mp3"
    m4a = "m4a"
    aac = "aac"


FormatOpt = Annotated[Optional[OutputFormat], typer.Option(
    "--format", help="Folder runs: write every output in this format.",
    show_default="each input's own; a video's sound as .m4a")]
BitrateOpt = Annotated[Optional[int], typer.Option(
    "--bitrate", help="kbps of mp3, m4a, aac and opus outputs (32-320).", show_default="192")]
