"""`speechx train bench`: what preparing and tokenizing cost per hour of audio, and their peak memory,
on corpora of growing size (memory must stay flat: nothing holds the corpus).

Throughput counts the child's whole CPU time, start-up (imports, model load) included; from the second
size on, the marginal rate (extra hours over extra CPU time against the size before) leaves it out.
Each size is a folder-layout corpus of that many utterances (the project's voices, synthesized once,
hard-linked under new names and speakers) with a small noise bank. `train prepare` and `train tokenize`
each run as a child process on one thread; their CPU time (user + system) and peak resident memory
come from the kernel's accounting of that child (os.wait4).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

from .prepare.items import read_lines
from .sentences import clean_sentence
from .synth import SAMPLE_RATE, Voice, synthesize

VOICES = ("espeak:en-us+m1", "espeak:en+f5", "espeak:en-gb-x-rp+m4", "espeak:en-us+f3", "flite:kal16")
SENTENCES = ("The cat sat on the warm mat by the door.", "She sells bright shells down by the quiet shore.",
             "A slow river runs past the old mill every morning.", "We found the blue map under a pile of books.",
             "Nobody knew where the small brown dog had gone.", "Please bring the tea and two cups to the garden.",
             "The wind turned cold as the sun went down.", "He kept the letter in his coat for a week.")
UTTERANCES_PER_SPEAKER = 10


def _bases(folder: Path) -> list[tuple[Path, str]]:
    """(wav, transcript) of every voice x sentence, written once."""
    out = []
    for v, voice in enumerate(VOICES):
        for s, raw in enumerate(SENTENCES):
            sentence = clean_sentence(raw)
            r = synthesize(Voice.parse(voice), sentence.text, sentence.words)
            path = folder / f"base-{v}-{s}.wav"
            sf.write(str(path), r.audio, SAMPLE_RATE)
            out.append((path, sentence.text))
    return out


def build_corpus(root: Path, n: int, bases: list[tuple[Path, str]]) -> float:
    """A folder corpus of n utterances (speaker folders of UTTERANCES_PER_SPEAKER); returns its hours."""
    seconds = 0.0
    for k in range(n):
        wav, text = bases[k % len(bases)]
        target = root / f"speaker{k // UTTERANCES_PER_SPEAKER:05d}" / f"utt{k:06d}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(wav, target)
        target.with_suffix(".txt").write_text(text)
        seconds += sf.info(str(wav)).duration
    return seconds / 3600


def _noises(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(4):
        sf.write(str(folder / f"noise{k}.wav"), (0.05 * rng.standard_normal(5 * SAMPLE_RATE)).astype(np.float32),
                 SAMPLE_RATE)
    return folder


def measure(args: list[str]) -> dict:
    """CPU seconds and peak memory (MB) of `python -m speechx_cli ARGS` on one thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "speechx_cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"speechx {' '.join(args[:2])} failed: {err.strip().splitlines()[-1:]}")
    return {"cpu_seconds": usage.ru_utime + usage.ru_stime, "peak_mb": usage.ru_maxrss / 1024}


def default_codec() -> str:
    from ..checkpoint import default_path

    path = default_path()
    return str(path) if path is not None else "random-demo"


def run_bench(sizes: list[int], codec: str | None = None, keep: Path | None = None,
              log: Callable[[str], None] = print) -> list[dict]:
    """One prepare row and one tokenize row per corpus size."""
    codec = codec or default_codec()
    work = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="speechx-train-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        (work / "bases").mkdir(exist_ok=True)
        bases = _bases(work / "bases")
        noises = _noises(work / "noises")
        for n in sizes:
            src, corpus, shards = work / f"src-{n}", work / f"corpus-{n}", work / f"shards-{n}"
            for old in (src, corpus, shards):
                shutil.rmtree(old, ignore_errors=True)
            hours = build_corpus(src, n, bases)
            log(f"prepare: {n} utterances, {hours * 60:.1f} min of audio")
            rows.append({"step": "prepare", "utterances": n, "audio_hours": hours,
                         **measure(["train", "prepare", str(src), str(corpus), "--format", "folder"])})
            measure(["train", "noise", str(noises), str(corpus)])
            log(f"tokenize: {n} examples with {codec}")
            train_hours = sum(r["duration"] for r in read_lines(corpus / "manifest.jsonl") if r["split"] == "train") / 3600
            rows.append({"step": "tokenize", "utterances": n, "audio_hours": train_hours,
                         **measure(["train", "tokenize", str(corpus), str(shards), "--codec-checkpoint", codec,
                                    "--variants", "1", "--examples-per-shard", "200", "--device", "cpu"])})
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    previous: dict[str, dict] = {}
    for r in rows:
        r["audio_hours_per_cpu_hour"] = r["audio_hours"] / max(r["cpu_seconds"] / 3600, 1e-9)
        before = previous.get(r["step"])  # the next size's extra hours over its extra CPU time: no start-up cost
        extra_cpu = r["cpu_seconds"] - before["cpu_seconds"] if before else 0.0
        r["marginal_audio_hours_per_cpu_hour"] = (r["audio_hours"] - before["audio_hours"]) / (extra_cpu / 3600) \
            if before and extra_cpu > 0 else None
        previous[r["step"]] = r
    return rows
