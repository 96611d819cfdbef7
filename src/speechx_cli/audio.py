"""Audio files in and out: the only module (besides cli.py) that touches them.

Everything read comes back as float32 mono `(N,)` at the sample rate the caller asks for
(the codec's): libsndfile reads what it can (wav, flac, ogg, mp3, ...: fast, exact), FFmpeg
through PyAV (media.py) the rest (m4a, aac, wma, the sound of videos, ...). Everything written
is clipped to [-1, 1] and written atomically (temp file in the same folder, fsync, os.replace),
so an interrupted run never leaves half a file behind; the extension picks the format.
Problems a user can cause (missing, empty, corrupt, too long, existing output) raise
AudioError with a one-line message naming the file.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import soundfile as sf

from .audioinfo import AudioError, AudioInfo
from .files import atomic_path

MAX_INPUT_SECONDS = 4 * 60 * 60.0  # refuse longer inputs unless the caller lifts the limit
CROSSFADE_SECONDS = 0.01  # length of each join in splice()
SILENCE_PEAK_DBFS = -80.0  # a file whose peak is below this counts as silent
SILENCE_PEAK = 10.0 ** (SILENCE_PEAK_DBFS / 20.0)  # linear amplitude, 1e-4
DEFAULT_BLOCK_SECONDS = 30.0  # iter_blocks() block length when the caller has no preference

DEFAULT_BITRATE_KBPS = 192  # compressed outputs (mp3, m4a, aac, opus)
BITRATE_RANGE_KBPS = (32, 320)  # what every one of those encoders accepts (mp3 stops at 320)

# Output formats by extension. libsndfile writes these (format, subtype); no extension is WAV ...
_SOUNDFILE_WRITE: dict[str, tuple[str, str]] = {
    "": ("WAV", "PCM_16"), ".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"), ".oga": ("OGG", "VORBIS"), ".aiff": ("AIFF", "PCM_16"),
    ".aif": ("AIFF", "PCM_16"), ".au": ("AU", "PCM_16"), ".caf": ("CAF", "PCM_16"), ".w64": ("W64", "PCM_16"),
}
# ... and FFmpeg these, through PyAV (muxer, encoder), at a bitrate.
_ENCODED: dict[str, tuple[str, str]] = {
    ".mp3": ("mp3", "libmp3lame"), ".m4a": ("ipod", "aac"), ".m4b": ("ipod", "aac"),
    ".aac": ("adts", "aac"), ".opus": ("opus", "libopus"),
}
WRITE_EXTENSIONS: frozenset[str] = frozenset(_SOUNDFILE_WRITE) - {""} | frozenset(_ENCODED)
# Inputs found by folder walks: audio containers (libsndfile's and FFmpeg's) ...
AUDIO_EXTENSIONS: frozenset[str] = WRITE_EXTENSIONS | frozenset(
    {".wma", ".mka", ".ac3", ".amr", ".ape", ".wv", ".mp2", ".aifc"})
# ... and videos, whose first audio stream is read; their outputs are audio files.
VIDEO_EXTENSIONS: frozenset[str] = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
VIDEO_OUTPUT_SUFFIX = ".m4a"  # a folder run's output for a video input: its sound, as AAC
OTHER_OUTPUT_SUFFIX = ".flac"  # ... and for audio in a format speechx cannot write (wma, ape, ...)


def is_audio_path(p: str | os.PathLike) -> bool:
    """True for a non-hidden file name with an extension in AUDIO_EXTENSIONS."""
    path = Path(p)
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def is_media_path(p: str | os.PathLike) -> bool:
    """True for a non-hidden audio or video file name (what a folder run processes)."""
    path = Path(p)
    return is_audio_path(path) or (path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith("."))


def output_suffix(src: Path, fmt: str | None = None) -> str:
    """A folder run's output extension for input `src`: `fmt` ("mp3", ...) when given, else the
    input's own when speechx writes it, else VIDEO_OUTPUT_SUFFIX or OTHER_OUTPUT_SUFFIX."""
    if fmt:
        return "." + fmt.lstrip(".").lower()
    if src.suffix.lower() in WRITE_EXTENSIONS:
        return src.suffix
    return VIDEO_OUTPUT_SUFFIX if src.suffix.lower() in VIDEO_EXTENSIONS else OTHER_OUTPUT_SUFFIX


def check_writable(path: str | os.PathLike, bitrate_kbps: int | None = None) -> None:
    """Raise AudioError unless speechx writes `path`'s format at that bitrate: a run checks
    its outputs before it starts the work."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        raise AudioError(f"{path}: speechx writes audio only, not '{suffix}' video (use .m4a, .wav, .mp3, ...)")
    if suffix not in _SOUNDFILE_WRITE and suffix not in _ENCODED:
        raise AudioError(f"{path}: cannot write '{path.suffix}' files "
                         f"(use one of {', '.join(sorted(WRITE_EXTENSIONS))})")
    lo, hi = BITRATE_RANGE_KBPS
    if bitrate_kbps is not None and not lo <= bitrate_kbps <= hi:
        raise AudioError(f"bitrate {bitrate_kbps} kbps: use {lo} to {hi} kbps")


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


BlockReader = Callable[[int], Iterator[np.ndarray]]  # block length -> float32 mono blocks


def _source(path: Path) -> tuple[AudioInfo, BlockReader]:
    """The file's header, and a reader of its audio as float32 mono blocks at the file's rate:
    libsndfile when it reads the file (fast, exact lengths), else FFmpeg (media.py)."""
    _check_file(path)
    try:
        header = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        from . import media

        return media.probe(path), lambda n: media.read_blocks(path, n)
    _check_header(path, header)
    head = AudioInfo(header.samplerate, header.channels, header.frames, header.frames / header.samplerate)
    return head, lambda n: _soundfile_blocks(path, n)


def _soundfile_blocks(path: Path, block_frames: int) -> Iterator[np.ndarray]:
    with sf.SoundFile(str(path)) as f:
        for block in f.blocks(blocksize=block_frames, dtype="float32", always_2d=True):  # (n, C)
            yield block.mean(axis=1, dtype=np.float32)


def _gather(blocks: Iterable[np.ndarray], size_hint: int) -> np.ndarray:
    """Join blocks into one array filled in place, so no second copy of a long file sits in
    memory; `size_hint` (a header's length) may be off, as compressed formats' often are."""
    out, n = np.empty(max(size_hint, 1), np.float32), 0
    for block in blocks:
        if n + len(block) > len(out):
            grown = np.empty(max(2 * len(out), n + len(block)), np.float32)
            grown[:n] = out[:n]
            out = grown
        out[n : n + len(block)] = block
        n += len(block)
    return out[:n]


def info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, channels and length from the file header, without reading the audio.

    For compressed formats FFmpeg reads (m4a, ...), frames is the stated duration at the rate.
    """
    return _source(Path(path))[0]


def load(
    path: str | os.PathLike,
    sample_rate: int,
    *,
    max_seconds: float | None = None,
    allow_silence: bool = True,
) -> tuple[np.ndarray, int]:
    """Read any audio file (or a video's sound) as float32 mono (N,) at `sample_rate`; also
    return the file's rate.

    Channels are averaged. max_seconds=None applies MAX_INPUT_SECONDS; pass math.inf to lift it.
    allow_silence=False refuses files whose peak is below SILENCE_PEAK_DBFS.
    """
    path = Path(path)
    head, read = _source(path)
    _check_duration(path, head.duration_s, max_seconds)
    x = _gather(read(1 << 18), head.frames)
    if len(x) == 0:
        raise AudioError(f"{path}: no audio in it (0 samples)")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if not allow_silence and float(np.max(np.abs(x))) < SILENCE_PEAK:
        raise AudioError(f"{path}: silent (peak below {SILENCE_PEAK_DBFS:.0f} dBFS)")
    return resample(x, head.sample_rate, sample_rate), head.sample_rate


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
    from load()'s by a sample or two.
    """
    path = Path(path)
    head, read = _source(path)
    block_out = max(1, round(block_seconds * sample_rate))
    block_in = max(1, math.ceil(block_seconds * head.sample_rate))
    pending = np.empty(0, dtype=np.float32)
    for x in resample_stream(read(block_in), head.sample_rate, sample_rate):
        pending = np.concatenate([pending, x])
        while len(pending) >= block_out:
            yield pending[:block_out]
            pending = pending[block_out:]
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


def save(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, *, force: bool = False,
         bitrate_kbps: int | None = None) -> int:
    """Write (N,) or (N, C) audio atomically; format from the extension (WAV when none).

    Samples are clipped to [-1, 1]; returns how many were clipped so the caller can warn.
    Refuses to replace an existing file unless force. bitrate_kbps: compressed formats only
    (mp3, m4a, aac, opus; DEFAULT_BITRATE_KBPS when None).
    """
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim not in (1, 2) or len(x) == 0:
        raise AudioError(f"{path}: nothing to write (audio shape {x.shape})")
    channels = 1 if x.ndim == 1 else x.shape[1]
    with BlockWriter(path, sample_rate, channels=channels, force=force, bitrate_kbps=bitrate_kbps) as w:
        w.write(x)
    return w.clipped


class BlockWriter:
    """Write a long output block by block; the file appears (atomically) only on success.

    with BlockWriter("out.m4a", 24000) as w:
        for block in blocks:
            w.write(block)
    w.frames and w.clipped count what was written; an exception inside the block removes
    the temp file and leaves any existing target untouched. libsndfile writes wav, flac, ogg,
    ...; FFmpeg (media.Encoder) the compressed formats of _ENCODED at bitrate_kbps.
    """

    def __init__(self, path: str | os.PathLike, sample_rate: int, *, channels: int = 1, force: bool = False,
                 bitrate_kbps: int | None = None):
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.force = force
        self.bitrate_kbps = DEFAULT_BITRATE_KBPS if bitrate_kbps is None else bitrate_kbps
        self.frames = 0
        self.clipped = 0
        self._stack: ExitStack | None = None
        self._file = None  # sf.SoundFile or media.Encoder: both have write(x)

    def __enter__(self) -> BlockWriter:
        check_writable(self.path, self.bitrate_kbps)
        with ExitStack() as stack:
            tmp = stack.enter_context(_output(self.path, self.force))
            self._file = stack.enter_context(self._open(tmp))
            self._stack = stack.pop_all()
        return self

    def _open(self, tmp: Path):
        suffix = self.path.suffix.lower()
        if suffix in _ENCODED:
            from .media import Encoder

            muxer, codec = _ENCODED[suffix]
            return Encoder(tmp, muxer, codec, self.sample_rate, self.channels, self.bitrate_kbps, label=self.path)
        fmt, subtype = _SOUNDFILE_WRITE[suffix]
        try:
            return sf.SoundFile(str(tmp), "w", self.sample_rate, self.channels, subtype=subtype, format=fmt)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"{self.path}: could not write ({e})") from e

    def write(self, block: np.ndarray) -> None:
        if self._file is None:
            raise RuntimeError("BlockWriter.write() outside its with-block")
        x, clipped = _clip(block)
        try:
            self._file.write(x)
        except sf.LibsndfileError as e:
            raise AudioError(f"{self.path}: could not write ({e})") from e
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
