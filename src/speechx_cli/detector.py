"""A small frame detector: in which codec frames of a noisy input is the part the task drops far under the part it
keeps, so that the input's own codes there are the task's answer?

remove-speech holds its AR to the background where the input holds no speech, denoise to the speech where
the input holds (almost) no noise (speechfree.py, Prompt.given): there the answer's codes are the input's
own. For remove-speech, the true speech-free frames gained +2.0 dB SI-SDR; frames picked by the model's own
denoise draws nothing on fresh items, because those draws drop speech too (docs/demo-v2.md, "Speech-free
frames in the pipeline"). This detector does not come from the AR: a few convolutions and a bidirectional
GRU over the input's log-mel frames, one logit per codec frame, trained on the training simulation's
mixtures of its task (`task`: "sr", remove-speech: the speech `label_db` under the background; "ns",
denoise: the background `label_db` under the speech; "tse", extract-speaker: the interferer `label_db` under
the target, where the mixture is the target's answer; "tse_silent", extract-speaker: the target `label_db` under
the interferer, where silence is its answer; these two also read the target's enrollment, pooled over time into
a scale and shift of every frame's features) (train/detector_train.py).

A share detector (`bands` > 0; "tse_gain", extract-speaker's target share) has the same body and, per frame, one
output per mel band instead: the part kept's share of the band's energy (the target's, given its enrollment).
It picks no frames: its shares become band gains that extract-speaker's mask weighs with the generated audio's
(mask.py, `--target-share`).

The features are level-free: each band's log energy minus its mean over the input, and each frame's log
energy minus the input's loudest frame's, so the input's gain does not change the answer.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .prompts import Task
from .speechfree import SHARES, TASK_OF, frame_energy

LOG_FLOOR = 1e-8
# the tasks a detector serves: what each drops and keeps of its input (speech s, background n)
TASKS = {"sr": "the speech under the background (speech-free frames)",
         "ns": "the background under the speech (noise-free frames)",
         "tse": "the interferer under the target, given the target's enrollment (target-alone frames)",
         "tse_silent": "the target under the interferer, given the target's enrollment (target-silent frames)",
         "tse_gain": "the target's share of each band, given the target's enrollment (band gains for the mask)",
         "ns_gain": "the speech's share of each band (band gains for denoise's mask)"}
SHARE_BANDS = 16  # a share detector's bands: extract-speaker's mask's


@dataclass(frozen=True)
class DetectorConfig:
    sample_rate: int = 16_000  # the codec's: one output per codec frame
    hop_length: int = 320
    n_fft: int = 1024
    n_mels: int = 64
    channels: int = 128
    layers: int = 3  # dilated convolutions (dilation 1, 2, 4, ...) before the GRU
    hidden: int = 96  # per GRU direction
    label_db: float = 10.0  # a frame is picked where the part dropped is this far under the part kept
    threshold: float = 0.5  # probability above which a frame is picked
    task: str = "sr"  # of TASKS: whose frames (sr: speech-free, ns: noise-free, tse: target-alone, tse_silent:
    # target-silent)
    bands: int = 0  # > 0: per frame, the part kept's share of each of this many mel bands (band gains), not a pick

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "DetectorConfig":
        return cls(**json.loads(text))

    def validate(self) -> "DetectorConfig":
        if min(self.sample_rate, self.hop_length, self.n_fft, self.n_mels, self.channels, self.layers,
               self.hidden) < 1 or self.bands < 0 or self.n_fft < self.hop_length or not 0 < self.threshold < 1:
            raise ValueError("detector config: sizes must be >= 1, n_fft >= hop_length, 0 < threshold < 1")
        if self.task not in TASKS or self.task not in TASK_OF:
            raise ValueError(f"detector config: task {self.task!r} is not one of {', '.join(TASKS)}")
        if (self.bands > 0) != (self.task in SHARES):
            raise ValueError(f"detector config: bands > 0 for {', '.join(SHARES)} only, and there it is needed")
        return self


class FrameDetector(nn.Module):
    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
        self.register_buffer("mel", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        convs, width = [], cfg.n_mels + 1
        for i in range(cfg.layers):
            convs.append(nn.Conv1d(width, cfg.channels, 5, padding=2 * 2 ** i, dilation=2 ** i))
            width = cfg.channels
        self.convs = nn.ModuleList(convs)
        self.gru = nn.GRU(cfg.channels, cfg.hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * cfg.hidden, max(1, cfg.bands))
        if cfg.bands:
            bank = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.bands)
            self.register_buffer("bank", torch.from_numpy(bank).float(), persistent=False)
        self.enroll = self.film = None
        if TASK_OF[cfg.task] is Task.TSE:  # the enrollment's voice, pooled over time, scales and shifts every frame's
            # features
            self.enroll = nn.Sequential(nn.Conv1d(cfg.n_mels + 1, cfg.channels, 5, padding=2), nn.GELU(),
                                        nn.Conv1d(cfg.channels, cfg.channels, 5, padding=2))
            self.film = nn.Linear(cfg.channels, 2 * cfg.channels)
            nn.init.zeros_(self.film.weight), nn.init.zeros_(self.film.bias)  # starts as no change at all

    def power(self, audio: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, N) audio at the codec's rate -> (B, bins, frames) power spectra, frame k centred on the codec
        frame's samples [k * hop, (k + 1) * hop)."""
        hop, n_fft = self.cfg.hop_length, self.cfg.n_fft
        audio = F.pad(audio, (0, max(0, frames * hop - audio.shape[-1])))[..., : frames * hop]
        side = (n_fft - hop) // 2
        audio = F.pad(audio, (side, n_fft - hop - side))
        spec = torch.stft(audio, n_fft, hop, window=self.window, center=False, return_complex=True)
        return spec.abs().square()[..., :frames]

    def band_energy(self, audio: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, N) audio -> (B, frames, bands) energy in each of the gain bands (config.bands > 0)."""
        return (self.bank @ self.power(audio, frames)).transpose(1, 2)

    def features(self, audio: torch.Tensor, frames: int) -> torch.Tensor:
        """(B, N) audio at the codec's rate -> (B, frames, n_mels + 1) level-free features (power's frames)."""
        power = self.power(audio, frames)
        bands = torch.log(self.mel @ power + LOG_FLOOR)
        level = torch.log(power.sum(1, keepdim=True) + LOG_FLOOR)
        x = torch.cat([bands - bands.mean(-1, keepdim=True), level - level.amax(-1, keepdim=True)], 1)
        return x.transpose(1, 2)

    def forward(self, audio: torch.Tensor, frames: int, enrollment: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N) audio (and, for tse, tse_silent and tse_gain, (B, M) enrollment audio) -> (B, frames) logits:
        > 0 where the frame is more likely picked than not; with config.bands, (B, frames, bands) logits of the kept
        part's share of each band."""
        if (enrollment is None) != (self.enroll is None):
            raise ValueError("an extract-speaker detector (tse, tse_silent, tse_gain) reads an enrollment, "
                             "the others none")
        x = self.features(audio, frames).transpose(1, 2)
        for i, conv in enumerate(self.convs):
            y = F.gelu(conv(x))
            x = y if i == 0 else x + y
        if enrollment is not None:
            e = self.features(enrollment, max(1, enrollment.shape[-1] // self.cfg.hop_length)).transpose(1, 2)
            scale, shift = self.film(self.enroll(e).mean(-1)).chunk(2, -1)
            x = x * (1 + torch.tanh(scale)[..., None]) + shift[..., None]  # a gain within (0, 2)
        h, _ = self.gru(x.transpose(1, 2))
        y = self.out(h)
        return y if self.cfg.bands else y.squeeze(-1)

    @torch.no_grad()
    def probabilities(self, audio: np.ndarray, frames: int, enrollment: np.ndarray | None = None) -> torch.Tensor:
        """(frames,) probabilities for one input (float32 mono at the codec's rate; tse, tse_silent, tse_gain: with
        its enrollment); a share detector's (frames, bands) shares."""
        def tensor(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None].to(self.window.device)
        return torch.sigmoid(self(tensor(audio), frames, None if enrollment is None else tensor(enrollment)))[0].cpu()

    def pick(self, audio: np.ndarray, frames: int, threshold: float | None = None,
             enrollment: np.ndarray | None = None) -> torch.Tensor:
        """(frames,) bool: frames whose probability (of being speech-free for sr, noise-free for ns, target-alone for
        tse, target-silent for tse_silent) is above `threshold` (None: the config's) and that are not silent."""
        p = self.probabilities(audio, frames, enrollment)
        silent = torch.from_numpy(frame_energy(audio, self.cfg.hop_length, frames) == 0)
        return (p > (self.cfg.threshold if threshold is None else threshold)) & ~silent


def build(config_json: str, state: dict[str, torch.Tensor]) -> FrameDetector:
    """A detector from its config (JSON, as files store it) and weights; ValueError when they do not fit."""
    try:
        model = FrameDetector(DetectorConfig.from_json(config_json))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    except (TypeError, json.JSONDecodeError, RuntimeError) as e:
        raise ValueError(f"frame detector does not match its config: {str(e).splitlines()[0]}") from None
    return model.eval()

