"""speechx as a Python library: load a checkpoint once, then run any task on arrays or files.

    import speechx_cli
    model = speechx_cli.load_model()                      # the bundled demo checkpoint; CUDA when there is one
    clean = model.denoise("noisy.wav")                    # Audio: .samples (N,) float32 and .sample_rate
    clean = model.denoise(x, 44100, text="hello there")   # a float array and its sample rate
    speech = model.tts("Good morning.", prompt="alice.wav", seed=1)
    fixed = model.edit_words("in.wav", "the cat sat", "the dog sat")
    fixed.save("out.wav")

Inputs: a path (any format audio.load reads), an `Audio`, or a float array of shape (N,) or (N, channels)
with its sample rate. Outputs come back at the input's rate (tts: the prompt's) unless out_rate says
otherwise. Decoding knobs are DecodingOptions fields given as keywords (seed, temperature, top_k, top_p,
max_seconds) or as a whole `options=DecodingOptions(...)`. The commands of cli.py are a layer over these
methods and pipeline.py: for the same seed, a command writes what its method returns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch

from . import audio as A
from . import checkpoint as ckpt
from . import editplan as E
from . import pipeline as PL
from .recognize import hear
from .checkpoint import SpeechX
from .engine import DecodingOptions
from .prompts import Task


@dataclass(frozen=True)
class Audio:
    """Mono audio and its rate."""

    samples: np.ndarray  # (N,) float32
    sample_rate: int  # Hz

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate  # s

    def save(self, path: str | os.PathLike, *, force: bool = False, bitrate_kbps: int | None = None) -> int:
        """Write atomically, the format from the extension; returns how many samples were clipped."""
        return A.save(path, self.samples, self.sample_rate, force=force, bitrate_kbps=bitrate_kbps)


@dataclass(frozen=True)
class EditResult(Audio):
    """An edited recording, with the edit steps that made it."""

    steps: tuple[E.EditStep, ...] = ()  # left to right (run right to left)
    transcript: str | None = None  # what the input said: as given, or the recognizer's guess


Source = Union[str, os.PathLike, np.ndarray, Audio]


def resolve_device(device: str | torch.device = "auto") -> str:
    """The device to load onto: "auto" is CUDA when there is one, else the CPU. Asking for CUDA where
    there is none raises ValueError."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device}: no CUDA device is available here")
    return device


def load_model(checkpoint: str | os.PathLike | None = None, device: str | torch.device = "auto") -> "SpeechXModel":
    """The model of an inference checkpoint, ready for every task.

    checkpoint None: $SPEECHX_CHECKPOINT, else the bundled demo checkpoint (checkpoint.default_path).
    Raises checkpoint.CheckpointError (a ValueError) when there is none or the file cannot be used.
    """
    path = Path(checkpoint) if checkpoint is not None else ckpt.default_path()
    if path is None:
        raise ckpt.CheckpointError("no checkpoint: pass one, or set SPEECHX_CHECKPOINT")
    return SpeechXModel(ckpt.load(path, device=resolve_device(device)))


def _decoding(options: DecodingOptions | None, overrides: dict) -> DecodingOptions:
    return replace(options or DecodingOptions(), **overrides).validate()


class SpeechXModel:
    """One loaded checkpoint (`sx`: AR and NAR models, codec, config) and the SpeechX tasks over it."""

    def __init__(self, sx: SpeechX):
        self.sx = sx

    @property
    def sample_rate(self) -> int:
        """The codec's rate (Hz): what the model hears and speaks."""
        return self.sx.codec.sample_rate

    @property
    def device(self) -> torch.device:
        return self.sx.device

    def denoise(self, audio: Source, sample_rate: int | None = None, *, text: str | None = None,
                window: PL.WindowOptions | None = None, out_rate: int | None = None,
                options: DecodingOptions | None = None, **decoding) -> Audio:
        """Noise suppression: keep the speech. text: its transcript, if known (optional; it helps)."""
        opts = _decoding(options, decoding)
        return self._known_length(Task.NS, audio, sample_rate, None, text, window, out_rate, opts)

    def remove_speech(self, audio: Source, sample_rate: int | None = None, *, text: str | None = None,
                      window: PL.WindowOptions | None = None, out_rate: int | None = None,
                      options: DecodingOptions | None = None, **decoding) -> Audio:
        """Speech removal: keep only the background."""
        opts = _decoding(options, decoding)
        return self._known_length(Task.SR, audio, sample_rate, None, text, window, out_rate, opts)

    def extract_speaker(self, mixture: Source, enrollment: Source, sample_rate: int | None = None, *,
                        text: str | None = None, window: PL.WindowOptions | None = None,
                        out_rate: int | None = None, options: DecodingOptions | None = None, **decoding) -> Audio:
        """Target speaker extraction: keep the voice of `enrollment` (a few seconds of that speaker alone;
        an array at `sample_rate`, like the mixture)."""
        return self._known_length(Task.TSE, mixture, sample_rate, enrollment, text, window, out_rate,
                                  _decoding(options, decoding))

    def tts(self, text: str, prompt: Source, sample_rate: int | None = None, *, out_rate: int | None = None,
            options: DecodingOptions | None = None, **decoding) -> Audio:
        """Zero-shot TTS: `text` in the voice of `prompt` (3-10 s of speech), at the prompt's rate."""
        voice, rate = self._load(prompt, sample_rate)
        return self._output(PL.tts(self.sx, text, voice, _decoding(options, decoding)), out_rate or rate)

    def edit(self, audio: Source, text: str, span: tuple[float, float], sample_rate: int | None = None, *,
             background: str = "keep", out_rate: int | None = None, options: DecodingOptions | None = None,
             **decoding) -> EditResult:
        """Replace `span` (START, END seconds) so that the recording says `text`, its full edited transcript.
        background "keep": the new words keep the recording's background; "clean": clean speech. Audio
        outside the span is the input itself."""
        wav, rate = self._load(audio, sample_rate)
        steps = [E.span_step(span, len(wav) / self.sample_rate, text)]
        return self._edit(wav, out_rate or rate, steps, background, None, _decoding(options, decoding))

    def edit_words(self, audio: Source, transcript: str | None, text: str, sample_rate: int | None = None, *,
                   background: str = "keep", out_rate: int | None = None, options: DecodingOptions | None = None,
                   recognizer: str = "auto", **decoding) -> EditResult:
        """Make a recording that says `transcript` say `text`: the changed words are found (word diff,
        pocketsphinx alignment) and regenerated, the rest stays the input. transcript None: the guess of
        `recognizer` (recognize.py; auto: Whisper where installed, else pocketsphinx; check result.transcript)."""
        wav, rate = self._load(audio, sample_rate)
        if transcript is None:
            transcript, heard_by = hear(wav, self.sample_rate, recognizer)
            if not transcript:
                raise ValueError(f"{heard_by} heard no words in the input: give its transcript")
        y, steps = PL.edit_words(self.sx, wav, transcript, text, _decoding(options, decoding), background)
        rate = out_rate or rate
        return EditResult(A.resample(y, self.sample_rate, rate), rate, tuple(steps), transcript)

    def edit_steps(self, audio: Source, steps: Sequence[E.EditStep], sample_rate: int | None = None, *,
                   background: str = "keep", out_rate: int | None = None,
                   on_step: Callable[[int, int], None] | None = None, options: DecodingOptions | None = None,
                   **decoding) -> EditResult:
        """Run edit steps planned beforehand (editplan.span_step or editplan.word_steps on this audio),
        e.g. once a user has seen them. on_step(k, n) before step k; they run from the last to the first."""
        wav, rate = self._load(audio, sample_rate)
        return self._edit(wav, out_rate or rate, steps, background, on_step, _decoding(options, decoding))

    def _edit(self, wav: np.ndarray, rate: int, steps: Sequence[E.EditStep], background: str,
              on_step: Callable[[int, int], None] | None, opts: DecodingOptions) -> EditResult:
        y = PL.edit_steps(self.sx, wav, steps, opts, background, on_step)
        return EditResult(A.resample(y, self.sample_rate, rate), rate, tuple(steps))

    def _known_length(self, task: Task, audio: Source, sample_rate: int | None, enrollment: Source | None,
                      text: str | None, window: PL.WindowOptions | None, out_rate: int | None,
                      opts: DecodingOptions) -> Audio:
        wav, rate = self._load(audio, sample_rate)
        voice = self._load(enrollment, sample_rate)[0] if enrollment is not None else None
        request = PL.Request(task, audio=wav, enrollment=voice, text=text)
        return self._output(PL.run(self.sx, [request], opts, window or PL.WindowOptions())[0], out_rate or rate)

    def _load(self, audio: Source, sample_rate: int | None) -> tuple[np.ndarray, int]:
        """(N,) float32 at the codec's rate, and the source's own rate."""
        if isinstance(audio, (str, os.PathLike)):
            return A.load(audio, self.sample_rate, allow_silence=False)
        if isinstance(audio, Audio):
            audio, sample_rate = audio.samples, audio.sample_rate
        if sample_rate is None:
            raise ValueError("audio given as an array needs its sample_rate")
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)  # (N, channels) -> (N,), as audio.load does
        if x.ndim != 1 or len(x) == 0:
            raise ValueError(f"audio must be (N,) or (N, channels) samples, not shape {np.shape(audio)}")
        if not np.isfinite(x).all():
            raise ValueError("audio contains NaN or infinite samples")
        return A.resample(x, sample_rate, self.sample_rate), sample_rate

    def _output(self, y: np.ndarray, rate: int) -> Audio:
        return Audio(A.resample(y, self.sample_rate, rate), rate)
