"""An alignment aid for LM training: an auxiliary CTC loss on the target's phonemes from the AR's states.

Small autoregressive TTS models skip, repeat and garble words: next-frame prediction never asks a
decoder-only model to know where in the text it is. Here a linear head reads the AR's final hidden
state at each output position and, through CTC, must spell the prompt's phoneme sequence from them:
every output state is pushed to encode the phoneme it is about to speak, with a monotonic alignment
that CTC learns by itself (no forced alignment). This follows the CTC alignment objective of Neekhara
et al. 2024 ("Improving Robustness of LLM-based Speech Synthesis by Learning Monotonic Alignment"),
which applies it to an encoder-decoder's cross-attention; our prefix LM has no cross-attention, so
the loss sits on the states, as intermediate CTC does in ASR encoders (Lee & Watanabe 2021). VALL-E R
(Han et al. 2024) gets the same per-frame phoneme knowledge from forced alignments instead.

Which examples: those whose output speaks the prompt's text: tts and both edits (the whole edited
utterance and its full transcript), ns and tse when their transcript is given (the clean speech, the
target speaker). Never sr: its output is the background. The blank is the phoneme table's <pad> slot
(TEXT_PAD_ID), which no text ever holds.

The loss is a sum over examples; the trainer divides it by the global batch's phoneme count (every
rank knows it from the shared index list), so the logged value is nats per phoneme and 2 ranks
train as 1. The head is training-only: it lives in the training checkpoint ("aux_ctc") and never in
an exported one, whose AR and NAR are unchanged.
"""

from __future__ import annotations

import numpy as np
import torch.nn.functional as F
from torch import Tensor, nn

from ..prompts import TEXT, TEXT_PAD_ID, Batch, Task
from .dataset import TASK_ID

BLANK = TEXT_PAD_ID
CTC_TASKS = (Task.TTS, Task.NS, Task.TSE, Task.EDIT_CLEAN, Task.EDIT_NOISY)
STATE_KEY = "aux_ctc"  # the head's entry in a training checkpoint


def ctc_rows(data, indices: np.ndarray) -> np.ndarray:
    """Which of these examples the CTC loss covers: a task whose output speaks a text that is given."""
    tasks = data.tasks[indices]
    return np.isin(tasks, [TASK_ID[t] for t in CTC_TASKS]) & (data.text_lengths[indices] > 0)


def phoneme_count(data, indices: np.ndarray) -> int:
    """The phonemes the CTC loss spells over a (global) batch: its normaliser."""
    return int(data.text_lengths[indices][ctc_rows(data, indices)].sum())


def prompt_texts(batch: Batch, rows: Tensor) -> tuple[Tensor, Tensor]:
    """The phoneme ids of the selected rows' text parts, concatenated in row order (CTC's target
    layout), and their lengths. Text positions are the condition's TEXT positions (prompts.py)."""
    is_text = batch.types[rows] == TEXT  # (B', C)
    return batch.tokens[rows][..., 0][is_text], is_text.sum(1)


class CTCHead(nn.Module):
    """Hidden state -> phoneme classes (the text vocabulary; class BLANK is CTC's blank)."""

    def __init__(self, d_model: int, n_text_tokens: int):
        super().__init__()
        self.proj = nn.Linear(d_model, n_text_tokens)
        nn.init.normal_(self.proj.weight, std=0.02)  # as model._init_weights
        nn.init.zeros_(self.proj.bias)

    def loss_sum(self, states: Tensor, batch: Batch, rows: Tensor) -> Tensor:
        """Summed CTC loss (nats) of the selected rows (bool (B,)).

        states: the AR's (B, T+1, d) from losses.ar_loss_and_states; state i comes before frame i, so
        states[:, :T] line up with the T target frames. The head always joins the graph, even with no
        row selected (a zero loss): DDP needs every parameter used on every rank at every step.
        """
        frames = batch.target_lengths
        log_probs = self.proj(states[:, : int(frames.max())]).float().log_softmax(-1)  # (B, T, V)
        if not bool(rows.any()):
            return log_probs.sum() * 0.0
        targets, lengths = prompt_texts(batch, rows)
        # zero_infinity: a text longer than its frames (impossible to align) adds nothing, not inf
        return F.ctc_loss(log_probs[rows].transpose(0, 1), targets, frames[rows], lengths, blank=BLANK,
                          reduction="sum", zero_infinity=True)
