"""A first level that carries the words: a phoneme loss from level 1 (train/phonetic.py: whole-word windows,
exact resume), level 1 decoded alone in training (--first-level-weight), and how phonetic a tokenizer's levels
are (eval/phone_purity.py, `speechx eval phones`)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from speechx_cli.cli import app
from speechx_cli.codec import SmallCodec, SmallCodecConfig
from speechx_cli.codecs.dac import DacConfig
from speechx_cli.eval import phone_probe
from speechx_cli.eval.phone_probe import fit_and_score
from speechx_cli.eval.phone_purity import scores
from speechx_cli.train import codec_train as ct
from speechx_cli.train import phonetic
from speechx_cli.train.discriminators import Recipe

from .test_cli import one_line_error

SR = 16_000
SENTENCES = (["the", "cat", "sat"], ["a", "dog", "ran", "home"], ["big", "red", "box"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A manifest of three train readings (one with an edit reading), one dev reading and one train
    reading whose audio is missing: words are tones of their own pitch, 0.25 s each after 0.1 s."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "wav").mkdir()
    rng = np.random.default_rng(0)
    rows = []

    def reading(name, words):
        t = np.arange(int(SR * (0.1 + 0.25 * len(words) + 0.1))) / SR
        x = (0.1 * np.sin(2 * np.pi * rng.uniform(150, 600) * t) + 0.01 * rng.standard_normal(len(t)))
        sf.write(root / "wav" / f"{name}.wav", x.astype(np.float32), SR)
        timings = [{"word": w, "start": 0.1 + 0.25 * i, "end": 0.1 + 0.25 * (i + 1)} for i, w in enumerate(words)]
        return {"text": " ".join(words), "path": f"wav/{name}.wav", "words": timings}

    for i, words in enumerate(SENTENCES):
        rows.append({"id": f"u{i}", "split": "train", **reading(f"u{i}", words),
                     "edit": reading(f"u{i}.edit", ["one", *words]) if i == 0 else None})
    rows.append({"id": "d0", "split": "dev", **reading("d0", ["dev", "only"]), "edit": None})
    rows.append({"id": "gone", "split": "train", "text": "lost", "path": "wav/gone.wav",
                 "words": [{"word": "lost", "start": 0.0, "end": 0.2}], "edit": None})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_word_phones_are_stressless_arpabet_classes():
    assert [phonetic.PHONES[i - 1] for i in phonetic.word_phones("cat")] == ["K", "AE", "T"]
    assert all(1 <= i <= len(phonetic.PHONES) for i in phonetic.word_phones("seventeen"))


def test_manifest_readings_load_and_a_bad_one_is_named(corpus):
    utterances, skipped = phonetic.read_manifest(corpus / "manifest.jsonl", SR)
    assert len(utterances) == 4  # three readings and one edit reading; not the dev one, not the missing one
    assert len(skipped) == 1 and skipped[0].startswith("gone:")
    assert [len(u.phones) for u in utterances] == [3, 4, 4, 3]


def test_windows_hold_whole_words_and_their_phonemes(corpus):
    utterances, _ = phonetic.read_manifest(corpus / "manifest.jsonl", SR)
    segment = int(0.6 * SR)  # two words fit, three do not
    sampler = phonetic.WordWindowSampler(utterances, segment, batch_size=16, seed=3)
    state = sampler.state()
    batch = sampler.next_batch()
    assert batch.wave.shape == (16, segment)
    assert int(batch.lengths.max()) <= segment and set(batch.lengths.tolist()) <= {int(0.25 * SR), int(0.5 * SR)}
    offset = 0
    for b in range(16):
        n_words = int(batch.lengths[b]) // int(0.25 * SR)
        spelled = batch.targets[offset: offset + int(batch.target_lengths[b])].tolist()
        offset += int(batch.target_lengths[b])
        # the window's phonemes are those of n_words consecutive words of one reading
        assert any(spelled == [p for w in u.phones[i:i + n_words] for p in w]
                   for u in utterances for i in range(len(u.phones)))
        assert batch.wave[b, int(batch.lengths[b]):].abs().sum() == 0  # padding is silence
        # frame labels: each word's phonemes in order over its 12.5 frames, nothing past the window
        labels = batch.frames[b].tolist()
        inside = labels[: int(batch.lengths[b]) // 320]
        assert all(label == phonetic.IGNORE for label in labels[-(len(labels) - -(-int(batch.lengths[b]) // 320)):])
        assert [p for i, p in enumerate(inside) if i == 0 or p != inside[i - 1]] == spelled or \
            len(set(spelled)) < len(spelled)  # a phoneme repeated across a word boundary merges
    sampler.load_state(state)
    again = sampler.next_batch()
    assert torch.equal(again.wave, batch.wave) and torch.equal(again.targets, batch.targets)


def test_level_one_passes_the_gradient_to_the_encoder():
    torch.manual_seed(0)
    codec = SmallCodec(SmallCodecConfig.tiny()).train()
    out = codec(torch.randn(2, 3200) * 0.1)  # the first pass initialises the codebooks
    first = codec.quantizer.vq.layers[0].decode(out.codes[:, 0])
    assert torch.allclose(out.first_level, first, atol=1e-6)  # its values are level 1's entries
    out.first_level.sum().backward()
    grads = [p.grad for p in codec.encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def _cfg(corpus, out, **changes) -> ct.CodecTrainConfig:
    cfg = ct.CodecTrainConfig(
        data=(), words=str(corpus / "manifest.jsonl"), phonetic_weight=1.0, out_dir=str(out),
        codec=SmallCodecConfig.tiny(), steps=6, batch_size=3, segment_s=0.6, quantizer_warmup_steps=0,
        recipe=Recipe.encodec(disc_width=4), lr=3e-3, log_every=1, eval_every=100, ckpt_every=100)
    return replace(cfg, **changes)


def _log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").open()]


def test_phonetic_training_resumes_exactly_and_keeps_its_setting(corpus, tmp_path):
    straight = ct.train_codec(_cfg(corpus, tmp_path / "a"), progress=False)
    half = _cfg(corpus, tmp_path / "b", steps=3)
    ct.train_codec(half, progress=False)
    resumed = ct.train_codec(replace(half, steps=6), resume=True, progress=False)
    for k, v in straight.codec.state_dict().items():
        assert torch.equal(v, resumed.codec.state_dict()[k]), k
    heads = [torch.load(r.checkpoint, weights_only=True)[phonetic.STATE_KEY] for r in (straight, resumed)]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])
    assert [r["phone_frames"] for r in _log(tmp_path / "a")] == [r["phone_frames"] for r in _log(tmp_path / "b")]
    with pytest.raises(ValueError, match="phonetic"):
        ct.train_codec(replace(half, steps=8, phonetic_weight=0.0), resume=True, progress=False)


def test_the_phonetic_loss_falls_and_the_plain_arm_has_none(corpus, tmp_path):
    only_phonemes = Recipe.encodec(disc_width=4, mel_weight=0.0, l1_weight=0.0)
    ct.train_codec(_cfg(corpus, tmp_path / "p", steps=50, recipe=only_phonemes, phonetic_input="level1"),
                   progress=False)
    frames = [r["phone_frames"] for r in _log(tmp_path / "p")]
    assert np.mean(frames[-10:]) < 0.8 * np.mean(frames[:5]), frames
    ct.train_codec(_cfg(corpus, tmp_path / "l", steps=50, recipe=only_phonemes), progress=False)  # the default
    frames = [r["phone_frames"] for r in _log(tmp_path / "l")]
    assert np.mean(frames[-10:]) < 0.8 * np.mean(frames[:5]), frames
    ct.train_codec(_cfg(corpus, tmp_path / "c", steps=2, phonetic_loss="ctc"), progress=False)
    assert all(r["phone_ctc"] > 0 and "phone_frames" not in r for r in _log(tmp_path / "c"))
    ct.train_codec(_cfg(corpus, tmp_path / "z", steps=2, phonetic_weight=0.0), progress=False)
    assert all(not any(k.startswith("phone_") for k in r) for r in _log(tmp_path / "z"))


def test_decoding_level_one_alone_adds_its_reconstruction_to_the_loss(corpus, tmp_path):
    """Same seed, data and first batch: the arm that also decodes level 1 alone adds exactly that
    reconstruction's loss (the recipe's l1 and mel weights, x the weight); the plain arm logs none of it."""
    for w in (0.0, 0.5):
        ct.train_codec(_cfg(corpus, tmp_path / f"w{w}", steps=2, phonetic_weight=0.0, first_level_weight=w),
                       progress=False)
    plain, alone = _log(tmp_path / "w0.0")[0], _log(tmp_path / "w0.5")[0]
    assert not any(k.endswith("_level1") for k in plain)
    assert alone["mel"] == plain["mel"] and alone["mel_level1"] > 0
    recipe = Recipe.encodec(disc_width=4)
    added = 0.5 * (recipe.l1_weight * alone["l1_level1"] + recipe.mel_weight * alone["mel_level1"])
    assert alone["loss"] == pytest.approx(plain["loss"] + added, rel=1e-5)


def test_on_a_frozen_tokenizer_only_the_decoder_learns_to_render_level_one(corpus, tmp_path):
    """With the tokenizer frozen, decoding level 1 alone teaches the decoder alone: the codes stay, the
    level-1 reconstruction is logged, and the decoder ends elsewhere than the same run without it."""
    base = ct.train_codec(_cfg(corpus, tmp_path / "base", steps=2, phonetic_weight=0.0), progress=False)
    runs = {w: ct.train_codec(_cfg(corpus, tmp_path / f"w{w}", steps=3, phonetic_weight=0.0, first_level_weight=w,
                                   init_from=str(base.checkpoint), freeze_tokenizer=True), progress=False)
            for w in (0.0, 1.0)}
    a = base.codec.state_dict()
    for run in runs.values():
        b = run.codec.state_dict()
        changed = {k for k in a if not torch.equal(a[k], b[k])}
        assert changed and all(k.startswith("decoder.") for k in changed), changed
    assert all(r["mel_level1"] > 0 for r in _log(tmp_path / "w1.0"))
    plain, alone = runs[0.0].codec.state_dict(), runs[1.0].codec.state_dict()
    assert any(not torch.equal(plain[k], alone[k]) for k in plain if k.startswith("decoder."))


def test_a_content_level_starts_from_a_plain_codec_and_resumes_exactly(corpus, tmp_path):
    """--content-dim over a plain codec: the encoder and decoder come from it, the quantizer starts anew;
    the phoneme loss reads the content level (level1), and a resumed run equals the straight one (the
    content level's revival draws from the saved RNG)."""
    base = ct.train_codec(_cfg(corpus, tmp_path / "base", steps=2, phonetic_weight=0.0), progress=False)
    content = replace(SmallCodecConfig.tiny(), content_dim=4)
    cfg = _cfg(corpus, tmp_path / "a", codec=content, init_from=str(base.checkpoint), phonetic_input="level1")
    utterances, _ = phonetic.read_manifest(corpus / "manifest.jsonl", SR)
    start = ct.CodecTrainer(cfg, utterances, [])
    start.init_weights(str(base.checkpoint))
    mine, theirs = start.codec.state_dict(), base.codec.state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs if k.startswith(("encoder.", "decoder.")))
    assert not bool(start.codec.content.seeded)
    straight = ct.train_codec(cfg, progress=False)
    assert all(len(r["codes_used_levels"]) == 4 and r["phone_frames"] > 0 for r in _log(tmp_path / "a"))
    half = replace(cfg, out_dir=str(tmp_path / "b"), steps=3)
    ct.train_codec(half, progress=False)
    resumed = ct.train_codec(replace(half, steps=6), resume=True, progress=False)
    for k, v in straight.codec.state_dict().items():
        assert torch.equal(v, resumed.codec.state_dict()[k]), k
    with pytest.raises(ValueError, match="another codec"):  # a content codec is no plain codec's start
        ct.train_codec(_cfg(corpus, tmp_path / "c", steps=1, init_from=str(straight.checkpoint)), progress=False)


def test_a_phonetic_level_needs_word_timings_and_a_training_tokenizer(corpus, tmp_path):
    with pytest.raises(ValueError, match="word timings"):
        _cfg(corpus, tmp_path, words=None, data=(str(corpus / "wav"),))
    with pytest.raises(ValueError, match="word timings"):
        _cfg(corpus, tmp_path, freeze_tokenizer=True)
    with pytest.raises(ValueError, match="frames, ctc"):
        _cfg(corpus, tmp_path, phonetic_loss="hubert")
    with pytest.raises(ValueError, match="level1, latent"):
        _cfg(corpus, tmp_path, phonetic_input="encoder")
    with pytest.raises(ValueError, match="level 1 alone"):
        _cfg(corpus, tmp_path, phonetic_weight=0.0, first_level_weight=1.0, codec=DacConfig.tiny())
    runner = CliRunner()
    base = ["train", "codec", "--out", str(tmp_path / "cli"), "--steps", "1"]
    for flags, message in ((["--data", str(corpus / "wav"), "--phonetic-weight", "1"], "word timings"),
                           (["--data", str(corpus / "wav"), "--words", str(corpus / "manifest.jsonl")], "one of them"),
                           (["--data", str(corpus / "wav"), "--kind", "dac", "--content-dim", "4"], "does not apply")):
        assert message in one_line_error(runner.invoke(app, [*base, *flags]))
    assert not (tmp_path / "cli").exists()


def test_purity_and_pnmi_known_answers():
    rng = np.random.default_rng(0)
    phones = rng.integers(1, len(phonetic.PHONES) + 1, 4000)
    held = np.arange(4000) % 2 == 1
    exact = scores(phones.copy(), phones, held, n_codes=64)  # the code is the phoneme
    assert exact == pytest.approx({"purity": 1.0, "pnmi": 1.0, "heldout_accuracy": 1.0})
    blind = scores(np.zeros(4000, dtype=int), phones, held, n_codes=64)  # one code for everything
    assert blind["pnmi"] == pytest.approx(0.0, abs=1e-12)
    assert blind["purity"] == pytest.approx(np.bincount(phones).max() / 4000)
    noisy = scores(np.where(rng.random(4000) < 0.5, phones, rng.integers(0, 64, 4000)), phones, held, 64)
    assert 0.0 < noisy["pnmi"] < 1.0 and 0.4 < noisy["heldout_accuracy"] < 0.7


def test_eval_phones_reports_every_level_of_every_codec(corpus, tmp_path):
    ckpt = ct.train_codec(_cfg(corpus, tmp_path / "run", steps=1), progress=False).checkpoint
    out = tmp_path / "phones.json"
    args = ["eval", "phones", str(corpus / "manifest.jsonl"), "--split", "train", "-c", f"a={ckpt}", "-c", str(ckpt),
            "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())
    assert list(table) == ["a", "codec_train"] and table["a"] == table["codec_train"]
    rows = table["a"]["levels"]
    assert [r["level"] for r in rows] == [1, 2, 3, 4]  # the tiny codec's levels
    assert all(0 <= r[k] <= 1 for r in rows for k in ("purity", "pnmi", "heldout_accuracy"))
    assert "probe" not in table["a"]
    assert "a level 1: purity" in result.output and "4 train readings (1 left out)" in result.output
    assert "--force" in one_line_error(CliRunner().invoke(app, args))
    assert "1 dev readings" in one_line_error(CliRunner().invoke(app, [*args[:3], "-c", str(ckpt)]))


def test_the_probe_reads_phonemes_that_are_there_and_not_ones_that_are_not():
    """Features that carry each frame's phoneme (one-hot plus noise) are read almost perfectly by a probe
    fitted on other readings; noise is read at about the
    commonest phoneme's rate; frames outside words (label 0) are neither fitted nor scored; same seed, same score."""
    rng = np.random.default_rng(0)
    n_classes = len(phonetic.PHONES) + 1

    def readings(n, informative):
        xs, ys = [], []
        for _ in range(n):
            y = rng.integers(1, 6, 40)  # five phonemes
            y[:5] = 0  # before the first word
            onehot = np.eye(n_classes)[y].T
            x = onehot + 0.3 * rng.standard_normal(onehot.shape) if informative else rng.standard_normal(onehot.shape)
            xs.append(torch.tensor(x, dtype=torch.float32))
            ys.append(torch.tensor(y))
        return xs, ys

    train_x, train_y = readings(480, True)
    test_x, test_y = readings(16, True)
    assert fit_and_score(train_x, train_y, test_x, test_y, updates=300) > 0.95
    noise_x, noise_y = readings(480, False)
    noise_test_x, noise_test_y = readings(16, False)
    blind = fit_and_score(noise_x, noise_y, noise_test_x, noise_test_y, updates=300)
    assert blind < 0.35  # five phonemes: chance is ~0.2
    assert fit_and_score(noise_x, noise_y, noise_test_x, noise_test_y, updates=300) == blind
    with pytest.raises(ValueError, match="no frames inside words"):
        fit_and_score(train_x, train_y, test_x[:1], [torch.zeros_like(test_y[0])])


def test_eval_phones_probe_scores_each_view_and_refuses_to_score_on_its_training_readings(corpus, tmp_path,
                                                                                          monkeypatch):
    monkeypatch.setattr(phone_probe, "UPDATES", 20)  # the mechanics, not the fit
    ckpt = ct.train_codec(_cfg(corpus, tmp_path / "run", steps=1), progress=False).checkpoint
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    manifest = corpus / "probe.jsonl"  # the train readings again as the dev split (the one dev reading is too few)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows if r["split"] == "train")
                        + "".join(json.dumps({**r, "split": "dev"}) + "\n" for r in rows if r["split"] == "train"))
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(app, ["eval", "phones", str(manifest), "--split", "dev", "-c", f"a={ckpt}",
                                      "--probe-train", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())["a"]["probe"]
    assert set(found) == {"level 1", "levels 1-2", "all levels", "log-mel", "train_readings"}
    assert found["train_readings"] == 3
    assert all(0 <= found[k] <= 1 for k in ("level 1", "levels 1-2", "all levels", "log-mel"))
    assert "a probe (3 train readings): level 1" in result.output
    assert "another --split" in one_line_error(CliRunner().invoke(
        app, ["eval", "phones", str(manifest), "--split", "train", "-c", str(ckpt), "--probe-train", "3"]))
