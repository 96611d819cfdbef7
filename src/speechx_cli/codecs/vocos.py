"""A Vocos-style decoder on the frozen tokens of another codec (after Siuzdak, "Vocos", 2023).

The tokens are the base codec's own: its encoder and quantizer, frozen and carried along, encode as
before, so every shard and language model made with the base codec keeps working. Decoding replaces
the base decoder's upsampling convolutions with a ConvNeXt backbone at the frame rate and an
inverse-STFT head: each frame predicts the log-magnitude and phase of `upsample` STFT frames (hop =
base hop / upsample, window = n_fft_factor x that hop), and torch.istft turns them into samples.
Nothing runs above the frame rate but the inverse FFT, which is why it decodes fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..codec import Codec, SmallCodec, TrainableCodec, TrainOutput, known_fields
from .dac import DacCodec

VOCOS_KIND = "vocos"
TOKENIZER_PARTS = ("encoder.", "quantizer.", "content.")  # the base codec's weights that decide its tokens


# Codec kinds whose tokens a Vocos decoder can read: built from a `config_class` instance, they build
# without their decoder (`decoder=False`) and map codes to their latent (`dequantize`). Listed here, not
# found in the registry (codecs.KINDS), because the registry lists this module's kind too.
BASE_KINDS: dict[str, type[Codec]] = {cls.kind: cls for cls in (SmallCodec, DacCodec)}


def build_tokenizer(base: Mapping[str, Any]) -> Codec:
    """The untrained encoder and quantizer of the codec `base` describes (no decoder)."""
    cls = BASE_KINDS[base["kind"]]
    return cls(cls.config_class.from_dict(base), decoder=False)


@dataclass(frozen=True)
class VocosConfig:
    """A Vocos decoder over the tokens of the codec `base` describes (its config(), with its kind)."""

    base: Mapping[str, Any]
    dim: int = 384
    intermediate_dim: int = 1152
    n_layers: int = 8
    kernel_size: int = 7
    upsample: int = 1  # STFT frames per token frame
    n_fft_factor: int = 4  # window = n_fft = this x the STFT hop

    @classmethod
    def demo(cls, base: Mapping[str, Any]) -> VocosConfig:
        """The size meant to ship over `base`'s tokens."""
        return cls(base=dict(base))

    @classmethod
    def tiny(cls, base: Mapping[str, Any]) -> VocosConfig:
        """For tests: a few thousand parameters beside the base's tokenizer."""
        return cls(base=dict(base), dim=16, intermediate_dim=32, n_layers=1, upsample=2)

    @property
    def sample_rate(self) -> int:
        return self.base_config().sample_rate

    def base_config(self) -> Any:
        """The base codec's config dataclass (its kind's `config_class`)."""
        return BASE_KINDS[self.base["kind"]].config_class.from_dict(self.base)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["base"] = dict(self.base)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VocosConfig:
        values = known_fields(cls, d)
        if not isinstance(values.get("base"), Mapping):
            raise ValueError("base must be the base codec's config (a JSON object)")
        return cls(**values).validate()

    def validate(self) -> VocosConfig:
        """Raise ValueError on values no decoder can have, or a base no Vocos decoder can read."""
        counts = (self.dim, self.intermediate_dim, self.n_layers, self.kernel_size, self.upsample, self.n_fft_factor)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in counts):
            raise ValueError("sizes and counts must be positive integers")
        if self.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd")
        kind = self.base.get("kind")
        if kind not in BASE_KINDS:
            raise ValueError(f"base codec kind {kind!r} has no tokenizer to reuse (known: {', '.join(BASE_KINDS)})")
        hop = self.base_config().hop_length
        if hop % self.upsample or (self.n_fft_factor * hop // self.upsample) % 2:
            raise ValueError(f"upsample {self.upsample} must divide the base hop {hop} into an even-window STFT")
        return self


class ConvNeXtBlock(nn.Module):
    """Depthwise conv, LayerNorm, pointwise MLP, scaled residual (ConvNeXt, 1-D)."""

    def __init__(self, dim: int, intermediate_dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, intermediate_dim), nn.GELU(), nn.Linear(intermediate_dim, dim))
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, F)
        y = self.dwconv(x).transpose(1, 2)  # (B, F, C)
        y = self.gamma * self.mlp(self.norm(y))
        return x + y.transpose(1, 2)


class VocosDecoder(nn.Module):
    """(B, latent, F) base latent -> (B, F * base hop) waveform."""

    def __init__(self, cfg: VocosConfig, latent_dim: int, hop: int):
        super().__init__()
        self.upsample, self.hop = cfg.upsample, hop
        self.istft_hop = hop // cfg.upsample
        self.n_fft = cfg.n_fft_factor * self.istft_hop
        self.embed = nn.Conv1d(latent_dim, cfg.dim, cfg.kernel_size, padding=cfg.kernel_size // 2)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(cfg.dim, cfg.intermediate_dim, cfg.kernel_size, 1 / cfg.n_layers)
                                      for _ in range(cfg.n_layers)))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, cfg.upsample * (self.n_fft + 2))  # log-magnitude and phase per bin
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def spectrum(self, latent: Tensor) -> Tensor:
        """(B, latent, F) -> complex STFT (B, n_fft/2+1, F * upsample)."""
        x = self.norm(self.embed(latent).transpose(1, 2)).transpose(1, 2)  # (B, C, F)
        x = self.final_norm(self.blocks(x).transpose(1, 2))  # (B, F, C)
        b, f, _ = x.shape
        x = self.head(x).view(b, f * self.upsample, self.n_fft + 2).transpose(1, 2)  # (B, 2 * bins, F*u)
        log_mag, phase = x.chunk(2, dim=1)
        mag = log_mag.exp().clamp(max=1e2)  # a bound keeps an untrained head from overflowing
        return torch.polar(mag, phase)

    def forward(self, latent: Tensor) -> Tensor:
        spec = self.spectrum(latent)
        n = latent.shape[-1] * self.hop
        return torch.istft(spec, self.n_fft, self.istft_hop, window=self.window, center=True, length=n)


class VocosCodec(TrainableCodec):
    """Base codec's frozen encoder and quantizer + a Vocos decoder: the base's tokens, a new sound."""

    kind: ClassVar[str] = VOCOS_KIND
    config_class = VocosConfig

    def __init__(self, cfg: VocosConfig):
        super().__init__()
        self.cfg = cfg
        self.base = build_tokenizer(cfg.base)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.sample_rate, self.hop_length = self.base.sample_rate, self.base.hop_length
        self.n_codebooks, self.codebook_size = self.base.n_codebooks, self.base.codebook_size
        with torch.no_grad():
            latent_dim = self.base.dequantize(torch.zeros(1, self.n_codebooks, 1, dtype=torch.long)).shape[1]
        self.decoder = VocosDecoder(cfg, latent_dim, self.hop_length)

    def train(self, mode: bool = True) -> VocosCodec:
        super().train(mode)
        self.base.eval()  # frozen: no codebook updates, no dropout, no revival
        return self

    def load_base(self, base_state: Mapping[str, Tensor]) -> None:
        """Take the tokenizer weights (encoder and quantizer) of a trained base codec's state dict."""
        tokenizer = {k: v for k, v in base_state.items() if k.startswith(TOKENIZER_PARTS)}
        self.base.load_state_dict(tokenizer)

    def forward(self, wav: Tensor) -> TrainOutput:
        """Training pass: the frozen base's codes of (B, N), and the decoder's (B, F*hop) from them."""
        n_frames = self.frames_for(wav.shape[-1])
        wav = nn.functional.pad(wav, (0, self.samples_for(n_frames) - wav.shape[-1]))
        with torch.no_grad():
            codes = self.base._encode(wav)
            latent = self.base.dequantize(codes)
        return TrainOutput(self.decoder(latent), codes, {})

    def _encode(self, wav: Tensor) -> Tensor:
        return self.base._encode(wav)

    def _decode(self, codes: Tensor) -> Tensor:
        return self.decoder(self.base.dequantize(codes))

    @classmethod
    def token_config_of(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The base's: a Vocos decoder makes the tokens its base makes."""
        return BASE_KINDS[config["base"]["kind"]].token_config_of(config["base"])

    def token_state(self) -> dict[str, Tensor]:
        return self.base.token_state()
