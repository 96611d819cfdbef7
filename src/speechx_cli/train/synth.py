"""Offline synthesizers (espeak-ng, flite, festival) that also report when each word is spoken.

Each backend takes a sentence (text plus its word list, see sentences.py) and returns 16 kHz mono
float32 audio and one (word, start, end) per word, in seconds, taken from the synthesizer itself:
- espeak-ng: libespeak-ng through ctypes; WORD events give each word's start, the next word's start or
  the first pause phoneme gives its end;
- flite: `-psdur` gives every segment's end time, `-ps` on the words read one by one gives how many
  segments each word has;
- festival: a Scheme script prints each token's `word_start` / `word_end`.
Timings that fail `check_timings` raise TimingError, so a corpus never holds misaligned words.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000  # Hz, every corpus file
ESPEAK_SAMPLE_RATE = 22_050  # Hz, libespeak-ng's fixed output rate
ENGINES = ("espeak", "flite", "festival", "kokoro")
_TIMING_TOLERANCE = 0.02  # s; synthesizers round segment times

# Evaluation voices: never train on them (docs/data-formats.md, "Sources and licences").
RESERVED_VOICES = frozenset({"flite:slt", "flite:awb", "flite:awb_time",
                             "festival:cmu_us_slt_arctic_hts", "festival:cmu_us_slt_cg"})


class TimingError(RuntimeError):
    """The synthesizer's word timings do not match the text (count, order or range)."""


@dataclass(frozen=True)
class Voice:
    engine: str  # "espeak" | "flite" | "festival" | "kokoro"
    name: str  # "en-gb-x-rp+f2", "kal16", "kal_diphone", "b0042" (a Kokoro blend, train/kokoro.py)

    @property
    def id(self) -> str:
        return f"{self.engine}:{self.name}"

    @staticmethod
    def parse(voice_id: str) -> "Voice":
        engine, _, name = voice_id.partition(":")
        if engine not in ENGINES or not name:
            raise ValueError(f"not a voice id (engine:name): {voice_id!r}")
        return Voice(engine, name)


def is_reserved(voice: Voice) -> bool:
    """True for voices kept for evaluation (flite slt/awb, any festival slt voice)."""
    return voice.id in RESERVED_VOICES or (voice.engine in ("flite", "festival") and "slt" in voice.name) \
        or (voice.engine == "flite" and voice.name.startswith("awb"))


def assert_trainable(voice: Voice) -> None:
    if is_reserved(voice):
        raise ValueError(f"{voice.id} is reserved for evaluation and must never be used for training")


@dataclass(frozen=True)
class WordTiming:
    word: str
    start: float  # s
    end: float  # s


@dataclass
class Synthesis:
    audio: np.ndarray  # (T,) float32 at SAMPLE_RATE
    words: list[WordTiming]
    asr_wer: float | None = None  # recognizer WER against the text, where a quality filter measured it

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def check_timings(words: list[WordTiming], expected: tuple[str, ...], duration: float) -> None:
    """Raise TimingError unless there is one timing per expected word, in order, inside the audio."""
    if [w.word.lower() for w in words] != [w.lower() for w in expected]:
        raise TimingError(f"word mismatch: {[w.word for w in words]} vs {list(expected)}")
    previous_end = 0.0
    for w in words:
        if not (w.start < w.end and w.start >= previous_end - _TIMING_TOLERANCE
                and w.end <= duration + _TIMING_TOLERANCE):
            raise TimingError(f"bad timing for {w} (previous end {previous_end:.3f}, "
                              f"duration {duration:.3f})")
        previous_end = w.end


def synthesize(voice: Voice, text: str, words: tuple[str, ...]) -> Synthesis:
    """Speak one sentence; `words` are the text's words in order (punctuation stripped)."""
    result = synthesize_many(voice, [(text, words)])[0]
    if isinstance(result, TimingError):
        raise result
    return result


def synthesize_many(voice: Voice, sentences: list[tuple[str, tuple[str, ...]]]
                    ) -> list[Synthesis | TimingError]:
    """Speak several (text, words) sentences; a sentence whose timings fail gives its TimingError."""
    if voice.engine == "festival":  # one process for all: festival takes ~0.6 s to start
        results = synthesize_festival_batch(voice.name, sentences)
    elif voice.engine in ("espeak", "flite"):
        speak = _espeak if voice.engine == "espeak" else _flite
        results = []
        for text, words in sentences:
            try:
                results.append(speak(voice.name, text, words))
            except TimingError as error:
                results.append(error)
    else:  # kokoro voices: train/kokoro.py (corpus.py dispatches)
        raise ValueError(f"unknown engine {voice.engine!r}")
    return check_all(sentences, results)


def check_all(sentences: list[tuple[str, tuple[str, ...]]], results: list[Synthesis | TimingError]
              ) -> list[Synthesis | TimingError]:
    """Each result whose timings fail `check_timings` replaced by its TimingError."""
    checked: list[Synthesis | TimingError] = []
    for (_, words), result in zip(sentences, results):
        if isinstance(result, Synthesis):
            try:
                check_timings(result.words, words, result.duration)
            except TimingError as error:
                result = error
        checked.append(result)
    return checked


# --- espeak-ng -------------------------------------------------------------------------------------

class _EspeakEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
                ("text_position", ctypes.c_int), ("length", ctypes.c_int),
                ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_EVENT_WORD, _EVENT_END, _EVENT_MSG_TERMINATED, _EVENT_PHONEME = 1, 5, 6, 7
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                   ctypes.POINTER(_EspeakEvent))


def _espeak_library_path() -> str | None:
    """Full path of libespeak-ng.so.1 (ctypes.util.find_library gives only the soname)."""
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout \
        if shutil.which("ldconfig") else ""
    for line in listing.splitlines():
        if "libespeak-ng.so" in line and "=>" in line:
            return line.split("=>")[-1].strip()
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                   "/usr/local/lib"):
        found = sorted(Path(folder).glob("libespeak-ng.so*"))
        if found:
            return str(found[0])
    return None


class _Espeak:
    """libespeak-ng in synchronous mode.

    The library keeps a running pitch-flutter phase in global state, so the same sentence comes out
    a few samples different depending on what was spoken before. A private copy of the library
    (`private=True`) starts from the initial state: what it speaks depends only on its own calls
    (and on libc's rand(), which speak() reseeds).
    """

    def __init__(self, private: bool = False) -> None:
        name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
        path = _espeak_library_path() if private else None
        if path:
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / Path(path).name
                shutil.copyfile(path, copy)
                self.lib = ctypes.CDLL(str(copy))  # a new file name: a new instance with its own state
        else:
            self.lib = ctypes.CDLL(name)
        # AUDIO_OUTPUT_SYNCHRONOUS, default buffer, default data path, phoneme events on
        rate = self.lib.espeak_Initialize(2, 0, None, 1)
        if rate != ESPEAK_SAMPLE_RATE:
            raise RuntimeError(f"espeak_Initialize returned {rate}, expected {ESPEAK_SAMPLE_RATE}")
        self.chunks: list[np.ndarray] = []
        self.events: list[tuple[int, int, int, bytes]] = []
        self._callback = _SYNTH_CALLBACK(self._on_synth)  # keep a reference: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        path = ctypes.c_char_p()
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.lib.espeak_Info(ctypes.byref(path))
        self.data_path = Path(path.value.decode()) if path.value else None
        self._counts: dict[tuple[str, str], int] = {}

    def _on_synth(self, wav, n_samples, events) -> int:
        if wav and n_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        i = 0
        while events[i].type != 0:  # espeakEVENT_LIST_TERMINATED
            e = events[i]
            self.events.append((e.type, e.text_position, e.audio_position, bytes(e.id).rstrip(b"\0")))
            i += 1
        return 0

    def variant_exists(self, variant: str) -> bool:
        return self.data_path is None or (self.data_path / "voices" / "!v" / variant).is_file()

    def phoneme_count(self, voice: str, word: str) -> int:
        """How many phonemes espeak speaks for a word read alone (cached per accent)."""
        key = (voice.partition("+")[0], word.lower())
        if key not in self._counts:
            _, events = self.speak(voice, word)
            self._counts[key] = sum(1 for kind, _, _, name in events
                                    if kind == _EVENT_PHONEME and not name.startswith(b"_"))
        return self._counts[key]

    def speak(self, voice: str, text: str) -> tuple[np.ndarray, list[tuple[int, int, int, bytes]]]:
        language, _, variant = voice.partition("+")
        if variant and not self.variant_exists(variant):
            raise ValueError(f"espeak-ng has no voice variant {variant!r}")
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng rejected voice {voice!r}")
        self.chunks, self.events = [], []
        _LIBC.srand(0)  # espeak draws noise (breath, roughness) from libc's rand(): same state every time
        data = text.encode("utf-8")
        # position 0, POS_CHARACTER, no end, espeakCHARS_UTF8
        status = self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 1, None, None)
        self.lib.espeak_Synchronize()
        if status != 0:
            raise RuntimeError(f"espeak_Synth failed with status {status}")
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)
        return audio.astype(np.float32) / 32768.0, self.events


_ESPEAK: _Espeak | None = None
_LIBC = ctypes.CDLL(None)


def _espeak_engine() -> _Espeak:
    global _ESPEAK  # libespeak-ng is a process-wide singleton: one engine at a time
    if _ESPEAK is None:
        _ESPEAK = _Espeak(private=True)
    return _ESPEAK


def reset_espeak() -> None:
    """Start espeak from its initial state, so what follows does not depend on what came before.

    Each reset loads one more copy of the library (~1.5 MB that stays mapped): call it once per
    batch of sentences, not per sentence.
    """
    global _ESPEAK
    _ESPEAK = _Espeak(private=True)


def espeak_variant_exists(variant: str) -> bool:
    return _espeak_engine().variant_exists(variant)


def _espeak(voice: str, text: str, words: tuple[str, ...]) -> Synthesis:
    engine = _espeak_engine()
    audio22, events = engine.speak(voice, text)
    audio = resample_poly(audio22, SAMPLE_RATE // 50, ESPEAK_SAMPLE_RATE // 50).astype(np.float32)
    duration = len(audio) / SAMPLE_RATE
    groups = _espeak_word_groups(events, _char_spans(text, words))
    if not groups or groups[0].first != 0:
        raise TimingError(f"espeak gave no event for the first word: {text!r}")
    timings: list[WordTiming] = []
    for g, following in zip(groups, groups[1:] + [None]):
        last = following.first - 1 if following else len(words) - 1
        end = min(g.end if g.end is not None else duration, duration)
        if last == g.first:
            timings.append(WordTiming(words[g.first], g.start, end))
            continue
        # espeak reads some pairs ("of the", "to be") as one dictionary entry with one WORD event:
        # split the entry's phonemes by the phoneme counts of the words read alone.
        if len(g.phonemes) <= last - g.first:
            raise TimingError(f"espeak gave too few phonemes to split {words[g.first:last + 1]}: {text!r}")
        counts = [engine.phoneme_count(voice, w) for w in words[g.first:last + 1]]
        splits = _split_points(counts, len(g.phonemes))
        starts = [g.start] + [g.phonemes[min(k, len(g.phonemes) - 1)] for k in splits]
        bounds = starts + [end]
        for j, word in enumerate(words[g.first:last + 1]):
            timings.append(WordTiming(word, bounds[j], bounds[j + 1]))
    return Synthesis(audio, timings)


@dataclass
class _WordGroup:
    first: int  # index of the word the WORD event points at
    start: float  # s
    phonemes: list[float]  # start time of each spoken (non-pause) phoneme, s
    end: float | None = None  # s: first pause or next word


def _char_spans(text: str, words: tuple[str, ...]) -> list[tuple[int, int]]:
    """1-based [start, end) character span of each word (espeak's text_position is 1-based)."""
    spans, position = [], 0
    for word in words:
        position = text.find(word, position)
        if position < 0:
            raise TimingError(f"word {word!r} is not in the text {text!r}")
        spans.append((position + 1, position + 1 + len(word)))
        position += len(word)
    return spans


def _espeak_word_groups(events, spans: list[tuple[int, int]]) -> list[_WordGroup]:
    groups: list[_WordGroup] = []
    for kind, text_position, ms, name in events:
        t = ms / 1000.0
        current = groups[-1] if groups else None
        if kind == _EVENT_WORD:
            index = next((i for i, (a, b) in enumerate(spans) if a <= text_position < b), None)
            if index is None or (current and index <= current.first):
                continue  # an event inside a word already started
            if current and current.end is None:
                current.end = t
            groups.append(_WordGroup(index, t, []))
        elif current is None or current.end is not None:
            continue
        elif kind == _EVENT_PHONEME and not name.startswith(b"_"):
            current.phonemes.append(t)
        elif (kind == _EVENT_PHONEME and current.phonemes) or kind in (_EVENT_END, _EVENT_MSG_TERMINATED):
            current.end = t  # a pause after the word's phonemes, or the end of the clause
    return groups


def _split_points(counts: list[int], n_phonemes: int) -> list[int]:
    """Phoneme index where each word after the first starts, scaled when the counts disagree."""
    total = sum(counts)
    cumulative = np.cumsum(counts)[:-1]
    if total != n_phonemes and total > 0:
        cumulative = np.round(cumulative * n_phonemes / total).astype(int)
    return [int(k) for k in cumulative]


# --- flite -----------------------------------------------------------------------------------------

def _run(command: list[str], timeout: float = 60) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({done.returncode}): {done.stderr.strip()[:300]}")
    return done.stdout


def _flite(voice: str, text: str, words: tuple[str, ...]) -> Synthesis:
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = Path(tmp) / "out.wav"
        segments = _run(["flite", "-voice", voice, "-psdur", "-t", text, "-o", str(wav_path)]).split()
        audio = read_mono(wav_path)
    # Reading the words as separate sentences puts a pause between them, which splits the phones.
    per_word = _run(["flite", "-voice", voice, "-ps", "-t", ". ".join(words) + ".", "-o", "none"])
    groups = [g.split() for g in re.split(r"\bpau\b", per_word) if g.split()]
    if len(groups) != len(words):
        raise TimingError(f"flite split {len(groups)} phone groups for {len(words)} words: {text!r}")
    phones = [(name, float(end)) for name, _, end in (s.rpartition(":") for s in segments)]
    timings, previous_end, i = [], 0.0, 0
    spoken = [(k, p) for k, p in enumerate(phones) if p[0] != "pau"]
    if len(spoken) != sum(len(g) for g in groups):
        raise TimingError(f"flite read {len(spoken)} phones, the words alone "
                          f"{sum(map(len, groups))}: {text!r}")
    for word, group in zip(words, groups):
        first, last = spoken[i][0], spoken[i + len(group) - 1][0]
        start = phones[first - 1][1] if first > 0 else 0.0
        timings.append(WordTiming(word, start, phones[last][1]))
        previous_end = phones[last][1]
        i += len(group)
    duration = len(audio) / SAMPLE_RATE
    timings[-1] = WordTiming(timings[-1].word, timings[-1].start, min(previous_end, duration))
    return Synthesis(audio, timings)


def read_mono(path: Path) -> np.ndarray:
    """float32 mono at the corpus rate (SAMPLE_RATE) from any file soundfile reads."""
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = resample_poly(audio, SAMPLE_RATE, rate).astype(np.float32)
    return audio


# --- festival --------------------------------------------------------------------------------------

_FESTIVAL_SCRIPT = """
(define (sx_token tok)
  (if tok
    (begin
      (format t "T\\t%s" (item.name tok))
      (mapcar (lambda (w) (format t "\\t%f\\t%f" (item.feat w "word_start") (item.feat w "word_end")))
              (item.relation.daughters tok 'Token))
      (format t "\\n")
      (sx_token (item.next tok)))))
(define (sx_synth text wavpath)
  (let ((utt (SynthText text)))
    (utt.save.wave utt wavpath 'riff)
    (format t "BEGIN\\n")
    (sx_token (utt.relation.first utt 'Token))
    (format t "END\\n")))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize_festival_batch(voice: str, sentences: list[tuple[str, tuple[str, ...]]]
                              ) -> list[Synthesis | TimingError]:
    """Speak many sentences in one festival process (its start-up costs ~0.6 s)."""
    with tempfile.TemporaryDirectory() as tmp:
        script = [f"(voice_{voice})", _FESTIVAL_SCRIPT]
        for k, (text, _) in enumerate(sentences):
            script.append(f"(sx_synth {_scheme_string(text)} {_scheme_string(f'{tmp}/{k}.wav')})")
        (Path(tmp) / "run.scm").write_text("\n".join(script) + "\n")
        output = _run(["festival", "-b", f"{tmp}/run.scm"], timeout=60 + 10 * len(sentences))
        if f"voice_{voice}" in output and "unbound variable" in output:
            raise ValueError(f"festival has no voice {voice!r}")
        blocks = re.findall(r"BEGIN\n(.*?)END\n", output, re.DOTALL)
        results: list[Synthesis | TimingError] = []
        for k, (text, words) in enumerate(sentences):
            wav_path = Path(tmp) / f"{k}.wav"
            if k >= len(blocks) or not wav_path.exists():
                results.append(TimingError(f"festival produced nothing for {text!r}"))
                continue
            audio = read_mono(wav_path)
            try:
                results.append(Synthesis(audio, _festival_timings(blocks[k], words)))
            except TimingError as error:
                results.append(error)
    return results


def _festival_timings(block: str, words: tuple[str, ...]) -> list[WordTiming]:
    timings = []
    for line in block.strip().splitlines():
        name, *times = line.split("\t")[1:]
        spans = [(float(a), float(b)) for a, b in zip(times[::2], times[1::2]) if float(b) > float(a)]
        if not spans:  # punctuation-only token
            continue
        timings.append(WordTiming(name, spans[0][0], spans[-1][1]))
    if len(timings) != len(words):
        raise TimingError(f"festival gave {len(timings)} tokens for {len(words)} words: {words}")
    if [t.word.lower() for t in timings] != [w.lower() for w in words]:
        raise TimingError(f"festival tokens {[t.word for t in timings]} differ from {list(words)}")
    return [WordTiming(word, t.start, t.end) for word, t in zip(words, timings)]
