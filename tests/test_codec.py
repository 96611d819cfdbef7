"""Codec interface, the trainable small codec, the pretrained-EnCodec loader and the torchaudio
stand-in. Everything runs offline on tiny or random-weight models."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time

import pytest
import torch

from speechx_cli import _torchaudio_compat as compat
from speechx_cli.codec import CodecUnavailableError, SmallCodec, SmallCodecConfig, _RevivingCodebook, kmeans
from speechx_cli.codecs import KINDS, CodecConfigError, check_config, codec_by_name, codec_from_config
from speechx_cli.codecs.encodec24 import (ENCODEC_CHECKPOINT_NAME, ENCODEC_WEIGHTS_ENV, PretrainedEncodec,
                                          encodec_hub_path)

# ---- torchaudio stand-in ---------------------------------------------------------------------


@pytest.mark.parametrize("normalized", [True, False, "frame_length"])
def test_standin_spectrogram_equals_torch_stft(normalized):
    x = torch.randn(2, 1, 4000)
    n_fft, hop = 512, 128
    spec = compat.Spectrogram(n_fft=n_fft, hop_length=hop, win_length=n_fft,
                              window_fn=torch.hann_window, normalized=normalized,
                              center=False, pad_mode=None, power=None)(x)
    window = torch.hann_window(n_fft)
    ref = torch.stft(x.reshape(-1, 4000), n_fft, hop, n_fft, window, center=False,
                     normalized=normalized == "frame_length", return_complex=True)
    if normalized is True:
        ref = ref / window.pow(2).sum().sqrt()
    ref = ref.reshape(2, 1, *ref.shape[-2:])  # (B, C, freq, frames)
    assert spec.is_complex() and spec.shape == ref.shape
    torch.testing.assert_close(spec, ref)
    power = compat.Spectrogram(n_fft=n_fft, hop_length=hop, normalized=normalized,
                               center=False, power=2.0)(x)
    torch.testing.assert_close(power, ref.abs().pow(2))


def test_standin_resample_keeps_a_sine():
    orig, new, f0 = 44_100, 16_000, 440.0
    t = torch.arange(orig) / orig
    y = compat.Resample(orig, new)(torch.sin(2 * math.pi * f0 * t)[None])
    assert y.shape == (1, math.ceil(len(t) * new / orig))
    expected = torch.sin(2 * math.pi * f0 * torch.arange(y.shape[-1]) / new)
    assert (y[0, 200:-200] - expected[200:-200]).abs().max() < 1e-2
    torch.testing.assert_close(compat.resample(y, new, new), y)


def test_standin_registered_only_when_torchaudio_fails(monkeypatch):
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torchaudio"}
    monkeypatch.setattr(compat, "_state", {})
    monkeypatch.setitem(sys.modules, "torchaudio", None)  # makes `import torchaudio` fail
    try:
        assert compat.ensure_encodec_importable() is False
        import torchaudio

        assert torchaudio.__version__ == compat.STANDIN_VERSION
        assert torchaudio.transforms.Spectrogram is compat.Spectrogram
        assert torchaudio.transforms.Resample is compat.Resample
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] == "torchaudio"]:
            del sys.modules[k]
        sys.modules.update(saved)


def test_encodec_imports_in_a_fresh_interpreter():
    code = ("from speechx_cli._torchaudio_compat import ensure_encodec_importable as e; e(); "
            "import encodec, encodec.msstftd, encodec.utils; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# ---- small codec -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_codec() -> SmallCodec:
    """A tiny codec whose codebooks went through k-means, so its codes are not all zero."""
    torch.manual_seed(0)
    codec = SmallCodec(SmallCodecConfig.tiny()).train()
    with torch.no_grad():
        codec(0.1 * torch.randn(4, codec.sample_rate))
    return codec.eval()


@pytest.mark.parametrize("n", [1, 319, 320, 321, 4000])
def test_small_codec_length_round_trip(tiny_codec, n):
    hop = tiny_codec.hop_length
    codes = tiny_codec.encode(0.1 * torch.randn(2, n))
    assert codes.shape == (2, tiny_codec.n_codebooks, math.ceil(n / hop))
    assert codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < tiny_codec.codebook_size
    wav = tiny_codec.decode(codes)
    assert wav.shape == (2, codes.shape[-1] * hop)
    assert tiny_codec.frames_for(n) == codes.shape[-1]
    assert tiny_codec.samples_for(codes.shape[-1]) == wav.shape[-1]


def test_small_codec_facts_and_single_item(tiny_codec):
    cfg = SmallCodecConfig.tiny()
    assert tiny_codec.hop_length == cfg.hop_length == 320
    assert tiny_codec.frame_rate == cfg.sample_rate / cfg.hop_length == 50.0
    codes = tiny_codec.encode(0.1 * torch.randn(1000))
    assert codes.shape == (cfg.n_codebooks, 4)
    assert tiny_codec.decode(codes).shape == (4 * 320,)
    codes[0, 0] = 1  # outputs are ordinary tensors, editable in place
    with pytest.raises(ValueError):
        tiny_codec.decode(torch.full((cfg.n_codebooks, 3), cfg.codebook_size))
    with pytest.raises(ValueError):
        tiny_codec.decode(torch.zeros(1, cfg.n_codebooks + 1, 3, dtype=torch.long))


def test_small_codec_batch_equals_singles(tiny_codec):
    torch.manual_seed(1)
    x = 0.1 * torch.randn(2, 3200)
    codes = tiny_codec.encode(x)
    assert len(torch.unique(codes[:, 0])) > 1  # k-means gave a real codebook
    singles = torch.cat([tiny_codec.encode(x[i:i + 1]) for i in range(2)])
    assert torch.equal(codes, singles)
    wav = tiny_codec.decode(codes)
    wav_singles = torch.cat([tiny_codec.decode(codes[i:i + 1]) for i in range(2)])
    torch.testing.assert_close(wav, wav_singles, rtol=1e-4, atol=1e-5)


def test_small_codec_config_round_trip(tiny_codec):
    config = json.loads(json.dumps(tiny_codec.config()))
    assert config["kind"] == "small_codec"
    state = {k: v.clone() for k, v in tiny_codec.state_dict().items()}
    rebuilt = codec_from_config(config, state)
    assert isinstance(rebuilt, SmallCodec) and not rebuilt.training
    assert rebuilt.cfg == SmallCodecConfig.tiny()
    x = 0.1 * torch.randn(1, 4800)
    assert torch.equal(rebuilt.encode(x), tiny_codec.encode(x))
    codes = tiny_codec.encode(x)
    torch.testing.assert_close(rebuilt.decode(codes), tiny_codec.decode(codes))
    with pytest.raises(ValueError):
        codec_from_config({"kind": "nope"})


def test_every_kind_is_built_by_name_from_its_config(tiny_codec):
    assert {kind: cls.kind for kind, cls in KINDS.items()} == {
        "encodec_24khz": "encodec_24khz", "small_codec": "small_codec", "dac": "dac", "vocos": "vocos"}
    assert check_config(tiny_codec.config()) == "small_codec"
    with pytest.raises(CodecConfigError, match="weights do not match"):
        codec_from_config({**tiny_codec.config(), "n_filters": 8}, tiny_codec.state_dict())
    with pytest.raises(CodecConfigError, match="weights are missing"):
        codec_from_config(tiny_codec.config())


def test_named_codecs_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = codec_by_name("random-tiny"), codec_by_name("random-tiny")
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert isinstance(a, SmallCodec) and not a.training and a.cfg == SmallCodecConfig.tiny()
    with pytest.raises(CodecConfigError, match="unknown codec name"):
        codec_by_name("random-huge")


def test_small_codec_training_forward():
    torch.manual_seed(0)
    codec = SmallCodec(SmallCodecConfig.tiny()).train()
    x = 0.1 * torch.randn(2, 3200)
    codec.quantizer_enabled = False
    out = codec(x)
    assert out.recon.shape == x.shape and out.codes is None and out.losses["commitment"].item() == 0.0
    codec.quantizer_enabled = True
    out = codec(x)
    assert out.codes.shape == (2, 4, 10) and out.losses["commitment"].dim() == 0
    (out.recon.abs().mean() + out.losses["commitment"]).backward()
    assert codec.encoder.model[0].conv.conv.weight_v.grad is not None
    biases = [m.bias for m in SmallCodec(SmallCodecConfig.tiny()).modules()
              if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    assert biases and all(torch.all(b == 0) for b in biases)


def test_dead_codes_stay_revived():
    from encodec.quantization.core_vq import EuclideanCodebook

    torch.manual_seed(0)
    book = EuclideanCodebook(dim=4, codebook_size=8, kmeans_init=False,
                             threshold_ema_dead_code=2)
    book.__class__ = _RevivingCodebook
    book.train()
    data = 100.0 + torch.randn(64, 4)  # far from every initial entry: all 8 are dead
    book(data)
    # encodec 0.1.1's EMA step would overwrite the revived entries with stale statistics
    assert torch.all(book.embed > 90), book.embed


def test_fast_kmeans_equals_encodec_kmeans():
    from encodec.quantization.core_vq import kmeans as encodec_kmeans

    x = torch.randn(300, 16)
    torch.manual_seed(3)
    ref_means, ref_bins = encodec_kmeans(x, 32, 5)
    torch.manual_seed(3)
    means, bins = kmeans(x, 32, 5)
    torch.testing.assert_close(means, ref_means)
    assert torch.equal(bins, ref_bins)


# ---- pretrained EnCodec loader -----------------------------------------------------------------


@pytest.fixture(scope="module")
def random_encodec_weights(tmp_path_factory):
    from encodec import EncodecModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("encodec") / ENCODEC_CHECKPOINT_NAME
    with pytest.warns(FutureWarning):  # encodec uses the deprecated weight_norm
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    torch.save(model.state_dict(), path)
    return path


def test_pretrained_encodec_from_env_file(random_encodec_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv(ENCODEC_WEIGHTS_ENV, str(random_encodec_weights))
    codec = PretrainedEncodec()
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate) == (24_000, 320, 75.0)
    assert (codec.n_codebooks, codec.codebook_size) == (8, 1024)
    assert codec.config() == {"kind": "encodec_24khz", "bandwidth": 6.0}
    assert not codec.stores_weights
    x = 0.1 * torch.randn(1, 2500)
    codes = codec.encode(x)
    assert codes.shape == (1, 8, 8)
    assert codec.decode(codes).shape == (1, 8 * 320)


def test_pretrained_encodec_from_hub_cache(random_encodec_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ENCODEC_WEIGHTS_ENV, raising=False)
    hub = encodec_hub_path()
    assert hub.parent.parent.parent == tmp_path / "torch"
    hub.parent.mkdir(parents=True)
    hub.symlink_to(random_encodec_weights)
    codec = codec_from_config({"kind": "encodec_24khz", "bandwidth": 6.0})
    assert isinstance(codec, PretrainedEncodec)
    assert codec.encode(torch.zeros(1, 320)).shape == (1, 8, 1)


def test_pretrained_encodec_missing_is_a_clear_fast_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(ENCODEC_WEIGHTS_ENV, raising=False)

    def blocked(*args, **kwargs):
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket.socket, "connect", blocked)
    start = time.monotonic()
    with pytest.raises(CodecUnavailableError) as err:
        PretrainedEncodec()
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "\n" not in message
    assert ENCODEC_CHECKPOINT_NAME in message and ENCODEC_WEIGHTS_ENV in message
    assert str(encodec_hub_path()) in message

    with pytest.raises(CodecUnavailableError, match="does not exist"):
        PretrainedEncodec(tmp_path / "nowhere.th")
    monkeypatch.setenv(ENCODEC_WEIGHTS_ENV, str(tmp_path / "missing.th"))
    with pytest.raises(CodecUnavailableError, match="missing.th"):
        PretrainedEncodec(allow_download=False)
