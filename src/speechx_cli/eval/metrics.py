"""The paper's objective metrics over waveforms, computed offline (docs/architecture.md, "Evaluation").

Every metric takes float32 mono numpy waveforms. Functions with an ``sr`` argument resample to
``SR`` (16 kHz) first, because every scorer here (pocketsphinx, Resemblyzer, DNSMOS, PESQ-wb,
STOI) is defined at 16 kHz. ``si_sdr`` and ``snr`` take no rate: give both signals at the same one.

Length mismatch: the reference-based metrics (PESQ, STOI, SI-SDR, SNR) trim both signals to the
shorter one, sample-aligned from the start, because the systems under test keep the input length
and a few trailing samples of codec padding must not decide the score. The mel cepstral distance
aligns frames with DTW instead, since generated speech need not keep the reference's timing.

The heavy packages (the ``eval`` extra) are imported lazily, so ``import speechx_cli.eval.metrics``
works without them. Loaded models live in a per-process cache (``_MODELS``); nothing else is global.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from speechx_cli import recognize
from speechx_cli.align import align_words as align
from speechx_cli.text import normalize_words as project_normalize

SR = 16000  # Hz, the rate every scorer here is defined at
MCD_N_FFT = 512  # 32 ms at SR
MCD_HOP = 160  # 10 ms at SR
MCD_N_MELS = 80
MCD_ORDER = 24  # cepstral coefficients c1..c24 (c0, the energy, is left out as usual)
MCD_POWER_FLOOR = 1e-10  # mel power floor (-100 dB) so digital silence stays finite
EPS = 1e-12

_MODELS: dict[str, Any] = {}  # per-process cache of loaded scorers


def _cached(name: str, factory: Callable[[], Any]) -> Any:
    if name not in _MODELS:
        _MODELS[name] = factory()
    return _MODELS[name]


def as_16k(audio: np.ndarray, sr: int) -> np.ndarray:
    """float32 mono at SR; a (C, T) array is averaged over channels."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise ValueError(f"expected a mono waveform (T,) or (C, T), got shape {x.shape}")
    if sr != SR:
        import librosa

        x = librosa.resample(x, orig_sr=sr, target_sr=SR).astype(np.float32)
    return x


def _trim_pair(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(ref), len(deg))
    if n == 0:
        raise ValueError("empty waveform")
    return ref[:n], deg[:n]


def _pcm16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


# ---------------------------------------------------------------------------------------------
# Text: normalisation, ASR, WER, forced alignment
# ---------------------------------------------------------------------------------------------

_PUNCT = re.compile(f"[{re.escape(string.punctuation.replace(chr(39), ''))}]")


def normalize_words(text: str) -> list[str]:
    """The project's text normaliser (speechx_cli.text: numbers spelled out), lowercase, punctuation
    (except inner apostrophes) stripped."""
    words = [_PUNCT.sub(" ", w.lower()) for w in project_normalize(text)]
    return [p.strip("'") for w in words for p in w.split() if p.strip("'")]


def metric_name(base: str, recognizer: str) -> str:
    """A recognizer's name for a text metric: "wer" / "new_word" for pocketsphinx (SPEC's), else suffixed."""
    name = recognizer.partition("=")[0]
    return base if name == "pocketsphinx" else f"{base}_{name}"


def transcribe(audio: np.ndarray, sr: int, recognizer: str = "pocketsphinx") -> str:
    """A recognizer's transcript (speechx_cli.recognize: pocketsphinx, Whisper), normalised words."""
    return " ".join(normalize_words(recognize.transcribe(as_16k(audio, sr), recognizer)))


def word_error_rate(reference_text: str, hypothesis_text: str) -> float:
    """WER between two texts after normalisation (can exceed 1 with many insertions)."""
    import jiwer

    ref = " ".join(normalize_words(reference_text))
    hyp = " ".join(normalize_words(hypothesis_text))
    if not ref:
        raise ValueError("reference text has no words")
    if not hyp:
        return 1.0  # every reference word deleted
    return float(jiwer.wer(ref, hyp))


def new_words(original: str, edited: str) -> list[int]:
    """Indices (in normalize_words(edited)) of the words an edit puts in: what difflib's word diff of
    the two texts marks inserted or replaced. Empty for an edit that only deletes."""
    from difflib import SequenceMatcher

    ops = SequenceMatcher(None, normalize_words(original), normalize_words(edited), autojunk=False).get_opcodes()
    return [j for tag, _, _, j1, j2 in ops if tag in ("replace", "insert") for j in range(j1, j2)]


def new_words_recognized(original: str, edited: str, hypothesis: str) -> float:
    """1.0 when every new word of the edit is a hit in the alignment of the recognizer's transcript to
    the edited text (the right word in the right place), else 0.0. ValueError when the edit adds none."""
    import jiwer

    new = new_words(original, edited)
    if not new:
        raise ValueError("the edit adds no word")
    hyp = " ".join(normalize_words(hypothesis))
    if not hyp:
        return 0.0
    chunks = jiwer.process_words(" ".join(normalize_words(edited)), hyp).alignments[0]
    hits = {i for c in chunks if c.type == "equal" for i in range(c.ref_start_idx, c.ref_end_idx)}
    return float(all(j in hits for j in new))


def wer(reference_text: str, audio: np.ndarray, sr: int, recognizer: str = "pocketsphinx") -> float:
    """WER of a recognizer's transcript of ``audio`` against ``reference_text``.

    pocketsphinx is weak on espeak formant voices (WER 0.7-0.96) and on noisy speech (~0.9 at
    10 dB): use it on clean flite/festival voices or enhanced output.
    """
    return word_error_rate(reference_text, transcribe(audio, sr, recognizer))


def align_words(
    audio: np.ndarray,
    sr: int,
    transcript: str,
    pronunciations: dict[str, str] | None = None,
) -> list[tuple[str, float, float]]:
    """Force-align ``transcript`` to ``audio``: [(word, start_s, end_s)] in transcript order.

    The aligner itself lives in speechx_cli.align (``speechx edit`` uses it too).
    ``pronunciations`` adds words missing from pocketsphinx's dictionary (CMU phones without
    stress, e.g. {"speechx": "S P IY CH EH K S"}). Raises ValueError on unknown words or when the
    aligner drops words (it sometimes loses the last one).
    """
    words = normalize_words(transcript)
    if not words:
        raise ValueError("transcript has no words")
    return [(w.word, w.start, w.end) for w in align(as_16k(audio, sr), SR, words, pronunciations)]


# ---------------------------------------------------------------------------------------------
# Speaker similarity (Resemblyzer)
# ---------------------------------------------------------------------------------------------


def speaker_embedding(audio: np.ndarray, sr: int) -> np.ndarray:
    """Resemblyzer d-vector (256,), L2-normalised."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = _cached("resemblyzer", lambda: VoiceEncoder("cpu", verbose=False))
    wav = preprocess_wav(as_16k(audio, sr), source_sr=SR)  # level-normalised, long pauses cut
    if len(wav) == 0:
        raise ValueError("no voiced audio left after Resemblyzer's silence trimming")
    return np.asarray(encoder.embed_utterance(wav), dtype=np.float32)


def speaker_similarity(a: np.ndarray, b: np.ndarray, sr: int) -> float:
    """Cosine similarity of Resemblyzer embeddings (same voice ~0.9, different ~0.6)."""
    return float(np.dot(speaker_embedding(a, sr), speaker_embedding(b, sr)))


# ---------------------------------------------------------------------------------------------
# Non-intrusive quality (DNSMOS P.835)
# ---------------------------------------------------------------------------------------------


def dnsmos(audio: np.ndarray, sr: int) -> dict[str, float]:
    """DNSMOS P.835 via speechmos: {"ovrl", "sig", "bak", "p808"}, each on 1-5.

    speechmos refuses |x| > 1, so a louder signal is scaled to peak 1 first. Clips shorter than
    ~9 s are tiled by speechmos itself.
    """
    from speechmos import dnsmos as speechmos_dnsmos

    x = as_16k(audio, sr)
    if len(x) == 0:
        raise ValueError("empty waveform")  # speechmos would loop forever tiling it
    peak = float(np.max(np.abs(x)))
    if peak > 1.0:
        x = x / peak
    out = speechmos_dnsmos.run(x, sr=SR)  # speechmos keeps its own loaded-model cache
    return {
        "ovrl": float(out["ovrl_mos"]),
        "sig": float(out["sig_mos"]),
        "bak": float(out["bak_mos"]),
        "p808": float(out["p808_mos"]),
    }


# ---------------------------------------------------------------------------------------------
# Intrusive metrics (reference, degraded)
# ---------------------------------------------------------------------------------------------


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2), -0.5..4.64. Raises if no speech is found in ``ref``."""
    from pesq import pesq

    r, d = _trim_pair(as_16k(ref, sr), as_16k(deg, sr))
    return float(pesq(SR, r.astype(np.float64), d.astype(np.float64), "wb"))


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """Short-time objective intelligibility (classic, not extended), ~0..1."""
    from pystoi import stoi as pystoi_stoi

    r, d = _trim_pair(as_16k(ref, sr), as_16k(deg, sr))
    return float(pystoi_stoi(r.astype(np.float64), d.astype(np.float64), SR, extended=False))


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), both signals made zero-mean first."""
    r, e = _trim_pair(np.asarray(ref, np.float64), np.asarray(est, np.float64))
    r = r - r.mean()
    e = e - e.mean()
    alpha = np.dot(e, r) / (np.dot(r, r) + EPS)
    target = alpha * r
    residual = e - target
    ratio = (np.dot(target, target) + EPS) / (np.dot(residual, residual) + EPS)
    return float(10.0 * np.log10(ratio))


def snr(ref: np.ndarray, est: np.ndarray) -> float:
    """Plain SNR in dB: energy of ``ref`` over that of ``est - ref`` (no scaling or mean removal)."""
    r, e = _trim_pair(np.asarray(ref, np.float64), np.asarray(est, np.float64))
    noise = e - r
    return float(10.0 * np.log10((np.dot(r, r) + EPS) / (np.dot(noise, noise) + EPS)))


def _mel_cepstrum(x: np.ndarray) -> np.ndarray:
    """Cepstrum of the log mel amplitude spectrum, c1..c{MCD_ORDER}: (MCD_ORDER, frames).

    c_k = (1 / M) * sum_m ln|X_m| cos(pi k (m + 1/2) / M) over M mel bands: the real cepstrum's
    scaling (scipy's unnormalised DCT-II is twice that sum), so the classic MCD constant applies.
    """
    import librosa
    from scipy.fft import dct

    power = librosa.feature.melspectrogram(
        y=x, sr=SR, n_fft=MCD_N_FFT, hop_length=MCD_HOP, n_mels=MCD_N_MELS, htk=True, power=2.0
    )  # (MCD_N_MELS, frames)
    log_amp = 0.5 * np.log(np.maximum(power, MCD_POWER_FLOOR))
    return dct(log_amp, type=2, axis=0, norm=None)[1 : MCD_ORDER + 1] / (2 * MCD_N_MELS)


def mel_cepstral_distance(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """Mel cepstral distortion in dB, frames aligned by DTW (Euclidean cost), averaged on the path.

    MCD = (10 / ln 10) * sqrt(2 * sum_k (c_k - c'_k)^2) over c1..c24 of an 80-band mel cepstrum
    (32 ms window, 10 ms hop); c0 (level) is left out, so a gain change scores ~0. DTW because
    generated speech need not keep the reference's timing. Typical here: identical 0, same text
    by two synthetic voices 5-6 dB, 20 dB white noise ~4 dB. Comparable across this project's
    runs, not exactly to SPTK mcep-based numbers (different spectral envelope estimate).
    """
    import librosa

    a = _mel_cepstrum(as_16k(ref, sr))
    b = _mel_cepstrum(as_16k(deg, sr))
    _, path = librosa.sequence.dtw(X=a, Y=b, metric="euclidean")
    diff = a[:, path[:, 0]] - b[:, path[:, 1]]  # (MCD_ORDER, path length)
    per_frame = (10.0 / math.log(10.0)) * np.sqrt(2.0 * np.sum(diff**2, axis=0))
    return float(np.mean(per_frame))


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


def summarize(values: Sequence[float] | np.ndarray) -> tuple[float, float, float]:
    """(mean, ci95_low, ci95_high) with a Student t interval; bounds are NaN for one value."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no values to summarize")
    mean = float(v.mean())
    if v.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def mean_ci(values: Sequence[float]) -> dict | None:
    """summarize's numbers as a report cell {mean, ci95_low, ci95_high, n}; None without values."""
    if len(values) == 0:
        return None
    mean, low, high = summarize(values)
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": len(values)}
