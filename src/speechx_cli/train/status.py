"""`speechx train status`: every stage found under some folders, how far it is, and what comes next.

A stage is recognised by the file it leaves: prepare.json (a prepared corpus), corpus.json (the
synthetic corpus), settings.json of speechx-shards (a shard set), codec_train.pt / lm_train.pt (a
training run, with its log.jsonl) and a speechx .safetensors (an exported model). Nothing is loaded
but headers, small JSON files and the last line of a log, so status is instant on any corpus size.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MAX_DEPTH = 3
SKIP_FOLDERS = frozenset({"wav", "audio", "noise", "parts", "clips", "noise-work", "noise-sources", ".git",
                          ".venv", "node_modules", "__pycache__"})
RUNNING_SECONDS = 300  # a log written this recently belongs to a run still going


@dataclass(frozen=True)
class Stage:
    kind: str
    path: Path
    state: str
    next: str


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _last_log(run: Path) -> tuple[dict, float | None]:
    """The log's last line and its age in seconds."""
    log = run / "log.jsonl"
    if not log.is_file():
        return {}, None
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - 65536))
        lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    try:
        last = json.loads(lines[-1]) if lines else {}
    except ValueError:
        last = {}
    return last, time.time() - log.stat().st_mtime


def _corpus(path: Path, synthetic: bool) -> Stage:
    settings = _json(path / ("corpus.json" if synthetic else "prepare.json"))
    source = "the synthetic corpus" if synthetic else f"{settings.get('layout', '?')} corpus from {settings.get('source', '?')}"
    has_noise = (path / "noise.jsonl").is_file()
    if not (path / "manifest.jsonl").is_file():
        parts = sorted((path / "parts").glob("*.jsonl"), key=lambda p: p.stat().st_mtime) \
            if (path / "parts").is_dir() else []
        total = f" of {_synthetic_chunks(path, settings)}" if synthetic else ""
        age = time.time() - parts[-1].stat().st_mtime if parts else None
        running = age is not None and age < RUNNING_SECONDS
        again = f"speechx train prepare {settings.get('source', 'SRC')} {path}" if not synthetic else \
            f"speechx train prepare synthetic {path} --format synthetic (same flags)"
        return Stage("corpus", path, f"{source}: {len(parts)}{total} chunks done" +
                     (f"; running (last chunk {age:.0f} s ago)" if running else ", not merged"),
                     "running: wait for it" if running else f"{again}  (resumes)")
    summary = _json(path / "summary.json")
    facts = (f"{summary['utterances']} utterances, {summary['hours']:.2f} h, speakers {summary['speakers']['train']} "
             f"train / {summary['speakers']['dev']} dev, {summary['problems']} problems") if summary else \
        f"{_lines(path / 'manifest.jsonl')} utterances"
    state = f"{source}: {facts}" + ("" if has_noise else "; no noise bank")
    nxt = (f"speechx train tokenize {path} SHARDS --codec-checkpoint CODEC" if has_noise else
           f"speechx train noise NOISE_FOLDER {path}  (or: speechx train noise builtin {path})")
    return Stage("corpus", path, state, nxt)


def _synthetic_chunks(path: Path, settings: dict) -> int | str:
    from .corpus import CorpusConfig, plan_jobs

    try:
        return len(plan_jobs(path, CorpusConfig(**{k: v for k, v in settings.items() if k != "format"})))
    except (TypeError, ValueError):
        return "?"


def _shards(path: Path, settings: dict) -> Stage:
    expected = math.ceil(settings.get("n_examples", 0) / max(1, settings.get("examples_per_shard", 1)))
    have = len(list(path.glob("shard-*.safetensors")))
    index = _json(path / "index.json")
    if index and have >= expected:
        return Stage("shards", path, f"{index['examples']} examples ({index['target_hours']:.2f} h of targets), "
                     f"{settings.get('split')} split, tasks {', '.join(settings.get('tasks', []))}",
                     f"speechx train lm --data {path} --out runs/lm-tts --stage tts")
    return Stage("shards", path, f"{have} of {expected} shards written",
                 f"speechx train tokenize {settings.get('corpus', 'CORPUS')} {path} --codec-checkpoint CODEC  (resumes)")


def _checkpoint_facts(path: Path) -> dict:
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {"step": int(ckpt.get("step", 0)), "config": ckpt.get("config", {})}


def _run(path: Path, kind: str) -> Stage:
    name = "codec_train.pt" if kind == "codec run" else "lm_train.pt"
    facts = _checkpoint_facts(path / name)
    cfg, step = facts["config"], facts["step"]
    total = cfg.get("steps") or cfg.get("max_steps") or 0
    last, age = _last_log(path)
    running = age is not None and age < RUNNING_SECONDS and step < total
    loss = f", loss {last['loss']:.3f}" if isinstance(last.get("loss"), (int, float)) else ""
    stage = f" (stage {cfg['stage']})" if kind == "lm run" else ""
    state = f"step {step} of {total}{stage}{loss}" + (f"; running (log {age:.0f} s ago)" if running else "")
    if step < total:
        nxt = "running: wait, or follow its log.jsonl" if running else \
            f"speechx train {'codec' if kind == 'codec run' else 'lm'} --out {path} --resume" + \
            (" (with its --data flags)" if kind == "codec run" else "")
    elif kind == "codec run":
        nxt = f"speechx train tokenize CORPUS SHARDS --codec-checkpoint {path / name}"
    elif cfg.get("stage") == "tts":
        nxt = f"speechx train lm --data {cfg.get('data')} --out {path.parent / 'lm-all'} --stage all --init {path / name}"
    else:
        nxt = f"speechx train export {path / name} model.safetensors --codec-checkpoint CODEC"
    return Stage(kind, path, state, nxt)


def _model(path: Path) -> Stage | None:
    from .. import checkpoint

    try:
        info = json.loads(checkpoint.read_header(path).get("info", "{}"))
    except (OSError, ValueError):
        return None
    state = f"exported model, step {info.get('step', '?')}, stage {info.get('stage', '?')}"
    return Stage("model", path, state, f'speechx tts "Hello there." out.wav --prompt VOICE.wav --checkpoint {path}')


def find_stages(root: Path, depth: int = 0) -> Iterator[Stage]:
    """The stages in root and below it (depth-limited; a stage's own folders are not searched)."""
    root = Path(root)
    if root.is_file():
        if root.suffix == ".safetensors" and (stage := _model(root)):
            yield stage
        return
    if (root / "prepare.json").is_file() or (root / "corpus.json").is_file():
        yield _corpus(root, synthetic=not (root / "prepare.json").is_file())
        return
    settings = _json(root / "settings.json")
    if settings.get("format") == "speechx-shards":
        yield _shards(root, settings)
        return
    for name, kind in (("codec_train.pt", "codec run"), ("lm_train.pt", "lm run")):
        if (root / name).is_file():
            yield _run(root, kind)
            return
    if depth >= MAX_DEPTH or not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if child.name in SKIP_FOLDERS or child.name.startswith("."):
            continue
        if child.is_dir() or child.suffix == ".safetensors":
            yield from find_stages(child, depth + 1)
