"""Making encoded training examples: simulated waveforms -> codec codes (dataset.EncodedExample), in
memory or in shard files (read back by dataset.ShardSet).

Encoding mixtures through the codec costs far more than the LM step that reads them, so it is
done ahead of training. Example i of a shard set is `Simulator.example(i, seed, task_i)` with
task_i = tasks[i % len(tasks)] (every task equally often), turned into codes:

    tts         text, C(enrollment)                    -> C(target)
    ns / sr     text or none, C(mixture)               -> C(s) / C(n)
    tse         text or none, C(enrollment), C(mixture) -> C(s1)
    edit_clean  text, pre / <mask> / post               -> C(edited utterance)
    edit_noisy  text, pre / C(noisy middle) / post      -> C(edited utterance)
Edits encode the target once and slice it: pre = codes[:floor(pre_end / hop)],
post = codes[ceil(post_start / hop):]. Prompts are rebuilt by prompts.py at load time, so the
stored pieces never depend on the sequence layout.

Batched encoding pads segments of similar length to a common length; with a non-causal codec the
padding can change the last ~2 frames of a segment (its look-ahead), never the others.

    speechx train tokenize data/corpus data/shards/train --codec-checkpoint ckpt \
        --variants 6 --split train --seed 0          (train/cli.py; tokenize.py shares the shards out over
                                                      torchrun's ranks)

OUT_DIR holds shard-NNNNN.safetensors (flat tensors + offsets, no pickle) and index.json (settings,
codec config and fingerprint, task counts, frames). A killed run resumes: finished shards are kept.
Example i does not depend on how many examples a set holds, so a smaller set of the same stream
(`--reuse BIGGER_SET --max-examples N`) links the whole shards the bigger one has instead of
encoding them again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from ..codecs import fingerprint as codec_fingerprint
from ..files import atomic_path, claim_folder
from ..prompts import Task
from .dataset import FORMAT, FORMAT_VERSION, INDEX_NAME, TASKS, EncodedExample, pack

SETTINGS_NAME = "settings.json"
EDIT_TASKS = (Task.EDIT_CLEAN, Task.EDIT_NOISY)
NOISE_TASKS = (Task.NS, Task.SR, Task.EDIT_NOISY)
DEFAULT_BATCH_SECONDS = 160.0  # audio per codec call


# ---- waveform Example -> EncodedExample ---------------------------------------------------------

def _waves(example) -> dict[str, np.ndarray]:
    """The waveforms of a simulate.Example that go through the codec, by segment name."""
    waves = {"target": example.target}
    if example.task in (Task.NS, Task.SR, Task.TSE):
        waves["source"] = example.source
    if example.task in (Task.TTS, Task.TSE):
        waves["enrollment"] = example.enrollment
    if example.task == Task.EDIT_NOISY:
        waves["middle"] = example.middle
    return waves


def encode_waves(codec, waves: list[np.ndarray], batch_seconds: float = DEFAULT_BATCH_SECONDS) -> list[Tensor]:
    """(N_i,) waveforms -> (F_i, K) codes, encoded in length-sorted, zero-padded batches."""
    budget = max(1, int(batch_seconds * codec.sample_rate))
    order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
    out: list[Tensor | None] = [None] * len(waves)
    start = 0
    while start < len(order):
        longest = max(len(waves[order[start]]), 1)
        group = order[start: start + max(1, budget // longest)]  # sorted: the first is the longest
        batch = torch.zeros(len(group), longest)
        for row, i in enumerate(group):
            batch[row, : len(waves[i])] = torch.from_numpy(np.asarray(waves[i], np.float32))
        codes = codec.encode(batch).cpu()  # (B, K, F)
        for row, i in enumerate(group):
            out[i] = codes[row, :, : codec.frames_for(max(len(waves[i]), 1))].T.contiguous()  # (F_i, K)
        start += len(group)
    return out  # type: ignore[return-value]


def encode_examples(examples: list, codec, encode_text: Callable[[str], list[int]] | None = None,
                    batch_seconds: float = DEFAULT_BATCH_SECONDS) -> list[EncodedExample]:
    """simulate.Example list -> EncodedExample list (one batched codec pass for all of them)."""
    if encode_text is None:
        from ..text import encode as encode_text
    jobs = [(i, name, wave) for i, ex in enumerate(examples) for name, wave in _waves(ex).items()]
    codes = encode_waves(codec, [w for _, _, w in jobs], batch_seconds)
    parts: list[dict[str, Tensor]] = [{} for _ in examples]
    for (i, name, _), c in zip(jobs, codes):
        parts[i][name] = c
    out = []
    for ex, seg in zip(examples, parts):
        text = torch.tensor(encode_text(ex.text) if ex.text else [], dtype=torch.long)
        pre = post = 0
        if ex.task in EDIT_TASKS:
            pre = min(len(seg["target"]), ex.pre_end // codec.hop_length)
            post = max(pre, min(len(seg["target"]), math.ceil(ex.post_start / codec.hop_length)))
        out.append(EncodedExample(ex.task, text, seg["target"], seg.get("source"), seg.get("enrollment"),
                                  seg.get("middle"), pre, post))
    return out


def task_cycle(simulator, tasks: Iterable[Task] | None = None) -> tuple[Task, ...]:
    """The tasks the shard stream cycles through (edits only when the corpus has edit pairs, noise tasks
    only when it has a noise bank)."""
    chosen = tuple(Task(t) for t in (tasks or TASKS))
    if not simulator.corpus.edited:
        chosen = tuple(t for t in chosen if t not in EDIT_TASKS)
    if not simulator.corpus.noises:  # no noise bank: nothing to mix speech with
        chosen = tuple(t for t in chosen if t not in NOISE_TASKS)
    if not chosen:
        raise ValueError("no task can be simulated from this corpus")
    return chosen


def simulate(simulator, indices: Iterable[int], seed: int, tasks: tuple[Task, ...]) -> list:
    """Waveform examples of the stream (seed, index); one that cannot be simulated is skipped."""
    out = []
    for i in indices:
        try:
            out.append((i, simulator.example(int(i), seed, tasks[int(i) % len(tasks)])))
        except ValueError:
            continue
    return out


def build_examples(simulator, codec, n: int, seed: int = 0, tasks: Iterable[Task] | None = None,
                   encode_text=None, start: int = 0) -> list[EncodedExample]:
    """In-memory path: examples start..start+n of the same stream a shard set holds."""
    cycle = task_cycle(simulator, tasks)
    pairs = simulate(simulator, range(start, start + n), seed, cycle)
    return encode_examples([ex for _, ex in pairs], codec, encode_text)


# ---- shard files --------------------------------------------------------------------------------

def _atomic_save(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def shard_stats(examples: list[EncodedExample], frame_rate: float) -> dict[str, Any]:
    return {"examples": len(examples), "tasks": dict(Counter(e.task.value for e in examples)),
            "target_frames": int(sum(len(e.target) for e in examples)),
            "target_seconds": sum(len(e.target) for e in examples) / frame_rate}


# ---- preparation --------------------------------------------------------------------------------

def n_examples(n_utterances: int, opts: "ShardOptions") -> int:
    n = n_utterances * opts.variants
    return n if opts.max_examples is None else min(n, opts.max_examples)


@dataclass(frozen=True)
class ShardOptions:
    variants: int = 6  # examples per corpus utterance (n_examples = utterances x variants)
    max_examples: int | None = None  # cap on n_examples (a quick run on part of a corpus)
    split: str = "train"
    seed: int = 0
    examples_per_shard: int = 2000
    chunk: int = 128  # examples simulated, then encoded together
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    tasks: tuple[str, ...] = tuple(t.value for t in TASKS)
    workers: int = 0  # simulation processes (DataLoader workers)


class _Stream(torch.utils.data.Dataset):
    """Simulated waveform examples of one chunk per item (for DataLoader workers)."""

    def __init__(self, simulator, chunks: list[range], seed: int, tasks: tuple[Task, ...]):
        self.simulator, self.chunks, self.seed, self.tasks = simulator, chunks, seed, tasks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> list:
        return simulate(self.simulator, self.chunks[i], self.seed, self.tasks)


def _as_is(item):
    return item


def _settings(codec, opts: ShardOptions, n_examples: int, cycle: tuple[Task, ...], corpus_dir: Path) -> dict:
    return {"format": FORMAT, "version": FORMAT_VERSION, "codec": codec.config(),
            "codec_fingerprint": codec_fingerprint(codec), "corpus": str(Path(corpus_dir).resolve()),
            "split": opts.split, "seed": opts.seed, "variants": opts.variants, "n_examples": n_examples,
            "examples_per_shard": opts.examples_per_shard, "tasks": [t.value for t in cycle],
            "codebook_size": codec.codebook_size, "n_codebooks": codec.n_codebooks,
            "frame_rate": codec.frame_rate}


def _check_settings(out_dir: Path, settings: dict, force: bool) -> None:
    def clear() -> None:
        for old in out_dir.glob("shard-*.safetensors"):
            old.unlink()
        (out_dir / INDEX_NAME).unlink(missing_ok=True)

    claim_folder(out_dir, SETTINGS_NAME, settings, force,
                 f"{out_dir} holds shards prepared with other settings or another codec; use --force to replace them",
                 clear)


def link_shared_shards(src_dir: Path, out_dir: Path, settings: dict) -> int:
    """Hard-link (or copy) into out_dir the shards that src_dir, a set of the same stream, holds
    whole for both sets; returns how many stream positions they cover. Chunks never cross a shard
    boundary, so with the same chunk and batch sizes such a shard was simulated and encoded from the
    same batches: it is the same file."""
    theirs = json.loads((Path(src_dir) / SETTINGS_NAME).read_text())
    differ = sorted(k for k in settings.keys() | theirs.keys()
                    if k not in ("n_examples", "variants") and settings.get(k) != theirs.get(k))
    if differ:
        raise ValueError(f"{src_dir} holds another stream of examples (differs in: {', '.join(differ)})")
    per = settings["examples_per_shard"]
    linked = 0
    for shard in range(min(settings["n_examples"], theirs["n_examples"]) // per):
        name = f"shard-{shard:05d}.safetensors"
        if (Path(src_dir) / name).exists() and not (out_dir / name).exists():
            try:
                os.link(Path(src_dir) / name, out_dir / name)  # shards are replaced, never rewritten
            except OSError:
                shutil.copyfile(Path(src_dir) / name, out_dir / name)
            linked += per
    return linked


@dataclass
class ShardPlan:
    """The example stream of a shard set: its simulator, task cycle, length and settings."""

    simulator: Any
    cycle: tuple[Task, ...]
    n: int
    settings: dict

    def shards(self, per: int) -> range:
        return range(math.ceil(self.n / per))


def plan_shards(corpus_dir: Path, codec, opts: ShardOptions = ShardOptions(), simulation=None) -> ShardPlan:
    """The stream `opts` asks of the corpus (simulation: simulate.SimulationOptions, default the simulator's)."""
    from .simulate import Corpus, SimulationOptions, Simulator

    simulation = simulation or SimulationOptions()
    corpus = Corpus.load(Path(corpus_dir), opts.split, sample_rate=codec.sample_rate)
    simulator = Simulator(corpus, simulation)
    cycle = task_cycle(simulator, [Task(t) for t in opts.tasks])
    n = n_examples(len(corpus.utterances), opts)
    settings = _settings(codec, opts, n, cycle, corpus_dir)
    settings["simulation"] = json.loads(json.dumps(asdict(simulation), default=str))
    return ShardPlan(simulator, cycle, n, settings)


def open_shard_set(out_dir: Path, plan: ShardPlan, *, force: bool = False, reuse: Path | None = None) -> int:
    """Make out_dir the plan's set (refusing another one's shards without force) and link the shards
    `reuse` holds; returns the stream positions linked. One process does this before any encodes."""
    _check_settings(Path(out_dir), plan.settings, force)
    return link_shared_shards(reuse, Path(out_dir), plan.settings) if reuse is not None else 0


def missing_shards(out_dir: Path, plan: ShardPlan, per: int, part: tuple[int, int] = (0, 1)) -> list[int]:
    """The shards not yet written that belong to part i of n (shard s goes to part s % n)."""
    i, parts = part
    return [s for s in plan.shards(per) if s % parts == i and not (Path(out_dir) / f"shard-{s:05d}.safetensors").exists()]


def encode_shards(out_dir: Path, plan: ShardPlan, codec, opts: ShardOptions, todo: list[int], *,
                  on_progress: Callable[[dict], None] | None = None,
                  encode_text: Callable[[str], list[int]] | None = None) -> dict:
    """Simulate and encode the shards `todo` of the plan's stream; returns the rate of this run."""
    per, n = opts.examples_per_shard, plan.n
    chunks = [range(a, min(a + opts.chunk, (s + 1) * per, n)) for s in todo
              for a in range(s * per, min((s + 1) * per, n), opts.chunk)]
    loader = torch.utils.data.DataLoader(_Stream(plan.simulator, chunks, opts.seed, plan.cycle), batch_size=None,
                                         num_workers=opts.workers, collate_fn=_as_is)
    rate = {"examples": 0, "audio_seconds": 0.0, "encode_seconds": 0.0, "skipped": 0}
    started, pending = time.perf_counter(), {}
    for chunk, pairs in zip(chunks, loader):
        t0 = time.perf_counter()
        encoded = encode_examples([ex for _, ex in pairs], codec, encode_text, opts.batch_seconds)
        rate["encode_seconds"] += time.perf_counter() - t0
        rate["audio_seconds"] += sum(len(w) for _, ex in pairs for w in _waves(ex).values()) / codec.sample_rate
        rate["examples"] += len(pairs)
        rate["skipped"] += len(chunk) - len(pairs)
        shard = chunk.start // per
        pending.setdefault(shard, []).extend(zip([i for i, _ in pairs], encoded))
        if chunk.stop == min((shard + 1) * per, n):  # last chunk of this shard
            _write_shard(out_dir, shard, pending.pop(shard), codec)
        rate["wall_seconds"] = time.perf_counter() - started
        if on_progress:
            on_progress(dict(rate, done=len(chunk)))
    rate["wall_seconds"] = time.perf_counter() - started
    return rate


def prepare_shards(corpus_dir: Path, out_dir: Path, codec, opts: ShardOptions = ShardOptions(), *,
                   force: bool = False, on_progress: Callable[[dict], None] | None = None,
                   encode_text: Callable[[str], list[int]] | None = None, simulation=None,
                   reuse: Path | None = None) -> dict:
    """Write every missing shard of the stream, then index.json; returns the rate summary.

    encode_text: phoneme ids of a text (default speechx_cli.text.encode);
    simulation: simulate.SimulationOptions (default: the simulator's, for opts.split);
    reuse: a shard set of the same stream whose whole shards are linked instead of encoded.
    (train/tokenize.py runs the same steps over several processes.)
    """
    out_dir = Path(out_dir)
    plan = plan_shards(corpus_dir, codec, opts, simulation)
    reused = open_shard_set(out_dir, plan, force=force, reuse=reuse)
    if on_progress and reused:
        on_progress({"examples": 0, "audio_seconds": 0.0, "encode_seconds": 0.0, "skipped": 0, "done": reused,
                     "wall_seconds": 0.0})
    rate = encode_shards(out_dir, plan, codec, opts, missing_shards(out_dir, plan, opts.examples_per_shard),
                         on_progress=on_progress, encode_text=encode_text)
    return summarize_rate(rate, reused, write_index(out_dir))


def summarize_rate(rate: dict, reused: int, index: dict) -> dict:
    wall = max(rate["wall_seconds"], 1e-9)
    return {**rate, "reused": reused, "wall_seconds": wall, "examples_per_s": rate["examples"] / wall,
            "audio_seconds_per_s": rate["audio_seconds"] / wall, "index": index}


def _write_shard(out_dir: Path, shard: int, items: list[tuple[int, EncodedExample]], codec) -> None:
    if not items:
        return
    ids, examples = [i for i, _ in items], [e for _, e in items]
    meta = {"format": FORMAT, "stats": json.dumps(shard_stats(examples, codec.frame_rate))}
    _atomic_save(pack(examples, ids, codec.codebook_size), out_dir / f"shard-{shard:05d}.safetensors", meta)


def write_index(out_dir: Path) -> dict:
    """index.json from settings.json and each shard's own statistics."""
    out_dir = Path(out_dir)
    index = json.loads((out_dir / SETTINGS_NAME).read_text())
    shards, tasks, frames, seconds = [], Counter(), 0, 0.0
    for path in sorted(out_dir.glob("shard-*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            stats = json.loads(f.metadata()["stats"])
        shards.append({"file": path.name, **stats})
        tasks.update(stats["tasks"])
        frames += stats["target_frames"]
        seconds += stats["target_seconds"]
    index |= {"shards": shards, "examples": sum(s["examples"] for s in shards), "task_counts": dict(tasks),
              "target_frames": frames, "target_hours": seconds / 3600}
    with atomic_path(out_dir / INDEX_NAME) as tmp:
        tmp.write_text(json.dumps(index, indent=1) + "\n")
    return index
