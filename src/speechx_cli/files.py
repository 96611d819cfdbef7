"""Atomic file writing shared by every writer (audio, checkpoints, training state), and the settings
file that ties a resumable output folder (corpus, prepared corpus, shard set) to how it was made."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and rename it onto `path` in one step.

    On any error the temp file is removed and `path` is untouched. The folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp makes 0600 (and some writers recreate the file): give the usual permissions
        os.chmod(tmp, 0o666 & ~_umask())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def claim_folder(out_dir: Path, settings_name: str, settings: dict, force: bool, refusal: str,
                 clear: Callable[[], None]) -> None:
    """Make `out_dir` a folder made with `settings`: a folder made with others is refused
    (FileExistsError: `refusal`) unless `force`, which `clear`s its old contents first."""
    path = Path(out_dir) / settings_name
    if path.exists() and json.loads(path.read_text()) != settings:
        if not force:
            raise FileExistsError(refusal)
        clear()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(settings, indent=1) + "\n")
