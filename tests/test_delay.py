"""The AR over several codebook levels (delay pattern): layouts, cached == teacher-forced, batching,
prefixes, and training from a one-level AR."""

from dataclasses import replace

import torch

from speechx_cli import prompts as P
from speechx_cli.delay import delayed_inputs, delayed_labels, input_id
from speechx_cli.engine import DecodingOptions, frame_limits, generate, generate_ar
from speechx_cli.model import ARModel, ModelConfig, NARModel
from speechx_cli.prompts import IGNORE_INDEX, eos_class
from speechx_cli.train.losses import ar_loss

CFG = ModelConfig.tiny(ar_levels=3)
V, K = CFG.codebook_size, CFG.n_codebooks
BOS, END, EOS = input_id(V, "<bos>"), input_id(V, "<eos>"), eos_class(V)
X = IGNORE_INDEX


def rand_codes(t, seed, k=K):
    return torch.randint(0, V, (t, k), generator=torch.Generator().manual_seed(seed))


def models(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return ARModel(cfg).eval(), NARModel(cfg).eval()


def test_layout_of_three_levels():
    codes = torch.tensor([[[1, 11, 21], [2, 12, 22], [3, 13, 23]]])  # T = 3 frames, A = 3
    inputs, valid = delayed_inputs(codes, torch.tensor([3]), V)
    labels = delayed_labels(codes, torch.tensor([3]), V)
    assert inputs[0].tolist() == [[BOS, BOS, BOS], [1, BOS, BOS], [2, 11, BOS], [3, 12, 21], [END, 13, 22]]
    assert labels[0].tolist() == [[1, X, X], [2, 11, X], [3, 12, 21], [EOS, 13, 22], [X, X, 23]]
    assert valid.all()


def test_one_level_layout_is_the_papers():
    codes = torch.tensor([[[5], [6], [7]], [[8], [9], [0]]])
    lengths = torch.tensor([3, 2])
    inputs, valid = delayed_inputs(codes, lengths, V)
    labels = delayed_labels(codes, lengths, V)
    assert inputs[..., 0].tolist() == [[BOS, 5, 6, 7], [BOS, 8, 9, 0]]
    assert valid.tolist() == [[True] * 4, [True, True, True, False]]
    assert labels[..., 0].tolist() == [[5, 6, 7, EOS], [8, 9, EOS, X]]


def test_a_shorter_row_ends_every_level_with_it():
    codes = torch.tensor([[[1, 11], [2, 12], [3, 13]], [[4, 14], [5, 15], [0, 0]]])
    inputs, valid = delayed_inputs(codes, torch.tensor([3, 2]), V)
    labels = delayed_labels(codes, torch.tensor([3, 2]), V)
    assert valid.tolist() == [[True] * 4, [True, True, True, False]]
    assert inputs[1, :3].tolist() == [[BOS, BOS], [4, BOS], [5, 14]]
    assert labels[1, :3].tolist() == [[4, X], [5, 14], [EOS, 15]]


def test_greedy_generation_is_the_argmax_of_the_teacher_forced_model():
    ar, _ = models()
    prompts = [P.ns(rand_codes(9, 1), V), P.sr(rand_codes(6, 2), V)]
    batch = P.collate(prompts)
    opts = DecodingOptions(temperature=0, escape_after=0)
    limits = frame_limits(prompts, opts, 50)
    known = torch.ones(2, dtype=torch.bool)
    none = torch.zeros(2, 0, dtype=torch.long)
    outs = generate_ar(ar, batch, opts, limits, known, none, torch.zeros(2, 0, dtype=torch.bool))
    assert [tuple(o.shape) for o in outs] == [(9, 3), (6, 3)]
    codes = torch.zeros(2, 9, 3, dtype=torch.long)
    for i, o in enumerate(outs):
        codes[i, : len(o)] = o
    lengths = torch.tensor([9, 6])
    inputs, valid = delayed_inputs(codes, lengths, V)
    labels = delayed_labels(codes, lengths, V)
    with torch.no_grad():
        states = ar.features(batch.tokens, batch.types, batch.positions, inputs, valid)
        logits = ar.level_logits(states)
    for k in range(3):
        scores = logits[k][..., :V]  # a known length forbids <eos> before the end
        here = (labels[..., k] != X) & (labels[..., k] != EOS)
        assert here.any()
        assert torch.equal(scores.argmax(-1)[here], labels[..., k][here])


def test_batched_equals_one_by_one_with_free_lengths():
    ar, nar = models()
    prompts = [P.tts(torch.tensor([3, 4, 5]), rand_codes(4, 3), V), P.ns(rand_codes(7, 4), V),
               P.tts(torch.tensor([6]), rand_codes(6, 5), V)]
    opts = DecodingOptions(temperature=0, escape_after=0, max_seconds=0.24)  # pure argmax: 12 frames at most
    together = generate(ar, nar, prompts, opts, frame_rate=50)
    alone = [generate(ar, nar, [p], opts, frame_rate=50)[0] for p in prompts]
    assert all(torch.equal(a, b) for a, b in zip(together, alone))
    assert all(o.shape[1] == K for o in together)


def test_an_edit_keeps_its_prefix_on_every_level():
    ar, nar = models()
    pre = rand_codes(5, 6)
    ed = P.edit(torch.tensor([3, 7]), pre, rand_codes(3, 7), V)
    out = generate(ar, nar, [ed], DecodingOptions(temperature=1.0, seed=2, max_seconds=0.3), frame_rate=50)[0]
    assert len(out) >= 5 and torch.equal(out[:5], pre)


def test_loss_sums_the_levels_and_counts_level_one():
    ar, _ = models()
    tgt = [rand_codes(5, 8), rand_codes(3, 9)]
    batch = P.collate([P.ns(t, V) for t in tgt], tgt)
    with torch.no_grad():
        for head in ar.level_heads:  # uniform over V codes: log V nats per label of levels 2 and 3
            head.weight.zero_(), head.bias.zero_()
        total, count = ar_loss(ar, batch, reduction="sum")
        codes = batch.targets[..., :3]
        inputs, valid = delayed_inputs(codes, batch.target_lengths, V)
        labels = delayed_labels(codes, batch.target_lengths, V)
        states = ar.features(batch.tokens, batch.types, batch.positions, inputs, valid)
        first = torch.nn.functional.cross_entropy(ar.head(states).flatten(0, 1), labels[..., 0].flatten(),
                                                  ignore_index=X, reduction="sum")
    assert int(count) == 5 + 1 + 3 + 1  # level 1's codes and <eos>, as at one level
    torch.testing.assert_close(float(total), float(first) + 2 * (5 + 3) * torch.log(torch.tensor(V)).item(),
                               rtol=1e-5, atol=1e-4)


def test_an_ar_grows_levels_from_a_one_level_run_learns_them_and_exports(tmp_path):
    from dataclasses import replace

    import pytest

    from speechx_cli import checkpoint
    from speechx_cli.codec import SmallCodec, SmallCodecConfig
    from speechx_cli.train import lm_train
    from speechx_cli.train.lm_train import train
    from tests.test_lm_train import BASE, data, synthetic_examples

    one = train(replace(BASE, out_dir=str(tmp_path / "one"), max_steps=2), data(), progress=False)
    two = replace(BASE, model=replace(BASE.model, ar_levels=2), out_dir=str(tmp_path / "two"), max_steps=25,
                  task_sampling="example", init_from=str(one.checkpoint), eval_every=25)
    start = train(two, data(), progress=False, stop_at=0)
    shared = {k: v for k, v in start.ar.state_dict().items() if not k.startswith("level_heads.")}
    assert all(torch.equal(v, one.ar.state_dict()[k]) for k, v in shared.items())  # level 1 kept
    grown = train(two, data(), data(24, seed=1), progress=False, resume=True)
    rows = [__import__("json").loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    dev = [r["dev"] for r in rows if "dev" in r]
    for t in dev[-1]:  # each level's dev loss is logged; the new level learns
        assert len(dev[-1][t]["ar_levels"]) == 2
        assert dev[-1][t]["ar_levels"][1] < dev[0][t]["ar_levels"][1] - 0.3, t
    with pytest.raises(ValueError, match="differs"):  # an AR cannot shed levels
        train(replace(BASE, out_dir=str(tmp_path / "back"), init_from=str(grown.checkpoint)), data(),
              progress=False)

    codec = SmallCodec(SmallCodecConfig.tiny()).eval()
    model = checkpoint.load(lm_train.export(grown.checkpoint, codec, tmp_path / "m.safetensors"))
    assert model.config.ar_levels == 2 and len(model.ar.level_heads) == 1
    example = synthetic_examples(6)[1]  # ns: output length known
    out = generate(model.ar, model.nar, [example.prompt(V)], DecodingOptions(temperature=0), frame_rate=50)
    assert out[0].shape == example.source.shape


def test_an_ar_over_every_level_trains_alone_and_bad_level_counts_are_one_line(tmp_path):
    import json
    from dataclasses import replace

    from typer.testing import CliRunner

    from speechx_cli.cli import app
    from speechx_cli.train.dataset import FORMAT, FORMAT_VERSION, INDEX_NAME
    from speechx_cli.train.lm_train import train
    from tests.test_lm_train import BASE, data

    every = replace(BASE, model=replace(BASE.model, ar_levels=K), train="ar", out_dir=str(tmp_path / "all"),
                    max_steps=2)
    result = train(every, data(), data(12, seed=1), progress=False)
    out = generate(result.ar.eval(), result.nar.eval(), [P.ns(rand_codes(5, 1), V)],
                   DecodingOptions(temperature=0), frame_rate=50)[0]
    assert out.shape == (5, K)  # every level from the AR: the NAR fills none
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / INDEX_NAME).write_text(json.dumps(
        {"format": FORMAT, "version": FORMAT_VERSION, "codebook_size": V, "n_codebooks": K}))
    for levels in ("0", str(K + 1)):
        r = CliRunner().invoke(app, ["train", "lm", "--data", str(tmp_path / "shards"), "--preset", "tiny",
                                     "--out", str(tmp_path / "run"), "--ar-levels", levels])
        assert r.exit_code != 0 and "ar_levels must be in 1..4" in r.output and "Traceback" not in r.output


def test_given_frames_are_fed_on_every_level_and_the_rest_follow_them():
    """Prompt.given: a known-length row's given frames come out as its prefix's codes on every level (the AR's
    three and the NAR's), and every other code is the greedy choice of the teacher-forced model on that output:
    the given codes are the history the next frames read."""
    ar, nar = models()
    mix = rand_codes(9, 1)
    given = torch.tensor([0, 1, 1, 0, 0, 1, 0, 0, 0], dtype=torch.bool)
    prompt = replace(P.sr(mix, V), prefix=mix, given=given)
    out = generate(ar, nar, [prompt], DecodingOptions(temperature=0, escape_after=0), frame_rate=50)[0]
    assert out.shape == (9, K) and torch.equal(out[given], mix[given])
    inputs, valid = delayed_inputs(out[None, :, :3], torch.tensor([9]), V)
    labels = delayed_labels(out[None, :, :3], torch.tensor([9]), V)[0]
    batch = P.collate([prompt])
    with torch.no_grad():
        logits = ar.level_logits(ar.features(batch.tokens, batch.types, batch.positions, inputs, valid))
    for k in range(3):
        frame = torch.arange(len(labels)) - k  # label position t of level k is frame t - k
        here = (labels[:, k] != X) & (labels[:, k] != EOS) & ~given[frame.clamp(0, 8)]
        assert here.sum() >= 4
        assert torch.equal(logits[k][0, :, :V].argmax(-1)[here], labels[here, k])
