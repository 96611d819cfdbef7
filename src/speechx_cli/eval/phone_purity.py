"""How phonetic each codebook level of a tokenizer is: phone purity and PNMI per level, on a corpus with
word timings.

The measures are HuBERT's for its discrete units (Hsu et al. 2021, section IV-C), computed over the
frames inside words (each frame's phoneme from train/phonetic.frame_labels: a word's phonemes share its
frames evenly, stress removed):
- phone purity: how often a frame's phoneme is its code's most frequent phoneme;
- PNMI: the mutual information of phoneme and code over the phoneme's entropy (0: the code says nothing
  of the phoneme, 1: it determines it);
- held-out accuracy: the code's most frequent phoneme counted on half the utterances, scored on the other
  half (the plug-in purity and PNMI above favour codebooks with more codes in use; this does not).
A tokenizer whose first level carries the words scores high at level 1. The levels of a residual
quantizer are measured one at a time (level 2's code alone, not with level 1's).

    speechx eval phones data/corpus-v2/manifest.jsonl --split dev \\
        -c shipped=runs/codec-study/models/shipped.safetensors -c runs/phonetic/frames1/codec_train.pt
"""

from __future__ import annotations

import numpy as np
import torch

from ..codec import Codec
from ..train.phonetic import PHONES, Utterance, frame_labels


def level_codes(codec: Codec, utterances: list[Utterance]) -> list[np.ndarray]:
    """Each utterance's codes, (K, F)."""
    with torch.inference_mode():
        return [codec.encode(u.wave).cpu().numpy() for u in utterances]


def utterance_labels(u: Utterance, n_frames: int, hop: int) -> np.ndarray:
    return frame_labels(u, 0, u.n_samples, range(len(u.starts)), n_frames, hop).numpy()


def _joint(codes: np.ndarray, phones: np.ndarray, n_codes: int) -> np.ndarray:
    joint = np.zeros((n_codes, len(PHONES) + 1))
    np.add.at(joint, (codes, phones), 1)
    return joint


def scores(codes: np.ndarray, phones: np.ndarray, heldout: np.ndarray, n_codes: int) -> dict[str, float]:
    """Purity, PNMI (over all frames given) and held-out accuracy (fit where not `heldout`, scored where
    it is) of one level's codes (N,) against phoneme classes (N,)."""
    p = _joint(codes, phones, n_codes)
    p /= p.sum()
    pc, pp = p.sum(1, keepdims=True), p.sum(0, keepdims=True)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pc @ pp)[nz])).sum())
    entropy = float(-(pp[pp > 0] * np.log(pp[pp > 0])).sum())
    fit = _joint(codes[~heldout], phones[~heldout], n_codes)
    majority = fit.argmax(1)
    majority[fit.sum(1) == 0] = np.bincount(phones[~heldout]).argmax()  # unseen code: the commonest phoneme
    return {"purity": float(p.max(1).sum()), "pnmi": mi / entropy,
            "heldout_accuracy": float((majority[codes[heldout]] == phones[heldout]).mean())}


def measure(codec: Codec, utterances: list[Utterance]) -> list[dict[str, float]]:
    """Per level: the scores over the frames inside words; held out: every second utterance."""
    all_codes, all_labels, heldout = [], [], []
    for i, (u, codes) in enumerate(zip(utterances, level_codes(codec, utterances))):
        labels = utterance_labels(u, codes.shape[-1], codec.hop_length)
        inside = labels > 0
        all_codes.append(codes[:, inside])
        all_labels.append(labels[inside])
        heldout.append(np.full(int(inside.sum()), i % 2 == 1))
    codes, labels, held = np.concatenate(all_codes, 1), np.concatenate(all_labels), np.concatenate(heldout)
    return [{"level": k + 1, **scores(codes[k], labels, held, codec.codebook_size)} for k in range(len(codes))]


def table_lines(name: str, rows: list[dict[str, float]]) -> list[str]:
    return [f"{name} level {r['level']}: purity {r['purity']:.3f}  PNMI {r['pnmi']:.3f}  "
            f"held-out accuracy {r['heldout_accuracy']:.3f}" for r in rows]
