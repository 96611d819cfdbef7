"""Engine equivalences: cached decoding == full forward; known lengths; batching."""

from dataclasses import replace

import pytest
import torch

from speechx_cli import prompts as P
from speechx_cli.engine import (DecodingOptions, _draw, decode_step, filter_logits, generate, generate_nar,
                                make_caches, prefill)
from speechx_cli.model import ARModel, ModelConfig, NARModel

CFG = ModelConfig.tiny()
V, K = CFG.codebook_size, CFG.n_codebooks


def rand_codes(t, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (t, K), generator=g)


def models(seed=0):
    torch.manual_seed(seed)
    return ARModel(CFG).eval(), NARModel(CFG).eval()


def test_cached_decoding_matches_full_forward():
    ar, _ = models()
    prompts = [P.ns(rand_codes(7, 1), V, text=torch.tensor([4, 5, 6])), P.tts(torch.tensor([9]), rand_codes(3, 2), V)]
    batch = P.collate(prompts)
    out = torch.randint(0, V, (2, 6))
    out[:, 0] = ARModel.bos(V)
    full = ar(batch.tokens, batch.types, batch.positions, out, torch.ones_like(out, dtype=torch.bool))
    c = batch.types.shape[1]
    caches = make_caches(ar, 2, c + 6, "cpu", torch.float32)
    key_valid = torch.zeros(2, c + 6, dtype=torch.bool)
    key_valid[:, :c] = batch.cond_valid
    prefill(ar, batch, caches)
    for t in range(6):
        key_valid[:, c + t] = True
        step = decode_step(ar, out[:, t], t, c, key_valid, caches)
        torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=1e-4)


def test_known_length_tasks_output_input_frames():
    ar, nar = models()
    mix = rand_codes(11, 3)
    ps = [P.ns(mix, V), P.sr(mix[:5], V), P.tse(rand_codes(4, 4), mix[:8], V)]
    outs = generate(ar, nar, ps, DecodingOptions(temperature=1.0, seed=1), frame_rate=50)
    assert [o.shape for o in outs] == [(11, K), (5, K), (8, K)]
    assert all(int(o.max()) < V for o in outs)


def test_tts_respects_frame_limit_and_edit_keeps_prefix():
    ar, nar = models()
    opts = DecodingOptions(temperature=1.0, seed=0, max_seconds=0.2)  # 10 frames at 50 Hz
    tts = P.tts(torch.tensor([3, 4]), rand_codes(5, 5), V)
    pre = rand_codes(4, 6)
    ed = P.edit(torch.tensor([3]), pre, rand_codes(3, 7), V)
    outs = generate(ar, nar, [tts, ed], opts, frame_rate=50)
    assert len(outs[0]) <= 10
    assert len(outs[1]) >= 4 and torch.equal(outs[1][:4], pre)


def test_batched_equals_unbatched_greedy():
    ar, nar = models()
    ps = [P.ns(rand_codes(6, 8), V), P.tse(rand_codes(3, 9), rand_codes(9, 10), V, text=torch.tensor([1, 2]))]
    opts = DecodingOptions(temperature=0)
    together = generate(ar, nar, ps, opts, 50)
    alone = [generate(ar, nar, [p], opts, 50)[0] for p in ps]
    for a, b in zip(together, alone):
        assert torch.equal(a, b)


def test_seeded_sampling_is_reproducible():
    ar, nar = models()
    p = [P.ns(rand_codes(8, 11), V)]
    opts = DecodingOptions(temperature=1.0, seed=123)
    assert torch.equal(generate(ar, nar, p, opts, 50)[0], generate(ar, nar, p, opts, 50)[0])


@pytest.mark.parametrize("opts", [DecodingOptions(temperature=1.0, seed=5), DecodingOptions(temperature=0, seed=5)])
def test_sampled_rows_are_the_same_alone_or_in_any_batch(opts):
    """Each row draws from its own stream (seed, its condition, its copy number): a prompt samples the
    same codes alone, beside others, or in another order; copies of one prompt in a batch differ; greedy
    rows with escapes (which draw only when they escape) too."""
    ar, nar = models()
    a, b, c = P.ns(rand_codes(20, 8), V), P.tse(rand_codes(3, 9), rand_codes(16, 10), V), P.sr(rand_codes(12, 14), V)
    alone = {id(p): generate(ar, nar, [p], opts, 50)[0] for p in (a, b, c)}
    for order in ([a, b, c], [c, a, b]):
        for p, got in zip(order, generate(ar, nar, order, opts, 50)):
            assert torch.equal(got, alone[id(p)])
    if not opts.greedy:
        first, second = generate(ar, nar, [a, a], opts, 50)
        assert torch.equal(first, alone[id(a)]) and not torch.equal(first, second)
        assert not torch.equal(generate(ar, nar, [a], replace(opts, seed=6), 50)[0], alone[id(a)])


def test_per_row_draws_follow_each_rows_probabilities():
    """Row streams draw by each row's own CDF: frequencies match, impossible ids (p = 0) never come up,
    and a row not asked to draw keeps its stream where it was."""
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.2, 0.0, 0.8]])
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    drawn = torch.stack([_draw(probs, gens) for _ in range(4000)])
    counts = torch.stack([(drawn == k).float().mean(0) for k in range(3)], 1)
    torch.testing.assert_close(counts, probs, atol=0.03, rtol=0)
    before = gens[1].get_state()
    _draw(probs, gens, torch.tensor([True, False, True]))
    assert torch.equal(gens[1].get_state(), before)


def test_filter_logits_top_k_top_p():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, 2, 1.0)[0, 2:]).all()
    kept = filter_logits(logits, 0, 0.5)  # first token alone holds ~64%
    assert torch.isfinite(kept[0, 0]) and torch.isinf(kept[0, 1:]).all()


def test_nar_with_condition_cache_matches_full_forward():
    _, nar = models(1)
    ps = [P.ns(rand_codes(6, 12), V, text=torch.tensor([3, 4])), P.tts(torch.tensor([5]), rand_codes(4, 13), V)]
    batch = P.collate(ps)
    first = [torch.randint(0, V, (6,)), torch.randint(0, V, (3,))]
    empty = torch.zeros(2, 0, K, dtype=torch.long)
    fast = generate_nar(nar, batch, first, empty, torch.zeros(2, 0, dtype=torch.bool))
    # reference: the model's own full forward pass, one level at a time
    codes = torch.zeros(2, 6, K, dtype=torch.long)
    codes[0, :, 0], codes[1, :3, 0] = first
    valid = torch.arange(6)[None] < torch.tensor([6, 3])[:, None]
    for level in range(1, K):
        logits = nar(batch.tokens, batch.types, batch.positions, codes, valid, torch.full((2,), level))
        codes[..., level] = logits.argmax(-1)
    assert torch.equal(fast[0], codes[0]) and torch.equal(fast[1], codes[1, :3])


def test_greedy_escapes_a_run_of_identical_codes_and_returns_to_the_argmax():
    ar, nar = models()
    with torch.no_grad():  # the same distribution at every step, code 5 its argmax (but far from certain)
        ar.head.weight.zero_()
        ar.head.bias.zero_()
        ar.head.bias[5] = 2.0
    p = [P.ns(rand_codes(40, 12), V)]
    pure = generate(ar, nar, p, DecodingOptions(temperature=0, escape_after=0), 50)[0][:, 0]
    assert (pure == 5).all()
    codes = generate(ar, nar, p, DecodingOptions(temperature=0, escape_after=4), 50)[0][:, 0].tolist()
    others = [i for i, c in enumerate(codes) if c != 5]
    assert others, "a run of the argmax code never ended"
    assert all(i >= 4 and codes[i - 4:i] == [5] * 4 for i in others)  # only sampled after 4 identical codes
    again = generate(ar, nar, p, DecodingOptions(temperature=0, escape_after=4), 50)[0][:, 0].tolist()
    assert again == codes  # seeded: still reproducible


def test_nar_given_its_own_first_levels_reproduces_its_fill():
    """Rows that give L known levels fill only the rest: given the NAR's own levels 1..L, it returns
    exactly what it filled from level 1 alone; given every level, the codes come back unchanged."""
    _, nar = models(1)
    ps = [P.tts(torch.tensor([5, 6]), rand_codes(4, 13), V), P.tts(torch.tensor([7]), rand_codes(5, 14), V)]
    batch = P.collate(ps)
    first = [torch.randint(0, V, (6,)), torch.randint(0, V, (4,))]
    empty, zero = torch.zeros(2, 0, K, dtype=torch.long), torch.zeros(2, 0, dtype=torch.bool)
    full = generate_nar(nar, batch, first, empty, zero)
    for known in (1, 2, K):
        again = generate_nar(nar, batch, [f[:, :known] for f in full], empty, zero)
        assert all(torch.equal(a, f) for a, f in zip(again, full))
    with pytest.raises(ValueError, match="known levels"):
        generate_nar(nar, batch, [full[0][:, :2], full[1][:, :3]], empty, zero)


def test_given_frames_replace_the_draws_and_nothing_given_is_plain_generation():
    """Prompt.given on a one-level AR: no frame given is exactly the generation without a prefix; the given
    frames come out as the prefix's codes on every level, in a batch as alone."""
    ar, nar = models()
    mix = rand_codes(12, 8)
    opts = DecodingOptions(temperature=1.0, seed=3)
    plain = generate(ar, nar, [P.sr(mix, V), P.ns(mix, V)], opts, frame_rate=50)
    nothing = replace(P.sr(mix, V), prefix=mix, given=torch.zeros(12, dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(plain, generate(ar, nar, [nothing, P.ns(mix, V)], opts, 50)))
    given = torch.arange(12) % 3 == 0
    some = replace(P.sr(mix, V), prefix=mix, given=given)
    together = generate(ar, nar, [some, P.ns(mix, V)], opts, frame_rate=50)
    assert torch.equal(together[0][given], mix[given]) and not torch.equal(together[0], plain[0])
    assert torch.equal(together[1], plain[1])
    assert torch.equal(generate(ar, nar, [some], opts, frame_rate=50)[0], together[0])
    with pytest.raises(ValueError, match="given marks"):
        generate(ar, nar, [replace(some, given=given[:5])], opts, frame_rate=50)
