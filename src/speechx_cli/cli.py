"""speechx command line: one short command per task; flags -> options -> pipeline. No tensor math.

Every error the user can cause ends in one line on stderr and a non-zero exit (2: bad input or
usage, 1: some files of a folder run failed); set SPEECHX_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from typer.core import TyperGroup

from . import audio as A
from .engine import DecodingOptions
from .mask import MaskOptions, Resynth
from .options import (BatchOpt, BitrateOpt, CheckpointOpt, Device, DeviceOpt, FormatOpt, MaskOpt, OutputFormat,
                      ResynthOpt, TempOpt, TopKOpt, TopPOpt)
from .prompts import Task

if TYPE_CHECKING:
    from .jobs import JobOptions

# Typer >= 0.28 vendors its own click; older ones use the click package.
try:
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer
    import click

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False)


class UserError(Exception):
    """A problem with what the user asked for; shown as one line."""


class OneLineErrors(TyperGroup):
    """Click group whose usage errors are one line, not a usage box."""

    def main(self, args=None, prog_name=None, **extra):
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # bare `speechx`: show help
            click.echo(e.ctx.get_help())
            sys.exit(0)
        except click.exceptions.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx else ""
            err.print(f"error: {e.format_message()}{hint}", markup=False)
            sys.exit(2)
        except typer.Abort:
            err.print("aborted")
            sys.exit(130)
        except typer.Exit as e:
            sys.exit(e.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
    help="Edit and generate speech with one neural codec language model (SpeechX).")


class Background(str, Enum):
    keep = "keep"
    clean = "clean"


# Shared option types (Typer Annotated style).
SeedOpt = Annotated[Optional[int], typer.Option(help="Random seed for sampling.")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")]
RateOpt = Annotated[Optional[int], typer.Option(
    "--sample-rate", help="Output sample rate in Hz.", show_default="the input's")]
TextOpt = Annotated[Optional[str], typer.Option("--text", help="Transcript of the speech (optional; helps).")]
WindowOpt = Annotated[float, typer.Option("--window", help="Seconds per window for long inputs.")]
ShardOpt = Annotated[Optional[str], typer.Option(
    "--shard", help="Folder runs: process only part I of N (I/N, 0-based), e.g. one per machine.")]


@dataclass(frozen=True)
class Common:
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


def _common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate,
            batch_size=8, window=10.0, resynth=Resynth.MASK, mask=None, bitrate=None) -> Common:
    try:
        opts = DecodingOptions(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed).validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    if sample_rate is not None and not 1000 <= sample_rate <= 384000:
        raise UserError(f"--sample-rate {sample_rate} is not a sensible audio rate")
    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    if window < 1:
        raise UserError("--window must be at least 1 second")
    if bitrate is not None and not A.BITRATE_RANGE_KBPS[0] <= bitrate <= A.BITRATE_RANGE_KBPS[1]:
        raise UserError(f"--bitrate {bitrate}: use {A.BITRATE_RANGE_KBPS[0]} to {A.BITRATE_RANGE_KBPS[1]} kbps")
    return Common(checkpoint, device, opts, force, sample_rate, batch_size, window, resynth, mask, bitrate)


def mask_settings(task: Task, spec: str | None) -> "MaskOptions | None":
    """The task's mask settings with --mask's overrides (None: no overrides, the task's own)."""
    from .pipeline import TASK_MASKS

    if spec is None:
        return None
    if task not in TASK_MASKS:
        raise UserError(f"--mask: {task.value} makes no mask")
    try:
        return TASK_MASKS[task].with_overrides(spec)
    except ValueError as e:
        raise UserError(str(e)) from None


@contextmanager
def _guard() -> Iterator[None]:
    """Turn every expected failure into one line and exit code 2."""
    from .checkpoint import CheckpointError
    from .codec import CodecUnavailableError

    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except (UserError, A.AudioError, CheckpointError, CodecUnavailableError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130)
    except MemoryError:
        _fail("out of memory (try a smaller --batch-size or --window)")
    except Exception as e:  # noqa: BLE001 - last line of defence: never a traceback
        if os.environ.get("SPEECHX_DEBUG"):
            raise
        _fail(f"internal error: {type(e).__name__}: {e} (set SPEECHX_DEBUG=1 for details)")


def _fail(message: str) -> None:
    err.print(f"error: {message.splitlines()[0] if message else 'failed'}", markup=False)
    raise typer.Exit(2)


def _load_model(c: Common):
    from . import checkpoint as ckpt

    path = c.checkpoint or ckpt.default_path()
    if path is None:
        raise UserError("no checkpoint: pass --checkpoint PATH or set SPEECHX_CHECKPOINT")
    with err.status(f"loading {path.name}"):
        return ckpt.load(path, device=resolve_device(c.device))


def resolve_device(device: Device) -> str:
    import torch

    if device is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device is Device.cuda and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here")
    return device.value


def _check_output(path: Path, force: bool) -> None:
    if path.exists() and path.is_dir():
        raise UserError(f"{path}: is a folder (give a file name, or a folder as IN too)")
    if path.exists() and not force:
        raise UserError(f"{path}: exists (use --force to overwrite)")
    A.check_writable(path)  # before the work, not after it


def _check_input(path: Path) -> None:
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")


def _save(path: Path, wav, codec_rate: int, out_rate: int, force: bool, bitrate: int | None = None) -> None:
    from .jobs import write_output

    _warn_clipped(path, write_output(path, wav, codec_rate, out_rate, force, bitrate))


def _job_options(c: Common, task: Task, shard: str | None = None, fmt: OutputFormat | None = None) -> "JobOptions":
    from .jobs import JobOptions
    from .pipeline import WindowOptions

    mask = mask_settings(task, c.mask)
    try:
        window = WindowOptions(c.window, min(1.0, c.window / 4), c.batch_size, c.resynth, mask).validate()
    except ValueError as e:
        raise UserError(str(e)) from None
    return JobOptions(c.decoding, window, c.force, c.sample_rate, parse_shard(shard), fmt and fmt.value, c.bitrate)


def parse_shard(shard: str | None) -> tuple[int, int]:
    if shard is None:
        return (0, 1)
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise UserError(f"--shard {shard!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {shard!r}: need 0 <= I < N")
    return i, n


def _progress() -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, console=err, transient=True)


def _warn_clipped(path: Path, clipped: int) -> None:
    if clipped:
        err.print(f"warning: {path}: {clipped} samples clipped", markup=False)


def _run_files(c: Common, task: Task, inp: Path, outp: Path, text: str | None = None,
               enroll: Path | None = None, shard: str | None = None, fmt: OutputFormat | None = None) -> None:
    """One file or a whole folder through a known-length task (denoise, remove-speech, extract-speaker)."""
    from . import jobs

    _check_input(inp)
    if enroll is not None:
        _check_input(enroll)
    opts = _job_options(c, task, shard, fmt)
    if inp.is_dir():
        return _run_folder(c, task, inp, outp, opts, text, enroll)
    if shard is not None:
        raise UserError("--shard applies to folder runs only")
    if fmt is not None:
        raise UserError("--format applies to folder runs only (OUT's extension sets a file's format)")
    _check_output(outp, c.force)
    duration = A.info(inp).duration_s
    sx = _load_model(c)
    ref = A.load(enroll, sx.codec.sample_rate, allow_silence=False)[0] if enroll is not None else None
    with _progress() as bar:
        job = bar.add_task(f"{task.value} {inp.name}", total=round(duration))
        clipped = jobs.run_file(sx, task, inp, outp, opts, text, ref,
                                progress=lambda s: bar.advance(job, s))
    _warn_clipped(outp, clipped)
    err.print(f"wrote {outp}", markup=False)


def _run_folder(c: Common, task: Task, inp: Path, outp: Path, opts, text: str | None,
                enroll: Path | None) -> None:
    from . import jobs

    if outp.exists() and not outp.is_dir():
        raise UserError(f"{outp}: IN is a folder, so OUT must be a folder too")
    todo, skipped = jobs.plan_folder(inp, outp, opts)
    if not todo and not skipped:
        raise UserError(f"{inp}: no audio files found")
    sx = _load_model(c)
    ref = A.load(enroll, sx.codec.sample_rate, allow_silence=False)[0] if enroll is not None else None
    with _progress() as bar:
        job = bar.add_task(task.value, total=len(todo))
        summary = jobs.run_folder(sx, task, todo, opts, text, ref, advance=lambda n: bar.advance(job, n))
    for path, clipped in summary.clipped.items():
        _warn_clipped(path, clipped)
    for line in jobs.format_notes(todo, summary.written):
        err.print(f"note: {line}", markup=False)
    _summary(len(summary.written), len(skipped), summary.failed)


def _summary(done: int, skipped: int, failed: list[tuple[Path, str]]) -> None:
    err.print(f"{done} written, {skipped} skipped (exist; --force to redo), {len(failed)} failed", markup=False)
    for p, why in failed:
        err.print(f"failed: {why}" if str(p) in why else f"failed: {p}: {why}", markup=False)
    if failed:
        raise typer.Exit(1)


InArg = Annotated[Path, typer.Argument(metavar="IN", help="Input audio file, or a folder of them.",
                                        show_default=False)]
OutArg = Annotated[Path, typer.Argument(metavar="OUT", help="Output file, or a folder when IN is one.",
                                         show_default=False)]


@app.command()
def denoise(
    inp: InArg, outp: OutArg, text: TextOpt = None, checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto, seed: SeedOpt = 0, temperature: TempOpt = DecodingOptions.temperature,
    top_k: TopKOpt = 0, top_p: TopPOpt = 1.0, force: ForceOpt = False, sample_rate: RateOpt = None,
    batch_size: BatchOpt = 8, window: WindowOpt = 10.0, resynth: ResynthOpt = Resynth.MASK, mask: MaskOpt = None,
    shard: ShardOpt = None, fmt: FormatOpt = None, bitrate: BitrateOpt = None,
) -> None:
    """Remove background noise: keep the speech."""
    with _guard():
        c = _common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, batch_size, window,
                    resynth, mask, bitrate)
        _run_files(c, Task.NS, inp, outp, text, shard=shard, fmt=fmt)


@app.command("remove-speech")
def remove_speech(
    inp: InArg, outp: OutArg, text: TextOpt = None, checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto, seed: SeedOpt = 0, temperature: TempOpt = DecodingOptions.temperature, top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0, force: ForceOpt = False, sample_rate: RateOpt = None, batch_size: BatchOpt = 8,
    window: WindowOpt = 10.0, resynth: ResynthOpt = Resynth.MASK, mask: MaskOpt = None, shard: ShardOpt = None,
    fmt: FormatOpt = None, bitrate: BitrateOpt = None,
) -> None:
    """Remove the speech: keep only the background."""
    with _guard():
        c = _common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, batch_size, window,
                    resynth, mask, bitrate)
        _run_files(c, Task.SR, inp, outp, text, shard=shard, fmt=fmt)


@app.command("extract-speaker")
def extract_speaker(
    inp: InArg, outp: OutArg,
    enroll: Annotated[Path, typer.Option("--enroll", help="A few seconds of the target speaker alone.")],
    text: TextOpt = None, checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto, seed: SeedOpt = 0, temperature: TempOpt = DecodingOptions.temperature, top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0, force: ForceOpt = False, sample_rate: RateOpt = None, batch_size: BatchOpt = 8,
    window: WindowOpt = 10.0, resynth: ResynthOpt = Resynth.MASK, mask: MaskOpt = None, shard: ShardOpt = None,
    fmt: FormatOpt = None, bitrate: BitrateOpt = None,
) -> None:
    """Keep one speaker of a mixture, given an enrollment recording of them."""
    with _guard():
        c = _common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, batch_size, window,
                    resynth, mask, bitrate)
        _run_files(c, Task.TSE, inp, outp, text, enroll, shard=shard, fmt=fmt)


@app.command()
def tts(
    text: Annotated[str, typer.Argument(help="What to say.", show_default=False)],
    outp: Annotated[Path, typer.Argument(help="Output audio file.", show_default=False)],
    prompt: Annotated[Path, typer.Option("--prompt", help="3-10 s of the voice to speak in.")],
    checkpoint: CheckpointOpt = None, device: DeviceOpt = Device.auto, seed: SeedOpt = 0,
    temperature: TempOpt = DecodingOptions.temperature, top_k: TopKOpt = 0, top_p: TopPOpt = 1.0, force: ForceOpt = False,
    sample_rate: RateOpt = None,
    max_seconds: Annotated[float, typer.Option(help="Longest speech to generate.")] = 30.0,
    bitrate: BitrateOpt = None,
) -> None:
    """Speak TEXT in the voice of the --prompt recording (zero-shot TTS)."""
    from dataclasses import replace

    from . import pipeline as PL

    with _guard():
        c = _common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, bitrate=bitrate)
        if not text.strip():
            raise UserError("TEXT is empty")
        _check_input(prompt)
        _check_output(outp, force)
        opts = replace(c.decoding, max_seconds=max_seconds).validate()
        sx = _load_model(c)
        sr = sx.codec.sample_rate
        voice, in_rate = A.load(prompt, sr, allow_silence=False)
        with err.status("tts"):
            y = PL.run(sx, [PL.Request(Task.TTS, enrollment=voice, text=text)], opts)[0]
        _save(outp, y, sr, c.sample_rate or in_rate, force, c.bitrate)
        err.print(f"wrote {outp}", markup=False)


def parse_span(span: str) -> tuple[float, float]:
    try:
        a, b = (float(x) for x in span.split(":"))
    except ValueError:
        raise UserError(f"--span {span!r}: expected START:END in seconds, e.g. 1.2:1.9") from None
    if not 0 <= a < b:
        raise UserError(f"--span {span!r}: need 0 <= START < END")
    return a, b


@dataclass(frozen=True)
class _EditStep:
    span: tuple[float, float]  # s of the audio as it stands when this step runs
    text: str  # the full transcript after this step
    label: str  # what the step changes, for the user


def _check_span(span: str, duration: float) -> tuple[float, float]:
    start, end = parse_span(span)
    if start >= duration or end > duration + 0.01:
        raise UserError(f"--span {span}: goes beyond the audio ({duration:.2f} s long)")
    return start, min(end, duration)


def _edit_steps(wav, sr: int, new_text: str, transcript: str | None, span: str | None) -> list[_EditStep]:
    """The edits to run, left to right: one --span step, or one per changed group of words."""
    from . import editplan as E
    from .align import transcribe

    if span is not None:
        return [_EditStep(_check_span(span, len(wav) / sr), new_text, "replace the span")]
    if transcript is None:
        with err.status("transcribing (pocketsphinx)"):
            transcript = transcribe(wav, sr)
        if not transcript:
            raise UserError("pocketsphinx heard no words in IN: pass --transcript (or --span START:END)")
        err.print(f'warning: no --transcript given; pocketsphinx heard: "{transcript}" '
                  "(speech recognition can be wrong: pass the correct words with --transcript)", markup=False)
    with err.status("aligning the transcript (pocketsphinx)"):
        plan = E.plan(wav, sr, transcript, new_text)
    return [_EditStep(e.span, e.text, e.edit.describe()) for e in plan.edits]


def _describe_steps(steps: list[_EditStep]) -> list[str]:
    width = max(len(s.label) for s in steps)
    return [f"{k}. {s.label:{width}}  {s.span[0]:.2f}-{s.span[1]:.2f} s" for k, s in enumerate(steps, 1)]


@app.command()
def edit(
    inp: Annotated[Path, typer.Argument(help="Input speech file.", show_default=False)],
    outp: Annotated[Path, typer.Argument(help="Output file.", show_default=False)],
    new_text: Annotated[str, typer.Option("--text", help="What the recording should say (full transcript).")],
    transcript: Annotated[Optional[str], typer.Option(
        help="What the recording says now.", show_default="pocketsphinx's guess (check it)")] = None,
    span: Annotated[Optional[str], typer.Option(
        help="Seconds to replace, START:END, instead of finding the changed words.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned edits; generate nothing.")] = False,
    background: Annotated[Background, typer.Option(
        help="keep: the new words keep the recording's background; clean: generate clean speech.")
    ] = Background.keep,
    checkpoint: CheckpointOpt = None, device: DeviceOpt = Device.auto, seed: SeedOpt = 0,
    temperature: TempOpt = DecodingOptions.temperature, top_k: TopKOpt = 0, top_p: TopPOpt = 1.0, force: ForceOpt = False,
    sample_rate: RateOpt = None, bitrate: BitrateOpt = None,
) -> None:
    """Change some words of a recording; everything else stays the input itself.

    The words that differ between --transcript (what IN says) and --text (what it should say) are
    located in time and regenerated: speechx edit in.wav out.wav --transcript "the cat sat down"
    --text "the dog sat down". Use --dry-run to see the plan first.
    """
    from . import pipeline as PL
    from .align import ALIGN_SAMPLE_RATE

    with _guard():
        c = _common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, bitrate=bitrate)
        if not new_text.strip():
            raise UserError("--text is empty")
        if span is not None:
            parse_span(span)
            if transcript is not None:
                raise UserError("give --span or --transcript, not both (with --span, --text is the full edited transcript)")
        _check_input(inp)
        if dry_run:
            wav, _ = A.load(inp, ALIGN_SAMPLE_RATE, allow_silence=False)
            for line in _describe_steps(_edit_steps(wav, ALIGN_SAMPLE_RATE, new_text, transcript, span)):
                out.print(line, markup=False)
            err.print("dry run: nothing generated", markup=False)
            return
        _check_output(outp, force)
        sx = _load_model(c)
        sr = sx.codec.sample_rate
        wav, in_rate = A.load(inp, sr, allow_silence=False)
        steps = _edit_steps(wav, sr, new_text, transcript, span)
        for line in _describe_steps(steps):
            err.print(line, markup=False)
        task = Task.EDIT_NOISY if background is Background.keep else Task.EDIT_CLEAN
        # right to left: an edit changes audio only from its span on, so spans to its left stay valid
        for k, step in reversed(list(enumerate(steps, 1))):
            with err.status(f"edit {k}/{len(steps)}"):
                req = PL.Request(task, audio=wav, text=step.text, span=step.span)
                wav = PL.run(sx, [req], c.decoding)[0]
        _save(outp, wav, sr, c.sample_rate or in_rate, force, c.bitrate)
        err.print(f"wrote {outp}", markup=False)


@app.command()
def info(checkpoint: CheckpointOpt = None) -> None:
    """Describe a checkpoint: model size, codec, training facts."""
    import json

    from . import checkpoint as ckpt, codecs

    with _guard():
        path = checkpoint or ckpt.default_path()
        if path is None:
            raise UserError("no checkpoint: pass --checkpoint PATH or set SPEECHX_CHECKPOINT")
        meta = ckpt.read_header(path)
        table = Table(show_header=False, show_edge=False)
        table.add_row("file", str(path))
        table.add_row("format", f"{meta['format']} v{meta['format_version']}")
        table.add_row("model", meta["model_config"])
        table.add_row("codec kind", codecs.describe(ckpt.codec_config(path, meta)))
        table.add_row("codec config", meta["codec_config"])
        for k, v in json.loads(meta.get("info", "{}")).items():
            table.add_row(k, str(v))
        out.print(table)


# `speechx eval ...` (eval/cli.py); imported last because its commands use the helpers above.
from .eval.cli import eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")

# `speechx train ...` (train/cli.py): from a corpus on disk to a checkpoint.
from .train.cli import app as train_app  # noqa: E402

app.add_typer(train_app, name="train")


@app.command()
def bench(
    configs: Annotated[str, typer.Option(help="Comma-separated model configs: demo, paper, tiny.")] = "demo,paper",
    quick: Annotated[bool, typer.Option("--quick", help="Few steps and 1 s of audio (a smoke test).")] = False,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results as JSON.")] = None,
    checkpoint: CheckpointOpt = None,
    files: Annotated[Optional[int], typer.Option(
        "--files", help="Files of the folder-throughput run (0 skips it).", show_default="20, 2 with --quick")] = None,
    threads: Annotated[int, typer.Option(help="Torch threads (0 = torch's default).")] = 0,
    long_minutes: Annotated[Optional[int], typer.Option(
        "--long-minutes", help="Length of the long-file memory run (0 skips it).",
        show_default="60, 2 with --quick")] = None,
    force: ForceOpt = False,
) -> None:
    """Measure speed and memory: AR tokens/s with and without the KV cache, NAR, codec, real-time factor."""
    import json

    from .eval import bench as B
    from .files import atomic_path

    with _guard():
        if json_path is not None:
            _check_output(json_path, force)
        names = tuple(c.strip() for c in configs.split(",") if c.strip())
        opts = B.BenchOptions(names, quick, checkpoint, files, threads, long_minutes).validate()
        result = B.run(opts, log=lambda msg: err.print(msg, markup=False))
        out.print(B.table(result))
        if json_path is not None:
            with atomic_path(json_path) as tmp:
                tmp.write_text(json.dumps(result, indent=2) + "\n")
            err.print(f"wrote {json_path}", markup=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
