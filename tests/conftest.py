"""Shared fixtures: a tiny untrained checkpoint (tiny codec + tiny AR/NAR) and short test audio."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from speechx_cli import checkpoint
from speechx_cli.codec import SmallCodec, SmallCodecConfig
from speechx_cli.model import ARModel, ModelConfig, NARModel

SR = 16000


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models run several times faster on one torch thread, and far faster when the 2 cores
    are shared with another busy process (two threads then fight over one core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_parts(seed: int = 0):
    torch.manual_seed(seed)
    codec = SmallCodec(SmallCodecConfig.tiny()).eval()
    # an untrained quantizer's codebooks are all zero until k-means sees data: every input would encode to
    # code 0 and every code decode alike. One training pass over varied audio initialises them, so that
    # the codes carry the audio and tests comparing outputs see what the models generate.
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(4 * SR) / SR
    wav = 0.3 * torch.sin(2 * torch.pi * (100 + 400 * t) * t) + 0.05 * torch.randn(len(t), generator=g)
    with torch.no_grad():
        codec.train()(wav[None])
    codec.eval()
    cfg = ModelConfig.tiny(codebook_size=codec.codebook_size, n_codebooks=codec.n_codebooks)
    return ARModel(cfg).eval(), NARModel(cfg).eval(), codec


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    ar, nar, codec = tiny_parts()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return checkpoint.save(path, ar, nar, codec, info={"note": "untrained test model"})


def tone(seconds: float, sr: int = SR, freq: float = 220.0, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (x + noise * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def wav_file(tmp_path) -> Path:
    p = tmp_path / "in.wav"
    sf.write(p, tone(1.0), SR)
    return p
