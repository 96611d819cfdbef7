"""The official EnCodec 24 kHz at 6 kbps (8 codebooks x 1024, 75 frames/s), the codec of the SpeechX paper.

Its weights come from a given file, $SPEECHX_ENCODEC_WEIGHTS, the torch hub cache or encodec's own
download (with a socket timeout, so an offline machine fails in seconds with a message saying where to
put the file); checkpoints never store them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..codec import Codec, CodecUnavailableError, quiet_weight_norm

from encodec import EncodecModel  # after ..codec, which makes it importable without a working torchaudio

ENCODEC_KIND = "encodec_24khz"
ENCODEC_BANDWIDTH_KBPS = 6.0  # 8 codebooks at 75 frames/s
ENCODEC_CHECKPOINT_NAME = "encodec_24khz-d7cc33bc.th"
ENCODEC_URL = "https://dl.fbaipublicfiles.com/encodec/v0/" + ENCODEC_CHECKPOINT_NAME
ENCODEC_WEIGHTS_ENV = "SPEECHX_ENCODEC_WEIGHTS"
DOWNLOAD_TIMEOUT_S = 5.0  # per socket operation: offline machines fail in seconds, never hang


def encodec_hub_path() -> Path:
    """Where torch hub (and encodec's download) keeps the official 24 kHz weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / ENCODEC_CHECKPOINT_NAME


def _fix_hint() -> str:
    return (f"put {ENCODEC_CHECKPOINT_NAME} (from {ENCODEC_URL}) at {encodec_hub_path()}, "
            f"or set {ENCODEC_WEIGHTS_ENV}=/path/to/{ENCODEC_CHECKPOINT_NAME}")


def resolve_encodec_weights(weights: str | Path | None = None) -> Path | None:
    """First of: `weights`, $SPEECHX_ENCODEC_WEIGHTS, the torch hub cache; None if none is set.

    A path that is given but missing is an error rather than a reason to download.
    """
    for given, origin in ((weights, "weights argument"),
                          (os.environ.get(ENCODEC_WEIGHTS_ENV) or None, f"${ENCODEC_WEIGHTS_ENV}")):
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                raise CodecUnavailableError(
                    f"EnCodec weights file {path} (from {origin}) does not exist: {_fix_hint()}")
            return path
    hub = encodec_hub_path()
    return hub if hub.is_file() else None


def _load_state_dict_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


@contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _build_encodec_24khz(weights: Path | None, allow_download: bool,
                         timeout_s: float) -> EncodecModel:
    if weights is not None:
        with quiet_weight_norm():
            model = EncodecModel.encodec_model_24khz(pretrained=False)
        model.load_state_dict(_load_state_dict_file(weights))
        return model
    if not allow_download:
        raise CodecUnavailableError(f"EnCodec 24 kHz weights not found: {_fix_hint()}")
    try:
        with quiet_weight_norm(), _socket_timeout(timeout_s):
            return EncodecModel.encodec_model_24khz(pretrained=True)
    except Exception as err:  # URLError, timeouts, checksum mismatch
        reason = str(err).replace("\n", " ")[:200]
        raise CodecUnavailableError(
            f"EnCodec 24 kHz weights not found and download failed ({reason}): "
            f"{_fix_hint()}") from err


class PretrainedEncodec(Codec):
    """Official EnCodec 24 kHz at 6 kbps: 8 codebooks x 1024 entries, hop 320, 75 frames/s."""

    kind = ENCODEC_KIND
    stores_weights = False

    def __init__(self, weights: str | Path | None = None, *, allow_download: bool = True,
                 download_timeout_s: float = DOWNLOAD_TIMEOUT_S,
                 state_dict: Mapping[str, Tensor] | None = None):
        super().__init__()
        if state_dict is not None:  # tests and callers that already hold the weights
            with quiet_weight_norm():
                model = EncodecModel.encodec_model_24khz(pretrained=False)
            model.load_state_dict(state_dict)
        else:
            model = _build_encodec_24khz(resolve_encodec_weights(weights), allow_download,
                                         download_timeout_s)
        model.set_target_bandwidth(ENCODEC_BANDWIDTH_KBPS)
        self.model = model.eval()
        self.sample_rate = int(model.sample_rate)
        self.hop_length = int(model.encoder.hop_length)
        self.n_codebooks = model.quantizer.get_num_quantizers_for_bandwidth(
            model.frame_rate, ENCODEC_BANDWIDTH_KBPS)
        self.codebook_size = int(model.quantizer.bins)

    def _encode(self, wav: Tensor) -> Tensor:
        frames = self.model.encode(wav[:, None])  # one segment: [(codes (B, K, F), None)]
        return frames[0][0]

    def _decode(self, codes: Tensor) -> Tensor:
        return self.model.decode([(codes, None)])[:, 0]  # (B, F*hop)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "bandwidth": ENCODEC_BANDWIDTH_KBPS}

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        unknown = set(config) - {"kind", "bandwidth"}
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}")
        bandwidth = float(config.get("bandwidth", ENCODEC_BANDWIDTH_KBPS))
        if bandwidth != ENCODEC_BANDWIDTH_KBPS:
            raise ValueError(f"only {ENCODEC_BANDWIDTH_KBPS} kbps EnCodec is supported, got {bandwidth}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any],
                    state_dict: Mapping[str, Tensor] | None = None) -> PretrainedEncodec:
        """Checkpoints never hold its weights: without `state_dict` they are found as in __init__."""
        cls.check_config(config)
        return cls(state_dict=state_dict)
