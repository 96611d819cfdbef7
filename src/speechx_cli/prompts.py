"""The SpeechX sequence layouts: the only place they and the special-token ids are written down.

Every task is a *condition* (text part + acoustic part) followed by the *output* (codec frames).
The condition is one sequence of C positions; each position is either a phoneme, a codec frame
(all K codebooks) or a special token:

    tts          T(text)                 C(enrollment)
    ns           T(text)?                <ns>  C(noisy)
    sr           T(text)?                <sr>  C(noisy)
    tse          T(text)?                C(enrollment)  <tse>  C(mixture)
    edit_clean   T(full edited text)     C(pre)  <soe>  <mask>          <eoe>  C(post)
    edit_noisy   T(full edited text)     C(pre)  <soe>  C(noisy middle)  <eoe>  C(post)

The output is C(speech) for tts, C(s) for ns, C(n) for sr, C(s1) for tse and the whole edited
utterance for both edits (its first frames are C(pre), which the engine prefills).

Token spaces. Codes are laid out frames-major here: (T, K). Each codebook's embedding table has
``codebook_size + N_SPECIAL`` rows: rows below ``codebook_size`` are codec entries, the rest are
the special tokens of SPECIAL_TOKENS in fixed, reserved slots (a new task takes a reserved slot, so
ids never shift). A special position stores its id in every codebook column.

Positions restart at 0 after every special token (a special token itself sits at 0) and output
positions start at 0 too, so output frame i lines up with frame i of the segment it is derived
from (the mixture for ns/sr/tse, the utterance for edits).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch

# Fixed slots: append new names only by replacing a "<reserved-N>" entry, never by reordering.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<pad>", "<bos>", "<eos>", "<ns>", "<sr>", "<tse>", "<soe>", "<eoe>", "<mask>",
    "<reserved-9>", "<reserved-10>", "<reserved-11>", "<reserved-12>", "<reserved-13>",
    "<reserved-14>", "<reserved-15>",
)
N_SPECIAL = len(SPECIAL_TOKENS)
SPECIAL = {name: i for i, name in enumerate(SPECIAL_TOKENS)}

# Kinds of condition position (cond_type values).
PAD, TEXT, ACOUSTIC = 0, 1, 2
TEXT_PAD_ID = 0  # PHONEME_TABLE[0] is "<pad>"
IGNORE_INDEX = -100  # label value that the losses skip


class Task(str, Enum):
    TTS = "tts"
    NS = "ns"
    SR = "sr"
    TSE = "tse"
    EDIT_CLEAN = "edit_clean"
    EDIT_NOISY = "edit_noisy"

    @property
    def known_length(self) -> bool:
        """NS, SR and TSE output exactly as many frames as their input mixture."""
        return self in (Task.NS, Task.SR, Task.TSE)

    @property
    def text_optional(self) -> bool:
        return self in (Task.NS, Task.SR, Task.TSE)


def special_id(name: str, codebook_size: int) -> int:
    """Acoustic-table id of a special token."""
    return codebook_size + SPECIAL[name]


def eos_class(codebook_size: int) -> int:
    """AR output class meaning end of speech (the AR head has codebook_size + 1 classes)."""
    return codebook_size


@dataclass(frozen=True)
class Prompt:
    """One condition sequence plus what the engine needs to know about the output."""

    task: Task
    tokens: torch.Tensor  # (C, K) text id in column 0, or codes, or special id in every column
    types: torch.Tensor  # (C,) TEXT or ACOUSTIC
    positions: torch.Tensor  # (C,)
    prefix: torch.Tensor  # (P, K) output frames known in advance (C(pre) for edits), P may be 0
    out_frames: int | None  # exact output length for ns/sr/tse, else None
    # (P,) bool: which frames of `prefix` the engine feeds instead of generating (None: all of them, a plain
    # prefix); remove-speech gives its input's codes as the prefix and feeds only the speech-free frames
    given: torch.Tensor | None = None

    @property
    def n_codebooks(self) -> int:
        return self.tokens.shape[1]


class _Builder:
    """Accumulates condition pieces in order; keeps the position rule in one place."""

    def __init__(self, n_codebooks: int, codebook_size: int):
        self.k, self.v = n_codebooks, codebook_size
        self.tokens: list[torch.Tensor] = []
        self.types: list[torch.Tensor] = []
        self.positions: list[torch.Tensor] = []

    def text(self, ids: torch.Tensor | None) -> "_Builder":
        if ids is None or len(ids) == 0:
            return self
        ids = torch.as_tensor(ids, dtype=torch.long)
        tok = torch.zeros(len(ids), self.k, dtype=torch.long)
        tok[:, 0] = ids
        self._add(tok, TEXT, torch.arange(len(ids)))
        return self

    def frames(self, codes: torch.Tensor) -> "_Builder":
        codes = _check_codes(codes, self.k, self.v)
        self._add(codes, ACOUSTIC, torch.arange(len(codes)))
        return self

    def special(self, name: str) -> "_Builder":
        tok = torch.full((1, self.k), special_id(name, self.v), dtype=torch.long)
        self._add(tok, ACOUSTIC, torch.zeros(1, dtype=torch.long))
        return self

    def _add(self, tok: torch.Tensor, kind: int, pos: torch.Tensor) -> None:
        self.tokens.append(tok)
        self.types.append(torch.full((len(tok),), kind, dtype=torch.long))
        self.positions.append(pos.long())

    def build(self, task: Task, prefix: torch.Tensor | None = None, out_frames: int | None = None) -> Prompt:
        empty = torch.zeros(0, self.k, dtype=torch.long)
        return Prompt(
            task=task,
            tokens=torch.cat(self.tokens),
            types=torch.cat(self.types),
            positions=torch.cat(self.positions),
            prefix=empty if prefix is None else prefix,
            out_frames=out_frames,
        )


def _check_codes(codes: torch.Tensor, n_codebooks: int, codebook_size: int) -> torch.Tensor:
    codes = torch.as_tensor(codes, dtype=torch.long)
    if codes.ndim != 2 or codes.shape[1] != n_codebooks:
        raise ValueError(f"codes must be (frames, {n_codebooks}), got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size})")
    return codes


def tts(text: torch.Tensor, enrollment: torch.Tensor, codebook_size: int) -> Prompt:
    """Zero-shot TTS: target text only, C(enrollment) as the voice prompt."""
    if len(text) == 0:
        raise ValueError("tts needs a non-empty text")
    b = _Builder(enrollment.shape[1], codebook_size).text(text).frames(enrollment)
    return b.build(Task.TTS)


def ns(noisy: torch.Tensor, codebook_size: int, text: torch.Tensor | None = None) -> Prompt:
    """Noise suppression: [T?] <ns> C(s+n) -> C(s)."""
    b = _Builder(noisy.shape[1], codebook_size).text(text).special("<ns>").frames(noisy)
    return b.build(Task.NS, out_frames=len(noisy))


def sr(noisy: torch.Tensor, codebook_size: int, text: torch.Tensor | None = None) -> Prompt:
    """Speech removal: [T?] <sr> C(s+n) -> C(n)."""
    b = _Builder(noisy.shape[1], codebook_size).text(text).special("<sr>").frames(noisy)
    return b.build(Task.SR, out_frames=len(noisy))


def tse(enrollment: torch.Tensor, mixture: torch.Tensor, codebook_size: int,
        text: torch.Tensor | None = None) -> Prompt:
    """Target speaker extraction: [T?] C(enrollment) <tse> C(s1+s2) -> C(s1)."""
    b = _Builder(mixture.shape[1], codebook_size).text(text).frames(enrollment)
    b.special("<tse>").frames(mixture)
    return b.build(Task.TSE, out_frames=len(mixture))


def edit(text: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, codebook_size: int,
         middle: torch.Tensor | None = None) -> Prompt:
    """Speech editing: T(edited) C(pre) <soe> (<mask> | C(noisy middle)) <eoe> C(post).

    ``middle=None`` is clean editing; otherwise noisy editing, whose middle carries the
    background the new words must keep. The output is the whole utterance, starting with C(pre).
    """
    if len(text) == 0:
        raise ValueError("edit needs the full edited transcript")
    k = pre.shape[1]
    b = _Builder(k, codebook_size).text(text).frames(pre).special("<soe>")
    if middle is None:
        b.special("<mask>")
    else:
        b.frames(middle)
    b.special("<eoe>").frames(post)
    task = Task.EDIT_CLEAN if middle is None else Task.EDIT_NOISY
    return b.build(task, prefix=_check_codes(pre, k, codebook_size))


@dataclass
class Batch:
    """Condition left-padded, output right-padded, so every row's output starts at column C."""

    tokens: torch.Tensor  # (B, C, K)
    types: torch.Tensor  # (B, C) PAD / TEXT / ACOUSTIC
    positions: torch.Tensor  # (B, C)
    targets: torch.Tensor | None  # (B, T, K) output codes, zero-padded
    target_lengths: torch.Tensor | None  # (B,)

    @property
    def cond_valid(self) -> torch.Tensor:
        return self.types != PAD  # (B, C)

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.tokens), move(self.types), move(self.positions),
                     move(self.targets), move(self.target_lengths))


def collate(prompts: list[Prompt], targets: list[torch.Tensor] | None = None) -> Batch:
    """Stack prompts (and optional (T, K) targets) into one padded batch."""
    n, k = len(prompts), prompts[0].n_codebooks
    c = max(len(p.tokens) for p in prompts)
    tokens = torch.zeros(n, c, k, dtype=torch.long)
    types = torch.full((n, c), PAD, dtype=torch.long)
    positions = torch.zeros(n, c, dtype=torch.long)
    for i, p in enumerate(prompts):
        off = c - len(p.tokens)  # left padding
        tokens[i, off:], types[i, off:], positions[i, off:] = p.tokens, p.types, p.positions
    tgt = lengths = None
    if targets is not None:
        lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        tgt = torch.zeros(n, int(lengths.max()), k, dtype=torch.long)
        for i, t in enumerate(targets):
            tgt[i, : len(t)] = t
    return Batch(tokens, types, positions, tgt, lengths)
