"""Every codec speechx knows, by name: the one table that turns a saved codec config back into a codec.

A codec describes itself with `Codec.config()`, a JSON dict whose "kind" names its class; inference
checkpoints and codec training checkpoints store that dict, and `codec_from_config` rebuilds the codec
from it through `KINDS`. `NAMED` holds the codecs built from a name alone (no file): the official
EnCodec and the random-weight codecs used for speed measurements. Files (checkpoints) are read by
`checkpoint.load_codec`, which comes here for the building.

Kinds: the official EnCodec (encodec24.py), the small EnCodec-architecture codec (codec.py), a DAC-style codec
(dac.py) and a Vocos decoder on the frozen tokens of another kind (vocos.py).

Adding a kind: subclass `codec.Codec` in a module of this package with a unique `kind`, `config()`,
and the classmethods `check_config` (raise ValueError on a config no such codec can have, building
nothing) and `from_config` (build it and load its weights), then add the class to `KINDS`. Checkpoints
then carry it, `speechx info` names it, and a checkpoint of a kind this speechx does not know is
refused in one line. If a new decoder keeps the tokens, `token_config_of` and `token_state` say what
decides them (shards and language models stay valid across such codecs). A kind whose tokens a Vocos
decoder can read also has a `config_class` (its config dataclass; the class builds from one, without its
decoder when given decoder=False) and `dequantize(codes)`, and is listed in vocos.BASE_KINDS;
train/codec_train.py trains the kinds it lists.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..codec import Codec, CodecUnavailableError, SmallCodec, SmallCodecConfig
from .dac import DacCodec, DacConfig
from .encodec24 import PretrainedEncodec
from .vocos import VocosCodec, VocosConfig

KINDS: dict[str, type[Codec]] = {cls.kind: cls for cls in (PretrainedEncodec, SmallCodec, DacCodec, VocosCodec)}

RANDOM_SEED = 0  # the random-* codecs' weights: the same on every call and every machine


def _seeded(build: Callable[[], Codec]) -> Codec:
    """An untrained codec, seeded without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build()


NAMED: dict[str, Callable[[], Codec]] = {
    "encodec_24khz": PretrainedEncodec,  # the official weights: hub cache, $SPEECHX_ENCODEC_WEIGHTS or download
    "random-tiny": lambda: _seeded(lambda: SmallCodec(SmallCodecConfig.tiny())),  # speed measurements only
    "random-demo": lambda: _seeded(lambda: SmallCodec(SmallCodecConfig.demo())),
    "random-dac": lambda: _seeded(lambda: DacCodec(DacConfig.demo())),
    "random-vocos": lambda: _seeded(lambda: VocosCodec(VocosConfig.demo(SmallCodec(SmallCodecConfig.demo()).config()))),
}


class CodecConfigError(ValueError):
    """A codec config (or its weights) that no codec of this speechx matches; the message is one line."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def kind_of(config: Any) -> type[Codec]:
    """The codec class `config` names by its "kind"."""
    if not isinstance(config, Mapping):
        raise CodecConfigError(f"malformed codec config: a JSON object was expected, got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in KINDS:
        raise CodecConfigError(f"unknown codec kind {kind!r} (this speechx knows {', '.join(KINDS)})")
    return KINDS[kind]


def check_config(config: Any) -> str:
    """The kind of a well-formed codec config; CodecConfigError otherwise. Builds nothing, loads nothing."""
    cls = kind_of(config)
    try:
        cls.check_config(config)
    except (TypeError, ValueError) as e:
        raise CodecConfigError(f"malformed {cls.kind} codec config: {_first_line(e)}") from None
    return cls.kind


def describe(config: Any) -> str:
    """A well-formed config's kind, and for a decoder on another codec's tokens, whose they are."""
    kind = check_config(config)
    base = config.get("base")
    return f"{kind} on {base['kind']} tokens" if isinstance(base, Mapping) else kind


def token_config(config: Any) -> dict[str, Any]:
    """The part of a codec config that decides its tokens: equal for codecs that make the same tokens
    (a decoder fine-tuned, widened or replaced by a Vocos decoder keeps its shards and language models)."""
    return kind_of(config).token_config_of(config)


def fingerprint(codec: Codec) -> str:
    """Short hash of the config and weights that decide the tokens (`token_config`, Codec.token_state):
    two codecs with one config can still differ, and a decoder fine-tuned, widened or replaced by a Vocos
    decoder keeps it, so shards and language models made with the codec stay valid."""
    h = hashlib.sha256(json.dumps(token_config(codec.config()), sort_keys=True).encode())
    for name, t in sorted(codec.token_state().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def codec_from_config(config: Any, state_dict: Mapping[str, Tensor] | None = None,
                      device: str | torch.device = "cpu") -> Codec:
    """Rebuild the codec that `Codec.config()` described, in eval mode on `device`.

    A codec that `stores_weights` needs its `state_dict`; the official EnCodec finds its own weights
    (the environment, the hub cache, a download) unless one is given.
    """
    cls = kind_of(config)
    check_config(config)
    try:
        codec = cls.from_config(config, state_dict)
    except CodecUnavailableError:
        raise
    except (TypeError, ValueError, RuntimeError) as e:  # load_state_dict: missing, unexpected, mis-shaped
        raise CodecConfigError(f"{cls.kind} codec weights do not match its config: {_first_line(e)}") from None
    return codec.to(device).eval()


def codec_by_name(name: str, device: str | torch.device = "cpu") -> Codec:
    """One of the `NAMED` codecs, in eval mode on `device`."""
    if name not in NAMED:
        raise CodecConfigError(f"unknown codec name {name!r} (known: {', '.join(NAMED)})")
    return NAMED[name]().to(device).eval()
