"""Alignment aids of LM training: the auxiliary CTC loss (train/aux_ctc.py) and the short-first curriculum
(batching.Curriculum). Tiny configs; equivalences with plain training, exact resume, export."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from speechx_cli import checkpoint
from speechx_cli import pipeline as PL
from speechx_cli.codec import SmallCodec, SmallCodecConfig
from speechx_cli.engine import DecodingOptions
from speechx_cli.model import ARModel
from speechx_cli.prompts import Task, collate
from speechx_cli.train import aux_ctc, lm_train
from speechx_cli.train.batching import BucketSampler
from speechx_cli.train.dataset import EncodedExample, ExampleSet
from speechx_cli.train.lm_train import train
from speechx_cli.train.losses import ar_loss_and_states

from .conftest import tone
from .test_lm_train import BASE, CFG, V, K, assert_same, data, synthetic_examples, weights

AIDS = dict(aux_ctc_weight=0.3, curriculum_steps=4)


def _logged(result) -> dict:
    return {k: v for k, v in result.last.items() if k not in ("tokens_per_s", "trained_s")}  # all but wall clock


def _greedy_ctc(log_probs: torch.Tensor) -> list[int]:
    """Best path: argmax per frame, repeats merged, blanks dropped."""
    best = log_probs.argmax(-1).tolist()
    return [c for i, c in enumerate(best) if c != aux_ctc.BLANK and (i == 0 or c != best[i - 1])]


# ---- the CTC head ---------------------------------------------------------------------------------

def test_ctc_rows_cover_tasks_that_speak_a_given_text_and_texts_come_from_the_prompt():
    examples = synthetic_examples(12)
    ds = ExampleSet(examples, V)
    rows = aux_ctc.ctc_rows(ds, np.arange(12))
    for e, on in zip(examples, rows):
        assert on == (e.task != Task.SR and len(e.text) > 0), e.task
    assert rows.any() and not rows.all()  # sr, and ns without its transcript, are left out
    assert aux_ctc.phoneme_count(ds, np.arange(12)) == sum(len(e.text) for e, on in zip(examples, rows) if on)

    batch = collate([e.prompt(V) for e in examples], [e.target for e in examples])  # left-padded conditions
    targets, lengths = aux_ctc.prompt_texts(batch, torch.as_tensor(rows))
    want = [e.text for e, on in zip(examples, rows) if on]
    assert lengths.tolist() == [len(t) for t in want]
    assert torch.equal(targets, torch.cat(want))


def test_ctc_head_overfits_one_example_and_spells_its_phonemes():
    g = torch.Generator().manual_seed(0)
    text = torch.tensor([5, 9, 12, 7, 30])
    ex = EncodedExample(Task.TTS, text, torch.randint(0, V, (16, K), generator=g),
                        enrollment=torch.randint(0, V, (6, K), generator=g))
    batch = collate([ex.prompt(V)], [ex.target])
    torch.manual_seed(0)
    ar, head = ARModel(CFG), aux_ctc.CTCHead(CFG.d_model, CFG.n_text_tokens)
    opt = torch.optim.Adam([*ar.parameters(), *head.parameters()], lr=3e-3)
    rows = torch.tensor([True])
    losses = []
    for _ in range(150):
        _, _, states = ar_loss_and_states(ar, batch, reduction="sum")
        loss = head.loss_sum(states, batch, rows)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[0] > 30 and losses[-1] < 0.5  # P(text | frames) from ~e^-64 to > 0.6
    with torch.no_grad():
        states = ar_loss_and_states(ar, batch)[2]
        spelled = _greedy_ctc(head.proj(states[0, :16]))
        assert float(head.loss_sum(states, batch, torch.tensor([False]))) == 0.0  # no row: zero
    assert spelled == text.tolist()


def test_aux_ctc_off_is_plain_training_and_on_it_only_adds_a_loss_to_the_ar(tmp_path):
    plain = train(replace(BASE, out_dir=str(tmp_path / "plain"), max_steps=1), data(), progress=False)
    off = train(replace(BASE, out_dir=str(tmp_path / "off"), max_steps=1, aux_ctc_weight=0.0), data(),
                progress=False)
    assert_same(weights(plain), weights(off))
    assert _logged(off) == _logged(plain) and "ctc" not in off.last
    assert lm_train.load_training_checkpoint(off.checkpoint).keys() == \
        lm_train.load_training_checkpoint(plain.checkpoint).keys()

    on = train(replace(BASE, out_dir=str(tmp_path / "on"), max_steps=1, aux_ctc_weight=0.5), data(),
               progress=False)
    assert (on.last["ar"], on.last["nar"]) == (plain.last["ar"], plain.last["nar"])  # same batch, same forward
    assert on.last["ctc"] > 0 and on.last["loss"] == plain.last["loss"]
    w_on, w_plain = weights(on), weights(plain)
    assert_same({k: v for k, v in w_on.items() if k.startswith("nar.")},
                {k: v for k, v in w_plain.items() if k.startswith("nar.")})  # the NAR never sees it
    assert not torch.equal(w_on["ar.blocks.0.attn.qkv.weight"], w_plain["ar.blocks.0.attn.qkv.weight"])
    assert aux_ctc.STATE_KEY in lm_train.load_training_checkpoint(on.checkpoint)
    with pytest.raises(ValueError, match="AR"):
        replace(BASE, aux_ctc_weight=0.1, train="nar").validate()


# ---- the curriculum -------------------------------------------------------------------------------

def _tts_lengths(n: int = 60) -> ExampleSet:
    """TTS examples whose targets run from 3 to 62 frames, in shuffled order."""
    g = torch.Generator().manual_seed(1)
    frames = np.random.default_rng(0).permutation(np.arange(3, 3 + n))
    return ExampleSet([EncodedExample(Task.TTS, torch.tensor([4, 5, 6]), torch.randint(0, V, (int(t), K), generator=g),
                                      enrollment=torch.randint(0, V, (3, K), generator=g)) for t in frames], V)


def test_curriculum_draws_short_targets_first_then_the_plain_epochs():
    ds = _tts_lengths()
    cfg = replace(BASE, stage="tts", batch_size=4, bucket_pool=2, curriculum_steps=20)
    sampler = BucketSampler(ds.lengths, ds.tasks, cfg, min_examples=1, target_lengths=ds.target_lengths)
    cur = sampler.curriculum
    caps = [cur.cap("tts", s) for s in range(21)]
    assert caps[0] == 3 and caps[-1] == 62 and caps == sorted(caps)
    assert sorted(ds.target_lengths[cur.pool("tts", 0)]) == [3, 4, 5, 6, 7, 8, 9, 10]  # the shortest pool's worth
    longest = [int(ds.target_lengths[sampler.batch(s)[1]].max()) for s in range(20)]
    assert max(longest[:3]) <= 10 < max(longest[-4:])
    assert all(m <= max(c, 10) for m, c in zip(longest, caps))
    assert sampler.state_dict() == {"tts": [0, 0]}  # the epochs have not begun
    plain = BucketSampler(ds.lengths, ds.tasks, replace(cfg, curriculum_steps=0), 1)
    assert np.array_equal(sampler.batch(20)[1], plain.batch(0)[1])  # then the plain sampler's first batch
    again = BucketSampler(ds.lengths, ds.tasks, cfg, 1, target_lengths=ds.target_lengths)
    assert all(np.array_equal(again.batch(s)[1], BucketSampler(ds.lengths, ds.tasks, cfg, 1, ds.target_lengths)
                              .batch(s)[1]) for s in (0, 7, 19))  # a pure function of the step


def test_resume_with_both_aids_continues_exactly(tmp_path):
    cfg = replace(BASE, **AIDS, bucket_pool=1, max_steps=6, ckpt_every=3, grad_accum=2)
    straight = train(replace(cfg, out_dir=str(tmp_path / "a")), data(), progress=False)
    b = replace(cfg, out_dir=str(tmp_path / "b"))
    train(b, data(), progress=False, stop_at=3)  # killed inside the curriculum, after its step-3 checkpoint
    resumed = train(b, data(), progress=False, resume=True)
    assert resumed.step == straight.step == 6
    assert_same(weights(straight), weights(resumed))
    assert _logged(resumed) == _logged(straight)
    with pytest.raises(ValueError, match="curriculum_steps"):
        train(replace(b, curriculum_steps=5), data(), progress=False, resume=True)


def test_a_checkpoint_from_before_the_aids_resumes(tmp_path):
    cfg = replace(BASE, out_dir=str(tmp_path), max_steps=4, ckpt_every=2)
    train(cfg, data(), progress=False, stop_at=2)
    path = tmp_path / lm_train.CHECKPOINT_NAME
    ckpt = lm_train.load_training_checkpoint(path)
    for name in AIDS:  # what an older run saved: its config has no such fields
        del ckpt["config"][name]
    checkpoint.save_training(path, ckpt)
    assert train(cfg, data(), progress=False, resume=True).step == 4


# ---- export ---------------------------------------------------------------------------------------

def test_export_drops_the_ctc_head_and_the_checkpoint_runs_tts(tmp_path):
    cfg = replace(BASE, out_dir=str(tmp_path / "run"), stage="tts", max_steps=3, aux_ctc_weight=0.3)
    result = train(cfg, data(), progress=False)
    torch.manual_seed(0)
    codec = SmallCodec(SmallCodecConfig.tiny()).eval()
    path = lm_train.export(result.checkpoint, codec, tmp_path / "model.safetensors")
    parts = checkpoint.read_tensors(path, ("ar", "nar"))
    assert parts["ar"].keys() == ARModel(CFG).state_dict().keys()  # the AR alone: no head of the aid's
    sx = checkpoint.load(path)
    assert_same({f"ar.{k}": v for k, v in sx.ar.state_dict().items()},
                {k: v for k, v in weights(result).items() if k.startswith("ar.")})
    y = PL.tts(sx, "hello there", tone(1.0), opts=DecodingOptions(seed=0, max_seconds=0.3))
    assert 0 < len(y) and np.isfinite(y).all()
