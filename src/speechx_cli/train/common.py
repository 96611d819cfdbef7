"""What every trainer shares: RNG state for exact resume, the learning-rate schedule, stopping cleanly
on a signal, and codecs by name (shards, LM export and `speechx eval codec` load them)."""

from __future__ import annotations

import json
import math
import random
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) generator states, as tensors/tuples torch.save keeps."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def lr_multiplier(step: int, *, warmup: int, decay_start: int, end: int, min_ratio: float,
                  shape: str = "cosine") -> float:
    """Linear warmup over `warmup` steps, flat until `decay_start`, then a cosine (or linear) decay to
    `min_ratio` at `end`; shape "none" stays flat after the warmup."""
    if step < warmup:
        return (step + 1) / warmup
    if shape == "none" or step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1, end - decay_start))
    fall = 0.5 * (1 + math.cos(math.pi * progress)) if shape == "cosine" else 1 - progress
    return min_ratio + (1 - min_ratio) * fall


@contextmanager
def stop_requests() -> Iterator[dict[str, bool]]:
    """The first Ctrl-C or SIGTERM asks the loop to stop after the current step (and save);
    a second one acts as usual."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request(signum: int, _frame: Any) -> None:
        flag["stop"] = True
        signal.signal(signum, previous[signum])

    for sig in previous:
        signal.signal(sig, request)
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


RANDOM_CODECS = ("random-tiny", "random-demo")  # untrained SmallCodecs: for speed measurements only


def load_codec(spec: str, device: str | torch.device = "cpu"):
    """A codec from: a speechx inference checkpoint (.safetensors), a codec training checkpoint
    (codec_train.pt), "encodec_24khz" (the official pretrained EnCodec) or random-tiny/random-demo."""
    from ..codec import PretrainedEncodec, SmallCodec, SmallCodecConfig, codec_from_config

    if spec == "encodec_24khz":
        return PretrainedEncodec().to(device).eval()
    if spec in RANDOM_CODECS:
        torch.manual_seed(0)
        cfg = SmallCodecConfig.tiny() if spec == "random-tiny" else SmallCodecConfig.demo()
        return SmallCodec(cfg).to(device).eval()
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"codec checkpoint {path} not found")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        from ..checkpoint import read_header

        meta = read_header(path)
        with safe_open(str(path), framework="pt") as f:
            state = {k[len("codec."):]: f.get_tensor(k) for k in f.keys() if k.startswith("codec.")}
        return codec_from_config(json.loads(meta["codec_config"]), state or None, device)
    from .codec_train import export_codec

    return export_codec(path).to(device).eval()
