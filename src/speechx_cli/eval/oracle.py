"""Where a task's output loses what it should keep: the true answer's codes with the rest generated.

`oracleN`, a system of `speechx eval tts|denoise|remove-speech|extract-speaker`, keeps the first N
codebook levels of each item's true answer (the reference as the checkpoint's codec encodes it) and
lets the checkpoint's NAR fill levels N+1..K from the item's own prompt (tts: text and voice prompt;
the others: the mixture, and extract-speaker's enrollment), as inference does after the AR. oracle1
is what a perfect AR would get from this NAR; oracleK (every level true) is the codec's own ceiling.
Denoise, remove-speech and extract-speaker then make their output from those codes as speechx does
(`--resynth`, `--mask`): with the mask, the true codes' audio is the estimate (one draw, one pass).

    speechx eval tts bench/ --systems speechx,oracle1,oracle2,oracle4,oracle8,reference
    speechx eval remove-speech bench/ --systems speechx,oracle1,oracle8

Read down a metric's column: speechx -> oracle1 is what the AR loses, oracle1 -> oracleK what the NAR
loses, oracleK -> reference what the codec (and the mask) loses. A tts item's whole text is one prompt
(inference splits it into sentences; a benchmark item is one sentence); a known-length item is one
window, however long (inference cuts inputs over --window seconds).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .. import prompts as P
from ..checkpoint import SpeechX
from ..engine import generate_nar
from ..pipeline import WindowOptions, text_ids, to_audio, to_codes, window_output, window_row
from ..prompts import Task
from .devset import TASK_OF, Benchmark, Item
from .report import Loader, Output, SystemFn

PATTERN = re.compile(r"oracle(\d+)")
ORACLE_TASKS = (Task.TTS, Task.NS, Task.SR, Task.TSE)


def oracle_levels(name: str) -> int | None:
    """N for a system named oracleN, else None."""
    m = PATTERN.fullmatch(name)
    return int(m.group(1)) if m else None


def _check(sx: SpeechX, levels: int) -> None:
    if not 1 <= levels <= sx.config.n_codebooks:
        raise ValueError(f"oracle{levels}: this checkpoint has codebook levels 1..{sx.config.n_codebooks}")


def oracle_codes(sx: SpeechX, load: Loader, items: list[Item], levels: int) -> list[torch.Tensor]:
    """Per item, (T, K) codes: the reference's levels 1..`levels`, the NAR's fill of the rest."""
    return _rows_and_codes(sx, load, items, levels)[1]


def _rows_and_codes(sx: SpeechX, load: Loader, items: list[Item], levels: int) -> tuple[list, list[torch.Tensor]]:
    """oracle_codes, with each known-length item's window row (`_row`; None for tts) that made its prompt."""
    _check(sx, levels)
    k, v, sr = sx.config.n_codebooks, sx.config.codebook_size, sx.codec.sample_rate
    _check_items(items)
    rows = [_row(sx, load, i) for i in items]
    prompts, first = [], []
    for i, row in zip(items, rows):
        answer = to_codes(sx, load(i.reference, sr))
        if row is None:
            prompts.append(P.tts(text_ids(i.text), to_codes(sx, load(i.enrollment, sr)), v))
        else:  # as long as the mixture, like the model's own answer
            prompts.append(row.prompt)
            answer = answer[: row.prompt.out_frames]
        first.append(answer[:, :levels].to(sx.device))
    none = torch.zeros(len(items), 0, k, dtype=torch.long, device=sx.device)
    filled = generate_nar(sx.nar, P.collate(prompts).to(sx.device), first, none,
                          torch.zeros(len(items), 0, dtype=torch.bool, device=sx.device))
    return rows, [c.cpu() for c in filled]


def _check_items(items: list[Item]) -> None:
    wrong = [i.id for i in items if i.reference is None or TASK_OF[i.task] not in ORACLE_TASKS
             or (i.task == "tts" and not i.text) or (i.task != "tts" and i.input is None)]
    if wrong:
        raise ValueError(f"oracle systems measure tts, denoise, remove-speech and extract-speaker items with a "
                         f"reference (and tts a text), not {wrong[0]}")


def _row(sx: SpeechX, load: Loader, item: Item):
    """The one window inference would make of a known-length item (the whole input); None for tts."""
    sr, task = sx.codec.sample_rate, TASK_OF[item.task]
    if task is Task.TTS:
        return None
    enroll = to_codes(sx, load(item.enrollment, sr)) if task is Task.TSE else None
    return window_row(sx, 0, task, load(item.input, sr), enroll, None)


def oracle_system(sx: SpeechX, levels: int, window: WindowOptions = WindowOptions()) -> SystemFn:
    """oracle_codes as each task's output: tts cut to its reference's length; the known-length tasks as
    speechx makes them from its codes (`window`'s resynth and mask; one draw, one pass)."""
    _check(sx, levels)
    sr = sx.codec.sample_rate
    if window.mask is not None and window.mask.counterpart:
        raise ValueError(f"oracle{levels}: a counterpart mask needs the other task's draws; oracles make none")

    def run(bench: Benchmark, items: list[Item]) -> list[Output]:
        load = Loader(bench)  # each file is read once, for the codes and for the output
        rows, codes = _rows_and_codes(sx, load, items, levels)
        return [Output(np.asarray(to_audio(sx, c)[: len(load(i.reference, sr))] if row is None else
                                  window_output(sx, row.prompt.task, row, [c], window), np.float32), sr)
                for i, row, c in zip(items, rows, codes)]

    return run
