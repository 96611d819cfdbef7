"""Frames whose answer is known before generation: the input's own codes in remove-speech's speech-free,
denoise's noise-free and extract-speaker's target-alone frames; silence in extract-speaker's target-silent ones.
And, through the same flags, extract-speaker's target share: band gains for its mask.

remove-speech loses at the AR's first level: given the true background's level 1, the same NAR and mask
reach +7.9 dB SI-SDR over the input, where the AR free-running reaches +3.0; teacher-forced on the true
background's history it reaches +7.4, so it knows the answer frame by frame and drifts from its own
history (docs/demo-v2.md, "Where denoise, remove-speech and extract-speaker lose"). Where the input holds no
speech, the background is the input itself, and so are its codes: feeding them there (Prompt.given) holds the
AR to the background. With the true speech-free frames that gained +2.0 dB (one seed). Where the input holds
(almost) no noise, denoise's answer is likewise the input.

Where the interferer is silent and the target speaks, extract-speaker's answer is the mixture (its mixtures
hold no noise); a detector that reads the enrollment finds those frames. Where the target is silent under the
interferer, its answer is silence: a second such detector finds those, and they are given as the codes of
silence (a frame both pick keeps the mixture's).

Where both speak, a share detector (detector.py) says the target's share of each band's energy: those shares,
as band gains, are weighed with the generated audio's in extract-speaker's mask (mask.apply's `share`;
`--target-share detector[=W]`, W the weight of the detector's gains, 0.9 by default; 1: the detector's alone);
another says the speech's share for denoise's mask (`--speech-share`, 0.7 by default).

`--speech-free` (remove-speech), `--noise-free` (denoise), `--target-alone` and `--target-silent`
(extract-speaker) say how the frames are found:
    auto            the default: detector where the checkpoint has one for the task, else off
    off             none given
    detector[=P]    the checkpoint's frame detector of the task (detector.py), frames with probability above
                    P (default: the threshold it was trained with). remove-speech: +2.2 dB SI-SDR on 240
                    fresh pairs, more than the true speech-free frames gave, at no cost in time
                    (docs/demo-v2.md, "A speech-free detector")
    denoise[=DB]    remove-speech only: frames where the mean energy of the window's denoise draws (generated
                    first, as many as its own draws) is DB under the input's (default 10): +0.5 dB on the
                    benchmarks it was tuned on, nothing on fresh items, for twice the time; those draws drop
                    speech as remove-speech's do (docs/demo-v2.md, "Speech-free frames in the pipeline")
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .prompts import Task

MODES = ("auto", "off", "detector", "denoise")
DENOISE_DB = 10.0  # denoise's default: where it was measured (10-15 dB)
# the kinds of given frames, one per kind of frame detector (detector.TASKS): the task whose windows take them,
# the flag, what the frames are; SILENCE: those given as the codes of silence (the rest: the input's own codes)
# SHARES: the kinds whose detector gives band shares to the mask, not frames
TASK_OF = {"sr": Task.SR, "ns": Task.NS, "tse": Task.TSE, "tse_silent": Task.TSE, "tse_gain": Task.TSE,
           "ns_gain": Task.NS}
FLAGS = {"sr": "--speech-free", "ns": "--noise-free", "tse": "--target-alone", "tse_silent": "--target-silent",
         "tse_gain": "--target-share", "ns_gain": "--speech-share"}
KINDS = {"sr": "speech-free", "ns": "noise-free", "tse": "target-alone", "tse_silent": "target-silent",
         "tse_gain": "target-share", "ns_gain": "speech-share"}
SILENCE = ("tse_silent",)
SHARES = ("tse_gain", "ns_gain")
# a share detector's gains' weight in the mask's geometric mean, unless the flag gives one (docs/demo-v2.md):
# extract-speaker's similarity to the target and SI-SDR rose with it up to 0.9 on 60 dev items (1, the detector alone,
# a little lower); denoise's STOI and SI-SDR peaked at 0.7 on 60 (OVRL level from 0.7 to 1)
SHARE_WEIGHT = {"tse_gain": 0.9, "ns_gain": 0.7}


@dataclass(frozen=True)
class GivenFrames:
    """How remove-speech finds its speech-free frames (`--speech-free MODE[=VALUE]`), denoise its noise-free
    ones (`--noise-free`), extract-speaker its target-alone and target-silent ones (`--target-alone`,
    `--target-silent`)."""

    mode: str = "off"  # of MODES (denoise: remove-speech only)
    # detector: probability threshold (None: its own), for a share kind the weight of its gains (None:
    # SHARE_WEIGHT[kind]); denoise: dB (None: DENOISE_DB)
    value: float | None = None

    @classmethod
    def parse(cls, spec: str, kind: str = "sr") -> "GivenFrames":
        """`spec` of the flag of `kind` (of KINDS)."""
        mode, sep, value = spec.strip().partition("=")
        try:
            return cls(mode.strip(), float(value) if sep else None).validate(kind)
        except ValueError:
            raise ValueError(f"{FLAGS[kind]} {spec!r}: {usage(kind)}") from None

    def validate(self, kind: str = "sr") -> "GivenFrames":
        if self.mode not in MODES or (self.mode == "denoise" and kind != "sr") or (
                self.mode in ("auto", "off") and self.value is not None) or not self._value_fits(kind):
            raise ValueError(f"{FLAGS[kind]} {self}: {usage(kind)}")
        return self

    def _value_fits(self, kind: str) -> bool:
        """denoise: dB > 0; detector: a probability in (0, 1), for a share kind a weight in (0, 1]."""
        if self.value is None:
            return True
        if self.mode == "denoise":
            return self.value > 0
        return 0 < self.value <= 1 if kind in SHARES else 0 < self.value < 1

    def resolve(self, has_detector: bool) -> "GivenFrames":
        """auto made concrete for a checkpoint with or without the task's detector."""
        if self.mode != "auto":
            return self
        return GivenFrames("detector" if has_detector else "off")

    @property
    def db(self) -> float:
        return DENOISE_DB if self.value is None else self.value

    def __str__(self) -> str:
        return self.mode if self.value is None else f"{self.mode}={self.value:g}"


def usage(kind: str) -> str:
    if kind in SHARES:
        return "use auto, off or detector[=W] (0 < W <= 1, the weight of its band gains)"
    return "use auto, off, detector[=P] (0 < P < 1)" + (" or denoise[=DB] (DB > 0)" if kind == "sr" else "")


SPEECH_FREE = GivenFrames("auto")  # the checkpoint's detector where it has one
NOISE_FREE = GivenFrames("auto")
TARGET_ALONE = GivenFrames("auto")
TARGET_SILENT = GivenFrames("auto")
TARGET_SHARE = GivenFrames("auto")
SPEECH_SHARE = GivenFrames("auto")


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
