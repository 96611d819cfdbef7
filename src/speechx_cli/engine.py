"""Generation: AR decoding with a pre-allocated KV cache, sampling, NAR passes.

The AR model fills codebook 1 one frame at a time for a whole batch. Conditions are
left-padded (prompts.collate), so every row's output starts at the same cache column C and one
step appends one column for all rows. Rows differ only in their stopping rule:
  - known length (ns/sr/tse): <eos> is forbidden before `out_frames`, forced at it;
  - otherwise (tts/edit): stop at <eos> or at the row's frame limit;
  - given frames are fed instead of sampled: a prefix (edit: C(pre), its first P steps), or any frames
    of the output (remove-speech: the input's own codes where it holds no speech, speechfree.py).
The NAR model then fills codebooks 2..K greedily, one full pass per codebook. An AR with ar_levels
A > 1 writes levels 1..A in a delay pattern (delay.py) and the NAR fills A+1..K.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from .delay import extra_steps, input_id
from .model import ARModel, KVCache, NARModel, prefix_lm_mask
from .prompts import PAD, Batch, Prompt, collate, eos_class


# Greedy decoding locks into silence: a silence code, then the same code or a few silence codes for good.
# Sampling one code after a run of identical ones lets it out; after runs of 4, fewest items fell silent
# (checkpoints/README.md, "Greedy with an escape").
ESCAPE_AFTER = 4


@dataclass(frozen=True)
class DecodingOptions:
    """Knobs of AR sampling. temperature 0 means greedy."""

    # every command samples by default: greedy decoding falls into runs of silence codes, and a file then
    # drops 10 dB halfway (checkpoints/README.md, "Greedy denoise falls silent"). 0.7 rather than 1: with
    # demo v2, tts's WER is 0.11 lower on two sets of 40 items and the other tasks measure the same
    # (checkpoints/README.md, "Sampling temperature")
    temperature: float = 0.7
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int | None = 0
    max_seconds: float = 30.0  # guard for tasks whose output length is not known (tts, edit)
    # greedy only: after this many identical codes in a row, the next code is sampled at temperature 1
    # rather than taken as the argmax (0 = pure argmax)
    escape_after: int = ESCAPE_AFTER

    def validate(self) -> "DecodingOptions":
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top-k must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top-p must be in (0, 1]")
        if self.max_seconds <= 0:
            raise ValueError("max-seconds must be > 0")
        if self.escape_after < 0:
            raise ValueError("escape-after must be >= 0")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def draws(self) -> bool:
        """Whether decoding may draw random numbers (sampling, or greedy's escapes)."""
        return not self.greedy or self.escape_after > 0


def escape_rows(codes: torch.Tensor, opts: DecodingOptions) -> torch.Tensor | None:
    """(B, t) codes so far -> (B,) bool: greedy rows whose last `escape_after` codes are identical, which
    sample their next code; None when no row can (sampling, escapes off, or fewer codes than that)."""
    r = opts.escape_after
    if not (opts.greedy and r) or codes.shape[1] < r:
        return None
    last = codes[:, -r:]
    return (last == last[:, -1:]).all(-1)


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k then nucleus filtering of (B, V) logits; removed entries become -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > top_p  # keep the token that crosses top_p
        drop = drop.scatter(-1, order, drop)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def row_generators(batch: Batch, opts: DecodingOptions) -> list[torch.Generator] | None:
    """One random stream per row, seeded by the seed and the row's own condition (and, for the k-th copy
    of a condition in the batch, by k): a row draws the same samples whatever else is in its batch, so a
    file comes out the same alone or in a folder, and copies of one prompt (draws) differ. None when
    decoding draws nothing (greedy without escapes) or has no seed."""
    if opts.seed is None or not opts.draws:
        return None
    seen: dict[bytes, int] = {}
    generators = []
    for tokens, types in zip(batch.tokens.cpu(), batch.types.cpu()):
        valid = types != PAD
        key = tokens[valid].numpy().tobytes() + types[valid].numpy().tobytes()
        copy = seen[key] = seen.get(key, -1) + 1
        digest = hashlib.blake2b(key, digest_size=8, key=f"{opts.seed}/{copy}".encode()).digest()
        seed = int.from_bytes(digest, "little") & (2**63 - 1)
        generators.append(torch.Generator(device=batch.tokens.device).manual_seed(seed))
    return generators


def _draw(probs: torch.Tensor, generators: torch.Generator | list[torch.Generator] | None,
          rows: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) probabilities -> (B,) drawn ids; with one generator per row, each row from its own stream,
    and only the `rows` (B,) bool that need a draw advance theirs (the others get 0)."""
    if not isinstance(generators, list):
        return torch.multinomial(probs, 1, generator=generators).squeeze(-1)
    # one uniform per drawing row from its stream, then the inverse of each row's CDF (one batched search)
    draw = torch.ones(probs.shape[0], dtype=torch.bool, device=probs.device) if rows is None else rows
    u = torch.zeros(probs.shape[0], dtype=probs.dtype, device=probs.device)
    for i in draw.nonzero().flatten().tolist():
        u[i] = torch.rand((), generator=generators[i], device=probs.device)
    cdf = probs.cumsum(-1)
    ids = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
    # a draw rounded past the end takes the last id the row can take
    last = probs.shape[1] - 1 - (probs > 0).flip(-1).int().argmax(-1)
    return torch.where(draw, torch.minimum(ids, last), 0)


def sample(logits: torch.Tensor, opts: DecodingOptions, generator: torch.Generator | list[torch.Generator] | None,
           escape: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. Greedy rows flagged in `escape` (B,) bool sample at temperature 1.
    `generator`: one for the batch, or one per row (row_generators)."""
    if opts.greedy:
        best = logits.argmax(-1)
        if escape is None or not bool(escape.any()):
            return best
        return torch.where(escape, _draw(logits.softmax(-1), generator, escape), best)
    probs = filter_logits(logits / opts.temperature, opts.top_k, opts.top_p).softmax(-1)
    return _draw(probs, generator)


def make_caches(model: ARModel | NARModel, batch: int, length: int, device, dtype) -> list[KVCache]:
    cfg = model.cfg
    return [KVCache(batch, cfg.n_heads, length, cfg.d_model // cfg.n_heads, dtype, device)
            for _ in range(cfg.n_layers)]


@torch.inference_mode()
def prefill(model: ARModel | NARModel, batch: Batch, caches: list[KVCache]) -> None:
    """Run the condition through the model, filling cache columns [0, C)."""
    x = model.cond(batch.tokens, batch.types, batch.positions)  # (B, C, d)
    empty = batch.cond_valid[:, :0]
    model.run(x, prefix_lm_mask(batch.cond_valid, empty, causal=True), caches, 0)


@torch.inference_mode()
def decode_states(model: ARModel, token: torch.Tensor, step: int, start: int, key_valid: torch.Tensor,
                  caches: list[KVCache]) -> torch.Tensor:
    """Feed one output step per row (token (B,), or (B, A) with several AR levels) at output position
    `step` (cache column start+step) -> the final states (B, d) that the heads read."""
    b = token.shape[0]
    pos = torch.full((b, 1), step, dtype=torch.long, device=token.device)
    col = start + step
    h = model.run(model.embed_output(token[:, None], pos), key_valid[:, None, None, : col + 1], caches, col)
    return h[:, -1]


@torch.inference_mode()
def decode_step(model: ARModel, token: torch.Tensor, step: int, start: int, key_valid: torch.Tensor,
                caches: list[KVCache]) -> torch.Tensor:
    """decode_states, then level 1's logits (B, V+1)."""
    return model.head(decode_states(model, token, step, start, key_valid, caches)).float()


@torch.inference_mode()
def generate_ar(model: ARModel, batch: Batch, opts: DecodingOptions, limits: torch.Tensor,
                known: torch.Tensor, prefix: torch.Tensor, given: torch.Tensor) -> list[torch.Tensor]:
    """The AR's codes per row: (T_b,) codebook-1 codes, or (T_b, A) with A = ar_levels > 1.

    limits (B,): most frames a row may produce (= out_frames for known-length rows);
    known (B,) bool: the row must produce exactly `limits` frames;
    prefix (B, P) or (B, P, >=A) / given (B, P) bool: codes of the first P frames, and which of them are fed
    instead of sampled (every level the AR writes; a plain prefix gives all of its frames).
    With A > 1, step t writes level k of frame t-k (delay.py): level 1 is sampled and decides the length
    as at A = 1; the other levels follow it by k steps, take their argmax (as the NAR fills its levels;
    sampled at the temperature, a 4-level AR's WER was 0.08 higher, within the noise: docs/demo-v2.md)
    and stop with it.
    """
    device = batch.tokens.device
    b, c = batch.types.shape
    v, a = model.cfg.codebook_size, model.cfg.ar_levels
    eos = eos_class(v)
    steps = int(limits.max())
    tail = extra_steps(a) - 1  # steps after level 1's <eos> that finish the delayed levels
    dtype = next(model.parameters()).dtype
    caches = make_caches(model, b, c + steps + 1 + tail, device, dtype)
    key_valid = torch.zeros(b, c + steps + 1 + tail, dtype=torch.bool, device=device)
    key_valid[:, :c] = batch.cond_valid
    generator = row_generators(batch, opts)

    prefill(model, batch, caches)
    out = torch.zeros(b, steps + tail + 1, a, dtype=torch.long, device=device)
    lengths = limits.clone()
    done = torch.zeros(b, dtype=torch.bool, device=device)
    bos, end = input_id(v, "<bos>"), input_id(v, "<eos>")
    token = torch.full((b, a), bos, dtype=torch.long, device=device)
    prefix = prefix[..., None] if prefix.dim() == 2 else prefix  # (B, P, levels given)
    if prefix.shape[1] and prefix.shape[2] < a:
        raise ValueError(f"generate_ar: a prefix needs the AR's {a} levels, got {prefix.shape[2]}")
    prefix = prefix[..., :a]
    prefix = torch.nn.functional.pad(prefix, (0, a - prefix.shape[2], 0, steps + tail + 1 - prefix.shape[1]))
    given = _pad_frames(given, steps + tail + 1)
    for t in range(steps + 1 + tail):
        key_valid[:, c + t] = True
        h = decode_states(model, token if a > 1 else token[:, 0], t, c, key_valid, caches)
        if t <= steps and not bool(done.all()):
            logits = model.head(h).float()
            no_eos = given[:, t] | (known & (t < limits))
            logits[:, eos] = logits[:, eos].masked_fill(no_eos, float("-inf"))
            nxt = sample(logits, opts, generator, escape_rows(out[:, :t, 0], opts))
            nxt = torch.where(given[:, t], prefix[:, t, 0], nxt)
            nxt = torch.where(t >= limits, eos, nxt)
            stop = (nxt == eos) & ~done
            lengths = torch.where(stop, t, lengths)
            done |= stop
            out[:, t, 0] = torch.where(done, 0, nxt)
        for k in range(1, min(a, t + 1)):  # level k+1 of frame t-k: its argmax, as the NAR fills its levels
            f = t - k
            code = model.level_heads[k - 1](h).argmax(-1)
            out[:, f, k] = torch.where(given[:, f], prefix[:, f, k], code)
        if bool(done.all()) and t >= int(lengths.max()) + tail:  # every level of every row written
            break
        # next step's inputs: level k reads its code of frame t-k (<bos> before it, <eos> after the row ends)
        frame = t - torch.arange(a, device=device)  # (A,)
        ended = (frame[None, :] >= lengths[:, None]) & done[:, None]
        read = out[:, frame.clamp(min=0), torch.arange(a, device=device)]  # (B, A)
        token = torch.where(frame[None, :] < 0, bos, torch.where(ended, end, read))
    if a == 1:
        return [out[i, : lengths[i], 0] for i in range(b)]
    return [out[i, : lengths[i]] for i in range(b)]


@torch.inference_mode()
def generate_nar(model: NARModel, batch: Batch, first: list[torch.Tensor], prefix: torch.Tensor,
                 given: torch.Tensor) -> list[torch.Tensor]:
    """Fill codebooks 2..K greedily. first: per-row (T_b,) codebook-1 codes -> per-row (T_b, K).

    prefix (B, P, K) / given (B, P) bool: frames whose every level is the prefix's instead of the argmax.

    A row of `first` may be (T_b, L) instead: its first L levels are known (the same L in every row)
    and only levels L+1..K are filled; eval/oracle.py gives the true answer's levels this way.
    The condition never attends to the output, so its keys/values are computed once and reused
    by every level; each level then runs only the T output positions.
    """
    device = batch.tokens.device
    k = model.cfg.n_codebooks
    lengths = torch.tensor([len(f) for f in first], device=device)
    b, t = len(first), max(1, int(lengths.max()))
    c = batch.types.shape[1]
    codes = torch.zeros(b, t, k, dtype=torch.long, device=device)
    counts = {1 if f.dim() == 1 else f.shape[1] for f in first}
    if len(counts) != 1 or not 1 <= min(counts) <= k:
        raise ValueError(f"generate_nar: rows give {sorted(counts)} known levels; need one count in 1..{k}")
    known = counts.pop()
    for i, f in enumerate(first):
        codes[i, : len(f), :known] = f.reshape(len(f), known)
    frame = torch.arange(t, device=device)
    out_valid = frame[None, :] < lengths[:, None]  # (B, T)
    from_prefix = _pad_frames(given, t)
    prefix = torch.nn.functional.pad(prefix, (0, 0, 0, max(0, t - prefix.shape[1])))[:, :t]

    caches = make_caches(model, b, c + t, device, next(model.parameters()).dtype)
    prefill(model, batch, caches)
    keys = torch.cat([batch.cond_valid, out_valid], 1)  # (B, C+T)
    mask = keys[:, None, None, :] | torch.eye(c + t, dtype=torch.bool, device=device)[None, None, c:]
    for level in range(known, k):  # each level runs on the condition's cache alone: known levels are skipped
        lv = torch.full((b,), level, dtype=torch.long, device=device)
        h = model.run(model.embed_output(codes, lv), mask, caches, c)  # (B, T, d)
        logits = model.heads[level - 1](h)
        codes[..., level] = torch.where(from_prefix, prefix[..., level], logits.argmax(-1))
    return [codes[i, : lengths[i]] for i in range(b)]


def _pad_frames(given: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, P) bool -> (B, frames): False past P."""
    return torch.nn.functional.pad(given.bool(), (0, max(0, frames - given.shape[1])))[:, :frames]


def frame_limits(prompts: list[Prompt], opts: DecodingOptions, frame_rate: float,
                 max_frames: list[int | None] | None = None) -> torch.Tensor:
    """Per-row frame limit: the known length, else prefix + max_seconds (or a caller's own cap)."""
    cap = int(round(opts.max_seconds * frame_rate))
    limits = []
    for i, p in enumerate(prompts):
        if p.out_frames is not None:
            limits.append(p.out_frames)
            continue
        own = None if max_frames is None else max_frames[i]
        limits.append(len(p.prefix) + (cap if own is None else min(own, cap)))
    return torch.tensor(limits, dtype=torch.long)


@torch.inference_mode()
def generate(ar: ARModel, nar: NARModel, prompts: list[Prompt], opts: DecodingOptions,
             frame_rate: float, max_frames: list[int | None] | None = None) -> list[torch.Tensor]:
    """Prompts -> output codes, one (T_b, K) tensor per prompt (AR then NAR, one batch)."""
    opts.validate()
    device = next(ar.parameters()).device
    batch = collate(prompts).to(device)
    limits = frame_limits(prompts, opts, frame_rate, max_frames).to(device)
    known = torch.tensor([p.out_frames is not None for p in prompts], device=device)
    k = prompts[0].n_codebooks
    p_max = max(len(p.prefix) for p in prompts)
    prefix = torch.zeros(len(prompts), p_max, k, dtype=torch.long, device=device)
    given = torch.zeros(len(prompts), p_max, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        if p.given is not None and p.given.shape != (len(p.prefix),):
            raise ValueError(f"generate: given marks {tuple(p.given.shape)} frames of a {len(p.prefix)}-frame prefix")
        prefix[i, : len(p.prefix)] = p.prefix
        given[i, : len(p.prefix)] = True if p.given is None else p.given
    first = generate_ar(ar, batch, opts, limits, known, prefix[..., : ar.cfg.ar_levels], given)
    return [c.cpu() for c in generate_nar(nar, batch, first, prefix, given)]
