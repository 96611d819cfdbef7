"""The codec study of issue 21: codecs trained at an equal CPU budget on the same audio, their
reconstruction side by side, then the same small LM trained for the same steps on each codec's tokens.

    python -m speechx_cli.train.codec_study run runs/codec-study --corpus data/corpus-v2 \
        --bench devbench-v2 --base checkpoints/speechx-demo.safetensors --core-hours 2
    python -m speechx_cli.train.codec_study table runs/codec-study   # what is measured so far

Arms (`ARMS`): `small` (today's EnCodec-architecture codec, from scratch), `dac` (the DAC-style codec,
from scratch), `vocos` (a Vocos decoder on the tokens of --base, the shipped codec); each with its
adversarial phase after a reconstruction warm-up (the first 60% of its steps), and `vocos-adv0`,
`dac-adv0` with the adversarial losses from the first step (which schedule wins). The budget is
wall-clock hours on `threads` threads (core-hours = hours x threads): each arm first trains 40 steps
in OUT/calibration/ARM, and the seconds per step with and without the discriminators, measured there,
set its steps. The shipped codec (--base) is a row of its own, trained long before on older data.

Then per token set (the shipped codec's: --base and every vocos arm decode it; each other arm's own):
TTS examples tokenized from the corpus, the same LM (preset, steps, batches, seed) trained on each,
exported with each of its decoders and measured with `speechx eval tts` on the benchmark's dev voices.

Everything lands in OUT: ARM/ (codec run), eval-codec/ (`speechx eval codec` of all codecs),
tokens-SET/{train,dev}, lm-SET/ (lm_train run), models/NAME.safetensors, eval-tts/NAME/, study.md (the
tables). A rerun skips what is done and resumes what is not, so the command is safe to rerun after a
kill, in a later session too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from .. import checkpoint
from ..children import run_module
from .loop import LOG_NAME
from ..eval.report import ci_text


@dataclass(frozen=True)
class Arm:
    kind: str  # codec_train --kind
    adv_fraction: float  # the discriminators join at this fraction of the steps (0: from the first step)


ARMS = {"small": Arm("small", 0.6), "vocos": Arm("vocos", 0.6), "dac": Arm("dac", 0.6),
        "vocos-adv0": Arm("vocos", 0.0), "dac-adv0": Arm("dac", 0.0)}
BASE = "shipped"  # the row and token set of --base
CALIBRATION_STEPS = 40  # steps 10-20 time reconstruction steps, 30-40 adversarial ones (from step 20)
CODEC_CKPT = "codec_train.pt"


@dataclass(frozen=True)
class Study:
    out: Path
    corpus: Path  # a synthetic or prepared corpus (manifest.jsonl, noise.jsonl)
    bench: Path  # a dev benchmark with tts items (their clean references are the codec items too)
    base: str  # the shipped codec (its tokens: vocos's input, and a token set)
    core_hours: float = 2.0  # each codec arm's budget
    arms: tuple[str, ...] = ("vocos", "small", "dac", "vocos-adv0")
    threads: int = 2
    lm_steps: int = 3000
    lm_preset: str = "demo"
    lm_examples: int = 4000  # tts training examples per token set
    lm_dev_examples: int = 120
    batch_frames: int = 2400
    eval_limit: Optional[int] = None  # benchmark items per subset
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"unknown arm(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ARMS)}")
        if self.core_hours <= 0 or self.threads < 1 or self.lm_steps < 1:
            raise ValueError("core hours > 0, threads >= 1, LM steps >= 1")

    def codec(self, arm: str) -> Path:
        return self.out / arm / CODEC_CKPT

    def token_set(self, arm: str) -> str:
        """Whose tokens an arm's LM learns: a Vocos decoder reads the shipped codec's."""
        return BASE if arm == BASE or ARMS[arm].kind == "vocos" else arm

    def tokenizer(self, token_set: str) -> str:
        return self.base if token_set == BASE else str(self.codec(token_set))

    @property
    def token_sets(self) -> list[str]:
        return list(dict.fromkeys([BASE, *(self.token_set(a) for a in self.arms)]))


# ---- codec arms ----------------------------------------------------------------------------------

def step_seconds(log: Path) -> tuple[float, float]:
    """(reconstruction, adversarial) wall seconds per step of a calibration run's log: its cumulative
    speed at steps 10, 20, 30, 40 gives each step's elapsed time, and the differences leave out the
    start (the first steps' allocations)."""
    at = {r["step"]: r["step"] / r["steps_per_s"] for r in map(json.loads, log.read_text().splitlines())
          if r.get("steps_per_s")}
    if not {10, 20, 30, 40} <= at.keys():
        raise ValueError(f"{log}: a calibration log needs steps 10, 20, 30 and 40")
    return (at[20] - at[10]) / 10, (at[40] - at[30]) / 10


def _codec_train(s: Study, arm: str, out: Path, steps: int, adv_start: int, *extra: str) -> None:
    base = ["--base", s.base] if ARMS[arm].kind == "vocos" else []
    resume = ["--resume"] if (out / CODEC_CKPT).exists() else []
    run_module("speechx_cli.train.codec_cli", "--data", str(s.out / "codec-train.txt"), "--kind", ARMS[arm].kind,
               *base, "--out", str(out), "--steps", str(steps), "--adv-start", str(adv_start), "--threads",
               str(s.threads), "--seed", str(s.seed), *extra, *resume, threads=s.threads)


def calibrate(s: Study, arm: str) -> dict:
    path = s.out / "calibration" / f"{arm}.json"
    if path.exists():
        return json.loads(path.read_text())
    run = s.out / "calibration" / arm
    _codec_train(s, arm, run, CALIBRATION_STEPS, CALIBRATION_STEPS // 2, "--quantizer-warmup", "5", "--eval-every",
                 str(10 * CALIBRATION_STEPS))
    rec, adv = step_seconds(run / LOG_NAME)
    f = ARMS[arm].adv_fraction
    steps = int(s.core_hours * 3600 / s.threads / (f * rec + (1 - f) * adv))
    facts = {"reconstruction_s_per_step": rec, "adversarial_s_per_step": adv, "threads": s.threads,
             "core_hours": s.core_hours, "steps": steps, "adv_start": round(f * steps)}
    path.write_text(json.dumps(facts, indent=1) + "\n")
    return facts


def train_arm(s: Study, arm: str) -> None:
    plan = calibrate(s, arm)
    ckpt = s.codec(arm)
    if checkpoint.training_step(ckpt, checkpoint.CODEC_TRAINING) >= plan["steps"]:
        return
    _codec_train(s, arm, ckpt.parent, plan["steps"], plan["adv_start"], "--dev", str(s.out / "codec-dev.txt"),
                 "--eval-every", str(max(250, plan["steps"] // 8)))


def _stale(target: Path, *sources: Path) -> bool:
    return not target.exists() or any(target.stat().st_mtime < p.stat().st_mtime for p in sources if p.exists())


def eval_codecs(s: Study) -> None:
    report = s.out / "eval-codec" / "report.json"
    codecs = [s.codec(a) for a in s.arms]
    if not _stale(report, *codecs):
        return
    named = [f"{BASE}={s.base}", *(f"{a}={s.codec(a)}" for a in s.arms)]
    limit = ["--limit", str(s.eval_limit)] if s.eval_limit else []
    run_module("speechx_cli", "eval", "codec", str(s.bench), *(x for n in named for x in ("-c", n)), "--out",
               str(report.parent), "--no-plots", "--force", *limit, threads=1)


# ---- the same LM on each token set ---------------------------------------------------------------

def tokenize(s: Study, token_set: str) -> tuple[Path, Path]:
    out = s.out / f"tokens-{token_set}"
    for split, cap in (("train", s.lm_examples), ("dev", s.lm_dev_examples)):
        if not (out / split / "index.json").exists():
            run_module("speechx_cli", "train", "tokenize", str(s.corpus), str(out / split), "--codec-checkpoint",
                       s.tokenizer(token_set), "--tasks", "tts", "--variants", "1", "--split", split,
                       "--max-examples", str(cap), "--seed", str(s.seed), "--threads", str(s.threads),
                       threads=s.threads)
    return out / "train", out / "dev"


def train_lm(s: Study, token_set: str) -> Path:
    data, dev = tokenize(s, token_set)
    run = s.out / f"lm-{token_set}"
    ckpt = run / "lm_train.pt"
    if checkpoint.training_step(ckpt, checkpoint.LM_TRAINING) >= s.lm_steps:
        return ckpt
    resume = ["--resume"] if ckpt.exists() else []
    run_module("speechx_cli.train.lm_train", "train", "--data", str(data), "--dev", str(dev), "--out", str(run),
               "--preset", s.lm_preset, "--stage", "tts", "--max-steps", str(s.lm_steps), "--batch-frames",
               str(s.batch_frames), "--dropout", "0", "--lr", "5e-4", "--warmup", "100", "--seed", str(s.seed),
               "--eval-every", str(max(100, s.lm_steps // 4)), "--ckpt-every", "100", "--threads", "1", *resume,
               threads=1, processes=s.threads)
    return ckpt


def decoders(s: Study, token_set: str) -> dict[str, str]:
    """Every codec that decodes a token set: {row name: codec checkpoint}."""
    if token_set != BASE:
        return {token_set: str(s.codec(token_set))}
    return {BASE: s.base, **{a: str(s.codec(a)) for a in s.arms if s.token_set(a) == BASE}}


def measure_lm(s: Study, token_set: str, lm: Path) -> None:
    for name, codec in decoders(s, token_set).items():
        model = s.out / "models" / f"{name}.safetensors"
        if _stale(model, lm, Path(codec)):
            model.parent.mkdir(parents=True, exist_ok=True)
            run_module("speechx_cli.train.lm_train", "export", str(lm), str(model), "--codec-checkpoint", codec,
                       "--force", "--info", json.dumps({"codec_study": name}), threads=1)
        report = s.out / "eval-tts" / name / "report.json"
        if _stale(report, model):
            limit = ["--limit", str(s.eval_limit)] if s.eval_limit else []
            run_module("speechx_cli", "eval", "tts", str(s.bench), "--systems", "speechx", "--checkpoint", str(model),
                       "--out", str(report.parent), "--seed", str(s.seed), "--no-plots", "--force", *limit,
                       threads=s.threads)


def run_all(s: Study) -> str:
    from .prepare.lists import write_codec_lists

    s.out.mkdir(parents=True, exist_ok=True)
    (s.out / "study.json").write_text(json.dumps(asdict(s), default=str, indent=1) + "\n")
    if not (s.out / "codec-dev.txt").exists():
        write_codec_lists(s.corpus, s.out / "codec-train.txt", s.out / "codec-dev.txt", seed=s.seed)
    for arm in s.arms:
        train_arm(s, arm)
    eval_codecs(s)
    for token_set in s.token_sets:
        measure_lm(s, token_set, train_lm(s, token_set))
    return write_tables(s.out)


# ---- the tables ----------------------------------------------------------------------------------

CODEC_COLUMNS = (("pesq", "PESQ-wb", 2), ("stoi", "STOI", 3), ("mcd", "MCD dB", 2), ("sim_input", "sim", 3),
                 ("wer", "WER", 3), ("dnsmos_ovrl", "OVRL", 2))


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def codec_table(out: Path) -> list[str]:
    rep = _json(out / "eval-codec" / "report.json")
    if rep is None:
        return []
    head = ["codec", "steps", "core-h", *(label for _, label, _ in CODEC_COLUMNS), "codes used per level", "params M",
            "kbps", "enc xRT", "dec xRT"]
    lines = [f"Reconstruction of {len({r['id'] for r in rep['items']})} clean dev utterances "
             f"(`speechx eval codec`; mean ±95% CI):", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for system in rep["systems"]:
        cells = rep["summary"][system][rep["subsets"][-1]]
        plan = _json(out / "calibration" / f"{system}.json") or {}
        cost = rep.get("costs", {}).get(system, {})
        steps = str(plan.get("steps", "-"))
        if plan:
            steps += f" (GAN from {plan['adv_start']})"
        row = [system, steps, f"{plan['core_hours']:.1f}" if plan else "-",
               *(ci_text(cells.get(m), d) for m, _, d in CODEC_COLUMNS),
               "{}-{}".format(min(cost["codes_used"]), max(cost["codes_used"])) if cost.get("codes_used") else "-",
               *(f"{cost[k]:.2f}" if k in cost else "-" for k in ("params_m",)),
               *(f"{cost[k]:.1f}" if k in cost else "-" for k in ("kbps",)),
               *(f"{1 / cost[k]:.0f}" if k in cost else "-" for k in ("encode_rtf", "decode_rtf"))]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def lm_table(out: Path) -> list[str]:
    rows = []
    for report in sorted((out / "eval-tts").glob("*/report.json")):
        name, rep = report.parent.name, json.loads(report.read_text())
        cells = rep["summary"]["speechx"][rep["subsets"][-1]]
        token_set = name if (out / f"lm-{name}").exists() else BASE
        log = out / f"lm-{token_set}" / LOG_NAME
        lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        dev = next((r["dev"].get("tts", {}) for r in reversed(lines) if "dev" in r), {})
        rows.append([name, token_set, str(lines[-1]["step"]) if lines else "-",
                     f"{dev['ar']:.3f} / {dev['nar']:.3f}" if dev else "-", ci_text(cells.get("wer"), 3),
                     ci_text(cells.get("sim_prompt"), 3), ci_text(cells.get("sim_others"), 3),
                     ci_text(cells.get("dnsmos_ovrl"), 2)])
    if not rows:
        return []
    head = ["decoder", "tokens of", "LM steps", "dev AR / NAR loss", "TTS WER", "sim prompt", "sim others", "OVRL"]
    return ["The same LM on each codec's tokens (`speechx eval tts`, dev voices; mean ±95% CI):", "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def write_tables(out: Path) -> str:
    text = "\n".join([*codec_table(out), "", *lm_table(out)]).strip() + "\n"
    (out / "study.md").write_text(text)
    return text


# ---- command line ---------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])
Opt = typer.Option


@app.command("run")
def run_cli(
    out: Annotated[Path, typer.Argument(help="the study's folder")],
    corpus: Annotated[Path, Opt(exists=True, file_okay=False, help="corpus (manifest.jsonl)")],
    bench: Annotated[Path, Opt(exists=True, file_okay=False, help="dev benchmark with tts items")],
    base: Annotated[str, Opt(help="the shipped codec: an inference or codec training checkpoint")],
    core_hours: Annotated[float, Opt(help="each codec arm's budget")] = Study.core_hours,
    arms: Annotated[str, Opt(help=f"comma-separated, of {', '.join(ARMS)}")] = ",".join(Study.arms),
    threads: Annotated[int, Opt(help="threads of each codec run; DDP ranks of each LM run")] = Study.threads,
    lm_steps: Annotated[int, Opt()] = Study.lm_steps,
    lm_preset: Annotated[str, Opt()] = Study.lm_preset,
    lm_examples: Annotated[int, Opt(help="tts training examples per token set")] = Study.lm_examples,
    limit: Annotated[Optional[int], Opt(help="benchmark items per subset")] = None,
    seed: Annotated[int, Opt()] = Study.seed,
) -> None:
    """Train, measure and tabulate every arm (skipping what is done)."""
    try:
        s = Study(out, corpus, bench, base, core_hours, tuple(a.strip() for a in arms.split(",") if a.strip()),
                  threads, lm_steps, lm_preset, lm_examples, eval_limit=limit, seed=seed)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    print(run_all(s))


@app.command("table")
def table_cli(out: Annotated[Path, typer.Argument(exists=True, file_okay=False)]) -> None:
    """The tables of what OUT holds so far (study.md)."""
    print(write_tables(out))


if __name__ == "__main__":
    app()
