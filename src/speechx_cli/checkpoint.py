"""Checkpoint files, and the one reader of each kind.

Inference checkpoints: one safetensors file (no pickle: loading never runs code). Tensors: ``ar.*``,
``nar.*``, for a codec that stores its weights ``codec.*``, and optionally frame detectors (detector.py):
``detector.*`` (remove-speech's speech-free frames), ``detector_ns.*`` (denoise's noise-free frames),
``detector_tse.*`` and ``detector_tse_silent.*`` (extract-speaker's target-alone and target-silent frames),
``detector_tse_gain.*`` (extract-speaker's target share of each band, for its mask).
Header metadata (strings): format, format_version, model_config, codec_config (its "kind" is a row of
codecs.KINDS), phoneme_table, special_tokens, info (JSON), and detector_config / detector_<kind>_config for
each detector it holds. The official pretrained EnCodec is referenced by its config only; its weights stay
where the encodec package keeps them.

Training checkpoints (train/loop.py): torch.save of tensors and plain containers, read back with
weights_only=True: "kind" (CODEC_TRAINING or LM_TRAINING), "version", "step" and the trainer's state.
A codec training checkpoint holds "codec_config" and the codec's weights in "model".

`load_codec` finds a codec by name or in either kind of file.
"""

from __future__ import annotations

import json
import os
import site
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import codecs
from . import detector as D
from .codec import Codec
from .files import atomic_path
from .model import ARModel, ModelConfig, NARModel
from .prompts import SPECIAL_TOKENS
from .text import PHONEME_TABLE, check_table

FORMAT = "speechx-inference"
FORMAT_VERSION = 1
DEFAULT_NAME = "speechx-demo.safetensors"
ENV_VAR = "SPEECHX_CHECKPOINT"
CODEC_TRAINING = "speechx_codec_training"
LM_TRAINING = "speechx_lm_training"
TRAINING_VERSION = 1
TRAINING_NAMES = {CODEC_TRAINING: "a codec training checkpoint", LM_TRAINING: "an LM training checkpoint"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line for the user."""


@dataclass
class SpeechX:
    """Everything one inference needs, built from one checkpoint."""

    ar: ARModel
    nar: NARModel
    codec: Codec
    config: ModelConfig
    phoneme_table: list[str]
    info: dict = field(default_factory=dict)
    detectors: dict[str, D.FrameDetector] = field(default_factory=dict)  # by task (detector.TASKS): optional

    @property
    def device(self) -> torch.device:
        return next(self.ar.parameters()).device


REPO_CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"  # a source checkout's


def default_path() -> Path | None:
    """SPEECHX_CHECKPOINT, else the shipped demo checkpoint: the source checkout's checkpoints/ (an
    editable install), else the copy a regular install puts in <prefix>/share/speechx/ (pyproject's
    data-files; the prefix is the environment's, or the user base for `pip install --user`)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    roots = [Path(sys.prefix)] + ([Path(site.USER_BASE)] if site.USER_BASE else [])
    candidates = [REPO_CHECKPOINTS / DEFAULT_NAME] + [r / "share" / "speechx" / DEFAULT_NAME for r in roots]
    return next((c for c in candidates if c.exists()), None)


def detector_group(task: str) -> str:
    """The tensor prefix of a task's detector: "detector" for remove-speech (the first, kept), else detector_<task>."""
    return "detector" if task == "sr" else f"detector_{task}"


def save(path: str | Path, ar: ARModel, nar: NARModel, codec, info: dict | None = None,
         half: bool = False, detectors: Sequence[D.FrameDetector] = ()) -> Path:
    """Write an inference checkpoint atomically (temp file in the same folder, then rename), with at most
    one frame detector of each kind (detector.TASKS).

    half=True stores floating-point tensors as float16 (half the size; loading casts back)."""
    path = Path(path)
    tensors = {f"ar.{k}": v for k, v in ar.state_dict().items()}
    tensors |= {f"nar.{k}": v for k, v in nar.state_dict().items()}
    if codec.stores_weights:
        tensors |= {f"codec.{k}": v for k, v in codec.state_dict().items()}
    detector_meta = {}
    for det in detectors:
        group = detector_group(det.cfg.task)
        if f"{group}_config" in detector_meta:
            raise CheckpointError(f"two detectors for {det.cfg.task}: give one")
        if (det.cfg.sample_rate, det.cfg.hop_length) != (codec.sample_rate, codec.hop_length):
            raise CheckpointError(f"the {det.cfg.task} detector reads {det.cfg.sample_rate} Hz in frames of "
                                  f"{det.cfg.hop_length}, the codec makes {codec.sample_rate} Hz in frames of "
                                  f"{codec.hop_length}: train it with the codec's")
        tensors |= {f"{group}.{k}": v for k, v in det.state_dict().items()}
        detector_meta[f"{group}_config"] = det.cfg.to_json()
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "model_config": json.dumps(ar.cfg.to_dict()),
        "codec_config": json.dumps(codec.config()),
        "phoneme_table": json.dumps(list(PHONEME_TABLE)),
        "special_tokens": json.dumps(list(SPECIAL_TOKENS)),
        "info": json.dumps(info or {}),
    } | detector_meta
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_header(path: str | Path) -> dict:
    """Validated header metadata of a checkpoint, without loading any weights."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a speechx checkpoint (unreadable safetensors file: {e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a speechx inference checkpoint (format={meta.get('format')!r})")
    if meta.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: checkpoint format version {meta.get('format_version')} is not supported "
            f"(this speechx reads version {FORMAT_VERSION})")
    specials = json.loads(meta["special_tokens"])
    if specials != list(SPECIAL_TOKENS[: len(specials)]):
        raise CheckpointError(f"{path}: special-token slots differ from this speechx's")
    codec_config(path, meta)
    return meta


def codec_config(path: str | Path, meta: dict) -> dict:
    """The header's codec config, checked against the codec kinds this speechx knows."""
    try:
        config = json.loads(meta["codec_config"])
        codecs.check_config(config)
    except (KeyError, json.JSONDecodeError, codecs.CodecConfigError) as e:
        reason = e if isinstance(e, codecs.CodecConfigError) else f"malformed codec config ({type(e).__name__})"
        raise CheckpointError(f"{path}: {reason}") from None
    return config


def read_tensors(path: str | Path, groups: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
    """A checkpoint's tensors by key prefix: "ar.head.weight" -> parts["ar"]["head.weight"], one dict
    per group asked for; float16/bfloat16 (a --half export) back to float32."""
    parts: dict[str, dict[str, torch.Tensor]] = {g: {} for g in groups}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                group, _, name = key.partition(".")
                if group in parts:
                    t = f.get_tensor(key)
                    parts[group][name] = t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or damaged checkpoint ({e})") from None
    return parts


def _build(cls, cfg: ModelConfig, state: dict[str, torch.Tensor], device) -> torch.nn.Module:
    with torch.device("meta"):
        model = cls(cfg)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights do not match the model config: {str(e).splitlines()[0]}") from None
    model.cond.init_buffers()  # the sinusoid table is not saved: compute it for real
    return model.to(device).eval()


def load(path: str | Path, device: str | torch.device = "cpu") -> SpeechX:
    """Load an inference checkpoint onto `device`."""
    meta = read_header(path)
    try:
        check_table(json.loads(meta["phoneme_table"]))
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    cfg = ModelConfig(**json.loads(meta["model_config"]))
    groups = {task: detector_group(task) for task in D.TASKS}
    parts = read_tensors(path, ("ar", "nar", "codec", *groups.values()))
    ar = _build(ARModel, cfg, parts["ar"], device)
    nar = _build(NARModel, cfg, parts["nar"], device)
    codec = _codec(path, codec_config(path, meta), parts["codec"], device)
    if codec.n_codebooks != cfg.n_codebooks or codec.codebook_size != cfg.codebook_size:
        raise CheckpointError(f"{path}: codec ({codec.n_codebooks} x {codec.codebook_size}) does not "
                              f"match the model ({cfg.n_codebooks} x {cfg.codebook_size})")
    detectors = {}
    for task, group in groups.items():
        if f"{group}_config" in meta:
            try:
                detectors[task] = D.build(meta[f"{group}_config"], parts[group]).to(device)
            except ValueError as e:
                raise CheckpointError(f"{path}: {e}") from None
            if detectors[task].cfg.task != task:
                raise CheckpointError(f"{path}: {group} holds a {detectors[task].cfg.task} detector")
    return SpeechX(ar, nar, codec, cfg, json.loads(meta["phoneme_table"]), json.loads(meta.get("info", "{}")),
                   detectors)


def _codec(path: str | Path, config: dict, state: dict[str, torch.Tensor], device) -> Codec:
    try:
        return codecs.codec_from_config(config, state or None, device)
    except codecs.CodecConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _detectors(old: SpeechX, new: Sequence[D.FrameDetector]) -> list[D.FrameDetector]:
    """`new`, and `old`'s detectors of the tasks `new` has none for."""
    tasks = {d.cfg.task for d in new}
    return list(new) + [d for task, d in old.detectors.items() if task not in tasks]


def replace_codec(src: str | Path, codec: Codec, dst: str | Path, info: dict | None = None,
                  half: bool = False, detectors: Sequence[D.FrameDetector] = ()) -> Path:
    """Write `src`'s models with another codec that makes the same tokens (a decoder fine-tuned or
    replaced, e.g. a Vocos decoder on the tokens of `src`'s codec): no language model to retrain. With
    `detectors`, those instead of `src`'s of the same tasks."""
    old = load(src)
    if codecs.fingerprint(codec) != codecs.fingerprint(old.codec):
        raise CheckpointError(f"{src}: the new codec's tokens differ from those its language model was trained on")
    return save(dst, old.ar, old.nar, codec, info={**old.info, **(info or {})}, half=half,
                detectors=_detectors(old, detectors))


def with_detectors(src: str | Path, detectors: Sequence[D.FrameDetector], dst: str | Path,
                   info: dict | None = None, half: bool = False, keep: bool = True) -> Path:
    """Write `src`'s models and codec with these frame detectors, and (keep) `src`'s of the other tasks."""
    old = load(src)
    return save(dst, old.ar, old.nar, old.codec, info={**old.info, **(info or {})}, half=half,
                detectors=_detectors(old, detectors) if keep else detectors)


def load_codec(spec: str | Path, device: str | torch.device = "cpu") -> Codec:
    """A codec by name (codecs.NAMED: encodec_24khz, random-tiny, random-demo) or from a file: the codec
    of an inference checkpoint (.safetensors) or of a codec training checkpoint (a run's codec_train.pt)."""
    if str(spec) in codecs.NAMED:
        return codecs.codec_by_name(str(spec), device)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"codec checkpoint {path} not found")
    if path.suffix == ".safetensors":
        return _codec(path, codec_config(path, read_header(path)), read_tensors(path, ("codec",))["codec"], device)
    ckpt = read_training(path, CODEC_TRAINING)
    return _codec(path, ckpt["codec_config"], ckpt["model"], device)


# ---- training checkpoints -----------------------------------------------------------------------

def save_training(path: str | Path, state: dict) -> Path:
    """Write a training checkpoint atomically: a kill mid-write leaves the previous one intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def read_training(path: str | Path, kind: str) -> dict:
    """A training checkpoint of `kind` (CODEC_TRAINING or LM_TRAINING), on the CPU; no code runs."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise CheckpointError(f"{path} is not {TRAINING_NAMES[kind]}")
    if ckpt.get("version") != TRAINING_VERSION:
        raise CheckpointError(f"{path}: {TRAINING_NAMES[kind]} of version {ckpt.get('version')} "
                              f"(this speechx reads version {TRAINING_VERSION})")
    return ckpt


def training_step(path: str | Path, kind: str) -> int:
    """The step a training checkpoint of `kind` was saved at; 0 when there is none yet."""
    return int(read_training(path, kind)["step"]) if Path(path).exists() else 0
