import math

import numpy as np
import pytest
import soundfile as sf

from speechx_cli import audio, files
from speechx_cli.audio import AudioError

SR = 16_000


def tone(seconds=0.5, sr=SR, freq=440.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str):
    msg = str(err.value)
    assert "\n" not in msg and msg
    for fragment in fragments:
        assert fragment in msg


@pytest.mark.parametrize("ext", [".wav", ".flac"])
def test_round_trip(tmp_path, ext):
    x = tone()
    path = tmp_path / f"a{ext}"
    assert audio.save(path, x, SR) == 0
    y, sr = audio.load(path, SR)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1.0 / 2**14  # PCM_16 quantisation
    assert audio.info(path) == audio.AudioInfo(SR, 1, len(x), len(x) / SR)


def test_stereo_is_downmixed_by_mean(tmp_path):
    left, right = tone(freq=300), tone(freq=500, amp=0.25)
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    y, _ = audio.load(tmp_path / "s.wav", SR)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_resampling_length(tmp_path):
    x = tone(1.0, sr=44_100)
    sf.write(tmp_path / "r.wav", x, 44_100)
    y, sr_in = audio.load(tmp_path / "r.wav", 24_000)
    assert sr_in == 44_100 and len(y) == 24_000
    assert len(audio.resample(x[:1001], 44_100, 16_000)) == math.ceil(1001 * 16_000 / 44_100)
    assert audio.resample(x, 44_100, 44_100) is x


def test_iter_blocks_match_load(tmp_path):
    x = tone(2.3, sr=22_050)
    sf.write(tmp_path / "b.wav", x, 22_050, subtype="FLOAT")
    blocks = list(audio.iter_blocks(tmp_path / "b.wav", SR, block_seconds=0.5))
    assert [len(b) for b in blocks[:-1]] == [SR // 2] * 4 and 0 < len(blocks[-1]) <= SR // 2
    joined, whole = np.concatenate(blocks), audio.load(tmp_path / "b.wav", SR)[0]
    assert abs(len(joined) - len(whole)) <= 2
    n = min(len(joined), len(whole)) - 200  # edges differ slightly between streaming and one-shot
    np.testing.assert_allclose(joined[200:n], whole[200:n], atol=2e-3)


def test_bad_inputs_give_one_line_errors(tmp_path):
    with pytest.raises(AudioError) as err:
        audio.load(tmp_path / "missing.wav", SR)
    assert_one_line(err, "missing.wav", "no such file")

    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError) as err:
        audio.load(tmp_path / "empty.wav", SR)
    assert_one_line(err, "empty.wav", "empty")

    (tmp_path / "notes.wav").write_text("this is not audio\n")
    with pytest.raises(AudioError) as err:
        audio.load(tmp_path / "notes.wav", SR)
    assert_one_line(err, "notes.wav", "not an audio file")


def test_truncated_wav(tmp_path):
    audio.save(tmp_path / "full.wav", tone(), SR)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "header.wav").write_bytes(data[:20])
    for name, fragment in [("half.wav", "truncated"), ("header.wav", "not an audio file")]:
        with pytest.raises(AudioError) as err:
            audio.load(tmp_path / name, SR)
        assert_one_line(err, name, fragment)


def test_zero_length_silence_and_too_long(tmp_path):
    sf.write(tmp_path / "zero.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioError) as err:
        audio.load(tmp_path / "zero.wav", SR)
    assert_one_line(err, "zero.wav")

    audio.save(tmp_path / "quiet.wav", np.zeros(SR, np.float32), SR)
    assert audio.load(tmp_path / "quiet.wav", SR)[0].shape == (SR,)
    with pytest.raises(AudioError) as err:
        audio.load(tmp_path / "quiet.wav", SR, allow_silence=False)
    assert_one_line(err, "quiet.wav", "silent")

    with pytest.raises(AudioError) as err:
        audio.load(tmp_path / "quiet.wav", SR, max_seconds=0.5)
    assert_one_line(err, "quiet.wav", "limit")


def test_save_refuses_overwrite_without_force(tmp_path):
    path = tmp_path / "out.wav"
    audio.save(path, tone(), SR)
    with pytest.raises(AudioError) as err:
        audio.save(path, tone(amp=0.1), SR)
    assert_one_line(err, "out.wav exists (use --force to overwrite)")
    audio.save(path, tone(amp=0.1), SR, force=True)
    assert np.max(np.abs(audio.load(path, SR)[0])) < 0.11


def test_save_is_atomic_and_clean(tmp_path):
    audio.save(tmp_path / "deep" / "er" / "x.flac", tone(), SR)
    audio.save(tmp_path / "y.ogg", tone(), SR)
    with pytest.raises(AudioError):
        audio.save(tmp_path / "nan.wav", np.full(10, np.nan, np.float32), SR)
    with pytest.raises(AudioError):
        audio.save(tmp_path / "z.xyz", tone(), SR)
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["deep/er/x.flac", "y.ogg"]


def test_save_clips_and_counts(tmp_path):
    x = np.array([0.0, 1.5, -2.0, 0.5, 1.0], np.float32)
    assert audio.save(tmp_path / "c.wav", x, SR) == 2
    y, _ = audio.load(tmp_path / "c.wav", SR)
    assert y[1] == pytest.approx(1.0, abs=1e-4) and y[2] == -1.0


def test_save_into_unwritable_folder(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("")
    with pytest.raises(AudioError) as err:
        audio.save(tmp_path / "afile" / "out.wav", tone(), SR)
    assert_one_line(err, "afile", "cannot write")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files.tempfile, "mkstemp", denied)  # chmod does not stop root
    with pytest.raises(AudioError) as err:
        audio.save(tmp_path / "out.wav", tone(), SR)
    assert_one_line(err, str(tmp_path), "cannot write there (Permission denied)")


def test_block_writer(tmp_path):
    blocks = [tone(0.25, freq=f) for f in (200, 300, 400)]
    with audio.BlockWriter(tmp_path / "long.wav", SR) as w:
        for b in blocks:
            w.write(b)
    assert w.frames == 3 * len(blocks[0]) and w.clipped == 0
    y, _ = audio.load(tmp_path / "long.wav", SR)
    np.testing.assert_allclose(y, np.concatenate(blocks), atol=1.0 / 2**14)

    with pytest.raises(RuntimeError):
        with audio.BlockWriter(tmp_path / "failed.wav", SR) as w:
            w.write(blocks[0])
            raise RuntimeError("model crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_splice_keeps_outside_samples_identical():
    rng = np.random.default_rng(0)
    original = rng.uniform(-0.5, 0.5, 4000).astype(np.float32)
    replacement = rng.uniform(-0.5, 0.5, 1500).astype(np.float32)
    start, end, fade = 1000, 2000, 160
    out = audio.splice(original, replacement, start, end, fade)
    assert len(out) == start + len(replacement) + len(original) - end
    assert np.array_equal(out[:start], original[:start])
    assert np.array_equal(out[start + len(replacement) :], original[end:])
    # Fades sit inside the new part; its centre is the replacement untouched.
    middle = out[start : start + len(replacement)]
    assert np.array_equal(middle[fade:-fade], replacement[fade:-fade])
    # The first faded sample is almost all original: the join does not jump.
    assert abs(middle[0] - original[start]) < 0.01


def test_splice_insertion_and_hard_cut():
    original = np.arange(10, dtype=np.float32)
    assert np.array_equal(audio.splice(original, np.zeros(3, np.float32), 5, 5, 0),
                          np.array([0, 1, 2, 3, 4, 0, 0, 0, 5, 6, 7, 8, 9], np.float32))
    assert len(audio.splice(original, np.ones(1, np.float32), 0, 10, 100)) == 1
    with pytest.raises(ValueError):
        audio.splice(original, original, 6, 5, 0)


def test_crossfade_is_equal_power():
    n = 64
    a, b = np.ones(n, np.float32), np.zeros(n, np.float32)
    gain_a, gain_b = audio.crossfade(a, b), audio.crossfade(b, a)
    np.testing.assert_allclose(gain_a**2 + gain_b**2, 1.0, atol=1e-6)
    assert gain_a[0] > 0.99 and gain_b[-1] > 0.99


def test_audio_paths():
    assert audio.is_audio_path("x/Y.WAV") and audio.is_audio_path("a.flac") and audio.is_audio_path("b.mp3")
    assert not audio.is_audio_path("notes.txt") and not audio.is_audio_path(".out.wav.abc.tmp")
    assert not audio.is_audio_path(".hidden.wav")
