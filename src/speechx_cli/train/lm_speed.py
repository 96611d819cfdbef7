"""Training speed of candidate LM sizes on this machine: what a size costs before choosing it (issue 23).

    python -m speechx_cli.train.lm_speed                       # synthetic examples, the recipe's batch
    python -m speechx_cli.train.lm_speed --data data/shards-train --sizes 256x6,512x8 --steps 5

Each size (d_model x layers; 64-dim heads, FFN 4 x d_model, AR and NAR alike) trains a few real
updates (LMTrainer.train_step: AR + NAR, AdamW, the recipe's batch of <= 2,400 padded positions and
<= 8 examples, bf16 autocast where native) in this process, after one untimed warm-up update; every
size sees the same batches. Tokens are lm_train's: condition + output positions of the examples trained
on. Tokens/s is wall-clock; tokens per CPU second is what an update costs when other processes share
the cores (the CPU share says how much of a core it got). One process of --threads threads: the
recipe's runs are 2 DDP ranks of 1 thread, ~1.8x one rank here (recipe.py). Without --data the
examples are synthetic, of the corpus's sizes: targets of 2-6 s and prompts of 3-5 s at the demo
codec's 50 frames/s, 30-80 phonemes, all six tasks.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import torch
import typer

from ..eval.measure import RssPeak
from ..model import ModelConfig
from ..prompts import Task
from .dataset import EncodedExample, ExampleSet, ShardSet
from .distributed import Dist
from .lm_config import TrainConfig
from .lm_train import LMTrainer, uses_bf16

SIZES = ("256x6", "384x8", "512x8", "512x12")
FRAME_RATE = 50  # the demo codec's frames per second (synthetic examples)


def model_config(size: str, codebook_size: int, n_codebooks: int) -> ModelConfig:
    """'DxL' -> d_model D, L layers, 64-dim heads, FFN 4D (the demo preset is 256x6)."""
    try:
        d, layers = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"{size!r}: a size is D_MODELxLAYERS, e.g. 384x8") from None
    if d % 64:
        raise ValueError(f"{size!r}: d_model must be a multiple of 64 (64-dim heads)")
    return ModelConfig(codebook_size=codebook_size, n_codebooks=n_codebooks, d_model=d, n_heads=d // 64,
                       n_layers=layers, d_ff=4 * d, dropout=0.0)


def synthetic_set(n: int = 96, codebook_size: int = 1024, n_codebooks: int = 8, seed: int = 0) -> ExampleSet:
    """Examples of every task with the corpus's lengths (random codes: speed does not depend on them)."""
    g = torch.Generator().manual_seed(seed)

    def codes(t: int) -> torch.Tensor:
        return torch.randint(0, codebook_size, (t, n_codebooks), generator=g)

    def seconds(lo: float, hi: float) -> int:
        return int(torch.randint(int(lo * FRAME_RATE), int(hi * FRAME_RATE) + 1, (1,), generator=g))

    out = []
    for i in range(n):
        task = list(Task)[i % len(Task)]
        text = torch.randint(3, 80, (int(torch.randint(30, 81, (1,), generator=g)),), generator=g)
        target = codes(seconds(2, 6))
        if task in (Task.NS, Task.SR):
            out.append(EncodedExample(task, text, target, source=codes(len(target))))
        elif task in (Task.TTS, Task.TSE):
            source = codes(len(target)) if task == Task.TSE else None
            out.append(EncodedExample(task, text, target, source=source, enrollment=codes(seconds(3, 5))))
        else:
            middle = codes(seconds(0.5, 1)) if task == Task.EDIT_NOISY else None
            third = len(target) // 3
            out.append(EncodedExample(task, text, target, middle=middle, pre_frames=third, post_start=2 * third))
    return ExampleSet(out, codebook_size)


def measure_size(size: str, data, steps: int = 3, batch_frames: int = 2400, precision: str = "auto") -> dict:
    """Tokens/s of `steps` training updates of one size (after one untimed update)."""
    model = model_config(size, data.codebook_size, data.n_codebooks)
    with tempfile.TemporaryDirectory() as tmp:  # the trainer's run folder: nothing is written to it
        cfg = TrainConfig(model=model, out_dir=tmp, stage="all", batch_frames=batch_frames, warmup_steps=1,
                          max_steps=steps + 1, device="cpu", precision=precision).validate()
        trainer = LMTrainer(cfg, data, None, Dist(), torch.device("cpu"))
        trainer.train_step()
        tokens0, t0, cpu0 = trainer.tokens, time.perf_counter(), time.process_time()
        with RssPeak() as rss:
            for _ in range(steps):
                trainer.train_step()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        params = sum(p.numel() for m in (trainer.ar, trainer.nar) for p in m.parameters())
    return {"size": size, "d_model": model.d_model, "layers": model.n_layers, "params_m": params / 1e6,
            "fp16_mb": params * 2 / 2**20, "s_per_step": seconds / steps,
            "tokens_per_s": (trainer.tokens - tokens0) / seconds,
            "tokens_per_cpu_s": (trainer.tokens - tokens0) / cpu, "cpu_share": cpu / seconds,
            "tokens_per_step": (trainer.tokens - tokens0) / steps, "rss_peak_mb": rss.peak / 2**20,
            "bf16": uses_bf16(precision, torch.device("cpu")), "threads": torch.get_num_threads(), "steps": steps}


def table(rows: list[dict]):
    from rich.table import Table

    t = Table(title="LM training speed (AR + NAR, one process; tokens = condition + output positions)",
              title_justify="left")
    for name in ("size", "params (M)", "fp16 MB", "s / step", "tokens / step", "tokens / s", "tokens / CPU s",
                 "CPU share", "h per 10 M tokens", "peak RSS MB"):
        t.add_column(name, justify="right")
    for r in rows:  # CPU share < 1 / threads: other processes took the cores; tokens / CPU s is what it costs
        t.add_row(r["size"], f"{r['params_m']:.1f}", f"{r['fp16_mb']:.0f}", f"{r['s_per_step']:.2f}",
                  f"{r['tokens_per_step']:.0f}", f"{r['tokens_per_s']:.0f}", f"{r['tokens_per_cpu_s']:.0f}",
                  f"{r['cpu_share']:.2f}", f"{1e7 / r['tokens_per_s'] / 3600:.1f}", f"{r['rss_peak_mb']:.0f}")
    return t


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def main(
    data: Annotated[Optional[Path], typer.Option(exists=True, file_okay=False,
                                                 help="training shards (default: synthetic examples)")] = None,
    sizes: Annotated[str, typer.Option(help="comma-separated D_MODELxLAYERS")] = ",".join(SIZES),
    steps: Annotated[int, typer.Option(min=1, help="timed updates per size")] = 3,
    batch_frames: Annotated[int, typer.Option(help="padded positions per update (the recipe's)")] = 2400,
    precision: Annotated[str, typer.Option(help="auto, fp32 or bf16 (lm_train's)")] = "auto",
    threads: Annotated[int, typer.Option(help="torch threads (the recipe's ranks have 1)")] = 1,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="also write the rows here")] = None,
) -> None:
    """Measure each size in turn and print the table."""
    torch.set_num_threads(threads)
    try:
        names = [s.strip() for s in sizes.split(",") if s.strip()]
        for name in names:
            model_config(name, 2, 1)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--sizes") from err
    dataset = ShardSet(data) if data is not None else synthetic_set()
    rows = [measure_size(name, dataset, steps, batch_frames, precision) for name in names]
    from rich.console import Console

    Console(width=160).print(table(rows))
    print(f"bf16 autocast: {rows[0]['bf16']}; torch threads: {threads}; data: {data or 'synthetic'}")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    app()
