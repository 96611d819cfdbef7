"""File jobs behind the CLI's known-length commands (denoise, remove-speech, extract-speaker).

One file: loaded whole and run. A long file: streamed in blocks through `pipeline.stream`, so
memory stays bounded whatever its length. A folder: files bucketed by duration and run
`batch_size` at a time with the model loaded once; the tree is mirrored, existing outputs are
skipped (a rerun resumes), one bad file is reported and the rest go on. Each output keeps its
input's format unless --format says otherwise; a video's output is its sound (audio.output_suffix).
Lives beside cli.py (it is the CLI's file edge) so that cli.py stays a thin flag layer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import audio as A
from . import pipeline as PL
from .checkpoint import SpeechX
from .engine import DecodingOptions
from .prompts import Task

LONG_INPUT_SECONDS = 120.0  # longer inputs are streamed block by block


@dataclass(frozen=True)
class JobOptions:
    decoding: DecodingOptions
    window: PL.WindowOptions
    force: bool = False
    sample_rate: int | None = None  # output rate; None = the input's
    shard: tuple[int, int] = (0, 1)  # (index, count): this process takes files[index::count]
    out_format: str | None = None  # folder runs: every output's extension ("mp3", ...); None = the input's
    bitrate_kbps: int | None = None  # compressed outputs; None = audio.DEFAULT_BITRATE_KBPS


@dataclass
class Summary:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    clipped: dict[Path, int] = field(default_factory=dict)


def write_output(path: Path, wav: np.ndarray, codec_rate: int, out_rate: int, force: bool,
                 bitrate_kbps: int | None = None) -> int:
    """Resample from the codec rate to the output rate and save; returns clipped samples."""
    data = A.resample(wav, codec_rate, out_rate) if out_rate != codec_rate else wav
    return A.save(path, data, out_rate, force=force, bitrate_kbps=bitrate_kbps)


def run_file(sx: SpeechX, task: Task, inp: Path, outp: Path, opts: JobOptions, text: str | None = None,
             enrollment: np.ndarray | None = None, progress: Callable[[float], None] | None = None) -> int:
    """Process one file (streamed when long); returns the number of clipped output samples."""
    header = A.info(inp)
    if header.duration_s > LONG_INPUT_SECONDS:
        return run_long(sx, task, inp, outp, opts, enrollment, progress)
    sr = sx.codec.sample_rate
    wav, in_rate = A.load(inp, sr, allow_silence=False)
    req = PL.Request(task, audio=wav, enrollment=enrollment, text=text)
    y = PL.run(sx, [req], opts.decoding, opts.window)[0]
    return write_output(outp, y, sr, opts.sample_rate or in_rate, opts.force, opts.bitrate_kbps)


def run_long(sx: SpeechX, task: Task, inp: Path, outp: Path, opts: JobOptions,
             enrollment: np.ndarray | None = None, progress: Callable[[float], None] | None = None) -> int:
    """Stream a long file: read blocks, generate windows in batches, write blocks."""
    header = A.info(inp)
    if header.duration_s > A.MAX_INPUT_SECONDS:
        raise A.AudioError(f"{inp}: {header.duration_s / 3600:.1f} h is longer than the "
                           f"{A.MAX_INPUT_SECONDS / 3600:.0f} h limit")
    sr = sx.codec.sample_rate
    out_rate = opts.sample_rate or header.sample_rate
    block_seconds = opts.window.seconds * opts.window.batch_size
    blocks = A.iter_blocks(inp, sr, block_seconds=block_seconds)
    with A.BlockWriter(outp, out_rate, force=opts.force, bitrate_kbps=opts.bitrate_kbps) as writer:
        for block in A.resample_stream(PL.stream(sx, task, blocks, opts.decoding, opts.window, enrollment),
                                       sr, out_rate):
            writer.write(block)
            if progress:
                progress(len(block) / out_rate)
    return writer.clipped


def plan_folder(inp: Path, outp: Path, opts: JobOptions) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(todo pairs, skipped outputs) for this shard of a folder run; raises AudioError when two
    inputs would share an output (talk.mp4 and talk.m4a both give talk.m4a) or one would
    replace an input."""
    files = sorted(p for p in inp.rglob("*") if p.is_file() and A.is_media_path(p))
    pairs = [(src, (outp / src.relative_to(inp)).with_suffix(A.output_suffix(src, opts.out_format)))
             for src in files]
    _check_distinct(pairs)
    index, count = opts.shard
    pairs = pairs[index::count]
    todo = [(s, d) for s, d in pairs if opts.force or not d.exists()]
    skipped = [d for s, d in pairs if not opts.force and d.exists()]
    return todo, skipped


def _check_distinct(pairs: list[tuple[Path, Path]]) -> None:
    inputs = {src.resolve() for src, _ in pairs}
    first: dict[Path, Path] = {}
    for src, dst in pairs:
        if dst.resolve() in inputs:
            raise A.AudioError(f"{dst}: the output of {src} would replace an input (choose another OUT folder)")
        if dst in first:
            raise A.AudioError(f"{first[dst]} and {src} would both be written to {dst} "
                               "(rename one, or run them apart)")
        first[dst] = src


def format_notes(pairs: list[tuple[Path, Path]], written: list[Path]) -> list[str]:
    """One line per change of format among the written outputs of a folder run, e.g.
    '2 .mp4 files (video) -> .m4a (their sound)'."""
    done = set(written)
    changes = Counter((s.suffix.lower(), d.suffix.lower()) for s, d in pairs
                      if d in done and s.suffix.lower() != d.suffix.lower())
    lines = []
    for (a, b), n in sorted(changes.items()):
        what = " (video) -> {} (their sound)" if a in A.VIDEO_EXTENSIONS else " -> {}"
        lines.append(f"{n} {a} file{'s' if n > 1 else ''}{what.format(b)}")
    return lines


def run_folder(sx: SpeechX, task: Task, todo: list[tuple[Path, Path]], opts: JobOptions,
               text: str | None = None, enrollment: np.ndarray | None = None,
               advance: Callable[[int], None] | None = None) -> Summary:
    """Run every (input, output) pair; short files batched by similar duration, long ones streamed."""
    summary = Summary()
    sized: list[tuple[float, Path, Path]] = []
    for src, dst in todo:
        try:
            sized.append((A.info(src).duration_s, src, dst))
        except A.AudioError as e:
            summary.failed.append((src, str(e)))
            advance and advance(1)
    sized.sort(key=lambda t: t[0])
    short = [(s, d) for dur, s, d in sized if dur <= LONG_INPUT_SECONDS]
    long = [(s, d) for dur, s, d in sized if dur > LONG_INPUT_SECONDS]
    size = opts.window.batch_size
    for i in range(0, len(short), size):
        _run_group(sx, task, short[i: i + size], opts, text, enrollment, summary)
        advance and advance(len(short[i: i + size]))
    for src, dst in long:
        _guarded(summary, src, dst, lambda s=src, d=dst: run_long(sx, task, s, d, opts, enrollment))
        advance and advance(1)
    return summary


def _guarded(summary: Summary, src: Path, dst: Path, job: Callable[[], int]) -> None:
    try:
        clipped = job()
    except (A.AudioError, ValueError) as e:
        summary.failed.append((src, str(e)))
        return
    summary.written.append(dst)
    if clipped:
        summary.clipped[dst] = clipped


def _run_group(sx: SpeechX, task: Task, pairs: list[tuple[Path, Path]], opts: JobOptions,
               text: str | None, enrollment: np.ndarray | None, summary: Summary) -> None:
    """Load a group, generate it as one batch, write each output; isolate failures."""
    sr = sx.codec.sample_rate
    loaded = []
    for src, dst in pairs:
        try:
            wav, rate = A.load(src, sr, allow_silence=False)
            loaded.append((src, dst, wav, rate))
        except A.AudioError as e:
            summary.failed.append((src, str(e)))
    if not loaded:
        return
    requests = [PL.Request(task, audio=w, enrollment=enrollment, text=text) for _, _, w, _ in loaded]
    try:
        outs = PL.run(sx, requests, opts.decoding, opts.window)
    except ValueError:
        outs = None  # one of them is bad: run each alone to find it

    for i, (src, dst, _, rate) in enumerate(loaded):
        def job(i=i, dst=dst, rate=rate) -> int:
            y = outs[i] if outs is not None else PL.run(sx, [requests[i]], opts.decoding, opts.window)[0]
            return write_output(dst, y, sr, opts.sample_rate or rate, opts.force)
        _guarded(summary, src, dst, job)
