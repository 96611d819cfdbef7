"""`speechx train ...`: from a corpus on disk to a checkpoint the speechx commands accept.

    speechx train prepare /data/LibriTTS data/libritts            # any layout, auto-detected
    speechx train noise /data/musan/noise data/libritts           # any folder of audio
    speechx train codec --data data/libritts/codec-train.txt --dev data/libritts/codec-dev.txt --out runs/codec
    speechx train tokenize data/libritts data/shards --codec-checkpoint runs/codec/codec_train.pt
    speechx train lm --data data/shards --out runs/lm-tts --stage tts
    speechx train lm --data data/shards --out runs/lm-all --stage all --init runs/lm-tts/lm_train.pt
    speechx train export runs/lm-all/lm_train.pt model.safetensors --codec-checkpoint runs/codec/codec_train.pt
    speechx train status data runs

tokenize and lm run under torchrun as well (`torchrun --nproc_per_node=N -m speechx_cli train lm ...`).
codec, lm and export are the trainers' own commands (codec_cli.py, lm_train.py), so every flag they
have comes through; `python -m speechx_cli.train.corpus` / `.codec_cli` / `.lm_train` still run alone.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import codec_cli, lm_train

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Train on your own data: prepare a corpus, add noise, train the codec, tokenize, train "
                       "the language model (TTS stage, then all tasks), export; status says where a run stands.")
out = Console(highlight=False, soft_wrap=True)
ONE_PROCESS = ("prepare", "noise", "codec", "status", "bench")
SYNTH = "Synthetic corpus (--format synthetic)"


@app.callback()
def _group(ctx: typer.Context) -> None:
    """Train on your own data."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and ctx.invoked_subcommand in ONE_PROCESS:
        raise typer.BadParameter(f"`train {ctx.invoked_subcommand}` runs in one process: start it without torchrun "
                                 "(tokenize and lm run under torchrun)")


class Format(str, Enum):
    auto = "auto"
    libritts = "libritts"
    librispeech = "librispeech"
    vctk = "vctk"
    ljspeech = "ljspeech"
    commonvoice = "commonvoice"
    folder = "folder"
    jsonl = "jsonl"
    synthetic = "synthetic"


def _bar(label: str) -> Progress:
    return Progress(SpinnerColumn(), TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[what]}"), TimeRemainingColumn(), console=Console(stderr=True),
                    transient=True)


@app.command()
def prepare(
    src: Annotated[str, typer.Argument(help="The corpus: a folder, a .jsonl list, or `synthetic` (the project's "
                                            "own voices).", show_default=False)],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Folder for the manifest (created).")],
    format: Annotated[Format, typer.Option("--format", help="The source's layout; auto detects it.")] = Format.auto,
    textgrids: Annotated[Optional[Path], typer.Option(
        exists=True, file_okay=False, help="A folder of Montreal Forced Aligner TextGrids (besides any next to the "
                                           "audio); else words are aligned offline.")] = None,
    dev_fraction: Annotated[float, typer.Option(help="Share of speakers held out for dev when the layout names "
                                                     "none.")] = 0.05,
    workers: Annotated[int, typer.Option(min=1, help="Processes reading and aligning in parallel.")] = 1,
    force: Annotated[bool, typer.Option("--force", help="Replace a corpus prepared from another source or with "
                                                        "other settings.")] = False,
    n_per_speaker: Annotated[int, typer.Option(rich_help_panel=SYNTH, help="Utterances per voice.")] = 200,
    seed: Annotated[int, typer.Option(rich_help_panel=SYNTH, help="Same seed, same corpus.")] = 0,
    edit_fraction: Annotated[float, typer.Option(rich_help_panel=SYNTH, help="Utterances with an edited "
                                                                             "variant.")] = 0.3,
    noise: Annotated[bool, typer.Option(rich_help_panel=SYNTH, help="Also build the noise bank.")] = True,
    kokoro_speakers: Annotated[int, typer.Option(rich_help_panel=SYNTH, help="Kokoro-82M blended voices (the "
                                                                             "kokoro extra).")] = 0,
    kokoro_per_speaker: Annotated[int, typer.Option(rich_help_panel=SYNTH, help="Utterances per Kokoro voice.")] = 24,
) -> None:
    """Read a corpus in its own layout into a manifest: transcripts, speakers, word timings (TextGrids or the
    offline aligner), long recordings cut at pauses; bad files skipped and listed in OUT/report.jsonl.
    Resumes an interrupted run; the same source gives the same manifest."""
    from .prepare import PrepareOptions, prepare as run
    from .prepare.lists import write_codec_lists

    if format == Format.synthetic or (format == Format.auto and src == "synthetic" and not Path(src).exists()):
        from . import corpus

        corpus.build(out_dir, n_per_speaker=n_per_speaker, seed=seed, workers=workers, edit_fraction=edit_fraction,
                     noise=noise, kokoro_speakers=kokoro_speakers, kokoro_per_speaker=kokoro_per_speaker, force=force)
    else:
        if not Path(src).exists():
            raise typer.BadParameter(f"{src}: no such folder or file", param_hint="SRC")
        opts = PrepareOptions(layout=format.value, textgrids=str(textgrids.resolve()) if textgrids else None,
                              dev_fraction=dev_fraction)
        with _bar("prepare") as bar:
            task = bar.add_task("prepare", total=None, what="listing")

            def listed(n: int) -> None:
                bar.update(task, total=n, what="recordings")

            def chunk(stats: dict) -> None:
                bar.advance(task, stats.get("items", 0))

            try:
                summary = run(Path(src), out_dir, opts, workers=workers, force=force, on_listed=listed, on_chunk=chunk)
            except (FileExistsError, ValueError) as e:
                raise typer.BadParameter(str(e)) from None
        _print_prepared(summary, out_dir)
    write_codec_lists(out_dir, out_dir / "codec-train.txt", out_dir / "codec-dev.txt", seed=seed)


def _print_prepared(s: dict, out_dir: Path) -> None:
    out.print(f"[bold]{s['utterances']}[/] utterances, {s['hours']:.2f} h ({s['transcribed_hours']:.2f} h "
              f"transcribed, {s['untranscribed']} without text) from {s['recordings']} recordings of a "
              f"{s['layout']} corpus; speakers train {s['speakers']['train']} / dev {s['speakers']['dev']}; word "
              f"timings: " + ", ".join(f"{k} {v}" for k, v in sorted(s["timings"].items()) if k != "None"))
    if s["pieces_of_long_recordings"]:
        out.print(f"  {s['pieces_of_long_recordings']} utterances cut from long recordings")
    if s["problems"]:
        out.print(f"{s['problems']} problems, {s['skipped']} files skipped; each one is in {out_dir / 'report.jsonl'}")
        table = Table("problem", "files")
        for kind, n in sorted(s["by_problem"].items(), key=lambda kv: -kv[1]):
            table.add_row(kind, str(n))
        out.print(table)
    out.print(f"manifest: {out_dir / 'manifest.jsonl'}")


class NoiseKind(str, Enum):
    noise = "noise"
    room = "room"


@app.command()
def noise(
    src: Annotated[str, typer.Argument(help="A folder of audio (MUSAN, DNS, WHAM!, your own), or `builtin` (the "
                                            "project's procedural noise, babble, Debian sounds, rooms).",
                                       show_default=False)],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="The prepared corpus folder.")],
    kind: Annotated[NoiseKind, typer.Option(help="noise, or room (impulse responses).")] = NoiseKind.noise,
    licence: Annotated[str, typer.Option(help="Recorded in each row.")] = "unknown (see the source)",
    workers: Annotated[int, typer.Option(min=1, help="Processes reading in parallel.")] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the builtin noises.")] = 0,
) -> None:
    """Add a noise source to OUT's noise bank (noise.jsonl); sources add up, a rerun replaces its own rows."""
    from .prepare.lists import write_codec_lists
    from .prepare.noise import BUILTIN, import_noise

    if src != BUILTIN and not Path(src).is_dir():
        raise typer.BadParameter(f"{src}: no such folder", param_hint="SRC")
    with _bar("noise") as bar:
        task = bar.add_task("noise", total=None, what="listing")
        try:
            result = import_noise(src, out_dir, kind.value, licence, workers=workers, seed=seed,
                                  on_listed=lambda n: bar.update(task, total=n, what="files"),
                                  on_chunk=lambda stats: bar.advance(task, stats.get("items", 0)))
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    out.print(f"{result['source']}: [bold]{result['noises']}[/] noises ({result['rooms']} rooms), "
              f"{result['hours']:.2f} h, {result['dev']} held out for dev; {len(result['problems'])} files skipped"
              + (f" (listed in {out_dir / 'noise-sources' / (result['source'] + '.report.jsonl')})"
                 if result["problems"] else ""))
    if (out_dir / "manifest.jsonl").is_file():
        write_codec_lists(out_dir, out_dir / "codec-train.txt", out_dir / "codec-dev.txt")


# The trainers' own commands: every flag they define comes through.
app.command("codec", help="Train the codec (any kind codec_train knows); resumable with --resume. "
                          "Its lists: OUT/codec-train.txt and codec-dev.txt of `train prepare`.")(codec_cli._cli)



@app.command()
def tokenize(
    corpus_dir: Annotated[Path, typer.Argument(metavar="CORPUS", exists=True, file_okay=False,
                                               help="A prepared corpus (manifest.jsonl).")],
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", help="Shard folder (created).")],
    codec_checkpoint: Annotated[str, typer.Option("--codec-checkpoint", "--codec", help="The codec: its training "
                                                  "checkpoint, an inference checkpoint, or a name (encodec_24khz, "
                                                  "random-tiny, ...).")],
    variants: Annotated[int, typer.Option(min=1, help="Simulated examples per utterance.")] = 6,
    max_examples: Annotated[Optional[int], typer.Option(help="Cap on the number of examples.")] = None,
    split: Annotated[str, typer.Option(help="train or dev.")] = "train",
    seed: Annotated[int, typer.Option(help="Same seed, same examples.")] = 0,
    tasks: Annotated[str, typer.Option(help="Comma-separated tasks to cycle through.")] = "tts,ns,sr,tse,edit_clean,edit_noisy",
    examples_per_shard: Annotated[int, typer.Option(min=1)] = 2000,
    batch_seconds: Annotated[float, typer.Option(help="Audio per codec call.")] = 160.0,
    workers: Annotated[int, typer.Option(min=0, help="Simulation processes per rank.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (each rank its local GPU).")] = "auto",
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per process.")] = None,
    reuse: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False, help="A bigger shard set of the same "
                                                  "stream: its whole shards are linked, not encoded again.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace shards made with other settings.")] = False,
) -> None:
    """Simulate the tasks from the corpus and its noise bank and encode them with the codec into shards;
    resumes an interrupted run. Under torchrun each rank makes every world-th shard, rank 0 merges the index."""
    import torch

    from ..prompts import Task
    from .shards import ShardOptions
    from .tokenize import tokenize as run

    if threads:
        torch.set_num_threads(threads)
    if split not in ("train", "dev"):
        raise typer.BadParameter("train or dev", param_hint="--split")
    try:
        chosen = tuple(Task(t.strip()).value for t in tasks.split(",") if t.strip())
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--tasks") from None
    opts = ShardOptions(variants=variants, max_examples=max_examples, split=split, seed=seed,
                        examples_per_shard=examples_per_shard, batch_seconds=batch_seconds, tasks=chosen,
                        workers=workers)
    main = int(os.environ.get("RANK", "0")) == 0
    with _bar("tokenize") as bar:
        task = bar.add_task("tokenize", total=None, what="examples", visible=main)

        def update(rate: dict) -> None:
            wall = max(rate["wall_seconds"], 1e-9)
            bar.update(task, advance=rate["done"], what=f"examples  {rate['audio_seconds'] / wall:.0f} audio s/s")

        try:
            summary = run(corpus_dir, out_dir, codec_checkpoint, opts, device=device, force=force, reuse=reuse,
                          on_progress=update, on_plan=lambda n: bar.update(task, total=n))
        except (FileExistsError, FileNotFoundError, ValueError) as e:
            raise typer.BadParameter(str(e)) from None
    if summary is None:
        return
    index = summary["index"]
    out.print(f"[bold]{index['examples']}[/] examples ({index['target_hours']:.2f} h of targets) in "
              f"{len(index['shards'])} shards; tasks {index['task_counts']}\nthis run: {summary['examples']} "
              f"examples, {summary['audio_seconds_per_s']:.1f} audio s/s, {summary['skipped']} skipped, "
              f"{summary['reused']} reused; index: {out_dir / 'index.json'}")


app.command("lm", help="Train the AR and NAR models: --stage tts first, then --stage all --init its checkpoint; "
                       "under torchrun: DDP (NCCL or gloo), bf16 on GPUs.")(lm_train.train_cli)
app.command("export", help="Turn an LM training checkpoint and its codec into an inference checkpoint for "
                           "every speechx command.")(lm_train.export_cli)


@app.command()
def status(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Folders to look in.", show_default="data runs "
                                                          "checkpoints, or .")] = None,
) -> None:
    """Where each corpus, shard set, codec run, LM run and export stands, and the command that comes next."""
    from .status import find_stages

    folders = paths or [p for p in (Path("data"), Path("runs"), Path("checkpoints")) if p.is_dir()] or [Path(".")]
    stages = [s for folder in folders for s in find_stages(folder)]
    if not stages:
        out.print("nothing found: start with `speechx train prepare SRC OUT`")
        return
    table = Table("what", "where", "state", "next")
    for column in table.columns:
        column.overflow = "fold"
    for s in stages:
        table.add_row(s.kind, str(s.path), s.state, s.next)
    out.print(table)


@app.command()
def bench(
    sizes: Annotated[str, typer.Option(help="Corpus sizes in utterances, comma-separated (memory should stay "
                                            "flat from the first to the last).")] = "40,400",
    codec_checkpoint: Annotated[Optional[str], typer.Option("--codec-checkpoint", "--codec",
                                                            help="Codec for tokenize.", show_default="the demo "
                                                            "checkpoint's, else random-demo")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the results here.")] = None,
    keep: Annotated[Optional[Path], typer.Option(help="Work in this folder and keep it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --json file.")] = False,
) -> None:
    """prepare and tokenize throughput (hours of audio per CPU-hour) and peak memory, per corpus size."""
    import json

    from .throughput import run_bench

    if json_path is not None and json_path.exists() and not force:
        raise typer.BadParameter(f"{json_path} exists (use --force)", param_hint="--json")
    try:
        counts = [int(v) for v in sizes.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{sizes!r}: expected comma-separated counts", param_hint="--sizes") from None
    rows = run_bench(counts, codec_checkpoint, keep, log=lambda msg: Console(stderr=True).print(msg))
    table = Table("step", "utterances", "audio h", "CPU s", "audio h per CPU-hour", "marginal", "peak memory MB")
    for r in rows:
        marginal = r["marginal_audio_hours_per_cpu_hour"]
        table.add_row(r["step"], str(r["utterances"]), f"{r['audio_hours']:.3f}", f"{r['cpu_seconds']:.1f}",
                      f"{r['audio_hours_per_cpu_hour']:.1f}", "" if marginal is None else f"{marginal:.1f}",
                      f"{r['peak_mb']:.0f}")
    out.print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    app()
