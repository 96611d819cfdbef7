"""The anchors' adversarial recipe and codec training of every kind: discriminators and their losses,
each kind's default weights, the adversarial warm-up, exact resume with discriminators, the --kind CLI."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from speechx_cli import checkpoint
from speechx_cli.codec import SmallCodecConfig
from speechx_cli.codecs.dac import DacConfig
from speechx_cli.codecs.vocos import VocosCodec, VocosConfig
from speechx_cli.train import codec_cli
from speechx_cli.train import codec_train as ct
from speechx_cli.train.discriminators import (Adversary, BandedSTFTDiscriminator, MultiDiscriminator,
                                              PeriodDiscriminator, Recipe, lsgan_d_loss, lsgan_g_loss)
from speechx_cli.train.loop import LOG_NAME

from .test_codec_train import audio  # noqa: F401  (the module's audio fixture)

TINY_GAN = dict(disc_width=2, periods=(2, 3), stft_windows=(256, 128), mel_windows=(64, 128, 256),
                mel_bands=(10, 20, 40))


def test_discriminators_judge_every_period_and_resolution():
    torch.manual_seed(0)
    x = 0.1 * torch.randn(2, 1, 1601)  # a length no period divides
    score, fmaps = PeriodDiscriminator(3, (2, 4, 8, 16))(x)
    assert score.shape[:2] == (2, 1) and score.shape[-1] == 3 and len(fmaps) == 5
    score, fmaps = BandedSTFTDiscriminator(256, 4)(x)
    assert score.shape[:2] == (2, 1) and len(fmaps) == 5 * 5  # five bands, five convolutions each
    logits, features = MultiDiscriminator(Recipe.dac(**TINY_GAN))(x)
    assert len(logits) == len(features) == 2 + 2


def test_least_squares_losses_and_the_discriminator_step():
    ones, zeros = [torch.ones(2, 3)], [torch.zeros(2, 3)]
    assert lsgan_d_loss(ones, zeros) == 0 and lsgan_g_loss(ones) == 0 and lsgan_g_loss(zeros) == 1
    torch.manual_seed(0)
    adversary = Adversary(Recipe.dac(**TINY_GAN), lr=1e-3, betas=(0.5, 0.9))
    real, fake = 0.1 * torch.randn(2, 1600), torch.zeros(2, 1600, requires_grad=True)
    adv, feat = adversary.generator_terms(real, fake)
    (adv + feat).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    before = [p.detach().clone() for p in adversary.disc.parameters()]
    d_losses = [adversary.update(fake, 1e-3)] + [
        (adversary.generator_terms(real, fake), adversary.update(fake, 1e-3))[1] for _ in range(5)]
    assert any(not torch.equal(a, b) for a, b in zip(before, adversary.disc.parameters()))
    assert d_losses[-1] < d_losses[0]  # it learns to tell noise from silence
    with pytest.raises(RuntimeError, match="follows generator_terms"):
        adversary.update(fake, 1e-3)


def test_each_kind_trains_with_its_anchors_weights():
    dac = ct.CodecTrainConfig(data=("x",), codec=DacConfig.tiny())
    assert dac.recipe == Recipe.dac() and dac.recipe.style == "dac"
    assert {t: dac.recipe.weight(t) for t in ("mel", "feat", "adv", "commitment", "codebook")} == {
        "mel": 15.0, "feat": 2.0, "adv": 1.0, "commitment": 0.25, "codebook": 1.0}
    vocos = ct.CodecTrainConfig(data=("x",), codec=VocosConfig.tiny(SmallCodecConfig.tiny().to_dict() | {"kind": "small_codec"}))
    assert vocos.recipe == Recipe.dac() and vocos.kind == "vocos"
    small = ct.CodecTrainConfig(data=("x",), codec=SmallCodecConfig.tiny())
    assert small.recipe.style == "encodec" and small.recipe.adv_weight == 0.05 and small.recipe.l1_weight == 0.1
    for cfg in (dac, vocos, small):
        assert ct.CodecTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    mel = Recipe.dac().mel_loss(16_000)  # DAC's: the sum over seven scales of log10 distances
    x, y = 0.1 * torch.randn(1, 4000), 0.1 * torch.randn(1, 4000)
    per_scale = [(mel.log_mel(x, n) - mel.log_mel(y, n)).abs().mean() for n in mel.n_ffts]
    assert len(per_scale) == 7 and mel(x, y) == pytest.approx(float(sum(per_scale)), rel=1e-5)
    with pytest.raises(ValueError):
        Recipe.dac(style="wgan")


def _cfg(audio, out, codec, **changes) -> ct.CodecTrainConfig:  # noqa: F811
    cfg = ct.CodecTrainConfig(data=(str(audio / "train"),), dev=(str(audio / "dev"),), out_dir=str(out), codec=codec,
                              steps=4, batch_size=2, segment_s=0.2, adv_start_step=2, recipe=Recipe.dac(**TINY_GAN),
                              log_every=1, eval_every=2, ckpt_every=100)
    return replace(cfg, **changes)


def _assert_same_state(a, b, where="state"):
    """Bit-identical nested dicts, lists and tuples of tensors and plain values."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=where)
    else:
        assert a == b, where


def test_dac_training_with_discriminators_resumes_exactly(audio, tmp_path):  # noqa: F811
    straight = ct.train_codec(_cfg(audio, tmp_path / "a", DacConfig.tiny()), progress=False)
    half = _cfg(audio, tmp_path / "b", DacConfig.tiny(), steps=3)
    ct.train_codec(half, progress=False)
    resumed = ct.train_codec(replace(half, steps=4), resume=True, progress=False)
    a, b = (ct.load_training_checkpoint(r.checkpoint) for r in (straight, resumed))
    for part in ("model", "optimizer", "discriminator", "disc_optimizer", "rng"):
        _assert_same_state({part: a[part]}, {part: b[part]})
    assert a["data"] == b["data"] and a["disc_optimizer"]["state"]  # the discriminators' Adam moments travel too
    rows = [json.loads(line) for line in (tmp_path / "a" / LOG_NAME).open()]
    assert [("g_adv" in r) for r in rows if "loss" in r] == [False, False, True, True]  # --adv-start 2
    assert all(len(r["codes_used_levels"]) == 4 for r in rows if "loss" in r)
    assert {"dev_mel_distance", "codes_alive_0", "codes_alive_3"} <= set(rows[-1])
    codec = checkpoint.load_codec(resumed.checkpoint)
    assert codec.config() == resumed.codec.config() and codec.kind == "dac"


def test_vocos_trains_on_the_frozen_tokens_of_a_trained_codec(audio, tmp_path):  # noqa: F811
    base = ct.train_codec(_cfg(audio, tmp_path / "base", SmallCodecConfig.tiny(), steps=3, adv_start_step=None,
                               recipe=None, quantizer_warmup_steps=1, dev=()), progress=False)
    vocos_cfg = VocosConfig.tiny(base.codec.config())
    with pytest.raises(ValueError, match="--base"):
        ct.train_codec(_cfg(audio, tmp_path / "nobase", vocos_cfg), progress=False)
    cfg = _cfg(audio, tmp_path / "v", vocos_cfg, base=str(base.checkpoint), lr=3e-3)
    straight = ct.train_codec(cfg, progress=False)
    x = 0.1 * torch.randn(1, 3200)
    assert torch.equal(straight.codec.encode(x), base.codec.encode(x))
    ct.train_codec(replace(cfg, out_dir=str(tmp_path / "w"), steps=2), progress=False)
    resumed = ct.train_codec(replace(cfg, out_dir=str(tmp_path / "w")), resume=True, progress=False)
    _assert_same_state(straight.codec.state_dict(), resumed.codec.state_dict())
    _assert_same_state(*(ct.load_training_checkpoint(r.checkpoint)["disc_optimizer"] for r in (straight, resumed)))
    other = ct.train_codec(_cfg(audio, tmp_path / "other", replace(SmallCodecConfig.tiny(), dimension=16), steps=1,
                                adv_start_step=None, recipe=None, dev=()), progress=False)
    with pytest.raises(ValueError, match="another codec than the decoder's base"):
        ct.train_codec(replace(cfg, out_dir=str(tmp_path / "x"), base=str(other.checkpoint)), progress=False)


def test_cli_trains_each_kind(audio, tmp_path):  # noqa: F811
    common = ["--data", str(audio / "train"), "--preset", "tiny", "--steps", "1", "--batch-size", "1",
              "--threads", "1"]
    run = lambda *args: CliRunner().invoke(codec_cli.app, [*common, *args])  # noqa: E731
    r = run("--out", str(tmp_path / "dac"), "--kind", "dac", "--quantizer-dropout", "1", "--adv-start", "0",
            "--disc-width", "2")
    assert r.exit_code == 0, r.output
    ckpt = ct.load_training_checkpoint(tmp_path / "dac" / ct.CHECKPOINT_NAME)
    assert ckpt["codec_config"]["kind"] == "dac" and ckpt["codec_config"]["quantizer_dropout"] == 1
    assert ckpt["config"]["recipe"]["style"] == "dac" and ckpt["config"]["recipe"]["disc_width"] == 2
    r = run("--out", str(tmp_path / "vocos"), "--kind", "vocos", "--base", str(tmp_path / "dac" / ct.CHECKPOINT_NAME))
    assert r.exit_code == 0, r.output
    vocos = checkpoint.load_codec(tmp_path / "vocos" / ct.CHECKPOINT_NAME)
    assert isinstance(vocos, VocosCodec) and vocos.cfg.base["kind"] == "dac"
    for args, message in ((("--kind", "vocos"), "--base"), (("--kind", "dac", "--decoder-filters", "8"), "--decoder-filters")):
        r = run("--out", str(tmp_path / "bad"), *args)
        assert r.exit_code != 0 and message in r.output, r.output
