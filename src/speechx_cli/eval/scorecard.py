"""The demo model's scorecard (issue 23): every task of a dev benchmark, speechx beside its peers, and
the bars a demo model must clear, each with its number and 95% interval.

    python -m speechx_cli.eval.scorecard run runs/eval-v2 --label v2-mask --bench data/devbench-v2 \\
        --task-bench tts=data/devbench-v2-tts --task-bench edit=data/devbench-v2-edit \\
        --checkpoint checkpoints/speechx-demo.safetensors
    python -m speechx_cli.eval.scorecard run runs/eval-v2 --label v2-codec ... --resynth codec
    python -m speechx_cli.eval.scorecard run runs/eval-v2 --label peers --bench ... --peers
    python -m speechx_cli.eval.scorecard show runs/eval-v2 --candidate v2-mask [--json card.json]

`run` writes OUT/LABEL/TASK/ (a `speechx eval TASK` report: report.json, items.csv, outputs/), skipping
tasks already reported, so it resumes after a kill. `--peers` measures passthrough, DeepFilterNet3,
noisereduce and the reference (each item's true answer: the metrics' ceiling) instead of speechx.
`show` prints one table per task (every label's systems on the benchmark's "all" subset) and the bars
for the candidate label's speechx. Bars against a peer compare the same items (paired differences);
a bar passes on its mean.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..children import run_module
from .metrics import mean_ci

TASKS = ("denoise", "remove-speech", "extract-speaker", "tts", "edit")
PEERS = ("passthrough", "deepfilternet", "noisereduce", "reference")
TABLE_METRICS = {
    "denoise": ("dnsmos_ovrl", "pesq", "stoi", "si_sdr", "wer"),
    "remove-speech": ("si_sdr", "speech_left_db", "sim_speech"),
    "extract-speaker": ("sim_target", "sim_interferer", "si_sdr", "wer"),
    "tts": ("wer", "wer_whisper", "sim_prompt", "sim_others", "dnsmos_ovrl"),
    "edit": ("new_word", "new_word_whisper", "wer", "wer_whisper", "preserve_max_abs", "sim_input"),
}  # a column no label reported (Whisper's, without --recognizer) is left out

Reports = dict[str, dict[str, dict]]  # label -> task -> report.json


def load(out: Path) -> Reports:
    found: Reports = {}
    for path in sorted(out.glob("*/*/report.json")):
        label, task = path.parent.parent.name, path.parent.name
        if task in TASKS:
            found.setdefault(label, {})[task] = json.loads(path.read_text())
    return found


def item_values(report: dict, system: str, metric: str) -> dict[str, float]:
    """{item id: value} of one system's finite values of one metric."""
    return {r["id"]: r["metrics"][metric] for r in report["items"]
            if r["system"] == system and isinstance(r["metrics"].get(metric), (int, float))
            and math.isfinite(r["metrics"][metric])}


def _find(reports: Reports, task: str, system: str, prefer: str) -> dict | None:
    """The report of `task` holding `system`: the preferred label's first, then any other's."""
    for label in [prefer, *sorted(reports)]:
        rep = reports.get(label, {}).get(task)
        if rep and system in rep["systems"]:
            return rep
    return None


@dataclass(frozen=True)
class Bar:
    """speechx's `metric` (minus `minus` of the same output, or of `peer` on the same items, if given)
    must be >= `threshold` (`at_least`) or <= it."""

    task: str
    text: str
    metric: str
    threshold: float
    at_least: bool = True
    peer: Optional[str] = None  # paired difference speechx - peer (+ offset folded into threshold)
    minus: Optional[str] = None  # paired difference of two metrics of speechx's own output

    def measure(self, reports: Reports, candidate: str) -> dict | None:
        rep = reports.get(candidate, {}).get(self.task)
        if not rep or "speechx" not in rep["systems"]:
            return None
        mine = item_values(rep, "speechx", self.metric)
        if self.minus:
            other = item_values(rep, "speechx", self.minus)
        elif self.peer:
            peer_rep = _find(reports, self.task, self.peer, candidate)
            if peer_rep is None:
                return None
            other = item_values(peer_rep, self.peer, self.metric)
        else:
            other = None
        values = ([mine[i] - other[i] for i in sorted(mine.keys() & other.keys())] if other is not None
                  else list(mine.values()))
        cell = mean_ci(values)
        if cell is None:
            return None
        ok = cell["mean"] >= self.threshold if self.at_least else cell["mean"] <= self.threshold
        return {"task": self.task, "bar": self.text, "value": cell, "threshold": self.threshold, "passed": ok}


BARS = (
    Bar("tts", "WER <= 0.5", "wer", 0.5, at_least=False),
    Bar("tts", "WER <= 0.5 (Whisper)", "wer_whisper", 0.5, at_least=False),
    Bar("tts", "similarity to the prompt - to other speakers >= 0.10", "sim_prompt", 0.10, minus="sim_others"),
    Bar("edit", "new word recognized in >= 60% of edits", "new_word", 0.60),
    Bar("edit", "new word recognized in >= 60% of edits (Whisper)", "new_word_whisper", 0.60),
    Bar("edit", "untouched audio sample-identical (max |d| = 0)", "preserve_max_abs", 0.0, at_least=False),
    Bar("extract-speaker", "similarity to the target - the mixture's >= +0.05", "sim_target", 0.05,
        peer="passthrough"),
    Bar("extract-speaker", "similarity to the interferer - the mixture's <= -0.05", "sim_interferer", -0.05,
        at_least=False, peer="passthrough"),
    Bar("denoise", "DNSMOS OVRL - noisereduce's >= 0", "dnsmos_ovrl", 0.0, peer="noisereduce"),
    Bar("denoise", "STOI - the input's >= -0.02", "stoi", -0.02, peer="passthrough"),
    Bar("remove-speech", "SI-SDR to the background - the input's >= +5 dB", "si_sdr", 5.0, peer="passthrough"),
)


def bars(reports: Reports, candidate: str) -> list[dict]:
    return [m for b in BARS if (m := b.measure(reports, candidate)) is not None]


def rows(reports: Reports, task: str) -> list[dict]:
    """Every (label, system) that reported `task`: its cells on the "all" subset (the last one)."""
    out = []
    for label, by_task in sorted(reports.items()):
        rep = by_task.get(task)
        if not rep:
            continue
        subset = rep["subsets"][-1]
        for system in rep["systems"]:
            cells = rep["summary"][system][subset]
            name = f"{label}: speechx" if system == "speechx" else system + ("" if label == "peers" else f" ({label})")
            out.append({"label": label, "system": system, "name": name, "resynth": rep.get("resynth"),
                        "checkpoint": rep.get("checkpoint"),
                        "cells": {m: cells.get(m) for m in TABLE_METRICS[task]}})
    return out


def render(reports: Reports, candidate: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from .report import METRICS, ci_text

    console = Console(width=200, highlight=False)
    for task in TASKS:
        task_rows = rows(reports, task)
        if not task_rows:
            continue
        n = max((c or {}).get("n", 0) for r in task_rows for c in r["cells"].values() if c)
        t = Table(title=f"{task} (all items, mean ±95% CI (n); up to {n} items)", title_justify="left")
        t.add_column("system")
        shown = [m for m in TABLE_METRICS[task] if any(r["cells"][m] for r in task_rows)]
        for m in shown:
            t.add_column(METRICS[m].label + (" ↑" if METRICS[m].higher_is_better else " ↓"), justify="right")
        for r in task_rows:
            t.add_row(r["name"], *(ci_text(r["cells"][m], 3, with_n=True) for m in shown))
        console.print(t)
    if candidate:
        t = Table(title=f"bars for {candidate} (paired differences on the same items)", title_justify="left")
        for name in ("task", "bar", "measured", "passed"):
            t.add_column(name, justify="right" if name in ("measured",) else "left")
        for b in bars(reports, candidate):
            t.add_row(b["task"], b["bar"], ci_text(b["value"], 3, with_n=True), "yes" if b["passed"] else "NO")
        console.print(t)


# ---- command line ---------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
Opt = typer.Option


def eval_args(task: str, bench: Path, out: Path, peers: bool, checkpoint: Optional[Path], resynth: str,
              seed: int, recognizer: str = "pocketsphinx") -> list[str]:
    """`speechx eval TASK` for one cell of the scorecard."""
    args = ["eval", task, str(bench), "--out", str(out), "--no-plots", "--force", "--seed", str(seed),
            "--recognizer", recognizer]
    if peers:
        return args + ["--systems", ",".join(["passthrough", *(["deepfilternet", "noisereduce"]
                                                             if task == "denoise" else []), "reference"])]
    args += ["--systems", "speechx", "--resynth", resynth]
    return args + (["--checkpoint", str(checkpoint)] if checkpoint else [])


@app.command("run")
def run_cli(
    out: Annotated[Path, typer.Argument(help="scorecard folder (OUT/LABEL/TASK reports)")],
    label: Annotated[str, Opt(help="this system's name in the tables, e.g. v2-mask")],
    bench: Annotated[Path, Opt(exists=True, file_okay=False, help="dev benchmark (build-benchmark)")],
    task_bench: Annotated[Optional[list[str]], Opt(help="TASK=DIR: a benchmark with more items of TASK "
                                                        "(repeatable), e.g. tts=data/devbench-v2-tts")] = None,
    checkpoint: Annotated[Optional[Path], Opt(exists=True, dir_okay=False, help="speechx checkpoint")] = None,
    resynth: Annotated[str, Opt(help="mask or codec (known-length tasks)")] = "mask",
    peers: Annotated[bool, Opt("--peers", help="the peers and the reference instead of speechx")] = False,
    tasks: Annotated[str, Opt(help="comma-separated")] = ",".join(TASKS),
    seed: Annotated[int, Opt()] = 0,
    recognizer: Annotated[str, Opt(help="as speechx eval's: pocketsphinx,whisper adds Whisper's WER and bars")] = (
        "pocketsphinx"),
    threads: Annotated[int, Opt(help="torch threads")] = 2,
) -> None:
    """Every task's report for one label (resumable: reported tasks are skipped)."""
    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    benches = dict(spec.partition("=")[::2] for spec in task_bench or [])
    bad = [t for t in [*chosen, *benches] if t not in TASKS]
    missing = [d for d in benches.values() if not Path(d, "manifest.jsonl").is_file()]
    if missing:
        raise typer.BadParameter(f"not a benchmark: {', '.join(missing)}")
    if bad or resynth not in ("mask", "codec") or "/" in label or not label:
        raise typer.BadParameter(f"tasks of {', '.join(TASKS)} (not {', '.join(bad) or '-'}), resynth mask or "
                                 f"codec, a label without '/'")
    for task in chosen:
        dest = out / label / task
        if (dest / "report.json").exists():
            continue
        run_module("speechx_cli", *eval_args(task, Path(benches.get(task, bench)), dest, peers, checkpoint, resynth,
                                             seed, recognizer), threads=threads)
    render(load(out), None if peers else label)


@app.command("show")
def show_cli(
    out: Annotated[Path, typer.Argument(exists=True, file_okay=False)],
    candidate: Annotated[Optional[str], Opt(help="the label whose bars to check")] = None,
    json_out: Annotated[Optional[Path], Opt("--json", help="also write the tables' cells and bars here")] = None,
) -> None:
    """The tables and the candidate's bars."""
    reports = load(out)
    if not reports:
        print(f"{out}: no reports (OUT/LABEL/TASK/report.json)", file=sys.stderr)
        raise typer.Exit(1)
    if candidate and candidate not in reports:
        print(f"{candidate}: no such label in {out} ({', '.join(sorted(reports))})", file=sys.stderr)
        raise typer.Exit(1)
    render(reports, candidate)
    if json_out:
        card = {"tasks": {t: rows(reports, t) for t in TASKS}, "bars": bars(reports, candidate) if candidate else []}
        json_out.write_text(json.dumps(card, indent=1) + "\n")


if __name__ == "__main__":
    app()
