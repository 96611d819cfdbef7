"""SpeechX Transformers: nn.Modules only (config, attention, blocks, AR, NAR). No sampling, no I/O.

Both models read the same condition sequence (see prompts.py): phonemes through a text
embedding, codec frames as the sum of their K codebook embeddings, special tokens through the
same tables (they own reserved rows), plus a kind embedding and sinusoidal positions.

AR: prefix-LM over [condition | <bos>, y1_0 .. y1_{T-1}] predicting codebook 1 and <eos>; with
ar_levels A > 1 it predicts levels 1..A in MusicGen's delay pattern (delay.py) and the NAR fills the rest.
NAR: full attention over [condition | sum_{k<l} emb_k(y_k)] + level embedding, predicting codebook l.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .prompts import ACOUSTIC, N_SPECIAL, SPECIAL, TEXT

OUTPUT_KIND = 3  # kind-embedding row of output positions (PAD, TEXT, ACOUSTIC are 0..2)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one AR or NAR Transformer; saved inside every checkpoint."""

    n_text_tokens: int = 128
    codebook_size: int = 1024
    n_codebooks: int = 8
    d_model: int = 1024
    n_heads: int = 16
    n_layers: int = 12
    d_ff: int = 4096
    dropout: float = 0.1
    max_positions: int = 8192  # length of the sinusoid table, per segment
    ar_levels: int = 1  # codebook levels the AR predicts (delay pattern); the NAR fills the others

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError("d_model must be divisible by n_heads")
        if not 1 <= self.ar_levels <= self.n_codebooks:
            raise ValueError(f"ar_levels must be in 1..{self.n_codebooks}")

    @property
    def n_acoustic_tokens(self) -> int:
        return self.codebook_size + N_SPECIAL

    @classmethod
    def paper(cls, **kw) -> "ModelConfig":
        return cls(**kw)

    @classmethod
    def demo(cls, **kw) -> "ModelConfig":
        return cls(**{**dict(d_model=256, n_heads=4, n_layers=6, d_ff=1024, dropout=0.1), **kw})

    @classmethod
    def tiny(cls, **kw) -> "ModelConfig":
        base = dict(codebook_size=64, n_codebooks=4, d_model=64, n_heads=4, n_layers=2,
                    d_ff=128, dropout=0.0, max_positions=2048)
        return cls(**{**base, **kw})

    def to_dict(self) -> dict:
        return asdict(self)

    def flops_per_token(self, context: int) -> float:
        """Forward FLOPs for one token attending to `context` positions (2 per multiply-add)."""
        d, L = self.d_model, self.n_layers
        matmuls = 2 * L * (4 * d * d + 2 * d * self.d_ff)
        attention = 2 * L * 2 * context * d
        return float(matmuls + attention)


def sinusoids(length: int, channels: int) -> torch.Tensor:
    """(length, channels) sinusoidal position table (whisper's layout)."""
    log_timescale = math.log(10000) / (channels // 2 - 1)
    inv = torch.exp(-log_timescale * torch.arange(channels // 2))
    t = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1)


class KVCache(nn.Module):
    """Pre-allocated keys/values of one layer, filled in place (no torch.cat in the token loop)."""

    def __init__(self, batch: int, n_heads: int, length: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_heads, length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, H, end, D)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor, cache: KVCache | None = None,
                start: int = 0) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))  # (B, H, T, D)
        if cache is not None:
            k, v = cache.update(start, k, v)  # (B, H, start + T, D)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm Transformer layer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(),
                                nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, mask, cache=None, start=0):
        x = x + self.drop(self.attn(self.norm1(x), mask, cache, start))
        return x + self.drop(self.ff(self.norm2(x)))


class ConditionEmbedding(nn.Module):
    """Embeds condition positions: phonemes, codec frames (sum over codebooks), special tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.text = nn.Embedding(cfg.n_text_tokens, cfg.d_model)
        self.acoustic = nn.ModuleList(
            nn.Embedding(cfg.n_acoustic_tokens, cfg.d_model) for _ in range(cfg.n_codebooks))
        self.kind = nn.Embedding(4, cfg.d_model)
        self.init_buffers()

    def init_buffers(self) -> None:
        """(Re)compute the non-persistent buffers, e.g. after building on the meta device."""
        self.register_buffer("pos", sinusoids(self.cfg.max_positions, self.cfg.d_model), persistent=False)

    def frames(self, codes: torch.Tensor, n: int | None = None) -> torch.Tensor:
        """Sum of the first n codebook embeddings of (B, T, K) codes -> (B, T, d)."""
        n = self.cfg.n_codebooks if n is None else n
        return sum(self.acoustic[k](codes[..., k]) for k in range(n))

    def position(self, positions: torch.Tensor) -> torch.Tensor:
        return self.pos[positions.clamp(max=self.cfg.max_positions - 1)]

    def forward(self, tokens: torch.Tensor, types: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # tokens (B, C, K), types/positions (B, C) -> (B, C, d)
        is_text = (types == TEXT).unsqueeze(-1)
        is_ac = (types == ACOUSTIC).unsqueeze(-1)
        text_ids = torch.where(types == TEXT, tokens[..., 0], 0)
        ac_ids = torch.where(is_ac, tokens, 0)
        x = self.text(text_ids) * is_text + self.frames(ac_ids) * is_ac
        return x + self.kind(types) + self.position(positions)


def prefix_lm_mask(cond_valid: torch.Tensor, out_valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, C+T, C+T) boolean attention mask, True = may attend.

    Condition queries see every valid condition key; output queries see the condition and
    (causal) earlier outputs or (not causal) every valid output. Each query also sees itself so
    that padding rows never attend to nothing (which would make NaNs).
    """
    b, c = cond_valid.shape
    t = out_valid.shape[1]
    keys = torch.cat([cond_valid, out_valid], dim=1)  # (B, L)
    allowed = keys[:, None, :].expand(b, c + t, c + t).clone()  # (B, Lq, Lk)
    allowed[:, :c, c:] = False  # the condition never looks at the output
    if causal:
        allowed[:, c:, c:] &= torch.ones(t, t, dtype=torch.bool, device=keys.device).tril()
    allowed |= torch.eye(c + t, dtype=torch.bool, device=keys.device)
    return allowed.unsqueeze(1)


class _Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.cond = ConditionEmbedding(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        self.apply(_init_weights)

    def run(self, x: torch.Tensor, mask: torch.Tensor, caches: list[KVCache] | None = None,
            start: int = 0) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, mask, None if caches is None else caches[i], start)
        return self.norm(x)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


class ARModel(_Backbone):
    """Predicts codebook 1 of the output frame by frame (classes: codebook_size codes + <eos>); with
    cfg.ar_levels A > 1 also levels 2..A, delayed by one step per level (delay.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.codebook_size + 1)
        # levels 2..A (none at A = 1: such checkpoints hold the same tensors as before ar_levels existed)
        self.level_heads = nn.ModuleList(nn.Linear(cfg.d_model, cfg.codebook_size) for _ in range(cfg.ar_levels - 1))
        self.level_heads.apply(_init_weights)

    def embed_output(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # tokens (B, T) at A = 1, else (B, T, A): <bos>, codes or <eos> per level -> (B, T, d)
        if tokens.dim() == 2:
            x = self.cond.acoustic[0](tokens)
        else:
            x = sum(self.cond.acoustic[k](tokens[..., k]) for k in range(tokens.shape[-1]))
        return x + self.cond.position(positions) + self.cond.kind.weight[OUTPUT_KIND]

    def forward(self, tokens, types, positions, out_tokens, out_valid) -> torch.Tensor:
        """Teacher-forced logits (B, T, codebook_size + 1) of level 1 for the output positions."""
        return self.head(self.features(tokens, types, positions, out_tokens, out_valid))

    def level_logits(self, states: torch.Tensor) -> list[torch.Tensor]:
        """Per AR level, the logits of (..., d) states: level 1 with <eos> (V + 1 classes), then V each."""
        return [self.head(states)] + [h(states) for h in self.level_heads]

    def features(self, tokens, types, positions, out_tokens, out_valid) -> torch.Tensor:
        """The final (normed) hidden states (B, T, d) of the output positions: what the head reads
        (training aids such as an auxiliary CTC head read them too)."""
        t = out_tokens.shape[1]
        out_pos = torch.arange(t, device=out_tokens.device).expand(out_tokens.shape[:2])
        x = torch.cat([self.cond(tokens, types, positions), self.embed_output(out_tokens, out_pos)], 1)
        mask = prefix_lm_mask(types != 0, out_valid, causal=True)
        return self.run(x, mask)[:, -t:]

    @staticmethod
    def bos(codebook_size: int) -> int:
        return codebook_size + SPECIAL["<bos>"]


class NARModel(_Backbone):
    """Predicts codebook l (2..K) of all output frames at once, given codebooks < l."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.level = nn.Embedding(cfg.n_codebooks, cfg.d_model)
        self.heads = nn.ModuleList(
            nn.Linear(cfg.d_model, cfg.codebook_size) for _ in range(cfg.n_codebooks - 1))
        self.level.apply(_init_weights)
        self.heads.apply(_init_weights)

    def embed_output(self, codes: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        # codes (B, T, K), level (B,) in 1..K-1 -> (B, T, d): sum of codebooks < level
        k = self.cfg.n_codebooks
        below = torch.arange(k, device=codes.device)[None, :] < level[:, None]  # (B, K)
        x = sum(self.cond.acoustic[i](codes[..., i]) * below[:, i, None, None] for i in range(k))
        pos = torch.arange(codes.shape[1], device=codes.device)
        return x + self.cond.position(pos)[None] + self.level(level)[:, None] + self.cond.kind.weight[OUTPUT_KIND]

    def forward(self, tokens, types, positions, out_codes, out_valid, level) -> torch.Tensor:
        """Logits (B, T, codebook_size) of codebook `level` (0-based, 1..K-1; one per row)."""
        t = out_codes.shape[1]
        x = torch.cat([self.cond(tokens, types, positions), self.embed_output(out_codes, level)], 1)
        mask = prefix_lm_mask(types != 0, out_valid, causal=False)
        h = self.run(x, mask)[:, -t:]  # (B, T, d)
        weight = torch.stack([hd.weight for hd in self.heads])[level - 1]  # (B, V, d)
        bias = torch.stack([hd.bias for hd in self.heads])[level - 1]  # (B, V)
        return torch.einsum("btd,bvd->btv", h, weight) + bias[:, None]
