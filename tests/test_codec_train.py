"""Small-codec training: it learns, it resumes exactly, its checkpoints are written atomically."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speechx_cli import checkpoint
from speechx_cli.codec import SmallCodec, SmallCodecConfig
from speechx_cli.codecs import codec_from_config
from speechx_cli.train import codec_cli
from speechx_cli.train import codec_train as ct
from speechx_cli.train.discriminators import Recipe
from speechx_cli.train.loop import LOG_NAME


def _synth(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 1000, 3)) / 10
    return (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """Sines + noise: three 16 kHz files and one at 22.05 kHz (resampled on load), one dev file."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    (root / "train").mkdir()
    (root / "dev").mkdir()
    for i in range(3):
        sf.write(root / "train" / f"s{i}.wav", _synth(rng, 16_000, 1.0), 16_000)
    sf.write(root / "train" / "other_rate.wav", _synth(rng, 22_050, 0.5), 22_050)
    sf.write(root / "dev" / "d.wav", _synth(rng, 16_000, 1.0), 16_000)
    return root


def _cfg(audio, out, **changes) -> ct.CodecTrainConfig:
    cfg = ct.CodecTrainConfig(
        data=(str(audio / "train"),), dev=(str(audio / "dev"),), out_dir=str(out),
        codec=SmallCodecConfig.tiny(), steps=6, batch_size=2, segment_s=0.2,
        quantizer_warmup_steps=2, adv_start_step=4, recipe=Recipe.encodec(disc_width=4), log_every=1,
        eval_every=3, ckpt_every=100)
    return replace(cfg, **changes)


def test_training_reduces_the_loss(audio, tmp_path):
    cfg = _cfg(audio, tmp_path, steps=12, quantizer_warmup_steps=100, adv_start_step=None,
               lr=1e-3, dev=())
    result = ct.train_codec(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / LOG_NAME).open()]
    assert len(losses) == 12 and result.step == 12
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


def test_logs_codebook_usage_of_first_and_last_level(audio, tmp_path):
    cfg = _cfg(audio, tmp_path, steps=4, adv_start_step=None, dev=())
    ct.train_codec(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / LOG_NAME).open()]
    quantized = [r for r in rows if r["step"] > cfg.quantizer_warmup_steps]
    assert quantized and all("codes_used" not in r for r in rows if r["step"] <= cfg.quantizer_warmup_steps)
    for r in quantized:
        assert 1 <= r["codes_used_last"] <= cfg.codec.codebook_size and 1 <= r["codes_used"] <= cfg.codec.codebook_size


def test_resume_continues_exactly(audio, tmp_path):
    straight = ct.train_codec(_cfg(audio, tmp_path / "a", lr_decay_start=2), progress=False)
    half = _cfg(audio, tmp_path / "b", steps=3, lr_decay_start=2)
    ct.train_codec(half, progress=False)
    with pytest.raises(FileExistsError):
        ct.train_codec(half, progress=False)
    resumed = ct.train_codec(replace(half, steps=6), resume=True, progress=False)
    assert resumed.step == straight.step == 6

    a, b = straight.codec.state_dict(), resumed.codec.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)  # bit-exact here
    ckpt_a = ct.load_training_checkpoint(straight.checkpoint)
    ckpt_b = ct.load_training_checkpoint(resumed.checkpoint)
    for k in ckpt_a["discriminator"]:
        torch.testing.assert_close(ckpt_a["discriminator"][k], ckpt_b["discriminator"][k],
                                   rtol=0, atol=1e-6)
    assert ckpt_a["data"] == ckpt_b["data"]
    assert torch.equal(ckpt_a["rng"]["torch"], ckpt_b["rng"]["torch"])
    dev_a = [json.loads(x) for x in (tmp_path / "a" / LOG_NAME).open() if "dev_si_sdr" in x]
    assert [d["step"] for d in dev_a] == [3, 6]

    codec = checkpoint.load_codec(resumed.checkpoint)
    assert isinstance(codec, SmallCodec) and not codec.training
    x = 0.1 * torch.randn(1, 1600)
    rebuilt = codec_from_config(codec.config(), codec.state_dict())
    assert torch.equal(rebuilt.encode(x), resumed.codec.encode(x))


def test_learning_rate_is_flat_then_decays_to_its_floor(audio, tmp_path):
    cfg = _cfg(audio, tmp_path, steps=8, adv_start_step=None, dev=(), lr=1e-3, lr_decay_start=3)
    ct.train_codec(cfg, progress=False)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / LOG_NAME).open()]
    assert lrs[:4] == [1e-3] * 4  # steps 0-3 (logged as 1-4): flat until the decay starts
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:])) and lrs[-1] > 1e-4
    assert ct.lr_multiplier(8, warmup=0, decay_start=3, end=8, min_ratio=0.1, shape="cosine") == pytest.approx(0.1)
    flat = ct.train_codec(replace(cfg, out_dir=str(tmp_path / "flat"), lr_decay_start=None), progress=False)
    assert {json.loads(line)["lr"] for line in (tmp_path / "flat" / LOG_NAME).open()} == {1e-3}
    assert flat.step == 8


def test_a_forced_run_starts_a_new_log(audio, tmp_path):
    cfg = _cfg(audio, tmp_path, steps=3, adv_start_step=None, best_metric="dev_stoi")
    ct.train_codec(cfg, progress=False)
    assert (tmp_path / ct.BEST_NAME).exists()
    ct.train_codec(replace(cfg, steps=2, eval_every=100), force=True, progress=False)
    assert [json.loads(line)["step"] for line in (tmp_path / LOG_NAME).open()] == [1, 2]
    assert not (tmp_path / ct.BEST_NAME).exists()  # the old run's best is not this run's


def test_checkpoint_write_is_atomic(audio, tmp_path, monkeypatch):
    cfg = _cfg(audio, tmp_path, steps=1, adv_start_step=None, dev=())
    ct.train_codec(cfg, progress=False)
    path = tmp_path / ct.CHECKPOINT_NAME
    before = path.read_bytes()
    trainer = ct.CodecTrainer(cfg, [torch.zeros(4000)])
    trainer.step = 99

    def broken_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        trainer.save_checkpoint()
    assert path.read_bytes() == before
    assert ct.load_training_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [ct.CHECKPOINT_NAME, LOG_NAME]


def test_config_round_trip_and_sampler_determinism():
    cfg = ct.CodecTrainConfig(data=("x",), codec=SmallCodecConfig.tiny(), adv_start_step=5)
    assert ct.CodecTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    waves = [torch.randn(5000), torch.randn(100)]
    s1, s2 = (ct.SegmentSampler(waves, 800, 3, seed=7, gain_db=6) for _ in range(2))
    first = s1.next_batch()
    assert first.shape == (3, 800) and torch.equal(first, s2.next_batch())
    state = s1.state()
    nxt = s1.next_batch()
    s2.load_state(state)
    assert torch.equal(nxt, s2.next_batch())


def test_cli_trains_and_refuses_to_overwrite(audio, tmp_path):
    args = ["--data", str(audio / "train"), "--out", str(tmp_path), "--preset", "tiny",
            "--steps", "1", "--batch-size", "1", "--threads", "1"]
    result = CliRunner().invoke(codec_cli.app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / ct.CHECKPOINT_NAME).exists()
    again = CliRunner().invoke(codec_cli.app, args)
    assert again.exit_code != 0
    assert CliRunner().invoke(codec_cli.app, args + ["--resume", "--steps", "2"]).exit_code == 0
    assert ct.load_training_checkpoint(tmp_path / ct.CHECKPOINT_NAME)["step"] == 2


def test_cli_dead_code_threshold_reaches_the_codec(audio, tmp_path):
    args = ["--data", str(audio / "train"), "--out", str(tmp_path), "--preset", "tiny", "--steps", "1",
            "--batch-size", "1", "--threads", "1", "--dead-code-threshold", "0.1"]
    assert CliRunner().invoke(codec_cli.app, args).exit_code == 0
    ckpt = ct.load_training_checkpoint(tmp_path / ct.CHECKPOINT_NAME)
    assert ckpt["codec_config"]["dead_code_threshold"] == 0.1
    assert SmallCodecConfig.tiny().dead_code_threshold != 0.1


def test_decoder_fine_tuning_keeps_the_codes(audio, tmp_path):
    from speechx_cli.train.shards import codec_fingerprint

    base = ct.train_codec(_cfg(audio, tmp_path / "base", adv_start_step=None), progress=False)
    tuned = ct.train_codec(_cfg(audio, tmp_path / "tuned", init_from=str(base.checkpoint), freeze_tokenizer=True,
                                adv_start_step=0, lr=1e-3, best_metric="dev_mel_distance"), progress=False)
    dev = [json.loads(x) for x in (tmp_path / "tuned" / LOG_NAME).open() if "dev_mel_distance" in x]
    best = min(dev, key=lambda d: d["dev_mel_distance"])
    assert ct.load_training_checkpoint(tmp_path / "tuned" / ct.BEST_NAME)["step"] == best["step"]
    a, b = base.codec.state_dict(), tuned.codec.state_dict()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("decoder.") for k in changed), changed
    x = 0.1 * torch.randn(1, 3200)
    assert torch.equal(base.codec.encode(x), tuned.codec.encode(x))
    assert not torch.equal(base.codec.decode(base.codec.encode(x)), tuned.codec.decode(tuned.codec.encode(x)))
    # the data fingerprint follows the tokens: a new decoder keeps it, a new encoder does not
    assert codec_fingerprint(base.codec) == codec_fingerprint(tuned.codec)
    other = ct.train_codec(_cfg(audio, tmp_path / "other", init_from=str(base.checkpoint), adv_start_step=None,
                                lr=1e-3), progress=False)
    assert codec_fingerprint(other.codec) != codec_fingerprint(base.codec)


def test_a_wider_decoder_trains_from_scratch_on_the_frozen_tokenizer(audio, tmp_path):
    from speechx_cli.train.shards import codec_fingerprint

    base = ct.train_codec(_cfg(audio, tmp_path / "base", adv_start_step=None), progress=False)
    wide_cfg = replace(SmallCodecConfig.tiny(), decoder_filters=8)
    wide = ct.train_codec(_cfg(audio, tmp_path / "wide", codec=wide_cfg, init_from=str(base.checkpoint),
                               freeze_tokenizer=True, adv_start_step=None), progress=False)
    decoder_params = lambda c: sum(p.numel() for p in c.decoder.parameters())  # noqa: E731
    assert decoder_params(wide.codec) > 2 * decoder_params(base.codec)
    x = 0.1 * torch.randn(1, 3200)
    assert torch.equal(base.codec.encode(x), wide.codec.encode(x))
    assert codec_fingerprint(base.codec) == codec_fingerprint(wide.codec)  # the shards stay valid
    assert "decoder_filters" not in base.codec.config()  # older checkpoints' configs still compare equal
    again = codec_from_config(wide.codec.config(), wide.codec.state_dict())  # as an inference checkpoint
    torch.testing.assert_close(again.decode(again.encode(x)), wide.codec.decode(wide.codec.encode(x)))
    with pytest.raises(ValueError, match="freeze-tokenizer"):  # a new decoder on a tokenizer that still trains
        ct.train_codec(_cfg(audio, tmp_path / "bad", codec=wide_cfg, init_from=str(base.checkpoint),
                            adv_start_step=None), progress=False)


def test_a_small_decoder_starts_from_a_vocos_checkpoints_tokenizer(audio, tmp_path):
    """The shipped demo's codec is a Vocos decoder: a new small decoder (phonetic or decoder studies) takes its
    base's encoder and codebooks, so it makes the same tokens; a tokenizer that would still train is refused."""
    from speechx_cli.codecs.vocos import VocosConfig

    base = ct.train_codec(_cfg(audio, tmp_path / "base", adv_start_step=None), progress=False)
    vocos = ct.train_codec(_cfg(audio, tmp_path / "vocos", codec=VocosConfig.tiny(base.codec.config()),
                                base=str(base.checkpoint), adv_start_step=None, steps=2), progress=False)
    small = ct.train_codec(_cfg(audio, tmp_path / "small", init_from=str(vocos.checkpoint), freeze_tokenizer=True,
                                adv_start_step=None, steps=2), progress=False)
    x = 0.1 * torch.randn(1, 3200)
    assert torch.equal(small.codec.encode(x), base.codec.encode(x))
    assert small.codec.decode(small.codec.encode(x)).shape == base.codec.decode(base.codec.encode(x)).shape
    with pytest.raises(ValueError, match="freeze-tokenizer"):
        ct.train_codec(_cfg(audio, tmp_path / "bad", init_from=str(vocos.checkpoint), adv_start_step=None),
                       progress=False)


def test_windowed_reading_draws_the_same_batches_as_audio_in_memory(tmp_path):
    """Files stay on disk (mono and stereo; WAV, FLAC; at the codec's rate and resampled from 22.05 and 24 kHz)
    and give the batches the in-memory waveforms give (exactly at the codec's rate, to float rounding where
    resampled); a format only FFmpeg reads is held in memory; a corrupt file is named in one line."""
    rng = np.random.default_rng(1)
    files = []
    for i, (sr, channels, ext) in enumerate([(16_000, 1, "wav"), (16_000, 2, "flac"), (22_050, 1, "wav"),
                                             (24_000, 2, "flac"), (16_000, 1, "ogg")]):
        x = (0.1 * rng.standard_normal((int(sr * (0.3 + 0.4 * i)), channels))).astype(np.float32)
        files.append(tmp_path / f"f{i}.{ext}")
        sf.write(files[-1], x, sr, **({} if ext == "ogg" else {"subtype": "PCM_16"}))
    bank = ct.AudioBank(files, 16_000)
    assert [isinstance(item, torch.Tensor) for item in bank.items] == [False, False, False, False, True]
    assert bank.memory_bytes == 4 * bank.lengths[4]
    eager = ct.load_waves(files, 16_000)
    assert bank.lengths == [len(w) for w in eager]
    on_disk, in_memory = (ct.SegmentSampler(w, 4000, 6, seed=3, gain_db=6) for w in (bank, eager))
    for _ in range(8):
        torch.testing.assert_close(on_disk.next_batch(), in_memory.next_batch(), rtol=0, atol=1e-6)
    for i in (0, 1):  # at the codec's rate: the very samples
        assert torch.equal(bank.window(i, 1234, 2000), eager[i][1234:3234])
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    result = CliRunner().invoke(codec_cli.app, ["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--preset",
                                         "tiny", "--steps", "1"])
    assert result.exit_code != 0 and "bad.wav" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / ct.CHECKPOINT_NAME).exists()
