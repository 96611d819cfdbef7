"""Training objectives: the AR and NAR models' teacher-forced cross-entropy over a collated batch;
the codec's multi-scale mel loss and its adversarial (hinge) and feature-matching losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..delay import delayed_inputs, delayed_labels
from ..model import ARModel, NARModel
from ..prompts import IGNORE_INDEX, Batch


def ar_loss(model: ARModel, batch: Batch, reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over valid output positions (mean, or sum for token-weighted averaging
    across micro-batches and ranks), and the number of positions."""
    loss, count, _ = ar_loss_and_states(model, batch, reduction)
    return loss, count


def ar_loss_and_states(model: ARModel, batch: Batch, reduction: str = "mean"
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ar_loss, and the AR's hidden states (B, S, d) at its output steps. At ar_levels 1, S = T+1: the
    states at <bos>, y_0 .. y_{T-1}, state i the model's before it emits frame i (or <eos> at i = T).
    With several AR levels the loss is the sum over levels (count: the level-1 positions)."""
    sums, counts, states = ar_level_losses(model, batch)
    loss = sums.sum() if reduction == "sum" else (sums / counts.clamp(min=1)).sum()
    return loss, counts[0], states


def ar_level_losses(model: ARModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per AR level (A = ar_levels): summed cross-entropy (A,), label counts (A,), and the states."""
    a = model.cfg.ar_levels
    codes, lengths = batch.targets[..., :a], batch.target_lengths  # (B, T, A), (B,)
    inputs, valid = delayed_inputs(codes, lengths, model.cfg.codebook_size)
    labels = delayed_labels(codes, lengths, model.cfg.codebook_size)
    if a == 1:
        inputs = inputs[..., 0]  # the paper's AR reads one code per step
    states = model.features(batch.tokens, batch.types, batch.positions, inputs, valid)
    sums = torch.stack([F.cross_entropy(logits.flatten(0, 1).float(), labels[..., k].flatten(),
                                        ignore_index=IGNORE_INDEX, reduction="sum")
                        for k, logits in enumerate(model.level_logits(states))])
    return sums, (labels != IGNORE_INDEX).sum((0, 1)), states


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


# ---- codec --------------------------------------------------------------------------------------

class MultiScaleMelLoss(nn.Module):
    """L1 between log-mel magnitudes (hop = n_fft / 4), the mean over scales; DAC's variant
    (log10=True, reduction="sum", mel bands growing with the window) is the sum of log10 distances."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...], n_mels: int | tuple[int, ...],
                 log10: bool = False, reduction: str = "mean"):
        super().__init__()
        import librosa

        self.n_ffts = tuple(n_ffts)
        bands = (n_mels,) * len(self.n_ffts) if isinstance(n_mels, int) else tuple(n_mels)
        if len(bands) != len(self.n_ffts) or reduction not in ("mean", "sum"):
            raise ValueError("one mel band count per scale (or one for all); reduction mean or sum")
        self.log, self.reduction = (torch.log10 if log10 else torch.log), reduction
        for n_fft, n_mel in zip(self.n_ffts, bands):
            fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mel)
            self.register_buffer(f"fb{n_fft}", torch.from_numpy(fb).float(), persistent=False)
            self.register_buffer(f"win{n_fft}", torch.hann_window(n_fft), persistent=False)

    def log_mel(self, wav: Tensor, n_fft: int) -> Tensor:
        spec = torch.stft(wav, n_fft, n_fft // 4, window=getattr(self, f"win{n_fft}"),
                          return_complex=True).abs()  # (B, n_fft/2+1, T)
        return self.log(getattr(self, f"fb{n_fft}") @ spec + 1e-5)  # (B, n_mels, T)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        losses = torch.stack([F.l1_loss(self.log_mel(x, n), self.log_mel(y, n)) for n in self.n_ffts])
        return losses.sum() if self.reduction == "sum" else losses.mean()


def hinge_d_loss(real: list[Tensor], fake: list[Tensor]) -> Tensor:
    return torch.stack([F.relu(1 - r).mean() + F.relu(1 + f).mean()
                        for r, f in zip(real, fake)]).mean()


def hinge_g_loss(fake: list[Tensor]) -> Tensor:
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_matching_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """L1 between discriminator features, relative to the real features' scale (EnCodec)."""
    terms = [F.l1_loss(f, r.detach()) / (r.detach().abs().mean() + 1e-8)
             for rs, fs in zip(real, fake) for r, f in zip(rs, fs)]
    return torch.stack(terms).mean()
