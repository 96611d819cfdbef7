"""What a built corpus holds, measured: per source, hours and speakers, what the filters dropped, how
well the recognizer reads it, and how distinct its speakers are.

    python -m speechx_cli.train.corpus report data/corpus --sample 60 --speakers 40

Speaker distinctness (Resemblyzer, eval extra): for each of up to `speakers` speakers of a source, two
utterances are embedded. "same" is the cosine between one speaker's two utterances, "other" the cosine
between utterances of two different speakers of that source. Distinct voices have "other" well below
"same"; "confusable" is the share of speaker pairs scoring above the median "same".
Recognizer WER (pocketsphinx, eval extra) is measured on `sample` utterances per source. For Kokoro, the
build already measured every utterance (manifest "asr_wer", and the WERs of those it rejected).
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np

from speechx_cli.eval import metrics as M
from speechx_cli.train.synth import SAMPLE_RATE, read_mono


def _source(record: dict) -> str:
    return record["speaker"].partition(":")[0]


def _hours(record: dict) -> float:
    return (record["duration"] + (record["edit"]["duration"] if record["edit"] else 0.0)) / 3600


def chunk_stats(root: Path) -> list[dict]:
    """Every finished chunk's statistics (corpus.py writes one `.stats` file per chunk)."""
    return [json.loads(line) for path in sorted((root / "parts").glob("*.stats"))
            for line in path.read_text().splitlines() if line.strip()]


def sources(records: list[dict], stats: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        s = out.setdefault(_source(r), {"hours": 0.0, "utterances": 0, "speakers": set(), "dev_speakers": set(),
                                        "edit_pairs": 0})
        s["hours"] += _hours(r)
        s["utterances"] += 1
        s["speakers"].add(r["speaker"])
        if r["split"] == "dev":
            s["dev_speakers"].add(r["speaker"])
        s["edit_pairs"] += r["edit"] is not None
    for s in stats:
        facts = out.setdefault(s["engine"], {"hours": 0.0, "utterances": 0, "speakers": set(),
                                             "dev_speakers": set(), "edit_pairs": 0})
        for key in ("failed", "garbled", "synth_seconds", "audio_seconds"):
            facts[key] = facts.get(key, 0) + s.get(key, 0)
    for facts in out.values():
        facts["speakers"], facts["dev_speakers"] = len(facts["speakers"]), len(facts["dev_speakers"])
        if facts.get("audio_seconds"):  # seconds of one process's synthesis per second of audio
            facts["synthesis_real_time_factor"] = facts["synth_seconds"] / facts["audio_seconds"]
    return out


def recognizer_wer(root: Path, records: list[dict], stats: list[dict], source: str, sample: int,
                   rng: np.random.Generator) -> dict:
    """Median and mean WER of pocketsphinx on a source: every built utterance where the build measured
    it (kept and rejected, before filtering), else a random sample transcribed now."""
    own = [r for r in records if _source(r) == source]
    if own and all("asr_wer" in r for r in own):
        values = [r["asr_wer"] for r in own] + [w for s in stats if s["engine"] == source
                                                for w in s.get("garbled_wer", [])]
        how = "every utterance, as built (before the filter)"
    else:
        picks = [own[int(k)] for k in rng.choice(len(own), size=min(sample, len(own)), replace=False)]
        values = [M.wer(r["text"], read_mono(root / r["path"]), SAMPLE_RATE) for r in picks]
        how = f"{len(values)} random utterances"
    return {"median": float(np.median(values)), "mean": float(np.mean(values)), "n": len(values), "how": how}


def distinctness(root: Path, records: list[dict], source: str, speakers: int, rng: np.random.Generator) -> dict:
    """Resemblyzer cosines: two utterances of the same speaker against utterances of two speakers."""
    by_speaker: dict[str, list[dict]] = {}
    for r in records:
        if _source(r) == source:
            by_speaker.setdefault(r["speaker"], []).append(r)
    names = sorted(s for s, rows in by_speaker.items() if len(rows) >= 2)
    names = [names[int(k)] for k in sorted(rng.choice(len(names), size=min(speakers, len(names)), replace=False))]
    if len(names) < 2:
        raise ValueError(f"{source}: fewer than two speakers with two utterances")
    embeddings = {}
    for name in names:
        a, b = (by_speaker[name][int(k)] for k in rng.choice(len(by_speaker[name]), size=2, replace=False))
        embeddings[name] = [M.speaker_embedding(read_mono(root / r["path"]), SAMPLE_RATE) for r in (a, b)]
    same = [float(np.dot(*embeddings[n])) for n in names]
    other = [float(np.dot(embeddings[p][0], embeddings[q][1])) for p, q in itertools.combinations(names, 2)]
    threshold = float(np.median(same))
    return {"speakers": len(names), "same": M.summarize(same), "other": M.summarize(other),
            "margin": float(np.mean(same) - np.mean(other)),
            "confusable": float(np.mean([o > threshold for o in other]))}


def report(root: Path, sample: int = 60, speakers: int = 40, seed: int = 0, partial: bool = False,
           only: tuple[str, ...] = ()) -> dict:
    """The whole report; `partial` reads the finished chunks of a build still running (or stopped);
    `only` limits the recognizer and speaker measurements to these sources."""
    root = Path(root)
    files = sorted((root / "parts").glob("*.jsonl")) if partial else [root / "manifest.jsonl"]
    records = [json.loads(line) for path in files for line in path.read_text().splitlines() if line.strip()]
    stats = chunk_stats(root)
    out = {"sources": sources(records, stats), "wer": {}, "distinctness": {}}
    for source in sorted(out["sources"]):
        rng = np.random.default_rng([seed, len(source)])
        if (not only or source in only) and any(_source(r) == source for r in records):
            out["wer"][source] = recognizer_wer(root, records, stats, source, sample, rng)
            out["distinctness"][source] = distinctness(root, records, source, speakers, rng)
    return out


def summarize(records: list[dict], noises: list[dict], stats: list[dict], wall: float, skipped: int,
              made: int) -> dict:
    """The corpus in numbers; `stats` are every chunk's (this run's and earlier runs'), `made` the
    utterances this run synthesized in `wall` seconds."""
    by_source = sources(records, stats)
    return {
        "utterances": len(records),
        "edit_pairs": sum(r["edit"] is not None for r in records),
        "hours": sum(map(_hours, records)),
        "speakers": {split: len({r["speaker"] for r in records if r["split"] == split})
                     for split in ("train", "dev")},
        "failed": sum(s["failed"] for s in stats),
        "garbled": sum(s.get("garbled", 0) for s in stats),
        "garbled_wer": sorted(w for s in stats for w in s.get("garbled_wer", [])),
        "sources": by_source,
        "skipped_chunks": skipped,
        "wall_seconds": wall,
        "utterances_per_minute": 60 * made / wall if wall > 0 and made else 0.0,
        "synth_seconds_per_audio_hour": {k: 3600 * v["synthesis_real_time_factor"]
                                         for k, v in sorted(by_source.items()) if "synthesis_real_time_factor" in v},
        "noises": dict(Counter(f"{n['kind']}/{n['split']}" for n in noises)),
    }
