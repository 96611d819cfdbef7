"""Audio that libsndfile cannot read or write, through FFmpeg's libraries (PyAV, the `av` wheel).

Read: m4a, aac, wma, opus in webm, ... and the first audio stream of a video (mp4, mkv, webm,
mov), decoded packet by packet into mono float32 blocks at the stream's own rate, so an hour-long
file never sits in memory whole. Write: the compressed formats of audio._ENCODED (mp3, m4a, aac,
opus) at a set bitrate. audio.py tries libsndfile first and comes here for what it cannot do;
every problem is an AudioError worded for the user, like audio.py's own.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .audioinfo import AudioError, AudioInfo

# Demuxers whose stream durations come from sample tables (exact, priming already removed):
# their decoded audio is cut back to that length (the encoder pads the last frame).
_EXACT_DURATION_FORMATS = frozenset({"mov,mp4,m4a,3gp,3g2,mj2"})
_TAIL_HOLD = 1 << 14  # samples held back until the end, so a padded last frame can be cut


def _not_audio(path: Path, why: str) -> AudioError:
    return AudioError(f"{path}: not an audio file (neither libsndfile nor FFmpeg can read it: {why})")


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.FFmpegError as e:
        raise _not_audio(path, e.strerror or type(e).__name__) from e
    except (UnicodeDecodeError, ValueError) as e:  # odd headers that PyAV itself trips over
        raise _not_audio(path, type(e).__name__) from e


def _codec_named_in_dump(container: av.container.InputContainer, index: int) -> str:
    """FFmpeg's own name for a stream's codec; PyAV names only codecs it has a decoder for."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)  # the dump goes through FFmpeg's log at INFO
    try:
        dump = container.dumps_format()
    finally:
        av.logging.set_level(level)
    m = re.search(rf"Stream #0:{index}\b.*?Audio: ([\w-]+)", dump)
    return m.group(1) if m else "an unknown codec"


def _audio_stream(path: Path, container: av.container.InputContainer) -> av.audio.stream.AudioStream:
    """The first audio stream, with a decoder; a one-line error says why there is none."""
    if not container.streams.audio:
        kinds = sorted({s.type for s in container.streams})
        if not kinds:
            raise _not_audio(path, "no streams in it")
        raise AudioError(f"{path}: no audio stream (it holds {' and '.join(kinds)} only)")
    stream = container.streams.audio[0]
    if stream.codec_context is None:
        codec = _codec_named_in_dump(container, stream.index)
        raise AudioError(f"{path}: its audio is {codec}, which this FFmpeg build cannot decode")
    return stream


def _duration_s(container: av.container.InputContainer, stream) -> float | None:
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def probe(path: Path) -> AudioInfo:
    """Rate, channels and length of the first audio stream, from the header when it says.

    Compressed formats store a duration, not a sample count: `frames` is that duration at the
    stream's rate (exact for mp4/m4a, opus and mp3 with a LAME header, FFmpeg's estimate for raw
    aac). A file that states no duration is decoded once to count.
    """
    with _open(path) as container:
        stream = _audio_stream(path, container)
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        duration = _duration_s(container, stream)
    if duration is None:
        frames = sum(len(b) for b in read_blocks(path, 1 << 20))
    else:
        frames = round(duration * rate)
    if rate <= 0 or frames <= 0:
        raise AudioError(f"{path}: no audio in it (0 samples)")
    return AudioInfo(rate, channels, frames, frames / rate)


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 mono: channels averaged, integers scaled to [-1, 1)."""
    if frame.format.name == "fltp" and len(frame.planes) == 1:  # mono AAC, opus, mp3: most frames
        return np.frombuffer(frame.planes[0], np.float32, count=frame.samples)
    x = frame.to_ndarray()  # planar: (C, n); packed: (1, n * C)
    if not frame.format.is_planar:
        x = x.reshape(-1, frame.layout.nb_channels).T  # (C, n)
    if x.dtype.kind == "f":
        return x.mean(axis=0, dtype=np.float32)
    y = x.mean(axis=0, dtype=np.float64)
    if x.dtype.kind == "u":  # u8: silence is 128
        y -= 1 << (8 * x.dtype.itemsize - 1)
    return (y / float(1 << (8 * x.dtype.itemsize - 1))).astype(np.float32)


def _frames(path: Path, container, stream) -> Iterator[av.AudioFrame]:
    """Decoded frames of `stream` only (other streams' packets are skipped, not decoded)."""
    rate = stream.codec_context.sample_rate
    packet = None

    def where() -> str:  # the time of the last packet read, for error messages
        ok = packet is not None and packet.pts is not None and packet.time_base
        return f"{float(packet.pts * packet.time_base):.1f} s" if ok else "the start"

    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                if frame.sample_rate != rate:
                    raise AudioError(f"{path}: its sample rate changes at {where()} ({rate} -> {frame.sample_rate} Hz)")
                yield frame
    except av.FFmpegError as e:
        raise AudioError(f"{path}: corrupt {stream.codec_context.name} audio at {where()} "
                         f"({e.strerror or type(e).__name__})") from e


def read_blocks(path: Path, block_frames: int) -> Iterator[np.ndarray]:
    """Yield the first audio stream as float32 mono blocks of `block_frames` samples (the last
    one shorter) at the stream's own rate; memory stays at a few blocks whatever the length."""
    with _open(path) as container:
        stream = _audio_stream(path, container)
        exact = container.format.name in _EXACT_DURATION_FORMATS and stream.duration is not None
        expected = round(_duration_s(container, stream) * stream.codec_context.sample_rate) if exact else None
        hold = _TAIL_HOLD if exact else 0
        pending: list[np.ndarray] = []
        n_pending = total = last = 0
        for frame in _frames(path, container, stream):
            x = _mono(frame)
            pending.append(x)
            n_pending, total, last = n_pending + len(x), total + len(x), len(x)
            if n_pending >= block_frames + hold:
                joined = np.concatenate(pending)
                yield joined[:block_frames]
                pending, n_pending = [joined[block_frames:]], n_pending - block_frames
    tail = np.concatenate(pending) if pending else np.zeros(0, np.float32)
    if expected is not None and 0 < total - expected <= last:  # the encoder's padding
        tail = tail[: len(tail) - (total - expected)]
    for i in range(0, len(tail), block_frames):
        yield tail[i : i + block_frames]


def _layout(channels: int) -> str:
    if channels not in (1, 2):
        raise ValueError(f"compressed outputs are mono or stereo, not {channels} channels")
    return "mono" if channels == 1 else "stereo"


class Encoder:
    """Encode float32 blocks into a compressed file; `label` names the file in error messages.

    with Encoder(tmp, "ipod", "aac", 44100, 1, 192, label="out.m4a") as enc:
        enc.write(block)  # (n,) or (n, channels) at `sample_rate`
    The encoder runs at `sample_rate` when its codec supports that rate, else at the nearest
    rate above it that it does (opus: 48 kHz), resampled by FFmpeg; `encoded_rate` says which.
    """

    def __init__(self, path: Path, muxer: str, codec: str, sample_rate: int, channels: int,
                 bitrate_kbps: int, *, label: Path):
        self.path, self.muxer, self.codec, self.label = path, muxer, codec, label
        self.sample_rate, self.channels, self.bitrate_kbps = sample_rate, channels, bitrate_kbps
        self.encoded_rate = _supported_rate(codec, sample_rate)
        self._written = 0
        self._container = None
        self._stream = None

    def __enter__(self) -> Encoder:
        try:
            # mp4's edit list (which cuts the encoder's delay and padding) counts in the movie's
            # timescale, 1000 Hz by default: at the sample rate the decoded length is exact
            options = {"movie_timescale": str(self.encoded_rate)} if self.muxer in ("ipod", "mp4") else None
            self._container = av.open(str(self.path), "w", format=self.muxer, options=options)
            self._stream = self._container.add_stream(self.codec, rate=self.encoded_rate,
                                                      layout=_layout(self.channels))
            self._stream.bit_rate = self.bitrate_kbps * 1000
            self._container.start_encoding()
        except (av.FFmpegError, ValueError) as e:
            self._close()
            raise AudioError(f"{self.label}: cannot encode {self.codec} here ({e})") from e
        return self

    def write(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if (x.shape[1] if x.ndim == 2 else 1) != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got audio of shape {x.shape}")
        frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout=_layout(self.channels))
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._written
        self._written += frame.samples
        self._mux(frame)

    def _mux(self, frame: av.AudioFrame | None) -> None:
        try:
            self._container.mux(self._stream.encode(frame))
        except av.FFmpegError as e:
            raise AudioError(f"{self.label}: could not write ({e})") from e

    def _close(self) -> None:
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._mux(None)  # flush the encoder's last frames
        finally:
            self._close()


def _supported_rate(codec: str, rate: int) -> int:
    try:
        rates = av.Codec(codec, "w").audio_rates
    except ValueError as e:  # av.codec.codec.UnknownCodecError
        raise AudioError(f"this FFmpeg build has no {codec} encoder") from e
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return min(higher) if higher else max(rates)
