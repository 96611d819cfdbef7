"""Word timings and transcripts from pocketsphinx (bundled US English model, fully offline).

audio (any rate) -> 16 kHz -> pocketsphinx forced alignment (`align_words`) or ASR (`transcribe`).

Used by `speechx edit` to find where each transcript word is spoken, and by eval/metrics.py for WER
and alignment checks. pocketsphinx is imported lazily: a missing package ends in one clear message.

Known quirks this module handles (docs/offline-tools.md, "pocketsphinx"):
- espeak audio fails to align without a little dither, so tiny seeded noise is added first;
- the aligner sometimes drops words (often the last): the word list is checked, ValueError if short;
- words may carry a variant suffix like `to(3)`: stripped;
- it runs the last word on to the end of the file when the trailing pause is short, and the first
  word back to the start: silence (ALIGN_PAD_SECONDS) is added at both ends so it can place pauses.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import text as T
from .audio import resample

ALIGN_SAMPLE_RATE = 16_000  # Hz, the rate of pocketsphinx's bundled acoustic model
ALIGN_FRAME_RATE = 100  # pocketsphinx frames per second (10 ms shift)
ALIGN_DITHER = 1e-3  # noise sigma added before alignment: without it espeak audio fails to align
ALIGN_DITHER_SEED = 0
ALIGN_RMS = 0.07  # -23 dBFS: the corpus's speech level
ALIGN_PAD_SECONDS = 0.3  # silence added at both ends so the aligner can end the edge words
_VARIANT_RE = re.compile(r"\(\d+\)$")
_STRESS_RE = re.compile(r"\d")


class AlignmentError(ValueError):
    """The aligner could not place every word of the transcript in the audio."""


@dataclass(frozen=True)
class AlignedWord:
    word: str
    start: float  # s
    end: float  # s
    phones: int = 0  # phones in the pronunciation the aligner used (dictionary's first)
    score: float = 0.0  # acoustic log-likelihood per 10 ms frame (nats): low where the word is not heard


def _pocketsphinx():
    try:
        import pocketsphinx  # here, not at the top: without it only word edits and WER fail, in one line
    except ImportError:
        raise ValueError(
            "this needs pocketsphinx (offline speech recognition): pip install pocketsphinx==5.1.1"
        ) from None
    return pocketsphinx


@functools.lru_cache(maxsize=None)
def _decoder(purpose: str):
    """One decoder per purpose and process: alignment switches the search, ASR keeps the LM."""
    return _pocketsphinx().Decoder(samprate=ALIGN_SAMPLE_RATE, loglevel="FATAL")


def _as_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (T,), got shape {x.shape}")
    return resample(x, sr, ALIGN_SAMPLE_RATE)


def _at_align_level(x: np.ndarray) -> np.ndarray:
    """x scaled to ALIGN_RMS: pocketsphinx's word boundaries move with the input level (a 4x louder
    copy of one recording moved a word end by 70 ms), so every input is aligned at one level."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    return (x * (ALIGN_RMS / rms)).astype(np.float32) if rms > 0 else x


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def _decode(dec, x: np.ndarray) -> None:
    dec.start_utt()
    try:
        dec.process_raw(_pcm16(x), full_utt=True)
    finally:
        dec.end_utt()


def transcribe(audio: np.ndarray, sr: int) -> str:
    """pocketsphinx's transcript (lowercase words, fillers dropped); "" when it hears nothing."""
    dec = _decoder("asr")
    _decode(dec, _as_16k(audio, sr))
    hyp = dec.hyp()
    if hyp is None:
        return ""
    return " ".join(_VARIANT_RE.sub("", w) for w in hyp.hypstr.split() if not w.startswith(("<", "[")))


def guess_pronunciations(words: Sequence[str]) -> dict[str, str]:
    """pocketsphinx phone strings (CMU phones, no stress) from the project's text front end."""
    out = {}
    for word in dict.fromkeys(words):
        found = T.words(word)
        phones = [_STRESS_RE.sub("", p) for w in found for p in w.phonemes]
        if phones:
            out[word] = " ".join(phones)
    return out


def _add_pronunciations(dec, words: Sequence[str], pronunciations: dict[str, str] | None,
                        guess_unknown: bool) -> None:
    for word, phones in (pronunciations or {}).items():
        dec.add_word(word.lower(), phones, True)
    unknown = sorted({w for w in words if dec.lookup_word(w) is None})
    if unknown and guess_unknown:
        for word, phones in guess_pronunciations(unknown).items():
            dec.add_word(word, phones, True)
        unknown = sorted({w for w in words if dec.lookup_word(w) is None})
    if unknown:
        raise ValueError(f"words not in the pocketsphinx dictionary: {unknown}")


def align_words(
    audio: np.ndarray,
    sr: int,
    words: Sequence[str],
    pronunciations: dict[str, str] | None = None,
    guess_unknown: bool = False,
) -> list[AlignedWord]:
    """Force-align lowercase `words` to `audio`: one AlignedWord per word, in order, in seconds.

    `pronunciations` adds words missing from pocketsphinx's dictionary (CMU phones without stress,
    e.g. {"speechx": "S P IY CH EH K S"}); guess_unknown=True takes the rest from the text front
    end. Raises ValueError on unknown words, AlignmentError (a ValueError) when the aligner drops
    or reorders words.
    """
    words = [w.lower() for w in words]
    if not words:
        raise ValueError("transcript has no words")
    dec = _decoder("align")
    _add_pronunciations(dec, words, pronunciations, guess_unknown)

    x = _at_align_level(_as_16k(audio, sr))
    duration = len(x) / ALIGN_SAMPLE_RATE
    pad = np.zeros(int(ALIGN_PAD_SECONDS * ALIGN_SAMPLE_RATE), np.float32)
    rng = np.random.default_rng(ALIGN_DITHER_SEED)
    x = np.concatenate([pad, x, pad])
    x = x + rng.normal(0.0, ALIGN_DITHER, len(x)).astype(np.float32)
    dec.set_align_text(" ".join(words))
    dec.reinit_feat()  # the cepstral mean carries over between utterances: no alignment depends on earlier ones
    _decode(dec, x)
    segments = dec.seg() if dec.hyp() is not None else []
    aligned = []
    for s in segments:
        if s.word.startswith(("<", "[")):
            continue
        start = min(max(s.start_frame / ALIGN_FRAME_RATE - ALIGN_PAD_SECONDS, 0.0), duration)
        end = min(max((s.end_frame + 1) / ALIGN_FRAME_RATE - ALIGN_PAD_SECONDS, start), duration)
        word = _VARIANT_RE.sub("", s.word)
        phones = len((dec.lookup_word(s.word) or dec.lookup_word(word) or "").split())
        score = math.log(max(s.ascore, 1e-300)) / max(1, s.end_frame - s.start_frame + 1)
        aligned.append(AlignedWord(word, start, end, phones, score))
    if [a.word for a in aligned] != words:
        raise AlignmentError(f"alignment failed: the aligner placed {len(aligned)} of {len(words)} words")
    return aligned
