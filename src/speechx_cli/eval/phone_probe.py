"""How much phoneme identity a tokenizer's levels hold, read by a trained probe rather than a code's
majority phoneme (phone_purity.py's measures).

A small convolutional probe (one hidden layer over a few frames either side) is fitted on the frames
inside words of the corpus' train readings and scored, as frame accuracy, on the measured readings
(labels from train/phonetic.frame_labels). It reads, at the codec's frame rate:
- the log-mel spectrum of the audio (what the same probe reads from the sound itself; not a ceiling: a
  learned latent is easier for a small probe, and 80 log-mel bands need more train readings),
- the quantized latent of level 1, of levels 1-2 and of all levels (what the decoder reads from them).
Purity and PNMI score each level's codes one at a time; the probe says what the first levels carry
together, in vectors. Compare codecs at the same number of train readings: the scores grow with it
(corpus-v2s's dev readings, the log-mel: 0.27 from 1,000 train readings, 0.41 from 4,453).
"""

from __future__ import annotations

from collections.abc import Callable

import librosa
import numpy as np
import torch
from torch import Tensor, nn

from ..codec import Codec
from ..train.phonetic import PHONES, Utterance
from .phone_purity import utterance_labels

WIDTH = 7  # frames the probe sees: 3 either side
HIDDEN = 256
UPDATES = 1500  # of BATCH readings, passes over the train readings reshuffled each time (a fixed budget:
BATCH = 16      # a few passes left the log-mel probe unfitted at 1,000 readings)
LR = 1e-3
N_MELS = 80


def _padded(codec: Codec, u: Utterance) -> tuple[Tensor, int]:
    wave = u.wave.float()  # read from its file once
    n = codec.frames_for(len(wave))
    return nn.functional.pad(wave, (0, codec.samples_for(n) - len(wave))), n


def log_mel(codec: Codec, u: Utterance) -> Tensor:
    """(N_MELS, F) log-mel of the reading at the codec's frame rate (window: 4 hops)."""
    wav, n = _padded(codec, u)
    hop = codec.hop_length
    mel = librosa.feature.melspectrogram(y=wav.numpy(), sr=codec.sample_rate, n_fft=4 * hop, hop_length=hop,
                                         n_mels=N_MELS, power=1.0)
    return torch.from_numpy(np.log(mel[:, :n] + 1e-5)).float()


def level_views(codec: Codec) -> Callable[[Utterance], dict[str, Tensor]]:
    """A function giving each reading's (D, F) quantized latent from level 1, levels 1-2 and all levels.

    Needs a codec whose latent is a sum over levels (`dequantize`: the small codec, DAC, a Vocos decoder's
    base); ValueError for one without (the official EnCodec)."""
    tokenizer = getattr(codec, "base", codec)  # a Vocos decoder reads its base's latent
    if not hasattr(tokenizer, "dequantize"):
        raise ValueError(f"the phoneme probe needs a codec whose levels sum to a latent, not {codec.kind}")
    k = codec.n_codebooks
    names = {1: "level 1", 2: "levels 1-2", k: "all levels"}

    def views(u: Utterance) -> dict[str, Tensor]:
        wav, n = _padded(codec, u)
        with torch.inference_mode():
            codes = codec.encode(wav[None].to(codec.device))
            return {name: tokenizer.dequantize(codes[:, :levels])[0, :, :n].float().cpu()
                    for levels, name in sorted(names.items()) if levels <= k}

    return views


def _probe(dim: int) -> nn.Module:
    return nn.Sequential(nn.Conv1d(dim, HIDDEN, WIDTH, padding=WIDTH // 2), nn.ReLU(),
                         nn.Conv1d(HIDDEN, len(PHONES) + 1, 1))


def _batch(xs: list[Tensor], ys: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-padded (B, D, T) features and (B, T) labels, -100 (ignored) outside words and past each end."""
    t = max(x.shape[1] for x in xs)
    x = torch.stack([nn.functional.pad(x, (0, t - x.shape[1])) for x in xs])
    y = torch.stack([nn.functional.pad(torch.where(y > 0, y, -100), (0, t - len(y)), value=-100) for y in ys])
    return x, y


def _batches(n: int, updates: int, gen: torch.Generator):
    """`updates` batches of reading indices: passes over range(n), each in a new order."""
    done = 0
    while done < updates:
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(0, n, BATCH):
            if done == updates:
                return
            yield order[i:i + BATCH]
            done += 1


def fit_and_score(train_x: list[Tensor], train_y: list[Tensor], test_x: list[Tensor], test_y: list[Tensor],
                  seed: int = 0, updates: int | None = None) -> float:
    """Fit the probe on (D, F) features with (F,) phoneme labels (0: outside words, not scored) in `updates`
    steps (UPDATES if None) and return its frame accuracy on the test readings' frames inside words.
    Deterministic for a seed."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.cat(train_x, 1)
    mean, std = frames.mean(1, keepdim=True), frames.std(1, keepdim=True) + 1e-5
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _probe(frames.shape[0])
    opt = torch.optim.Adam(model.parameters(), LR)
    for batch in _batches(len(train_x), updates or UPDATES, gen):
        x, y = _batch([(train_x[j] - mean) / std for j in batch], [train_y[j] for j in batch])
        if (y >= 0).any():
            loss = nn.functional.cross_entropy(model(x), y, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
    right = total = 0
    with torch.no_grad():
        for x, y in zip(test_x, test_y):
            pred = model(((x - mean) / std)[None])[0].argmax(0)
            inside = y > 0
            right += int((pred[inside] == y[inside]).sum())
            total += int(inside.sum())
    if total == 0:
        raise ValueError("no frames inside words to score the probe on")
    return right / total


def _features(codec: Codec, utterances: list[Utterance],
              view: Callable[[Utterance], dict[str, Tensor]]) -> tuple[dict[str, list[Tensor]], list[Tensor]]:
    feats: dict[str, list[Tensor]] = {}
    labels = []
    for u in utterances:
        views = view(u)
        n = next(iter(views.values())).shape[1]
        labels.append(torch.from_numpy(utterance_labels(u, n, codec.hop_length)).long())
        for name, v in views.items():
            feats.setdefault(name, []).append(v)
    return feats, labels


def probe(codec: Codec, train: list[Utterance], test: list[Utterance], views: str = "levels",
          seed: int = 0) -> dict[str, float]:
    """Frame accuracy of a probe fitted on `train` and scored on `test`, per view of the readings:
    views="levels": level 1, levels 1-2, all levels; views="log-mel": the audio's log-mel."""
    view = level_views(codec) if views == "levels" else (lambda u: {"log-mel": log_mel(codec, u)})
    train_f, train_y = _features(codec, train, view)
    test_f, test_y = _features(codec, test, view)
    return {name: fit_and_score(train_f[name], train_y, test_f[name], test_y, seed) for name in train_f}
