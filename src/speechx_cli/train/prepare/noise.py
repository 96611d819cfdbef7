"""Any folder of audio -> rows of the noise bank (noise.jsonl, schema: train/noisebank.py).

    speechx train noise /data/musan/noise data/corpus          # MUSAN, DNS, WHAM!, your own
    speechx train noise /data/rirs data/corpus --kind room     # measured room impulse responses
    speechx train noise builtin data/corpus                    # the project's own (noisebank.py)

Each source keeps its rows in OUT/noise-sources/<name>.jsonl, so sources add up: noise.jsonl is
rebuilt from all of them after each run. A noise file the sound library reads and that is at most
MAX_REFERENCED_SECONDS long is used where it lies; a longer one is cut into PIECE_SECONDS pieces
(FLAC, under OUT/noise/<name>/), so the simulator never decodes minutes of audio for a 10 s example.
Rooms are made usable as train/rooms.py expects (direct path first, tail cut, unit energy). The split
follows folder names (dev*, test*, cv, tt: dev), else a hash of the file name (noisebank's 20%).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ... import audio as A
from .. import noisebank, rooms
from ..simulate import CORPUS_SAMPLE_RATE
from .items import Item, audio_files, read_lines, slug, split_of_parts, write_lines
from .process import problem
from .run import list_items, part_rows, process_all

MAX_REFERENCED_SECONDS = 60.0
PIECE_SECONDS = 30.0
MIN_NOISE_SECONDS = noisebank.MIN_FILE_SECONDS
SOURCES = "noise-sources"
BUILTIN = "builtin"


def noise_items(src: Path) -> Iterator[Item]:
    """One Item per audio file of `src`, streamed in sorted order."""
    for path in audio_files(src):
        rel = path.relative_to(src)
        yield Item(str(rel.with_suffix("")), f"noise:{src.name}", str(path),
                   split=split_of_parts(rel.parts[:-1]) or noisebank.file_split(str(rel)))


def noise_item(item: Item, out_dir: Path, settings: dict) -> tuple[list[dict], list[dict]]:
    """(noise rows, problems) of one file."""
    name, kind = settings["name"], settings["kind"]
    base = {"kind": "room" if kind == "room" else "file", "split": item.split, "source": item.audio,
            "licence": settings["licence"]}
    try:
        if kind == "room":
            x, _ = A.load(item.audio, CORPUS_SAMPLE_RATE)
            h = rooms.prepare_response(x, CORPUS_SAMPLE_RATE)
            rel = f"noise/{slug(name)}/{slug(item.id)}.wav"
            A.save(out_dir / rel, h.astype(np.float32), CORPUS_SAMPLE_RATE, force=True)
            return [{"id": f"{name}-{slug(item.id)}", "path": rel, "duration": round(len(h) / CORPUS_SAMPLE_RATE, 4),
                     **base}], []
        try:
            header = A.info(item.audio)
            sr, native = header.sample_rate, True
        except A.AudioError:
            if not Path(item.audio).is_file() or Path(item.audio).stat().st_size == 0:
                raise
            sr, native = CORPUS_SAMPLE_RATE, False
        x, _ = A.load(item.audio, sr, max_seconds=settings["max_hours"] * 3600)
    except (A.AudioError, OSError, RuntimeError, ValueError) as e:
        return [], [problem(item, str(e).removeprefix(f"{item.audio}: "))]
    if len(x) < MIN_NOISE_SECONDS * sr:
        return [], [problem(item, f"absurd duration: {len(x) / sr:.3f} s")]
    if float(np.max(np.abs(x))) < A.SILENCE_PEAK:
        return [], [problem(item, "silent")]
    if native and len(x) <= MAX_REFERENCED_SECONDS * sr:
        return [{"id": f"{name}-{slug(item.id)}", "path": item.audio, "duration": round(len(x) / sr, 4), **base}], []
    rows, step = [], int(PIECE_SECONDS * sr)
    for k, start in enumerate(range(0, len(x), step)):
        piece = x[start:start + step]
        if len(piece) < MIN_NOISE_SECONDS * sr or float(np.max(np.abs(piece))) < A.SILENCE_PEAK:
            continue
        rel = f"noise/{slug(name)}/{slug(item.id)}-{k:04d}.flac"
        A.save(out_dir / rel, piece, sr, force=True)
        rows.append({"id": f"{name}-{slug(item.id)}-{k:04d}", "path": rel, "duration": round(len(piece) / sr, 4),
                     **base})
    return rows, []


def import_noise(src: Path, out_dir: Path, kind: str = "noise", licence: str = "unknown (see the source)", *,
                 workers: int = 1, chunk: int = 200, max_hours: float = 4.0, seed: int = 0,
                 on_listed: Callable[[int], None] | None = None,
                 on_chunk: Callable[[dict], None] | None = None) -> dict:
    """Add one source (a folder, or BUILTIN) to OUT's noise bank; returns its counts and problems.
    Resumable: the files are listed, then processed in chunks like `prepare`'s."""
    if kind not in ("noise", "room"):
        raise ValueError(f"kind must be noise or room, got {kind!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = source_name(src)
    rows, problems = [], []
    if name == BUILTIN:
        rows = noisebank_rows(out_dir, seed)
    else:
        src = Path(src).resolve()
        if not src.is_dir():
            raise ValueError(f"{src} is not a folder of audio")
        work = out_dir / "noise-work" / name
        work.mkdir(parents=True, exist_ok=True)
        n_items = write_lines(work / "items.jsonl", (item.to_dict() for item in list_items(noise_items(src))))
        if on_listed:
            on_listed(n_items)
        settings = {"name": name, "kind": kind, "licence": licence, "max_hours": max_hours, "source": str(src)}
        n = process_all(noise_item, out_dir, work / "items.jsonl", work / "parts", chunk, settings, workers, on_chunk)
        for row in part_rows(work / "parts", n):
            (rows if "r" in row else problems).append(row.get("r") or row["p"])
    write_lines(out_dir / SOURCES / f"{name}.jsonl", rows)
    write_lines(out_dir / SOURCES / f"{name}.report.jsonl", problems)
    rebuild_bank(out_dir)
    return {"source": name, "noises": len(rows), "hours": sum(r["duration"] for r in rows) / 3600,
            "dev": sum(r["split"] == "dev" for r in rows), "rooms": sum(r["kind"] == "room" for r in rows),
            "problems": problems}


def noisebank_rows(out_dir: Path, seed: int = 0) -> list[dict]:
    """The project's own bank (procedural noise, babble from OUT's speech, Debian sound files, piper's
    rooms), written under OUT/noise/ by noisebank.py."""
    manifest = out_dir / "manifest.jsonl"
    speech = [{"speaker": r["speaker"], "split": r["split"], "path": r["path"]}
              for r in (read_lines(manifest) if manifest.is_file() else [])]
    return noisebank.build_noise_bank(out_dir, speech, seed=seed)


def rebuild_bank(out_dir: Path) -> list[str]:
    """noise.jsonl from every source's rows (a bank written before sources existed is kept as one);
    returns the sources' names."""
    sources = out_dir / SOURCES
    sources.mkdir(parents=True, exist_ok=True)
    bank = out_dir / "noise.jsonl"
    if bank.is_file() and not any(sources.glob("*.jsonl")):
        write_lines(sources / "corpus.jsonl", read_lines(bank))
    names = sorted(p.stem for p in sources.glob("*.jsonl") if not p.stem.endswith(".report"))
    write_lines(bank, (row for name in names for row in read_lines(sources / f"{name}.jsonl")))
    return names


def source_name(src: Path | str) -> str:
    return BUILTIN if str(src) == BUILTIN else slug(Path(src).resolve().name)
