"""Re-synthesis from the input: the model's output as time-frequency gains on the input.

The known-length tasks (denoise, remove-speech, extract-speaker) keep part of their input and drop
the rest. The codec's waveform of the part to keep is coarse (a few kbps, and not phase-aligned with
the input), so by default it only says how much of each band to keep: the estimate's band energies
over the input's, smoothed over a few frames, become gains on the input's STFT, and the output keeps
the input's own phase and detail (band gains the way DeepFilterNet applies its ERB gains, here
derived from the generated audio). `Resynth.CODEC` returns the codec's waveform itself.

The estimate has passed through the codec, which renders some sounds quieter than they are (noise
most of all). With `codec_reference` its energies are compared with the input as the codec renders
it (decoded from the input's own codes), so that bias cancels in the ratio instead of reading as
"cut this": remove-speech keeps more of the background it is meant to keep.

With a `Share` (extract-speaker's share detector: the target's share of each band's energy, frame by frame,
detector.py) the gains are the weighted geometric mean of the estimate's gains and the share itself (the Wiener
gain; its square root, the amplitude ratio the estimate's gains are, cuts less and measured worse): the detector
separates voices band by band where the codec's estimate is too coarse to (docs/demo-v2.md, "A target-share
detector"). Where a share weighs in, `share_floor` (if set) replaces the floor: the share is a gain learned band
by band, trusted to cut deeper than the generated audio's (denoise: -26 dB instead of -14).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Sequence

import librosa
import numpy as np
from scipy.ndimage import uniform_filter1d

STFT_SECONDS = 0.032  # analysis window (512 samples at 16 kHz)
HOP_SECONDS = 0.008  # 4x overlap: the gains change smoothly enough for overlap-add
EPS = 1e-10
_BOOLS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


class Resynth(str, enum.Enum):
    MASK = "mask"  # the estimate's band energies as gains on the input (default)
    CODEC = "codec"  # the codec's waveform of the estimate


@dataclass(frozen=True)
class MaskOptions:
    bands: int = 32  # mel bands the gains are computed in
    exponent: float = 0.5  # < 1 cuts less than the amplitude ratio says: the estimate is coarse
    floor: float = 0.32  # deepest cut (-10 dB): a gain never goes below it
    share_floor: float = 0.0  # the deepest cut where a detector's share weighs in (Share); 0: `floor`
    smooth_frames: int = 3  # moving average of band energies over this many STFT frames
    codec_reference: bool = False  # compare with the codec's rendering of the input (the caller passes it)
    # compare with the estimate plus the model's estimate of the part to drop (the caller generates it: the
    # counterpart task's output): both pass through the codec, so its bias cancels in the ratio
    counterpart: bool = False

    def with_overrides(self, spec: str) -> "MaskOptions":
        """These options with the fields `spec` names replaced, e.g. "bands=64,floor=0.18,codec_reference=yes"."""
        kinds = {f.name: type(f.default) for f in fields(self)}  # int, float or bool
        changes = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, value = (x.strip() for x in part.partition("="))
            if name not in kinds or not value:
                raise ValueError(f"mask: {part!r} is not NAME=VALUE with NAME one of {', '.join(kinds)}")
            try:
                changes[name] = _BOOLS[value.lower()] if kinds[name] is bool else kinds[name](value)
            except (KeyError, ValueError):
                raise ValueError(f"mask: {part!r}: expected a {kinds[name].__name__}") from None
        return replace(self, **changes).validate()

    def validate(self) -> "MaskOptions":
        if self.bands < 1 or self.smooth_frames < 1:
            raise ValueError("mask: bands and smooth_frames must be >= 1")
        if not 0 < self.floor <= 1 or not 0 <= self.share_floor <= 1 or self.exponent <= 0:
            raise ValueError("mask: need 0 < floor <= 1, 0 <= share_floor <= 1 and exponent > 0")
        return self


@dataclass(frozen=True)
class Share:
    """A detector's estimate of the kept part's share of each band's energy: `values` (frames, bands), frame k
    centred on sample (k + 0.5) * hop, bands on the mel scale from 0 Hz to half the sample rate; as gains
    it weighs `weight` in the mask's geometric mean."""
    values: np.ndarray
    hop: int
    weight: float

    def gains(self, bands: int, frames: int, hop: int) -> np.ndarray:
        """(bands, frames) the share on the mask's bands and STFT frames (frame j centred on j * hop), as gains."""
        n, b = self.values.shape
        t_share, t = (np.arange(n) + 0.5) * self.hop, np.arange(frames) * hop
        on_time = np.stack([np.interp(t, t_share, self.values[:, k]) for k in range(b)])  # (b, frames)
        x_share, x = (np.arange(b) + 1) / (b + 1), (np.arange(bands) + 1) / (bands + 1)  # mel-scale positions
        spread = np.stack([np.interp(x, x_share, unit) for unit in np.eye(b)], 1)  # (bands, b): identity if b == bands
        return np.clip(spread @ on_time, 0.0, 1.0)


def _stft_sizes(sample_rate: int) -> tuple[int, int]:
    return int(round(STFT_SECONDS * sample_rate)), int(round(HOP_SECONDS * sample_rate))


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


@lru_cache(maxsize=8)
def _bands(sample_rate: int, n_fft: int, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
    """The mel filterbank (bands, bins), and the weights (bins, bands) that spread band gains back onto
    bins: a bin outside every band (DC, near Nyquist) takes the nearest band's gain."""
    fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_bands)
    weight = fb.sum(axis=0)
    spread = fb.T / np.maximum(weight, EPS)[:, None]
    outside = weight < 1e-8
    below = np.arange(len(weight)) < np.argmax(fb[0])
    spread[outside & below, 0] = 1.0
    spread[outside & ~below, -1] = 1.0
    fb.flags.writeable = spread.flags.writeable = False  # shared by every call
    return fb, spread


def apply(mixture: np.ndarray, estimate: np.ndarray | Sequence[np.ndarray], sample_rate: int,
          opts: MaskOptions = MaskOptions(), reference: np.ndarray | None = None,
          counterpart: np.ndarray | Sequence[np.ndarray] | None = None, share: Share | None = None) -> np.ndarray:
    """The mixture with the estimate's band gains applied; same length as the mixture (the
    estimate and the reference are cut or padded with silence to it). The gains are the
    estimate's band energies over the reference's (default: the mixture's own).

    `estimate` may be several estimates of the same part (independent draws of the model): their band
    energies are averaged before the ratio, so a cut that one draw makes by chance is softened by the
    others (the mean of the model's distribution rather than one sample of it).

    With `counterpart` (an estimate, or draws, of the part to drop) the denominator is the estimate's band
    energy plus the counterpart's, not the reference's: a Wiener gain from two estimates of the same codec.
    With `share`, the gains are weighed with its gains (Share)."""
    estimates = _draws(estimate)
    if not estimates:
        raise ValueError("mask: no estimate")
    if counterpart is not None and reference is not None:
        raise ValueError("mask: a counterpart replaces the reference; give one of them")
    n = len(mixture)
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    n_fft, hop = _stft_sizes(sample_rate)
    length = max(n, n_fft)  # one full window at least

    def stft_of(x: np.ndarray) -> np.ndarray:  # (bins, frames)
        return librosa.stft(_fit(np.asarray(x, dtype=np.float32), length), n_fft=n_fft, hop_length=hop)

    spec = stft_of(mixture)
    fb, spread = _bands(sample_rate, n_fft, opts.bands)

    def energies(x: np.ndarray) -> np.ndarray:  # (bands, frames), smoothed over time
        return np.maximum(uniform_filter1d(fb @ np.abs(x) ** 2, opts.smooth_frames, axis=1, mode="nearest"), 0.0)

    est = np.mean([energies(stft_of(e)) for e in estimates], axis=0)
    if counterpart is not None:
        others = _draws(counterpart)
        if not others:
            raise ValueError("mask: no counterpart estimate")
        below = est + np.mean([energies(stft_of(e)) for e in others], axis=0)
    else:
        below = energies(spec if reference is None else stft_of(reference))
    gains = np.minimum(np.sqrt(est / (below + EPS)), 1.0) ** opts.exponent
    floor = opts.floor
    if share is not None:
        gains = gains ** (1 - share.weight) * share.gains(opts.bands, spec.shape[1], hop) ** share.weight
        floor = opts.share_floor or opts.floor
    gains = np.clip(gains, floor, 1.0)
    return librosa.istft(spread @ gains * spec, hop_length=hop, length=length)[:n].astype(np.float32)


def _draws(x: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    return [x] if isinstance(x, np.ndarray) else list(x)
