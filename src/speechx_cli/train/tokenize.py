"""Tokenizing on one process or many: the shard set of shards.py, with its shards shared out over
torchrun's ranks (NCCL on GPUs, gloo on CPU; one process is a world of one).

    speechx train tokenize data/corpus data/shards --codec-checkpoint runs/codec/codec_train.pt
    torchrun --nproc_per_node=8 -m speechx_cli train tokenize data/corpus data/shards --codec-checkpoint C

Shard s goes to rank s % world. Every shard is simulated from its own stream positions in the same
chunks whichever rank makes it, so 2 processes write the very files 1 process writes. Rank 0 opens
the set first (refusing another set's shards, linking --reuse), the others wait at a barrier; each rank
then leaves a marker with its rate when its shards are written, and rank 0, once every marker is
there, merges the shards into index.json (waiting on files, not on a collective: ranks may finish
hours apart, past a process group's timeout).
"""

from __future__ import annotations

import ctypes
import json
import time
from pathlib import Path
from typing import Callable

import torch.distributed as dist

from ..checkpoint import load_codec
from .distributed import init_distributed, pick_device
from .shards import (SETTINGS_NAME, ShardOptions, encode_shards, missing_shards, open_shard_set, plan_shards,
                     summarize_rate, write_index)

MARKER = ".rank-{rank}-of-{world}.done"
POLL_SECONDS = 2.0
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024


def _codec_batches_in_own_mappings() -> None:
    """Every allocation from 128 KiB up gets its own mapping, handed back whole when freed. In glibc's
    heap the codec's ~100 MB batch buffers fragmented it, and the peak memory grew with the corpus
    (tokenize on 40 and 400 utterances: 1.3 and 2.4 GB; with this 1.3 and 1.6 GB, for ~5% more CPU)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    except (OSError, AttributeError):  # not glibc: its own allocator's behaviour
        pass


def _markers(out_dir: Path, world: int) -> list[Path]:
    return [out_dir / MARKER.format(rank=r, world=world) for r in range(world)]


def tokenize(corpus_dir: Path, out_dir: Path, codec, opts: ShardOptions = ShardOptions(), *, device: str = "auto",
             force: bool = False, reuse: Path | None = None, on_progress: Callable[[dict], None] | None = None,
             encode_text=None, simulation=None, on_plan: Callable[[int], None] | None = None) -> dict | None:
    """Write this rank's share of the shards; rank 0 returns the summary with the merged index (the
    other ranks None). codec: a codec, or a name or file for checkpoint.load_codec (on this rank's
    device). on_plan(n): the examples of the whole set, before any is encoded."""
    _codec_batches_in_own_mappings()
    d, owned = init_distributed(device)
    try:
        if isinstance(codec, (str, Path)):
            codec = load_codec(codec, pick_device(device, d))
        out_dir = Path(out_dir)
        plan = plan_shards(corpus_dir, codec, opts, simulation)
        reused = 0
        if d.main:
            reused = open_shard_set(out_dir, plan, force=force, reuse=reuse)
            for stale in out_dir.glob(".rank-*.done"):
                stale.unlink()
        if d.world > 1:
            dist.barrier()
        if json.loads((out_dir / SETTINGS_NAME).read_text()) != plan.settings:
            raise ValueError(f"rank {d.rank} plans another stream than rank 0 (different corpus or codec?)")
        if on_plan and d.main:
            on_plan(plan.n)
            if on_progress and reused:
                on_progress({"examples": 0, "audio_seconds": 0.0, "done": reused, "wall_seconds": 0.0})
        todo = missing_shards(out_dir, plan, opts.examples_per_shard, (d.rank, d.world))
        rate = encode_shards(out_dir, plan, codec, opts, todo, on_progress=on_progress if d.main else None,
                             encode_text=encode_text)
        if d.world == 1:
            return summarize_rate(rate, reused, write_index(out_dir))
        _markers(out_dir, d.world)[d.rank].write_text(json.dumps(rate))
        if not d.main:
            return None
        return summarize_rate(_gather_rates(out_dir, d.world), reused, _merge(out_dir, d.world))
    finally:
        if owned:
            dist.destroy_process_group()


def _gather_rates(out_dir: Path, world: int) -> dict:
    markers = _markers(out_dir, world)
    while not all(m.exists() for m in markers):
        time.sleep(POLL_SECONDS)
    rates = [json.loads(m.read_text()) for m in markers]
    total = {k: sum(r[k] for r in rates) for k in ("examples", "audio_seconds", "encode_seconds", "skipped")}
    return total | {"wall_seconds": max(r["wall_seconds"] for r in rates)}


def _merge(out_dir: Path, world: int) -> dict:
    index = write_index(out_dir)
    for marker in _markers(out_dir, world):
        marker.unlink()
    return index
