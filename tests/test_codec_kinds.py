"""Every codec kind behind one interface: lengths, configs, checkpoints, tokens; the DAC-style codec's
factorized VQ (quantizer dropout, usage report, revival); the Vocos decoder keeps its base's tokens."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from speechx_cli import checkpoint
from speechx_cli.cli import app
from speechx_cli.codec import SmallCodec, SmallCodecConfig
from speechx_cli.codecs import (CodecConfigError, check_config, codec_by_name, codec_from_config, describe,
                                token_config)
from speechx_cli.codecs import fingerprint as codec_fingerprint
from speechx_cli.codecs.dac import DacCodec, DacConfig
from speechx_cli.codecs.quantize import FactorizedCodebook, ResidualFactorizedVQ, codes_used_per_level
from speechx_cli.codecs.vocos import VocosCodec, VocosConfig
from speechx_cli.model import ARModel, ModelConfig, NARModel

from .conftest import tone

KINDS = ("small_codec", "small_content", "dac", "vocos_on_small", "vocos_on_content", "vocos_on_dac")


def _trained_small(content_dim: int = 0) -> SmallCodec:
    """A tiny small codec whose codebooks k-means (and the content level's first batch) filled: one training pass."""
    torch.manual_seed(0)
    codec = SmallCodec(replace(SmallCodecConfig.tiny(), content_dim=content_dim)).train()
    with torch.no_grad():
        codec(0.1 * torch.randn(4, 16_000))
    return codec.eval()


def make(kind: str) -> torch.nn.Module:
    torch.manual_seed(1)
    if kind in ("small_codec", "small_content"):
        return _trained_small(4 if kind == "small_content" else 0)
    if kind == "dac":
        return DacCodec(DacConfig.tiny()).eval()
    base = {"vocos_on_small": _trained_small, "vocos_on_content": lambda: _trained_small(4),
            "vocos_on_dac": lambda: DacCodec(DacConfig.tiny()).eval()}[kind]()
    vocos = VocosCodec(VocosConfig.tiny(base.config()))
    vocos.load_base(base.state_dict())
    return vocos.eval()


@pytest.fixture(scope="module", params=KINDS)
def codec(request):
    return make(request.param)


@pytest.mark.parametrize("n", [1, 319, 320, 16_007])
def test_every_kind_encodes_and_decodes_any_length(codec, n):
    x = 0.1 * torch.randn(2, n)
    codes = codec.encode(x)
    frames = math.ceil(n / codec.hop_length)
    assert codes.shape == (2, codec.n_codebooks, frames) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < codec.codebook_size
    wav = codec.decode(codes)
    assert wav.shape == (2, frames * codec.hop_length) and torch.isfinite(wav).all()
    assert codec.decode(codes[0]).shape == (frames * codec.hop_length,)  # one item
    torch.testing.assert_close(codec.decode(codes[1:]), wav[1:], rtol=1e-4, atol=1e-5)  # batch = singles


def test_every_kind_round_trips_through_its_config(codec):
    config = json.loads(json.dumps(codec.config()))
    rebuilt = codec_from_config(config, {k: v.clone() for k, v in codec.state_dict().items()})
    assert type(rebuilt) is type(codec) and not rebuilt.training and rebuilt.config() == codec.config()
    x = 0.1 * torch.randn(1, 4000)
    assert torch.equal(rebuilt.encode(x), codec.encode(x))
    torch.testing.assert_close(rebuilt.decode(codec.encode(x)), codec.decode(codec.encode(x)))
    with pytest.raises(CodecConfigError, match="weights are missing"):
        codec_from_config(config)


@pytest.mark.parametrize("config, message", [
    ({"kind": "dac", "encoder_rates": [2, 4], "decoder_rates": [8, 5, 4, 2]}, "same product"),
    ({"kind": "dac", "codebook_dim": 0}, "positive integers"),
    ({"kind": "dac", "quantizer_dropout": 1.5}, "quantizer_dropout"),
    ({"kind": "dac", "snake": True}, "unknown DacConfig fields"),
    ({"kind": "vocos", "dim": 8}, "base must be"),
    ({"kind": "small_codec", "content_dim": -1}, "content_dim"),
    ({"kind": "small_codec", "content_dim": 4, "n_codebooks": 1}, "content level needs 2"),
    ({"kind": "vocos", "base": {"kind": "encodec_24khz"}}, "has no tokenizer to reuse"),
    ({"kind": "vocos", "base": {"kind": "small_codec", "n_filters": -1}}, "positive integers"),
    ({"kind": "vocos", "base": {"kind": "small_codec"}, "upsample": 3}, "must divide the base hop"),
])
def test_malformed_configs_are_refused_without_building(config, message):
    with pytest.raises(CodecConfigError, match=message):
        check_config(config)


def test_vocos_keeps_its_base_tokens_and_fingerprint():
    base = _trained_small()
    vocos = make("vocos_on_small")
    x = torch.from_numpy(tone(1.3))[None]
    assert torch.equal(vocos.encode(x), base.encode(x))  # an LM trained on the base's tokens keeps working
    assert codec_fingerprint(vocos) == codec_fingerprint(base)  # so do its shards
    assert token_config(vocos.config()) == token_config(base.config())
    assert vocos.decode(vocos.encode(x)).shape == base.decode(base.encode(x)).shape
    assert not any(p.requires_grad for p in vocos.base.parameters()) and not vocos.train().base.training
    out = vocos.train()(x)  # training: the decoder learns, the tokens do not move
    out.recon.pow(2).mean().backward()
    assert vocos.decoder.head.weight.grad is not None and torch.equal(out.codes, base.encode(x))
    other = DacCodec(DacConfig.tiny())
    assert codec_fingerprint(other) != codec_fingerprint(base)
    assert describe(vocos.config()) == "vocos on small_codec tokens" and describe(base.config()) == "small_codec"


def test_dac_quantizer_dropout_varies_the_levels_and_each_item_uses_only_its_own():
    torch.manual_seed(0)
    vq = ResidualFactorizedVQ(dim=6, n_codebooks=4, codebook_size=16, codebook_dim=3, dropout=1.0).train()
    z = torch.randn(32, 6, 5)
    out = vq(z)
    assert out.levels.min() >= 1 and out.levels.max() <= 4 and len(out.levels.unique()) > 1
    for b in range(32):  # what an item was quantized to = its first `levels` codes, decoded
        n = int(out.levels[b])
        torch.testing.assert_close(out.quantized[b], vq.decode(out.codes[b:b + 1, :n])[0], rtol=1e-5, atol=1e-5)
    assert (vq.eval()(z).levels == 4).all()  # all levels at inference
    half = ResidualFactorizedVQ(6, 4, 16, 3, dropout=0.5).train()
    assert (half(torch.randn(64, 6, 2)).levels == 4).float().mean() > 0.4
    used = codes_used_per_level(out.codes, out.levels)
    assert len(used) == 4 and used[0] >= used[3]  # the last level serves only the items that kept it


def test_dac_training_pass_reaches_encoder_and_codebooks():
    torch.manual_seed(0)
    codec = DacCodec(DacConfig.tiny()).train()
    out = codec(0.1 * torch.randn(3, 3000))
    assert out.recon.shape == (3, 3200) and out.codes.shape == (3, 4, 10) and out.levels.shape == (3,)
    assert set(out.losses) == {"commitment", "codebook"}
    (out.recon.pow(2).mean() + out.losses["commitment"] + out.losses["codebook"]).backward()
    assert codec.encoder[0].parametrizations.weight.original1.grad is not None
    assert codec.quantizer.levels[0].codebook.weight.grad is not None
    frozen = DacCodec(DacConfig.tiny()).freeze_tokenizer().train()
    assert not frozen.quantizer.training and not any(p.requires_grad for p in frozen.encoder.parameters())


def test_factorized_codebook_usage_report_and_dead_code_revival():
    torch.manual_seed(0)
    book = FactorizedCodebook(dim=4, size=8, codebook_dim=2)
    z_e = torch.randn(2, 2, 50)
    codes = book.nearest(z_e)
    book.seeded.fill_(True)
    book.usage.fill_(1.0)
    book.usage[3] = 0.0  # entry 3 is dead
    before = book.codebook.weight.detach().clone()
    revived = book.revive(z_e, codes, torch.ones_like(codes, dtype=torch.bool), decay=0.99, threshold=0.5)
    assert revived == 1 and not torch.equal(book.codebook.weight[3], before[3])  # the others stay above 0.99
    pool = z_e.transpose(1, 2).reshape(-1, 2)
    assert (pool - book.codebook.weight[3]).abs().sum(1).min() < 1e-6  # taken from the batch's encodings
    assert book.usage[3] > 0.5  # a fair chance before it is judged again
    vq = ResidualFactorizedVQ(4, 3, 8, 2, dead_threshold=0.05)
    assert [(r["level"], r["alive"], r["perplexity"]) for r in vq.usage_report()] == [(0, 0, 0.0), (1, 0, 0.0), (2, 0, 0.0)]
    vq.levels[0].usage.fill_(1.0)
    vq.levels[1].usage[:2] = 1.0
    report = vq.usage_report()
    assert (report[0]["alive"], report[1]["alive"], report[2]["alive"]) == (8, 2, 0)
    assert report[0]["perplexity"] == pytest.approx(8.0) and report[1]["perplexity"] == pytest.approx(2.0)


def test_the_first_training_batch_seeds_every_codebook_from_its_encodings():
    torch.manual_seed(0)
    vq = ResidualFactorizedVQ(dim=6, n_codebooks=2, codebook_size=16, codebook_dim=3, dead_threshold=0.01).train()
    z = torch.randn(4, 6, 25)
    vq(z)
    first = vq.levels[0]
    pool = F.normalize(first.in_proj(z).transpose(1, 2).reshape(-1, 3), dim=-1)
    entries = F.normalize(first.codebook.weight, dim=-1)
    assert ((entries @ pool.t()).max(dim=1).values > 1 - 1e-5).all()  # every entry taken from the batch
    assert bool(first.seeded) and all(r["alive"] == 16 for r in vq.usage_report())
    before = first.codebook.weight.detach().clone()
    vq(z)
    assert torch.equal(first.codebook.weight, before)  # once: later batches only revive dead entries


def test_dac_serves_fewer_levels_at_a_lower_bitrate():
    codec = make("dac")
    x = 0.1 * torch.randn(1, 3200)
    low = codec.truncated(2)
    assert low.n_codebooks == 2 and low.cfg.kbps == codec.cfg.kbps / 2
    assert torch.equal(low.encode(x), codec.encode(x)[:, :2])
    assert low.decode(low.encode(x)).shape == (1, 3200)
    with pytest.raises(ValueError):
        codec.truncated(5)
    assert DacConfig.demo().kbps == 4.0 and DacConfig.demo().frame_rate == 50.0


@pytest.mark.parametrize("name", ["random-dac", "random-vocos"])
def test_named_random_codecs_of_the_new_kinds(name):
    a = codec_by_name(name)
    assert a.n_params() < 12_000_000 and a.sample_rate == 16_000 and a.frame_rate == 50.0
    assert (a.n_codebooks, a.codebook_size) == (8, 1024)


# ---- every command with every kind --------------------------------------------------------------------

@pytest.fixture(scope="module")
def kind_checkpoint(tmp_path_factory):
    """An inference checkpoint per kind: tiny random AR/NAR over a tiny codec of that kind."""
    paths = {}
    for kind in KINDS[1:]:
        codec = make(kind)
        cfg = ModelConfig.tiny(codebook_size=codec.codebook_size, n_codebooks=codec.n_codebooks)
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(kind) / "m.safetensors"
        paths[kind] = checkpoint.save(path, ARModel(cfg).eval(), NARModel(cfg).eval(), codec)
    return paths


@pytest.mark.parametrize("kind", KINDS[1:])
def test_every_command_runs_with_every_kind(kind, kind_checkpoint, tmp_path):
    import soundfile as sf

    path, runner = kind_checkpoint[kind], CliRunner()
    inp, enroll = tmp_path / "in.wav", tmp_path / "enroll.wav"
    sf.write(inp, tone(1.0), 16_000)
    sf.write(enroll, tone(1.0, freq=180.0, seed=1), 16_000)
    info = runner.invoke(app, ["info", "--checkpoint", str(path)])
    assert info.exit_code == 0 and kind.split("_on_")[0] in info.output, info.output
    loaded = checkpoint.load(path)
    assert loaded.codec.config() == make(kind).config()
    runs = {"denoise": ["denoise", str(inp)], "remove-speech": ["remove-speech", str(inp)],
            "extract-speaker": ["extract-speaker", str(inp), "--enroll", str(enroll)],
            "tts": ["tts", "hello there", "--prompt", str(enroll), "--max-seconds", "1"],
            "edit": ["edit", str(inp), "--text", "the dog", "--span", "0.3:0.6"]}
    for name, args in runs.items():
        out = tmp_path / f"{name}.wav"
        r = runner.invoke(app, [*args[:2], str(out), *args[2:], "--checkpoint", str(path)])
        assert r.exit_code == 0, (name, r.output)
        y, sr = sf.read(out)
        assert sr == 16_000 and len(y) > 0 and math.isfinite(float(abs(y).max()))


def test_a_vocos_checkpoint_with_a_broken_base_is_a_one_line_error(kind_checkpoint, tmp_path):
    from .test_checkpoint import _with_codec_config

    config = json.loads(checkpoint.read_header(kind_checkpoint["vocos_on_dac"])["codec_config"])
    for bad, message in (({**config, "base": {**config["base"], "kind": "dac_44khz"}}, "has no tokenizer to reuse"),
                         ({**config, "base": {**config["base"], "latent_dim": 9}}, "weights do not match")):
        path = _with_codec_config(kind_checkpoint["vocos_on_dac"], tmp_path / "bad.safetensors", bad)
        with pytest.raises(checkpoint.CheckpointError, match=message) as err:
            checkpoint.load(path)
        assert "\n" not in str(err.value)


def test_an_lm_trained_on_the_base_tokens_exports_with_its_vocos_decoder(tmp_path):
    from speechx_cli.train import lm_train

    base, vocos = _trained_small(), make("vocos_on_small")
    cfg = ModelConfig.tiny(codebook_size=base.codebook_size, n_codebooks=base.n_codebooks)
    ar, nar = ARModel(cfg), NARModel(cfg)
    state = {"kind": checkpoint.LM_TRAINING, "version": checkpoint.TRAINING_VERSION, "step": 1, "tokens": 0,
             "config": {"stage": "tts", "data": "shards"}, "model_config": cfg.to_dict(),
             "ar": ar.state_dict(), "nar": nar.state_dict(),
             "codec_config": base.config(), "codec_fingerprint": codec_fingerprint(base)}
    lm = checkpoint.save_training(tmp_path / "lm_train.pt", state)
    model = checkpoint.load(lm_train.export(lm, vocos, tmp_path / "m.safetensors"))
    assert isinstance(model.codec, VocosCodec) and model.codec.config() == vocos.config()
    with pytest.raises(ValueError, match="tokens differ"):
        lm_train.export(lm, make("dac"), tmp_path / "x.safetensors")

    # an inference checkpoint takes a new decoder for its tokens without its LM training checkpoint
    shipped = checkpoint.save(tmp_path / "shipped.safetensors", ar, nar, base, info={"step": 7})
    decoder = checkpoint.save(tmp_path / "vocos.safetensors", ar, nar, vocos)  # a file holding the codec
    r = CliRunner().invoke(lm_train.app, ["export", str(shipped), str(tmp_path / "new.safetensors"),
                                          "--codec-checkpoint", str(decoder)])
    assert r.exit_code == 0, r.output
    new = checkpoint.load(tmp_path / "new.safetensors")
    assert isinstance(new.codec, VocosCodec) and new.info == {"step": 7}
    assert torch.equal(new.ar.head.weight, ar.head.weight)
    with pytest.raises(checkpoint.CheckpointError, match="tokens differ"):
        checkpoint.replace_codec(shipped, make("dac"), tmp_path / "y.safetensors")


def test_codec_cost_counts_parameters_bitrate_work_and_speed(codec):
    from speechx_cli.eval.codec_cost import codec_cost, count_macs

    cost = codec_cost(codec, seconds=0.5, reps=1)
    assert cost["params_m"] * 1e6 == pytest.approx(codec.n_params())
    assert cost["kbps"] == pytest.approx(codec.frame_rate * codec.n_codebooks * math.log2(codec.codebook_size) / 1000)
    assert cost["encode_gmac_per_s"] > 0 and cost["decode_gmac_per_s"] > 0
    assert 0 < cost["encode_rtf"] < 50 and 0 < cost["decode_rtf"] < 50
    conv = torch.nn.Conv1d(2, 3, 5)
    x = torch.zeros(1, 2, 100)
    assert count_macs(conv, lambda: conv(x)) == 96 * 3 * 2 * 5  # outputs x inputs per output
    lstm = torch.nn.LSTM(4, 8, num_layers=2)
    assert count_macs(lstm, lambda: lstm(torch.zeros(10, 1, 4))) == 10 * 4 * 8 * ((4 + 8) + (8 + 8))


def test_every_kind_decodes_from_its_first_levels(codec):
    """decode(levels=N) leaves levels N+1..K out: all levels = a plain decode, one level differs from it
    at the same length, and DAC's agrees with its truncated codec (a codec built with N levels)."""
    codes = codec.encode(0.1 * torch.randn(1, 1600))
    full = codec.decode(codes)
    torch.testing.assert_close(codec.decode(codes, levels=codec.n_codebooks), full)
    one = codec.decode(codes, levels=1)
    assert one.shape == full.shape and not torch.allclose(one, full)
    if isinstance(codec, DacCodec):
        torch.testing.assert_close(codec.decode(codes, levels=2), codec.truncated(2).decode(codes[:, :2]))
    for bad in (0, codec.n_codebooks + 1):
        with pytest.raises(ValueError, match="levels"):
            codec.decode(codes, levels=bad)


def test_a_content_level_is_level_one_and_the_rvq_quantizes_what_it_leaves():
    """Codes from encode equal the training pass's; level 1 is the content level's entry (the training
    pass's first_level, straight through to the encoder), levels 2..K the RVQ of the latent minus it; a
    plain config keeps its old dict (no content_dim) and its fingerprint differs from a content codec's."""
    codec = _trained_small(4)
    x = 0.1 * torch.randn(2, 1600)
    codes = codec.encode(x)
    out = codec(x)  # eval mode: no revival, the same lookups
    assert torch.equal(out.codes, codes)
    torch.testing.assert_close(out.first_level, codec.content.decode(codes[:, 0]))
    latent = codec._latent(x)
    rest = codec.quantizer.encode(latent - codec.content.decode(codes[:, 0]), 50).transpose(0, 1)
    assert torch.equal(codes[:, 1:], rest)
    torch.testing.assert_close(codec.dequantize(codes[:, :1]), codec.content.decode(codes[:, 0]))
    codec.train()
    out = codec(x)
    out.first_level.sum().backward()
    for part in (codec.content.in_proj, codec.encoder):  # level 1's vectors pass the gradient on
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    assert "content_dim" not in SmallCodecConfig.tiny().to_dict()
    assert codec_fingerprint(codec) != codec_fingerprint(_trained_small())


def test_a_codebooks_bookkeeping_is_not_in_the_fingerprint():
    """The content level's usage EMA and seeded flag change while it trains, not what its codes are: the
    fingerprint (and so the shards and models made with the codec) stays; a changed entry changes it."""
    codec = _trained_small(4)
    before = codec_fingerprint(codec)
    codec.content.usage.mul_(0.5).add_(1.0)
    codec.content.seeded.fill_(not bool(codec.content.seeded))
    assert codec_fingerprint(codec) == before
    with torch.no_grad():
        next(codec.content.parameters()).add_(0.01)
    assert codec_fingerprint(codec) != before
