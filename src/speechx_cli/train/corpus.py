"""Build the offline multi-speaker corpus: 16 kHz wavs, word timings, edit pairs, noise bank.

    python -m speechx_cli.train.corpus build data/corpus --n-per-speaker 200 --seed 0 --workers 2
    python -m speechx_cli.train.corpus build data/corpus --n-per-speaker 50 --kokoro-speakers 150 \
        --kokoro-per-speaker 24 --workers 2      # plus natural voices (the kokoro extra)

Layout of OUT_DIR:
    corpus.json            the build settings (a rebuild with other settings refuses without --force)
    manifest.jsonl         one utterance per line, see below
    noise.jsonl            one noise per line (schema: noisebank.py)
    wav/<speaker>/...      speech (16 kHz mono PCM-16); noise/...: noises
    parts/                 finished chunks; a killed build resumes from them

A manifest line (times in seconds, paths relative to OUT_DIR):
    {"id", "speaker": "espeak:en-us+m1", "split": "train" | "dev", "text", "path", "sample_rate",
     "duration", "words": [{"word", "start", "end"}, ...],
     "edit": null | {"kind": "replace" | "insert" | "delete", "text", "path", "duration", "words",
                     "orig_span": [a, b], "edit_span": [a, c]}}
Kokoro utterances (speaker "kokoro:b0042") also carry "voice": {"styles": {name: weight}, "speed"} and
"asr_wer" (the recognizer's WER against the text, the quality filter's measure).
An edit is the same sentence with words [a, b) of the original swapped for words [a, c) of the edited
text (same voice, same gain); words outside the spans are the same in both.
The work is cut into chunks of CHUNK_SIZE utterances of one speaker; each chunk draws from its own
seeded random stream, so the result depends on the seed only, never on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import soundfile as sf
import typer

from speechx_cli.files import claim_folder
from speechx_cli.train import kokoro, noisebank
from speechx_cli.train.corpus_report import summarize
from speechx_cli.train.sentences import Sentence, load_sentences
from speechx_cli.train.synth import (SAMPLE_RATE, Synthesis, TimingError, Voice, assert_trainable,
                                     reset_espeak, synthesize_many)

ESPEAK_ACCENTS = ("en-us", "en",  # "en" is British English (espeak-ng has no voice named en-gb)
                  "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-us-nyc", "en-029")
# espeak-ng variants whose timbres differ: greedy pick of those whose Resemblyzer cosine to every
# other pick is < 0.88 (the same variant on two sentences scores 0.92-0.98). Each variant is one
# speaker with one accent (accent alone is not a new speaker).
ESPEAK_VARIANTS = (
    "f1", "f3", "f5", "Alicia", "Andrea", "Annie", "anika", "belinda", "linda", "grandma", "shelby",
    "steph", "zac", "Nguyen", "m1", "m2", "m4", "m7", "m8", "Alex", "Andy", "AnxiousAndy", "Denis",
    "Diogo", "Gene", "Hugo", "Jacky", "Lee", "Marco", "Mario", "Michael", "Storm", "adam", "announcer",
    "antonio", "benjamin", "boris", "david", "ed", "iven", "kaukovalta", "klatt3", "klatt4", "marcelo",
    "norbert", "pablo", "john", "Tweaky", "paul", "pedro", "quincy", "rob", "sandro", "travis", "victor",
)
OTHER_VOICES = ("flite:kal16", "flite:rms", "festival:kal_diphone", "festival:ked_diphone")
# Held-out speakers: never in train. flite and festival ones are there because pocketsphinx WER
# is only meaningful on them (docs/architecture.md, "Evaluation").
DEV_VARIANTS = frozenset({"f3", "zac", "m8", "Marco", "david", "travis"})
DEV_OTHER_VOICES = frozenset({"flite:rms", "festival:ked_diphone"})
CHUNK_SIZE = 50  # utterances per work unit
TARGET_RMS_DB = -23.0  # dBFS over the spoken part
PEAK_LIMIT = 0.95
EDIT_KINDS = ("replace", "insert", "delete")
EDIT_KIND_WEIGHTS = (0.5, 0.25, 0.25)


def voice_pool(kokoro_speakers: int = 0) -> list[Voice]:
    """Every speaker of the corpus, train and dev, in a fixed order: the synthesizers' voices, then
    `kokoro_speakers` Kokoro blends."""
    espeak = [Voice("espeak", f"{ESPEAK_ACCENTS[i % len(ESPEAK_ACCENTS)]}+{variant}")
              for i, variant in enumerate(ESPEAK_VARIANTS)]
    voices = espeak + [Voice.parse(v) for v in OTHER_VOICES]
    voices += [Voice("kokoro", kokoro.blend(k).name) for k in range(kokoro_speakers)]
    for voice in voices:
        assert_trainable(voice)
    return voices


def speaker_split(voice: Voice) -> str:
    if voice.engine == "kokoro":
        return kokoro.parse_blend(voice.name).split
    held_out = voice.id in DEV_OTHER_VOICES or (
        voice.engine == "espeak" and voice.name.partition("+")[2] in DEV_VARIANTS)
    return "dev" if held_out else "train"


def speaker_slug(voice: Voice) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", voice.id).strip("-")


@dataclass(frozen=True)
class CorpusConfig:
    n_per_speaker: int = 200  # per synthesizer voice (espeak-ng, flite, festival)
    seed: int = 0
    edit_fraction: float = 0.3  # share of utterances that also get an edited variant
    noise: bool = True
    kokoro_speakers: int = 0  # Kokoro blends (train/kokoro.py), after the synthesizers' voices
    kokoro_per_speaker: int = 0  # utterances per Kokoro blend

    def validate(self) -> None:
        if (self.n_per_speaker < 1 or not 0.0 <= self.edit_fraction <= 1.0 or self.kokoro_speakers < 0
                or (self.kokoro_speakers > 0) != (self.kokoro_per_speaker > 0)):
            raise ValueError(f"bad corpus config: {self}")

    def per_speaker(self, voice: Voice) -> int:
        return self.kokoro_per_speaker if voice.engine == "kokoro" else self.n_per_speaker

    def settings(self) -> dict:
        """What defines the speech (corpus.json): fields at their defaults are left out, so a corpus
        built before a field existed compares equal; the noise bank can be added later."""
        out = {"format": 1, **asdict(self)}
        out.pop("noise")
        for name in ("kokoro_speakers", "kokoro_per_speaker"):
            if not out[name]:
                out.pop(name)
        return out


# --- edit pairs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EditPlan:
    kind: str  # replace | insert | delete
    sentence: Sentence  # the edited sentence
    orig_span: tuple[int, int]  # [a, b) words of the original that were taken out
    edit_span: tuple[int, int]  # [a, c) words of the edited sentence that were put in


def plan_edit(sentence: Sentence, vocabulary: list[str], rng: np.random.Generator) -> EditPlan:
    """Replace, insert or delete 1-3 consecutive words (new words drawn from `vocabulary`)."""
    n_words = len(sentence.words)
    kind = str(rng.choice(EDIT_KINDS, p=EDIT_KIND_WEIGHTS))
    n = int(rng.integers(1, 4))
    if kind != "insert":
        n = min(n, n_words - 2)  # keep at least two words of context
    a = int(rng.integers(0, n_words - (0 if kind == "insert" else n) + 1))
    b = a if kind == "insert" else a + n
    new_words: list[str] = []
    if kind != "delete":
        old = {w.lower() for w in sentence.words[a:b]}
        while len(new_words) < n:
            word = vocabulary[int(rng.integers(len(vocabulary)))]
            if word not in old and word not in new_words:
                new_words.append(word)
    tokens = sentence.text.split()
    punctuation = re.sub(r"^.*?([,.!?]*)$", r"\1", tokens[b - 1]) if b > a else ""
    if kind == "insert" or not new_words:
        new_tokens = new_words
    else:
        new_tokens = new_words[:-1] + [new_words[-1] + punctuation]
    before = tokens[:a]
    if kind == "delete" and punctuation and before and not before[-1][-1] in ",.!?":
        before = before[:-1] + [before[-1] + punctuation]
    edited = before + new_tokens + tokens[b:]
    if not edited[-1][-1] in ".!?":
        edited[-1] = edited[-1].rstrip(",") + "."
    text = " ".join(edited)
    text = text[0].upper() + text[1:]
    words = tuple(t.rstrip(",.!?") for t in text.split())
    return EditPlan(kind, Sentence(text, words), (a, b), (a, a + len(new_words)))


def edit_vocabulary(sentences: list[Sentence], min_count: int = 3) -> list[str]:
    """Lower-case words seen at least `min_count` times (common words read reliably)."""
    counts = Counter(w.lower() for s in sentences for w in s.words if w.lower() != "i")
    return sorted(w for w, c in counts.items() if c >= min_count)


# --- one chunk of one speaker ----------------------------------------------------------------------

@dataclass(frozen=True)
class ChunkJob:
    out_dir: str
    voice_id: str
    speaker_index: int
    chunk: int
    first: int  # index of the chunk's first utterance within the speaker
    count: int
    config: CorpusConfig

    @property
    def part_path(self) -> Path:
        voice = Voice.parse(self.voice_id)
        return Path(self.out_dir) / "parts" / f"{speaker_slug(voice)}.{self.chunk:04d}.jsonl"

    @property
    def stats_path(self) -> Path:
        """The chunk's synthesis statistics (time, dropped utterances), kept for the corpus summary."""
        return self.part_path.with_suffix(".stats")


_SENTENCES: dict[str, list[Sentence]] = {}
_VOCABULARY: dict[str, list[str]] = {}


def _pools() -> tuple[dict[str, list[Sentence]], dict[str, list[str]]]:
    if not _SENTENCES:  # once per worker process
        everything = load_sentences()
        for split in ("train", "dev"):
            _SENTENCES[split] = [s for s in everything if s.split == split]
            _VOCABULARY[split] = edit_vocabulary(_SENTENCES[split])
    return _SENTENCES, _VOCABULARY


def _speech_gain(synthesis: Synthesis) -> float:
    a, b = synthesis.words[0].start, synthesis.words[-1].end
    spoken = synthesis.audio[int(a * SAMPLE_RATE):int(b * SAMPLE_RATE)]
    rms = float(np.sqrt(np.mean(spoken.astype(np.float64) ** 2))) + 1e-9
    return 10 ** (TARGET_RMS_DB / 20) / rms


def _synthesize_all(voice: Voice, sentences: list[Sentence]) -> list[Synthesis | TimingError]:
    """Audio and word timings per sentence, or why the sentence was dropped."""
    pairs = [(s.text, s.words) for s in sentences]
    if voice.engine == "kokoro":
        return kokoro.synthesize_many(voice.name, pairs)
    return synthesize_many(voice, pairs)


def _write(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, SAMPLE_RATE, subtype="PCM_16")


def _words_json(synthesis: Synthesis) -> list[dict]:
    return [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in synthesis.words]


def _save_utterance(job: ChunkJob, voice: Voice, split: str, uid: str, sentence: Sentence,
                    synthesis: Synthesis, plan: EditPlan | None, edited: Synthesis | None) -> dict:
    """Write the wav(s) of one utterance (and its edited variant) and return its manifest record."""
    peak = max(float(np.abs(x.audio).max()) for x in (synthesis, edited) if x is not None)
    gain = min(_speech_gain(synthesis), PEAK_LIMIT / max(peak, 1e-9))  # one gain for a pair: same level
    folder = f"wav/{speaker_slug(voice)}"
    _write(Path(job.out_dir) / folder / f"{uid}.wav", synthesis.audio * gain)
    record = {"id": uid, "speaker": voice.id, "split": split, "text": sentence.text,
              "path": f"{folder}/{uid}.wav", "sample_rate": SAMPLE_RATE,
              "duration": round(synthesis.duration, 4), "words": _words_json(synthesis), "edit": None}
    if voice.engine == "kokoro":
        record["voice"] = kokoro.parse_blend(voice.name).describe()
    if synthesis.asr_wer is not None:
        record["asr_wer"] = round(synthesis.asr_wer, 4)
    if edited is not None and plan is not None:
        _write(Path(job.out_dir) / folder / f"{uid}.edit.wav", edited.audio * gain)
        record["edit"] = {"kind": plan.kind, "text": plan.sentence.text, "path": f"{folder}/{uid}.edit.wav",
                          "duration": round(edited.duration, 4), "words": _words_json(edited),
                          "orig_span": list(plan.orig_span), "edit_span": list(plan.edit_span)}
    return record


def run_chunk(job: ChunkJob) -> dict:
    """Synthesize one chunk, write its wavs and its part file; returns timing statistics."""
    voice = Voice.parse(job.voice_id)
    assert_trainable(voice)
    split = speaker_split(voice)
    sentences, vocabularies = _pools()
    pool = sentences[split]
    rng = np.random.default_rng([job.config.seed, job.speaker_index, job.chunk])
    picks = [pool[int(k)] for k in rng.choice(len(pool), size=job.count, replace=job.count > len(pool))]
    edit_rng = np.random.default_rng([job.config.seed, job.speaker_index, job.chunk, 1])
    plans = [plan_edit(s, vocabularies[split], edit_rng) if edit_rng.random() < job.config.edit_fraction
             else None for s in picks]

    started = time.perf_counter()
    if voice.engine == "espeak":
        reset_espeak()  # the chunk's audio must not depend on what this process spoke before
    originals = _synthesize_all(voice, picks)
    edit_indices = [i for i, p in enumerate(plans) if p is not None and isinstance(originals[i], Synthesis)]
    edits = dict(zip(edit_indices, _synthesize_all(voice, [plans[i].sentence for i in edit_indices])))
    synth_seconds = time.perf_counter() - started
    dropped = [r for r in originals + list(edits.values()) if not isinstance(r, Synthesis)]
    edits = {i: e for i, e in edits.items() if isinstance(e, Synthesis)}

    records = [_save_utterance(job, voice, split, f"{speaker_slug(voice)}-{job.first + i:05d}", sentence,
                               synthesis, plans[i], edits.get(i))
               for i, (sentence, synthesis) in enumerate(zip(picks, originals))
               if isinstance(synthesis, Synthesis)]
    audio_seconds = sum(r["duration"] + (r["edit"]["duration"] if r["edit"] else 0.0) for r in records)
    garbled = [r for r in dropped if isinstance(r, kokoro.GarbledError)]
    stats = {"engine": voice.engine, "synth_seconds": synth_seconds, "audio_seconds": audio_seconds,
             "utterances": len(records), "failed": len(dropped) - len(garbled), "garbled": len(garbled),
             "garbled_wer": [round(g.wer, 4) for g in garbled]}
    part = job.part_path
    part.parent.mkdir(parents=True, exist_ok=True)
    _write_jsonl(job.stats_path, [stats])  # before the part: a finished chunk always has its stats
    _write_jsonl(part, records)  # a part file exists only when its chunk is complete
    return stats


# --- the whole corpus ------------------------------------------------------------------------------

def plan_jobs(out_dir: Path, config: CorpusConfig) -> list[ChunkJob]:
    jobs = []
    for index, voice in enumerate(voice_pool(config.kokoro_speakers)):
        n = config.per_speaker(voice)
        for chunk, first in enumerate(range(0, n, CHUNK_SIZE)):
            count = min(CHUNK_SIZE, n - first)
            jobs.append(ChunkJob(str(out_dir), voice.id, index, chunk, first, count, config))
    return jobs


def _check_settings(out_dir: Path, config: CorpusConfig, force: bool) -> None:
    settings = out_dir / "corpus.json"
    old = settings.read_text().strip() if settings.exists() else ""
    claim_folder(out_dir, settings.name, config.settings(), force,
                 f"{out_dir} holds a corpus built with other settings ({old}); use --force to rebuild it",
                 lambda: [shutil.rmtree(out_dir / stale, ignore_errors=True) for stale in ("parts", "wav", "noise")])


def build_corpus(out_dir: Path, config: CorpusConfig, workers: int = 1, force: bool = False,
                 on_chunk=None) -> dict:
    """Synthesize every missing chunk, then write manifest.jsonl (and the noise bank)."""
    config.validate()
    _check_settings(out_dir, config, force)
    jobs = plan_jobs(out_dir, config)
    todo = [job for job in jobs if not job.part_path.exists()]
    stats: list[dict] = []
    started = time.perf_counter()
    # Kokoro's ONNX session: the cores shared out among the worker processes
    os.environ.setdefault("SPEECHX_KOKORO_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    if len(todo) > 1:
        _pools()  # load the sentences once, before forking
        # each espeak chunk maps one more copy of libespeak-ng: recycle worker processes now and then
        with multiprocessing.get_context("fork").Pool(max(1, workers), maxtasksperchild=16) as pool:
            for result in pool.imap_unordered(run_chunk, todo):
                stats.append(result)
                if on_chunk:
                    on_chunk(result)
    for job in todo[len(stats):]:  # a single chunk runs here
        stats.append(run_chunk(job))
        if on_chunk:
            on_chunk(stats[-1])
    wall = time.perf_counter() - started
    records = [json.loads(line) for job in jobs for line in job.part_path.read_text().splitlines()]
    _write_jsonl(out_dir / "manifest.jsonl", records)
    noises = []
    if config.noise:
        noises = noisebank.build_noise_bank(out_dir, records, seed=config.seed)
        _write_jsonl(out_dir / "noise.jsonl", noises)
    every_chunk = [row for job in jobs if job.stats_path.exists() for row in read_manifest(job.stats_path)]
    return summarize(records, noises, every_chunk, wall, skipped=len(jobs) - len(todo),
                     made=sum(s["utterances"] for s in stats))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def read_manifest(path: Path) -> list[dict]:
    """Records of a manifest.jsonl (or noise.jsonl); paths stay relative to its folder."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --- command line ----------------------------------------------------------------------------------

app = typer.Typer(help="Offline training corpus: espeak-ng, flite and festival voices plus Kokoro-82M natural "
                       "voices (blends of its style vectors), with word timings, edit pairs and noise.",
                  no_args_is_help=True)


@app.callback()
def _main() -> None:
    """Offline training corpus."""


@app.command()
def build(
    out_dir: Annotated[Path, typer.Argument(help="Folder for wavs and manifests (created).")],
    n_per_speaker: Annotated[int, typer.Option(help="Utterances per speaker (some may fail checks).")] = 200,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same corpus.")] = 0,
    workers: Annotated[int, typer.Option(help="Processes synthesizing in parallel.")] = 1,
    edit_fraction: Annotated[float, typer.Option(help="Share of utterances with an edited variant.")] = 0.3,
    noise: Annotated[bool, typer.Option(help="Also build the noise bank.")] = True,
    kokoro_speakers: Annotated[int, typer.Option(
        help="Kokoro-82M natural voices: this many seeded blends of its five style vectors "
             f"(every {kokoro.DEV_EVERY}th held out for dev; needs the kokoro extra).")] = 0,
    kokoro_per_speaker: Annotated[int, typer.Option(help="Utterances per Kokoro blend.")] = 24,
    force: Annotated[bool, typer.Option(help="Rebuild a corpus made with other settings.")] = False,
) -> None:
    """Synthesize the corpus (resumes an interrupted build) and print a summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    config = CorpusConfig(n_per_speaker=n_per_speaker, seed=seed, edit_fraction=edit_fraction, noise=noise,
                          kokoro_speakers=kokoro_speakers,
                          kokoro_per_speaker=kokoro_per_speaker if kokoro_speakers else 0)
    try:
        config.validate()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    total = sum(config.per_speaker(v) for v in voice_pool(config.kokoro_speakers))
    with Progress(TextColumn("[bold]corpus"), BarColumn(), MofNCompleteColumn(), TextColumn("utterances"),
                  TimeRemainingColumn()) as progress:
        task = progress.add_task("corpus", total=total)
        done = sum(len(job.part_path.read_text().splitlines()) for job in plan_jobs(out_dir, config)
                   if job.part_path.exists()) if (out_dir / "corpus.json").exists() and not force else 0
        progress.update(task, completed=done)
        try:
            summary = build_corpus(out_dir, config, workers=workers, force=force,
                                   on_chunk=lambda result: progress.advance(task, result["utterances"]))
        except FileExistsError as error:
            raise typer.BadParameter(str(error)) from error
    console = Console()
    console.print(f"[bold]{summary['utterances']}[/] utterances ({summary['edit_pairs']} with an edited "
                  f"variant), {summary['hours']:.2f} h, speakers train {summary['speakers']['train']} / "
                  f"dev {summary['speakers']['dev']}, {summary['failed']} dropped by timing checks, "
                  f"{summary['garbled']} by the recognizer filter")
    for source, facts in summary["sources"].items():
        console.print(f"  {source}: {facts['hours']:.2f} h, {facts['speakers']} speakers, "
                      f"{facts['utterances']} utterances")
    for engine, cost in summary["synth_seconds_per_audio_hour"].items():
        console.print(f"  {engine}: {cost:.0f} s of synthesis per audio hour")
    console.print(f"  {summary['utterances_per_minute']:.0f} utterances/min with {workers} worker(s); "
                  f"noises: {summary['noises']}")
    console.print(f"manifest: {out_dir / 'manifest.jsonl'}")


@app.command("report")
def report_command(
    corpus_dir: Annotated[Path, typer.Argument(help="A built corpus (manifest.jsonl).", exists=True, file_okay=False)],
    sample: Annotated[int, typer.Option(help="Utterances per source the recognizer reads.")] = 60,
    speakers: Annotated[int, typer.Option(help="Speakers per source whose distinctness is measured.")] = 40,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report here.")] = None,
    partial: Annotated[bool, typer.Option(help="Report the finished chunks of an unfinished build.")] = False,
    source: Annotated[list[str] | None, typer.Option(help="Measure WER and distinctness of these sources only "
                                                          "(espeak, flite, festival, kokoro).")] = None,
) -> None:
    """Hours, speakers and filtered utterances per source; recognizer WER; speaker distinctness."""
    from rich.console import Console
    from rich.table import Table

    from speechx_cli.train.corpus_report import report

    result = report(corpus_dir, sample=sample, speakers=speakers, partial=partial, only=tuple(source or ()))
    table = Table("source", "hours", "speakers (dev)", "utterances", "timing failures", "rejected (WER)",
                  "WER median", "cosine same", "cosine other", "confusable")
    for source, facts in sorted(result["sources"].items()):
        wer, voices = result["wer"].get(source), result["distinctness"].get(source)
        table.add_row(source, f"{facts['hours']:.2f}", f"{facts['speakers']} ({facts['dev_speakers']})",
                      str(facts["utterances"]), str(facts.get("failed", "?")), str(facts.get("garbled", "?")),
                      f"{wer['median']:.2f} (n={wer['n']})" if wer else "",
                      "{:.3f} [{:.3f}, {:.3f}]".format(*voices["same"]) if voices else "",
                      "{:.3f} [{:.3f}, {:.3f}]".format(*voices["other"]) if voices else "",
                      f"{voices['confusable']:.1%}" if voices else "")
    Console().print(table)
    if json_out:
        json_out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    app()
