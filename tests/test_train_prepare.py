"""speechx train prepare / noise: each layout read as its users know it, bad files reported and
skipped, nothing good lost, resumable, reproducible, long recordings cut; the simulator's use of
untranscribed audio. The corpora (tests/layouts.py) are spoken by the project's own voices."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from speechx_cli.train.prepare import PrepareOptions, layouts, prepare
from speechx_cli.train.prepare import segment as S
from speechx_cli.train.prepare.noise import import_noise
from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator
from speechx_cli.prompts import Task

from . import layouts as L


@pytest.fixture(scope="module")
def voices():
    return L.voices()


@pytest.fixture(scope="module")
def prepared(voices, tmp_path_factory):
    """Every layout built and prepared once: name -> (src, out, expected, summary)."""
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, build in L.LAYOUTS.items():
        src = root / name / "src"
        expected = build(src, voices)
        summary = prepare(src, root / name / "out", PrepareOptions(chunk=5))
        out[name] = (src, root / name / "out", expected, summary)
    return out


def _kept(records, uid):
    return [r for r in records if r["id"] == uid or r["id"].startswith(uid + "-s")]


@pytest.mark.parametrize("name", list(L.LAYOUTS))
def test_each_layout_keeps_every_good_recording_and_reports_every_bad_one(prepared, name):
    src, out, expected, summary = prepared[name]
    assert summary["layout"] == name == layouts.detect(src)
    records, report = L.manifest(out), L.report(out)
    for uid in expected.kept:
        mine = _kept(records, uid)
        assert mine, f"{uid} lost"
        assert all(bool(r["text"]) == (uid not in expected.untranscribed) for r in mine), uid
    assert {p["id"] for p in report} == expected.problems
    skipped = [p for p in report if p["action"] == "skipped"]
    assert not {p["id"] for p in skipped if not p["problem"].startswith("duplicate")} & {r["id"] for r in records}
    assert summary["problems"] == len(report) and summary["skipped"] == len(skipped)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids))
    for r in records:  # every record is what the simulator reads
        assert set(r) >= {"id", "speaker", "split", "text", "path", "duration", "words", "edit"}
        assert r["speaker"].startswith(f"{name}:") and r["split"] in ("train", "dev")
        info = sf.info(str(out / r["path"]))
        assert abs(info.duration - r["duration"]) < 0.05
        if r["text"] and r["words"]:
            assert r["words"][-1]["end"] <= r["duration"] + 0.05 and r["timing"] in ("textgrid", "aligner")
    splits = {}
    for r in records:
        splits.setdefault(r["split"], set()).add(r["speaker"])
    assert splits.get("dev") and splits.get("train")
    if name != "ljspeech":  # one speaker: LJSpeech holds out utterances instead
        assert not splits["dev"] & splits["train"]


def test_layouts_own_splits_and_transcripts(prepared):
    records = L.manifest(prepared["libritts"][1])
    assert {r["speaker"] for r in records if r["split"] == "dev"} == {"libritts:103"}  # its dev-clean folder
    assert {r["speaker"] for r in L.manifest(prepared["commonvoice"][1]) if r["split"] == "dev"} == \
        {"commonvoice:client02"}  # the speakers of dev.tsv
    libri = L.manifest(prepared["librispeech"][1])
    assert next(r for r in libri if r["id"] == "300-7-0000")["text"] == "THE CAT SAT ON THE WARM MAT"
    vctk = L.manifest(prepared["vctk"][1])
    assert len(vctk) == 12 and all("mic2" not in r["path"] for r in vctk)  # one microphone of each sentence


def test_textgrids_give_the_word_timings_and_the_aligner_the_rest(prepared, voices):
    records = {r["id"]: r for r in L.manifest(prepared["libritts"][1])}
    gridded = records["100_200_000000_000000"]
    assert gridded["timing"] == "textgrid" and gridded["align_score"] is None
    truth = next(u for u in voices if (u.speaker, u.index) == (0, 0)).words
    assert [w["word"] for w in gridded["words"]] == [w["word"] for w in truth]
    assert np.allclose([w["start"] for w in gridded["words"]], [w["start"] for w in truth], atol=2e-3)
    aligned = records["100_200_000001_000000"]
    assert aligned["timing"] == "aligner" and aligned["align_score"] < 0
    truth = next(u for u in voices if (u.speaker, u.index) == (0, 1)).words
    starts = np.array([w["start"] for w in aligned["words"]]), np.array([w["start"] for w in truth])
    assert len(starts[0]) == len(starts[1]) and np.median(np.abs(starts[0] - starts[1])) < 0.08


def test_a_long_recording_is_cut_at_its_pauses(prepared):
    out = prepared["folder"][1]
    pieces = [r for r in L.manifest(out) if r["id"].startswith("speaker0/chapter-s")]
    assert len(pieces) >= 2 and all(3.0 - 0.05 <= r["duration"] <= 20.0 + 0.05 for r in pieces)
    assert [r["offset"] for r in pieces] == sorted(r["offset"] for r in pieces)
    chapter, sr = sf.read(str(prepared["folder"][0] / "speaker0" / "chapter.flac"), dtype="float32")
    for r in pieces:  # each piece is the recording at its offset; the cuts fall in pauses
        x, _ = sf.read(str(out / r["path"]), dtype="float32")
        a = int(round(r["offset"] * sr))
        assert np.allclose(x, chapter[a:a + len(x)], atol=1e-4)
        assert r["offset"] == 0 or np.abs(x[:int(0.1 * sr)]).max() < 0.01


def test_choose_cuts_keeps_every_segment_between_the_bounds():
    rng = np.random.default_rng(0)
    for _ in range(50):
        duration = float(rng.uniform(30, 300))
        pauses = [(float(t), float(rng.uniform(0.05, 1))) for t in rng.uniform(0, duration, int(rng.integers(0, 60)))]
        segments = S.choose_cuts(pauses, duration)
        assert segments[0][0] == 0 and segments[-1][1] == duration
        assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
        assert all(S.MIN_SECONDS - 1e-9 <= b - a <= S.MAX_SECONDS + 1e-9 for a, b in segments)
    assert S.choose_cuts([(10.0, 0.2), (15.0, 0.9), (18.0, 0.5)], 35.0)[0] == (0.0, 15.0)  # the longest pause


def test_rerun_resumes_and_gives_the_same_manifest(prepared, tmp_path):
    src, out, _, _ = prepared["folder"]
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "parts" / "00001.jsonl").unlink()  # as if killed before the second chunk was done
    done = []
    prepare(src, again, PrepareOptions(chunk=5), on_chunk=done.append)
    assert sum(not d.get("skipped") for d in done) == 1 and len(done) >= 3
    assert (again / "manifest.jsonl").read_text() == (out / "manifest.jsonl").read_text()
    two = tmp_path / "two-workers"
    prepare(src, two, PrepareOptions(chunk=3), workers=2)  # other chunks, two processes: same manifest
    assert [{k: v for k, v in r.items() if k != "path"} for r in L.manifest(two)] == \
        [{k: v for k, v in r.items() if k != "path"} for r in L.manifest(out)]
    with pytest.raises(FileExistsError):
        prepare(src, again, PrepareOptions(dev_fraction=0.5))


def test_noise_sources_add_up_and_bad_files_are_skipped(tmp_path):
    src, rooms = tmp_path / "noises", tmp_path / "rirs"
    rng = np.random.default_rng(0)
    L._write(src / "street" / "long.flac", (0.1 * rng.standard_normal(16000 * 70)).astype(np.float32), format="FLAC")
    L._write(src / "dev" / "hum.wav", (0.1 * np.sin(np.arange(16000) * 0.3)).astype(np.float32))
    (src / "street" / "broken.wav").write_bytes(b"RIFF....WAVEfmt ")
    decay = np.exp(-np.arange(8000) / 800) * rng.standard_normal(8000)
    L._write(rooms / "hall.wav", np.concatenate([np.zeros(100), decay]).astype(np.float32))
    out = tmp_path / "corpus"
    noise = import_noise(src, out)
    assert noise["noises"] == 4 and [p["id"] for p in noise["problems"]] == ["street/broken"]  # 70 s: 3 pieces
    room = import_noise(rooms, out, kind="room")
    assert room["rooms"] == 1
    bank = [json.loads(line) for line in (out / "noise.jsonl").read_text().splitlines()]
    assert len(bank) == 5 and {r["kind"] for r in bank} == {"file", "room"}
    assert next(r for r in bank if r["id"].startswith("noises-dev"))["split"] == "dev"
    assert all(r["duration"] <= 30.0 for r in bank)
    import_noise(src, out)  # a rerun replaces its own rows
    assert len((out / "noise.jsonl").read_text().splitlines()) == 5


def test_untranscribed_audio_serves_only_the_text_optional_tasks(prepared):
    corpus = Corpus.load(prepared["folder"][1])
    sim = Simulator(corpus, SimulationOptions(text_probability=1.0))
    untranscribed = {u.id for u in corpus.utterances if not u.text}
    assert untranscribed and corpus.transcribed
    for i in range(40):
        assert sim.example(i, 0, Task.TTS).utterance_id not in untranscribed
    ns = [sim.example(i, 0, Task.TSE) for i in range(40)]
    wordless = [e for e in ns if e.utterance_id in untranscribed]
    assert wordless and all(e.text is None for e in wordless)
    assert all(e.text for e in ns if e.utterance_id not in untranscribed)
    assert all(len(e.target) <= 10.0 * corpus.sample_rate + 1 for e in ns)  # long pieces cropped anyway
