"""A stand-in for the few torchaudio names encodec uses, for machines where torchaudio cannot load.

encodec 0.1.1 imports torchaudio at module level but only uses `transforms.Resample`
(encodec/utils.py), `save` (encodec/utils.py) and `transforms.Spectrogram` (encodec/msstftd.py).
pip resolves encodec's unpinned torchaudio to a CUDA build that fails to load beside CPU torch
(docs/offline-tools.md, "The torchaudio trap"), so `import encodec` breaks. `ensure_encodec_importable()` tries
the real torchaudio first and registers this stand-in only when that import fails: anyone with a
working torchaudio keeps using it.

Resample and Spectrogram follow torchaudio's own algorithms (windowed-sinc resampling with
`lowpass_filter_width=6, rolloff=0.99`; torch.stft plus torchaudio's normalisation rules), so
both paths give the same numbers.
"""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Callable

import soundfile as sf
import torch
from torch import Tensor, nn

STANDIN_VERSION = "0.0.0+speechx-standin"

_state: dict[str, bool] = {}


def ensure_encodec_importable() -> bool:
    """Make `import torchaudio` (hence `import encodec`) work; True if the real one loaded."""
    if "real" in _state:
        return _state["real"]
    try:
        import torchaudio  # noqa: F401  - the import is the test: a broken build fails right here

        real = getattr(torchaudio, "__version__", "") != STANDIN_VERSION
    except Exception:  # a broken build raises OSError, ImportError or RuntimeError
        _install_standin()
        real = False
    _state["real"] = real
    return real


def _install_standin() -> None:
    # A failed import can leave half-initialised submodules behind; drop them all.
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]

    root = types.ModuleType("torchaudio")
    root.__doc__ = "speechx stand-in for torchaudio (the real package failed to import)."
    root.__version__ = STANDIN_VERSION
    root.__path__ = []  # a package, so `import torchaudio.transforms` resolves through sys.modules
    transforms = types.ModuleType("torchaudio.transforms")
    functional = types.ModuleType("torchaudio.functional")

    transforms.Resample = Resample
    transforms.Spectrogram = Spectrogram
    functional.resample = resample
    functional.spectrogram = spectrogram
    root.transforms = transforms
    root.functional = functional
    root.load = load
    root.save = save

    sys.modules["torchaudio"] = root
    sys.modules["torchaudio.transforms"] = transforms
    sys.modules["torchaudio.functional"] = functional


# ---- resampling (torchaudio.functional.functional._get_sinc_resample_kernel) ----

def _sinc_resample_kernel(
    orig_freq: int, new_freq: int, gcd: int, lowpass_filter_width: int = 6,
    rolloff: float = 0.99, dtype: torch.dtype | None = None,
) -> tuple[Tensor, int]:
    orig_freq, new_freq = int(orig_freq) // gcd, int(new_freq) // gcd
    if lowpass_filter_width <= 0:
        raise ValueError("Low pass filter width should be positive.")
    base_freq = min(orig_freq, new_freq) * rolloff
    width = math.ceil(lowpass_filter_width * orig_freq / base_freq)
    idx_dtype = dtype if dtype is not None else torch.float64
    idx = torch.arange(-width, width + orig_freq, dtype=idx_dtype)[None, None] / orig_freq
    t = torch.arange(0, -new_freq, -1, dtype=dtype)[:, None, None] / new_freq + idx
    t *= base_freq
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2  # hann
    t *= math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernels *= window * (base_freq / orig_freq)
    if dtype is None:
        kernels = kernels.to(dtype=torch.float32)
    return kernels, width  # (new_freq, 1, 2 * width + orig_freq)


def _apply_resample_kernel(
    waveform: Tensor, orig_freq: int, new_freq: int, gcd: int, kernel: Tensor, width: int,
) -> Tensor:
    if not waveform.is_floating_point():
        raise TypeError(f"Expected a floating point waveform, got {waveform.dtype}.")
    orig_freq, new_freq = int(orig_freq) // gcd, int(new_freq) // gcd
    shape = waveform.size()
    waveform = waveform.reshape(-1, shape[-1])  # (n_wavs, time)
    n_wavs, length = waveform.shape
    waveform = nn.functional.pad(waveform, (width, width + orig_freq))
    out = nn.functional.conv1d(waveform[:, None], kernel.to(waveform), stride=orig_freq)
    out = out.transpose(1, 2).reshape(n_wavs, -1)
    out = out[..., : math.ceil(new_freq * length / orig_freq)]
    return out.reshape(shape[:-1] + out.shape[-1:])


def resample(waveform: Tensor, orig_freq: int, new_freq: int,
             lowpass_filter_width: int = 6, rolloff: float = 0.99) -> Tensor:
    """Band-limited (hann-windowed sinc) resampling along the last axis."""
    if orig_freq <= 0 or new_freq <= 0:
        raise ValueError("Sample rates must be positive")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    kernel, width = _sinc_resample_kernel(orig_freq, new_freq, gcd, lowpass_filter_width,
                                          rolloff, dtype=waveform.dtype)
    return _apply_resample_kernel(waveform, orig_freq, new_freq, gcd, kernel, width)


class Resample(nn.Module):
    """torchaudio.transforms.Resample (hann-windowed sinc only)."""

    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000,
                 resampling_method: str = "sinc_interp_hann", lowpass_filter_width: int = 6,
                 rolloff: float = 0.99, beta: float | None = None, *,
                 dtype: torch.dtype | None = None):
        super().__init__()
        if resampling_method not in ("sinc_interp_hann", "sinc_interpolation"):
            raise NotImplementedError(f"stand-in torchaudio supports only sinc_interp_hann, "
                                      f"not {resampling_method}")
        self.orig_freq, self.new_freq = orig_freq, new_freq
        self.gcd = math.gcd(int(orig_freq), int(new_freq))
        if orig_freq != new_freq:
            kernel, self.width = _sinc_resample_kernel(orig_freq, new_freq, self.gcd,
                                                       lowpass_filter_width, rolloff, dtype=dtype)
            self.register_buffer("kernel", kernel)

    def forward(self, waveform: Tensor) -> Tensor:
        if self.orig_freq == self.new_freq:
            return waveform
        return _apply_resample_kernel(waveform, self.orig_freq, self.new_freq, self.gcd,
                                      self.kernel, self.width)


# ---- spectrogram (torchaudio.functional.spectrogram) ----

def _spec_norms(normalized: bool | str) -> tuple[bool, bool]:
    """(frame_length_norm, window_norm) as torchaudio reads `normalized`."""
    if isinstance(normalized, str):
        if normalized not in ("frame_length", "window"):
            raise ValueError(f"Invalid normalized parameter: {normalized}")
        return normalized == "frame_length", normalized == "window"
    return False, bool(normalized)


def spectrogram(waveform: Tensor, pad: int, window: Tensor, n_fft: int, hop_length: int,
                win_length: int, power: float | None, normalized: bool | str,
                center: bool = True, pad_mode: str | None = "reflect",
                onesided: bool = True) -> Tensor:
    """STFT of (..., time) -> (..., freq, frames); complex when power is None."""
    if pad > 0:
        waveform = nn.functional.pad(waveform, (pad, pad), "constant")
    frame_length_norm, window_norm = _spec_norms(normalized)
    shape = waveform.size()
    spec = torch.stft(waveform.reshape(-1, shape[-1]), n_fft=n_fft, hop_length=hop_length,
                      win_length=win_length, window=window, center=center,
                      pad_mode=pad_mode or "reflect", normalized=frame_length_norm,
                      onesided=onesided, return_complex=True)
    spec = spec.reshape(shape[:-1] + spec.shape[-2:])
    if window_norm:
        spec = spec / window.pow(2.0).sum().sqrt()
    if power is None:
        return spec
    return spec.abs() if power == 1.0 else spec.abs().pow(power)


class Spectrogram(nn.Module):
    """torchaudio.transforms.Spectrogram."""

    def __init__(self, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, pad: int = 0,
                 window_fn: Callable[..., Tensor] = torch.hann_window,
                 power: float | None = 2.0, normalized: bool | str = False,
                 wkwargs: dict | None = None, center: bool = True,
                 pad_mode: str | None = "reflect", onesided: bool = True,
                 return_complex: bool | None = None):
        super().__init__()
        self.n_fft = n_fft
        self.win_length = win_length if win_length is not None else n_fft
        self.hop_length = hop_length if hop_length is not None else self.win_length // 2
        window = window_fn(self.win_length, **(wkwargs or {}))
        self.register_buffer("window", window)
        self.pad, self.power, self.normalized = pad, power, normalized
        self.center, self.pad_mode, self.onesided = center, pad_mode, onesided

    def forward(self, waveform: Tensor) -> Tensor:
        return spectrogram(waveform, self.pad, self.window, self.n_fft, self.hop_length,
                           self.win_length, self.power, self.normalized, self.center,
                           self.pad_mode, self.onesided)


# ---- file I/O through soundfile ----

def load(uri: str | Path, frame_offset: int = 0, num_frames: int = -1, normalize: bool = True,
         channels_first: bool = True, **_: object) -> tuple[Tensor, int]:
    """Read an audio file -> (float32 (channels, time), sample rate)."""
    stop = None if num_frames < 0 else frame_offset + num_frames
    data, sr = sf.read(str(uri), start=frame_offset, stop=stop, dtype="float32", always_2d=True)
    wav = torch.from_numpy(data)  # (time, channels)
    return (wav.t().contiguous() if channels_first else wav), int(sr)


def save(uri: str | Path, src: Tensor, sample_rate: int, channels_first: bool = True,
         format: str | None = None, encoding: str | None = None,
         bits_per_sample: int | None = None, **_: object) -> None:
    """Write (channels, time) audio; 16-bit PCM unless told otherwise (as encodec asks)."""
    data = src.detach().cpu().float()
    if data.dim() == 1:
        data = data[None]
    if channels_first:
        data = data.t()
    subtype = {8: "PCM_U8", 16: "PCM_16", 24: "PCM_24", 32: "PCM_32"}.get(bits_per_sample or 16)
    if encoding == "PCM_F":
        subtype = "FLOAT"
    sf.write(str(uri), data.numpy(), int(sample_rate), subtype=subtype, format=format)
