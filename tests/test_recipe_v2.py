import json

import pytest
import torch

from speechx_cli import checkpoint
from speechx_cli.train import recipe, recipe_v2
from speechx_cli.train.recipe_v2 import RecipeV2


@pytest.fixture
def calls(monkeypatch):
    made = []
    record = lambda *args, **kw: made.append(args)  # noqa: E731
    monkeypatch.setattr(recipe, "run_module", record)  # `train` runs through it
    monkeypatch.setattr(recipe_v2, "run_module", record)
    return made


def _recipe(tmp_path, **changes) -> RecipeV2:
    r = RecipeV2(base=tmp_path / "v1.safetensors", data=tmp_path / "data", runs=tmp_path / "runs",
                 out=tmp_path / "v2.safetensors", stage1_steps=30, stage2_steps=50, decoder_steps=40, **changes)
    r.corpus.mkdir(parents=True)
    rows = [{"id": f"u{i}", "split": split, "path": f"wav/u{i}.wav"} for i, split in enumerate(("train", "dev"))]
    (r.corpus / "manifest.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return r


def _ckpt(path, kind, step, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": kind, "version": checkpoint.TRAINING_VERSION, "step": step, **fields}, path)


def _arg(call, flag):
    return call[call.index(flag) + 1]


def test_every_stage_reads_v1s_tokens_and_stage_2_starts_from_stage_1(tmp_path, calls):
    r = _recipe(tmp_path)
    recipe_v2.corpus(r)  # built already (its manifest exists): skipped
    recipe_v2.decoder(r)
    recipe_v2.shards(r)
    recipe_v2.lm(r)
    codec, *tokenized, stage1, stage2 = calls
    assert codec[:2] == ("speechx_cli.train.codec_cli", "--data")
    assert (_arg(codec, "--kind"), _arg(codec, "--base")) == ("vocos", str(r.base))
    assert (r.data / "codec-v2-train.txt").read_text() == f"{r.corpus / 'wav/u0.wav'}\n"
    assert [c[4] for c in tokenized] == [str(r.shards("tts")), str(r.shards("train")), str(r.shards("dev"))]
    assert all(_arg(c, "--codec-checkpoint") == str(r.base) for c in tokenized)
    assert _arg(tokenized[0], "--tasks") == "tts" and "--tasks" not in tokenized[1]  # stage 2: all six tasks
    assert (_arg(stage1, "--stage"), _arg(stage1, "--init-from")) == ("tts", str(r.base))
    assert (_arg(stage2, "--stage"), _arg(stage2, "--init-from")) == ("all", str(r.lm_ckpt("tts")))
    assert _arg(stage2, "--data") == str(r.shards("train")) and _arg(stage2, "--dev") == str(r.shards("dev"))
    assert not any("--aux-ctc-weight" in c or "--curriculum-steps" in c for c in (stage1, stage2))  # plain


def test_a_rerun_resumes_an_unfinished_stage_and_skips_finished_ones(tmp_path, calls):
    r = _recipe(tmp_path, aid="ctc")
    _ckpt(r.decoder_ckpt, checkpoint.CODEC_TRAINING, 40)
    _ckpt(r.lm_ckpt("tts"), checkpoint.LM_TRAINING, 30)
    _ckpt(r.lm_ckpt("all"), checkpoint.LM_TRAINING, 20)
    for name in ("tts", "train", "dev"):
        r.shards(name).mkdir(parents=True)
        (r.shards(name) / "index.json").write_text("{}")
    recipe_v2.decoder(r)
    recipe_v2.shards(r)
    assert calls == []
    assert recipe_v2.lm(r) == r.lm_ckpt("all")
    (stage2,) = calls
    assert "--resume" in stage2 and "--init-from" not in stage2 and _arg(stage2, "--aux-ctc-weight") == "0.2"


def test_the_corpus_is_built_when_its_manifest_is_missing(tmp_path, calls):
    r = _recipe(tmp_path)
    (r.corpus / "manifest.jsonl").unlink()
    recipe_v2.corpus(r)
    (build,) = calls
    assert build[:3] == ("speechx_cli.train.corpus", "build", str(r.corpus))
    assert _arg(build, "--kokoro-speakers") == "150"


def test_export_names_every_stage_with_its_steps_and_tokens(tmp_path, calls):
    r = _recipe(tmp_path)
    _ckpt(r.decoder_ckpt, checkpoint.CODEC_TRAINING, 40)
    _ckpt(r.lm_ckpt("tts"), checkpoint.LM_TRAINING, 30, tokens=1_000)
    _ckpt(r.lm_ckpt("all"), checkpoint.LM_TRAINING, 50, tokens=4_000, trained_s=5400.0)
    recipe_v2.export(r, r.lm_ckpt("all"))
    (export,) = calls
    assert _arg(export, "--codec-checkpoint") == str(r.decoder_ckpt) and export[4] == str(r.out)
    facts = json.loads(_arg(export, "--info"))
    assert facts["decoder_steps"] == 40 and facts["lm_stage2_steps"] == 50
    assert (facts["lm_stage1_tokens"], facts["lm_stage2_tokens"], facts["aid"]) == (1_000, 4_000, "plain")
    assert facts["lm_stage2_hours"] == 1.5 and "lm_stage1_hours" not in facts  # kept only since it was measured


def test_an_unknown_aid_is_refused():
    with pytest.raises(ValueError, match="alignment aid"):
        RecipeV2(aid="attention")


def test_no_lm_stage_ships_v1s_lm_with_the_new_decoder(tmp_path, calls):
    r = _recipe(tmp_path, lm_stages=0)
    _ckpt(r.decoder_ckpt, checkpoint.CODEC_TRAINING, 40)
    recipe_v2.shards(r)
    assert calls == [] and recipe_v2.lm(r) == r.base  # nothing tokenized, nothing trained
    recipe_v2.export(r, recipe_v2.lm(r))
    (export,) = calls
    assert export[3] == str(r.base) and _arg(export, "--codec-checkpoint") == str(r.decoder_ckpt)
    facts = json.loads(_arg(export, "--info"))
    assert facts["decoder_steps"] == 40 and facts["lm_stages"] == 0
    assert "aid" not in facts and not any(k.startswith("lm_stage") and k != "lm_stages" for k in facts)


def test_one_lm_stage_ships_stage_1(tmp_path, calls):
    r = _recipe(tmp_path, lm_stages=1)
    for name in ("tts", "train", "dev"):
        r.shards(name).mkdir(parents=True)
        (r.shards(name) / "index.json").write_text("{}")
    _ckpt(r.lm_ckpt("tts"), checkpoint.LM_TRAINING, 30)
    assert recipe_v2.lm(r) == r.lm_ckpt("tts") and calls == []
    with pytest.raises(ValueError, match="LM stages"):
        RecipeV2(lm_stages=3)


@pytest.mark.parametrize("aid", ["plain", "ctc", "curriculum"])
def test_stage_1_trains_exactly_as_the_ablation_arm_of_its_aid(tmp_path, calls, monkeypatch, aid):
    """So the ablation's winning arm can stand in for stage 1: every training flag but the paths agrees."""
    from speechx_cli.train import ablate

    monkeypatch.setattr(ablate, "run_module", lambda *args, **kw: calls.append(args))
    r = _recipe(tmp_path, aid=aid)
    r.shards("dev").mkdir(parents=True)
    (r.shards("dev") / "index.json").write_text("{}")
    recipe_v2._lm(r, "tts", r.shards("tts"), r.stage1_steps, r.base)
    a = ablate.Ablation(tmp_path / "ablate", r.shards("tts"), r.shards("dev"), tmp_path / "bench", "codec.pt",
                        steps=r.stage1_steps, lr=r.lr, init_from=str(r.base))
    ablate.train_arm(a, aid)
    stage1, arm = calls

    def flags(call):
        args = list(call[call.index("--data"):] if "--data" in call else call)
        out = args.index("--out")
        del args[out:out + 2]
        return args

    assert flags(stage1) == flags(arm)
    assert ("--curriculum-steps" in stage1) == (aid == "curriculum")


def test_the_detectors_train_on_the_corpus_once_and_ship_in_the_export(tmp_path, calls):
    r = _recipe(tmp_path)
    recipe_v2.detectors(r)
    assert len(calls) == 6
    for run, task in zip(calls, ("sr", "ns", "tse", "tse_silent", "tse_gain", "ns_gain")):
        assert run[:3] == ("speechx_cli.train.detector_train", "run", str(r.detector_file(task).parent))
        assert _arg(run, "--corpus") == str(r.corpus) and _arg(run, "--steps") == str(r.detector_steps)
        assert _arg(run, "--task") == task
        assert float(_arg(run, "--lr")) == (1e-3 if task.startswith("tse") else 2e-3)
        r.detector_file(task).parent.mkdir(parents=True)
        r.detector_file(task).write_bytes(b"weights")
    assert r.detector_file("sr") != r.detector_file("ns")
    recipe_v2.detectors(r)  # done: skipped
    _ckpt(r.decoder_ckpt, checkpoint.CODEC_TRAINING, 40)
    _ckpt(r.lm_ckpt("tts"), checkpoint.LM_TRAINING, 30)
    _ckpt(r.lm_ckpt("all"), checkpoint.LM_TRAINING, 50)
    recipe_v2.export(r, r.lm_ckpt("all"))
    export = calls[-1]
    assert len(calls) == 7
    assert [export[i + 1] for i, a in enumerate(export) if a == "--detector"] == [
        str(r.detector_file(t)) for t in ("sr", "ns", "tse", "tse_silent", "tse_gain", "ns_gain")]
    assert json.loads(_arg(export, "--info"))["detector_steps"] == r.detector_steps