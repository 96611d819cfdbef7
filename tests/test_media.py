"""Formats FFmpeg reads and writes through PyAV (media.py): files made here with PyAV itself
from the project's own example audio, read back, written, and their one-line errors."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from speechx_cli import audio as A
from speechx_cli import jobs
from speechx_cli.audio import AudioError

from .conftest import tone

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "noisy.wav"
# (muxer, encoder, sample rate, samples per codec frame) by extension
FORMATS = {
    ".m4a": ("ipod", "aac", 44100, 1024),
    ".mp3": ("mp3", "libmp3lame", 44100, 1152),
    ".opus": ("ogg", "libopus", 48000, 960),
    ".mp4": ("mp4", "aac", 48000, 1024),
}


def example(seconds: float, rate: int) -> np.ndarray:
    """The first seconds of examples/noisy.wav (speech in noise) at `rate`."""
    x, _ = A.load(EXAMPLE, rate)
    return x[: round(seconds * rate)]


def encode(path: Path, x: np.ndarray | None, rate: int, *, muxer: str, codec: str = "aac",
           video: bool = False) -> Path:
    """Write x (mono float32; None: no audio stream) with PyAV, beside 1.5 s of black video if asked."""
    with av.open(str(path), "w", format=muxer) as out:  # every stream is added before the first mux
        v = out.add_stream("mpeg4", rate=10) if video else None
        a = out.add_stream(codec, rate=rate, layout="mono") if x is not None else None
        if v is not None:
            v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
            for i in range(15):
                frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                frame.pts = i
                out.mux(v.encode(frame))
            out.mux(v.encode(None))
        if a is not None:
            a.bit_rate = 128_000
            frame = av.AudioFrame.from_ndarray(x[None, :], format="fltp", layout="mono")
            frame.sample_rate, frame.time_base, frame.pts = rate, Fraction(1, rate), 0
            out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return path


def make(tmp_path: Path, ext: str, seconds: float = 1.5, name: str = "in") -> tuple[Path, np.ndarray]:
    muxer, codec, rate, _ = FORMATS[ext]
    x = example(seconds, rate)
    return encode(tmp_path / f"{name}{ext}", x, rate, muxer=muxer, codec=codec, video=ext == ".mp4"), x


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Largest normalised cross-correlation within +-2 ms (lossy codecs may shift a little)."""
    n = min(len(a), len(b)) - 200
    return max(float(np.dot(a[100 : 100 + n], b[100 + k : 100 + k + n]))
               / float(np.linalg.norm(a[100 : 100 + n]) * np.linalg.norm(b[100 + k : 100 + k + n]))
               for k in range(-96, 97, 4))


@pytest.mark.parametrize("ext", list(FORMATS))
def test_reads_each_format_at_its_rate_and_length(tmp_path, ext):
    path, x = make(tmp_path, ext)
    rate, frame = FORMATS[ext][2], FORMATS[ext][3]
    y, sr = A.load(path, rate)
    head = A.info(path)
    assert sr == rate and head.sample_rate == rate and head.channels == 1
    assert abs(len(y) - len(x)) <= frame and abs(head.frames - len(x)) <= frame
    assert similarity(x, y) > 0.9
    blocks = list(A.iter_blocks(path, 16000, block_seconds=0.25))  # the long-file path
    assert {len(b) for b in blocks[:-1]} == {4000}
    assert abs(sum(map(len, blocks)) - len(A.load(path, 16000)[0])) <= 2


@pytest.mark.parametrize("ext", [".m4a", ".mp3", ".opus", ".aac"])
def test_writes_each_compressed_format(tmp_path, ext):
    x = example(1.5, 44100)
    out = tmp_path / f"out{ext}"
    assert A.save(out, x, 44100) == 0
    y, sr = A.load(out, 44100)  # y at 44.1 kHz, sr the file's rate
    assert sr == (48000 if ext == ".opus" else 44100)  # opus runs at 48 kHz
    delay = 1024 if ext == ".aac" else 0  # raw AAC cannot record the encoder's start delay
    slack = 0 if ext in (".m4a", ".mp3") else 1024  # their headers say the exact length
    assert abs(len(y) - len(x) - delay) <= slack
    assert similarity(x, y[delay:]) > 0.9
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temp file left


def test_bitrate_sets_the_size_and_is_checked(tmp_path):
    x = example(3.0, 44100)
    A.save(tmp_path / "lo.m4a", x, 44100, bitrate_kbps=32)
    A.save(tmp_path / "hi.m4a", x, 44100, bitrate_kbps=256)
    assert (tmp_path / "hi.m4a").stat().st_size > 3 * (tmp_path / "lo.m4a").stat().st_size
    with pytest.raises(AudioError, match="use 32 to 320 kbps"):
        A.save(tmp_path / "x.mp3", x, 44100, bitrate_kbps=500)


def test_block_writer_streams_a_compressed_file(tmp_path):
    x = example(2.0, 44100)
    with A.BlockWriter(tmp_path / "long.m4a", 44100) as w:
        for i in range(0, len(x), 10_000):
            w.write(x[i : i + 10_000])
    y, _ = A.load(tmp_path / "long.m4a", 44100)
    assert w.frames == len(x) and len(y) == len(x) and similarity(x, y) > 0.9

    with pytest.raises(RuntimeError):
        with A.BlockWriter(tmp_path / "failed.mp3", 44100) as w:
            w.write(x)
            raise RuntimeError("model crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.m4a"]


def test_one_line_errors(tmp_path):
    silent_video = encode(tmp_path / "silent.mp4", None, 48000, muxer="mp4", video=True)
    with pytest.raises(AudioError, match=r"silent.mp4: no audio stream \(it holds video only\)$"):
        A.load(silent_video, 16000)

    (tmp_path / "notes.m4a").write_text("these are notes, not sound\n" * 20)
    with pytest.raises(AudioError, match="notes.m4a: not an audio file"):
        A.info(tmp_path / "notes.m4a")

    # MPEG-H 3D audio: FFmpeg knows the codec but the wheel has no decoder for it
    with av.open(str(tmp_path / "mpegh.mp4"), "w", format="mp4") as out:
        stream = out.add_mux_stream("mpegh_3d_audio", rate=48000)
        for i in range(4):
            packet = av.Packet(bytes(64))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i * 1024, i * 1024, Fraction(1, 48000)
            out.mux(packet)
    with pytest.raises(AudioError) as err:
        A.load(tmp_path / "mpegh.mp4", 16000)
    assert str(err.value).endswith("its audio is mpegh_3d_audio, which this FFmpeg build cannot decode")

    with pytest.raises(AudioError, match="writes audio only, not '.mp4' video"):
        A.save(tmp_path / "out.mp4", tone(0.2), 16000)
    assert A.check_writable(tmp_path / "out.opus") is None


def test_folder_outputs_keep_or_change_format(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ["a.mp3", "sub/b.m4a", "c.mp4", "d.wma", "e.WAV", "notes.txt"]:
        (src / name).write_bytes(b"x")
    opts = jobs.JobOptions(None, None)
    todo, _ = jobs.plan_folder(src, tmp_path / "out", opts)
    assert [d.relative_to(tmp_path / "out").as_posix() for _, d in todo] == [
        "a.mp3", "c.m4a", "d.flac", "e.WAV", "sub/b.m4a"]
    todo, _ = jobs.plan_folder(src, tmp_path / "out", jobs.JobOptions(None, None, out_format="wav"))
    assert {d.suffix for _, d in todo} == {".wav"}
    assert jobs.format_notes(todo, [d for _, d in todo]) == [
        "1 .m4a file -> .wav", "1 .mp3 file -> .wav", "1 .mp4 file (video) -> .wav (their sound)",
        "1 .wma file -> .wav"]

    (src / "c.m4a").write_bytes(b"x")  # c.mp4 and c.m4a would both give c.m4a
    with pytest.raises(AudioError, match="would both be written to"):
        jobs.plan_folder(src, tmp_path / "out", opts)
    with pytest.raises(AudioError, match="would replace an input"):
        jobs.plan_folder(src, src, jobs.JobOptions(None, None, out_format="mp3"))


@pytest.mark.parametrize("fmt", ["s16", "s16p", "s32", "fltp", "flt", "u8", "dbl"])
def test_decoded_frames_become_the_channel_mean(fmt):
    from speechx_cli.media import _mono

    left, right = tone(0.05, freq=300), 0.5 * tone(0.05, freq=500, seed=1)
    stereo = np.stack([left, right])  # (C, n) in [-1, 1)
    dtype = av.AudioFormat(fmt).packed.name
    scale = {"s16": 32768, "s32": 2**31, "u8": 128}.get(dtype, 1)
    data = stereo * scale + (128 if dtype == "u8" else 0)
    data = data.astype({"s16": np.int16, "s32": np.int32, "u8": np.uint8, "flt": np.float32, "dbl": np.float64}[dtype])
    planes = data if fmt.endswith("p") else data.T.reshape(1, -1)  # packed: one interleaved row
    frame = av.AudioFrame.from_ndarray(planes, format=fmt, layout="stereo")
    np.testing.assert_allclose(_mono(frame), (left + right) / 2, atol=2 / 128 if dtype == "u8" else 1e-4)


def test_mono_float_frames_are_read_as_they_are():
    from speechx_cli.media import _mono

    x = tone(0.05)
    np.testing.assert_array_equal(_mono(av.AudioFrame.from_ndarray(x[None], format="fltp", layout="mono")), x)


def test_stereo_video_soundtrack_is_averaged(tmp_path):
    x = example(1.0, 48000)
    with av.open(str(tmp_path / "st.mkv"), "w", format="matroska") as out:
        a = out.add_stream("flac", rate=48000, layout="stereo")  # lossless: the mean is exact
        frame = av.AudioFrame.from_ndarray(np.stack([x, -0.5 * x]), format="fltp", layout="stereo")
        frame.sample_rate, frame.time_base, frame.pts = 48000, Fraction(1, 48000), 0
        out.mux(a.encode(frame))
        out.mux(a.encode(None))
    y, sr = A.load(tmp_path / "st.mkv", 48000)
    assert sr == 48000 and len(y) == len(x)
    np.testing.assert_allclose(y, 0.25 * x, atol=1e-4)


def test_every_format_choice_is_writable():
    from speechx_cli.options import OutputFormat

    for choice in OutputFormat:
        A.check_writable(f"out.{choice.value}", A.DEFAULT_BITRATE_KBPS)
