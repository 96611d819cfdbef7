"""Demo model v2 (issue 23): the v1 demo's tokens and LM, taught natural voices and rooms.

v1 (`recipe.py`) learned from formant and diphone synthesizers only. v2 keeps its tokenizer (a new
tokenizer would need an LM from scratch, which two CPU cores cannot afford at a useful size) and adds:

1. corpus: `train.corpus build` - Kokoro-82M voice blends (natural voices) beside espeak-ng, flite and
   festival, room impulse responses and the noise bank (docs/data-card.md);
2. decoder: a Vocos-style decoder (ConvNeXt + inverse STFT, `codecs/vocos.py`) on v1's frozen tokens,
   trained on that corpus: the codec study's `vocos` arm (issue 21), adversarial after a reconstruction
   warm-up; the LM's tokens do not change, so it needs no new LM to sound better;
3. shards: the corpus tokenized by v1's codec: TTS examples for stage 1, all six tasks (two simulated
   variants of every training utterance) for stage 2, dev examples of its dev speakers;
4. LM stage 1 (TTS) from v1's weights, then stage 2 (all tasks), both with the alignment aid that won
   the ablation (`train/ablate.py`; plain training, no aid, in the shipped run);
5. detectors: remove-speech's speech-free, denoise's noise-free and extract-speaker's target-alone frame
   detectors (`detector_train.py`, a few minutes each) on the corpus's simulated mixtures of those tasks;
6. export: v2's LM with the Vocos decoder and the detectors;
7. examples: `make demo`'s inputs from the corpus's natural dev voices (Kokoro blends no stage trained on).

    python -m speechx_cli.train.recipe_v2 all --base runs/speechx-v1.safetensors   # after recipe.py all
    python -m speechx_cli.train.recipe_v2 all --base my-v1.safetensors  # from a v1 checkpoint you hold

Every stage is a `speechx train` (or `python -m`) child process and resumable: a rerun skips what is
complete and resumes what is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from .. import checkpoint
from .ablate import ARMS as AIDS, aid_flags
from .detector_train import WEIGHTS_NAME
from ..children import run_module
from .recipe import _resume_flag, examples, train

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])

NATURAL = "kokoro:"  # the corpus's natural voices, by speaker name
DETECTOR_TASKS = ("sr", "ns", "tse", "tse_silent", "tse_gain", "ns_gain")  # the detectors it ships (detector.TASKS)
# the enrollment branch trains steadily at a lower rate (at 2e-3 it fell back to the prior; docs/demo-v2.md)
DETECTOR_LR = {"sr": 2e-3, "ns": 2e-3, "tse": 1e-3, "tse_silent": 1e-3, "tse_gain": 1e-3, "ns_gain": 2e-3}


@dataclass(frozen=True)
class RecipeV2:
    base: Path = Path("runs/speechx-v1.safetensors")  # v1: its codec's tokens, its LM's weights
    data: Path = Path("data")
    runs: Path = Path("runs")
    out: Path = Path("checkpoints/speechx-demo.safetensors")
    # the corpus (data/corpus-v2 as built for issue 22: 5,362 training utterances, 11.6 h with edit readings)
    n_per_speaker: int = 50
    kokoro_speakers: int = 150
    kokoro_per_speaker: int = 24
    # the decoder: the codec study's vocos arm, 1.5 core-hours on this CPU (calibrated there)
    decoder_steps: int = 4090
    decoder_adv_start: int = 2454
    decoder_threads: int = 2
    tts_examples: int = 4000  # stage 1's TTS examples (the codec study's tts token set)
    variants: int = 2  # stage 2: every training utterance, this many simulated variants
    max_dev_examples: int = 180  # 30 per task
    lm_stages: int = 2  # 0: v1's LM with the new decoder (issue 21's ship), 1: after stage 1, 2: both
    stage1_steps: int = 1000  # = the ablation's arms (train/ablate.py), so its winner is stage 1
    stage2_steps: int = 6000  # 2.1 h on 2 ranks here (~1.2 s per update)
    lr: float = 4e-4
    aid: str = "plain"  # of AIDS: the ablation's winner (docs/demo-v2.md: no aid beat plain training)
    batch_frames: int = 2400
    shard_threads: int = 2
    lm_processes: int = 2
    detector_examples: int = 12000  # simulated mixtures of each task (docs/demo-v2.md, "A speech-free detector")
    detector_steps: int = 7500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.aid not in AIDS:
            raise ValueError(f"unknown alignment aid {self.aid!r}; choose from {', '.join(AIDS)}")
        if self.lm_stages not in (0, 1, 2):
            raise ValueError(f"LM stages: 0, 1 or 2, not {self.lm_stages}")

    @property
    def corpus(self) -> Path:
        return self.data / "corpus-v2"

    @property
    def decoder_ckpt(self) -> Path:
        return self.runs / "decoder-v2" / "codec_train.pt"

    def shards(self, name: str) -> Path:
        return self.data / f"shards-v2-{name}"

    def lm_ckpt(self, stage: str) -> Path:
        return self.runs / f"lm-v2-{stage}" / "lm_train.pt"

    def detector_file(self, task: str) -> Path:
        return self.runs / ("detector-v2" if task == "sr" else f"detector-{task}-v2") / WEIGHTS_NAME


def corpus(r: RecipeV2) -> None:
    """Skipped once built: the builder writes manifest.jsonl after its last chunk."""
    if (r.corpus / "manifest.jsonl").exists():
        return
    run_module("speechx_cli.train.corpus", "build", str(r.corpus), "--n-per-speaker", str(r.n_per_speaker),
               "--kokoro-speakers", str(r.kokoro_speakers), "--kokoro-per-speaker", str(r.kokoro_per_speaker),
               "--seed", str(r.seed), "--workers", "2", threads=1)


def decoder(r: RecipeV2) -> None:
    from .prepare.lists import write_codec_lists

    ckpt = r.decoder_ckpt
    if checkpoint.training_step(ckpt, checkpoint.CODEC_TRAINING) >= r.decoder_steps:
        return
    data, dev = write_codec_lists(r.corpus, r.data / "codec-v2-train.txt", r.data / "codec-v2-dev.txt", seed=r.seed)
    run_module("speechx_cli.train.codec_cli", "--data", str(data), "--kind", "vocos", "--base", str(r.base),
               "--out", str(ckpt.parent), "--steps", str(r.decoder_steps), "--adv-start", str(r.decoder_adv_start),
               "--threads", str(r.decoder_threads), "--seed", str(r.seed), "--dev", str(dev), "--eval-every",
               str(max(250, r.decoder_steps // 8)), *_resume_flag(ckpt), threads=r.decoder_threads)


def shards(r: RecipeV2) -> None:
    """Dev examples cycle through all six tasks, so every stage's dev losses are per task. None without
    an LM stage."""
    if r.lm_stages == 0:
        return
    jobs = [("tts", "train", ["--tasks", "tts", "--variants", "1", "--max-examples", str(r.tts_examples)]),
            ("train", "train", ["--variants", str(r.variants)]),
            ("dev", "dev", ["--variants", "1", "--max-examples", str(r.max_dev_examples)])]
    for name, split, extra in jobs:
        if (r.shards(name) / "index.json").exists():
            continue
        train("tokenize", str(r.corpus), str(r.shards(name)), "--codec-checkpoint", str(r.base), "--split", split,
              "--seed", str(r.seed), "--threads", str(r.shard_threads), *extra, threads=r.shard_threads)


def _lm(r: RecipeV2, stage: str, data: Path, steps: int, init: Path) -> Path:
    ckpt = r.lm_ckpt(stage)
    if checkpoint.training_step(ckpt, checkpoint.LM_TRAINING) >= steps:
        return ckpt
    start = _resume_flag(ckpt) or ["--init-from", str(init)]
    train("lm", "--data", str(data), "--dev", str(r.shards("dev")), "--out", str(ckpt.parent), "--preset", "demo",
          "--stage", stage, "--max-steps", str(steps), "--batch-frames", str(r.batch_frames), "--dropout", "0",
          "--lr", str(r.lr), "--warmup", "100", "--seed", str(r.seed), "--eval-every", str(max(100, steps // 4)),
          "--ckpt-every", "100", "--threads", "1", *aid_flags(r.aid, steps), *start, threads=1, processes=r.lm_processes)
    return ckpt


def lm(r: RecipeV2) -> Path:
    """The LM the checkpoint ships: v1's (no stage), stage 1's or stage 2's."""
    if r.lm_stages == 0:
        return r.base
    ckpt = _lm(r, "tts", r.shards("tts"), r.stage1_steps, r.base)
    return ckpt if r.lm_stages == 1 else _lm(r, "all", r.shards("train"), r.stage2_steps, ckpt)


def detectors(r: RecipeV2) -> None:
    """One per task of DETECTOR_TASKS; each skipped once its weights are written (a killed run resumes from its
    last saved step)."""
    for task in DETECTOR_TASKS:
        if r.detector_file(task).exists():
            continue
        run_module("speechx_cli.train.detector_train", "run", str(r.detector_file(task).parent), "--corpus",
                   str(r.corpus), "--task", task, "--examples", str(r.detector_examples), "--steps",
                   str(r.detector_steps), "--lr", str(DETECTOR_LR[task]), "--seed", str(r.seed), "--threads", "2",
                   threads=2)


def export(r: RecipeV2, ckpt: Path) -> None:
    facts = {"recipe": "make demo-checkpoint (v2)", "base": str(r.base), "lm_stages": r.lm_stages,
             "detector_steps": r.detector_steps, "detector_examples": r.detector_examples}
    stages = [("decoder", r.decoder_ckpt), ("lm_stage1", r.lm_ckpt("tts")), ("lm_stage2", r.lm_ckpt("all"))]
    if r.lm_stages:
        facts["aid"] = r.aid
    for name, path in stages[:1 + r.lm_stages]:
        saved = checkpoint.read_training(path, checkpoint.LM_TRAINING if name.startswith("lm") else
                                         checkpoint.CODEC_TRAINING)
        facts[f"{name}_steps"] = int(saved["step"])
        if "tokens" in saved:
            facts[f"{name}_tokens"] = int(saved["tokens"])
        if "trained_s" in saved:  # wall hours over every resumed part (runs before it was kept lack it)
            facts[f"{name}_hours"] = round(float(saved["trained_s"]) / 3600, 2)
    shipped = [arg for task in DETECTOR_TASKS for arg in ("--detector", str(r.detector_file(task)))]
    train("export", str(ckpt), str(r.out), "--codec-checkpoint", str(r.decoder_ckpt), "--force", "--half",
          *shipped, "--info", json.dumps(facts), threads=1)


Opt = typer.Option


@app.command("all")
def run_all(
    base: Annotated[Path, Opt(exists=True, dir_okay=False, help="the v1 demo (inference checkpoint): its codec "
                                                                 "tokenizes, its LM is the start")] = RecipeV2.base,
    out: Annotated[Path, Opt(help="the v2 checkpoint")] = RecipeV2.out,
    decoder_steps: Annotated[int, Opt(help="Vocos decoder steps")] = RecipeV2.decoder_steps,
    decoder_adv_start: Annotated[int, Opt(help="its discriminators join at this step")] = RecipeV2.decoder_adv_start,
    lm_stages: Annotated[int, Opt(help="LM stages to train: 0 ships v1's LM with the new decoder, 1 stops "
                                       "after stage 1")] = RecipeV2.lm_stages,
    stage1_steps: Annotated[int, Opt(help="LM stage 1 (TTS) steps from v1's weights")] = RecipeV2.stage1_steps,
    stage2_steps: Annotated[int, Opt(help="LM stage 2 (all tasks) steps")] = RecipeV2.stage2_steps,
    aid: Annotated[str, Opt(help=f"alignment aid, of {', '.join(AIDS)}")] = RecipeV2.aid,
) -> None:
    """Every stage, resuming whatever a previous run left."""
    try:
        r = RecipeV2(base=base, out=out, decoder_steps=decoder_steps, decoder_adv_start=decoder_adv_start,
                     lm_stages=lm_stages, stage1_steps=stage1_steps, stage2_steps=stage2_steps, aid=aid)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    corpus(r)
    decoder(r)
    shards(r)
    model = lm(r)
    detectors(r)
    export(r, model)
    examples(r.corpus, seed=r.seed, speakers=NATURAL)


@app.command("examples")
def run_examples(out: Annotated[Path, typer.Argument()] = Path("examples")) -> None:
    """Only the demo inputs (needs the corpus)."""
    examples(RecipeV2().corpus, out, speakers=NATURAL)


if __name__ == "__main__":
    app()
