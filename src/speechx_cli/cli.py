"""speechx command line: one short command per task; flags -> options -> the library. No tensor math.

The tasks run through api.py (tts), pipeline.py (edit steps) and jobs.py (files and folders); flags
become options in commands.py, which also holds the error guard: every error the user can cause
ends in one line on stderr and a non-zero exit (2: bad input or usage, 1: some files of a folder run
failed); set SPEECHX_DEBUG=1 to see tracebacks. Nothing imports this module: it is the leaf that
`speechx` and `python -m speechx_cli` start.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from typer.core import TyperGroup

from . import audio as A
from . import checkpoint as ckpt
from . import codecs
from . import editplan as E
from . import jobs
from .align import ALIGN_SAMPLE_RATE
from .recognize import hear
from .recognize import resolve as resolve_recognizer
from .commands import (Common, UserError, check_detector, check_input, check_output, checkpoint_path, common, err,
                       guard, job_options, load_model, out, parse_span, progress, save, warn_clipped)
from .engine import DecodingOptions
from .eval import bench as B
from .eval.cli import eval_app
from .files import atomic_path
from .mask import Resynth
from .options import (Background, BatchOpt, BitrateOpt, CheckpointOpt, Device, DeviceOpt, DrawsOpt, ForceOpt,
                      FormatOpt, MaskOpt, NoiseFreeOpt, OutputFormat, PassesOpt, RateOpt, ResynthOpt, SeedOpt,
                      ShardOpt, SpeechFreeOpt, SpeechShareOpt, TargetAloneOpt, TargetShareOpt, TargetSilentOpt, TempOpt,
                      TextOpt, TopKOpt, TopPOpt, WindowOpt)
from .prompts import Task
from .speechfree import KINDS, NOISE_FREE, SPEECH_FREE, SPEECH_SHARE, TARGET_ALONE, TARGET_SHARE, TARGET_SILENT
from .train.cli import app as train_app

# Typer >= 0.28 vendors its own click; older ones use the click package.
try:
    from typer import _click as click
except ImportError:  # pragma: no cover - older typer
    import click


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


def _run_files(c: Common, task: Task, inp: Path, outp: Path, text: str | None = None,
               enroll: Path | None = None, shard: str | None = None, fmt: OutputFormat | None = None) -> None:
    """One file or a whole folder through a known-length task (denoise, remove-speech, extract-speaker)."""
    check_input(inp)
    if enroll is not None:
        check_input(enroll)
    opts = job_options(c, task, shard, fmt)
    if inp.is_dir():
        return _run_folder(c, task, inp, outp, opts, text, enroll)
    if shard is not None:
        raise UserError("--shard applies to folder runs only")
    if fmt is not None:
        raise UserError("--format applies to folder runs only (OUT's extension sets a file's format)")
    check_output(outp, c.force)
    duration = A.info(inp).duration_s
    model = load_model(c.checkpoint, c.device)
    check_detector(model.sx, task, opts.window)
    ref = A.load(enroll, model.sample_rate, allow_silence=False)[0] if enroll is not None else None
    with progress() as bar:
        job = bar.add_task(f"{task.value} {inp.name}", total=round(duration))
        clipped = jobs.run_file(model.sx, task, inp, outp, opts, text, ref,
                                progress=lambda s: bar.advance(job, s))
    warn_clipped(outp, clipped)
    err.print(f"wrote {outp}", markup=False)


def _run_folder(c: Common, task: Task, inp: Path, outp: Path, opts, text: str | None,
                enroll: Path | None) -> None:
    if outp.exists() and not outp.is_dir():
        raise UserError(f"{outp}: IN is a folder, so OUT must be a folder too")
    todo, skipped = jobs.plan_folder(inp, outp, opts)
    if not todo and not skipped:
        raise UserError(f"{inp}: no audio files found")
    model = load_model(c.checkpoint, c.device)
    check_detector(model.sx, task, opts.window)
    ref = A.load(enroll, model.sample_rate, allow_silence=False)[0] if enroll is not None else None
    with progress() as bar:
        job = bar.add_task(task.value, total=len(todo))
        summary = jobs.run_folder(model.sx, task, todo, opts, text, ref, advance=lambda n: bar.advance(job, n))
    for path, clipped in summary.clipped.items():
        warn_clipped(path, clipped)
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
    draws: DrawsOpt = None, passes: PassesOpt = None, noise_free: NoiseFreeOpt = str(NOISE_FREE),
    speech_share: SpeechShareOpt = str(SPEECH_SHARE), shard: ShardOpt = None, fmt: FormatOpt = None,
    bitrate: BitrateOpt = None,
) -> None:
    """Remove background noise: keep the speech."""
    with guard():
        c = common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, batch_size, window,
                   resynth, mask, bitrate, draws, passes, {"ns": noise_free, "ns_gain": speech_share})
        _run_files(c, Task.NS, inp, outp, text, shard=shard, fmt=fmt)


@app.command("remove-speech")
def remove_speech(
    inp: InArg, outp: OutArg, text: TextOpt = None, checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto, seed: SeedOpt = 0, temperature: TempOpt = DecodingOptions.temperature, top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0, force: ForceOpt = False, sample_rate: RateOpt = None, batch_size: BatchOpt = 8,
    window: WindowOpt = 10.0, resynth: ResynthOpt = Resynth.MASK, mask: MaskOpt = None, draws: DrawsOpt = None,
    passes: PassesOpt = None, speech_free: SpeechFreeOpt = str(SPEECH_FREE), shard: ShardOpt = None,
    fmt: FormatOpt = None, bitrate: BitrateOpt = None,
) -> None:
    """Remove the speech: keep only the background."""
    with guard():
        c = common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, batch_size, window,
                   resynth, mask, bitrate, draws, passes, {"sr": speech_free})
        _run_files(c, Task.SR, inp, outp, text, shard=shard, fmt=fmt)


@app.command("extract-speaker")
def extract_speaker(
    inp: InArg, outp: OutArg,
    enroll: Annotated[Path, typer.Option("--enroll", help="A few seconds of the target speaker alone.")],
    text: TextOpt = None, checkpoint: CheckpointOpt = None,
    device: DeviceOpt = Device.auto, seed: SeedOpt = 0, temperature: TempOpt = DecodingOptions.temperature, top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0, force: ForceOpt = False, sample_rate: RateOpt = None, batch_size: BatchOpt = 8,
    window: WindowOpt = 10.0, resynth: ResynthOpt = Resynth.MASK, mask: MaskOpt = None, draws: DrawsOpt = None,
    passes: PassesOpt = None, target_alone: TargetAloneOpt = str(TARGET_ALONE),
    target_silent: TargetSilentOpt = str(TARGET_SILENT), target_share: TargetShareOpt = str(TARGET_SHARE),
    shard: ShardOpt = None,
    fmt: FormatOpt = None, bitrate: BitrateOpt = None,
) -> None:
    """Keep one speaker of a mixture, given an enrollment recording of them."""
    with guard():
        c = common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, batch_size, window,
                   resynth, mask, bitrate, draws, passes,
                   {"tse": target_alone, "tse_silent": target_silent, "tse_gain": target_share})
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
    with guard():
        c = common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, bitrate=bitrate)
        if not text.strip():
            raise UserError("TEXT is empty")
        check_input(prompt)
        check_output(outp, force)
        opts = replace(c.decoding, max_seconds=max_seconds).validate()
        model = load_model(c.checkpoint, c.device)
        with err.status("tts"):
            speech = model.tts(text, prompt, out_rate=c.sample_rate, options=opts)
        save(outp, speech, force, c.bitrate)


def _edit_steps(wav, sr: int, new_text: str, transcript: str | None, span: str | None,
                recognizer: str = "pocketsphinx") -> list[E.EditStep]:
    """The edits to run, left to right: one --span step, or one per changed group of words (a transcript
    not given is the recognizer's guess, resolved already)."""
    if span is not None:
        return [E.span_step(parse_span(span), len(wav) / sr, new_text)]
    if transcript is None:
        with err.status(f"transcribing ({recognizer})"):
            transcript, _ = hear(wav, sr, recognizer)
        if not transcript:
            raise UserError(f"{recognizer} heard no words in IN: pass --transcript (or --span START:END)")
        err.print(f'warning: no --transcript given; {recognizer} heard: "{transcript}" '
                  "(speech recognition can be wrong: pass the correct words with --transcript)", markup=False)
    with err.status("aligning the transcript (pocketsphinx)"):
        return E.word_steps(wav, sr, transcript, new_text)


@app.command()
def edit(
    inp: Annotated[Path, typer.Argument(help="Input speech file.", show_default=False)],
    outp: Annotated[Path, typer.Argument(help="Output file.", show_default=False)],
    new_text: Annotated[str, typer.Option("--text", help="What the recording should say (full transcript).")],
    transcript: Annotated[Optional[str], typer.Option(
        help="What the recording says now.", show_default="the recognizer's guess (check it)")] = None,
    recognizer: Annotated[str, typer.Option(
        help="Who guesses the transcript when --transcript is not given: auto (Whisper tiny.en where the eval "
        "extra installed it, else pocketsphinx), whisper, whisper=DIR (a faster-whisper model folder) or "
        "pocketsphinx.")] = "auto",
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
    with guard():
        c = common(checkpoint, device, seed, temperature, top_k, top_p, force, sample_rate, bitrate=bitrate)
        if not new_text.strip():
            raise UserError("--text is empty")
        if span is not None:
            parse_span(span)
            if transcript is not None:
                raise UserError("give --span or --transcript, not both (with --span, --text is the full edited transcript)")
        try:
            heard_by = resolve_recognizer(recognizer)
        except ValueError as e:
            raise UserError(f"--recognizer: {e}") from None
        check_input(inp)
        if dry_run:
            wav, _ = A.load(inp, ALIGN_SAMPLE_RATE, allow_silence=False)
            for line in E.describe_steps(_edit_steps(wav, ALIGN_SAMPLE_RATE, new_text, transcript, span, heard_by)):
                out.print(line, markup=False)
            err.print("dry run: nothing generated", markup=False)
            return
        check_output(outp, force)
        model = load_model(c.checkpoint, c.device)
        wav, in_rate = A.load(inp, model.sample_rate, allow_silence=False)
        steps = _edit_steps(wav, model.sample_rate, new_text, transcript, span, heard_by)
        for line in E.describe_steps(steps):
            err.print(line, markup=False)
        with err.status("edit") as status:
            edited = model.edit_steps(wav, steps, model.sample_rate, background=background.value,
                                      out_rate=c.sample_rate or in_rate, options=c.decoding,
                                      on_step=lambda k, n: status.update(f"edit {k}/{n}"))
        save(outp, edited, force, c.bitrate)


@app.command()
def info(checkpoint: CheckpointOpt = None) -> None:
    """Describe a checkpoint: model size, codec, training facts."""
    with guard():
        path = checkpoint_path(checkpoint)
        meta = ckpt.read_header(path)
        table = Table(show_header=False, show_edge=False)
        table.add_row("file", str(path))
        table.add_row("format", f"{meta['format']} v{meta['format_version']}")
        table.add_row("model", meta["model_config"])
        table.add_row("codec kind", codecs.describe(ckpt.codec_config(path, meta)))
        table.add_row("codec config", meta["codec_config"])
        for kind, name in KINDS.items():
            if f"{ckpt.detector_group(kind)}_config" in meta:
                table.add_row(f"{name} detector", meta[f"{ckpt.detector_group(kind)}_config"])
        for k, v in json.loads(meta.get("info", "{}")).items():
            table.add_row(k, str(v))
        out.print(table)


app.add_typer(eval_app, name="eval")  # `speechx eval ...`: metrics beside peers (eval/cli.py)
app.add_typer(train_app, name="train")  # `speechx train ...`: from a corpus on disk to a checkpoint (train/cli.py)


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
    with guard():
        if json_path is not None:
            check_output(json_path, force, audio=False)
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
