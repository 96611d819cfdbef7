"""Tiny corpora in the layouts real users have (LibriTTS, LibriSpeech, VCTK, LJSpeech, Common Voice,
a plain folder), spoken by the project's own voices, each with some broken files among the good ones.

`voices()` synthesizes the utterances once (espeak-ng and flite: fast); each builder writes one layout
and returns what a correct `speechx train prepare` must make of it: the ids it must keep and the
problems (by id) it must report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from speechx_cli.train import synth
from speechx_cli.train.sentences import clean_sentence
from speechx_cli.train.synth import SAMPLE_RATE, Voice

SPEAKERS = ("espeak:en-us+m1", "espeak:en+f5", "espeak:en-gb-x-rp+m4", "flite:kal16")
SENTENCES = ("The cat sat on the warm mat.", "She sells bright shells by the shore.",
             "A quiet river runs past the old mill.")


@dataclass(frozen=True)
class Utterance:
    speaker: int
    index: int
    text: str
    audio: np.ndarray  # float32 at SAMPLE_RATE
    words: list[dict]


@dataclass
class Expected:
    kept: set[str] = field(default_factory=set)  # ids (or id prefixes of cut recordings) in the manifest
    untranscribed: set[str] = field(default_factory=set)  # of those, kept without their transcript
    problems: set[str] = field(default_factory=set)  # ids named in report.jsonl


def voices() -> list[Utterance]:
    out = []
    for s, voice in enumerate(SPEAKERS):
        for i, raw in enumerate(SENTENCES):
            sentence = clean_sentence(raw)
            r = synth.synthesize(Voice.parse(voice), sentence.text, sentence.words)
            words = [{"word": w.word.lower(), "start": w.start, "end": w.end} for w in r.words]
            out.append(Utterance(s, i, sentence.text, r.audio, words))
    return out


def _write(path: Path, audio: np.ndarray, sr: int = SAMPLE_RATE, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, **kw)
    return path


def _at(audio: np.ndarray, sr: int) -> np.ndarray:
    from speechx_cli.audio import resample

    return resample(audio, SAMPLE_RATE, sr)


def _textgrid(path: Path, words: list[dict], duration: float) -> None:
    """A long-format TextGrid as the Montreal Forced Aligner writes it (words tier, empty pauses)."""
    intervals, t = [], 0.0
    for w in words:
        if w["start"] > t:
            intervals.append((t, w["start"], ""))
        intervals.append((w["start"], w["end"], w["word"]))
        t = w["end"]
    intervals.append((t, duration, ""))
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "words"', "        xmin = 0", f"        xmax = {duration}",
             f"        intervals: size = {len(intervals)}"]
    for k, (a, b, label) in enumerate(intervals, 1):
        lines += [f"        intervals [{k}]:", f"            xmin = {a}", f"            xmax = {b}",
                  f'            text = "{label}"']
    path.write_text("\n".join(lines) + "\n")


def libritts(root: Path, utts: list[Utterance]) -> Expected:
    exp = Expected()
    for u in utts:
        subset = "dev-clean" if u.speaker == 3 else "train-clean-100"
        spk = 100 + u.speaker
        uid = f"{spk}_200_{u.index:06d}_000000"
        folder = root / subset / str(spk) / "200"
        _write(folder / f"{uid}.wav", _at(u.audio, 24000), 24000)
        (folder / f"{uid}.original.txt").write_text(u.text)
        if (u.speaker, u.index) == (1, 2):
            exp.untranscribed.add(uid)  # no .normalized.txt, no .original.txt: kept without text
            exp.problems.add(uid)
            (folder / f"{uid}.original.txt").unlink()
        else:
            (folder / f"{uid}.normalized.txt").write_text(u.text)
        if u.index == 0:
            _textgrid(folder / f"{uid}.TextGrid", u.words, len(u.audio) / SAMPLE_RATE)
        exp.kept.add(uid)
    bad = root / "train-clean-100" / "101" / "200"
    (bad / "101_200_000009_000000.wav").write_bytes(b"")  # empty file
    (bad / "101_200_000009_000000.normalized.txt").write_text("Nothing here.")
    exp.problems.add("101_200_000009_000000")
    return exp


def librispeech(root: Path, utts: list[Utterance]) -> Expected:
    exp = Expected()
    lines: dict[Path, list[str]] = {}
    for u in utts:
        spk = 300 + u.speaker
        folder = root / ("dev-clean" if u.speaker == 0 else "train-clean-100") / str(spk) / "7"
        uid = f"{spk}-7-{u.index:04d}"
        _write(folder / f"{uid}.flac", u.audio, format="FLAC")
        lines.setdefault(folder / f"{spk}-7.trans.txt", []).append(f"{uid} {u.text.upper().rstrip('.')}")
        exp.kept.add(uid)
    folder = root / "train-clean-100" / "301" / "7"
    (folder / "301-7-0009.flac").write_bytes(np.random.default_rng(0).bytes(3000))  # corrupt
    lines[folder / "301-7.trans.txt"] += ["301-7-0009 GARBLED", "301-7-0010 NO AUDIO FOR THIS LINE"]
    exp.problems |= {"301-7-0009", "301-7-0010"}
    for path, rows in lines.items():
        path.write_text("\n".join(rows) + "\n")
    return exp


def vctk(root: Path, utts: list[Utterance]) -> Expected:
    exp = Expected()
    for u in utts:
        spk = f"p{225 + u.speaker}"
        uid = f"{spk}_{u.index + 1:03d}"
        for mic in (1, 2):
            _write(root / "wav48_silence_trimmed" / spk / f"{uid}_mic{mic}.flac", _at(u.audio, 48000), 48000,
                   format="FLAC")
        txt = root / "txt" / spk / f"{uid}.txt"
        txt.parent.mkdir(parents=True, exist_ok=True)
        if (u.speaker, u.index) == (2, 1):
            txt.write_bytes(u.text.replace("shells", "sh\xe9lls").encode("latin-1"))  # not UTF-8
            exp.untranscribed.add(uid)
            exp.problems.add(uid)
        else:
            txt.write_text(u.text + "\n")
        exp.kept.add(uid)
    good = root / "wav48_silence_trimmed" / "p225" / "p225_001_mic1.flac"
    (good.parent / "p225_009_mic1.flac").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])  # truncated
    (root / "txt" / "p225" / "p225_009.txt").write_text("Cut short.\n")
    exp.problems.add("p225_009")
    return exp


def ljspeech(root: Path, utts: list[Utterance]) -> Expected:
    exp = Expected()
    rows = []
    for k, u in enumerate(utts[:6]):  # one speaker, as in LJSpeech: the first two voices' sentences
        uid = f"LJ001-{k + 1:04d}"
        _write(root / "wavs" / f"{uid}.wav", _at(u.audio, 22050), 22050)
        rows.append(f"{uid}|{u.text}|{u.text}".encode())
        exp.kept.add(uid)
    _write(root / "wavs" / "LJ001-0009.wav", np.zeros(2205, np.float32) + 0.1, 22050)  # 0.1 s
    rows.append(b"LJ001-0009|A whole long sentence that no tenth of a second can hold.|same")
    rows.append("LJ001-0010|Caf\xe9 au lait|Caf\xe9 au lait".encode("latin-1"))
    exp.problems |= {"LJ001-0009", "metadata.csv:8"}
    (root / "metadata.csv").write_bytes(b"\n".join(rows) + b"\n")
    return exp


def commonvoice(root: Path, utts: list[Utterance]) -> Expected:
    exp = Expected()
    root = root / "en"
    header = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"
    rows, dev = [header], [header]
    for k, u in enumerate(utts):
        clip = f"common_voice_en_{1000 + k}.mp3"
        _write(root / "clips" / clip, _at(u.audio, 48000), 48000, format="MP3")
        row = f"client{u.speaker:02d}\t{clip}\t{u.text}\t2\t0\t\t\t\ten\t"
        rows.append(row)
        if u.speaker == 2:
            dev.append(row)
        exp.kept.add(clip[:-4])
    rows.append(rows[1])  # a duplicate row
    rows.append(f"client01\tcommon_voice_en_9999.mp3\tMissing clip.\t2\t0\t\t\t\ten\t")
    exp.problems |= {rows[1].split("\t")[1][:-4], "common_voice_en_9999"}
    (root / "validated.tsv").write_text("\n".join(rows) + "\n")
    (root / "dev.tsv").write_text("\n".join(dev) + "\n")
    return exp


def folder(root: Path, utts: list[Utterance]) -> Expected:
    """Speakers as folders, several formats, sidecar transcripts, one untranscribed long recording."""
    exp = Expected()
    suffixes = (".wav", ".flac", ".ogg")
    for u in utts:
        spk = f"speaker{u.speaker}"
        name = f"take{u.index}{suffixes[u.index]}"
        _write(root / spk / name, u.audio)
        uid = f"{spk}/take{u.index}"
        if u.index != 2:
            (root / spk / f"take{u.index}.txt").write_text(u.text)
        else:
            exp.untranscribed.add(uid)  # no sidecar: kept for text-optional tasks, not a problem
        exp.kept.add(uid)
    pause = np.zeros(int(0.6 * SAMPLE_RATE), np.float32)
    chapter = np.concatenate([x for u in utts if u.speaker == 0 for x in (u.audio, pause)] * 6)
    _write(root / "speaker0" / "chapter.flac", chapter, format="FLAC")  # > 30 s: cut at pauses
    exp.kept.add("speaker0/chapter")
    exp.untranscribed.add("speaker0/chapter")
    _write(root / "speaker1" / "take0.flac", utts[3].audio, format="FLAC")  # take0.wav too: a duplicate id
    _write(root / "speaker1" / "silence.wav", np.zeros(SAMPLE_RATE, np.float32))
    exp.problems |= {"speaker1/take0", "speaker1/silence"}
    return exp


LAYOUTS = {"libritts": libritts, "librispeech": librispeech, "vctk": vctk, "ljspeech": ljspeech,
           "commonvoice": commonvoice, "folder": folder}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def report(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "report.jsonl").read_text().splitlines()]
