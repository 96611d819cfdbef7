"""Where generated speech loses its words: the true answer's codes with the rest generated.

`oracleN`, a system of `speechx eval tts`, keeps the first N codebook levels of each item's true
answer (the reference as the checkpoint's codec encodes it) and lets the checkpoint's NAR fill levels
N+1..K from the item's own TTS prompt (text and voice prompt), as inference does after the AR. oracle1
is what a perfect AR would get from this NAR; oracleK (every level true) is the codec's own ceiling.

    speechx eval tts bench/ --systems speechx,oracle1,oracle2,oracle4,oracle8,reference

Read down the WER column: speechx -> oracle1 is what the AR loses, oracle1 -> oracleK what the NAR
loses, oracleK -> reference what the codec loses. The whole text is one prompt (inference splits it
into sentences; a benchmark item is one sentence).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .. import prompts as P
from ..checkpoint import SpeechX
from ..engine import generate_nar
from ..pipeline import text_ids, to_audio, to_codes
from .devset import Benchmark, Item
from .report import Loader, Output, SystemFn

PATTERN = re.compile(r"oracle(\d+)")


def oracle_levels(name: str) -> int | None:
    """N for a system named oracleN, else None."""
    m = PATTERN.fullmatch(name)
    return int(m.group(1)) if m else None


def _check(sx: SpeechX, levels: int) -> None:
    if not 1 <= levels <= sx.config.n_codebooks:
        raise ValueError(f"oracle{levels}: this checkpoint has codebook levels 1..{sx.config.n_codebooks}")


def oracle_codes(sx: SpeechX, load: Loader, items: list[Item], levels: int) -> list[torch.Tensor]:
    """Per tts item, (T, K) codes: the reference's levels 1..`levels`, the NAR's fill of the rest."""
    _check(sx, levels)
    k, v, sr = sx.config.n_codebooks, sx.config.codebook_size, sx.codec.sample_rate
    wrong = [i.id for i in items if i.task != "tts" or i.reference is None or not i.text]
    if wrong:
        raise ValueError(f"oracle systems measure tts items with a reference and a text, not {wrong[0]}")
    prompts = [P.tts(text_ids(i.text), to_codes(sx, load(i.enrollment, sr)), v) for i in items]
    first = [to_codes(sx, load(i.reference, sr))[:, :levels].to(sx.device) for i in items]
    none = torch.zeros(len(items), 0, k, dtype=torch.long, device=sx.device)
    filled = generate_nar(sx.nar, P.collate(prompts).to(sx.device), first, none,
                          torch.zeros(len(items), dtype=torch.long, device=sx.device))
    return [c.cpu() for c in filled]


def oracle_system(sx: SpeechX, levels: int) -> SystemFn:
    """oracle_codes as audio, cut to each reference's length."""
    _check(sx, levels)
    sr = sx.codec.sample_rate

    def run(bench: Benchmark, items: list[Item]) -> list[Output]:
        load = Loader(bench)  # the references are read once, for the codes and for their lengths
        return [Output(np.asarray(to_audio(sx, c)[: len(load(i.reference, sr))], np.float32), sr)
                for i, c in zip(items, oracle_codes(sx, load, items, levels))]

    return run
