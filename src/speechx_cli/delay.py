"""The AR's delay pattern (MusicGen): one step emits codebook level k of frame `step - k`, for k < A.

With A = ar_levels, an AR step s reads the codes of frame s-1-k at level k (<bos> before the first
frame, <eos> after the last) and predicts level k of frame s-k; level 1 also predicts <eos> at s = T.
A = 1 is the paper's AR (codebook 1 and <eos>, one step per frame). A row of T frames takes
T + max(1, A-1) steps: the <eos> step, and the A-2 further steps that finish the delayed levels.

Here live only the layouts (teacher-forced inputs and labels) and the step arithmetic generation
shares; model.py owns the modules, engine.py the sampling.
"""

from __future__ import annotations

import torch

from .prompts import IGNORE_INDEX, SPECIAL, eos_class


def extra_steps(levels: int) -> int:
    """Steps a row takes beyond its frames."""
    return max(1, levels - 1)


def input_id(codebook_size: int, name: str) -> int:
    """The acoustic-table row of a special token (<bos> before a level starts, <eos> after it ends)."""
    return codebook_size + SPECIAL[name]


def _frames(codes: torch.Tensor, shift: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (B, T, A) codes laid out in T + extra_steps(A) steps: step indices (1, S, 1), the frame that level
    k holds at step s (s - shift - k, (1, S, A)) and that frame's code (clamped into range, (B, S, A))."""
    b, t, a = codes.shape
    step = torch.arange(t + extra_steps(a), device=codes.device)[None, :, None]
    frame = step - shift - torch.arange(a, device=codes.device)[None, None, :]
    return step, frame, codes.gather(1, frame.clamp(0, max(t - 1, 0)).expand(b, -1, a))


def delayed_inputs(codes: torch.Tensor, lengths: torch.Tensor, codebook_size: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, A) codes, (B,) frame counts -> teacher-forced inputs (B, S, A) and valid steps (B, S).

    Step s holds level k's code of frame s-1-k; steps past a row's end hold 0 (masked out).
    """
    step, frame, gathered = _frames(codes, 1)
    inputs = torch.where(frame < 0, input_id(codebook_size, "<bos>"),
                         torch.where(frame >= lengths[:, None, None], input_id(codebook_size, "<eos>"), gathered))
    valid = step[..., 0] < (lengths[:, None] + extra_steps(codes.shape[2]))  # (B, S)
    return inputs.masked_fill(~valid[..., None], 0), valid


def delayed_labels(codes: torch.Tensor, lengths: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """(B, T, A) codes -> (B, S, A) labels: level k of frame s-k at step s, <eos> for level 1 at s = T,
    IGNORE_INDEX wherever a level has nothing to predict."""
    step, frame, gathered = _frames(codes, 0)
    labels = torch.where((frame >= 0) & (frame < lengths[:, None, None]), gathered, IGNORE_INDEX)
    is_eos = step[..., 0] == lengths[:, None]  # (B, S): level 1's <eos> step
    labels[..., 0] = torch.where(is_eos, eos_class(codebook_size), labels[..., 0])
    return labels
