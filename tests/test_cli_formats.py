"""denoise end to end on m4a, mp3, opus and video files made with PyAV, one by one and as a
mixed folder: the output keeps the input's length (within one codec frame) and sample rate."""

import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechx_cli import audio as A
from speechx_cli.cli import app

from .test_media import FORMATS, encode, make

runner = CliRunner()


def run(*args, ckpt):
    return runner.invoke(app, [*args, "--checkpoint", str(ckpt)])


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def assert_same_length_and_rate(inp, out):
    """Length within one codec frame of the input's (2 samples for wav), at the input's rate."""
    rate = A.info(inp).sample_rate
    assert A.info(out).sample_rate == rate
    frame = FORMATS[inp.suffix][3] if inp.suffix in FORMATS else 2
    assert abs(len(A.load(out, rate)[0]) - len(A.load(inp, rate)[0])) <= frame


@pytest.mark.parametrize("in_ext,out_ext", [(".m4a", ".m4a"), (".mp3", ".mp3"), (".opus", ".opus"),
                                            (".mp4", ".wav")])
def test_denoise_one_file(tmp_path, tiny_checkpoint, in_ext, out_ext):
    inp, _ = make(tmp_path, in_ext)
    out = tmp_path / f"out{out_ext}"
    r = run("denoise", str(inp), str(out), ckpt=tiny_checkpoint)
    assert r.exit_code == 0, r.output
    assert_same_length_and_rate(inp, out)


def test_denoise_a_mixed_folder(tmp_path, tiny_checkpoint):
    src = tmp_path / "podcasts"
    src.mkdir()
    inputs = [make(src, ext, seconds=1.0, name=f"ep-{ext[1:]}")[0] for ext in FORMATS]
    sf.write(src / "ep-wav.wav", A.load(inputs[0], 22050)[0], 22050)
    encode(src / "silent.mp4", None, 48000, muxer="mp4", video=True)
    out = tmp_path / "clean"
    r = run("denoise", str(src), str(out), "--bitrate", "96", ckpt=tiny_checkpoint)
    assert r.exit_code == 1, r.output  # one file failed, the rest went on
    assert "5 written, 0 skipped" in r.output and "1 failed" in r.output
    assert "silent.mp4: no audio stream (it holds video only)" in r.output
    assert "note: 1 .mp4 file (video) -> .m4a (their sound)" in r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "ep-m4a.m4a", "ep-mp3.mp3", "ep-mp4.m4a", "ep-opus.opus", "ep-wav.wav"]
    for inp in [*inputs, src / "ep-wav.wav"]:
        assert_same_length_and_rate(inp, out / f"{inp.stem}{A.output_suffix(inp)}")

    r = run("denoise", str(src), str(tmp_path / "flac"), "--format", "flac", ckpt=tiny_checkpoint)
    assert r.exit_code == 1 and "note: 1 .m4a file -> .flac" in r.output
    assert {p.suffix for p in (tmp_path / "flac").iterdir()} == {".flac"}


def test_format_errors_are_one_line_and_early(tmp_path, tiny_checkpoint):
    inp, _ = make(tmp_path, ".m4a")
    one_line_error(run("denoise", str(inp), str(tmp_path / "o.mp4"), ckpt=tiny_checkpoint),
                   "writes audio only, not '.mp4' video")
    one_line_error(run("denoise", str(inp), str(tmp_path / "o.m4a"), "--bitrate", "1000", ckpt=tiny_checkpoint),
                   "--bitrate 1000: use 32 to 320 kbps")
    one_line_error(run("denoise", str(inp), str(tmp_path / "o.m4a"), "--format", "wav", ckpt=tiny_checkpoint),
                   "--format applies to folder runs only")
    encode(tmp_path / "silent.mp4", None, 48000, muxer="mp4", video=True)
    one_line_error(run("denoise", str(tmp_path / "silent.mp4"), str(tmp_path / "o.wav"), ckpt=tiny_checkpoint),
                   "no audio stream")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.m4a", "silent.mp4"]
