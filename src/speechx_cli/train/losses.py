"""Teacher-forced training objectives of the AR and NAR models over a collated batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..model import ARModel, NARModel
from ..prompts import IGNORE_INDEX, Batch, eos_class


def ar_loss(model: ARModel, batch: Batch, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over valid output positions (mean, or sum for token-weighted averaging
    across micro-batches and ranks), and the number of positions."""
    inputs, labels, valid = _ar_tensors(model, batch)
    logits = model(batch.tokens, batch.types, batch.positions, inputs, valid)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)
    return loss, valid.sum()


def _ar_tensors(model: ARModel, batch: Batch):
    codes, lengths = batch.targets[..., 0], batch.target_lengths  # (B, T), (B,)
    b, t = codes.shape
    v = model.cfg.codebook_size
    bos = torch.full((b, 1), ARModel.bos(v), dtype=torch.long, device=codes.device)
    frame = torch.arange(t + 1, device=codes.device)[None, :]
    valid = frame <= lengths[:, None]  # (B, T+1): <bos> + T_b frames
    inputs = torch.cat([bos, codes], 1).masked_fill(~valid, 0)
    labels = torch.cat([codes, torch.zeros_like(bos)], 1).scatter(1, lengths[:, None], eos_class(v))
    return inputs, labels.masked_fill(~valid, IGNORE_INDEX), valid


def nar_loss(model: NARModel, batch: Batch, generator: torch.Generator | None = None,
             level: torch.Tensor | None = None, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of one codebook 2..K per row (0-based `level` in 1..K-1, random if not given),
    given the codebooks below it; mean or sum over valid frames, and the number of frames."""
    codes, lengths = batch.targets, batch.target_lengths  # (B, T, K), (B,)
    b, t, k = codes.shape
    if level is None:
        level = torch.randint(1, k, (b,), generator=generator)
    level = level.to(codes.device)
    valid = torch.arange(t, device=codes.device)[None, :] < lengths[:, None]
    logits = model(batch.tokens, batch.types, batch.positions, codes, valid, level)
    labels = codes.gather(2, level[:, None, None].expand(b, t, 1)).squeeze(2)
    labels = labels.masked_fill(~valid, IGNORE_INDEX)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX,
                           reduction=reduction)
    return loss, valid.sum()
