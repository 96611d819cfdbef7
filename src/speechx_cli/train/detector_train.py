"""Train a frame detector (detector.py) on the training simulation's mixtures of its task.

    python -m speechx_cli.train.detector_train run runs/detector --corpus data/corpus-v2s \
        --examples 4000 --steps 3000 [--task ns]

Examples: `Simulator.example(i, seed, task)` of the corpus's training split (every noise, SNR, room and
level the LM's examples of that task see): the mixture, and per codec frame a label, 1 where the part the
task drops (mixture - target) is `label_db` under the target: for remove-speech (`--task sr`, the
default) the speech under the background, for denoise (`--task ns`) the background, with the room's
reverberation, under the dry speech; for extract-speaker (`--task tse`) the interferer under the target, and
(`--task tse_silent`, its target-silent frames) the target under the interferer: those two also carry the
target's enrollment. A share detector (`--task tse_gain`, extract-speaker's target share) learns instead, per
frame and mel band (detector.SHARE_BANDS), the target's share of the band's energy (soft labels, the same
loss), from the same mixtures and enrollments. A second seed's examples of the same split are the validation set (the dev split stays
for the benchmarks). The threshold kept is the lowest whose validation precision
(picked frames that are truly so) reaches `--precision`: forcing a frame that holds what the task drops
puts it into the output.

OUT holds settings.json (a rerun with other settings is refused), data-train/ and data-val/ (the examples,
made once: one .npy per array, read memory-mapped, so training holds none of the audio in its own memory;
a run made before keeps its data-train.npz / data-val.npz), state.pt (resumes a killed run from
its last `--save-every`), detector.safetensors (the weights, the config with the threshold in its header)
and report.json (validation loss and, per threshold, frames picked, precision and recall).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Annotated

import librosa
import numpy as np
import torch
import torch.nn.functional as F
import typer
from safetensors import safe_open
from safetensors.torch import save_file

from ..detector import SHARE_BANDS, DetectorConfig, FrameDetector, build
from ..files import atomic_path, claim_folder
from ..prompts import Task
from ..speechfree import SHARES, TASK_OF, frame_energy
from .simulate import Corpus, SimulationOptions, Simulator

WEIGHTS_NAME = "detector.safetensors"
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(2, 20))


def frame_labels(dropped: np.ndarray, kept: np.ndarray, hop: int, label_db: float) -> np.ndarray:
    """(len // hop,) 1.0 where the frame's energy of what the task drops is `label_db` under what it keeps."""
    frames = len(dropped) // hop
    ed, ek = frame_energy(dropped, hop, frames), frame_energy(kept, hop, frames)
    return (ed < ek * 10 ** (-label_db / 10)).astype(np.float32)


def band_labels(model: FrameDetector, dropped: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(len // hop, bands) the kept part's share of each gain band's energy (0.5 where both are silent)."""
    frames = len(kept) // model.cfg.hop_length
    ek, ed = (model.band_energy(torch.from_numpy(np.asarray(x, np.float32))[None], frames)[0].double()
              for x in (kept, dropped))
    tiny = 1e-12
    return ((ek + tiny) / (ek + ed + 2 * tiny)).float().numpy()


def _example_parts(corpus: Path, n: int, seed: int, cfg: DetectorConfig) -> Iterator[dict[str, np.ndarray]]:
    """Each of n mixtures of the config's task from the corpus's training split: its audio, frame labels
    and (extract-speaker) enrollment."""
    task = TASK_OF[cfg.task]
    sim = Simulator(Corpus.load(corpus, "train"), SimulationOptions(tasks=(task,)))
    bands = FrameDetector(cfg) if cfg.bands else None  # its band energies
    for i in range(n):
        ex = sim.example(i, seed, task)
        source, target, enrollment = ex.source, ex.target, ex.enrollment
        if sim.corpus.sample_rate != cfg.sample_rate:  # the codec's rate (e.g. 24 kHz for EnCodec)
            source, target, enrollment = (
                None if x is None else librosa.resample(x, orig_sr=sim.corpus.sample_rate, target_sr=cfg.sample_rate)
                for x in (source, target, enrollment))
        dropped, kept = source - target, target
        if cfg.task == "tse_silent":  # where the target is under the interferer: the answer is silence
            dropped, kept = kept, dropped
        y = band_labels(bands, dropped, kept) if bands else frame_labels(dropped, kept, cfg.hop_length, cfg.label_db)
        part = {"audio": source[: len(y) * cfg.hop_length].astype(np.float32), "labels": y}
        yield part | ({"enroll": enrollment.astype(np.float32)} if task is Task.TSE else {})


def _end_to_end(parts: Iterator[dict[str, np.ndarray]], folder: Path | None = None) -> dict[str, np.ndarray]:
    """The parts' arrays end to end per key, with the examples' offsets ("starts" in label frames,
    "enroll_starts" in samples): in memory, or (`folder`) each part written to disk as it comes (a raw file
    per key, then one .npy per array) and returned memory-mapped, so the examples are never all in memory."""
    lengths: dict[str, list[int]] = {}
    kept: dict[str, list[np.ndarray]] = {}
    raw: dict[str, tuple] = {}  # key -> (open raw file, dtype, trailing shape), with `folder`
    try:
        for part in parts:
            for k, v in part.items():
                lengths.setdefault(k, []).append(len(v))
                if folder is None:
                    kept.setdefault(k, []).append(v)
                    continue
                if k not in raw:
                    raw[k] = (open(folder / f"{k}.raw", "wb"), v.dtype, v.shape[1:])
                raw[k][0].write(np.ascontiguousarray(v, raw[k][1]).tobytes())
    finally:
        for f, _, _ in raw.values():
            f.close()
    offsets = {"starts": "labels", "enroll_starts": "enroll"}
    data = {name: np.cumsum([0, *lengths[of]]) for name, of in offsets.items() if of in lengths}
    if folder is None:
        return data | {k: np.concatenate(v) for k, v in kept.items()}
    for k, v in data.items():
        np.save(folder / f"{k}.npy", v)
    for k, (_, dtype, trailing) in raw.items():  # the .npy header, then the raw bytes copied in chunks
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": (sum(lengths[k]), *trailing)}
        with open(folder / f"{k}.npy", "wb") as f, open(folder / f"{k}.raw", "rb") as src:
            np.lib.format.write_array_header_2_0(f, header)
            shutil.copyfileobj(src, f, 1 << 24)
        (folder / f"{k}.raw").unlink()
    return _load_folder(folder)


def _load_folder(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}


def make_examples(corpus: Path, n: int, seed: int, cfg: DetectorConfig) -> dict[str, np.ndarray]:
    """n mixtures of the config's task from the corpus's training split, concatenated: audio, labels and offsets."""
    return _end_to_end(_example_parts(corpus, n, seed, cfg))


def _examples(out: Path, name: str, corpus: Path, n: int, seed: int, cfg: DetectorConfig) -> dict[str, np.ndarray]:
    """The examples of OUT/data-NAME/ (made now if missing; written aside, then renamed), memory-mapped;
    a run made before this layout keeps its OUT/data-NAME.npz."""
    old, folder = out / f"data-{name}.npz", out / f"data-{name}"
    if old.exists() and not folder.exists():
        with np.load(old) as z:
            return {k: z[k] for k in z.files}
    if not folder.exists():
        partial = out / f"data-{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        _end_to_end(_example_parts(corpus, n, seed, cfg), partial)
        os.replace(partial, folder)
    return _load_folder(folder)


def _item(data: dict[str, np.ndarray], i: int, hop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Example i: its audio, its frame labels and (tse) its enrollment (copies: the data may be memory-mapped)."""
    a, b = data["starts"][i], data["starts"][i + 1]
    enrollment = data["enroll"][data["enroll_starts"][i]: data["enroll_starts"][i + 1]] if "enroll" in data else None
    return np.array(data["audio"][a * hop: b * hop]), np.array(data["labels"][a:b]), \
        None if enrollment is None else np.array(enrollment)


def _batch(data: dict[str, np.ndarray], rng: np.random.Generator, size: int, max_frames: int,
           hop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`size` random examples, each cropped at a random place to the batch's shortest (<= max_frames), and
    their enrollments likewise (tse)."""
    items = [_item(data, int(i), hop) for i in rng.integers(len(data["starts"]) - 1, size=size)]
    frames = min(max_frames, *(len(y) for _, y, _ in items))
    xs, ys, es = [], [], []
    for x, y, e in items:
        k = int(rng.integers(len(y) - frames + 1))
        xs.append(x[k * hop: (k + frames) * hop])
        ys.append(y[k: k + frames])
    if items[0][2] is not None:
        n = min(max_frames * hop, *(len(e) for _, _, e in items))
        for _, _, e in items:
            k = int(rng.integers(len(e) - n + 1))
            es.append(e[k: k + n])
    return (torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)),
            torch.from_numpy(np.stack(es)) if es else None)


@torch.no_grad()
def validate(model: FrameDetector, data: dict[str, np.ndarray]) -> dict:
    """Validation loss, and per threshold: the share of frames picked, precision and recall."""
    model.eval()
    hop = model.cfg.hop_length
    probs, labels, loss = [], [], 0.0
    for i in range(len(data["starts"]) - 1):
        x, y, e = _item(data, i, hop)
        logits = model(torch.from_numpy(x)[None], len(y), None if e is None else torch.from_numpy(e)[None])[0]
        loss += float(F.binary_cross_entropy_with_logits(logits, torch.from_numpy(y), reduction="sum"))
        probs.append(torch.sigmoid(logits).numpy())
        labels.append(y)
    model.train()
    if model.cfg.bands:  # shares, not picks: the loss and the mean error of the share
        p, y = np.concatenate(probs), np.concatenate(labels)
        return {"loss": loss / y.size, "share_error": float(np.abs(p - y).mean()), "thresholds": []}
    p, y = np.concatenate(probs), np.concatenate(labels).astype(bool)
    rows = []
    for t in THRESHOLDS:
        picked = p > t
        rows.append({"threshold": t, "picked": float(picked.mean()),
                     "precision": float(y[picked].mean()) if picked.any() else float("nan"),
                     "recall": float(picked[y].mean()) if y.any() else float("nan")})
    return {"loss": loss / len(y), "positive": float(y.mean()), "thresholds": rows}


def choose_threshold(rows: list[dict], precision: float) -> float:
    """The lowest threshold whose precision reaches `precision` (the highest one tried if none does)."""
    good = [r["threshold"] for r in rows if r["precision"] >= precision]
    return min(good) if good else max(r["threshold"] for r in rows)


def save(path: Path, model: FrameDetector) -> Path:
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"detector_config": model.cfg.to_json()})
    return path


def load(path: str | Path) -> FrameDetector:
    """A detector file of `save` (checkpoint.with_detector puts it into an inference checkpoint)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return build(f.metadata()["detector_config"], {k: f.get_tensor(k) for k in f.keys()})


def train(out: Path, corpus: Path, examples: int, val_examples: int, steps: int, batch: int = 16,
          max_frames: int = 300, lr: float = 2e-3, precision: float = 0.8, seed: int = 0,
          save_every: int = 200, cfg: DetectorConfig = DetectorConfig(), log=print,
          stop_at: int | None = None) -> dict | None:
    """Train (resuming from OUT/state.pt), choose the threshold, write the weights and the report. With
    `stop_at`, stop after that step (its state saved; None returned): a later call goes on from there."""
    if not (Path(corpus) / "manifest.jsonl").is_file():
        raise FileNotFoundError(f"{corpus}: not a corpus (no manifest.jsonl)")
    settings = {"corpus": str(Path(corpus).resolve()), "examples": examples, "val_examples": val_examples,
                "steps": steps, "batch": batch, "max_frames": max_frames, "lr": lr, "seed": seed, "config": asdict(cfg)}
    claim_folder(out, "settings.json", settings, False, f"{out} holds a detector run made with other settings: "
                 "give another folder", lambda: None)
    t0 = time.time()
    data = _examples(out, "train", corpus, examples, seed, cfg)
    val = _examples(out, "val", corpus, val_examples, seed + 1, cfg)
    log(f"examples: {len(data['starts']) - 1} train, {len(val['starts']) - 1} validation "
        f"({time.time() - t0:.0f} s); {'mean share' if cfg.bands else 'frames to pick'} ({cfg.task}): "
        f"{data['labels'].mean():.1%}")
    torch.manual_seed(seed)
    model = FrameDetector(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    # a warmup of 5%, at least 2 steps in runs of more (OneCycleLR divides by zero where 5% of the steps is one)
    warmup = 0.05 if steps <= 2 else max(0.05, 2 / steps)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=warmup)
    step, state_path = 0, out / "state.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        step = int(state["step"])
        log(f"resumed at step {step}")
    t1, running = time.time(), []
    while step < steps:
        rng = np.random.default_rng([seed, step])  # the batch depends on the step only: resume == straight
        x, y, e = _batch(data, rng, batch, max_frames, cfg.hop_length)
        loss = F.binary_cross_entropy_with_logits(model(x, y.shape[1], e), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        running.append(loss.item())
        if step % save_every == 0 or step in (steps, stop_at):
            log(f"step {step}: train loss {np.mean(running):.4f} ({(time.time() - t1) / len(running):.3f} s/step)")
            running, t1 = [], time.time()
            with atomic_path(state_path) as tmp:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step}, tmp)
        if step == stop_at:
            return None
    report = validate(model, val)
    if not cfg.bands:
        model.cfg = replace(cfg, threshold=choose_threshold(report["thresholds"], precision))
    report |= {"threshold": model.cfg.threshold, "precision_target": precision, "steps": steps,
               "examples": examples, "wall_s": time.time() - t0}
    save(out / WEIGHTS_NAME, model)
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n")[0])


@app.callback()
def main() -> None:
    """Train a frame detector (detector.py): remove-speech's speech-free, denoise's noise-free, extract-speaker's
    target-alone or target-silent frames, or extract-speaker's target share of each band."""


@app.command("run")
def run(out: Path, corpus: Annotated[Path, typer.Option(help="corpus folder (train/corpus.py)")],
        examples: int = 4000, val_examples: int = 400, steps: int = 3000, batch: int = 16, lr: float = 2e-3,
        precision: Annotated[float, typer.Option(help="validation precision the threshold must reach")] = 0.8,
        seed: int = 0, threads: int = 2,
        task: Annotated[str, typer.Option(help="sr: remove-speech's speech-free frames; ns: denoise's noise-free "
                                                "frames; tse: extract-speaker's target-alone frames; tse_silent: "
                                                "its target-silent frames; tse_gain: its target share of each band "
                                                "(band gains for the mask); ns_gain: denoise's speech share")] = "sr",
        bands: Annotated[int, typer.Option(help="share kinds: mel bands of the share")] = SHARE_BANDS,
        sample_rate: Annotated[int, typer.Option(help="the codec's sample rate (the demo's: 16000)")] = 16_000,
        hop_length: Annotated[int, typer.Option(help="the codec's samples per frame (the demo's: 320)")] = 320) -> None:
    """Make the examples (once), train, choose the threshold; rerun to resume. The detector works on the
    frames of the codec it will ship with: give that codec's rate and hop (EnCodec 24 kHz: 24000, 320)."""
    torch.set_num_threads(threads)
    try:
        cfg = DetectorConfig(sample_rate=sample_rate, hop_length=hop_length, task=task,
                             bands=bands if task in SHARES else 0).validate()
        report = train(out, corpus, examples, val_examples, steps, batch, lr=lr, precision=precision, seed=seed,
                       cfg=cfg)
    except (OSError, ValueError) as e:  # a missing or broken corpus, no noise bank, another run's folder
        typer.echo(f"error: {str(e).splitlines()[0]}", err=True)
        raise typer.Exit(2) from None
    if cfg.bands:
        print(f"validation loss {report['loss']:.4f}; mean error of the share {report['share_error']:.3f}")
        return
    print(f"validation loss {report['loss']:.4f}; threshold {report['threshold']}: "
          + ", ".join(f"{k} {r[k]:.1%}" for r in report["thresholds"] if r["threshold"] == report["threshold"]
                      for k in ("picked", "precision", "recall")))


if __name__ == "__main__":
    app()
