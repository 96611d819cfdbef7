"""The Python API (api.py) on the tiny checkpoint: for the same seed, each task returns what its
command writes; arrays in and out with their rate."""

import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import speechx_cli
from speechx_cli.cli import app
from speechx_cli.mask import Resynth
from speechx_cli.pipeline import WindowOptions

from .conftest import SR, tone

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return speechx_cli.load_model(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 1.3 s input at another rate than the codec's, and an enrollment / voice prompt."""
    root = tmp_path_factory.mktemp("api")
    sf.write(root / "in.wav", tone(1.3, sr=22050), 22050)
    sf.write(root / "voice.flac", tone(1.0, freq=300, seed=1), SR)
    return root


def _same_as_command(result, args: list[str], tmp_path, checkpoint) -> None:
    """The command (its output: tmp_path/cli.wav) and the API's result saved as api.wav: the same samples
    at the same rate."""
    r = runner.invoke(app, [*args, "--checkpoint", str(checkpoint)])
    assert r.exit_code == 0, r.output
    result.save(tmp_path / "api.wav")
    (x, rate_x), (y, rate_y) = (sf.read(tmp_path / f, dtype="int16") for f in ("cli.wav", "api.wav"))
    assert rate_x == rate_y == result.sample_rate
    assert np.array_equal(x, y)


@pytest.mark.parametrize("task, resynth", [("denoise", "mask"), ("remove-speech", "codec")])
def test_known_length_tasks_equal_the_commands(model, files, tmp_path, tiny_checkpoint, task, resynth):
    method = {"denoise": model.denoise, "remove-speech": model.remove_speech}[task]
    result = method(files / "in.wav", window=WindowOptions(resynth=Resynth(resynth)), seed=3)
    assert result.sample_rate == 22050 and abs(len(result.samples) - int(1.3 * 22050)) <= 2
    args = [task, str(files / "in.wav"), str(tmp_path / "cli.wav"), "--resynth", resynth, "--seed", "3"]
    _same_as_command(result, args, tmp_path, tiny_checkpoint)


def test_extract_speaker_equals_the_command(model, files, tmp_path, tiny_checkpoint):
    result = model.extract_speaker(files / "in.wav", files / "voice.flac", text="hello there", seed=2)
    args = ["extract-speaker", str(files / "in.wav"), str(tmp_path / "cli.wav"), "--enroll", str(files / "voice.flac"),
            "--text", "hello there", "--seed", "2"]
    _same_as_command(result, args, tmp_path, tiny_checkpoint)


def test_tts_equals_the_command(model, files, tmp_path, tiny_checkpoint):
    result = model.tts("Hello there.", files / "voice.flac", out_rate=8000, max_seconds=1, temperature=0.8)
    assert result.sample_rate == 8000 and 0 < result.duration <= 1.0 + 1e-6
    _same_as_command(result, ["tts", "Hello there.", str(tmp_path / "cli.wav"), "--prompt", str(files / "voice.flac"),
                              "--sample-rate", "8000", "--max-seconds", "1", "--temperature", "0.8"],
                     tmp_path, tiny_checkpoint)


def test_span_edit_equals_the_command(model, files, tmp_path, tiny_checkpoint):
    result = model.edit(files / "in.wav", "the dog sat", (0.5, 1.0), background="clean")
    assert [s.label for s in result.steps] == ["replace the span"]
    args = ["edit", str(files / "in.wav"), str(tmp_path / "cli.wav"), "--text", "the dog sat", "--span", "0.5:1.0",
            "--background", "clean"]
    _same_as_command(result, args, tmp_path, tiny_checkpoint)


@pytest.mark.skipif(not shutil.which("flite"), reason="needs flite (apt-get install flite)")
def test_word_edit_equals_the_command(model, tmp_path, tiny_checkpoint):
    pytest.importorskip("pocketsphinx")
    synth = pytest.importorskip("speechx_cli.train.synth")
    sentence, edited = "The birch canoe slid on the smooth planks.", "The oak canoe slid on the rough planks."
    speech = synth.synthesize(synth.Voice.parse("flite:kal16"), sentence,
                              tuple(w.strip(".").lower() for w in sentence.split()))
    sf.write(tmp_path / "birch.wav", speech.audio, synth.SAMPLE_RATE, subtype="PCM_16")
    result = model.edit_words(tmp_path / "birch.wav", sentence, edited)
    assert [s.label for s in result.steps] == ['replace "birch" -> "oak"', 'replace "smooth" -> "rough"']
    assert result.transcript == sentence
    args = ["edit", str(tmp_path / "birch.wav"), str(tmp_path / "cli.wav"), "--transcript", sentence, "--text", edited]
    _same_as_command(result, args, tmp_path, tiny_checkpoint)


def test_arrays_in_and_out(model, files):
    """An array and its rate give what the same samples in a file give; (N, channels) is downmixed."""
    x = tone(1.0, sr=22050)
    sf.write(files / "float.wav", x, 22050, subtype="FLOAT")
    from_file = model.denoise(files / "float.wav")
    from_array = model.denoise(x, 22050)
    assert from_array.sample_rate == 22050 and np.array_equal(from_array.samples, from_file.samples)
    stereo = model.denoise(np.stack([x, x], axis=1), 22050)
    assert np.array_equal(stereo.samples, from_array.samples)
    again = model.denoise(from_array, out_rate=SR)  # an Audio carries its rate
    assert again.sample_rate == SR and abs(len(again.samples) - SR) <= 1


@pytest.mark.parametrize("call, message", [
    (lambda m: m.denoise(np.zeros(100, np.float32)), "sample_rate"),
    (lambda m: m.denoise(np.zeros((2, 2, 2), np.float32), SR), "shape"),
    (lambda m: m.tts("", tone(1.0), SR), "text is required"),
    (lambda m: m.edit(tone(1.0), "the dog", (0.5, 3.0), SR), "beyond the audio"),
    (lambda m: m.edit(tone(1.0), "the dog", (0.2, 0.5), SR, background="noisy"), "keep or clean"),
    (lambda m: m.denoise(tone(1.0), SR, top_p=0), "top-p"),
])
def test_bad_requests_raise_value_errors(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_load_model_finds_the_checkpoint_like_the_commands(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECHX_CHECKPOINT", str(tiny_checkpoint))
    model = speechx_cli.load_model()
    assert model.sample_rate == SR and str(model.device) == "cpu"
    with pytest.raises(ValueError, match="not found"):
        speechx_cli.load_model(tmp_path / "missing.safetensors")
