"""Golden tests: each task's condition layout is pinned exactly (docs/prompts.md)."""

import pytest
import torch

from speechx_cli import prompts as P
from speechx_cli.prompts import ACOUSTIC, TEXT, Task

V, K = 64, 2  # tiny codebook size and codebook count


def frames(*first):
    return torch.tensor([[c, c + 1] for c in first])


def sp(name):
    return V + P.SPECIAL[name]


def layout(p: P.Prompt):
    """Readable layout: ('T', id) for text, ('F', code0) for frames, name for specials."""
    names = {V + i: n for i, n in enumerate(P.SPECIAL_TOKENS)}
    out = []
    for tok, kind in zip(p.tokens.tolist(), p.types.tolist()):
        if kind == TEXT:
            out.append(("T", tok[0]))
        elif tok[0] in names:
            assert tok == [tok[0]] * K  # a special id fills every codebook column
            out.append(names[tok[0]])
        else:
            out.append(("F", tok[0]))
    return out


def test_special_slots_are_fixed():
    assert P.SPECIAL_TOKENS[:9] == ("<pad>", "<bos>", "<eos>", "<ns>", "<sr>", "<tse>", "<soe>", "<eoe>", "<mask>")
    assert P.N_SPECIAL == 16
    assert P.special_id("<ns>", 1024) == 1027


def test_tts_layout():
    p = P.tts(torch.tensor([5, 6]), frames(10, 20, 30), V)
    assert layout(p) == [("T", 5), ("T", 6), ("F", 10), ("F", 20), ("F", 30)]
    assert p.positions.tolist() == [0, 1, 0, 1, 2]
    assert p.out_frames is None and len(p.prefix) == 0 and p.task is Task.TTS


@pytest.mark.parametrize("fn,token,task", [(P.ns, "<ns>", Task.NS), (P.sr, "<sr>", Task.SR)])
def test_ns_sr_layout_with_and_without_text(fn, token, task):
    p = fn(frames(1, 2, 3), V, text=torch.tensor([7]))
    assert layout(p) == [("T", 7), token, ("F", 1), ("F", 2), ("F", 3)]
    assert p.positions.tolist() == [0, 0, 0, 1, 2]
    assert p.out_frames == 3 and p.task is task
    q = fn(frames(1, 2, 3), V)
    assert layout(q) == [token, ("F", 1), ("F", 2), ("F", 3)]


def test_tse_layout_enrollment_before_token():
    p = P.tse(frames(40, 41), frames(1, 2, 3), V, text=torch.tensor([9]))
    assert layout(p) == [("T", 9), ("F", 40), ("F", 41), "<tse>", ("F", 1), ("F", 2), ("F", 3)]
    assert p.positions.tolist() == [0, 0, 1, 0, 0, 1, 2]
    assert p.out_frames == 3


def test_clean_edit_layout():
    p = P.edit(torch.tensor([3, 4]), frames(1, 2), frames(8), V)
    assert layout(p) == [("T", 3), ("T", 4), ("F", 1), ("F", 2), "<soe>", "<mask>", "<eoe>", ("F", 8)]
    assert p.task is Task.EDIT_CLEAN
    assert torch.equal(p.prefix, frames(1, 2)) and p.out_frames is None


def test_noisy_edit_layout():
    p = P.edit(torch.tensor([3]), frames(1), frames(8), V, middle=frames(5, 6))
    assert layout(p) == [("T", 3), ("F", 1), "<soe>", ("F", 5), ("F", 6), "<eoe>", ("F", 8)]
    assert p.positions.tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert p.task is Task.EDIT_NOISY


def test_bad_codes_refused():
    with pytest.raises(ValueError):
        P.ns(torch.tensor([[V, 0]]), V)
    with pytest.raises(ValueError):
        P.tts(torch.tensor([], dtype=torch.long), frames(1), V)


def test_collate_left_pads_condition_right_pads_targets():
    a = P.ns(frames(1, 2, 3), V)
    b = P.ns(frames(1), V)
    batch = P.collate([a, b], [frames(1, 2, 3), frames(4)])
    assert batch.tokens.shape == (2, 4, K)
    assert batch.types[1].tolist() == [P.PAD, P.PAD, ACOUSTIC, ACOUSTIC]
    assert batch.target_lengths.tolist() == [3, 1]
    assert batch.targets[1, 1:].eq(0).all()
