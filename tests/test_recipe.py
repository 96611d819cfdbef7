import torch

from speechx_cli.train import recipe
from speechx_cli.train.recipe import Recipe, _training_facts


def _ckpt(path, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fields, path)


def test_training_facts_count_steps_and_lm_tokens_of_every_stage(tmp_path):
    r = Recipe(runs=tmp_path, continued=((50, 8e-4, 50), (30, 4e-4, 150)), decoder_steps=0)
    _ckpt(r.codec_ckpt, step=40)
    _ckpt(r.tokenizer_ckpt, step=60)
    _ckpt(r.lm_ckpt("tts"), step=10, tokens=1_000)
    _ckpt(r.lm_ckpt("all"), step=20, tokens=3_000)
    _ckpt(r.lm_ckpt(r.continued_name(0)), step=50, tokens=20_000)
    # the second continued phase has not run yet: no facts for it
    facts = _training_facts(r)
    assert facts["codec_steps"] == 40 and facts["codec_continued_steps"] == 60
    assert "codec_decoder_steps" not in facts  # no decoder phase in this recipe
    assert facts["lm_stage2_continued_1_tokens"] == 20_000
    assert facts["lm_stage2_continued_1_utterances_per_speaker"] == 50
    assert "lm_stage2_continued_2_steps" not in facts
    assert "lm_stage2_continued_2_utterances_per_speaker" not in facts
    assert facts["lm_tokens_total"] == 24_000
    assert "codec_tokens" not in facts


def test_training_facts_without_a_continued_codec_name_the_codec_once(tmp_path):
    r = Recipe(runs=tmp_path, codec_more_steps=0)
    _ckpt(r.codec_ckpt, step=40)
    facts = _training_facts(r)
    assert facts["codec_steps"] == 40 and "codec_continued_steps" not in facts


def test_training_facts_name_the_decoder_phase_in_its_own_run(tmp_path):
    r = Recipe(runs=tmp_path, decoder_steps=20)
    for path, step in ((r.codec_ckpt, 40), (r.tokenizer_ckpt, 60), (r.decoder_ckpt, 20)):
        _ckpt(path, step=step)
    assert r.decoder_ckpt not in (r.codec_ckpt, r.tokenizer_ckpt)
    facts = _training_facts(r)
    assert (facts["codec_steps"], facts["codec_continued_steps"], facts["codec_decoder_steps"]) == (40, 60, 20)


def test_a_larger_lm_corpus_is_built_tokenized_and_trained_on_only_by_its_phase(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(recipe, "run_module", lambda *args, **kw: calls.append(args))
    r = Recipe(data=tmp_path / "data", runs=tmp_path / "runs", continued=((50, 8e-4, 50), (30, 4e-4, 150)))
    recipe.corpus(r)
    recipe.shards(r)
    recipe.lm(r)
    built = [(c[4], c[c.index("--n-per-speaker") + 1]) for c in calls if c[:3] == ("speechx_cli", "train", "prepare")]
    assert built == [(str(r.corpus), "50"), (str(tmp_path / "data" / "corpus150"), "150")]
    tokenized = [c for c in calls if c[:3] == ("speechx_cli", "train", "tokenize")]
    sharded = {c[4]: c[3] for c in tokenized}
    assert sharded[str(r.lm_shards(150))] == str(tmp_path / "data" / "corpus150")
    assert sharded[str(r.data / "shards-dev")] == str(r.corpus)  # dev losses stay comparable across phases
    assert all(c[c.index("--codec-checkpoint") + 1] == str(r.tokenizer_ckpt) for c in tokenized)
    trained = [(c[c.index("--data") + 1], c[c.index("--out") + 1]) for c in calls if c[:3] == ("speechx_cli", "train", "lm")]
    assert trained[2:] == [(str(r.data / "shards-train-full"), str(r.runs / "lm-all-full")),
                           (str(r.data / "shards-train-150"), str(r.runs / "lm-all-full2"))]
