"""`speechx train` end to end: each layout (with its broken files) goes prepare -> noise -> tokenize ->
lm -> export, and speechx tts and denoise run with the exported checkpoint; 2 processes under torchrun
give the shards and the training result of 1; status names each stage and what comes next; bad input
is one line. Tiny everything: the random-tiny codec, the tiny model, a few steps."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from speechx_cli.cli import app
from speechx_cli.train.status import find_stages
from speechx_cli.train.throughput import run_bench

from . import layouts as L

runner = CliRunner()
LM = ["--preset", "tiny", "--max-steps", "2", "--batch-size", "4", "--warmup", "1", "--eval-every", "100",
      "--ckpt-every", "100", "--device", "cpu", "--precision", "fp32"]


def ok(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, (args, r.output, r.exception)
    return r.output


def one_line_error(r):
    text = r.output.strip()
    assert r.exit_code == 2 and text.startswith("error:") and len(text.splitlines()) == 1, text
    return text


@pytest.fixture(scope="module")
def voices():
    return L.voices()


@pytest.fixture(scope="module")
def noises(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noises")
    rng = np.random.default_rng(1)
    for k in range(3):
        L._write(folder / f"n{k}.wav", (0.05 * rng.standard_normal(3 * 16000)).astype(np.float32))
    return folder


def _first_audio(records, out):
    return out / next(r for r in records if r["text"] and r["split"] == "train" and "offset" not in r)["path"]


@pytest.mark.parametrize("name", list(L.LAYOUTS))
def test_each_layout_from_prepare_to_tts_and_denoise(name, voices, noises, tmp_path):
    src, corpus, shards, run, model = (tmp_path / d for d in ("src", "corpus", "shards", "run", "model.safetensors"))
    expected = L.LAYOUTS[name](src, voices)
    printed = ok("train", "prepare", src, corpus)
    assert f"{name} corpus" in printed and "report.jsonl" in printed
    assert {p["id"] for p in L.report(corpus)} == expected.problems  # the bad files, by name
    assert (corpus / "codec-train.txt").read_text().strip()
    ok("train", "noise", noises, corpus)
    ok("train", "tokenize", corpus, shards, "--codec", "random-tiny", "--variants", "2", "--examples-per-shard",
       "16", "--device", "cpu")
    index = json.loads((shards / "index.json").read_text())
    tasks = {"tts", "ns", "sr"} | ({"tse"} if name != "ljspeech" else set())  # tse: two speakers or more
    assert index["examples"] > 0 and tasks <= set(index["task_counts"])
    ok("train", "lm", "--data", shards, "--out", run, "--stage", "all", *LM)
    ok("train", "export", run / "lm_train.pt", model, "--codec-checkpoint", "random-tiny")
    voice = _first_audio(L.manifest(corpus), corpus)
    ok("tts", "Good morning.", tmp_path / "tts.wav", "--prompt", voice, "--checkpoint", model)
    ok("denoise", voice, tmp_path / "clean.wav", "--checkpoint", model)
    assert (tmp_path / "tts.wav").stat().st_size > 1000 and (tmp_path / "clean.wav").stat().st_size > 1000


def _torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "speechx_cli",
           *map(str, args)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_two_processes_make_the_shards_and_the_model_of_one(voices, noises, tmp_path):
    corpus = tmp_path / "corpus"
    L.libritts(tmp_path / "src", voices)
    ok("train", "prepare", tmp_path / "src", corpus)
    ok("train", "noise", noises, corpus)
    tok = ["--codec", "random-tiny", "--variants", "2", "--examples-per-shard", "5", "--device", "cpu"]
    ok("train", "tokenize", corpus, tmp_path / "one", *tok)
    _torchrun("train", "tokenize", corpus, tmp_path / "two", *tok)
    one, two = tmp_path / "one", tmp_path / "two"
    names = sorted(p.name for p in one.glob("shard-*.safetensors"))
    assert len(names) >= 3 and names == sorted(p.name for p in two.glob("shard-*.safetensors"))
    for name in names:  # the same tensors and statistics (safetensors may order header keys differently)
        a, b = load_file(one / name), load_file(two / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert safe_open(str(one / name), "pt").metadata() == safe_open(str(two / name), "pt").metadata()
    assert json.loads((one / "index.json").read_text()) == json.loads((two / "index.json").read_text())
    assert not list(two.glob(".rank-*"))

    # one batch of every tts example per update: the same global batches whatever the world size (a
    # remainder batch of one example would be dropped by 2 ranks and trained on by 1)
    ok("train", "lm", "--data", one, "--out", tmp_path / "lm1", "--stage", "tts", *LM, "--batch-size", "64")
    _torchrun("train", "lm", "--data", two, "--out", tmp_path / "lm2", "--stage", "tts", *LM, "--batch-size", "64")
    a, b = (torch.load(tmp_path / d / "lm_train.pt", weights_only=True) for d in ("lm1", "lm2"))
    assert a["step"] == b["step"] == 2 and b["world_size"] == 2
    for part in ("ar", "nar"):
        for k in a[part]:
            assert torch.allclose(a[part][k], b[part][k], rtol=0, atol=2e-5), (part, k)

    stages = {s.path.name: s for s in find_stages(tmp_path)}
    assert stages["corpus"].kind == "corpus" and "train tokenize corpus" in stages["corpus"].next.replace(str(tmp_path) + "/", "")
    assert stages["one"].kind == "shards" and stages["one"].next.startswith("speechx train lm --data")
    assert stages["lm2"].state.startswith("step 2 of 2 (stage tts)") and "--stage all --init" in stages["lm2"].next
    assert "lm2" in ok("train", "status", tmp_path)


def test_bad_input_is_one_line(tmp_path, voices, monkeypatch):
    src, out = tmp_path / "src", tmp_path / "out"
    one_line_error(runner.invoke(app, ["train", "prepare", str(tmp_path / "nowhere"), str(out)]))
    L.ljspeech(src, voices)
    assert "VCTK" in one_line_error(runner.invoke(app, ["train", "prepare", str(src), str(out), "--format", "vctk"]))
    ok("train", "prepare", src, out)
    assert "another source" in one_line_error(runner.invoke(app, ["train", "prepare", str(src), str(out),
                                                                  "--dev-fraction", "0.3"]))
    one_line_error(runner.invoke(app, ["train", "tokenize", str(out), str(tmp_path / "shards"),
                                       "--codec", str(tmp_path / "no-codec.pt")]))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "torchrun" in one_line_error(runner.invoke(app, ["train", "prepare", str(src), str(out)]))


def test_codec_command_is_the_codec_trainer_on_prepared_lists(voices, tmp_path):
    L.folder(tmp_path / "src", voices[:6])
    ok("train", "prepare", tmp_path / "src", tmp_path / "corpus")
    ok("train", "codec", "--data", tmp_path / "corpus" / "codec-train.txt", "--dev", tmp_path / "corpus" / "codec-dev.txt",
       "--out", tmp_path / "codec", "--preset", "tiny", "--steps", "2", "--eval-every", "100")
    assert (tmp_path / "codec" / "codec_train.pt").is_file()


def test_bench_reports_throughput_and_peak_memory(tmp_path):
    rows = run_bench([4], "random-tiny", tmp_path / "bench", log=lambda msg: None)
    assert [r["step"] for r in rows] == ["prepare", "tokenize"]
    for r in rows:
        assert r["audio_hours"] > 0 and r["cpu_seconds"] > 0 and r["audio_hours_per_cpu_hour"] > 0
        assert 50 < r["peak_mb"] < 4000
