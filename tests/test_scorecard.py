import json
import shutil

import pytest
from typer.testing import CliRunner

from speechx_cli.eval import scorecard as S


def _report(path, task, values: dict[str, dict[str, list[float]]]):
    """A report.json of `task`: {system: {metric: per-item values}} on items i0, i1, ..."""
    items = [{"id": f"i{k}", "system": system, "metrics": {m: vs[k] for m, vs in metrics.items()}}
             for system, metrics in values.items() for k in range(len(next(iter(metrics.values()))))]
    summary = {system: {"all": {m: S.mean_ci(vs) for m, vs in metrics.items()}} for system, metrics in values.items()}
    path.mkdir(parents=True)
    (path / "report.json").write_text(json.dumps({"task": task, "systems": list(values), "subsets": ["all"],
                                                  "summary": summary, "items": items, "resynth": "mask"}))


@pytest.fixture
def card(tmp_path):
    _report(tmp_path / "v2" / "extract-speaker", "extract-speaker",
            {"speechx": {"sim_target": [0.85, 0.8, 0.65], "sim_interferer": [0.5, 0.5, 0.5]}})
    _report(tmp_path / "peers" / "extract-speaker", "extract-speaker",
            {"passthrough": {"sim_target": [0.8, 0.8, 0.6], "sim_interferer": [0.6, 0.5, 0.6]}})
    _report(tmp_path / "v2" / "tts", "tts", {"speechx": {"wer": [0.2, 0.6, float("nan")],
                                                         "sim_prompt": [0.8, 0.7, 0.9], "sim_others": [0.6, 0.7, 0.7]}})
    _report(tmp_path / "v2" / "edit", "edit", {"speechx": {"new_word": [0.0, 1.0], "new_word_whisper": [1.0, 1.0]}})
    return tmp_path


def test_bars_compare_speechx_with_the_mixture_on_the_same_items(card):
    got = {b["bar"]: b for b in S.bars(S.load(card), "v2")}
    target = got["similarity to the target - the mixture's >= +0.05"]
    assert target["value"]["mean"] == pytest.approx(0.1 / 3) and target["value"]["n"] == 3
    assert not target["passed"]  # +0.033 < +0.05
    interferer = got["similarity to the interferer - the mixture's <= -0.05"]
    assert interferer["value"]["mean"] == pytest.approx(-0.2 / 3) and interferer["passed"]
    wer = got["WER <= 0.5"]  # the NaN item is left out
    assert wer["value"]["mean"] == pytest.approx(0.4) and wer["value"]["n"] == 2 and wer["passed"]
    margin = got["similarity to the prompt - to other speakers >= 0.10"]
    assert margin["value"]["mean"] == pytest.approx(0.4 / 3) and margin["passed"]
    assert not any(b["task"] == "denoise" for b in got.values())  # nothing reported, nothing claimed
    assert "WER <= 0.5 (Whisper)" not in got  # tts was scored by pocketsphinx alone
    assert not got["new word recognized in >= 60% of edits"]["passed"]
    assert got["new word recognized in >= 60% of edits (Whisper)"]["passed"]


def test_show_prints_every_label_and_writes_the_card(card, tmp_path):
    r = CliRunner().invoke(S.app, ["show", str(card), "--candidate", "v2", "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0, r.output
    assert "v2: speechx" in r.output and "passthrough" in r.output and "NO" in r.output
    assert "new word wh" in r.output and "WER wh" not in r.output  # only reported columns
    saved = json.loads((tmp_path / "c.json").read_text())
    assert [row["name"] for row in saved["tasks"]["extract-speaker"]] == ["passthrough", "v2: speechx"]
    bad = CliRunner().invoke(S.app, ["show", str(card), "--candidate", "v3"])
    assert bad.exit_code == 1


def test_run_skips_reported_tasks_and_asks_speechx_eval_for_the_rest(card, monkeypatch):
    calls = []
    monkeypatch.setattr("speechx_cli.eval.scorecard.run_module", lambda *a, **kw: calls.append(a))
    shutil.rmtree(card / "v2" / "edit")
    edits = card / "edit-bench"
    edits.mkdir()
    (edits / "manifest.jsonl").write_text("")
    r = CliRunner().invoke(S.app, ["run", str(card), "--label", "v2", "--bench", str(card), "--tasks",
                                   "tts,edit", "--resynth", "codec", "--task-bench", f"edit={edits}"])
    assert r.exit_code == 0, r.output
    (edit,) = calls  # tts was reported already
    assert edit[:4] == ("speechx_cli", "eval", "edit", str(edits)) and edit[edit.index("--resynth") + 1] == "codec"
    assert edit[edit.index("--out") + 1] == str(card / "v2" / "edit")
    assert edit[edit.index("--recognizer") + 1] == "pocketsphinx"
    bad = CliRunner().invoke(S.app, ["run", str(card), "--label", "v2", "--bench", str(card), "--task-bench",
                                     f"edit={card}"])
    assert bad.exit_code != 0 and "not a benchmark" in bad.output
