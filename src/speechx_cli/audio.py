"""Audio files in and out: the only module (besides cli.py) that touches them.

Everything read comes back as float32 mono `(N,)` at the sample rate the caller asks for
(the codec's); everything written is clipped to [-1, 1] and written atomically (temp file in
the same folder, fsync, os.replace), so an interrupted run never leaves half a file behind.
Problems a user can cause (missing, empty, corrupt, too long, existing output) raise
AudioError with a one-line message naming the file.
"""

from __future__ import annotations

import math
import os
import re
import warnings
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .files import atomic_path

MAX_INPUT_SECONDS = 4 * 60 * 60.0  # refuse longer inputs unless the caller lifts the limit
CROSSFADE_SECONDS = 0.01  # length of each join in splice()
SILENCE_PEAK_DBFS = -80.0  # a file whose peak is below this counts as silent
SILENCE_PEAK = 10.0 ** (SILENCE_PEAK_DBFS / 20.0)  # linear amplitude, 1e-4
DEFAULT_BLOCK_SECONDS = 30.0  # iter_blocks() block length when the caller has no preference

# Output formats by extension; a path without an extension is written as WAV.
_WRITE_FORMATS: dict[str, tuple[str, str]] = {
    "": ("WAV", "PCM_16"),
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
}
# Inputs found by folder walks: what libsndfile (>= 1.1) reads, plus common audioread formats.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".caf", ".w64",
     ".m4a", ".aac", ".wma"}
)


class AudioError(Exception):
    """A problem with an audio file, worded for the user: '<file>: <what is wrong>'."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel
    duration_s: float


def is_audio_path(p: str | os.PathLike) -> bool:
    """True for a non-hidden file name with an extension in AUDIO_EXTENSIONS."""
    path = Path(p)
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

_TRUNCATED_RE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
_STREAMING_SIZE = 0x7FFFF000  # data sizes from here up are "unknown length" placeholders


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _sf_info(path: Path) -> sf._SoundFileInfo:
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not an audio file (soundfile could not read it)") from e


def _check_header(path: Path, header: sf._SoundFileInfo) -> None:
    # libsndfile reads a cut-off WAV without complaint and only logs the short data chunk.
    # Streaming writers put a placeholder size (0xFFFFFFFF) in the header: not truncation.
    m = _TRUNCATED_RE.search(header.extra_info or "")
    if m and _STREAMING_SIZE > int(m.group(1)) > int(m.group(2)):
        raise AudioError(
            f"{path}: truncated (header promises {int(m.group(1))} bytes of audio, "
            f"file holds {int(m.group(2))})"
        )
    if header.frames == 0:
        raise AudioError(f"{path}: no audio in it (0 samples)")


def _check_duration(path: Path, duration_s: float, max_seconds: float | None) -> None:
    limit = MAX_INPUT_SECONDS if max_seconds is None else max_seconds
    if duration_s > limit:
        raise AudioError(f"{path}: {duration_s:.1f} s long, more than the limit of {limit:.1f} s")


def info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels and length from the file header, without reading the audio."""
    path = Path(path)
    _check_file(path)
    header = _sf_info(path)
    _check_header(path, header)
    return AudioInfo(header.samplerate, header.channels, header.frames, header.frames / header.samplerate)


def _read_soundfile(path: Path, header: sf._SoundFileInfo) -> np.ndarray:
    """Mono float32; downmixes block by block so a multichannel copy never sits in memory."""
    mono = np.empty(header.frames, dtype=np.float32)
    n = 0
    with sf.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=1 << 18, dtype="float32", always_2d=True):  # (n, C)
            mono[n : n + len(block)] = block.mean(axis=1)
            n += len(block)
    return mono[:n]


def _read_audioread(path: Path) -> tuple[np.ndarray, int]:
    """Fallback for formats libsndfile lacks (m4a, ...); needs an audioread backend (ffmpeg)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import audioread

            with audioread.audio_open(str(path)) as f:
                sr, channels = f.samplerate, f.channels
                pcm = b"".join(f)
    except Exception as e:  # audioread raises many unrelated types for "cannot decode"
        raise AudioError(f"{path}: not an audio file (soundfile could not read it)") from e
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, channels).mean(axis=1), sr


def load(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    allow_silence: bool = True,
) -> tuple[np.ndarray, int]:
    """Read any audio file as float32 mono (N,) at `sample_rate`; also return the file's rate.

    Channels are averaged. max_seconds=None applies MAX_INPUT_SECONDS; pass math.inf to lift it.
    allow_silence=False refuses files whose peak is below SILENCE_PEAK_DBFS.
    """
    path = Path(path)
    _check_file(path)
    try:
        header = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        header = None
    if header is not None:
        _check_header(path, header)
        _check_duration(path, header.frames / header.samplerate, max_seconds)
        x, sr_in = _read_soundfile(path, header), header.samplerate
    else:
        x, sr_in = _read_audioread(path)
        _check_duration(path, len(x) / sr_in, max_seconds)
    if len(x) == 0:
        raise AudioError(f"{path}: no audio in it (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if not allow_silence and float(np.max(np.abs(x))) < SILENCE_PEAK:
        raise AudioError(f"{path}: silent (peak below {SILENCE_PEAK_DBFS:.0f} dBFS)")
    return resample(x, sr_in, sample_rate), sr_in


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of (N,) or (N, C) audio with soxr (librosa's "soxr_hq").

    Output length is exactly ceil(N * sr_out / sr_in), computed in integers: librosa's float
    ratio gives one sample too many for e.g. 44100 -> 24000.
    """
    if sr_in <= 0 or sr_out <= 0:
        raise ValueError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    import soxr

    n_out = -(-len(x) * sr_out // sr_in)
    y = soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    if len(y) < n_out:
        y = np.concatenate([y, np.zeros((n_out - len(y),) + y.shape[1:], np.float32)])
    return y[:n_out]


def iter_blocks(
    path: str | os.PathLike, sample_rate: int, block_seconds: float = DEFAULT_BLOCK_SECONDS
) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks at `sample_rate`, each round(block_seconds * sample_rate)
    samples long except the last, holding only a few blocks in memory at a time.

    Streams through soxr, so the blocks join without seams; the total length can differ
    from load()'s by a sample or two. Formats libsndfile cannot read are not supported here.
    """
    import soxr

    path = Path(path)
    _check_file(path)
    header = _sf_info(path)
    _check_header(path, header)
    block_out = max(1, round(block_seconds * sample_rate))
    block_in = max(1, math.ceil(block_seconds * header.samplerate))
    stream = None
    if header.samplerate != sample_rate:
        stream = soxr.ResampleStream(header.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    pending = np.empty(0, dtype=np.float32)
    with sf.SoundFile(str(path)) as f:
        while True:
            block = f.read(block_in, dtype="float32", always_2d=True)  # (n, C)
            last = len(block) < block_in or f.tell() >= header.frames
            mono = block.mean(axis=1).astype(np.float32)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=last)
            pending = np.concatenate([pending, mono])
            while len(pending) >= block_out:
                yield pending[:block_out]
                pending = pending[block_out:]
            if last:
                break
    if len(pending):
        yield pending


def resample_stream(blocks: Iterable[np.ndarray], sr_in: int, sr_out: int) -> Iterator[np.ndarray]:
    """Resample a stream of mono blocks without seams (soxr's streaming resampler)."""
    if sr_in == sr_out:
        yield from blocks
        return
    import soxr

    stream = soxr.ResampleStream(sr_in, sr_out, 1, dtype="float32", quality="HQ")
    for block in blocks:
        out = stream.resample_chunk(np.asarray(block, dtype=np.float32))
        if len(out):
            yield out
    out = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
    if len(out):
        yield out


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _write_format(path: Path) -> tuple[str, str]:
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise AudioError(f"{path}: cannot write '{path.suffix}' files (use .wav, .flac or .ogg)")
    return fmt


@contextmanager
def _output(path: Path, force: bool) -> Iterator[Path]:
    """Check the target, then yield a temp path beside it that becomes `path` on success."""
    if path.is_dir():
        raise AudioError(f"{path}: is a folder")
    if path.exists() and not force:
        raise AudioError(f"{path} exists (use --force to overwrite)")
    try:
        writer = atomic_path(path)
        tmp = writer.__enter__()
    except OSError as e:
        raise AudioError(f"{path.parent}: cannot write there ({e.strerror or e})") from e
    try:
        yield tmp
    except BaseException:
        writer.__exit__(*sys.exc_info())
        raise
    try:
        writer.__exit__(None, None, None)
    except OSError as e:
        raise AudioError(f"{path}: could not write ({e.strerror or e})") from e


def _clip(audio: np.ndarray) -> tuple[np.ndarray, int]:
    x = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(x).all():
        raise AudioError("audio to save contains NaN or infinite samples")
    clipped = int(np.count_nonzero(np.abs(x) > 1.0))
    return (np.clip(x, -1.0, 1.0) if clipped else x), clipped


def save(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, force: bool = False) -> int:
    """Write (N,) or (N, C) audio atomically; format from the extension (WAV when none).

    Samples are clipped to [-1, 1]; returns how many were clipped so the caller can warn.
    Refuses to replace an existing file unless force.
    """
    path = Path(path)
    fmt, subtype = _write_format(path)
    x, clipped = _clip(audio)
    if x.ndim not in (1, 2) or len(x) == 0:
        raise AudioError(f"{path}: nothing to write (audio shape {x.shape})")
    with _output(path, force) as tmp:
        try:
            sf.write(str(tmp), x, sample_rate, format=fmt, subtype=subtype)
        except (OSError, sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{path}: could not write ({e})") from e
    return clipped


class BlockWriter:
    """Write a long output block by block; the file appears (atomically) only on success.

    with BlockWriter("out.wav", 24000) as w:
        for block in blocks:
            w.write(block)
    w.frames and w.clipped count what was written; an exception inside the block removes
    the temp file and leaves any existing target untouched.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *, channels: int = 1, force: bool = False):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.force = force
        self.frames = 0
        self.clipped = 0
        self._stack: ExitStack | None = None
        self._file: sf.SoundFile | None = None

    def __enter__(self) -> BlockWriter:
        fmt, subtype = _write_format(self.path)
        with ExitStack() as stack:
            tmp = stack.enter_context(_output(self.path, self.force))
            self._file = stack.enter_context(
                sf.SoundFile(str(tmp), "w", self.sample_rate, self.channels, subtype=subtype, format=fmt))
            self._stack = stack.pop_all()
        return self

    def write(self, block: np.ndarray) -> None:
        if self._file is None:
            raise RuntimeError("BlockWriter.write() outside its with-block")
        x, clipped = _clip(block)
        self._file.write(x)
        self.frames += len(x)
        self.clipped += clipped

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._stack is not None
        stack, self._stack, self._file = self._stack, None, None
        stack.__exit__(exc_type, exc, tb)  # closes the file, then commits or removes the temp


# ---------------------------------------------------------------------------------------------
# Joining
# ---------------------------------------------------------------------------------------------


def crossfade(a_tail: np.ndarray, b_head: np.ndarray) -> np.ndarray:
    """Equal-power fade from a to b over their common length (sample axis 0).

    Gains are cos/sin of a quarter turn, sampled at the midpoints of n steps, so
    gain_a**2 + gain_b**2 == 1: loudness holds for unrelated signals (speech from two
    sources), at the price of up to +3 dB where a and b are the same signal.
    """
    a = np.asarray(a_tail, dtype=np.float32)
    b = np.asarray(b_head, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"crossfade needs equal shapes, got {a.shape} and {b.shape}")
    n = len(a)
    theta = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1) * (np.pi / 2)
    shape = (n,) + (1,) * (a.ndim - 1)
    gain_a = np.cos(theta).reshape(shape)
    gain_b = np.sin(theta).reshape(shape)
    return (a * gain_a + b * gain_b).astype(np.float32)


def splice(original: np.ndarray, replacement: np.ndarray, start: int, end: int, fade: int) -> np.ndarray:
    """original[:start] + replacement + original[end:], with a crossfade at each join.

    Both fades lie inside the new middle part, so the output's first `start` samples are
    original[:start] and its last len(original) - end samples are original[end:], bit for bit.
    At the left join, the replacement's first f samples fade in from original[start:start+f]
    (what followed the join before); at the right join, its last f samples fade out into
    original[end-f:end] (what led into original[end:]). f = min(fade, len(replacement) // 2,
    the original samples available there); f = 0 is a hard cut. Samples, not seconds.
    """
    original = np.asarray(original, dtype=np.float32)
    middle = np.array(replacement, dtype=np.float32)  # a copy: filled in place below
    if not 0 <= start <= end <= len(original):
        raise ValueError(f"need 0 <= start <= end <= {len(original)}, got start={start}, end={end}")
    if fade < 0:
        raise ValueError(f"fade must be >= 0 samples, got {fade}")
    half = len(middle) // 2
    f_in = min(fade, half, len(original) - start)
    if f_in:
        middle[:f_in] = crossfade(original[start : start + f_in], middle[:f_in])
    f_out = min(fade, half, end)
    if f_out:
        middle[len(middle) - f_out :] = crossfade(middle[len(middle) - f_out :], original[end - f_out : end])
    return np.concatenate([original[:start], middle, original[end:]])
