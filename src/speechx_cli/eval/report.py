"""Run systems on a benchmark's items, score their outputs, and report: rich table, JSON, CSV, PNG.

    systems = {"passthrough": peer_system(PEERS["passthrough"]), "speechx": speechx_system(sx, opts)}
    report = evaluate(load_benchmark("bench"), "denoise", systems)
    write_report(report, Path("report/"))    # report.json, report.csv, items.csv, plots/, outputs/

A system maps (benchmark, items) to one `Output` per item; every system sees the same inputs (tts:
the prompt). Scores per task (`TASK_METRICS`; definitions in `METRICS`):
    denoise          DNSMOS OVRL/SIG/BAK, PESQ-wb, STOI, SI-SDR vs the clean speech, WER
    remove-speech    SI-SDR vs the true noise, speech left (dB), similarity to the removed speaker
    extract-speaker  similarity to the target and to the interferer, SI-SDR vs the target, WER
    tts              similarity to the prompt and (mean) to the other dev speakers, WER, DNSMOS OVRL
    edit             WER of the edited sentence, its new words heard, max |output - input| outside the span,
                     similarity
    codec            PESQ-wb, STOI, mel cepstral distance, similarity, WER, DNSMOS OVRL after an encode/decode;
                     the table adds what each codec costs when `info["costs"]` has it (`COST_COLUMNS`)
WER only on items whose voice pocketsphinx reads (`Item.wer_ok`: flite/festival/Kokoro) and that have a
text; `recognizers` adds Whisper's WER and new words on the same items ("wer_whisper", recognize.py). A
metric that fails on an item (e.g. PESQ finds no speech) is NaN there, its reason kept in the item's "errors";
summaries count only finite values (their n says how many).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from speechx_cli import audio as A
from speechx_cli import pipeline as PL
from speechx_cli.files import atomic_path
from speechx_cli.recognize import DEFAULT as DEFAULT_RECOGNIZERS
from speechx_cli.recognize import RECOGNIZERS

from . import metrics as M
from .devset import SAMPLE_RATE, TASK_OF, Benchmark, Item
from .peers import Peer
from .plots import metric_bars, spectrograms

FORMAT = "speechx-eval-report"
FORMAT_VERSION = 1
PRESERVE_GUARD_SECONDS = 0.025  # edit: the span widened by this much each side (a codec frame rounds it out)


@dataclass(frozen=True)
class Metric:
    label: str  # table header
    higher_is_better: bool
    description: str


METRICS: dict[str, Metric] = {
    "dnsmos_ovrl": Metric("OVRL", True, "DNSMOS P.835 overall quality of the output (1-5)"),
    "dnsmos_sig": Metric("SIG", True, "DNSMOS P.835 speech quality (1-5)"),
    "dnsmos_bak": Metric("BAK", True, "DNSMOS P.835 background quietness (1-5)"),
    "pesq": Metric("PESQ", True, "wide-band PESQ vs the reference (-0.5-4.64)"),
    "stoi": Metric("STOI", True, "short-time objective intelligibility vs the reference (0-1)"),
    "si_sdr": Metric("SI-SDR", True, "scale-invariant SDR vs the reference, dB"),
    "wer": Metric("WER", False, "pocketsphinx word error rate vs the text (flite/festival/Kokoro voices only)"),
    "speech_left_db": Metric("speech dB", False, "speech-to-noise ratio of the output, dB: least-squares "
                             "weights of the true speech and noise in it (passthrough: the input SNR)"),
    "sim_speech": Metric("sim spk", False, "speaker similarity of the output to the removed speech"),
    "sim_target": Metric("sim tgt", True, "speaker similarity to the target speaker's clean speech"),
    "sim_interferer": Metric("sim int", False, "speaker similarity to the interfering speaker's speech"),
    "sim_prompt": Metric("sim prm", True, "speaker similarity to the voice prompt"),
    "sim_others": Metric("sim oth", False, "mean speaker similarity to the other dev speakers"),
    "sim_input": Metric("sim in", True, "speaker similarity to the input"),
    "preserve_max_abs": Metric("max|d|", False, "edit: max |output - input| outside the span "
                               f"(widened by {PRESERVE_GUARD_SECONDS * 1000:.0f} ms each side)"),
    "new_word": Metric("new word", True, "edit: 1 when the recognizer hears every word the edit puts in, "
                       "in its place (mean: the share of such edits; pocketsphinx voices only)"),
    "mcd": Metric("MCD", False, "mel cepstral distance to the input, dB (DTW-aligned)"),
    "wer_whisper": Metric("WER wh", False, "Whisper's word error rate vs the text (--recognizer whisper; "
                          "the same items as WER)"),
    "new_word_whisper": Metric("new word wh", True, "edit: the new word heard by Whisper (--recognizer whisper)"),
}
TEXT_METRICS = ("wer", "new_word")  # scored by each recognizer of --recognizer (metrics.metric_name)


def _text_metrics(names: tuple[str, ...]) -> tuple[str, ...]:
    """A task's metrics with each text metric followed by its other recognizers' versions."""
    return tuple(m for n in names for m in ((n, *(M.metric_name(n, r) for r in RECOGNIZERS[1:]))
                                            if n in TEXT_METRICS else (n,)))


TASK_METRICS: dict[str, tuple[str, ...]] = {
    "denoise": ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "pesq", "stoi", "si_sdr", "wer"),
    "remove-speech": ("si_sdr", "speech_left_db", "sim_speech"),
    "extract-speaker": ("sim_target", "sim_interferer", "si_sdr", "wer"),
    "tts": ("sim_prompt", "sim_others", "wer", "dnsmos_ovrl"),
    "edit": ("wer", "new_word", "preserve_max_abs", "sim_input"),
    "codec": ("pesq", "stoi", "mcd", "sim_input", "wer", "dnsmos_ovrl"),
}
TASK_METRICS = {task: _text_metrics(names) for task, names in TASK_METRICS.items()}

# per-system columns of the codec table, from eval.codec_cost.codec_cost: (label, format of the value)
COST_COLUMNS: dict[str, tuple[str, Callable[[Any], str]]] = {
    "codes_used": ("codes used per level", lambda v: f"{min(v)}-{max(v)}" if v else "-"),  # of codebook_size
    "params_m": ("params M", lambda v: f"{v:.2f}"),
    "kbps": ("kbps", lambda v: f"{v:.1f}"),
    "encode_rtf": ("enc xRT", lambda v: f"{1 / v:.0f}"),  # times faster than real time, one thread
    "decode_rtf": ("dec xRT", lambda v: f"{1 / v:.0f}"),
}


@dataclass
class Output:
    audio: np.ndarray  # (N,) float32
    sample_rate: int  # Hz


SystemFn = Callable[[Benchmark, list[Item]], list[Output]]


class Loader:
    """Benchmark audio at a given rate and speaker embeddings of benchmark files, cached for the run
    (every system's output is compared with the same references, prompts and speaker bank)."""

    def __init__(self, bench: Benchmark) -> None:
        self.bench, self._cache, self._embeddings = bench, {}, {}

    def __call__(self, rel: str | None, sr: int = SAMPLE_RATE) -> np.ndarray | None:
        if rel is None:
            return None
        if (rel, sr) not in self._cache:
            self._cache[rel, sr] = A.load(self.bench.path(rel), sr)[0]
        return self._cache[rel, sr]

    def embedding(self, rel: str) -> np.ndarray:
        if rel not in self._embeddings:
            self._embeddings[rel] = M.speaker_embedding(self(rel), SAMPLE_RATE)
        return self._embeddings[rel]


def system_input(item: Item) -> str | None:
    """What a system is given: the prompt for tts, the input otherwise."""
    return item.enrollment if item.task == "tts" else item.input


# --- systems -----------------------------------------------------------------------------------------

def peer_system(peer: Peer) -> SystemFn:
    def run(bench: Benchmark, items: list[Item]) -> list[Output]:
        load = Loader(bench)
        return [Output(peer(load(system_input(i)), SAMPLE_RATE), SAMPLE_RATE) for i in items]

    return run


def reference_system(bench: Benchmark, items: list[Item]) -> list[Output]:
    """The oracle: each item's true answer (the clean speech, the background, the target, the text read
    by the speaker): what the metrics give a perfect system, e.g. the recognizer's WER on natural voices."""
    load = Loader(bench)
    return [Output(load(i.reference), SAMPLE_RATE) for i in items]


def speechx_system(sx, opts, window=None, with_text: bool = False) -> SystemFn:
    """SpeechX through pipeline.run at the codec's rate; ns/sr/tse get the transcript if with_text."""
    sr = sx.codec.sample_rate
    window = window or PL.WindowOptions()

    def request(load: Loader, item: Item) -> PL.Request:
        needs_text = item.task in ("tts", "edit")
        needs_enrollment = item.task in ("tts", "extract-speaker")
        return PL.Request(TASK_OF[item.task], audio=None if item.task == "tts" else load(item.input, sr),
                          enrollment=load(item.enrollment, sr) if needs_enrollment else None,
                          text=item.text if needs_text or with_text else None,
                          span=item.span if item.task == "edit" else None)

    def run(bench: Benchmark, items: list[Item]) -> list[Output]:
        load = Loader(bench)
        outs = PL.run(sx, [request(load, i) for i in items], opts, window)
        return [Output(np.asarray(y, np.float32), sr) for y in outs]

    return run


def codec_system(codec, usage: dict | None = None, levels: int | None = None) -> SystemFn:
    """Encode and decode each input with a codec (no language model), from its first `levels` codebook
    levels if given (default: all). With `usage`, a run also sets
    usage["codes_used"]: per codebook level, how many of its entries the codes of every item run so far
    used, over all calls (a report runs each subset in a call of its own); dead codes are the rest."""
    sr = codec.sample_rate
    used = torch.zeros(0, codec.codebook_size, dtype=torch.bool)

    def run(bench: Benchmark, items: list[Item]) -> list[Output]:
        nonlocal used
        load, outs = Loader(bench), []
        for item in items:
            x = load(item.input, sr)
            codes = codec.encode(torch.from_numpy(np.ascontiguousarray(x)))  # (K, F)
            if used.shape[0] != codes.shape[0]:
                used = torch.zeros(codes.shape[0], codec.codebook_size, dtype=torch.bool)
            used.scatter_(1, codes.cpu(), True)
            wav = codec.decode(codes, levels=levels)  # (F * hop,)
            outs.append(Output(wav.float().cpu().numpy()[: len(x)], sr))
        if usage is not None:
            usage["codes_used"] = used.sum(1).tolist()
        return outs

    return run


# --- scoring -----------------------------------------------------------------------------------------

class _Scores:
    """Collects one item's metric values; a failing metric becomes NaN with its reason kept."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def add(self, name: str, fn: Callable[[], float | dict]) -> None:
        try:
            value = fn()
        except Exception as e:  # noqa: BLE001 - one metric failing on one item must not stop the run
            self.values[name] = math.nan
            self.errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return
        self.values[name] = float(value)


def _wer(c: _Case, s: _Scores) -> dict[str, str]:
    """WER under each recognizer (`metrics.metric_name`); returns the transcripts that came out."""
    heard: dict[str, str] = {}
    if not (c.item.wer_ok and c.item.text):
        return heard

    def wer(recognizer: str) -> float:
        heard[recognizer] = M.transcribe(c.y, SAMPLE_RATE, recognizer)
        return M.word_error_rate(c.item.text, heard[recognizer])

    for r in c.recognizers:
        s.add(M.metric_name("wer", r), lambda r=r: wer(r))
    return heard


def _dnsmos(s: _Scores, y: np.ndarray, keys=("ovrl", "sig", "bak")) -> None:
    try:
        d = M.dnsmos(y, SAMPLE_RATE)
    except Exception as e:  # noqa: BLE001
        d = {k: e for k in keys}
    for k in keys:
        s.add(f"dnsmos_{k}", lambda v=d[k]: _raise_or(v))


def _raise_or(v):
    if isinstance(v, Exception):
        raise v
    return v


def speech_left_db(y: np.ndarray, speech: np.ndarray, noise: np.ndarray) -> float:
    """10 log10 of the energy of b*speech over that of a*noise, (a, b) the least-squares fit of y."""
    n = min(len(y), len(speech), len(noise))
    basis = np.stack([noise[:n], speech[:n]], axis=1).astype(np.float64)  # (n, 2)
    (a, b), *_ = np.linalg.lstsq(basis, y[:n].astype(np.float64), rcond=None)
    return float(10 * np.log10((b * b * np.dot(speech[:n], speech[:n]) + M.EPS)
                               / (a * a * np.dot(noise[:n], noise[:n]) + M.EPS)))


def preserve_max_abs(x: np.ndarray, y: np.ndarray, span: tuple[float, float], sr: int) -> float:
    """max |y - x| over x's samples before and after the span (y's tail aligned to x's end)."""
    start = max(0, int(round((span[0] - PRESERVE_GUARD_SECONDS) * sr)))
    end = min(len(x), int(round((span[1] + PRESERVE_GUARD_SECONDS) * sr)))
    tail = len(x) - end
    if len(y) < start + tail:
        raise ValueError(f"output ({len(y)} samples) is shorter than the kept parts ({start + tail})")
    diffs = [np.abs(y[:start] - x[:start]), np.abs(y[len(y) - tail:] - x[end:])]
    return float(max((d.max() for d in diffs if len(d)), default=0.0))


@dataclass
class _Case:
    """One output of one system on one item, with what its metrics compare it to."""

    load: Loader
    item: Item
    out: Output
    y: np.ndarray  # the output at SAMPLE_RATE
    recognizers: tuple[str, ...] = DEFAULT_RECOGNIZERS  # recognize.parse
    _embedding: np.ndarray | None = None

    @property
    def ref(self) -> np.ndarray | None:
        return self.load(self.item.reference)

    def sim(self, other: str | np.ndarray) -> float:
        """Speaker similarity of the output to a benchmark file (embedding cached) or a waveform."""
        if self._embedding is None:
            self._embedding = M.speaker_embedding(self.y, SAMPLE_RATE)
        e = self.load.embedding(other) if isinstance(other, str) else M.speaker_embedding(other, SAMPLE_RATE)
        return float(np.dot(self._embedding, e))


def _denoise(c: _Case, s: _Scores) -> None:
    _dnsmos(s, c.y)
    if c.ref is not None:
        s.add("pesq", lambda: M.pesq_wb(c.ref, c.y, SAMPLE_RATE))
        s.add("stoi", lambda: M.stoi(c.ref, c.y, SAMPLE_RATE))
        s.add("si_sdr", lambda: M.si_sdr(c.ref, c.y))
    _wer(c, s)


def _remove_speech(c: _Case, s: _Scores) -> None:
    noise, x = c.ref, c.load(c.item.input)
    speech = c.load(c.item.other) if c.item.other else x[: len(noise)] - noise[: len(x)]  # folder mode: x - n
    s.add("si_sdr", lambda: M.si_sdr(noise, c.y))
    s.add("speech_left_db", lambda: speech_left_db(c.y, speech, noise))
    s.add("sim_speech", lambda: c.sim(c.item.other or speech))


def _extract_speaker(c: _Case, s: _Scores) -> None:
    target, x = c.ref, c.load(c.item.input)
    s.add("sim_target", lambda: c.sim(c.item.reference))
    # folder mode: the interferer is what the mixture holds besides the target
    s.add("sim_interferer", lambda: c.sim(c.item.other or x[: len(target)] - target[: len(x)]))
    s.add("si_sdr", lambda: M.si_sdr(target, c.y))
    _wer(c, s)


def _tts(c: _Case, s: _Scores) -> None:
    s.add("sim_prompt", lambda: c.sim(c.item.enrollment))
    bench = c.load.bench
    others = [str(p.relative_to(bench.root)) for spk, p in bench.speakers.items() if spk != c.item.speaker]
    if others:
        s.add("sim_others", lambda: float(np.mean([c.sim(o) for o in others])))
    _wer(c, s)
    _dnsmos(s, c.y, ("ovrl",))


def _edit(c: _Case, s: _Scores) -> None:
    heard = _wer(c, s)  # one transcript per recognizer for both metrics: recognizing is the slow part
    if heard and c.item.transcript and M.new_words(c.item.transcript, c.item.text):
        for r, text in heard.items():
            s.add(M.metric_name("new_word", r),
                  lambda text=text: M.new_words_recognized(c.item.transcript, c.item.text, text))
    sr = c.out.sample_rate  # compared at the output's own rate: a kept sample must be the input's sample
    s.add("preserve_max_abs", lambda: preserve_max_abs(c.load(c.item.input, sr), c.out.audio, c.item.span, sr))
    s.add("sim_input", lambda: c.sim(c.item.input))


def _codec(c: _Case, s: _Scores) -> None:
    x = c.load(c.item.input)
    s.add("pesq", lambda: M.pesq_wb(x, c.y, SAMPLE_RATE))
    s.add("stoi", lambda: M.stoi(x, c.y, SAMPLE_RATE))
    s.add("mcd", lambda: M.mel_cepstral_distance(x, c.y, SAMPLE_RATE))
    s.add("sim_input", lambda: c.sim(c.item.input))
    _wer(c, s)
    _dnsmos(s, c.y, ("ovrl",))


SCORERS: dict[str, Callable[[_Case, _Scores], None]] = {
    "denoise": _denoise, "remove-speech": _remove_speech, "extract-speaker": _extract_speaker, "tts": _tts,
    "edit": _edit, "codec": _codec,
}


def score(load: Loader, item: Item, out: Output, recognizers: tuple[str, ...] = DEFAULT_RECOGNIZERS) -> _Scores:
    """The metrics of `item.task` (TASK_METRICS) for one output; WER and new words by each recognizer."""
    if item.task not in SCORERS:
        raise ValueError(f"no metrics for task {item.task!r}")
    s = _Scores()
    SCORERS[item.task](_Case(load, item, out, M.as_16k(out.audio, out.sample_rate), recognizers), s)
    return s


# --- running and summarising ---------------------------------------------------------------------

@dataclass
class Report:
    task: str
    systems: list[str]
    rows: list[dict]  # {"id", "subset", "system", "metrics": {...}, "errors": {...}, "seconds"}
    info: dict = field(default_factory=dict)
    example: dict[str, Output] = field(default_factory=dict)  # first item: "input", "reference", systems

    @property
    def metrics(self) -> list[str]:
        present = {m for r in self.rows for m in r["metrics"]}
        return [m for m in TASK_METRICS[self.task] if m in present]

    @property
    def subsets(self) -> list[str]:
        seen = list(dict.fromkeys(r["subset"] for r in self.rows))
        return seen + ["all"] if len(seen) > 1 else seen

    def summary(self) -> dict[str, dict[str, dict[str, dict]]]:
        """{system: {subset: {metric: {"mean", "ci95_low", "ci95_high", "n"}}}} over finite values."""
        out: dict = {}
        for system in self.systems:
            for subset in self.subsets:
                rows = [r for r in self.rows if r["system"] == system and subset in ("all", r["subset"])]
                cell = out.setdefault(system, {}).setdefault(subset, {})
                for metric in self.metrics:
                    v = [r["metrics"][metric] for r in rows if math.isfinite(r["metrics"].get(metric, math.nan))]
                    mean, low, high = M.summarize(v) if v else (math.nan, math.nan, math.nan)
                    cell[metric] = {"mean": mean, "ci95_low": low, "ci95_high": high, "n": len(v)}
        return out


def evaluate(bench: Benchmark, task: str, systems: dict[str, SystemFn], items: list[Item] | None = None,
             batch: int = 4, on_done: Callable[[str, Item, Output], None] | None = None,
             recognizers: tuple[str, ...] = DEFAULT_RECOGNIZERS) -> Report:
    """Run every system on the task's items (all, or `items`) and score each output.

    Systems get `batch` items per call (speechx decodes their prompts together); an item's "seconds"
    is its call's time over its batch. `on_done(system, item, output)` sees each output (to save it
    or advance a progress bar). WER (and edit's new words) come from each of `recognizers`
    (recognize.parse): "wer" from pocketsphinx, "wer_whisper" from Whisper.
    """
    items = bench.items_for(task) if items is None else items
    if not items:
        raise ValueError(f"{bench.root}: no {task} items")
    load = Loader(bench)
    report = Report(task, list(systems), [])
    first = items[0]
    report.example["input"] = Output(load(system_input(first)), SAMPLE_RATE)
    if first.reference:
        report.example["reference"] = Output(load(first.reference), SAMPLE_RATE)
    for name, system in systems.items():
        for k in range(0, len(items), batch):
            chunk = items[k:k + batch]
            started = time.perf_counter()
            outs = system(bench, chunk)
            seconds = (time.perf_counter() - started) / len(chunk)
            for item, out in zip(chunk, outs):
                s = score(load, item, out, recognizers)
                report.rows.append({"id": item.id, "subset": item.subset, "system": name, "metrics": s.values,
                                    "errors": s.errors, "seconds": round(seconds, 4)})
                if item is first:
                    report.example[name] = out
                if on_done:
                    on_done(name, item, out)
    return report


def codec_items(bench: Benchmark) -> list[Item]:
    """Clean speech of a benchmark (denoise, extract-speaker and tts references), one per utterance;
    subsets by synthesizer. A folder of audio files (no manifest) gives one item per file."""
    items, seen = [], set()
    for i in bench.items:
        key = (i.source, i.text) if i.source else i.reference
        if i.task in ("denoise", "extract-speaker", "tts") and i.reference and key not in seen:
            seen.add(key)
            engine = (i.speaker or "all").partition(":")[0]
            items.append(Item(i.id, "codec", engine, input=i.reference, text=i.text, speaker=i.speaker,
                              wer_ok=i.wer_ok))
        elif i.task == "codec":
            items.append(i)
    return items


# --- writing ---------------------------------------------------------------------------------------

def ci_text(cell: dict | None, digits: int | None = None, with_n: bool = False) -> str:
    """A summary cell ({mean, ci95_low, ci95_high, n}) as "mean ±half-width" of its 95% interval, with
    `digits` decimals (default: 2, none from 100 up), "(n)" after it on request; "-" when it has no mean."""
    if not cell or cell.get("mean") is None or not math.isfinite(cell["mean"]):
        return "-"
    if digits is None:
        digits = 2 if abs(cell["mean"]) < 100 else 0
    half = (cell["ci95_high"] - cell["ci95_low"]) / 2 if cell.get("ci95_high") is not None else math.nan
    text = f"{cell['mean']:.{digits}f}" + (f" ±{half:.{digits}f}" if math.isfinite(half) else "")
    return text + (f" ({cell['n']})" if with_n else "")


def table(report: Report):
    """A rich Table: one row per (subset, system), mean ±95% CI half-width; best mean in bold; then what
    each system costs where `report.info["costs"]` says (codecs)."""
    summary = report.summary()
    n_items = len({r["id"] for r in report.rows})
    t = Table(title=f"{report.task}: {n_items} items, mean ±95% CI", title_justify="left")
    t.add_column("subset", no_wrap=True)
    t.add_column("system", no_wrap=True)
    t.add_column("n", justify="right")
    for m in report.metrics:
        t.add_column(METRICS[m].label + (" ↑" if METRICS[m].higher_is_better else " ↓"), justify="right",
                     overflow="fold")
    costs = report.info.get("costs") or {}
    cost_keys = [k for k in COST_COLUMNS if any(k in c for c in costs.values())]
    for k in cost_keys:
        t.add_column(COST_COLUMNS[k][0], justify="right")
    partial = {}  # metrics scored on fewer items than the table has (WER voices only, failures)
    for m in report.metrics:
        n = min(summary[s][report.subsets[-1]][m]["n"] for s in report.systems)
        if n < n_items:
            partial[m] = f"{METRICS[m].label}: {n} of {n_items} items"
    if partial:
        why = "WER scores flite/festival/Kokoro voices only; " if "wer" in partial else ""
        t.caption = "; ".join(partial.values()) + f" ({why}failed metrics are left out, see report.json)"
        t.caption_justify = "left"
    for subset in report.subsets:
        best = {}
        for m in report.metrics:
            means = [summary[s][subset][m]["mean"] for s in report.systems]
            finite = [v for v in means if math.isfinite(v)]
            if len(finite) > 1:
                best[m] = max(finite) if METRICS[m].higher_is_better else min(finite)
        for k, system in enumerate(report.systems):
            n = sum(r["system"] == system and subset in ("all", r["subset"]) for r in report.rows)
            cells = [summary[system][subset][m] for m in report.metrics]
            texts = [f"[bold]{ci_text(c)}[/]" if best.get(m) == c["mean"] else ci_text(c)
                     for m, c in zip(report.metrics, cells)]
            cost = costs.get(system, {})
            texts += [COST_COLUMNS[c][1](cost[c]) if c in cost else "-" for c in cost_keys]
            t.add_row(subset if k == 0 else "", system, str(n), *texts,
                      end_section=k == len(report.systems) - 1)
    return t


def to_json(report: Report) -> dict:
    def clean(v):  # JSON has no NaN
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return clean({"format": FORMAT, "format_version": FORMAT_VERSION, "task": report.task,
                  "systems": report.systems, "subsets": report.subsets, **report.info,
                  "metrics": {m: {"label": METRICS[m].label, "higher_is_better": METRICS[m].higher_is_better,
                                  "description": METRICS[m].description} for m in report.metrics},
                  "summary": report.summary(), "items": report.rows})


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if isinstance(v, float) and not math.isfinite(v) else v for v in r] for r in rows])
    return buf.getvalue()


def write_report(report: Report, out: Path, plots: bool = True) -> list[Path]:
    """report.json, report.csv (summary), items.csv (per item and system), plots/*.png; returns them."""
    out.mkdir(parents=True, exist_ok=True)
    summary = report.summary()
    files = {
        "report.json": json.dumps(to_json(report), indent=1) + "\n",
        "report.csv": _csv(["system", "subset", "metric", "mean", "ci95_low", "ci95_high", "n"],
                           [[sy, su, m, c["mean"], c["ci95_low"], c["ci95_high"], c["n"]]
                            for sy, subs in summary.items() for su, cells in subs.items()
                            for m, c in cells.items()]),
        "items.csv": _csv(["id", "subset", "system", *report.metrics, "seconds"],
                          [[r["id"], r["subset"], r["system"], *(r["metrics"].get(m, math.nan)
                                                                for m in report.metrics), r["seconds"]]
                           for r in report.rows]),
    }
    written = []
    for name, text in files.items():
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    if plots:
        written += [metric_bars(report, summary, m, METRICS[m], out / "plots" / f"{m}.png") for m in report.metrics]
        if report.example:
            first = report.rows[0]["id"].replace("/", "_")
            written.append(spectrograms(report.example, out / "plots" / f"spectrograms-{first}.png"))
    return written
