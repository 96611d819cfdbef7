import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

from speechx_cli import checkpoint
from speechx_cli.checkpoint import CheckpointError
from speechx_cli.cli import app

from .conftest import tiny_parts


def test_round_trip_same_weights_and_codes(tmp_path):
    ar, nar, codec = tiny_parts()
    path = checkpoint.save(tmp_path / "m.safetensors", ar, nar, codec, info={"steps": 3})
    sx = checkpoint.load(path)
    assert sx.config == ar.cfg and sx.info == {"steps": 3}
    for a, b in ((ar, sx.ar), (nar, sx.nar), (codec, sx.codec)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    wav = torch.randn(1, 3200) * 0.1
    assert torch.equal(codec.encode(wav), sx.codec.encode(wav))
    assert not list(tmp_path.glob("*.tmp"))


def test_header_holds_everything(tmp_path):
    ar, nar, codec = tiny_parts()
    meta = checkpoint.read_header(checkpoint.save(tmp_path / "m.safetensors", ar, nar, codec))
    assert meta["format"] == "speechx-inference" and meta["format_version"] == "1"
    assert json.loads(meta["codec_config"])["kind"] == "small_codec"
    assert json.loads(meta["special_tokens"])[3] == "<ns>"
    assert json.loads(meta["phoneme_table"])[0] == "<pad>"


def test_truncated_file_refused(tmp_path):
    ar, nar, codec = tiny_parts()
    path = checkpoint.save(tmp_path / "m.safetensors", ar, nar, codec)
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.safetensors"):
        checkpoint.load(bad)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x00" * 64])
def test_garbage_refused(tmp_path, content):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError):
        checkpoint.load(bad)


def test_foreign_safetensors_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="not a speechx inference checkpoint"):
        checkpoint.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint.load(tmp_path / "nope.safetensors")


def test_half_precision_checkpoint_is_smaller_and_loads_as_float32(tmp_path):
    ar, nar, codec = tiny_parts()
    full = checkpoint.save(tmp_path / "f.safetensors", ar, nar, codec)
    half = checkpoint.save(tmp_path / "h.safetensors", ar, nar, codec, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    sx = checkpoint.load(half)
    w = sx.ar.head.weight
    assert w.dtype == torch.float32
    torch.testing.assert_close(w, ar.head.weight, atol=1e-3, rtol=1e-3)


def test_default_path_order(tmp_path, monkeypatch):
    """SPEECHX_CHECKPOINT, then a source checkout's checkpoints/, then an installed copy."""
    monkeypatch.delenv(checkpoint.ENV_VAR, raising=False)
    repo, prefix = tmp_path / "repo", tmp_path / "prefix"
    monkeypatch.setattr(checkpoint, "REPO_CHECKPOINTS", repo)
    monkeypatch.setattr(checkpoint.sys, "prefix", str(prefix))
    monkeypatch.setattr(checkpoint.site, "USER_BASE", None)
    assert checkpoint.default_path() is None
    installed = prefix / "share" / "speechx" / checkpoint.DEFAULT_NAME
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"x")
    assert checkpoint.default_path() == installed
    (repo / checkpoint.DEFAULT_NAME).parent.mkdir()
    (repo / checkpoint.DEFAULT_NAME).write_bytes(b"x")
    assert checkpoint.default_path() == repo / checkpoint.DEFAULT_NAME
    monkeypatch.setenv(checkpoint.ENV_VAR, str(tmp_path / "mine.safetensors"))
    assert checkpoint.default_path() == tmp_path / "mine.safetensors"


def test_shipped_checkpoint_is_found(monkeypatch):
    monkeypatch.delenv(checkpoint.ENV_VAR, raising=False)
    path = checkpoint.default_path()
    assert path is not None and path.name == checkpoint.DEFAULT_NAME and path.exists()


# ---- codec kinds ---------------------------------------------------------------------------------

def _with_codec_config(src: Path, dst: Path, config) -> Path:
    """A copy of checkpoint `src` whose header holds another codec config (a dict, or raw text)."""
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["codec_config"] = config if isinstance(config, str) else json.dumps(config)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_info_names_the_codec_kind(tiny_checkpoint):
    r = CliRunner().invoke(app, ["info", "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    assert any(line.split()[:4] == ["codec", "kind", "│", "small_codec"] for line in r.output.splitlines())


@pytest.mark.parametrize("config, message", [
    ({"kind": "dac_44khz", "n_codebooks": 9}, "unknown codec kind 'dac_44khz'"),
    ({"n_codebooks": 4}, "unknown codec kind None"),
    ({"kind": "small_codec", "n_codebooks": -4}, "malformed small_codec codec config"),
    ({"kind": "small_codec", "ratios": "eight"}, "malformed small_codec codec config"),
    ({"kind": "small_codec", "flux": 1}, "malformed small_codec codec config"),
    ({"kind": "encodec_24khz", "bandwidth": 12.0}, "malformed encodec_24khz codec config"),
    ("{not json", "malformed codec config"),
    ([1, 2], "malformed codec config"),
])
def test_unknown_or_malformed_codec_is_a_one_line_error(tiny_checkpoint, tmp_path, config, message):
    bad = _with_codec_config(tiny_checkpoint, tmp_path / "bad.safetensors", config)
    for read in (checkpoint.read_header, checkpoint.load, checkpoint.load_codec):
        with pytest.raises(CheckpointError) as err:
            read(bad)
        assert message in str(err.value) and str(bad) in str(err.value) and "\n" not in str(err.value)
    r = CliRunner().invoke(app, ["info", "--checkpoint", str(bad)])
    assert r.exit_code == 2 and r.output.count("\n") == 1 and message in r.output, r.output


def test_codec_weights_that_do_not_fit_its_config_are_a_one_line_error(tiny_checkpoint, tmp_path):
    wider = {**json.loads(checkpoint.read_header(tiny_checkpoint)["codec_config"]), "n_filters": 8}
    bad = _with_codec_config(tiny_checkpoint, tmp_path / "wider.safetensors", wider)
    assert checkpoint.read_header(bad)  # a well-formed config: only its weights disagree
    with pytest.raises(CheckpointError, match="small_codec codec weights do not match its config") as err:
        checkpoint.load(bad)
    assert "\n" not in str(err.value)


def test_codec_training_checkpoint_of_an_unknown_kind_is_refused(tmp_path):
    state = {"kind": checkpoint.CODEC_TRAINING, "version": checkpoint.TRAINING_VERSION, "step": 1,
             "codec_config": {"kind": "snac"}, "model": {}}
    path = checkpoint.save_training(tmp_path / "codec_train.pt", state)
    with pytest.raises(CheckpointError, match="unknown codec kind 'snac'"):
        checkpoint.load_codec(path)
    lm = checkpoint.save_training(tmp_path / "lm_train.pt", {**state, "kind": checkpoint.LM_TRAINING})
    with pytest.raises(CheckpointError, match="is not a codec training checkpoint"):
        checkpoint.load_codec(lm)
