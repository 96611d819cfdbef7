"""File jobs: long files stream with the same result as in memory; shards split folders; batching."""

import numpy as np
import pytest
import soundfile as sf

from speechx_cli import checkpoint, jobs
from speechx_cli import pipeline as PL
from speechx_cli.engine import DecodingOptions
from speechx_cli.prompts import Task

from .conftest import SR, tone

GREEDY = DecodingOptions(temperature=0)


@pytest.fixture(scope="module")
def sx(tiny_checkpoint):
    return checkpoint.load(tiny_checkpoint)


def opts(**kw):
    return jobs.JobOptions(GREEDY, PL.WindowOptions(seconds=1.0, overlap=0.25, batch_size=4), **kw)


def test_long_file_is_streamed_and_matches_in_memory(sx, tmp_path, monkeypatch):
    x = tone(5.5, seed=1)
    inp = tmp_path / "long.wav"
    sf.write(inp, x, SR, subtype="FLOAT")
    o = opts()
    expected = PL.run(sx, [PL.Request(Task.NS, audio=x)], o.decoding, o.window)[0]
    monkeypatch.setattr(jobs, "LONG_INPUT_SECONDS", 2.0)
    called = []
    real = jobs.run_long
    monkeypatch.setattr(jobs, "run_long", lambda *a, **k: called.append(1) or real(*a, **k))
    jobs.run_file(sx, Task.NS, inp, tmp_path / "out.wav", o)
    assert called
    y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
    assert sr == SR and len(y) == len(x)
    np.testing.assert_allclose(y, np.clip(expected, -1, 1), atol=2 / 32768)


def test_shards_partition_a_folder(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(7):
        sf.write(src / f"{i}.wav", tone(0.2), SR)
    parts = [jobs.plan_folder(src, tmp_path / "out", opts(shard=(i, 3)))[0] for i in range(3)]
    names = [s.name for part in parts for s, _ in part]
    assert sorted(names) == sorted(f"{i}.wav" for i in range(7)) and len(set(names)) == 7


def test_folder_batch_equals_one_by_one(sx, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i, dur in enumerate([0.3, 0.9, 0.5]):
        sf.write(src / f"{i}.wav", tone(dur, seed=i), SR, subtype="FLOAT")
    todo, _ = jobs.plan_folder(src, tmp_path / "batched", opts())
    summary = jobs.run_folder(sx, Task.SR, todo, opts())
    assert len(summary.written) == 3 and not summary.failed
    for s, d in todo:
        single = tmp_path / "single" / s.name
        jobs.run_file(sx, Task.SR, s, single, opts())
        assert np.array_equal(sf.read(d)[0], sf.read(single)[0])


def test_long_m4a_streams_through_pyav_in_and_out(sx, tmp_path, monkeypatch):
    """The streamed path reads an m4a block by block through FFmpeg and writes an m4a block by block."""
    from speechx_cli import audio as A

    from .test_media import make

    inp, x = make(tmp_path, ".m4a", seconds=3.0)
    monkeypatch.setattr(jobs, "LONG_INPUT_SECONDS", 1.0)
    called = []
    real = jobs.run_long
    monkeypatch.setattr(jobs, "run_long", lambda *a, **k: called.append(1) or real(*a, **k))
    jobs.run_file(sx, Task.NS, inp, tmp_path / "out.m4a", opts(bitrate_kbps=64))
    assert called
    head = A.info(tmp_path / "out.m4a")
    assert head.sample_rate == 44100 and len(A.load(tmp_path / "out.m4a", 44100)[0]) == len(x)
