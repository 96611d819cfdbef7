"""The codec trainer's file lists (codec_train --data / --dev take .txt lists) from a corpus folder:
training speech and training noises (the codec must code mixtures and noise too), and a few random
dev utterances."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...files import atomic_path
from .items import read_lines

DEV_FILES = 12


def write_codec_lists(corpus_dir: Path, train_list: Path, dev_list: Path, seed: int = 0,
                      n_dev: int = DEV_FILES) -> tuple[Path, Path]:
    """Write both lists (absolute paths, one per line); the training list is streamed."""
    corpus_dir = Path(corpus_dir)
    dev: list[str] = []
    with atomic_path(train_list) as tmp, open(tmp, "w") as f:
        for rec in read_lines(corpus_dir / "manifest.jsonl"):
            if rec["split"] == "train":
                f.write(f"{corpus_dir / rec['path']}\n")
            else:
                dev.append(str(corpus_dir / rec["path"]))
        if (corpus_dir / "noise.jsonl").is_file():
            for rec in read_lines(corpus_dir / "noise.jsonl"):
                if rec["split"] == "train":
                    f.write(f"{corpus_dir / rec['path']}\n")
    rng = np.random.default_rng(seed)
    picked = [dev[i] for i in rng.permutation(len(dev))[:n_dev]]
    with atomic_path(dev_list) as tmp:
        tmp.write_text("".join(p + "\n" for p in picked))
    return train_list, dev_list
