"""How a known-length task (denoise, remove-speech, extract-speaker) cuts its input into windows and makes each
window's output: WindowOptions, and the tasks' masks and defaults, measured (checkpoints/README.md).

Kept apart from pipeline.py, which runs them: the command line, the API and the evaluation build these
options without running anything.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from . import speechfree as S
from .mask import MaskOptions, Resynth
from .prompts import Task

# Generations per window whose band energies the mask averages, by default. Against one draw, 4 raised every
# known-length task on fresh dev items (denoise STOI +0.020 and SI-SDR +0.7 dB, remove-speech SI-SDR +0.8 dB,
# extract-speaker SI-SDR +1.3 dB) for a third more time per file (the copies decode side by side); 8 added
# little more (checkpoints/README.md, "Several draws").
DRAWS = 4
SPEECH_FREE_PASSES = 2  # remove-speech's passes by default with the speech-free detector (WindowOptions.passes)


@dataclass(frozen=True)
class WindowOptions:
    """How a known-length task cuts its input into prompts and makes each window's output."""

    seconds: float = 10.0  # longest input one prompt carries
    overlap: float = 1.0
    batch_size: int = 8
    resynth: Resynth = Resynth.MASK
    mask: MaskOptions | None = None  # None: the task's own (TASK_MASKS)
    # independent generations of each window, whose band energies the mask averages (mask.apply): the
    # mean of what the model would output rather than one draw of it. None: DRAWS with the mask, 1 with
    # the codec's waveform
    draws: int | None = None
    # times each window goes through the model: a pass's input is the previous pass's output, so the mask
    # cuts again what the last one left. None: SPEECH_FREE_PASSES for remove-speech with the mask and the
    # checkpoint's speech-free detector (it looks again in the first pass's output: +1.2 dB SI-SDR, 4.7 dB less
    # speech left, for 1.9x the time), else 1 (without them, SI-SDR the same within its noise; checkpoints/README.md,
    # "Two passes")
    passes: int | None = None
    # remove-speech: feed the input's own codes in the frames found free of speech (speechfree.py)
    speech_free: S.GivenFrames = S.SPEECH_FREE
    # denoise: the same in the frames found free of noise
    noise_free: S.GivenFrames = S.NOISE_FREE
    # extract-speaker: the same in the frames where the target speaks alone (the checkpoint's detector reads
    # the enrollment)
    target_alone: S.GivenFrames = S.TARGET_ALONE
    # extract-speaker: the codes of silence in the frames where the target is silent (under the interferer)
    target_silent: S.GivenFrames = S.TARGET_SILENT
    # extract-speaker: its mask weighs the generated audio's band gains with the target share the checkpoint's
    # share detector gives each band (reading the enrollment)
    target_share: S.GivenFrames = S.TARGET_SHARE
    # denoise: the same with the speech's share of each band (the checkpoint's speech-share detector)
    speech_share: S.GivenFrames = S.SPEECH_SHARE

    def given_frames(self, kind: str) -> S.GivenFrames:
        """How the frames of `kind` (of speechfree.KINDS) are found."""
        return getattr(self, GIVEN_FIELDS[kind])

    def n_passes(self, task: Task, detectors: Collection[str]) -> int:
        """Passes of `task`'s windows (`passes`, or the default above, for a checkpoint with these tasks' detectors)."""
        if self.passes is not None:
            return self.passes
        detector = self.speech_free.resolve(Task.SR.value in detectors).mode == "detector"
        return SPEECH_FREE_PASSES if task is Task.SR and detector and self.resynth is Resynth.MASK else 1

    @property
    def n_draws(self) -> int:
        if self.draws is None:
            return DRAWS if self.resynth is Resynth.MASK else 1
        return self.draws

    def validate(self) -> "WindowOptions":
        if self.seconds <= 0 or self.overlap < 0 or self.overlap >= self.seconds / 2:
            raise ValueError("window must be > 0 and overlap < half a window")
        if self.batch_size < 1:
            raise ValueError("batch size must be >= 1")
        if self.n_draws < 1:
            raise ValueError("draws (--draws) must be >= 1")
        if self.n_draws > 1 and self.resynth is not Resynth.MASK:
            raise ValueError("several draws (--draws) are averaged by the mask: they need resynth mask (--resynth mask)")
        if self.passes is not None and self.passes < 1:
            raise ValueError("passes (--passes) must be >= 1")
        if (self.passes or 1) > 1 and self.resynth is not Resynth.MASK:
            raise ValueError("several passes (--passes) cut the input again: they need resynth mask (--resynth mask)")
        for kind in S.KINDS:
            self.given_frames(kind).validate(kind)
        if self.mask is not None:
            self.mask.validate()
        return self


# the field of each kind of given frames (speechfree.KINDS)
GIVEN_FIELDS = {"sr": "speech_free", "ns": "noise_free", "tse": "target_alone", "tse_silent": "target_silent",
                "tse_gain": "target_share", "ns_gain": "speech_share"}

# How hard each task's mask cuts. Noise sits mostly under speech in level and a wrong cut costs
# intelligibility, so denoise cuts at most 14 dB, by half the estimated ratio (10 dB until the mask averaged
# 4 draws: with them -14 dB raised DNSMOS OVRL by 0.02 and SI-SDR by 0.3 dB at -0.001 STOI, checkpoints/README.md,
# "Several draws"); a competing voice is
# as loud as the target, so extract-speaker takes the full ratio down to -20 dB, in coarser bands (a
# voice's harmonics do not stay in one mel band). remove-speech keeps the noise, which the codec
# renders quieter than it is: its estimate is compared with the codec's rendering of the input,
# in finer bands, down to -15 dB. Chosen on dev benchmarks and confirmed on a fresh one (checkpoints/README.md,
# "remove-speech against the codec's rendering"). Where denoise's speech-share detector weighs in, the share
# (a Wiener gain learned band by band) cuts down to -26 dB: on 60 dev items DNSMOS OVRL +0.04 and BAK +0.2
# over -14 dB at the same STOI (docs/demo-v2.md, "A deeper cut where the speech share decides").
TASK_MASKS = {
    Task.NS: MaskOptions(floor=0.2, share_floor=0.05),
    Task.SR: MaskOptions(bands=64, floor=0.18, codec_reference=True),
    Task.TSE: MaskOptions(bands=16, exponent=1.0, floor=0.1),
}
# The task whose output is the part a task drops (MaskOptions.counterpart): speech and background.
COUNTERPARTS = {Task.NS: Task.SR, Task.SR: Task.NS}
