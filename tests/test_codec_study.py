"""The codec study driver (train/codec_study.py): steps from the calibration, what each arm runs, what a
rerun skips, the tables. The child processes are stood in for by a recorder that leaves what each
would leave behind."""

import json
from pathlib import Path

import pytest

from speechx_cli import checkpoint
from speechx_cli.train import codec_study as CS
from speechx_cli.train.codec_study import Study


def _log(path: Path, seconds_per_step: dict[range, float]) -> None:
    """A log whose cumulative speed says each step took seconds_per_step[its range] (+ a 5 s start)."""
    lines, elapsed = [], 5.0
    for step in range(1, 41):
        elapsed += next(v for r, v in seconds_per_step.items() if step in r)
        if step % 10 == 0:
            lines.append({"step": step, "loss": 1.0, "steps_per_s": step / elapsed})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_step_seconds_leave_out_the_start(tmp_path):
    _log(tmp_path / "log.jsonl", {range(1, 11): 3.0, range(11, 21): 0.5, range(21, 41): 2.0})
    assert CS.step_seconds(tmp_path / "log.jsonl") == pytest.approx((0.5, 2.0))
    (tmp_path / "short.jsonl").write_text(json.dumps({"step": 10, "steps_per_s": 1.0}) + "\n")
    with pytest.raises(ValueError, match="needs steps 10, 20, 30 and 40"):
        CS.step_seconds(tmp_path / "short.jsonl")


def _save(path: Path, kind: str, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_training(path, {"kind": kind, "version": checkpoint.TRAINING_VERSION, "step": step})


class _Children:
    """Records each child's command and leaves its outputs."""

    def __init__(self):
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, module: str, *args: str, threads: int, processes: int = 1) -> None:
        self.calls.append((module, *args))
        flag = lambda name: args[args.index(name) + 1]  # noqa: E731
        if module.endswith("codec_cli"):
            run = Path(flag("--out"))
            _save(run / "codec_train.pt", checkpoint.CODEC_TRAINING, int(flag("--steps")))
            if "calibration" in run.parts:  # vocos: 0.2 s reconstruction steps, 0.8 s adversarial ones
                slow = 4 if flag("--kind") == "vocos" else 1
                _log(run / "log.jsonl", {range(1, 21): 0.2 * slow, range(21, 41): 0.8 * slow})
        elif module == "speechx_cli" and args[:2] == ("train", "tokenize"):
            Path(args[3]).mkdir(parents=True)
            (Path(args[3]) / "index.json").write_text("{}")
        elif args[0] == "train":  # lm_train
            run = Path(flag("--out"))
            _save(run / "lm_train.pt", checkpoint.LM_TRAINING, int(flag("--max-steps")))
            line = {"step": int(flag("--max-steps")), "dev": {"tts": {"ar": 3.0, "nar": 4.0}}}
            (run / "log.jsonl").write_text(json.dumps(line) + "\n")
        elif args[0] == "export":
            Path(args[2]).write_bytes(b"model")
        else:  # speechx eval codec|tts
            out = Path(flag("--out"))
            out.mkdir(parents=True, exist_ok=True)
            cell = {"mean": 0.5, "ci95_low": 0.4, "ci95_high": 0.6, "n": 2}
            if args[1] == "codec":
                systems = ["passthrough", *(c.partition("=")[0] for c in args if "=" in c)]
                report = {"systems": systems, "subsets": ["all"], "items": [{"id": "a"}, {"id": "b"}],
                          "summary": {s: {"all": {"pesq": cell}} for s in systems},
                          "costs": {s: {"params_m": 3.0, "kbps": 4.0, "encode_rtf": 0.02, "decode_rtf": 0.01,
                                              "codes_used": [1000, 1024, 870]}
                                    for s in systems[1:]}}
            else:
                report = {"subsets": ["all"], "summary": {"speechx": {"all": {"wer": cell, "dnsmos_ovrl": cell}}}}
            (out / "report.json").write_text(json.dumps(report))


@pytest.fixture
def study(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "manifest.jsonl").write_text("".join(json.dumps({"split": split, "path": f"wav/{k}.wav"}) + "\n"
                                                   for k, split in enumerate(["train", "train", "dev"])))
    children = _Children()
    monkeypatch.setattr(CS, "run_module", children)
    return Study(tmp_path / "out", corpus, tmp_path / "bench", "shipped.safetensors", core_hours=1.0,
                 arms=("vocos", "dac", "vocos-adv0"), threads=2, lm_steps=50), children


def test_the_budget_sets_each_arms_steps_and_a_rerun_skips_what_is_done(study):
    s, children = study
    text = CS.run_all(s)
    trains = [c for c in children.calls if c[0].endswith("codec_cli") and "calibration" not in c[c.index("--out") + 1]]
    steps = {Path(c[c.index("--out") + 1]).name: (int(c[c.index("--steps") + 1]), int(c[c.index("--adv-start") + 1]))
             for c in trains}
    # 1800 s of wall per arm (1 core-hour on 2 threads); 60% reconstruction steps, then adversarial ones
    assert steps["dac"] == (int(1800 / (0.6 * 0.2 + 0.4 * 0.8)), round(0.6 * int(1800 / 0.44)))
    assert steps["vocos"][0] == int(1800 / (4 * 0.44)) and steps["vocos-adv0"] == (int(1800 / 3.2), 0)
    assert all(("--base" in c) == ("vocos" in c[c.index("--out") + 1]) for c in trains)
    assert (s.out / "codec-train.txt").read_text().count("\n") == 2
    # the token sets: the shipped codec's (shipped and both vocos decoders read it) and dac's own
    tokenizers = [c[c.index("--codec-checkpoint") + 1] for c in children.calls if c[1:3] == ("train", "tokenize")]
    assert tokenizers == ["shipped.safetensors"] * 2 + [str(s.codec("dac"))] * 2
    exports = [(Path(c[3]).stem, c[c.index("--codec-checkpoint") + 1]) for c in children.calls if c[1] == "export"]
    assert exports == [("shipped", "shipped.safetensors"), ("vocos", str(s.codec("vocos"))),
                       ("vocos-adv0", str(s.codec("vocos-adv0"))), ("dac", str(s.codec("dac")))]
    evals = [c for c in children.calls if c[1] == "eval"]
    assert [c[2] for c in evals] == ["codec"] + ["tts"] * 4
    assert "| dac | 4090 (GAN from 2454) | 1.0 | 0.50 ±0.10 |" in text and "| shipped | - | - |" in text
    assert "| - | 870-1024 | 3.00 | 4.0 | 50 | 100 |" in text  # dead codes: the least-used level's count
    assert "| vocos-adv0 | shipped | 50 | 3.000 / 4.000 | 0.500 ±0.100 | - | - | 0.50 ±0.10 |" in text
    assert (s.out / "study.md").read_text() == text

    children.calls.clear()
    assert CS.run_all(s) == text and children.calls == []  # everything was done
    _save(s.codec("dac"), checkpoint.CODEC_TRAINING, 100)  # killed early: resumed, then measured again
    CS.run_all(s)
    (resumed,) = [c for c in children.calls if c[0].endswith("codec_cli")]
    assert "--resume" in resumed and resumed[resumed.index("--steps") + 1] == "4090"
    assert [c[2] for c in children.calls if c[1] == "eval"][0] == "codec"


def test_unknown_arms_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown arm"):
        Study(tmp_path, tmp_path, tmp_path, "b", arms=("vocos", "wavenet"))
