"""The ranks of an LM training run: torchrun's process group, each rank's share of a global batch,
and every rank's RNG state for the checkpoint. One process is a world of one (no process group)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .loop import rng_state


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, bool]:
    """Join the process group torchrun describes (or one the caller made); returns (info, owned)."""
    owned = False
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_cuda else "gloo")
        owned = True
    if not dist.is_initialized():
        return Dist(), owned
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return Dist(dist.get_rank(), dist.get_world_size(), local), owned


def pick_device(device: str, d: Dist) -> torch.device:
    """`device` is auto, cpu or cuda; each rank takes its local GPU."""
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", d.local_rank % max(torch.cuda.device_count(), 1))


def all_sum(x: Tensor, d: Dist) -> Tensor:
    if d.world > 1:
        dist.all_reduce(x)
    return x


def rank_slices(indices: np.ndarray, levels: np.ndarray, d: Dist, accum: int) -> list[tuple]:
    """This rank's micro-batches: batch[rank::world], then every accum-th of those."""
    mine, lv = indices[d.rank::d.world], levels[d.rank::d.world]
    return [(mine[m::accum], lv[m::accum]) for m in range(accum) if len(mine[m::accum])]


def gather_rng(d: Dist) -> list[dict]:
    """Every rank's RNG state, on every rank (rank 0 writes them)."""
    mine = rng_state()
    if d.world == 1:
        return [mine]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, mine)
    return out
