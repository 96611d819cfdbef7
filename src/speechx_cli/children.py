"""Child processes for the long multi-step jobs (training recipes, studies, the scorecard).

Each step runs as `python -m MODULE ARGS` in its own process, so a step's memory is freed when it
ends and a crash names the step that failed. Shared by `train` and `eval`, which must not import
each other for it.
"""

from __future__ import annotations

import os
import subprocess
import sys


def run_module(*args: str, threads: int, processes: int = 1) -> None:
    """`python -m ARGS` as a child with `threads` torch threads, or `processes` DDP ranks under torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    ddp = ["torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m"] if processes > 1 else []
    cmd = [sys.executable, "-m", *ddp, *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env)
