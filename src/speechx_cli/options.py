"""Typer option types of the command layer, shared by `speechx` (cli.py) and `speechx eval` (eval/cli.py).

What the flags mean once parsed (validation, the model, the error guard) is commands.py's.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import speechfree as S
from .engine import ESCAPE_AFTER
from .mask import Resynth


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Background(str, Enum):
    """edit --background: keep the recording's background under the new words (noisy speech editing), or not."""

    keep = "keep"
    clean = "clean"


DeviceOpt = Annotated[Device, typer.Option(help="Where to run the model.")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed for sampling.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
RateOpt = Annotated[Optional[int], typer.Option(
    "--sample-rate", help="Output sample rate in Hz.", show_default="the input's")]
TextOpt = Annotated[Optional[str], typer.Option("--text", help="Transcript of the speech (optional; helps).")]
WindowOpt = Annotated[float, typer.Option("--window", help="Seconds per window for long inputs.")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="Folder runs: process only part I of N (I/N, 0-based), e.g. one per machine.")]
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
                   "20 dB) or 'bands=32,exponent=1'; names: bands, exponent, floor, smooth_frames, codec_reference, "
                   "counterpart (denoise, remove-speech: divide by the model's estimate of the part to drop as well, "
                   "twice the decoding).",
    show_default="the task's own (model card)")]
DrawsOpt = Annotated[Optional[int], typer.Option(
    "--draws", help="With --resynth mask: generate each window N times (decoded side by side) and cut by the mean "
                    "of their band energies.", show_default="4 with the mask, 1 with the codec")]
PassesOpt = Annotated[Optional[int], typer.Option(
    "--passes", help="With --resynth mask: run each window through the model N times, each pass on the last "
                     "one's output (the mask cuts again what it left; N times the work).",
    show_default="2 for remove-speech with the speech-free detector and the mask, else 1")]
SpeechFreeOpt = Annotated[str, typer.Option(
    "--speech-free", help="remove-speech: give the input's own codes in the frames found free of speech (the "
                          "background is the input there): auto (detector if the checkpoint has one, else off), off, "
                          "detector[=P] (the checkpoint's speech-free detector, probability above P) or "
                          "denoise[=DB] (the model's denoise draws, run first, DB under the input; twice the "
                          "decoding). Measured in the model card.")]
NoiseFreeOpt = Annotated[str, typer.Option(
    "--noise-free", help="denoise: give the input's own codes in the frames found free of noise (the speech is the "
                         "input there): auto (detector if the checkpoint has a noise-free detector, else off), off, or "
                         "detector[=P] (its probability above P). Measured in the model card.")]


def _share_opt(kind: str, task: str, part: str):
    """The flag of a share kind (speechfree.SHARES): its default weight from speechfree.SHARE_WEIGHT."""
    return Annotated[str, typer.Option(
        S.FLAGS[kind], help=f"{task}: weigh the mask's band gains with {part}'s share of each band that the "
                            f"checkpoint's {S.KINDS[kind]} detector hears: auto (detector if the checkpoint has one, "
                            "else off), off, or detector[=W] (its gains' weight W in the geometric mean with the "
                            f"generated audio's, default {S.SHARE_WEIGHT[kind]:g}; 1: its gains alone). Measured in "
                            "the model card.")]


SpeechShareOpt = _share_opt("ns_gain", "denoise", "the speech")
TargetAloneOpt = Annotated[str, typer.Option(
    "--target-alone", help="extract-speaker: give the mixture's own codes in the frames where the target speaks "
                           "alone (the output is the mixture there): auto (detector if the checkpoint has a "
                           "target-alone detector, else off), off, or detector[=P] (its probability above P).")]
TargetSilentOpt = Annotated[str, typer.Option(
    "--target-silent", help="extract-speaker: give the codes of silence in the frames where the target is silent "
                            "under the interferer: auto (detector if the checkpoint has a target-silent detector, "
                            "else off), off, or detector[=P] (its probability above P).")]
TargetShareOpt = _share_opt("tse_gain", "extract-speaker", "the target")


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
