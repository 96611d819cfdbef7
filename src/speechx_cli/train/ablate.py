"""The alignment-aid comparison of issue 23: the same LM, the same shards, the same steps, with each aid
and without, then dev TTS WER (`speechx eval tts`) side by side.

    python -m speechx_cli.train.ablate run runs/ablate --data data/shards-train --dev data/shards-dev \
        --bench devbench-tts --codec-checkpoint runs/codec-decoder/codec_train.pt --steps 3000
    python -m speechx_cli.train.ablate table runs/ablate       # the table of the arms finished so far

Each arm is its own run folder OUT/ARM: lm_train's run (lm_train.pt, log.jsonl), its exported
model.safetensors and eval-tts/report.json. A rerun resumes an unfinished training run and skips what
is done, so the command is safe to rerun after a kill. Arms: plain (no aid), ctc (--aux-ctc-weight),
curriculum (--curriculum-steps, a fraction of the steps: sequence length warmup's 30% by default),
ctc+curriculum. Every arm has the same seed, so plain and ctc train on the very same batches.

WER counts only the benchmark's flite/festival/Kokoro items (pocketsphinx fails on espeak voices): build the
benchmark with enough tts items, e.g. `speechx eval build-benchmark devbench-tts --corpus data/corpus
--tasks tts --per-task 40`.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import checkpoint
from ..children import run_module
from .lm_train import CHECKPOINT_NAME
from .loop import LOG_NAME
from ..eval.report import ci_text

MODEL_NAME = "model.safetensors"
REPORT = Path("eval-tts") / "report.json"
ARMS = ("plain", "ctc", "curriculum", "ctc+curriculum")


@dataclass(frozen=True)
class Ablation:
    """The settings every arm shares, and each aid's strength."""

    out: Path
    data: Path
    dev: Path
    bench: Path
    codec_checkpoint: str
    steps: int = 3000
    arms: tuple[str, ...] = ("plain", "ctc", "curriculum")
    ctc_weight: float = 0.2
    curriculum_fraction: float = 0.3
    stage: str = "tts"
    preset: str = "demo"
    init_from: Optional[str] = None  # weights every arm starts from (None: from scratch)
    batch_frames: int = 2400  # the recipe's
    lr: float = 5e-4
    warmup: int = 100
    processes: int = 2  # DDP ranks of `threads` torch threads (the recipe's 2 x 1 on this machine)
    threads: int = 1
    seed: int = 0
    eval_limit: Optional[int] = None  # tts items per subset
    temperature: float = 1.0  # speechx's default

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"unknown arm(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ARMS)}")
        if self.steps < 1 or self.ctc_weight <= 0 or not 0 < self.curriculum_fraction <= 1:
            raise ValueError("steps >= 1, ctc weight > 0 and curriculum fraction in (0, 1]")

    def aid_flags(self, arm: str) -> list[str]:
        return aid_flags(arm, self.steps, self.ctc_weight, self.curriculum_fraction)


def aid_flags(arm: str, steps: int, ctc_weight: float = Ablation.ctc_weight,
              curriculum_fraction: float = Ablation.curriculum_fraction) -> list[str]:
    """lm_train's flags that make `arm` differ from plain training in a run of `steps` steps."""
    flags = []
    if "ctc" in arm:
        flags += ["--aux-ctc-weight", str(ctc_weight)]
    if "curriculum" in arm:
        flags += ["--curriculum-steps", str(max(1, round(curriculum_fraction * steps)))]
    return flags


def train_arm(a: Ablation, arm: str) -> None:
    run = a.out / arm
    done = checkpoint.training_step(run / CHECKPOINT_NAME, checkpoint.LM_TRAINING)
    if done >= a.steps:
        return
    start = ["--resume"] if done else (["--init-from", a.init_from] if a.init_from else [])
    run_module("speechx_cli.train.lm_train", "train", "--data", str(a.data), "--dev", str(a.dev), "--out", str(run),
               "--preset", a.preset, "--stage", a.stage, "--max-steps", str(a.steps), "--batch-frames",
               str(a.batch_frames), "--dropout", "0", "--lr", str(a.lr), "--warmup", str(a.warmup), "--seed",
               str(a.seed), "--eval-every", str(max(100, a.steps // 4)), "--ckpt-every", "100", "--threads",
               str(a.threads), *a.aid_flags(arm), *start, threads=a.threads, processes=a.processes)


def export_arm(a: Ablation, arm: str) -> Path:
    run, model = a.out / arm, a.out / arm / MODEL_NAME
    if not model.exists() or model.stat().st_mtime < (run / CHECKPOINT_NAME).stat().st_mtime:
        run_module("speechx_cli.train.lm_train", "export", str(run / CHECKPOINT_NAME), str(model),
                   "--codec-checkpoint", a.codec_checkpoint, "--force", "--info", json.dumps({"ablation_arm": arm}),
                   threads=a.threads)
    return model


def eval_arm(a: Ablation, arm: str, model: Path) -> None:
    report = a.out / arm / REPORT
    if report.exists() and report.stat().st_mtime >= model.stat().st_mtime:
        return
    limit = ["--limit", str(a.eval_limit)] if a.eval_limit else []
    run_module("speechx_cli", "eval", "tts", str(a.bench), "--systems", "speechx", "--checkpoint", str(model),
               "--out", str(report.parent), "--seed", str(a.seed), "--temperature", str(a.temperature),
               "--no-plots", "--force", *limit, threads=a.processes * a.threads)


def run_all(a: Ablation) -> list[dict]:
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "ablation.json").write_text(json.dumps(asdict(a), default=str, indent=1) + "\n")
    for arm in a.arms:
        train_arm(a, arm)
        eval_arm(a, arm, export_arm(a, arm))
    return summarize(a.out, a.arms)


# ---- the table --------------------------------------------------------------------------------------

def _log(run: Path) -> list[dict]:
    path = run / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def arm_row(run: Path) -> dict:
    """One arm's numbers: steps, tokens, last dev TTS losses, the CTC loss at the end, dev TTS metrics."""
    log = _log(run)
    dev = next((r["dev"].get("tts", {}) for r in reversed(log) if "dev" in r), {})
    ctc = [r["ctc"] for r in log if "ctc" in r]
    tail = ctc[-max(1, len(ctc) // 10):]
    row = {"arm": run.name, "steps": log[-1]["step"] if log else 0, "tokens": log[-1].get("tokens") if log else None,
           "dev_ar": dev.get("ar"), "dev_nar": dev.get("nar"), "train_ctc": sum(tail) / len(tail) if ctc else None}
    report = run / REPORT
    if report.exists():
        rep = json.loads(report.read_text())
        cells = rep["summary"]["speechx"][rep["subsets"][-1]]
        for metric in ("wer", "sim_prompt", "sim_others"):
            row[metric] = cells.get(metric)
    return row


def _item_wers(run: Path) -> dict[str, float]:
    report = run / REPORT
    if not report.exists():
        return {}
    items = json.loads(report.read_text())["items"]
    return {r["id"]: r["metrics"]["wer"] for r in items if r["metrics"].get("wer") is not None}


def paired_wer(run: Path, plain: Path) -> dict | None:
    """WER minus plain's on the same items (same benchmark, same sampling seed): mean and 95% interval."""
    from ..eval.metrics import mean_ci

    mine, base = _item_wers(run), _item_wers(plain)
    diffs = [mine[i] - base[i] for i in mine.keys() & base.keys() if math.isfinite(mine[i] + base[i])]
    return mean_ci(diffs)


def summarize(out: Path, arms: tuple[str, ...] = ARMS) -> list[dict]:
    rows = [arm_row(out / arm) for arm in arms if (out / arm).exists()]
    for row in rows:
        row["wer_vs_plain"] = paired_wer(out / row["arm"], out / "plain") if row["arm"] != "plain" else None
    (out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def best_arm(rows: list[dict]) -> str | None:
    """The arm with the lowest mean dev TTS WER (None before any is measured); plain wins a tie, since an
    aid that does not help is not worth keeping."""
    scored = [(r["wer"]["mean"], r["arm"] != "plain", r["arm"]) for r in rows
              if (r.get("wer") or {}).get("mean") is not None]
    return min(scored)[2] if scored else None


def table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="alignment aids: dev TTS, same steps and data (WER: mean ±95% CI (items))", title_justify="left")
    for name in ("arm", "steps", "tokens", "dev AR / NAR", "train CTC", "WER ↓", "WER - plain (paired)",
                 "sim prompt ↑", "sim others"):
        t.add_column(name, justify="left" if name == "arm" else "right")
    best = best_arm(rows)
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        t.add_row(("* " if r["arm"] == best else "") + r["arm"], str(r["steps"]), fmt(r["tokens"], ","),
                  f"{fmt(r['dev_ar'], '.3f')} / {fmt(r['dev_nar'], '.3f')}", fmt(r["train_ctc"], ".3f"),
                  *(ci_text(r.get(k), 3, with_n=True) for k in ("wer", "wer_vs_plain", "sim_prompt", "sim_others")))
    return t


# ---- command line ---------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
Opt = typer.Option


@app.command("run")
def run_cli(
    out: Annotated[Path, typer.Argument(help="folder of the arms' runs")],
    data: Annotated[Path, Opt(exists=True, file_okay=False, help="training shards")],
    dev: Annotated[Path, Opt(exists=True, file_okay=False, help="dev shards (dev losses)")],
    bench: Annotated[Path, Opt(exists=True, file_okay=False, help="dev benchmark with tts items")],
    codec_checkpoint: Annotated[str, Opt(help="the codec the shards were encoded with (export)")],
    steps: Annotated[int, Opt(help="training steps of every arm")] = Ablation.steps,
    arms: Annotated[str, Opt(help=f"comma-separated, of {', '.join(ARMS)}")] = ",".join(Ablation.arms),
    ctc_weight: Annotated[float, Opt(help="the ctc arms' --aux-ctc-weight")] = Ablation.ctc_weight,
    curriculum_fraction: Annotated[float, Opt(help="the curriculum arms' --curriculum-steps, "
                                                   "a fraction of --steps")] = Ablation.curriculum_fraction,
    stage: Annotated[str, Opt(help="tts or all")] = Ablation.stage,
    preset: Annotated[str, Opt(help="model size: tiny, demo or paper")] = Ablation.preset,
    init_from: Annotated[Optional[Path], Opt(exists=True, dir_okay=False, help="weights every arm starts from")] = None,
    batch_frames: Annotated[int, Opt()] = Ablation.batch_frames,
    lr: Annotated[float, Opt()] = Ablation.lr,
    warmup: Annotated[int, Opt()] = Ablation.warmup,
    processes: Annotated[int, Opt(help="DDP ranks per training run")] = Ablation.processes,
    threads: Annotated[int, Opt(help="torch threads per rank")] = Ablation.threads,
    seed: Annotated[int, Opt()] = Ablation.seed,
    limit: Annotated[Optional[int], Opt(help="tts items per benchmark subset")] = None,
) -> None:
    """Train, export and measure every arm (skipping what is done), then print the table."""
    try:
        chosen = tuple(s.strip() for s in arms.split(",") if s.strip())
        a = Ablation(out, data, dev, bench, codec_checkpoint, steps, chosen,
                     ctc_weight, curriculum_fraction, stage, preset, str(init_from) if init_from else None,
                     batch_frames, lr, warmup, processes, threads, seed, limit)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    _print(run_all(a))


@app.command("table")
def table_cli(out: Annotated[Path, typer.Argument(exists=True, file_okay=False)]) -> None:
    """The table of the arms in OUT, finished or not."""
    _print(summarize(out))


def _print(rows: list[dict]) -> None:
    from rich.console import Console

    Console(width=200).print(table(rows))
    best = best_arm(rows)
    if best:
        print(f"best by dev TTS WER: {best}", file=sys.stderr)


if __name__ == "__main__":
    app()
