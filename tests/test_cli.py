"""Every command end to end through Typer's CliRunner with the tiny checkpoint, plus bad inputs."""

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechx_cli import cli
from speechx_cli.cli import app
from speechx_cli.engine import DecodingOptions

from .conftest import SR, tone

runner = CliRunner()


def run(*args, ckpt=None):
    extra = ["--checkpoint", str(ckpt)] if ckpt else []
    return runner.invoke(app, [*args, *extra])


def one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    return text


def test_help_lists_the_five_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("tts", "denoise", "remove-speech", "extract-speaker", "edit"):
        assert cmd in r.output


@pytest.mark.parametrize("cmd,resynth", [("denoise", "mask"), ("remove-speech", "codec")])
def test_known_length_commands_keep_duration_and_rate(tmp_path, tiny_checkpoint, cmd, resynth):
    inp = tmp_path / "in.wav"
    sf.write(inp, tone(1.3, sr=22050), 22050)  # another rate: output comes back at 22050
    out = tmp_path / "out.wav"
    r = run(cmd, str(inp), str(out), "--resynth", resynth, ckpt=tiny_checkpoint)
    assert r.exit_code == 0, r.output
    y, sr = sf.read(out)
    assert sr == 22050 and abs(len(y) - int(1.3 * 22050)) <= 2


def test_mask_flag_overrides_the_tasks_mask(tmp_path, tiny_checkpoint, wav_file):
    """--mask floor=1 cuts nothing, so the output is the input; a bad setting is one line."""
    out = tmp_path / "o.wav"
    r = run("remove-speech", str(wav_file), str(out), "--mask", "floor=1", ckpt=tiny_checkpoint)
    assert r.exit_code == 0, r.output
    (x, _), (y, _) = sf.read(wav_file), sf.read(out)
    assert len(y) == len(x) and np.max(np.abs(y - x)) < 2e-3
    assert "floor" in one_line_error(run("denoise", str(wav_file), str(tmp_path / "p.wav"), "--mask", "floor=3",
                                         ckpt=tiny_checkpoint))
    assert not (tmp_path / "p.wav").exists()


def test_extract_speaker(tmp_path, tiny_checkpoint, wav_file):
    enroll = tmp_path / "enroll.flac"
    sf.write(enroll, tone(1.0, freq=300), SR)
    out = tmp_path / "o.wav"
    r = run("extract-speaker", str(wav_file), str(out), "--enroll", str(enroll), "--text", "hello there",
            ckpt=tiny_checkpoint)
    assert r.exit_code == 0, r.output
    assert sf.info(out).frames == SR


def test_tts_and_sample_rate_flag(tmp_path, tiny_checkpoint, wav_file):
    out = tmp_path / "tts.wav"
    r = run("tts", "Hello there.", str(out), "--prompt", str(wav_file), "--sample-rate", "8000",
            "--max-seconds", "1", ckpt=tiny_checkpoint)
    assert r.exit_code == 0, r.output
    info = sf.info(out)
    assert info.samplerate == 8000 and info.duration <= 1.0 + 1e-6


def test_edit_keeps_everything_outside_the_span(tmp_path, tiny_checkpoint):
    inp = tmp_path / "in.wav"
    sf.write(inp, tone(2.0), SR, subtype="PCM_16")
    x, _ = sf.read(inp, dtype="int16")
    out = tmp_path / "e.wav"
    r = run("edit", str(inp), str(out), "--text", "the dog sat", "--span", "0.5:1.0",
            "--background", "clean", ckpt=tiny_checkpoint)
    assert r.exit_code == 0, r.output
    y, _ = sf.read(out, dtype="int16")
    # 20 ms frames: the span 0.5-1.0 s is frame-aligned, so everything outside it is the input
    head, tail = int(0.5 * SR), len(x) - int(1.0 * SR)
    assert np.array_equal(y[:head], x[:head])
    assert np.array_equal(y[len(y) - tail:], x[len(x) - tail:])


def test_folder_run_mirrors_tree_and_reports_bad_file(tmp_path, tiny_checkpoint):
    src = tmp_path / "calls"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a.wav", tone(0.5), SR)
    sf.write(src / "sub" / "b.wav", tone(0.7), SR)
    (src / "broken.wav").write_bytes(b"RIFF....garbage")
    dst = tmp_path / "clean"
    r = run("denoise", str(src), str(dst), ckpt=tiny_checkpoint)
    assert r.exit_code == 1
    assert (dst / "a.wav").exists() and (dst / "sub" / "b.wav").exists()
    assert "broken.wav" in r.output and "2 written" in r.output
    again = run("denoise", str(src), str(dst), ckpt=tiny_checkpoint)
    assert "2 skipped" in again.output


def test_existing_output_needs_force(tmp_path, tiny_checkpoint, wav_file):
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep me")
    one_line_error(run("denoise", str(wav_file), str(out), ckpt=tiny_checkpoint))
    assert out.read_bytes() == b"keep me"
    assert run("denoise", str(wav_file), str(out), "--force", ckpt=tiny_checkpoint).exit_code == 0


@pytest.mark.parametrize("content", [b"", b"this is text, not audio", b"RIFF\x24\x00\x00\x00WAVEfmt "])
def test_bad_audio_inputs(tmp_path, tiny_checkpoint, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    one_line_error(run("denoise", str(bad), str(tmp_path / "o.wav"), ckpt=tiny_checkpoint))
    assert bad.read_bytes() == content  # the input is never modified
    assert not (tmp_path / "o.wav").exists()


def test_missing_input_and_checkpoint(tmp_path, tiny_checkpoint, wav_file):
    assert "no such file" in one_line_error(run("denoise", str(tmp_path / "nope.wav"), str(tmp_path / "o.wav"),
                                                ckpt=tiny_checkpoint))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    one_line_error(run("denoise", str(wav_file), str(tmp_path / "o.wav"), ckpt=junk))


def test_unwritable_output(tmp_path, tiny_checkpoint, wav_file):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        import os
        if os.access(ro, os.W_OK):  # running as root: permissions do not bind
            target = "/proc/speechx-test/o.wav"
        else:
            target = str(ro / "o.wav")
        one_line_error(run("denoise", str(wav_file), target, ckpt=tiny_checkpoint))
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("args", [
    ["denoise", "a.wav"],  # missing OUT
    ["denoise", "a.wav", "b.wav", "--bogus"],
    ["denoise", "a.wav", "b.wav", "--temperature", "-1"],
    ["denoise", "a.wav", "b.wav", "--top-p", "0"],
    ["remove-speech", "a.wav", "b.wav", "--resynth", "wiener"],
    ["edit", "a.wav", "b.wav", "--text", "x", "--span", "2:1"],
    ["edit", "a.wav", "b.wav", "--text", "x", "--span", "abc"],
    ["tts", "", "b.wav", "--prompt", "a.wav"],
])
def test_bad_flags_one_line(tmp_path, args):
    r = runner.invoke(app, args)
    one_line_error(r)


@pytest.mark.parametrize("args, says", [
    (["--draws", "0"], "draws (--draws) must be >= 1"),
    (["--draws", "2", "--resynth", "codec"], "need resynth mask (--resynth mask)"),
    (["--mask", "counterpart=yes"], "no counterpart task"),
    (["--passes", "0"], "passes (--passes) must be >= 1"),
    (["--passes", "2", "--resynth", "codec"], "they need resynth mask (--resynth mask)"),
])
def test_bad_draws_are_refused_before_any_work(wav_file, tmp_path, args, says):
    r = runner.invoke(app, ["extract-speaker", str(wav_file), str(tmp_path / "o.wav"), "--enroll", str(wav_file),
                            *args])
    one_line_error(r)
    assert says in r.output and not (tmp_path / "o.wav").exists()


def test_a_bad_speech_free_mode_is_refused_before_any_work(wav_file, tmp_path, tiny_checkpoint):
    r = runner.invoke(app, ["remove-speech", str(wav_file), str(tmp_path / "o.wav"), "--speech-free", "denoise=-1"])
    assert "use auto, off, detector" in one_line_error(r) and not (tmp_path / "o.wav").exists()
    r = runner.invoke(app, ["remove-speech", str(wav_file), str(tmp_path / "o.wav"), "--speech-free", "detector",
                            "--checkpoint", str(tiny_checkpoint)])
    assert "has no speech-free detector" in one_line_error(r) and not (tmp_path / "o.wav").exists()
    r = runner.invoke(app, ["extract-speaker", str(wav_file), str(tmp_path / "o.wav"), "--enroll", str(wav_file),
                            "--speech-free", "denoise"])
    assert r.exit_code != 0 and not (tmp_path / "o.wav").exists()  # only remove-speech has the flag


def test_a_bad_noise_free_mode_is_refused_before_any_work(wav_file, tmp_path, tiny_checkpoint):
    r = runner.invoke(app, ["denoise", str(wav_file), str(tmp_path / "o.wav"), "--noise-free", "denoise"])
    assert "--noise-free 'denoise': use auto, off, detector" in one_line_error(r)
    r = runner.invoke(app, ["denoise", str(wav_file), str(tmp_path / "o.wav"), "--noise-free", "detector",
                            "--checkpoint", str(tiny_checkpoint)])
    assert "has no noise-free detector" in one_line_error(r) and not (tmp_path / "o.wav").exists()
    r = runner.invoke(app, ["remove-speech", str(wav_file), str(tmp_path / "o.wav"), "--noise-free", "off"])
    assert r.exit_code != 0 and not (tmp_path / "o.wav").exists()  # only denoise has the flag
    r = runner.invoke(app, ["extract-speaker", str(wav_file), str(tmp_path / "o.wav"), "--enroll", str(wav_file),
                            "--target-alone", "detector", "--checkpoint", str(tiny_checkpoint)])
    assert "has no target-alone detector" in one_line_error(r) and not (tmp_path / "o.wav").exists()
    extract = ["extract-speaker", str(wav_file), str(tmp_path / "o.wav"), "--enroll", str(wav_file)]
    for command, flag, bad, usage in ((extract, "--target-silent", "denoise", "use auto, off, detector"),
                                      (extract, "--target-share", "detector=1.5", "use auto, off or detector[=W]"),
                                      (["denoise", str(wav_file), str(tmp_path / "o.wav")], "--speech-share",
                                       "detector=0", "use auto, off or detector[=W]")):
        kind = flag.removeprefix("--")
        r = runner.invoke(app, [*command, flag, "detector", "--checkpoint", str(tiny_checkpoint)])
        assert f"{flag} detector: this checkpoint has no {kind} detector" in one_line_error(r)
        r = runner.invoke(app, [*command, flag, bad])
        assert f"{flag} '{bad}': {usage}" in one_line_error(r) and not (tmp_path / "o.wav").exists()


def test_stereo_input_is_downmixed(tmp_path, tiny_checkpoint):
    inp = tmp_path / "st.wav"
    x = tone(0.6)
    sf.write(inp, np.stack([x, -x * 0.5], 1), SR)
    out = tmp_path / "o.wav"
    assert run("remove-speech", str(inp), str(out), ckpt=tiny_checkpoint).exit_code == 0
    assert sf.info(out).channels == 1


def test_silent_input_refused(tmp_path, tiny_checkpoint):
    inp = tmp_path / "quiet.wav"
    sf.write(inp, np.zeros(SR, dtype=np.float32), SR)
    assert "silent" in one_line_error(run("denoise", str(inp), str(tmp_path / "o.wav"), ckpt=tiny_checkpoint))


@pytest.mark.parametrize("cmd", ["denoise", "remove-speech", "extract-speaker"])
def test_known_length_commands_sample_by_default(tmp_path, wav_file, monkeypatch, cmd):
    """Greedy decoding locks into silence codes (denoise: 28 of devbench3's 120 items went quiet halfway,
    4 at temperature 1), so no command decodes greedily unless told to."""
    seen = []
    monkeypatch.setattr(cli, "_run_files", lambda c, *args, **kw: seen.append(c.decoding.temperature))
    extra = ["--enroll", str(wav_file)] if cmd == "extract-speaker" else []
    assert run(cmd, str(wav_file), str(tmp_path / "o.wav"), *extra).exit_code == 0
    assert run(cmd, str(wav_file), str(tmp_path / "o.wav"), *extra, "--temperature", "0").exit_code == 0
    assert seen == [DecodingOptions().temperature, 0.0] and seen[0] > 0
