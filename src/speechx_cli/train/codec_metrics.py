"""What the codec trainer measures: codebook use per batch, and dev reconstruction through the real
encode/decode path (mel distance, SI-SDR, STOI and wide-band PESQ where their packages are installed)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from ..codec import Codec
from ..codecs.quantize import codes_used_per_level
from ..eval import metrics
from .losses import MultiScaleMelLoss

DEV_MEL = ((256, 512, 1024, 2048), 64)  # one yardstick (mean log-mel L1) for every kind and recipe


def codebook_use(codes: Tensor, levels: Tensor | None = None) -> dict[str, Any]:
    """Distinct codes in a batch per level (items that used the level): the first and the last (finest)
    apart, since residual levels collapse first."""
    used = codes_used_per_level(codes, levels)
    return {"codes_used": float(used[0]), "codes_used_last": float(used[-1]), "codes_used_levels": used}


def _optional(ref: np.ndarray, est: np.ndarray, sr: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, measure in (("stoi", metrics.stoi), ("pesq_wb", metrics.pesq_wb)):
        try:
            out[name] = measure(ref, est, sr)
        except ImportError:  # the eval extra is not installed
            pass
        except Exception:  # PESQ raises on silent input  # noqa: BLE001
            pass
    return out


def evaluate(codec: Codec, dev_waves: list[Tensor], mel_loss: MultiScaleMelLoss) -> dict:
    """Mean reconstruction metrics of dev utterances through the real encode/decode path."""
    was_training = codec.training
    codec.eval()
    totals: dict[str, list[float]] = {}
    try:
        for ref in dev_waves:
            est = codec.decode(codec.encode(ref))[: len(ref)]
            ref_np, est_np = ref.numpy(), est.detach().numpy()
            values = {"mel_distance": float(mel_loss(est[None], ref[None])), "si_sdr": metrics.si_sdr(ref_np, est_np),
                      **_optional(ref_np, est_np, codec.sample_rate)}
            for k, v in values.items():
                totals.setdefault(k, []).append(v)
    finally:
        codec.train(was_training)
    return {f"dev_{k}": float(np.mean(v)) for k, v in totals.items()}
