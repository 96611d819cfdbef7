"""Whole speechx processes (`speechx bench`): folder throughput, one `speechx denoise IN_DIR OUT_DIR`
against a shell loop of one process per file; and the peak memory of denoising a long file against a
1-minute one (the input is streamed in blocks, so memory should not grow with its length).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from .. import audio as A

FOLDER_SAMPLE_RATE = 16_000  # Hz of the generated input files; speechx resamples to its codec

Log = Callable[[str], None]


def _speechx_command() -> list[str]:
    """The installed `speechx` script beside this Python, else `python -m speechx_cli.cli`."""
    script = Path(sys.executable).parent / "speechx"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "speechx_cli.cli"]


def _write_inputs(folder: Path, n_files: int) -> None:
    rng = np.random.default_rng(4)
    for i in range(n_files):
        seconds = 1.0 + i / max(1, n_files - 1)  # 1 to 2 s
        t = np.arange(int(seconds * FOLDER_SAMPLE_RATE)) / FOLDER_SAMPLE_RATE
        x = 0.3 * np.sin(2 * np.pi * (150 + 10 * i) * t) + 0.05 * rng.standard_normal(len(t))
        A.save(folder / f"clip{i:02d}.wav", x.astype(np.float32), FOLDER_SAMPLE_RATE)


def _timed_shell(argv: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"folder benchmark: {' '.join(argv[:3])} ... failed ({last})")
    return seconds


def bench_folder(checkpoint: Path, n_files: int, log: Log, threads: int = 0) -> dict:
    """`speechx denoise IN_DIR OUT_DIR` once, then a shell loop of one `speechx denoise` per file."""
    cmd = _speechx_command()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory(prefix="speechx-bench-") as tmp:
        root = Path(tmp)
        _write_inputs(root / "in", n_files)
        log(f"folder: one `speechx denoise` over {n_files} files")
        folder_s = _timed_shell([*cmd, "denoise", str(root / "in"), str(root / "out1"),
                                 "-c", str(checkpoint), "--force"], env)
        log(f"folder: a shell loop of {n_files} `speechx denoise` runs")
        loop = ('for f in "$IN"/*.wav; do "$@" denoise "$f" "$OUT/$(basename "$f")" -c "$CK" --force '
                '|| exit 1; done')
        os.makedirs(root / "out2")
        paths = {"IN": str(root / "in"), "OUT": str(root / "out2"), "CK": str(checkpoint)}
        loop_s = _timed_shell(["bash", "-c", loop, "bash", *cmd], {**env, **paths})
        written = len(list((root / "out1").glob("*.wav"))), len(list((root / "out2").glob("*.wav")))
    if written != (n_files, n_files):
        raise RuntimeError(f"folder benchmark: expected {n_files} outputs each, got {written}")
    return {"files": n_files, "seconds_per_file": "1-2", "checkpoint": str(checkpoint),
            "folder_s": folder_s, "loop_s": loop_s, "folder_speedup": loop_s / folder_s}


def _write_tone_file(path: Path, minutes: int) -> None:
    """A long synthetic input written minute by minute (bounded memory here too)."""
    rng = np.random.default_rng(5)
    t = np.arange(60 * FOLDER_SAMPLE_RATE) / FOLDER_SAMPLE_RATE
    with A.BlockWriter(path, FOLDER_SAMPLE_RATE) as w:
        for _ in range(minutes):
            x = 0.2 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
            w.write((x + 0.05 * rng.standard_normal(len(t))).astype(np.float32))


def _peak_rss_of(argv: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command, measured by a fresh parent of its own."""
    probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr[-300:]) if r.returncode else None; "
             "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r.returncode)")
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env)
    seconds, kb, rc = done.stdout.split()
    if int(rc) != 0:
        raise RuntimeError(f"long-file benchmark: {' '.join(argv[:3])} ... failed ({done.stderr.strip()[-200:]})")
    return float(seconds), int(kb) / 1024


def bench_long(checkpoint: Path, minutes: int, log: Log, threads: int = 0) -> dict:
    """Peak memory of denoising a `minutes`-long file vs a 1-minute one (streamed in blocks).

    Meant for a tiny random-weight checkpoint: memory scaling with file length is what is measured,
    and it does not depend on the model's quality (a bigger model only adds a constant)."""
    cmd = _speechx_command()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    with tempfile.TemporaryDirectory(prefix="speechx-long-") as tmp:
        root = Path(tmp)
        rows = {}
        for m in (1, minutes):
            _write_tone_file(root / f"in{m}.wav", m)
            log(f"long file: denoise {m} min")
            rows[m] = _peak_rss_of([*cmd, "denoise", str(root / f"in{m}.wav"), str(root / f"out{m}.wav"),
                                    "-c", str(checkpoint), "--force"], env)
    return {"minutes": minutes, "short_s": rows[1][0], "short_peak_mb": rows[1][1], "long_s": rows[minutes][0],
            "long_peak_mb": rows[minutes][1], "memory_ratio": rows[minutes][1] / rows[1][1],
            "realtime_factor": rows[minutes][0] / (60 * minutes)}
