"""Residual vector quantization with factorized codes (after DAC, Kumar et al. 2023).

Each level projects its residual down to a few dimensions (e.g. 8), L2-normalizes it and the codebook,
and picks the nearest entry by cosine; the entry is projected back up and subtracted from the residual.
The low-dimensional normalized lookup is what keeps codebooks in use (DAC's answer to dead codes); on
top of it, entries that go unused for a while are re-initialised from the batch's own encodings.
Gradients pass the lookup straight through; the codebook and commitment losses pull the entries and
the encoder together. Quantizer dropout trains each item with a random number of levels, so the first
n levels of one model form a codec at n/K of the bitrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def wn_conv1d(*args, **kwargs) -> nn.Conv1d:
    """A weight-normed Conv1d (direction and gain trained apart, as in DAC and HiFi-GAN)."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, F), straight-through: gradients reach the encoder
    codes: Tensor  # (B, K, F) long; levels an item did not use (dropout) still hold their nearest code
    commitment: Tensor  # scalar, pulls the encoder toward its codes
    codebook: Tensor  # scalar, pulls the used codes toward the encoder
    levels: Tensor  # (B,) how many levels each item used


class FactorizedCodebook(nn.Module):
    """One level: `dim` -> `codebook_dim` projection, cosine lookup in `size` entries, projection back."""

    def __init__(self, dim: int, size: int, codebook_dim: int):
        super().__init__()
        self.size = size
        self.in_proj = wn_conv1d(dim, codebook_dim, 1)
        self.out_proj = wn_conv1d(codebook_dim, dim, 1)
        self.codebook = nn.Embedding(size, codebook_dim)
        # EMA of how many frames picked each entry per batch: a dead entry is revived from the batch
        self.register_buffer("usage", torch.zeros(size))
        # whether a training batch has seeded the codebook with its own encodings (a data-dependent start,
        # as EnCodec's k-means: random entries would leave most codes unused while the encoder settles)
        self.register_buffer("seeded", torch.zeros((), dtype=torch.bool))

    def nearest(self, z_e: Tensor) -> Tensor:
        """(B, d, F) projected encodings -> (B, F) indices of the nearest entries by cosine."""
        flat = F.normalize(z_e.transpose(1, 2).reshape(-1, z_e.shape[1]), dim=-1)  # (B*F, d)
        sims = flat @ F.normalize(self.codebook.weight, dim=-1).t()  # (B*F, size)
        return sims.argmax(dim=-1).view(z_e.shape[0], z_e.shape[2])

    def lookup(self, codes: Tensor) -> Tensor:
        """(B, F) indices -> (B, d, F) entries (un-normalized, as the losses compare them)."""
        return self.codebook(codes).transpose(1, 2)

    def decode(self, codes: Tensor) -> Tensor:
        """(B, F) -> (B, D, F)."""
        return self.out_proj(self.lookup(codes))

    def encode(self, residual: Tensor) -> Tensor:
        """(B, D, F) -> (B, F)."""
        return self.nearest(self.in_proj(residual))

    def forward(self, residual: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Training pass: quantized (B, D, F) with straight-through gradients, codes (B, F), the
        projected encodings (B, d, F) and the per-item commitment and codebook losses (B,)."""
        z_e = self.in_proj(residual)  # (B, d, F)
        codes = self.nearest(z_e)
        z_q = self.lookup(codes)
        commitment = F.mse_loss(z_e, z_q.detach(), reduction="none").mean((1, 2))
        codebook = F.mse_loss(z_q, z_e.detach(), reduction="none").mean((1, 2))
        z_q = z_e + (z_q - z_e).detach()
        return self.out_proj(z_q), codes, z_e, commitment, codebook

    @torch.no_grad()
    def revive(self, z_e: Tensor, codes: Tensor, used: Tensor, decay: float, threshold: float) -> int:
        """Update the usage EMA with this batch's `codes` (only frames in `used`, (B, F) bool) and
        re-initialise entries whose usage fell below `threshold` x the mean usage from random encodings
        of the batch (on the first batch, every entry); the number re-initialised. Draws from the global RNG, so a resumed
        run revives the same entries."""
        pool = z_e.transpose(1, 2)[used]  # (N, d)
        if len(pool) == 0:
            return 0
        if not self.seeded:  # the first batch: every entry from its encodings, each given average use
            self.codebook.weight.data.copy_(pool[torch.randint(len(pool), (self.size,), device=pool.device)])
            self.usage.fill_(len(pool) / self.size)
            self.seeded.fill_(True)
            return self.size
        counts = torch.bincount(codes[used], minlength=self.size).to(self.usage)
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)
        dead = self.usage < threshold * self.usage.mean()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        picks = pool[torch.randint(len(pool), (n_dead,), device=pool.device)]
        self.codebook.weight.data[dead] = picks
        self.usage[dead] = self.usage.mean()  # a fair chance before it can be judged dead again
        return n_dead


class ResidualFactorizedVQ(nn.Module):
    """K factorized levels over the residual; quantizer dropout and dead-code revival in training."""

    def __init__(self, dim: int, n_codebooks: int, codebook_size: int, codebook_dim: int,
                 dropout: float = 0.0, usage_decay: float = 0.99, dead_threshold: float = 0.0):
        super().__init__()
        self.levels = nn.ModuleList(FactorizedCodebook(dim, codebook_size, codebook_dim)
                                    for _ in range(n_codebooks))
        self.dropout, self.usage_decay, self.dead_threshold = dropout, usage_decay, dead_threshold
        self.frozen = False  # a frozen quantizer revives nothing (its tokens must not change)

    @property
    def n_codebooks(self) -> int:
        return len(self.levels)

    def encode(self, z: Tensor) -> Tensor:
        """(B, D, F) -> (B, K, F) long."""
        codes, residual = [], z
        for level in self.levels:
            c = level.encode(residual)
            residual = residual - level.decode(c)
            codes.append(c)
        return torch.stack(codes, 1)

    def decode(self, codes: Tensor) -> Tensor:
        """(B, K', F) with K' <= K (the first K' levels) -> (B, D, F)."""
        out = self.levels[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.levels[k].decode(codes[:, k])
        return out

    def sample_levels(self, batch: int, device: torch.device) -> Tensor:
        """(B,) levels per item: all of them, or with probability `dropout` a uniform 1..K (DAC)."""
        k = self.n_codebooks
        levels = torch.full((batch,), k, device=device)
        if self.training and self.dropout > 0:
            drop = torch.rand(batch, device=device) < self.dropout
            levels = torch.where(drop, torch.randint(1, k + 1, (batch,), device=device), levels)
        return levels

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Training pass over (B, D, F) latents."""
        b = z.shape[0]
        levels = self.sample_levels(b, z.device)
        quantized, residual = torch.zeros_like(z), z
        codes, commitment, codebook = [], z.new_zeros(b), z.new_zeros(b)
        for k, level in enumerate(self.levels):
            q, c, z_e, commit, book = level(residual)
            active = (levels > k).to(z.dtype)  # (B,)
            quantized = quantized + q * active[:, None, None]
            residual = residual - q
            commitment, codebook = commitment + commit * active, codebook + book * active
            codes.append(c)
            if self.training and not self.frozen and self.dead_threshold > 0:
                used = (levels > k)[:, None].expand_as(c)
                level.revive(z_e, c, used, self.usage_decay, self.dead_threshold)
        return QuantizerOutput(quantized, torch.stack(codes, 1), commitment.mean(), codebook.mean(), levels)

    def usage_report(self) -> list[dict[str, float]]:
        """Per level: entries alive by the usage EMA (at or above the revival threshold x the mean usage,
        or any use when revival is off) and the perplexity of the usage distribution (codebook_size = all used equally;
        0 before any training batch)."""
        report = []
        for k, level in enumerate(self.levels):
            p = level.usage / level.usage.sum().clamp_min(1e-12)
            perplexity = float(torch.exp(-(p * p.clamp_min(1e-12).log()).sum())) if level.usage.any() else 0.0
            alive = int((level.usage >= max(self.dead_threshold * float(level.usage.mean()), 1e-6)).sum())
            report.append({"level": k, "alive": alive, "perplexity": perplexity})
        return report


def codes_used_per_level(codes: Tensor, levels: Tensor | None = None) -> list[int]:
    """Distinct codes of each level in a (B, K, F) batch (only the items that used the level)."""
    out = []
    for k in range(codes.shape[1]):
        rows = codes[:, k] if levels is None else codes[levels > k, k]
        out.append(int(torch.unique(rows).numel()))
    return out
