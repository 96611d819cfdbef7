import json

import pytest
import torch
from safetensors.torch import save_file

from speechx_cli import checkpoint
from speechx_cli.checkpoint import CheckpointError

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
