"""A whole source -> OUT/manifest.jsonl, resumable and bounded in memory.

1. list: the layout reader's items go to OUT/items.jsonl, one line each (duplicate ids become
   problems here: the first recording of an id is kept);
2. process: the list is cut into chunks of `chunk` recordings; each chunk's records and problems go to
   OUT/parts/NNNNN.jsonl, written whole or not at all, headed by a hash of the chunk's items and
   settings, so a rerun skips every chunk whose part is already there and the number of worker
   processes never changes the result;
3. merge: the parts are read twice, line by line: once for the speakers (which are held out for dev),
   once to write manifest.jsonl (the format train/corpus.py writes and simulate.py reads),
   report.jsonl (every problem) and summary.json.
Nothing holds the whole corpus: the speakers' counts and the ids seen are the only corpus-sized state.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import time
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ...files import atomic_path, claim_folder
from . import layouts
from .items import Item, read_lines, write_lines
from .process import SKIPPED, PrepareOptions, process_item

FORMAT = "speechx-prepared"
FORMAT_VERSION = 1
SETTINGS_NAME = "prepare.json"


def _hash_fraction(name: str) -> float:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 2 ** 32


# ---- 1. list ------------------------------------------------------------------------------------

def list_items(items: Iterable[Item]) -> Iterator[Item]:
    """The items with every repeated id turned into a problem."""
    seen: set[str] = set()
    for item in items:
        if item.problem is None and item.id in seen:
            item = Item(item.id, item.speaker, item.audio, problem="duplicate id (the first recording is kept)")
        seen.add(item.id)
        yield item


# ---- 2. process ---------------------------------------------------------------------------------

def _chunk_hash(lines: list[str], settings: dict) -> str:
    h = hashlib.sha1(json.dumps(settings, sort_keys=True).encode())
    for line in lines:
        h.update(line.encode())
    return h.hexdigest()[:16]


def _part_is_done(path: Path, digest: str) -> bool:
    if not path.is_file():
        return False
    with open(path) as f:
        return json.loads(f.readline() or "{}").get("hash") == digest


def _speech_item(item: Item, out_dir: Path, settings: dict) -> tuple[list[dict], list[dict]]:
    return process_item(item, out_dir, PrepareOptions(**settings))


Processor = Callable[[Item, Path, dict], tuple[list[dict], list[dict]]]  # item, OUT, settings -> (rows, problems)


def process_chunk(job: tuple[Processor, str, str, list[str], dict, str]) -> dict:
    """Process one chunk's items and write its part; returns its statistics."""
    process, out_dir, part, lines, settings, digest = job
    rows, stats = [], Counter()
    for line in lines:
        records, problems = process(Item.from_dict(json.loads(line)), Path(out_dir), settings)
        rows += [{"r": r} for r in records] + [{"p": p} for p in problems]
        stats["items"] += 1
        stats["seconds"] += sum(r["duration"] for r in records)
    write_lines(Path(part), [{"hash": digest, "stats": dict(stats)}, *rows])
    return dict(stats)


def _chunks(items_path: Path, size: int) -> Iterator[list[str]]:
    with open(items_path) as f:
        while True:
            lines = [line.rstrip("\n") for line in islice(f, size)]
            if not lines:
                return
            yield lines


def process_all(process: Processor, out_dir: Path, items: Path, parts: Path, chunk: int, settings: dict, workers: int,
                on_chunk: Callable[[dict], None] | None = None) -> int:
    """Process every chunk of the `items` list without a finished part in `parts`; returns the number
    of chunks (stale parts of a longer earlier list are removed)."""
    parts.mkdir(parents=True, exist_ok=True)
    jobs = ((process, str(out_dir), str(parts / f"{k:05d}.jsonl"), lines, settings, _chunk_hash(lines, settings))
            for k, lines in enumerate(_chunks(items, chunk)))
    n, report = 0, on_chunk or (lambda stats: None)

    def todo() -> Iterator[tuple]:
        nonlocal n
        for job in jobs:
            n += 1
            if _part_is_done(Path(job[2]), job[5]):
                with open(job[2]) as f:
                    report(dict(json.loads(f.readline())["stats"], skipped=True))
            else:
                yield job

    if workers <= 1:
        for job in todo():
            report(process_chunk(job))
    else:
        _in_pool(todo(), workers, report)
    for stale in sorted(parts.glob("*.jsonl"))[n:]:
        stale.unlink()
    return n


def _in_pool(jobs: Iterator[tuple], workers: int, report: Callable[[dict], None]) -> None:
    with multiprocessing.get_context("fork").Pool(workers, maxtasksperchild=32) as pool:
        pending = []  # at most 2 chunks per worker in flight: the item list is never all in memory
        for job in jobs:
            pending.append(pool.apply_async(process_chunk, (job,)))
            while len(pending) >= 2 * workers:
                report(pending.pop(0).get())
        for result in pending:
            report(result.get())


# ---- 3. merge -----------------------------------------------------------------------------------

def part_rows(parts: Path, n_chunks: int) -> Iterator[dict]:
    """Every row of the parts, in order: {"r": record} or {"p": problem}."""
    for k in range(n_chunks):
        rows = read_lines(parts / f"{k:05d}.jsonl")
        next(rows)  # the header
        yield from rows


def dev_rule(speakers: dict[str, Counter], dev_fraction: float) -> Callable[[dict], str]:
    """record -> "train" | "dev": the layout's own split when it names dev speakers (and leaves some
    for training); else the dev_fraction of speakers whose names hash lowest (at least one, and never
    fewer than two training speakers); with one or two speakers, a dev_fraction of utterances."""
    dev_hinted = {s for s, c in speakers.items() if c["dev"]}
    if dev_hinted and len(dev_hinted) < len(speakers):
        return lambda r: "dev" if r["speaker"] in dev_hinted else "train"
    if dev_fraction <= 0:
        return lambda r: "train"
    if len(speakers) >= 3:
        k = min(max(1, round(dev_fraction * len(speakers))), len(speakers) - 2)
        dev = set(sorted(speakers, key=_hash_fraction)[:k])
        return lambda r: "dev" if r["speaker"] in dev else "train"
    lowest = min(c["lowest"] for c in speakers.values())
    return lambda r: "dev" if _hash_fraction(r["id"]) < dev_fraction or _hash_fraction(r["id"]) == lowest \
        else "train"


def merge(out_dir: Path, n_chunks: int, opts: PrepareOptions) -> dict:
    """Write manifest.jsonl, report.jsonl and summary.json from the parts; returns the summary."""
    speakers: dict[str, Counter] = {}
    for row in part_rows(out_dir / "parts", n_chunks):
        if "r" in row:
            r = row["r"]
            c = speakers.setdefault(r["speaker"], Counter(lowest=1.0))
            c["dev"] += r["split"] == "dev"
            c["lowest"] = min(c["lowest"], _hash_fraction(r["id"]))
    split_of = dev_rule(speakers, opts.dev_fraction)
    totals, problems, actions = Counter(), Counter(), Counter()
    split_speakers: dict[str, set] = {"train": set(), "dev": set()}

    def records() -> Iterator[dict]:
        for row in part_rows(out_dir / "parts", n_chunks):
            if "r" in row:
                r = dict(row["r"], split=split_of(row["r"]))
                split_speakers[r["split"]].add(r["speaker"])
                totals["utterances"] += 1
                totals["seconds"] += r["duration"]
                totals["transcribed_seconds"] += r["duration"] if r["text"] else 0.0
                totals["untranscribed"] += not r["text"]
                totals["cut"] += "offset" in r
                totals[f"timing_{r['timing']}"] += 1
                yield r

    def report() -> Iterator[dict]:
        for row in part_rows(out_dir / "parts", n_chunks):
            if "p" in row:
                problems[row["p"]["problem"].split(" (")[0].split(":")[0]] += 1
                actions[row["p"]["action"]] += 1
                yield row["p"]

    write_lines(out_dir / "manifest.jsonl", records())
    write_lines(out_dir / "report.jsonl", report())
    summary = {
        "utterances": totals["utterances"], "hours": totals["seconds"] / 3600,
        "transcribed_hours": totals["transcribed_seconds"] / 3600, "untranscribed": totals["untranscribed"],
        "pieces_of_long_recordings": totals["cut"], "speakers": {k: len(v) for k, v in split_speakers.items()},
        "timings": {k.removeprefix("timing_"): v for k, v in totals.items() if k.startswith("timing_")},
        "problems": sum(actions.values()), "skipped": actions[SKIPPED], "by_action": dict(actions),
        "by_problem": dict(problems)}
    with atomic_path(out_dir / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


# ---- the whole run ------------------------------------------------------------------------------

def check_settings(out_dir: Path, settings: dict, force: bool) -> None:
    claim_folder(out_dir, SETTINGS_NAME, settings, force,
                 f"{out_dir} holds a corpus prepared from another source or with other settings; "
                 f"use --force to replace it",
                 lambda: [shutil.rmtree(out_dir / stale, ignore_errors=True) for stale in ("parts", "audio")])


def prepare(src: Path, out_dir: Path, opts: PrepareOptions = PrepareOptions(), *, workers: int = 1,
            force: bool = False, on_listed: Callable[[int], None] | None = None,
            on_chunk: Callable[[dict], None] | None = None) -> dict:
    """List, process and merge `src` into `out_dir`; returns the summary (with the layout)."""
    opts.validate()
    src, out_dir = Path(src).resolve(), Path(out_dir)
    layout = layouts.detect(src) if opts.layout == "auto" else opts.layout
    layouts.check(src, layout)
    settings = {"format": FORMAT, "version": FORMAT_VERSION, "source": str(src),
                **opts.settings(), "layout": layout}
    check_settings(out_dir, settings, force)
    started = time.perf_counter()
    textgrids = Path(opts.textgrids) if opts.textgrids else None
    n_items = write_lines(out_dir / "items.jsonl",
                          (item.to_dict() for item in list_items(layouts.read(src, layout, textgrids))))
    if on_listed:
        on_listed(n_items)
    process_settings = {k: v for k, v in settings.items() if k in PrepareOptions.__dataclass_fields__}
    n_chunks = process_all(_speech_item, out_dir, out_dir / "items.jsonl", out_dir / "parts", opts.chunk,
                           process_settings, workers, on_chunk)
    summary = merge(out_dir, n_chunks, opts)
    summary |= {"layout": layout, "source": str(src), "recordings": n_items,
                "wall_seconds": time.perf_counter() - started}
    return summary
