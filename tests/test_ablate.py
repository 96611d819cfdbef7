"""The alignment-aid comparison driver (train/ablate.py): each arm's flags, what a rerun skips, the table.
The child processes (training, export, `speechx eval tts`) are stood in for by a recorder that writes
what each would leave behind."""

import json
import os
from pathlib import Path

import pytest
from rich.console import Console

from speechx_cli import checkpoint
from speechx_cli.train import ablate
from speechx_cli.train.ablate import Ablation


def _settings(tmp_path: Path, **kw) -> Ablation:
    return Ablation(tmp_path / "out", tmp_path / "shards", tmp_path / "dev", tmp_path / "bench", "codec.pt",
                    **{"steps": 200, **kw})


def test_each_arm_differs_from_plain_by_its_aid_only():
    a = _settings(Path("/x"), ctc_weight=0.25, curriculum_fraction=0.3)
    assert a.aid_flags("plain") == []
    assert a.aid_flags("ctc") == ["--aux-ctc-weight", "0.25"]
    assert a.aid_flags("curriculum") == ["--curriculum-steps", "60"]
    assert a.aid_flags("ctc+curriculum") == ["--aux-ctc-weight", "0.25", "--curriculum-steps", "60"]
    with pytest.raises(ValueError, match="unknown arm"):
        _settings(Path("/x"), arms=("plain", "dropout"))


class _Children:
    """Records each child's command and leaves its outputs: a checkpoint at the asked step, a model,
    a report whose WER is the arm's entry in `wer`."""

    def __init__(self, wer: dict[str, float]):
        self.calls: list[tuple[str, ...]] = []
        self.wer = wer

    def __call__(self, module: str, *args: str, threads: int, processes: int = 1) -> None:
        self.calls.append((module, *args))
        flag = lambda name: args[args.index(name) + 1]  # noqa: E731
        if args[0] == "train":
            run = Path(flag("--out"))
            run.mkdir(parents=True, exist_ok=True)
            step = int(flag("--max-steps"))
            checkpoint.save_training(run / "lm_train.pt", {"kind": checkpoint.LM_TRAINING,
                                                            "version": checkpoint.TRAINING_VERSION, "step": step})
            lines = [{"step": step, "tokens": 1000, "ctc": 2.0, "dev": {"tts": {"ar": 3.1, "nar": 4.2}}}]
            (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        elif args[0] == "export":
            Path(args[2]).write_bytes(b"model")
        else:  # speechx eval tts
            out = Path(flag("--out"))
            out.mkdir(parents=True, exist_ok=True)
            wer = self.wer[out.parent.name]
            cell = {"mean": wer, "ci95_low": wer - 0.1, "ci95_high": wer + 0.1, "n": 2}
            items = [{"id": f"tts-{k}", "metrics": {"wer": wer + d}} for k, d in enumerate((-0.1, 0.1))]
            items.append({"id": "tts-espeak", "metrics": {}})  # no WER on an espeak voice
            (out / "report.json").write_text(json.dumps({"subsets": ["flite", "all"], "items": items,
                                                         "summary": {"speechx": {"all": {"wer": cell}}}}))


def test_a_rerun_skips_finished_arms_and_the_table_names_the_best(tmp_path, monkeypatch):
    children = _Children({"plain": 0.9, "ctc": 0.6, "curriculum": 0.8})
    monkeypatch.setattr(ablate, "run_module", children)
    a = _settings(tmp_path)
    rows = ablate.run_all(a)
    assert [c[1] for c in children.calls] == ["train", "export", "eval"] * 3
    trains = [c for c in children.calls if c[1] == "train"]
    assert "--aux-ctc-weight" not in trains[0] and "--aux-ctc-weight" in trains[1]
    assert all("--resume" not in c and c[c.index("--seed") + 1] == "0" for c in trains)  # same start, same batches
    assert [r["arm"] for r in rows] == ["plain", "ctc", "curriculum"] and ablate.best_arm(rows) == "ctc"
    assert rows[1]["wer"]["mean"] == 0.6 and rows[1]["dev_ar"] == 3.1 and rows[1]["steps"] == 200

    children.calls.clear()
    ablate.run_all(a)
    assert children.calls == []  # everything was done

    (tmp_path / "out/curriculum" / ablate.REPORT).unlink()  # killed while measuring
    for f in a.out.rglob("*"):  # what is there is older than what comes next (whatever the clock's grain)
        os.utime(f, (f.stat().st_mtime - 10,) * 2)
    ablate.run_all(_settings(tmp_path, steps=300, arms=("plain",)))  # a longer plain run resumes
    ablate.run_all(a)
    assert [c[1] for c in children.calls] == ["train", "export", "eval", "eval"]
    assert "--resume" in children.calls[0] and "300" in children.calls[0]

    console = Console(record=True, width=200)
    console.print(ablate.table(ablate.summarize(a.out)))
    text = console.export_text()
    assert "* ctc" in text and "0.600 ±0.100 (2)" in text and "* plain" not in text
    assert "-0.300 ±0.000 (2)" in text  # ctc - plain on the same items
    rows = ablate.summarize(a.out)
    assert rows[0]["wer_vs_plain"] is None and rows[2]["wer_vs_plain"]["mean"] == pytest.approx(-0.1)
    tie = [{"arm": "ctc", "wer": {"mean": 0.9}}, {"arm": "plain", "wer": {"mean": 0.9}}]
    assert ablate.best_arm(tie) == "plain"  # an aid that does not help is not kept
