"""The demo checkpoint from nothing: corpus -> codec -> shards -> LM -> export.

The codec trains twice: a first run at a constant learning rate, then the whole codec again from
its weights with a fresh optimizer and a cosine decay over the second half; its encoder and
codebooks make the tokens the LM learns. Then the decoder alone trains on those frozen tokens
(`decoder_steps`; reconstruction losses, cosine decay): the sound improves, the tokens stay.
The LM runs in phases: stage 1 (TTS only) and stage 2 (all tasks) on the first 1,200 simulated
examples, then stage 2 continued with a fresh schedule on every training utterance twice (two
simulated variants each), then warm restarts (`Recipe.continued`), the last two on corpora three and
six times as large: more sentences per speaker for the LM alone (the codec and its tokens stay as they are).

    python -m speechx_cli.train.recipe all          # what `make demo-checkpoint` runs
    python -m speechx_cli.train.recipe examples     # examples/ from dev speakers only

Each stage is a `speechx train` command (prepare synthetic, codec, tokenize, lm, export) run as a child
process, the same commands a user runs on their own data. Every stage is resumable: rerunning the
recipe after a kill continues each stage where its last checkpoint left it, and a stage whose output
is complete is skipped. Stages run as child
processes with one torch thread each: on 2 busy cores, one thread was 10-25x faster per step
than two fighting for the same cores. LM runs use both cores as two DDP ranks (gloo) of one
thread each (1.8x the tokens/s of one process; the same updates: see lm_train's batching), in bf16
autocast where the CPU has native bf16 (lm_train's precision "auto": 1.7-1.8x again).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
import typer

from ..audio import save
from ..children import run_module
from ..prompts import Task

app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@dataclass(frozen=True)
class Recipe:
    data: Path = Path("data")
    runs: Path = Path("runs")
    out: Path = Path("checkpoints/speechx-demo.safetensors")
    n_per_speaker: int = 50
    # The shipped demo was made with these (CPU time: see checkpoints/README.md).
    codec_steps: int = 3188  # the first codec run, at a constant learning rate
    # then the whole codec again from those weights (fresh optimizer), cosine decay from this step on
    codec_more_steps: int = 10_000
    codec_decay_start: int = 5_000
    # Then the decoder alone on the frozen encoder and codebooks (0: none), without a discriminator: on
    # devbench PESQ 1.40 -> 1.45, MCD 2.95 -> 2.87 in 6,000 steps. The same phase against encodec's MS-STFT
    # discriminator cost this codec (1,500 steps: STOI 0.87 -> 0.84, PESQ 1.40 -> 1.35).
    decoder_steps: int = 6_000
    first_train_examples: int = 1200  # stages 1 and 2
    variants: int = 2  # the continued stage 2: every training utterance, this many variants
    max_dev_examples: int = 120
    stage1_steps: int = 100
    stage2_steps: int = 600
    # stage 2 continued, (steps, peak lr, corpus utterances per speaker) per phase: a fresh schedule, then
    # warm restarts, each on every training example of its corpus (None: the codec's, else a larger one the
    # codec never sees); phase i runs in runs/lm-all-full, lm-all-full2, ... A third phase on the codec's
    # corpus raised the AR's dev loss; on 150, then 300 sentences per speaker it fell on every task
    # (checkpoints/README.md).
    continued: tuple[tuple[int, float, int | None], ...] = ((8_000, 8e-4, None), (4_000, 4e-4, None),
                                                            (8_000, 4e-4, 150), (4_500, 4e-4, 300))
    batch_frames: int = 2400
    # attention dropout costs 1.5x on CPU; the AR overfit only after ~30 passes over the codec's corpus (a
    # further phase on it raised its dev loss), and more data was the cheaper cure (the 150-sentence phase)
    dropout: float = 0.0
    threads: int = 1
    # sharding is one process whose codec encoder uses both cores well: 6.9 examples/s on 2 threads
    # against 4.3 on 1 (data/corpus300, this machine)
    shard_threads: int = 2
    lm_processes: int = 2  # LM runs: DDP (gloo) ranks of one thread each, 1.8x one process here
    seed: int = 0

    @property
    def corpus(self) -> Path:
        return self.data / "corpus"

    def phase_per_speaker(self, per_speaker: int | None) -> int:
        """A continued phase's corpus size (None: the codec's corpus)."""
        return self.n_per_speaker if per_speaker is None else per_speaker

    def lm_corpus(self, per_speaker: int | None) -> Path:
        """The corpus of a continued LM phase: the codec's own, or a larger one beside it."""
        n = self.phase_per_speaker(per_speaker)
        return self.corpus if n == self.n_per_speaker else self.data / f"corpus{n}"

    def lm_shards(self, per_speaker: int | None) -> Path:
        """Every training utterance of that corpus, `variants` simulated examples each."""
        n = self.phase_per_speaker(per_speaker)
        return self.data / ("shards-train-full" if n == self.n_per_speaker else f"shards-train-{n}")

    @property
    def lm_only_corpora(self) -> list[int]:
        """Utterances per speaker of the corpora only continued LM phases use."""
        return sorted({self.phase_per_speaker(n) for _, _, n in self.continued} - {self.n_per_speaker})

    @property
    def codec_ckpt(self) -> Path:
        return self.runs / "codec" / "codec_train.pt"

    @property
    def tokenizer_ckpt(self) -> Path:
        """The last run that trains the encoder and codebooks: its tokens are what the LM learns."""
        return self.runs / "codec-long" / "codec_train.pt" if self.codec_more_steps else self.codec_ckpt

    @property
    def decoder_ckpt(self) -> Path:
        """The codec the checkpoint ships: the decoder phase's, or the tokenizer's own without one."""
        if not self.decoder_steps:
            return self.tokenizer_ckpt
        return self.runs / "codec-decoder" / "codec_train.pt"

    def lm_ckpt(self, name: str) -> Path:
        return self.runs / f"lm-{name}" / "lm_train.pt"

    def continued_name(self, i: int) -> str:
        return "all-full" if i == 0 else f"all-full{i + 1}"


def train(*args: str, threads: int, processes: int = 1) -> None:
    """`speechx train ARGS` (`python -m speechx_cli train ARGS`), as run_module runs it."""
    run_module("speechx_cli", "train", *args, threads=threads, processes=processes)


def _resume_flag(ckpt: Path) -> list[str]:
    return ["--resume"] if ckpt.exists() else []


def corpus(r: Recipe) -> None:
    for n in (r.n_per_speaker, *r.lm_only_corpora):
        train("prepare", "synthetic", str(r.lm_corpus(n)), "--format", "synthetic", "--n-per-speaker", str(n),
              "--seed", str(r.seed), "--workers", "2", threads=1)


def codec_lists(r: Recipe) -> tuple[Path, Path]:
    """Training speech + training noises (the codec must code mixtures and noise too), dev speech."""
    from .prepare.lists import write_codec_lists

    return write_codec_lists(r.corpus, r.data / "codec-train.txt", r.data / "codec-dev.txt", seed=r.seed)


def _codec_run(r: Recipe, lists: tuple[Path, Path], ckpt: Path, steps: int, *extra: str) -> None:
    data, dev = lists
    train("codec", "--data", str(data), "--dev", str(dev), "--out", str(ckpt.parent), "--preset", "demo",
          "--steps", str(steps), "--threads", str(r.threads), *extra, *_resume_flag(ckpt), threads=r.threads)


def codec(r: Recipe) -> None:
    lists = codec_lists(r)
    _codec_run(r, lists, r.codec_ckpt, r.codec_steps)
    if r.codec_more_steps:
        _codec_run(r, lists, r.tokenizer_ckpt, r.codec_more_steps, "--init-from", str(r.codec_ckpt),
                   "--lr-decay-start", str(r.codec_decay_start))
    if not r.decoder_steps:
        return
    _codec_run(r, lists, r.decoder_ckpt, r.decoder_steps, "--init-from", str(r.tokenizer_ckpt), "--freeze-tokenizer",
               "--lr-decay-start", "0")


def shards(r: Recipe) -> None:
    """The full training set first: the 1,200-example set is its start and links its shards. Dev examples
    come from the codec's corpus whatever the LM trains on, so every phase's dev loss is comparable."""
    full = r.lm_shards(r.n_per_speaker)
    jobs = [(r.corpus, full, "train", r.variants, None, None),
            (r.corpus, r.data / "shards-train", "train", 1, r.first_train_examples, full),
            (r.corpus, r.data / "shards-dev", "dev", 1, r.max_dev_examples, None),
            *((r.lm_corpus(n), r.lm_shards(n), "train", r.variants, None, None) for n in r.lm_only_corpora)]
    for corpus_dir, out, split, variants, cap, reuse in jobs:
        limit = [] if cap is None else ["--max-examples", str(cap)]
        link = [] if reuse is None else ["--reuse", str(reuse)]
        train("tokenize", str(corpus_dir), str(out), "--codec-checkpoint", str(r.tokenizer_ckpt), "--variants",
              str(variants), "--split", split, "--seed", str(r.seed), "--examples-per-shard", "300", "--threads",
              str(r.shard_threads), *limit, *link, threads=r.shard_threads)


def _lm(r: Recipe, name: str, stage: str, data: Path, steps: int, init: Path | None, lr: float = 5e-4,
        warmup: int | None = None) -> Path:
    ckpt = r.lm_ckpt(name)
    extra = ["--init-from", str(init)] if init is not None and not ckpt.exists() else []
    train("lm", "--data", str(data), "--dev", str(r.data / "shards-dev"), "--out", str(ckpt.parent), "--preset",
          "demo", "--stage", stage, "--max-steps", str(steps), "--batch-frames", str(r.batch_frames), "--dropout",
          str(r.dropout), "--lr", str(lr), "--warmup", str(warmup or max(20, steps // 20)),
          "--eval-every", str(max(100, steps // 4)), "--ckpt-every", "100", "--threads", str(r.threads),
          *extra, *_resume_flag(ckpt), threads=r.threads, processes=r.lm_processes)
    return ckpt


def lm(r: Recipe) -> Path:
    first = r.data / "shards-train"
    ckpt = _lm(r, "tts", "tts", first, r.stage1_steps, None)
    ckpt = _lm(r, "all", "all", first, r.stage2_steps, ckpt)
    for i, (steps, lr, per_speaker) in enumerate(r.continued):
        ckpt = _lm(r, r.continued_name(i), "all", r.lm_shards(per_speaker), steps, ckpt, lr=lr, warmup=100)
    return ckpt


def export(r: Recipe, ckpt: Path) -> None:
    train("export", str(ckpt), str(r.out), "--codec-checkpoint", str(r.decoder_ckpt), "--force", "--half",
          "--info", json.dumps(_training_facts(r)), threads=r.threads)


def _training_facts(r: Recipe) -> dict:
    """What the model card needs: the step each stage's training checkpoint was saved at, and the LM's
    target tokens per stage and in all (the exported checkpoint's own `tokens` counts its last phase)."""
    facts = {"recipe": "make demo-checkpoint", "corpus_utterances_per_speaker": r.n_per_speaker}
    stages = [("codec", r.codec_ckpt, None), ("codec_continued", r.tokenizer_ckpt, None),
              ("codec_decoder", r.decoder_ckpt, None), ("lm_stage1", r.lm_ckpt("tts"), None),
              ("lm_stage2", r.lm_ckpt("all"), None),
              *((f"lm_stage2_continued_{i + 1}", r.lm_ckpt(r.continued_name(i)), r.phase_per_speaker(n))
                for i, (_, _, n) in enumerate(r.continued))]
    seen: set[Path] = set()
    for name, path, per_speaker in stages:
        if path in seen or not path.exists():  # a skipped codec phase shares the previous phase's path
            continue
        seen.add(path)
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        facts[f"{name}_steps"] = int(ckpt["step"])
        if per_speaker is not None:
            facts[f"{name}_utterances_per_speaker"] = per_speaker
        if name.startswith("lm_"):
            tokens = int(ckpt["tokens"])
            facts[f"{name}_tokens"] = tokens
            facts["lm_tokens_total"] = facts.get("lm_tokens_total", 0) + tokens
    return facts


def examples(corpus_dir: Path, out: Path = Path("examples"), seed: int = 0, speakers: str = "") -> None:
    """Inputs for `make demo`, made from the corpus's dev speakers only (never seen in training); with
    `speakers`, only those whose name starts with it (e.g. "kokoro:", the natural voices)."""
    from .simulate import Corpus, SimulationOptions, Simulator

    dev = Corpus.load(corpus_dir, "dev", speakers)
    sr = dev.sample_rate
    sim = lambda **kw: Simulator(dev, SimulationOptions(text_probability=1.0, max_seconds=6.0, **kw))  # noqa: E731
    out.mkdir(parents=True, exist_ok=True)
    ns = sim(snr_db=(5.0, 5.0)).example(0, seed, Task.NS)
    save(out / "noisy.wav", ns.source, sr, force=True)
    save(out / "noisy-reference.wav", ns.target, sr, force=True)
    (out / "noisy.txt").write_text(ns.text + "\n")
    tse = sim(sir_db=(0.0, 0.0)).example(1, seed, Task.TSE)
    save(out / "mixture.wav", tse.source, sr, force=True)
    save(out / "enrollment.wav", tse.enrollment, sr, force=True)
    save(out / "mixture-reference.wav", tse.target, sr, force=True)
    tts = sim().example(2, seed, Task.TTS)
    save(out / "prompt.wav", tts.enrollment, sr, force=True)
    (out / "tts.txt").write_text(tts.text + "\n")
    _edit_example(dev, out)
    print(f"examples written to {out}/")


def _edit_example(dev, out: Path) -> None:
    """An original dev sentence with its transcript and an edited transcript (a word replaced)."""
    rec = next(u for u in dev.utterances if u.edit and u.edit["kind"] == "replace" and 2.0 < u.duration < 6.0)
    save(out / "clean.wav", dev.audio(rec.path), dev.sample_rate, force=True)
    (out / "transcript.txt").write_text(rec.text + "\n")
    (out / "edited.txt").write_text(rec.edit["text"] + "\n")


Opt = typer.Option


@app.command("all")
def run_all(
    codec_steps: Annotated[int, Opt(help="codec training steps")] = Recipe.codec_steps,
    codec_more_steps: Annotated[int, Opt(help="the whole codec again from the first run's weights, cosine decay "
                                              "from --codec-decay-start (0: skip)")] = Recipe.codec_more_steps,
    codec_decay_start: Annotated[int, Opt(help="step of that run where the decay starts")] = Recipe.codec_decay_start,
    decoder_steps: Annotated[int, Opt(help="decoder-only steps on the frozen tokenizer (0: none)")] = Recipe.decoder_steps,
    stage1_steps: Annotated[int, Opt(help="LM stage 1 (TTS only) steps")] = Recipe.stage1_steps,
    stage2_steps: Annotated[int, Opt(help="LM stage 2 (all tasks) steps")] = Recipe.stage2_steps,
    continued_steps: Annotated[str, Opt(help="LM stage 2 continued on all data: steps of each phase, comma-separated "
                                            "(fewer phases: a shorter list)")] = ",".join(
        str(steps) for steps, *_ in Recipe.continued),
    n_per_speaker: Annotated[int, Opt(help="utterances per speaker of the codec's corpus (also the LM's but for the "
                                           "continued phases on larger corpora)")] = Recipe.n_per_speaker,
    out: Annotated[Path, Opt(help="the inference checkpoint (v2's recipe starts from it)")] = Recipe.out,
) -> None:
    """Every stage, resuming whatever a previous run left."""
    try:
        steps = [int(v) for v in continued_steps.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{continued_steps!r}: expected comma-separated step counts") from None
    if len(steps) > len(Recipe.continued):
        raise typer.BadParameter(f"at most {len(Recipe.continued)} continued phases (their learning rates are set)")
    continued = tuple((n, lr, per_speaker) for n, (_, lr, per_speaker) in zip(steps, Recipe.continued))
    r = Recipe(codec_steps=codec_steps, codec_more_steps=codec_more_steps, codec_decay_start=codec_decay_start,
               decoder_steps=decoder_steps, stage1_steps=stage1_steps,
               stage2_steps=stage2_steps, continued=continued, n_per_speaker=n_per_speaker, out=out)
    corpus(r)
    codec(r)
    shards(r)
    export(r, lm(r))
    examples(r.corpus, seed=r.seed)


@app.command("examples")
def run_examples(out: Annotated[Path, typer.Argument()] = Path("examples")) -> None:
    """Only the demo inputs (needs the corpus)."""
    examples(Recipe().corpus, out)


if __name__ == "__main__":
    app()
