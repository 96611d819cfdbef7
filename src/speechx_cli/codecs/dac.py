"""A DAC-style codec (after "High-Fidelity Audio Compression with Improved RVQGAN", Kumar et al. 2023).

Convolutional encoder and decoder with snake activations (x + sin^2(alpha x) / alpha, a periodic
inductive bias for audio) and weight-normed convolutions; between them residual VQ with factorized,
L2-normalized codes and quantizer dropout (codecs/quantize.py). Sized here for CPU: 16 kHz, hop 320
(50 frames/s), 8 x 1024 codes = 4 kbps; `DacCodec.truncated(n)` serves the first n levels alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ..codec import TrainableCodec, TrainOutput, known_fields
from .quantize import ResidualFactorizedVQ, codes_used_per_level

DAC_KIND = "dac"
# config fields that leave a trained codec's tokens as they are
DECODER_OR_TRAINING_FIELDS = ("decoder_dim", "decoder_rates", "quantizer_dropout", "usage_decay", "dead_code_threshold")


@dataclass(frozen=True)
class DacConfig:
    """Architecture of a `DacCodec`; the defaults are the size meant to ship (see `demo`)."""

    sample_rate: int = 16_000  # Hz
    encoder_dim: int = 16  # channels after the first conv; doubled at every downsampling (DAC: 64)
    encoder_rates: tuple[int, ...] = (2, 4, 5, 8)  # product = hop (320: 50 frames/s)
    decoder_dim: int = 256  # channels before the first upsampling; halved at every one (DAC: 1536)
    decoder_rates: tuple[int, ...] = (8, 5, 4, 2)
    latent_dim: int = 256  # the latent the quantizer sees
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_dim: int = 8  # the factorized lookup space
    quantizer_dropout: float = 0.5  # share of items trained with a random number of levels
    # a code whose use (an EMA over batches) falls below this share of the mean use is re-initialised from
    # the batch (0: never). At 0.99 and 0.01 about 1% of the codes were in use after 60 steps here; at 0.95
    # and 0.25, 10-40% (DAC itself relies on 400 k steps instead)
    usage_decay: float = 0.95
    dead_code_threshold: float = 0.25

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def kbps(self) -> float:
        return self.frame_rate * self.n_codebooks * math.log2(self.codebook_size) / 1000

    @classmethod
    def demo(cls) -> DacConfig:
        """The size meant to ship: 4 kbps at 16 kHz, 3.1 M parameters, ~0.8 GMAC per second of audio each way
        (encoder_dim 32 costs 3 GMAC/s to encode; decoder_dim 384 decodes slower than 20x real time on one
        thread here)."""
        return cls()

    @classmethod
    def tiny(cls) -> DacConfig:
        """For tests: a few thousand parameters, 4 x 64 codes, the demo's hop."""
        return cls(encoder_dim=2, decoder_dim=16, latent_dim=8, n_codebooks=4, codebook_size=64, codebook_dim=4)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["encoder_rates"], d["decoder_rates"] = list(self.encoder_rates), list(self.decoder_rates)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DacConfig:
        values = known_fields(cls, d)
        for k in ("encoder_rates", "decoder_rates"):
            if k in values:
                if not isinstance(values[k], (list, tuple)):
                    raise ValueError(f"{k} must be a list of integers")
                values[k] = tuple(values[k])
        return cls(**values).validate()

    def validate(self) -> DacConfig:
        """Raise ValueError on values no codec can have (a damaged or hand-edited config)."""
        def count(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        sizes = (self.sample_rate, self.encoder_dim, self.decoder_dim, self.latent_dim, self.n_codebooks,
                 self.codebook_size, self.codebook_dim, *self.encoder_rates, *self.decoder_rates)
        if not (self.encoder_rates and self.decoder_rates and all(map(count, sizes))):
            raise ValueError("sizes, rates and counts must be positive integers")
        if math.prod(self.encoder_rates) != math.prod(self.decoder_rates):
            raise ValueError(f"encoder rates {self.encoder_rates} and decoder rates {self.decoder_rates} "
                             "must have the same product (the hop)")
        if self.decoder_dim % 2 ** len(self.decoder_rates):
            raise ValueError(f"decoder_dim must be divisible by 2^{len(self.decoder_rates)}")
        reals = (self.quantizer_dropout, self.usage_decay, self.dead_code_threshold)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in reals) \
                or not (0 <= self.quantizer_dropout <= 1 and 0 < self.usage_decay < 1 and self.dead_code_threshold >= 0):
            raise ValueError("quantizer_dropout in [0, 1], usage_decay in (0, 1), dead_code_threshold >= 0")
        return self


# ---- layers --------------------------------------------------------------------------------------

def _wn(conv: nn.Module) -> nn.Module:
    """Weight-normed conv with zero bias and torch's default weights. (DAC's code sets truncated-normal
    weights of std 0.02 after weight norm, where they are recomputed and so never used; applied before
    it, they shrink the latent to ~1e-5 and every frame then picks one code.)"""
    nn.init.zeros_(conv.bias)
    return weight_norm(conv)


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned alpha per channel."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class ResidualUnit(nn.Module):
    """Dilated conv (kernel 7) then 1x1 conv, both after snakes, added to the input; keeps the length."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(Snake(dim), _wn(nn.Conv1d(dim, dim, 7, dilation=dilation, padding=3 * dilation)),
                                   Snake(dim), _wn(nn.Conv1d(dim, dim, 1)))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _residual_units(dim: int) -> list[nn.Module]:
    return [ResidualUnit(dim, d) for d in (1, 3, 9)]


def _downsample(dim_in: int, dim_out: int, stride: int) -> nn.Module:
    """Length L -> L / stride exactly when stride divides L."""
    return _wn(nn.Conv1d(dim_in, dim_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2)))


def _upsample(dim_in: int, dim_out: int, stride: int) -> nn.Module:
    """Length L -> L * stride exactly (output_padding fixes odd strides)."""
    return _wn(nn.ConvTranspose1d(dim_in, dim_out, 2 * stride, stride=stride, padding=math.ceil(stride / 2),
                                  output_padding=stride % 2))


def build_encoder(cfg: DacConfig) -> nn.Sequential:
    """(B, 1, N) -> (B, latent_dim, N / hop)."""
    dim = cfg.encoder_dim
    layers: list[nn.Module] = [_wn(nn.Conv1d(1, dim, 7, padding=3))]
    for stride in cfg.encoder_rates:
        layers += [*_residual_units(dim), Snake(dim), _downsample(dim, 2 * dim, stride)]
        dim *= 2
    layers += [Snake(dim), _wn(nn.Conv1d(dim, cfg.latent_dim, 3, padding=1))]
    return nn.Sequential(*layers)


def build_decoder(cfg: DacConfig) -> nn.Sequential:
    """(B, latent_dim, F) -> (B, 1, F * hop) in [-1, 1]."""
    dim = cfg.decoder_dim
    layers: list[nn.Module] = [_wn(nn.Conv1d(cfg.latent_dim, dim, 7, padding=3))]
    for stride in cfg.decoder_rates:
        layers += [Snake(dim), _upsample(dim, dim // 2, stride), *_residual_units(dim // 2)]
        dim //= 2
    layers += [Snake(dim), _wn(nn.Conv1d(dim, 1, 7, padding=3)), nn.Tanh()]
    return nn.Sequential(*layers)


# ---- the codec -----------------------------------------------------------------------------------

class DacCodec(TrainableCodec):
    """DAC-style codec built from a `DacConfig`; `decoder=False` builds the tokenizer alone (encoder
    and quantizer), e.g. under a decoder trained apart (codecs/vocos.py)."""

    kind: ClassVar[str] = DAC_KIND
    config_class = DacConfig

    def __init__(self, cfg: DacConfig, decoder: bool = True):
        super().__init__()
        self.cfg = cfg
        self.sample_rate, self.hop_length = cfg.sample_rate, cfg.hop_length
        self.n_codebooks, self.codebook_size = cfg.n_codebooks, cfg.codebook_size
        self.tokenizer_frozen = False
        self.encoder = build_encoder(cfg)
        self.quantizer = ResidualFactorizedVQ(cfg.latent_dim, cfg.n_codebooks, cfg.codebook_size, cfg.codebook_dim,
                                              cfg.quantizer_dropout, cfg.usage_decay, cfg.dead_code_threshold)
        self.decoder = build_decoder(cfg) if decoder else None

    def freeze_tokenizer(self) -> DacCodec:
        """Fix the encoder and quantizer so that only the decoder trains (the tokens stay valid)."""
        self.tokenizer_frozen = self.quantizer.frozen = True
        for p in [*self.encoder.parameters(), *self.quantizer.parameters()]:
            p.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> DacCodec:
        super().train(mode)
        if self.tokenizer_frozen:  # no quantizer dropout, no revival
            self.encoder.eval()
            self.quantizer.eval()
        return self

    def _synth(self, latent: Tensor) -> Tensor:
        if self.decoder is None:
            raise RuntimeError("this DAC codec was built without its decoder (a tokenizer only)")
        return self.decoder(latent)[:, 0]  # (B, F*hop)

    def forward(self, wav: Tensor) -> TrainOutput:
        """Training pass: (B, N) -> reconstruction (B, F*hop), codes, commitment and codebook losses."""
        n_frames = self.frames_for(wav.shape[-1])
        wav = nn.functional.pad(wav, (0, self.samples_for(n_frames) - wav.shape[-1]))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.tokenizer_frozen):
            q = self.quantizer(self.encoder(wav[:, None]))
        losses = {"commitment": q.commitment, "codebook": q.codebook}
        return TrainOutput(self._synth(q.quantized), q.codes, losses, q.levels)

    def _encode(self, wav: Tensor) -> Tensor:
        return self.quantizer.encode(self.encoder(wav[:, None]))  # (B, K, F)

    def dequantize(self, codes: Tensor) -> Tensor:
        """(B, K, F) codes -> (B, latent_dim, F), what the decoder reads."""
        return self.quantizer.decode(codes)

    def _decode(self, codes: Tensor) -> Tensor:
        return self._synth(self.dequantize(codes))

    def usage_report(self) -> list[dict[str, float]]:
        return self.quantizer.usage_report()

    @staticmethod
    def codes_used(codes: Tensor, levels: Tensor | None = None) -> list[int]:
        return codes_used_per_level(codes, levels)

    def truncated(self, n_codebooks: int) -> DacCodec:
        """The same codec at n_codebooks / K of the bitrate: its first levels alone (quantizer dropout
        trained them to work without the rest). Shares nothing with self."""
        if not 1 <= n_codebooks <= self.n_codebooks:
            raise ValueError(f"n_codebooks must lie in 1..{self.n_codebooks}, got {n_codebooks}")
        cfg = DacConfig.from_dict({**self.cfg.to_dict(), "n_codebooks": n_codebooks})
        state = {k: v for k, v in self.state_dict().items()
                 if not k.startswith("quantizer.levels.") or int(k.split(".")[2]) < n_codebooks}
        return self.from_config({"kind": self.kind, **cfg.to_dict()}, state).train(self.training)

    @classmethod
    def token_config_of(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in config.items() if k not in DECODER_OR_TRAINING_FIELDS}
