"""A dev benchmark: the training simulation (train/simulate.py) run on held-out speakers, frozen to files.

    speechx eval build-benchmark bench/ --corpus data/corpus --per-task 10 --seed 0

Layout of BENCH_DIR (every wav 16 kHz mono PCM-16):
    benchmark.json          settings, per-subset counts, the speaker bank (speaker id -> wav)
    manifest.jsonl          one `Item` per line (schema below)
    items/<id>/input.wav    what a system gets (tts: none, the prompt is enrollment.wav)
    items/<id>/reference.wav, enrollment.wav, other.wav, text.txt, transcript.txt (where they apply)
    speakers/<slug>.wav     one utterance per dev speaker (tts: similarity to the other speakers)
Tasks and what their items hold:
    denoise          input s+n at 0, 5 and 10 dB (subsets "0dB", "5dB", "10dB", sharing utterances and
                     noises: only the level differs), reference s, other n
    remove-speech    input s+n at 0-10 dB, reference n, other s
    extract-speaker  input s1+s2, reference s1, other s2, enrollment another utterance of s1
    tts              enrollment (the prompt), reference the speaker's own reading of the text
    edit             input the original utterance, span (s) of the words to replace, text the edited
                     sentence, transcript the original one, reference the edited sentence read by the
                     same voice (reference_span: where the new words lie in it)
Half of each task's items (WER_VOICE_SHARE) come from flite, festival and Kokoro dev voices, the only
ones pocketsphinx reads well enough for WER (docs/architecture.md, "Evaluation"); `wer_ok` marks them.

Edit items come from the corpus's edit pairs (the simulator's edit examples start from the edited
recording and keep no original input); a corpus without dev edit pairs gets pairs synthesized here
with the flite/festival dev voices. `folder_benchmark` wraps a user's own input/reference folders.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from speechx_cli import audio as A
from speechx_cli.files import atomic_path
from speechx_cli.prompts import Task

FORMAT = "speechx-benchmark"
FORMAT_VERSION = 1
SETTINGS_NAME = "benchmark.json"
MANIFEST_NAME = "manifest.jsonl"
SAMPLE_RATE = 16_000  # Hz, the corpus rate (train/simulate.CORPUS_SAMPLE_RATE) and the scorers' rate
TASKS = ("denoise", "remove-speech", "extract-speaker", "tts", "edit")
TASK_OF = {"denoise": Task.NS, "remove-speech": Task.SR, "extract-speaker": Task.TSE, "tts": Task.TTS,
           "edit": Task.EDIT_CLEAN}
DENOISE_SNRS_DB = (0.0, 5.0, 10.0)
REMOVE_SPEECH_SNR_DB = (0.0, 10.0)  # uniform range
WER_ENGINES = ("flite", "festival", "kokoro")  # pocketsphinx WER is meaningful on these voices only
WER_VOICE_SHARE = 0.5  # every other item is drawn from the WER voices
EDIT_MARGIN_SECONDS = 0.02  # the replaced span reaches this far past the changed words (as in training)
EDIT_RMS_DBFS = -23.0  # level of synthesized edit pairs (the corpus's own speech level)
_STREAM = {name: k for k, name in enumerate(TASKS)}  # per-task offsets of the simulator's example index
_STREAM_STRIDE = 100_000


def wer_voice(speaker: str | None) -> bool:
    return bool(speaker) and speaker.partition(":")[0] in WER_ENGINES


@dataclass(frozen=True)
class Item:
    """One benchmark item; paths are relative to the benchmark folder (absolute in folder mode)."""

    id: str
    task: str
    subset: str = "all"
    input: str | None = None
    reference: str | None = None
    enrollment: str | None = None
    other: str | None = None  # the mixture's other part: noise, speech or the interfering speaker
    text: str | None = None  # what the output should say (edit: the edited sentence)
    transcript: str | None = None  # edit: what the input says
    span: tuple[float, float] | None = None  # edit: seconds of the input to replace
    reference_span: tuple[float, float] | None = None  # edit: seconds of the new words in the reference
    snr_db: float | None = None
    sir_db: float | None = None
    speaker: str | None = None
    other_speaker: str | None = None
    source: str | None = None  # corpus utterance id
    wer_ok: bool = False

    @staticmethod
    def from_json(row: dict) -> "Item":
        known = {f.name for f in fields(Item)}
        row = {k: (tuple(v) if k.endswith("span") and v is not None else v) for k, v in row.items() if k in known}
        return Item(**row)


@dataclass
class Benchmark:
    root: Path
    items: list[Item]
    settings: dict = field(default_factory=dict)

    def path(self, rel: str | None) -> Path | None:
        return None if rel is None else self.root / rel

    def items_for(self, task: str, limit: int | None = None) -> list[Item]:
        """The task's items; `limit` applies per subset, so every SNR stays represented."""
        chosen, per_subset = [], {}
        for item in self.items:
            if item.task != task:
                continue
            per_subset[item.subset] = per_subset.get(item.subset, 0) + 1
            if limit is None or per_subset[item.subset] <= limit:
                chosen.append(item)
        return chosen

    @property
    def speakers(self) -> dict[str, Path]:
        return {s: self.root / p for s, p in self.settings.get("speakers", {}).items()}


def load_benchmark(root: str | Path) -> Benchmark:
    root = Path(root)
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise ValueError(f"{root}: not a benchmark folder (no {MANIFEST_NAME}; make one with "
                         f"'speechx eval build-benchmark')")
    settings_path = root / SETTINGS_NAME
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    items = [Item.from_json(json.loads(line)) for line in manifest.read_text().splitlines() if line.strip()]
    return Benchmark(root, items, settings)


# --- user folders ----------------------------------------------------------------------------------

def _audio_by_stem(folder: Path) -> dict[str, Path]:
    """Audio files under `folder` keyed by relative path without extension (a.wav pairs with a.flac)."""
    return {str(p.relative_to(folder).with_suffix("")): p
            for p in sorted(folder.rglob("*")) if p.is_file() and A.is_audio_path(p)}


def folder_benchmark(task: str, inputs: Path, references: Path,
                     enrollments: Path | None = None) -> tuple[Benchmark, list[str]]:
    """Items pairing inputs/X with references/X (and enrollments/X) by relative path; also the
    relative paths of inputs left unpaired. Subfolders become subsets (noisy/5dB/a.wav: "5dB")."""
    for name, folder in (("--inputs", inputs), ("--references", references), ("--enrollments", enrollments)):
        if folder is not None and not folder.is_dir():
            raise ValueError(f"{name} {folder}: not a folder")
    found = _audio_by_stem(inputs)
    if not found:
        raise ValueError(f"{inputs}: no audio files found")
    refs = _audio_by_stem(references)
    enrolls = _audio_by_stem(enrollments) if enrollments is not None else {}
    items, unpaired = [], []
    for key, path in found.items():
        if key not in refs or (enrollments is not None and key not in enrolls):
            unpaired.append(key)
            continue
        subset = str(Path(key).parent) if Path(key).parent != Path(".") else "all"
        items.append(Item(key, task, subset, input=str(path.resolve()), reference=str(refs[key].resolve()),
                          enrollment=str(enrolls[key].resolve()) if key in enrolls else None))
    if not items:
        raise ValueError(f"no file of {inputs} has a partner of the same relative path in {references}"
                         + (f" and {enrollments}" if enrollments else ""))
    return Benchmark(Path("/"), items, {"inputs": str(inputs), "references": str(references)}), unpaired


# --- building --------------------------------------------------------------------------------------

class _Writer:
    """Writes one item's wavs and texts under OUT/items/<id>/ and collects the manifest rows."""

    def __init__(self, out: Path) -> None:
        self.out, self.items = out, []

    def add(self, item: Item, audio: dict[str, np.ndarray]) -> None:
        folder = Path("items") / item.id
        paths = {}
        for role, x in audio.items():
            rel = folder / f"{role}.wav"
            A.save(self.out / rel, x, SAMPLE_RATE, force=True)
            paths[role] = str(rel)
        for role in ("text", "transcript"):
            value = getattr(item, role)
            if value:
                (self.out / folder / f"{role}.txt").write_text(value + "\n")
        self.items.append(Item(**{**asdict(item), **paths}))


def _simulators(corpus_dir: Path, snr_db: tuple[float, float]):
    """(all dev voices, WER voices only or None) simulators of the corpus's dev split."""
    # the corpus tools (train/) add seconds to every `speechx` start: only building a benchmark needs them
    from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator

    rows = [[json.loads(line) for line in (corpus_dir / name).read_text().splitlines() if line.strip()]
            for name in ("manifest.jsonl", "noise.jsonl")]
    # the split is the Corpus's; dry rooms, so benchmarks stay comparable with those built before rooms
    options = SimulationOptions(snr_db=snr_db, text_probability=1.0, reverb_probability=0.0)
    everyone = Simulator(Corpus(rows[0], rows[1], corpus_dir, "dev"), options)
    asr_rows = [r for r in rows[0] if wer_voice(r["speaker"])]
    asr_speakers = {r["speaker"] for r in asr_rows if r["split"] == "dev"}
    counts = [sum(r["speaker"] == s and r["split"] == "dev" for r in asr_rows) for s in asr_speakers]
    usable = len(asr_speakers) >= 2 and min(counts) >= 2  # tse needs two speakers, enrollments two utterances
    asr = Simulator(Corpus(asr_rows, rows[1], corpus_dir, "dev"), options) if usable else None
    return everyone, asr


def _example(sims, task: str, k: int, seed: int):
    everyone, asr = sims
    sim = asr if asr is not None and k % round(1 / WER_VOICE_SHARE) == 0 else everyone
    ex = sim.example(_STREAM[task] * _STREAM_STRIDE + k, seed=seed, task=TASK_OF[task])
    return sim, ex, _speaker_of(sim, ex.utterance_id)


def _speaker_of(sim, utterance_id: str) -> str:
    return next(u.speaker for u in sim.corpus.utterances if u.id == utterance_id)


def _item_id(task: str, subset: str, k: int) -> str:
    return f"{task}-{k:03d}" if subset == "all" else f"{task}-{subset}-{k:03d}"


def _simulated(writer: _Writer, corpus_dir: Path, task: str, per_task: int, seed: int,
               snrs: tuple[float, ...]) -> None:
    # the SNR subsets reuse the example indices: same utterances, noises and gains, other levels
    plans = [(f"{snr:g}dB", (snr, snr)) for snr in snrs] if task == "denoise" else [("all", REMOVE_SPEECH_SNR_DB)]
    for subset, snr_range in plans:
        sims = _simulators(corpus_dir, snr_range)
        for k in range(per_task):
            sim, ex, speaker = _example(sims, task, k, seed)
            base = Item(_item_id(task, subset, k), task, subset, text=ex.text, speaker=speaker,
                        source=ex.utterance_id, wer_ok=wer_voice(speaker),
                        snr_db=None if ex.snr_db is None else round(ex.snr_db, 3),
                        sir_db=None if ex.sir_db is None else round(ex.sir_db, 3))
            if task == "tts":
                writer.add(base, {"enrollment": ex.enrollment, "reference": ex.target})
                continue
            audio = {"input": ex.source, "reference": ex.target, "other": ex.source - ex.target}
            if task == "extract-speaker":
                audio["enrollment"] = ex.enrollment
                base = Item(**{**asdict(base), "other_speaker": _speaker_of(sim, ex.info["interferer"])})
            writer.add(base, audio)


# --- edit pairs --------------------------------------------------------------------------------------

@dataclass
class _EditPair:
    speaker: str
    source: str
    text: str
    words: list[tuple[str, float, float]]
    audio: np.ndarray
    edit_text: str
    edit_words: list[tuple[str, float, float]]
    edit_audio: np.ndarray
    orig_span: tuple[int, int]
    edit_span: tuple[int, int]


def _words(rows) -> list[tuple[str, float, float]]:
    return [(w["word"], w["start"], w["end"]) if isinstance(w, dict) else (w.word, w.start, w.end) for w in rows]


def _corpus_edit_pairs(corpus_dir: Path, count: int, seed: int) -> list[_EditPair]:
    rows = [json.loads(line) for line in (corpus_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["split"] == "dev" and r.get("edit")]
    rng = np.random.default_rng([seed, _STREAM["edit"]])
    asr = [r for r in rows if wer_voice(r["speaker"])]
    rest = [r for r in rows if not wer_voice(r["speaker"])]
    rng.shuffle(asr)
    rng.shuffle(rest)
    picked = []
    for k in range(min(count, len(rows))):  # every other one from the WER voices while they last
        first, second = (asr, rest) if k % round(1 / WER_VOICE_SHARE) == 0 else (rest, asr)
        picked.append((first or second).pop())

    def read(rel: str) -> np.ndarray:
        return A.load(corpus_dir / rel, SAMPLE_RATE)[0]

    return [_EditPair(r["speaker"], r["id"], r["text"], _words(r["words"]), read(r["path"]), r["edit"]["text"],
                      _words(r["edit"]["words"]), read(r["edit"]["path"]), tuple(r["edit"]["orig_span"]),
                      tuple(r["edit"]["edit_span"])) for r in picked]


def synthesized_edit_pairs(count: int, seed: int) -> list[_EditPair]:
    """Edit pairs read by the flite/festival dev voices (never the reserved slt/awb ones)."""
    from speechx_cli.train import corpus as C  # imported here: see _simulators
    from speechx_cli.train import synth as S
    from speechx_cli.train.sentences import load_sentences

    voices = [S.Voice.parse(v) for v in sorted(C.DEV_OTHER_VOICES)]
    if any(S.is_reserved(v) or C.speaker_split(v) != "dev" for v in voices):
        raise ValueError("edit fallback voices must be dev voices, never the reserved evaluation ones")
    sentences = [s for s in load_sentences() if s.split == "dev"]
    vocabulary = C.edit_vocabulary(sentences)
    rng = np.random.default_rng([seed, _STREAM["edit"], 1])
    pairs: list[_EditPair] = []
    for attempt in range(4 * count):
        if len(pairs) == count:
            break
        voice = voices[len(pairs) % len(voices)]
        sentence = sentences[int(rng.integers(len(sentences)))]
        plan = C.plan_edit(sentence, vocabulary, rng)
        try:
            o = S.synthesize(voice, sentence.text, sentence.words)
            e = S.synthesize(voice, plan.sentence.text, plan.sentence.words)
        except S.TimingError:
            continue
        spoken = o.audio[int(o.words[0].start * SAMPLE_RATE):int(o.words[-1].end * SAMPLE_RATE)]
        gain = 10 ** (EDIT_RMS_DBFS / 20) / (float(np.sqrt(np.mean(spoken.astype(np.float64) ** 2))) + 1e-9)
        gain = min(gain, 0.95 / max(float(np.abs(o.audio).max()), float(np.abs(e.audio).max()), 1e-9))
        pairs.append(_EditPair(voice.id, f"synth-{attempt:03d}", sentence.text, _words(o.words), o.audio * gain,
                               plan.sentence.text, _words(e.words), e.audio * gain, plan.orig_span,
                               plan.edit_span))
    if len(pairs) < count:
        raise ValueError(f"could synthesize only {len(pairs)} of {count} edit pairs (word timing checks failed)")
    return pairs


def _edits(writer: _Writer, corpus_dir: Path, per_task: int, seed: int) -> str:
    """Write the edit items; returns where the pairs came from ("corpus" or "synthesis")."""
    from speechx_cli.train.simulate import span_bounds  # imported here: see _simulators

    pairs = _corpus_edit_pairs(corpus_dir, per_task, seed)
    origin = "corpus"
    if not pairs:
        pairs, origin = synthesized_edit_pairs(per_task, seed), "synthesis"
    for k, p in enumerate(pairs):
        span = span_bounds(p.words, p.orig_span, EDIT_MARGIN_SECONDS, len(p.audio) / SAMPLE_RATE)
        ref_span = span_bounds(p.edit_words, p.edit_span, EDIT_MARGIN_SECONDS, len(p.edit_audio) / SAMPLE_RATE)
        item = Item(_item_id("edit", "all", k), "edit", text=p.edit_text, transcript=p.text,
                    span=(round(span[0], 3), round(span[1], 3)),
                    reference_span=(round(ref_span[0], 3), round(ref_span[1], 3)),
                    speaker=p.speaker, source=p.source, wer_ok=wer_voice(p.speaker))
        writer.add(item, {"input": p.audio, "reference": p.edit_audio})
    return origin


def _speaker_bank(out: Path, corpus_dir: Path) -> dict[str, str]:
    """One utterance per dev speaker: the first of its records in corpus order."""
    from speechx_cli.train.corpus import read_manifest  # imported here: see _simulators

    bank = {}
    for r in read_manifest(corpus_dir / "manifest.jsonl"):
        if r["split"] == "dev" and r["speaker"] not in bank:
            rel = Path("speakers") / (r["speaker"].replace(":", "-").replace("+", "-") + ".wav")
            A.save(out / rel, A.load(corpus_dir / r["path"], SAMPLE_RATE)[0], SAMPLE_RATE, force=True)
            bank[r["speaker"]] = str(rel)
    return bank


def build_benchmark(out: Path, corpus_dir: Path, per_task: int = 10, seed: int = 0,
                    tasks: tuple[str, ...] = TASKS, snrs: tuple[float, ...] = DENOISE_SNRS_DB,
                    force: bool = False, on_task=None) -> Benchmark:
    """Write the benchmark folder; `on_task(task)` is called before each task (progress)."""
    out, corpus_dir = Path(out), Path(corpus_dir)
    if per_task < 1:
        raise ValueError("--per-task must be >= 1")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {', '.join(TASKS)}")
    if not (corpus_dir / "manifest.jsonl").is_file():
        raise ValueError(f"{corpus_dir}: not a corpus folder (no manifest.jsonl; build one with "
                         f"'python -m speechx_cli.train.corpus build')")
    if (out / MANIFEST_NAME).exists() and not force:
        raise ValueError(f"{out}: holds a benchmark already (use --force to rebuild it)")
    writer = _Writer(out)
    settings = {"format": FORMAT, "format_version": FORMAT_VERSION, "corpus": str(corpus_dir.resolve()),
                "seed": seed, "per_task": per_task, "tasks": list(tasks), "denoise_snrs_db": list(snrs),
                "sample_rate": SAMPLE_RATE, "speakers": _speaker_bank(out, corpus_dir)}
    for task in tasks:
        if on_task:
            on_task(task)
        if task == "edit":
            settings["edit_pairs"] = _edits(writer, corpus_dir, per_task, seed)
        else:
            _simulated(writer, corpus_dir, task, per_task, seed, snrs)
    counts: dict[str, int] = {}
    for item in writer.items:
        key = item.task if item.subset == "all" else f"{item.task}/{item.subset}"
        counts[key] = counts.get(key, 0) + 1
    settings["counts"] = counts
    with atomic_path(out / MANIFEST_NAME) as tmp:
        tmp.write_text("".join(json.dumps(asdict(i)) + "\n" for i in writer.items))
    with atomic_path(out / SETTINGS_NAME) as tmp:
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
    return Benchmark(out, writer.items, settings)
