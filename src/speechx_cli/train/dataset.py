"""Encoded training examples and the datasets that hold them: in memory (`ExampleSet`) or in a prepared
shard set (`ShardSet`). `pack` lays a shard's examples out as flat tensors and `ShardSet.__getitem__`
reads them back, side by side; shards.py makes shard sets (simulate -> encode -> pack -> write).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from .. import prompts as P
from ..prompts import Prompt, Task

FORMAT = "speechx-shards"
FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SEGMENTS = ("target", "source", "enrollment", "middle")  # code segments an example may own
TASKS: tuple[Task, ...] = tuple(Task)
TASK_ID = {t: i for i, t in enumerate(TASKS)}


@dataclass(frozen=True)
class EncodedExample:
    """One training example in codes (all code tensors are (frames, K) long)."""

    task: Task
    text: Tensor  # (L,) phoneme ids; empty = no transcript
    target: Tensor  # (T, K) what the model must output
    source: Tensor | None = None  # ns/sr/tse: C(mixture)
    enrollment: Tensor | None = None  # tts, tse
    middle: Tensor | None = None  # edit_noisy: C(original noisy middle)
    pre_frames: int = 0  # edits: target[:pre_frames] is C(pre)
    post_start: int = 0  # edits: target[post_start:] is C(post)

    def prompt(self, codebook_size: int) -> Prompt:
        text = self.text if len(self.text) else None
        if self.task == Task.TTS:
            return P.tts(self.text, self.enrollment, codebook_size)
        if self.task == Task.NS:
            return P.ns(self.source, codebook_size, text=text)
        if self.task == Task.SR:
            return P.sr(self.source, codebook_size, text=text)
        if self.task == Task.TSE:
            return P.tse(self.enrollment, self.source, codebook_size, text=text)
        pre, post = self.target[: self.pre_frames], self.target[self.post_start:]
        return P.edit(self.text, pre, post, codebook_size, middle=self.middle)

    def cond_length(self, codebook_size: int) -> int:
        return len(self.prompt(codebook_size).tokens)


# ---- datasets -----------------------------------------------------------------------------------

class ExampleSet:
    """In-memory dataset of EncodedExamples (same interface as ShardSet)."""

    def __init__(self, examples: list[EncodedExample], codebook_size: int,
                 codec_config: dict | None = None, codec_fingerprint: str | None = None):
        self.examples = list(examples)
        if not self.examples:
            raise ValueError("no examples")
        self.codec_config, self.codec_fingerprint = codec_config, codec_fingerprint
        self.codebook_size, self.n_codebooks = codebook_size, self.examples[0].target.shape[1]
        self.target_lengths = np.array([len(e.target) for e in self.examples], dtype=np.int64)
        cond = np.array([e.cond_length(codebook_size) for e in self.examples], dtype=np.int64)
        self.lengths = cond + self.target_lengths  # condition + output positions
        self.tasks = np.array([TASK_ID[e.task] for e in self.examples], dtype=np.int64)
        self.text_lengths = np.array([len(e.text) for e in self.examples], dtype=np.int64)  # phonemes; 0 = none

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> EncodedExample:
        return self.examples[i]


class ShardSet:
    """A prepared shard set, held in memory as flat tensors (int16 codes: ~2 bytes x K per frame)."""

    def __init__(self, root: str | Path, expect_codec: dict | None = None):
        self.root = Path(root)
        index = read_index(self.root)
        self.codec_config, self.codec_fingerprint = index["codec"], index["codec_fingerprint"]
        self.codebook_size, self.n_codebooks = index["codebook_size"], index["n_codebooks"]
        if expect_codec is not None and expect_codec != self.codec_config:
            keys = sorted(k for k in set(expect_codec) | set(self.codec_config)
                          if expect_codec.get(k) != self.codec_config.get(k))
            raise ValueError(f"{self.root}: shards were encoded with another codec (differs in {', '.join(keys)})")
        self.shards = [load_file(str(self.root / s["file"])) for s in index["shards"]]
        counts = [len(s["task"]) for s in self.shards]
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.tasks = np.concatenate([s["task"].numpy() for s in self.shards]).astype(np.int64)
        self.target_lengths = np.concatenate([s["segments"][:, 0, 1].numpy() for s in self.shards])
        cond = np.concatenate([s["cond_len"].numpy() for s in self.shards])
        self.lengths = (cond + self.target_lengths).astype(np.int64)
        self.text_lengths = np.concatenate([np.diff(s["text_offsets"].numpy()) for s in self.shards]).astype(np.int64)
        self.index = index

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> EncodedExample:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        shard, j = self.shards[s], i - int(self.offsets[s])
        codes = shard["codes"]

        def segment(k: int) -> Tensor | None:
            start, length = (int(v) for v in shard["segments"][j, k])
            return None if length < 0 else codes[start: start + length].long()

        a, b = int(shard["text_offsets"][j]), int(shard["text_offsets"][j + 1])
        pre, post = (int(v) for v in shard["edit"][j])
        return EncodedExample(TASKS[int(shard["task"][j])], shard["text"][a:b].long(),
                              *(segment(k) for k in range(len(SEGMENTS))), pre, post)


def read_index(root: Path) -> dict:
    path = Path(root) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no {INDEX_NAME} (not a prepared shard set)")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise ValueError(f"{root}: not a version {FORMAT_VERSION} {FORMAT} set")
    return index


# ---- shard files ----------------------------------------------------------------------------------

def pack(examples: list[EncodedExample], stream_index: list[int], codebook_size: int) -> dict[str, Tensor]:
    """Flat tensors of one shard; segments are (start, length) rows into `codes`, length -1 = absent."""
    dtype = torch.int16 if codebook_size <= 2 ** 15 else torch.int32
    pieces, segments, cursor = [], [], 0
    for ex in examples:
        rows = []
        for name in SEGMENTS:
            seg = getattr(ex, name)
            if seg is None:
                rows.append((0, -1))
                continue
            rows.append((cursor, len(seg)))
            pieces.append(seg.to(dtype))
            cursor += len(seg)
        segments.append(rows)
    k = examples[0].target.shape[1]
    texts = [ex.text.to(torch.int16) for ex in examples]
    return {
        "codes": torch.cat(pieces) if pieces else torch.zeros(0, k, dtype=dtype),
        "segments": torch.tensor(segments, dtype=torch.int64),  # (E, 4, 2)
        "edit": torch.tensor([(ex.pre_frames, ex.post_start) for ex in examples], dtype=torch.int64),
        "task": torch.tensor([TASK_ID[ex.task] for ex in examples], dtype=torch.int64),
        "text": torch.cat(texts) if texts else torch.zeros(0, dtype=torch.int16),
        "text_offsets": torch.tensor([0, *np.cumsum([len(t) for t in texts])], dtype=torch.int64),
        "cond_len": torch.tensor([ex.cond_length(codebook_size) for ex in examples], dtype=torch.int64),
        "index": torch.tensor(stream_index, dtype=torch.int64),
    }
