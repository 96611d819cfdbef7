"""What a codec costs: parameters, bitrate, multiply-accumulates and real-time factors of encode and decode.

Timings are the best of `reps` runs on one clip (the least disturbed by other processes on a shared
machine), on `threads` torch threads; the multiply-accumulates of convolutions, linear layers and LSTMs
are counted by forward hooks and do not depend on the machine.

    python -m speechx_cli.eval.codec_cost checkpoints/speechx-demo.safetensors random-dac random-vocos
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable

import torch
from torch import nn

from ..codec import Codec

COUNTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.Linear, nn.LSTM)


def count_macs(model: nn.Module, run: Callable[[], Any]) -> int:
    """Multiply-accumulates of the counted layers while `run()` runs."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, out: Any) -> None:
        nonlocal total
        if isinstance(m, nn.ConvTranspose1d):  # every input sample meets the whole kernel
            total += inputs[0].numel() * m.out_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, (nn.Conv1d, nn.Conv2d)):
            total += out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features
        elif isinstance(m, nn.LSTM):  # (T, B, input) -> four gates per step and layer
            steps = inputs[0].shape[0] * inputs[0].shape[1]
            total += 4 * m.hidden_size * (m.input_size + m.hidden_size * m.num_layers
                                          + m.hidden_size * (m.num_layers - 1)) * steps
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, COUNTED)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return total


def _best_seconds(run: Callable[[], Any], reps: int) -> float:
    run()  # warm-up: allocations, lazy initialisation
    best = math.inf
    for _ in range(reps):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def codec_cost(codec: Codec, seconds: float = 10.0, reps: int = 5, threads: int | None = 1,
               seed: int = 0) -> dict[str, float]:
    """Parameters (millions), kbps, GMAC per second of audio and real-time factors (processing seconds
    per audio second; below 1 is faster than real time) of encode and decode on a noise clip."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(seed)
        wav = 0.1 * torch.randn(1, int(seconds * codec.sample_rate), generator=g)
        codes = codec.encode(wav)
        encode, decode = (lambda: codec.encode(wav)), (lambda: codec.decode(codes))
        return {"params_m": codec.n_params() / 1e6,
                "kbps": codec.frame_rate * codec.n_codebooks * math.log2(codec.codebook_size) / 1000,
                "encode_gmac_per_s": count_macs(codec, encode) / seconds / 1e9,
                "decode_gmac_per_s": count_macs(codec, decode) / seconds / 1e9,
                "encode_rtf": _best_seconds(encode, reps) / seconds,
                "decode_rtf": _best_seconds(decode, reps) / seconds}
    finally:
        torch.set_num_threads(before)


def main(specs: list[str]) -> None:
    from ..checkpoint import load_codec

    for spec in specs:
        c = codec_cost(load_codec(spec))
        print(f"{spec}: {c['params_m']:.2f} M parameters, {c['kbps']:.1f} kbps; encode {c['encode_gmac_per_s']:.2f} "
              f"GMAC/s, {1 / c['encode_rtf']:.1f}x real time; decode {c['decode_gmac_per_s']:.2f} GMAC/s, "
              f"{1 / c['decode_rtf']:.1f}x real time (one thread)")


if __name__ == "__main__":
    main(sys.argv[1:])
