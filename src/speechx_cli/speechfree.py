"""remove-speech's speech-free frames: where the model's own denoise draws put the speech far under the input.

remove-speech loses at the AR's first level: given the true background's level 1, the same NAR and mask
reach +7.9 dB SI-SDR over the input, where the AR free-running reaches +3.0; teacher-forced on the true
background's history it reaches +7.4, so it knows the answer frame by frame and drifts from its own
history (docs/demo-v2.md, "Where denoise, remove-speech and extract-speaker lose"). Where the input holds no
speech, the background is the input itself, and so are its codes: feeding them there (Prompt.given) holds the
AR to the background. Which frames: those where the mean energy of the window's denoise draws (the model's
estimate of the speech) is `--speech-free-db` under the input's.

Off by default (SPEECH_FREE_DB = 0): with the true speech-free frames it gained +2.0 dB SI-SDR (one seed),
but with this detector +0.5 dB over the three benchmarks it was tuned on (three seeds, 10 dB) and nothing on
30 fresh items (-0.2 dB at 10 dB, +0.1 at 15), for twice the time. The detector is what is short: this
checkpoint's denoise draws also drop speech, and 40% of the frames they find at 10 dB hold speech louder
than the background (24% at 20 dB; docs/demo-v2.md, "Speech-free frames in the pipeline"). A checkpoint
with a better denoise AR, or a better detector, is what would turn it on.
"""

from __future__ import annotations

import numpy as np
import torch

SPEECH_FREE_DB = 0.0  # off; 10-15 dB is where it was measured


def frame_energy(audio: np.ndarray, hop: int, frames: int) -> np.ndarray:
    """(frames,) mean square of each codec frame's samples (0 past the audio's end)."""
    padded = np.zeros(frames * hop, dtype=np.float64)
    n = min(len(audio), frames * hop)
    padded[:n] = audio[:n]
    return np.mean(padded.reshape(frames, hop) ** 2, axis=1)


def speech_free(source: np.ndarray, speech: list[np.ndarray], hop: int, frames: int, db: float) -> torch.Tensor:
    """(frames,) bool: frames where the mean energy of the speech estimates is `db` dB under the source's.
    A silent source frame is never speech-free (nothing there to keep)."""
    estimate = np.mean([frame_energy(s, hop, frames) for s in speech], axis=0)
    return torch.from_numpy(estimate < frame_energy(source, hop, frames) * 10 ** (-db / 10))
