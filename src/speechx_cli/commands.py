"""The command layer under `speechx` (cli.py) and `speechx eval` (eval/cli.py): flag values -> checked
options, --checkpoint/--device -> a loaded model (api.py), output checks, and the guard that turns every
expected failure into one line on stderr and exit code 2 (SPEECHX_DEBUG=1 shows tracebacks instead).

The option types themselves are in options.py. Nothing here defines a command, and nothing in the
package imports the modules that do: the CLI is a leaf.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from . import api
from . import audio as A
from . import checkpoint as ckpt
from .codec import CodecUnavailableError
from .engine import DecodingOptions
from .jobs import JobOptions
from .mask import MaskOptions, Resynth
from .options import Device, OutputFormat
from .window_options import COUNTERPARTS, GIVEN_FIELDS, TASK_MASKS, WindowOptions
from .prompts import Task
from .speechfree import FLAGS, KINDS, TASK_OF, GivenFrames

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)
NO_CHECKPOINT = "no checkpoint: pass --checkpoint PATH or set SPEECHX_CHECKPOINT"


class UserError(Exception):
    """A problem with what the user asked for; shown as one line."""


@dataclass(frozen=True)
class Common:
    """The flags every task command shares, checked."""

    checkpoint: Path | None
    device: Device
    decoding: DecodingOptions
    force: bool
    sample_rate: int | None
    batch_size: int = 8
    window: float = 10.0
    resynth: Resynth = Resynth.MASK
    mask: str | None = None  # --mask overrides, resolved per task (mask_settings)
    bitrate: int | None = None  # kbps of compressed outputs (mp3, m4a, ...); None = audio's default
    draws: int | None = None  # generations per window whose band energies the mask averages (None: the default)
    passes: int | None = None  # times each window goes through the model (None: the task's default)
    # how each kind of given frames is found (speechfree.KINDS: --speech-free, --noise-free, --target-alone,
    # --target-silent), by kind; a kind left out: auto
    given: dict[str, str] = field(default_factory=dict)


def common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate,
           batch_size=8, window=10.0, resynth=Resynth.MASK, mask=None, bitrate=None, draws=None,
           passes=None, given: dict[str, str] | None = None) -> Common:
    opts = decoding_options(seed, temperature, top_k, top_p)
    if sample_rate is not None and not 1000 <= sample_rate <= 384000:
        raise UserError(f"--sample-rate {sample_rate} is not a sensible audio rate")
    window_options(window, batch_size, resynth, None, draws, passes, given)  # checks the flags
    if bitrate is not None and not A.BITRATE_RANGE_KBPS[0] <= bitrate <= A.BITRATE_RANGE_KBPS[1]:
        raise UserError(f"--bitrate {bitrate}: use {A.BITRATE_RANGE_KBPS[0]} to {A.BITRATE_RANGE_KBPS[1]} kbps")
    return Common(checkpoint, device, opts, force, sample_rate, batch_size, window, resynth, mask, bitrate, draws,
                  passes, dict(given or {}))


def decoding_options(seed: int | None, temperature: float, top_k: int, top_p: float,
                     max_seconds: float = DecodingOptions.max_seconds) -> DecodingOptions:
    try:
        return DecodingOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                               max_seconds=max_seconds).validate()
    except ValueError as e:
        raise UserError(str(e)) from None


def _check_window(seconds: float, batch_size: int) -> None:
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if seconds < 1:
        raise UserError("--window must be at least 1 second")


def window_options(seconds: float, batch_size: int, resynth: Resynth, mask: MaskOptions | None,
                   draws: int | None = None, passes: int | None = None,
                   given: Mapping[str, str] | None = None) -> WindowOptions:
    """--window, --batch-size, --resynth, --draws, --passes, the given frames' flags (`given`: by kind of
    speechfree.KINDS, a kind left out is auto) and the task's mask settings; the windows overlap by a quarter
    of a window, at most 1 s."""
    _check_window(seconds, batch_size)
    given = given or {}
    try:  # WindowOptions.validate checks --draws and --passes (its messages name the flags too)
        return WindowOptions(seconds, min(1.0, seconds / 4), batch_size, resynth, mask, draws, passes,
                             **{GIVEN_FIELDS[kind]: GivenFrames.parse(given.get(kind, "auto"), kind)
                                for kind in KINDS}).validate()
    except ValueError as e:
        raise UserError(str(e)) from None


def check_detector(sx: ckpt.SpeechX, task: Task, window: WindowOptions) -> None:
    """--speech-free / --noise-free / --target-alone / --target-silent detector needs a checkpoint with that
    detector: say so before any file is read."""
    for kind in (k for k, of in TASK_OF.items() if of is task):
        if window.given_frames(kind).mode == "detector" and kind not in sx.detectors:
            raise UserError(f"{FLAGS[kind]} detector: this checkpoint has no {KINDS[kind]} detector "
                            f"(python -m speechx_cli.train.detector_train --task {kind} trains one)")


def mask_settings(task: Task, spec: str | None) -> MaskOptions | None:
    """The task's mask settings with --mask's overrides (None: no overrides, the task's own)."""
    if spec is None:
        return None
    if task not in TASK_MASKS:
        raise UserError(f"--mask: {task.value} makes no mask")
    try:
        opts = TASK_MASKS[task].with_overrides(spec)
    except ValueError as e:
        raise UserError(str(e)) from None
    if opts.counterpart and task not in COUNTERPARTS:
        raise UserError(f"--mask: counterpart: {task.value} has no counterpart task (only denoise and remove-speech)")
    return opts


def job_options(c: Common, task: Task, shard: str | None = None, fmt: OutputFormat | None = None) -> JobOptions:
    window = window_options(c.window, c.batch_size, c.resynth, mask_settings(task, c.mask), c.draws, c.passes,
                            c.given)
    return JobOptions(c.decoding, window, c.force, c.sample_rate, parse_shard(shard), fmt and fmt.value, c.bitrate)


def _pair(flag: str, value: str, sep: str, cast, form: str, low: str, high: str):
    """Two numbers `value` separated by `sep`, the first >= 0 and below the second."""
    try:
        a, b = (cast(v) for v in value.split(sep))
    except ValueError:
        raise UserError(f"{flag} {value!r}: expected {form}") from None
    if not 0 <= a < b:
        raise UserError(f"{flag} {value!r}: need 0 <= {low} < {high}")
    return a, b


def parse_shard(shard: str | None) -> tuple[int, int]:
    return (0, 1) if shard is None else _pair("--shard", shard, "/", int, "I/N, e.g. 0/4", "I", "N")


def parse_span(span: str) -> tuple[float, float]:
    return _pair("--span", span, ":", float, "START:END in seconds, e.g. 1.2:1.9", "START", "END")


@contextmanager
def guard() -> Iterator[None]:
    """Turn every expected failure into one line and exit code 2."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except (UserError, A.AudioError, ckpt.CheckpointError, CodecUnavailableError, ValueError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130)
    except MemoryError:
        fail("out of memory (try a smaller --batch-size or --window)")
    except Exception as e:  # noqa: BLE001 - last line of defence: never a traceback
        if os.environ.get("SPEECHX_DEBUG"):
            raise
        fail(f"internal error: {type(e).__name__}: {e} (set SPEECHX_DEBUG=1 for details)")


def fail(message: str) -> None:
    err.print(f"error: {message.splitlines()[0] if message else 'failed'}", markup=False)
    raise typer.Exit(2)


def checkpoint_path(checkpoint: Path | None) -> Path:
    """--checkpoint, else $SPEECHX_CHECKPOINT, else the bundled demo checkpoint."""
    path = checkpoint or ckpt.default_path()
    if path is None:
        raise UserError(NO_CHECKPOINT)
    return path


def load_model(checkpoint: Path | None, device: Device) -> api.SpeechXModel:
    path = checkpoint_path(checkpoint)
    with err.status(f"loading {path.name}"):
        return api.load_model(path, resolve_device(device))


def resolve_device(device: Device) -> str:
    try:
        return api.resolve_device(device.value)
    except ValueError:
        raise UserError(f"--device {device.value}: no CUDA device is available here") from None


def check_output(path: Path, force: bool, audio: bool = True) -> None:
    """OUT is not a folder, nor a file already there unless --force; audio: its format is one speechx writes."""
    if path.exists() and path.is_dir():
        raise UserError(f"{path}: is a folder (give a file name, or a folder as IN too)")
    if path.exists() and not force:
        raise UserError(f"{path}: exists (use --force to overwrite)")
    if audio:
        A.check_writable(path)  # before the work, not after it


def check_input(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")


def save(path: Path, audio: api.Audio, force: bool, bitrate: int | None = None) -> None:
    warn_clipped(path, audio.save(path, force=force, bitrate_kbps=bitrate))
    err.print(f"wrote {path}", markup=False)


def warn_clipped(path: Path, clipped: int) -> None:
    if clipped:
        err.print(f"warning: {path}: {clipped} samples clipped", markup=False)


def progress() -> Progress:
    """A transient progress bar on stderr: description, bar, done/total, time left."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=err, transient=True)
