"""What a layout reader yields: one `Item` per recording, and the problems it found on the way.

A reader never opens audio: it lists files and reads transcripts, so listing a 100k-file corpus costs
seconds. Items come in a fixed order (sorted folder walks, metadata file order): the same source
always gives the same items, which is what makes chunks resumable and manifests reproducible.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ... import audio as A
from ...files import atomic_path


@dataclass(frozen=True)
class Item:
    """One recording of the source, before its audio is read."""

    id: str
    speaker: str  # "<layout>:<name>"
    audio: str  # absolute path
    text: str | None = None  # None: no transcript (text-optional tasks only)
    textgrid: str | None = None  # a Montreal Forced Aligner TextGrid of this recording
    split: str | None = None  # "train" / "dev" when the layout says so, else decided at the end
    problem: str | None = None  # why the reader already knows this item is unusable
    text_problem: str | None = None  # why its transcript is unusable (the audio is kept without it)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @staticmethod
    def from_dict(d: dict) -> "Item":
        return Item(**d)


_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.+-]+")


def slug(name: str) -> str:
    """A file-name-safe form of an id or speaker name."""
    return _UNSAFE_RE.sub("-", name).strip("-.") or "x"


def read_transcript(path: Path) -> tuple[str | None, str | None]:
    """(text, problem): a UTF-8 transcript file's text, or why there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, f"no transcript ({path.name} missing)"
    except OSError as e:
        return None, f"transcript unreadable ({e.strerror})"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None, f"transcript {path.name} is not UTF-8"
    text = " ".join(text.split())
    return (text, None) if text else (None, f"transcript {path.name} is empty")


def sorted_walk(root: Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, sorted file names) for root and every folder below it, in sorted order; one folder's
    listing is in memory at a time. Hidden files and folders are skipped."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return
    files = [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
    yield root, files
    for e in entries:
        if not e.name.startswith(".") and e.is_dir(follow_symlinks=False):
            yield from sorted_walk(Path(e.path))


def audio_files(root: Path) -> Iterator[Path]:
    for folder, files in sorted_walk(root):
        for name in files:
            if A.is_audio_path(name):
                yield folder / name


def split_of_parts(parts: tuple[str, ...]) -> str | None:
    """The split a folder name says: LibriSpeech/LibriTTS subsets (dev-clean, test-other, train-...),
    Common Voice style names (dev, test, validation), WHAM! style (tr, cv, tt)."""
    for part in parts:
        name = part.lower()
        if name.startswith(("dev", "test", "valid")) or name in ("cv", "tt", "eval"):
            return "dev"
        if name.startswith("train") or name == "tr":
            return "train"
    return None


def write_lines(path: Path, rows: Iterable[dict]) -> int:
    """Write JSON lines atomically (streamed); returns how many."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            n += 1
    return n


def read_lines(path: Path) -> Iterator[dict]:
    """JSON lines, streamed."""
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
