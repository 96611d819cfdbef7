"""The anchors' adversarial recipe for codec training: discriminators, their losses and their optimizer.

Two styles, named after the codec that trained with each:
- "dac" (DAC, Kumar et al. 2023; HiFi-GAN's periods): a multi-period discriminator (periods 2, 3, 5, 7,
  11) plus a multi-resolution, multi-band complex-STFT discriminator; least-squares GAN losses and L1
  feature matching, each summed over the discriminators; DAC's weights (mel 15, feature matching 2,
  adversarial 1) against its summed log10 multi-scale mel loss.
- "encodec": EnCodec's multi-scale STFT discriminator, hinge losses and feature matching relative to the
  real features' scale, each averaged; the small codec's measured weights.
`Adversary` owns the discriminators and their optimizer: the trainer asks it for the generator's terms
and then lets it update, and saves its state_dict with the run, so a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from .losses import MultiScaleMelLoss, feature_matching_loss, hinge_d_loss, hinge_g_loss

Logits = list[Tensor]  # one (B, ...) score map per discriminator
Features = list[list[Tensor]]  # each discriminator's intermediate activations

DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))  # fractions of the spectrum
LEAK = 0.1


@dataclass(frozen=True)
class Recipe:
    """A codec's losses and their weights, and its discriminators; `Recipe.for_kind` gives each codec kind
    its anchor's. Weights apply to the named terms: l1 (waveform), mel, the codec's own terms (commitment,
    codebook), adv (the generator's adversarial loss) and feat (feature matching)."""

    style: str = "dac"  # "dac" or "encodec" (see the module docstring)
    l1_weight: float = 0.0
    mel_weight: float = 15.0
    commitment_weight: float = 0.25
    codebook_weight: float = 1.0
    adv_weight: float = 1.0
    feat_weight: float = 2.0
    mel_windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    mel_bands: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
    # DAC: 32 (periods 32..1024 channels, STFT 32). CPU-sized: at 8 one fwd+bwd of 8 x 1 s costs ~0.5 s per set
    # (periods, STFT) on one thread here, at 16 ~1.4 s
    disc_width: int = 8
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    stft_windows: tuple[int, ...] = (2048, 1024, 512)

    @classmethod
    def dac(cls, **changes: Any) -> Recipe:
        """DAC's: mel 15 (a sum of log10 distances over 7 scales), feature matching 2, adversarial 1,
        commitment 0.25, codebook 1."""
        return cls(**changes).validate()

    @classmethod
    def encodec(cls, **changes: Any) -> Recipe:
        """The small codec's, measured here. Relative to a mean log-mel L1 (HiFi-GAN weighs mel 45x its
        adversarial term), EnCodec's own 3 and 3 drowned the mel term: dev STOI 0.68 -> 0.56."""
        return cls(**{"style": "encodec", "l1_weight": 0.1, "mel_weight": 1.0, "commitment_weight": 1.0,
                      "codebook_weight": 0.0, "adv_weight": 0.05, "feat_weight": 0.1, "disc_width": 16,
                      "mel_windows": (256, 512, 1024, 2048), "mel_bands": (64,) * 4, **changes}).validate()

    @classmethod
    def for_kind(cls, kind: str, **changes: Any) -> Recipe:
        """The small (EnCodec-architecture) codec keeps its measured recipe; the others take DAC's."""
        return cls.encodec(**changes) if kind == "small_codec" else cls.dac(**changes)

    def weight(self, term: str) -> float:
        return getattr(self, f"{term}_weight")

    def mel_loss(self, sample_rate: int) -> MultiScaleMelLoss:
        dac = self.style == "dac"
        return MultiScaleMelLoss(sample_rate, self.mel_windows, self.mel_bands, log10=dac,
                                 reduction="sum" if dac else "mean")

    def validate(self) -> Recipe:
        if self.style not in ("dac", "encodec"):
            raise ValueError(f"unknown adversarial style {self.style!r} (dac or encodec)")
        sizes = (*self.periods, *self.stft_windows, *self.mel_windows, *self.mel_bands, self.disc_width)
        if not all(isinstance(v, int) and v > 0 for v in sizes) or len(self.mel_windows) != len(self.mel_bands):
            raise ValueError("periods, windows, mel bands and widths must be positive integers, one band count a window")
        if any(getattr(self, f.name) < 0 for f in fields(self) if f.name.endswith("_weight")):
            raise ValueError("loss weights must be >= 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recipe:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}).validate()


# ---- discriminators ------------------------------------------------------------------------------

def _wn2d(*args, **kwargs) -> nn.Conv2d:
    return weight_norm(nn.Conv2d(*args, **kwargs))


class PeriodDiscriminator(nn.Module):
    """The waveform folded into (T / period, period) columns; convolutions along time only, so each
    column (one phase of the period) is judged for its periodic structure."""

    def __init__(self, period: int, channels: tuple[int, ...]):
        super().__init__()
        self.period = period
        widths = (1, *channels)
        self.convs = nn.ModuleList(_wn2d(a, b, (5, 1), (3, 1), padding=(2, 0)) for a, b in zip(widths, widths[1:]))
        self.convs.append(_wn2d(channels[-1], channels[-1], (5, 1), padding=(2, 0)))
        self.post = _wn2d(channels[-1], 1, (3, 1), padding=(1, 0))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # x: (B, 1, T)
        pad = -x.shape[-1] % self.period
        x = F.pad(x, (0, pad), mode="reflect" if pad < x.shape[-1] else "constant")
        x = x.view(x.shape[0], 1, -1, self.period)  # (B, 1, T / p, p)
        fmaps = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LEAK)
            fmaps.append(x)
        return self.post(x), fmaps


class BandedSTFTDiscriminator(nn.Module):
    """One STFT resolution (window w, hop w/4) as real and imaginary channels, its frequency axis cut
    into bands that each get their own convolutions (DAC's multi-band discriminator)."""

    def __init__(self, window: int, channels: int, bands: tuple[tuple[float, float], ...] = DAC_BANDS):
        super().__init__()
        self.window = window
        bins = window // 2 + 1
        self.bands = [(int(lo * bins), max(int(hi * bins), int(lo * bins) + 1)) for lo, hi in bands]
        self.register_buffer("hann", torch.hann_window(window), persistent=False)

        def stack() -> nn.ModuleList:
            return nn.ModuleList([_wn2d(2, channels, (3, 9), padding=(1, 4)),
                                  *(_wn2d(channels, channels, (3, 9), (1, 2), padding=(1, 4)) for _ in range(3)),
                                  _wn2d(channels, channels, (3, 3), padding=(1, 1))])

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.post = _wn2d(channels, 1, (3, 3), padding=(1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # x: (B, 1, T)
        spec = torch.stft(x[:, 0], self.window, self.window // 4, window=self.hann, return_complex=True)
        spec = torch.view_as_real(spec).permute(0, 3, 2, 1)  # (B, 2, frames, bins)
        fmaps, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            y = spec[..., lo:hi]
            for conv in convs:
                y = F.leaky_relu(conv(y), LEAK)
                fmaps.append(y)
            outs.append(y)
        return self.post(torch.cat(outs, dim=-1)), fmaps


class MultiDiscriminator(nn.Module):
    """DAC's set: one period discriminator per period, one banded STFT discriminator per window;
    (B, 1, T) -> logits and features of each."""

    def __init__(self, cfg: Recipe):
        super().__init__()
        w = cfg.disc_width
        period_channels = (w, 4 * w, 8 * w, 16 * w)  # HiFi-GAN's 32, 128, 512, 1024 at width 32
        self.parts = nn.ModuleList([*(PeriodDiscriminator(p, period_channels) for p in cfg.periods),
                                    *(BandedSTFTDiscriminator(n, w) for n in cfg.stft_windows)])

    def forward(self, x: Tensor) -> tuple[Logits, Features]:
        logits, fmaps = [], []
        for part in self.parts:
            score, features = part(x)
            logits.append(score)
            fmaps.append(features)
        return logits, fmaps


def build_discriminators(cfg: Recipe) -> nn.Module:
    """The recipe's discriminators; (B, 1, T) -> (logits, features), like encodec's own."""
    if cfg.style == "dac":
        return MultiDiscriminator(cfg)
    # encodec's modules import torchaudio: only after codec.py has made that import work
    from ..codec import quiet_weight_norm
    from encodec.msstftd import MultiScaleSTFTDiscriminator

    with quiet_weight_norm():
        return MultiScaleSTFTDiscriminator(filters=cfg.disc_width)


# ---- losses --------------------------------------------------------------------------------------

def lsgan_d_loss(real: Logits, fake: Logits) -> Tensor:
    """Least squares: real scores toward 1, fake toward 0; summed over discriminators (DAC)."""
    return sum((1 - r).pow(2).mean() + f.pow(2).mean() for r, f in zip(real, fake))


def lsgan_g_loss(fake: Logits) -> Tensor:
    return sum((1 - f).pow(2).mean() for f in fake)


def feature_l1_loss(real: Features, fake: Features) -> Tensor:
    """L1 between every intermediate feature of the real and the fake, summed (DAC)."""
    return sum(F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake) for r, f in zip(rs, fs))


class Adversary:
    """The discriminators, their Adam optimizer and their losses, in one `Recipe` style."""

    def __init__(self, cfg: Recipe, lr: float, betas: tuple[float, float]):
        self.cfg = cfg.validate()
        self.disc = build_discriminators(cfg).train()
        self.opt = torch.optim.Adam(self.disc.parameters(), lr=lr, betas=betas)
        dac = cfg.style == "dac"
        self._d_loss = lsgan_d_loss if dac else hinge_d_loss
        self._g_loss = lsgan_g_loss if dac else hinge_g_loss
        self._feat_loss = feature_l1_loss if dac else feature_matching_loss
        self._real: tuple[Logits, Features] | None = None

    def generator_terms(self, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """Adversarial and feature-matching losses of the generator's (B, N) output `fake` against
        the (B, N) `real` audio; call `update` after the generator's step."""
        self._real = self.disc(real[:, None])
        fake_logits, fake_fmaps = self.disc(fake[:, None])
        return self._g_loss(fake_logits), self._feat_loss(self._real[1], fake_fmaps)

    def update(self, fake: Tensor, lr: float) -> float:
        """One discriminator step on the real audio of the last `generator_terms` and `fake`."""
        if self._real is None:
            raise RuntimeError("update() follows generator_terms()")
        real_logits = self._real[0]  # its graph is untouched by the generator's backward
        fake_logits, _ = self.disc(fake.detach()[:, None])
        loss = self._d_loss(real_logits, fake_logits)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self._real = None
        return loss.item()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.disc.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.disc.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.disc.parameters())
