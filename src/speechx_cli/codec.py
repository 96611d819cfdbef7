"""Neural audio codecs: waveform <-> codec tokens (B, K, F).

The interface every codec shares (`Codec`; `TrainableCodec` for those built from a config dataclass
whose weights checkpoints carry) and `SmallCodec`: EnCodec's architecture (encodec's SEANet
encoder/decoder + residual VQ) at a size this project can train on CPU, with the fixes of
docs/offline-tools.md (zero conv biases, x10 input scale, dead-code revival that sticks, 10 k-means
iterations).

Each codec describes itself with `Codec.config()` (a JSON dict with a "kind"); `speechx_cli.codecs` holds
the table of kinds that rebuilds a codec from that dict, the codecs built by name, and the other kinds:
the official EnCodec 24 kHz of the SpeechX paper (codecs/encodec24.py), a DAC-style codec (codecs/dac.py)
and a Vocos decoder on another codec's tokens (codecs/vocos.py). A trainable codec's forward is its
training pass (`TrainOutput`).
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Iterator

import torch
from torch import Tensor, nn

from ._torchaudio_compat import ensure_encodec_importable

ensure_encodec_importable()

from encodec.modules import SEANetDecoder, SEANetEncoder  # noqa: E402
from encodec.quantization import ResidualVectorQuantizer  # noqa: E402
from encodec.distrib import broadcast_tensors  # noqa: E402
from encodec.quantization.core_vq import EuclideanCodebook, sample_vectors  # noqa: E402

SMALL_CODEC_KIND = "small_codec"
# a factorized codebook's (codecs/quantize.py) training bookkeeping: not part of what decides the tokens
BOOKKEEPING = (".usage", ".seeded")


class CodecUnavailableError(RuntimeError):
    """The codec's weights cannot be found or fetched; the message says how to fix it."""


@dataclass
class TrainOutput:
    """A trainable codec's training pass (its forward): what the trainer weighs into its loss."""

    recon: Tensor  # (B, F * hop)
    codes: Tensor | None  # (B, K, F); None when the quantizer was skipped
    losses: dict[str, Tensor] = field(default_factory=dict)  # named scalar terms: commitment, codebook
    levels: Tensor | None = None  # (B,) levels each item used (quantizer dropout); None: all
    # level 1's quantized vectors (B, D, F) with the straight-through gradient to the encoder (the small
    # codec's; train/phonetic.py reads them); None for other kinds or when the quantizer was skipped
    first_level: Tensor | None = None
    latent: Tensor | None = None  # the encoder's output (B, D, F) before quantization (the small codec's)


# ---------------------------------------------------------------------------------------------
# Interface
# ---------------------------------------------------------------------------------------------

class Codec(nn.Module, ABC):
    """Waveform (B, N) at `sample_rate` <-> codes (B, K, F) with F = ceil(N / hop_length).

    A single item works too: (N,) -> (K, F) and back. Outputs are ordinary tensors (not inference
    tensors) on the codec's device.
    """

    kind: ClassVar[str]
    stores_weights: ClassVar[bool]  # whether checkpoints must carry this codec's weights
    sample_rate: int  # Hz
    hop_length: int  # samples per frame
    n_codebooks: int  # K
    codebook_size: int  # entries per codebook

    @property
    def frame_rate(self) -> float:
        """Frames per second."""
        return self.sample_rate / self.hop_length

    def frames_for(self, n_samples: int) -> int:
        """Frames that encode `n_samples` samples (the last frame is zero-padded)."""
        return math.ceil(n_samples / self.hop_length)

    def samples_for(self, n_frames: int) -> int:
        """Samples that `n_frames` frames decode to."""
        return n_frames * self.hop_length

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, wav: Tensor) -> Tensor:
        """float (B, N) or (N,) at sample_rate -> long (B, K, F) or (K, F)."""
        single = wav.dim() == 1
        if single:
            wav = wav[None]
        if wav.dim() != 2 or wav.shape[-1] == 0:
            raise ValueError(f"encode expects a (B, N) or (N,) waveform with N > 0, "
                             f"got shape {tuple(wav.shape)}")
        n_frames = self.frames_for(wav.shape[-1])
        with torch.inference_mode():
            x = wav.to(self.device, torch.float32)
            x = nn.functional.pad(x, (0, self.samples_for(n_frames) - x.shape[-1]))  # (B, F*hop)
            codes = self._encode(x)  # (B, K, F)
        codes = codes.clone()  # an ordinary tensor: callers may edit codes in place
        return codes[0] if single else codes

    def decode(self, codes: Tensor, levels: int | None = None) -> Tensor:
        """long (B, K, F) or (K, F) -> float (B, F * hop_length) or (F * hop_length,).

        `levels`: decode from the first `levels` codebook levels only, the rest left out of the latent
        (how much a tokenizer's first levels carry: `speechx eval codec --levels N`)."""
        if levels is not None and not 1 <= levels <= self.n_codebooks:
            raise ValueError(f"levels must be in 1..{self.n_codebooks}, got {levels}")
        single = codes.dim() == 2
        if single:
            codes = codes[None]
        if codes.dim() != 3 or codes.shape[1] != self.n_codebooks:
            raise ValueError(f"decode expects (B, {self.n_codebooks}, F) codes, "
                             f"got shape {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), "
                             f"got [{int(codes.min())}, {int(codes.max())}]")
        with torch.inference_mode():
            wav = self._decode(codes[:, :levels].to(self.device, torch.long))  # (B, F*hop)
        wav = wav.clone()
        return wav[0] if single else wav

    @abstractmethod
    def _encode(self, wav: Tensor) -> Tensor:
        """(B, F * hop) float -> (B, K, F) long."""

    @abstractmethod
    def _decode(self, codes: Tensor) -> Tensor:
        """(B, K, F) long -> (B, F * hop) float."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable description with a "kind"; `from_config` inverts it."""

    @classmethod
    @abstractmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Raise ValueError unless `config` describes a codec of this kind; builds nothing."""

    @classmethod
    @abstractmethod
    def from_config(cls, config: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None) -> Codec:
        """The codec `config` describes, with `state_dict` loaded (ValueError or RuntimeError if they differ)."""

    @classmethod
    def token_config_of(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a config of this kind that decides the tokens: equal for two codecs whose
        tokens are the same (a new decoder keeps the shards and language models made with the old)."""
        return dict(config)

    def token_state(self) -> dict[str, Tensor]:
        """The weights that decide the tokens: all but the decoder's, and without a factorized codebook's
        bookkeeping (its usage EMA and seeded flag change while it trains, not what it maps to)."""
        return {k: v for k, v in self.state_dict().items()
                if "decoder" not in k.split(".") and not k.endswith(BOOKKEEPING)}


def known_fields(config_class: type, d: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of dataclass `config_class` that `d` gives (its "kind" aside); ValueError on others."""
    known = {f.name for f in fields(config_class)}
    unknown = set(d) - known - {"kind"}
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} fields: {sorted(unknown)}")
    return {k: v for k, v in d.items() if k in known}


class TrainableCodec(Codec):
    """A codec built from an instance of its `config_class` (a frozen dataclass with to_dict, from_dict and
    validate); checkpoints carry its config and its weights."""

    stores_weights = True
    config_class: ClassVar[type]
    cfg: Any

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.cfg.to_dict()}

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        cls.config_class.from_dict(config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], state_dict: Mapping[str, Tensor] | None = None) -> Codec:
        if state_dict is None:
            raise ValueError("its weights are missing")
        codec = cls(cls.config_class.from_dict(config))
        codec.load_state_dict(state_dict)
        return codec


@contextmanager
def quiet_weight_norm() -> Iterator[None]:
    """encodec builds its convs with the deprecated torch.nn.utils.weight_norm; hush that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        yield


# ---------------------------------------------------------------------------------------------
# Trainable small codec
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SmallCodecConfig:
    """Architecture of a `SmallCodec`; the defaults are the demo codec (4 kbps at 16 kHz)."""

    sample_rate: int = 16_000  # Hz
    ratios: tuple[int, ...] = (8, 5, 4, 2)  # decoder upsampling order; hop = product = 320
    n_filters: int = 16
    dimension: int = 128  # latent (and codebook) width
    n_codebooks: int = 8
    codebook_size: int = 1024
    n_residual_layers: int = 1
    lstm_layers: int = 2
    # the decoder's width when it differs from the encoder's (None: n_filters): a wider decoder can train
    # on a frozen tokenizer, so the tokens every shard and LM was made with stay valid
    decoder_filters: int | None = None
    causal: bool = False
    input_scale: float = 10.0  # encoder sees x * scale, decoder output is / scale
    kmeans_iters: int = 10
    ema_decay: float = 0.99
    dead_code_threshold: float = 2.0  # EMA cluster size below which an entry is replaced
    # > 0: level 1 is a content level of its own, quantized (cosine, DAC's factorized lookup) from a
    # `content_dim`-wide projection of the latent that a phoneme loss can shape (--phonetic-input level1)
    # without a residual codebook's EMA lagging behind; levels 2..K quantize what it leaves. 0: plain RVQ
    content_dim: int = 0

    @property
    def hop_length(self) -> int:
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @classmethod
    def demo(cls) -> SmallCodecConfig:
        """The shipped demo codec: 8 x 1024 at 50 frames/s, ~4M parameters."""
        return cls()

    @classmethod
    def tiny(cls) -> SmallCodecConfig:
        """For tests: ~180k parameters, 4 x 64 codebooks, same hop as the demo."""
        return cls(n_filters=4, dimension=32, n_codebooks=4, codebook_size=64, lstm_layers=1)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratios"] = list(self.ratios)
        for name in ("decoder_filters", "content_dim"):  # configs saved before the field existed compare equal
            if not d[name]:
                del d[name]
        return d

    @staticmethod
    def tokenizer_part(config: Mapping[str, Any]) -> dict[str, Any]:
        """A codec config without what only the decoder uses: equal for codecs that make the same tokens."""
        return {k: v for k, v in config.items() if k != "decoder_filters"}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SmallCodecConfig:
        values = known_fields(cls, d)
        if "ratios" in values:
            values["ratios"] = tuple(values["ratios"])
        return cls(**values).validate()

    def validate(self) -> SmallCodecConfig:
        """Raise ValueError on values no codec can have (a damaged or hand-edited config)."""
        def count(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        sizes = (self.sample_rate, self.n_filters, self.dimension, self.n_codebooks, self.codebook_size,
                 self.n_residual_layers, self.kmeans_iters, *self.ratios)
        if not self.ratios or not all(map(count, sizes)) or not (self.decoder_filters is None
                                                                  or count(self.decoder_filters)):
            raise ValueError("sizes, ratios and counts must be positive integers")
        reals = (self.input_scale, self.ema_decay, self.dead_code_threshold)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in reals):
            raise ValueError("input_scale, ema_decay and dead_code_threshold must be positive numbers")
        if not isinstance(self.causal, bool) or not (isinstance(self.lstm_layers, int) and self.lstm_layers >= 0):
            raise ValueError("causal must be true or false, lstm_layers a count")
        if not (isinstance(self.content_dim, int) and 0 <= self.content_dim) or (self.content_dim
                                                                                  and self.n_codebooks < 2):
            raise ValueError("content_dim must be a count (0: none), and a content level needs 2 or more levels")
        return self


def kmeans(samples: Tensor, num_clusters: int, num_iters: int) -> tuple[Tensor, Tensor]:
    """encodec's k-means (same seeding, same updates) with distances from one matmul instead of
    an (N, C, D) difference tensor: 8 x 1024 codebooks initialise in about a second, not ~25 s."""
    means = sample_vectors(samples, num_clusters)  # (C, D)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        dists = 2 * samples @ means.t() - means.pow(2).sum(1)[None]  # (N, C), -|x-m|^2 + |x|^2
        buckets = dists.argmax(dim=-1)
        bins = torch.bincount(buckets, minlength=num_clusters)
        zero_mask = bins == 0
        new_means = samples.new_zeros(num_clusters, samples.shape[-1])
        new_means.index_add_(0, buckets, samples)
        new_means = new_means / bins.masked_fill(zero_mask, 1)[..., None]
        means = torch.where(zero_mask[..., None], means, new_means)
    return means, bins


CONTENT_DEAD_SHARE = 0.01  # a content entry used less than this x the mean use is revived


class _RevivingCodebook(EuclideanCodebook):
    """EuclideanCodebook whose dead-code replacement survives the next EMA update.

    encodec 0.1.1 writes new vectors for dead entries into `embed` only; the EMA step right after
    recomputes `embed` from the stale `embed_avg / cluster_size`, undoing it. Resetting the
    replaced entries' statistics too (as vector-quantize-pytorch does) makes revival stick.
    Its k-means initialisation is the faster `kmeans` above.
    """

    def replace_(self, samples: Tensor, mask: Tensor) -> None:
        new = sample_vectors(samples, self.codebook_size)  # (codebook_size, D)
        reset = float(self.threshold_ema_dead_code)
        self.embed.data.copy_(torch.where(mask[..., None], new, self.embed))
        self.embed_avg.data.copy_(torch.where(mask[..., None], new * reset, self.embed_avg))
        self.cluster_size.data.masked_fill_(mask, reset)

    @torch.jit.ignore
    def init_embed_(self, data: Tensor) -> None:
        if self.inited:
            return
        embed, cluster_size = kmeans(data, self.codebook_size, self.kmeans_iters)
        self.embed.data.copy_(embed)
        self.embed_avg.data.copy_(embed.clone())
        self.cluster_size.data.copy_(cluster_size)
        self.inited.data.copy_(torch.Tensor([True]))
        broadcast_tensors(self.buffers())  # same codebooks on every DDP worker


class SmallCodec(TrainableCodec):
    """EnCodec-architecture codec built from a `SmallCodecConfig`, trainable on CPU. `decoder=False`
    builds the tokenizer alone (encoder and quantizer), e.g. under a decoder trained apart (codecs/vocos.py).
    With `content_dim` its level 1 is a content level of its own (codecs/quantize.FactorizedCodebook) and
    the residual quantizer's K-1 levels code what that level leaves of the latent."""

    kind = SMALL_CODEC_KIND
    config_class = SmallCodecConfig

    def __init__(self, cfg: SmallCodecConfig, decoder: bool = True):
        super().__init__()
        self.cfg = cfg
        self.sample_rate = cfg.sample_rate
        self.hop_length = cfg.hop_length
        self.n_codebooks = cfg.n_codebooks
        self.codebook_size = cfg.codebook_size
        self.quantizer_enabled = True  # training skips the quantizer for its first steps
        self.tokenizer_frozen = False  # decoder-only fine-tuning: encoder + quantizer fixed
        common = dict(channels=1, dimension=cfg.dimension, n_residual_layers=cfg.n_residual_layers,
                      ratios=list(cfg.ratios), causal=cfg.causal, lstm=cfg.lstm_layers)
        with quiet_weight_norm():
            self.encoder = SEANetEncoder(n_filters=cfg.n_filters, **common)
            self.decoder = SEANetDecoder(n_filters=cfg.decoder_filters or cfg.n_filters, **common) if decoder else None
        self.content = None
        if cfg.content_dim:
            from .codecs.quantize import FactorizedCodebook  # codecs/ imports this module
            self.content = FactorizedCodebook(cfg.dimension, cfg.codebook_size, cfg.content_dim)
        self.quantizer = ResidualVectorQuantizer(
            dimension=cfg.dimension, n_q=cfg.n_codebooks - bool(self.content), bins=cfg.codebook_size,
            decay=cfg.ema_decay, kmeans_init=True, kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.dead_code_threshold)  # type: ignore[arg-type]
        for layer in self.quantizer.vq.layers:
            layer._codebook.__class__ = _RevivingCodebook  # same state, fixed replace_
        # With encodec's default init the encoder output barely varies and training collapses.
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def freeze_tokenizer(self) -> SmallCodec:
        """Fix the encoder and quantizer (weights, codebooks, eval mode) so that only the decoder
        trains: the codes every dataset was encoded with stay valid while the sound improves."""
        self.tokenizer_frozen = True
        for part in self.tokenizer_parts():
            part.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> SmallCodec:
        super().train(mode)
        if self.tokenizer_frozen:  # no EMA codebook updates, no dead-code revival
            for part in self.tokenizer_parts():
                part.eval()
        return self

    def tokenizer_parts(self) -> list[nn.Module]:
        """What decides the tokens: the encoder, the quantizer and the content level if there is one."""
        return [self.encoder, self.quantizer, *([self.content] if self.content is not None else [])]

    def _latent(self, wav: Tensor) -> Tensor:
        return self.encoder(wav[:, None] * self.cfg.input_scale)  # (B, D, F)

    def synthesize(self, latent: Tensor) -> Tensor:
        """(B, D, F) latent -> (B, F*hop) waveform: the decoder alone (training also decodes level 1 by itself)."""
        if self.decoder is None:
            raise RuntimeError("this codec was built without its decoder (a tokenizer only)")
        return self.decoder(latent)[:, 0] / self.cfg.input_scale  # (B, F*hop)

    def forward(self, wav: Tensor) -> TrainOutput:
        """Training pass: (B, N) -> reconstruction (B, F*hop), codes (B, K, F) (None when the quantizer
        is disabled) and the commitment loss (its codebooks follow an EMA, not a loss)."""
        n_frames = self.frames_for(wav.shape[-1])
        wav = nn.functional.pad(wav, (0, self.samples_for(n_frames) - wav.shape[-1]))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.tokenizer_frozen):
            latent = self._latent(wav)
            if not self.quantizer_enabled:
                return TrainOutput(self.synthesize(latent), None, {"commitment": latent.new_zeros(())})
            if self.content is not None:
                return self._content_forward(latent)
            q = self.quantizer(latent, int(self.cfg.frame_rate))
        codes = q.codes.transpose(0, 1)  # (K, B, F) -> (B, K, F)
        first = self.quantizer.vq.layers[0].decode(codes[:, 0])  # (B, D, F)
        first = latent + (first - latent).detach()  # straight through, as the quantizer's own output
        return TrainOutput(self.synthesize(q.quantized), codes, {"commitment": q.penalty.reshape(())},
                           first_level=first, latent=latent)

    def _content_forward(self, latent: Tensor) -> TrainOutput:
        """Training pass below a content level: its straight-through vectors, then the RVQ on what they
        leave; the commitment term adds the content level's commitment and codebook losses (its entries
        learn by gradient, not by EMA). Unused entries are revived from the batch (the first batch seeds all)."""
        first, content_codes, z_e, commit, book = self.content(latent)
        if self.training and not self.tokenizer_frozen:
            self.content.revive(z_e, content_codes, torch.ones_like(content_codes, dtype=torch.bool),
                                self.cfg.ema_decay, CONTENT_DEAD_SHARE)
        q = self.quantizer(latent - first, int(self.cfg.frame_rate))
        codes = torch.cat([content_codes[:, None], q.codes.transpose(0, 1)], 1)  # (B, K, F)
        penalty = q.penalty.reshape(()) + commit.mean() + book.mean()
        return TrainOutput(self.synthesize(first + q.quantized), codes, {"commitment": penalty},
                           first_level=first, latent=latent)

    def _encode(self, wav: Tensor) -> Tensor:
        latent = self._latent(wav)
        if self.content is None:
            return self.quantizer.encode(latent, int(self.cfg.frame_rate)).transpose(0, 1)  # (K, B, F) -> (B, K, F)
        first = self.content.encode(latent)  # (B, F)
        rest = self.quantizer.encode(latent - self.content.decode(first), int(self.cfg.frame_rate))
        return torch.cat([first[:, None], rest.transpose(0, 1)], 1)

    def dequantize(self, codes: Tensor) -> Tensor:
        """(B, K, F) codes (or the first K' levels) -> (B, D, F), what the decoder reads."""
        if self.content is None:
            return self.quantizer.decode(codes.transpose(0, 1))
        first = self.content.decode(codes[:, 0])
        return first if codes.shape[1] == 1 else first + self.quantizer.decode(codes[:, 1:].transpose(0, 1))

    def _decode(self, codes: Tensor) -> Tensor:
        return self.synthesize(self.dequantize(codes))

    @classmethod
    def token_config_of(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        return SmallCodecConfig.tokenizer_part(config)
