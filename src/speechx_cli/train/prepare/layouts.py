"""Corpus layouts as their users know them: each reader lists a source's recordings with their
transcripts and speakers, in a fixed order, without opening any audio.

    libritts     <subset>/<speaker>/<chapter>/<id>.wav + <id>.normalized.txt (else .original.txt)
    librispeech  <subset>/<speaker>/<chapter>/<id>.flac + <speaker>-<chapter>.trans.txt ("ID TEXT" lines)
    vctk         txt/<speaker>/<id>.txt + wav48/<speaker>/<id>.wav (0.80) or
                 wav48_silence_trimmed/<speaker>/<id>_mic1.flac (0.92; the mic2 copies are left out)
    ljspeech     metadata.csv ("id|text|normalized text") + wavs/<id>.wav; one speaker
    commonvoice  validated.tsv (client_id, path, sentence, ...) + clips/<path>; dev.tsv and test.tsv
                 name the held-out speakers
    folder       any audio under SRC; a transcript is a sidecar <stem>.txt / .lab / .normalized.txt;
                 the speaker is the first folder below SRC (SRC's own name for files at its top)
    jsonl        one JSON object per line: "audio" (or "path", "audio_filepath"), optional "text",
                 "speaker", "id", "split", "textgrid"; relative paths are relative to the file

Folders named dev*/test*/valid* (LibriTTS and LibriSpeech subsets) mark their recordings as dev,
train* as train. A Montreal Forced Aligner TextGrid is looked for beside the audio (<stem>.TextGrid)
and, with --textgrids DIR, at DIR/<speaker>/<stem>.TextGrid or DIR/<stem>.TextGrid.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Callable, Iterator

from ... import audio as A
from .items import Item, audio_files, read_transcript, sorted_walk, split_of_parts

LAYOUTS = ("libritts", "librispeech", "vctk", "ljspeech", "commonvoice", "folder", "jsonl")
_LIBRITTS_RE = re.compile(r"^\d+_\d+_\d+_\d+\.wav$")
_LIBRISPEECH_RE = re.compile(r"^\d+-\d+\.trans\.txt$")
_VCTK_WAV_RE = re.compile(r"^wav\d+")  # wav48, wav48_silence_trimmed, resampled copies (wav16, ...)
_DETECT_FILES = 5000  # file names looked at by detect() before it settles on "folder"
_SIDECARS = (".txt", ".lab", ".normalized.txt")


class LayoutError(ValueError):
    """The source is not in the layout asked for (or in none)."""


def _textgrid(audio: Path, speaker_name: str, textgrids: Path | None) -> str | None:
    stem = audio.name.rsplit(".", 1)[0]
    places = [audio.with_name(stem + ".TextGrid")]
    if textgrids is not None:
        places += [textgrids / speaker_name / f"{stem}.TextGrid", textgrids / f"{stem}.TextGrid"]
    return next((str(p) for p in places if p.is_file()), None)


def _split(src: Path, folder: Path) -> str | None:
    return split_of_parts((src.name, *folder.relative_to(src).parts))


def _item(uid: str, layout: str, speaker: str, audio: Path, text: str | None, problem: str | None,
          textgrids: Path | None, split: str | None) -> Item:
    return Item(uid, f"{layout}:{speaker}", str(audio), text, _textgrid(audio, speaker, textgrids), split,
                text_problem=problem)


# ---- the readers --------------------------------------------------------------------------------

def libritts(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    for folder, files in sorted_walk(src):
        names = set(files)
        for name in files:
            if not name.endswith(".wav"):
                continue
            stem = name[:-4]
            transcript = f"{stem}.normalized.txt" if f"{stem}.normalized.txt" in names else f"{stem}.original.txt"
            text, problem = read_transcript(folder / transcript)
            yield _item(stem, "libritts", stem.split("_")[0], folder / name, text, problem, textgrids,
                        _split(src, folder))


def _trans_lines(path: Path) -> tuple[dict[str, str], str | None]:
    try:
        raw = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        return {}, f"{path.name} is not UTF-8"
    lines = (line.split(maxsplit=1) for line in raw.splitlines() if line.strip())
    return {parts[0]: parts[1].strip() if len(parts) > 1 else "" for parts in lines}, None


def librispeech(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    for folder, files in sorted_walk(src):
        texts: dict[str, str] = {}
        problem = None
        for name in files:
            if name.endswith(".trans.txt"):
                found, bad = _trans_lines(folder / name)
                texts.update(found)
                problem = problem or bad
        audio = {name.rsplit(".", 1)[0]: name for name in files if A.is_audio_path(name)}
        split = _split(src, folder)
        for stem in sorted(audio.keys() | texts.keys()):
            speaker = stem.split("-")[0]
            if stem not in audio:
                yield Item(stem, f"librispeech:{speaker}", str(folder / f"{stem}.flac"),
                           problem="listed in the chapter's trans.txt, but no audio file")
                continue
            text = texts.get(stem) or None
            why = problem or (None if text else f"no line for {stem} in a trans.txt of its folder")
            yield _item(stem, "librispeech", speaker, folder / audio[stem], text, why, textgrids, split)


def _vctk_wav_roots(src: Path) -> list[Path]:
    return sorted(p for p in src.iterdir() if p.is_dir() and _VCTK_WAV_RE.match(p.name))


def vctk(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    txt = src / "txt"
    wav_roots = _vctk_wav_roots(src)
    if not wav_roots or not txt.is_dir():
        raise LayoutError(f"{src}: no txt and wav48* folders (VCTK layout)")
    root = next((p for p in wav_roots if p.name == "wav48_silence_trimmed"), wav_roots[0])
    for path in audio_files(root):
        stem = path.name.rsplit(".", 1)[0]
        if stem.endswith("_mic2"):  # VCTK 0.92 holds each sentence twice, once per microphone
            continue
        uid = stem.removesuffix("_mic1")
        speaker = path.parent.name
        text, problem = read_transcript(txt / speaker / f"{uid}.txt")
        yield _item(uid, "vctk", speaker, path, text, problem, textgrids, None)


def _decoded_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text or None when the line is not UTF-8), streamed."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                yield number, None


def ljspeech(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    speaker = src.name or "speaker"
    for number, line in _decoded_lines(src / "metadata.csv"):
        if line is None:
            yield Item(f"metadata.csv:{number}", f"ljspeech:{speaker}", str(src / "metadata.csv"),
                       problem=f"metadata.csv line {number} is not UTF-8")
            continue
        if not line.strip():
            continue
        fields = line.split("|")
        uid = fields[0].strip()
        text = (fields[2] if len(fields) > 2 and fields[2].strip() else fields[1] if len(fields) > 1 else "").strip()
        yield _item(uid, "ljspeech", speaker, src / "wavs" / f"{uid}.wav", text or None,
                    None if text else f"metadata.csv line {number} has no transcript", textgrids, None)


def _tsv_rows(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        yield from csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _commonvoice_root(src: Path) -> Path:
    for folder in (src, *sorted(p for p in src.iterdir() if p.is_dir())):
        if (folder / "validated.tsv").is_file() or (folder / "train.tsv").is_file():
            return folder
    raise LayoutError(f"{src}: no validated.tsv (Common Voice layout)")


def commonvoice(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    root = _commonvoice_root(src)
    held_out = {row.get("client_id", "") for name in ("dev.tsv", "test.tsv") if (root / name).is_file()
                for row in _tsv_rows(root / name)}
    tables = ["validated.tsv"] if (root / "validated.tsv").is_file() else ["train.tsv", "dev.tsv", "test.tsv"]
    for table in tables:
        if not (root / table).is_file():
            continue
        for number, row in enumerate(_tsv_rows(root / table), 2):
            clip, speaker = (row.get("path") or "").strip(), (row.get("client_id") or "").strip()
            if not clip or not speaker:
                yield Item(f"{table}:{number}", "commonvoice:unknown", str(root / table),
                           problem=f"{table} line {number} has no path or client_id")
                continue
            text = (row.get("sentence") or "").strip()
            problem = None if text else f"{table} line {number} has no sentence"
            if "\ufffd" in text:
                text, problem = "", f"{table} line {number} is not UTF-8"
            uid = clip.rsplit(".", 1)[0]
            split = ("dev" if speaker in held_out else "train") if held_out else None
            yield _item(uid, "commonvoice", speaker, root / "clips" / clip, text or None, problem, textgrids, split)


def folder(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    for path in audio_files(src):
        rel = path.relative_to(src)
        speaker = rel.parts[0] if len(rel.parts) > 1 else (src.name or "speaker")
        stem = path.name.rsplit(".", 1)[0]
        text = problem = None
        for suffix in _SIDECARS:
            sidecar = path.with_name(stem + suffix)
            if sidecar.is_file():
                text, problem = read_transcript(sidecar)
                break
        uid = str(rel.with_suffix("")).replace("\\", "/")
        yield _item(uid, "folder", speaker, path, text, problem, textgrids, _split(src, path.parent))


def jsonl(src: Path, textgrids: Path | None = None) -> Iterator[Item]:
    base = src.parent
    for number, line in _decoded_lines(src):
        where = f"{src.name}:{number}"
        try:
            row = json.loads(line) if line is not None else None
        except json.JSONDecodeError:
            row = "bad"
        if line is not None and not line.strip():
            continue
        audio = next((row[k] for k in ("audio", "path", "audio_filepath") if k in row), None) \
            if isinstance(row, dict) else None
        if not isinstance(audio, str):
            yield Item(where, "jsonl:unknown", str(src), problem=f"line {number} is not a JSON object with an audio path")
            continue
        path = Path(audio) if Path(audio).is_absolute() else base / audio
        speaker = str(row.get("speaker", row.get("speaker_id", path.parent.name)))
        text = row.get("text")
        text = " ".join(text.split()) if isinstance(text, str) and text.strip() else None
        uid = str(row.get("id", path.name.rsplit(".", 1)[0]))
        grid = row.get("textgrid")
        item = _item(uid, "jsonl", speaker, path, text, None, textgrids, row.get("split"))
        if isinstance(grid, str):
            item = Item(**{**item.__dict__, "textgrid": str(base / grid)})
        yield item


READERS: dict[str, Callable[..., Iterator[Item]]] = {
    "libritts": libritts, "librispeech": librispeech, "vctk": vctk, "ljspeech": ljspeech,
    "commonvoice": commonvoice, "folder": folder, "jsonl": jsonl}


# ---- detection ----------------------------------------------------------------------------------

def detect(src: Path) -> str:
    """The layout of `src`, from its marker files; "folder" when only audio is found."""
    if src.is_file():
        if src.suffix == ".jsonl":
            return "jsonl"
        raise LayoutError(f"{src} is a file; a source is a folder or a .jsonl list")
    if (src / "metadata.csv").is_file() and (src / "wavs").is_dir():
        return "ljspeech"
    try:
        _commonvoice_root(src)
        return "commonvoice"
    except LayoutError:
        pass
    if (src / "txt").is_dir() and _vctk_wav_roots(src):
        return "vctk"
    seen, audio = 0, False
    for _, files in sorted_walk(src):
        for name in files:
            if _LIBRITTS_RE.match(name):
                return "libritts"
            if _LIBRISPEECH_RE.match(name):
                return "librispeech"
            audio = audio or A.is_audio_path(name)
            seen += 1
        if seen >= _DETECT_FILES:
            break
    if audio:
        return "folder"
    raise LayoutError(f"{src}: no audio files found")


def check(src: Path, layout: str) -> None:
    """LayoutError unless `src` has the files `layout` reads (before anything is written)."""
    if layout not in READERS:
        raise LayoutError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")
    if layout == "jsonl":
        if not src.is_file():
            raise LayoutError(f"{src}: the jsonl layout reads a .jsonl file")
        return
    if not src.is_dir():
        raise LayoutError(f"{src} is not a folder")
    if layout == "vctk" and not ((src / "txt").is_dir() and _vctk_wav_roots(src)):
        raise LayoutError(f"{src}: no txt and wav48* folders (VCTK layout)")
    if layout == "ljspeech" and not (src / "metadata.csv").is_file():
        raise LayoutError(f"{src}: no metadata.csv (LJSpeech layout)")
    if layout == "commonvoice":
        _commonvoice_root(src)


def read(src: Path, layout: str, textgrids: Path | None = None) -> Iterator[Item]:
    check(src, layout)
    yield from READERS[layout](src, textgrids)
