"""SpeechX training examples at waveform level, simulated from the corpus and noise bank.

`Simulator(corpus, options).example(index, seed)` draws everything from a random stream seeded by
(seed, index), so one example is the same on any worker and after a resume: data position is just an
index. Per task (docs/prompts.md, "Training examples"):

    tts         enrollment = other utterance(s) of the speaker (3-10 s), target = the utterance
    ns          source = s + n at a random SNR, target = s
    sr          source = s + n (same construction), target = n
    tse         source = s1 + s2 (another speaker) at a random SIR, enrollment = other s1 utterance
    edit_clean  target = edited utterance E; pre = E[:pre_end], post = E[post_start:], middle masked
    edit_noisy  target = E + noise; pre/post from it; middle = the ORIGINAL sentence's words with the
                same noise stream continuing from the end of pre, so it never equals the target middle
Rooms (train/rooms.py): with probability reverb_probability, ns/sr/tse/edits happen in a room, a real
impulse response of the noise bank (kind "room") or a simulated one. ns/sr/tse hear the reverberant
speech (every talker in the same room) but their speech target stays dry, so denoise also
dereverberates; an edit's whole utterance (pre, middle, post, target) is in the room, so new words
must match it. Noise is added dry, after the room.
Levels: the whole example is scaled by one random gain, and again down if it would clip, so SNR and
SIR stay exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from speechx_cli import audio as audio_io
from speechx_cli.prompts import Task
from speechx_cli.train import rooms

CORPUS_SAMPLE_RATE = 16_000  # Hz, the rate corpus.py writes
PEAK_LIMIT = 0.99


@dataclass(frozen=True)
class SimulationOptions:
    tasks: tuple[Task, ...] = tuple(Task)
    task_weights: tuple[float, ...] | None = None  # None: uniform (the paper's choice)
    snr_db: tuple[float, float] = (-5.0, 20.0)
    sir_db: tuple[float, float] = (-5.0, 5.0)
    gain_db: tuple[float, float] = (-10.0, 3.0)  # random level of the whole example
    text_probability: float = 0.5  # NS/SR/TSE get their transcript this often
    max_seconds: float = 10.0  # target (and mixture) length cap; utterances are cut on word boundaries
    enrollment_seconds: tuple[float, float] = (3.0, 10.0)
    edit_margin_seconds: float = 0.02  # the edited middle reaches this far past the changed words
    reverb_probability: float = 0.3  # ns/sr/tse/edit examples that happen in a room
    real_room_probability: float = 0.5  # of those, the share in a real room (when the bank has rooms)
    rt60_seconds: tuple[float, float] = (0.2, 0.9)  # simulated rooms' reverberation time

    def validate(self) -> None:
        if not self.tasks or (self.task_weights is not None and (
                len(self.task_weights) != len(self.tasks) or min(self.task_weights) < 0
                or sum(self.task_weights) <= 0)):
            raise ValueError("task_weights must be one non-negative weight per task, not all zero")
        if not (0.0 <= self.reverb_probability <= 1.0 and 0.0 <= self.real_room_probability <= 1.0
                and 0.0 < self.rt60_seconds[0]):
            raise ValueError("reverb_probability and real_room_probability must be in [0, 1], rt60 > 0")
        for name in ("snr_db", "sir_db", "gain_db", "enrollment_seconds", "rt60_seconds"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low} > high {high}")
        if not 0.0 <= self.text_probability <= 1.0 or self.max_seconds <= 0 or self.edit_margin_seconds < 0:
            raise ValueError("text_probability must be in [0, 1], max_seconds > 0, margin >= 0")


@dataclass
class Example:
    task: Task
    text: str | None  # the full target transcript (edits: the edited one); None when dropped
    enrollment: np.ndarray | None  # tts, tse
    source: np.ndarray  # acoustic input: mixture (ns/sr/tse), enrollment (tts), the utterance (edits)
    target: np.ndarray  # what the model must output
    pre_end: int | None = None  # edits: target[:pre_end] is the kept prefix (samples)
    post_start: int | None = None  # edits: target[post_start:] is the kept suffix
    middle: np.ndarray | None = None  # edit_noisy: original noisy middle; edit_clean: None (<mask>)
    snr_db: float | None = None
    sir_db: float | None = None
    utterance_id: str = ""
    info: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: str
    text: str
    path: str
    duration: float  # s
    words: tuple[tuple[str, float, float], ...]  # (word, start s, end s)
    edit: dict | None = None

    @staticmethod
    def from_record(record: dict) -> "Utterance":
        words = tuple((w["word"], w["start"], w["end"]) for w in record["words"])
        return Utterance(record["id"], record["speaker"], record["text"], record["path"], record["duration"],
                         words, record.get("edit"))


class Corpus:
    """Utterances and noises of one split; audio read lazily from `root`, the last `cache_size`
    files kept in memory (~0.25 MB per second of audio: 1024 files of 4 s ~ 260 MB per process)."""

    def __init__(self, records: list[dict], noises: list[dict], root: Path, split: str = "train",
                 sample_rate: int = CORPUS_SAMPLE_RATE, cache_size: int = 1024) -> None:
        self.root, self.sample_rate, self.cache_size = Path(root), sample_rate, cache_size
        self._cache: dict[str, np.ndarray] = {}
        self.utterances = [Utterance.from_record(r) for r in records if r["split"] == split]
        self.noises = [n for n in noises if n["split"] == split and n["kind"] != "room"]
        self.rooms = [n for n in noises if n["split"] == split and n["kind"] == "room"]
        if not self.utterances:
            raise ValueError(f"corpus at {root} has no {split} utterances")
        self.by_speaker: dict[str, list[int]] = {}
        for i, u in enumerate(self.utterances):
            self.by_speaker.setdefault(u.speaker, []).append(i)
        self.edited = [i for i, u in enumerate(self.utterances) if u.edit is not None]
        # prepared corpora keep untranscribed audio ("text": ""): only tasks whose text is optional use it
        self.transcribed = [i for i, u in enumerate(self.utterances) if u.text]

    @classmethod
    def load(cls, root: Path, split: str = "train", speakers: str = "", **kwargs) -> "Corpus":
        """The corpus folder's `split`; with `speakers`, only speakers whose name starts with it."""
        root = Path(root)
        rows = [[json.loads(line) for line in (root / name).read_text().splitlines() if line.strip()]
                if (root / name).exists() or name == "manifest.jsonl" else []
                for name in ("manifest.jsonl", "noise.jsonl")]  # no noise bank: no NS/SR/noisy edits
        return cls([r for r in rows[0] if r["speaker"].startswith(speakers)], rows[1], root, split, **kwargs)

    def audio(self, rel_path: str) -> np.ndarray:
        """(N,) float32 at sample_rate; read-only (it is cached): copy before changing it."""
        x = self._cache.get(rel_path)
        if x is None:
            x, _ = audio_io.load(self.root / rel_path, self.sample_rate)
            x.setflags(write=False)
            if len(self._cache) >= self.cache_size:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[rel_path] = x
        return x


# --- waveform helpers ------------------------------------------------------------------------------

def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def ratio_gain(reference: np.ndarray, other: np.ndarray, ratio_db: float) -> float:
    """Gain g such that 10 log10(P(reference) / P(g * other)) == ratio_db (1 if other is silent)."""
    p_other = power(other)
    return float(np.sqrt(power(reference) / (p_other * 10 ** (ratio_db / 10)))) if p_other > 0 else 1.0


def scale_to_ratio(reference: np.ndarray, other: np.ndarray, ratio_db: float) -> np.ndarray:
    return (other * ratio_gain(reference, other, ratio_db)).astype(np.float32)


def loop_to_length(x: np.ndarray, n: int, rng: np.random.Generator, gap: tuple[float, float],
                   sample_rate: int) -> np.ndarray:
    """n samples of x: a random crop if x is long enough, else copies with random gaps."""
    if len(x) >= n:
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start:start + n].copy()
    out = np.zeros(n, np.float32)
    first = x[int(rng.integers(0, len(x))):][:n]  # start inside a copy: no silent lead-in
    out[:len(first)] = first
    position = len(first)
    while position < n:
        position += int(rng.uniform(*gap) * sample_rate)
        take = min(len(x), n - position)
        if take > 0:
            out[position:position + take] = x[:take]
        position += max(take, 0)
    return out


def _cut(words, k: int, duration: float) -> float:
    """Time of the cut before word k: halfway through the pause between words k-1 and k."""
    if k <= 0:
        return 0.0
    if k >= len(words):
        return duration
    return (words[k - 1][2] + words[k][1]) / 2


def word_window(words, duration: float, max_seconds: float, rng: np.random.Generator,
                keep: tuple[float, float] | None = None) -> tuple[int, int, float, float]:
    """Words [i, j) and times [start, end) of a random run of whole words lasting <= max_seconds
    (containing the time range `keep`); the whole utterance when it is short enough (or nothing fits)."""
    n = len(words)
    if duration <= max_seconds:
        return 0, n, 0.0, duration
    if n == 0:  # no word timings (untranscribed audio): any stretch of max_seconds
        start = float(rng.uniform(0.0, duration - max_seconds))
        return 0, 0, start, start + max_seconds
    best: dict[int, int] = {}  # end word -> first start word: only the longest run per end
    for i in range(n):
        j = i
        while j < n and _cut(words, j + 1, duration) - _cut(words, i, duration) <= max_seconds:
            j += 1
        start, end = _cut(words, i, duration), _cut(words, j, duration)
        holds_keep = keep is None or (start <= keep[0] and end >= keep[1])
        if j > i and j not in best and holds_keep:
            best[j] = i
    windows = [(i, j) for j, i in best.items()]
    if not windows:
        return 0, n, 0.0, duration
    i, j = windows[int(rng.integers(len(windows)))]
    return i, j, _cut(words, i, duration), _cut(words, j, duration)


def words_text(text: str, words, i: int, j: int) -> str:
    """Transcript of words [i, j): the text's own tokens (with punctuation) when they line up."""
    if (i, j) == (0, len(words)):
        return text
    tokens = text.split()
    piece = " ".join(tokens[i:j]) if len(tokens) == len(words) else " ".join(w[0] for w in words[i:j])
    return piece[:1].upper() + piece[1:]


def span_bounds(words, span, margin: float, duration: float) -> tuple[float, float]:
    """Times (s) around words [a, b) widened by `margin`; for an empty span, the pause at a."""
    a, b = span
    n = len(words)
    if b > a:
        left, right = words[a][1], words[b - 1][2]
    else:
        left = words[a - 1][2] if a > 0 else 0.0
        right = words[a][1] if a < n else duration
        left, right = min(left, right), max(left, right)
    return max(0.0, left - margin), min(duration, right + margin)


class Simulator:
    def __init__(self, corpus: Corpus, options: SimulationOptions = SimulationOptions()) -> None:
        options.validate()
        self.corpus, self.options = corpus, options
        self.sr = corpus.sample_rate
        weights = np.asarray(options.task_weights or [1.0] * len(options.tasks), dtype=np.float64)
        if not corpus.edited:  # no edit pairs: editing tasks cannot be drawn
            weights = weights * [t not in (Task.EDIT_CLEAN, Task.EDIT_NOISY) for t in options.tasks]
        if not corpus.noises:
            weights = weights * [t not in (Task.NS, Task.SR, Task.EDIT_NOISY) for t in options.tasks]
        if weights.sum() <= 0:
            raise ValueError("none of the chosen tasks can be simulated from this corpus")
        self.task_p = weights / weights.sum()

    def example(self, index: int, seed: int = 0, task: Task | None = None) -> Example:
        """The example at `index` of the stream `seed` (same inputs, same example)."""
        rng = np.random.default_rng([seed, index])
        if task is None:
            task = self.options.tasks[int(rng.choice(len(self.options.tasks), p=self.task_p))]
        build = {Task.TTS: self._tts, Task.NS: self._ns_sr, Task.SR: self._ns_sr, Task.TSE: self._tse,
                 Task.EDIT_CLEAN: self._edit, Task.EDIT_NOISY: self._edit}[Task(task)]
        example = build(Task(task), rng)
        return self._level(example, rng)

    # --- pieces ---

    def _utterance(self, rng: np.random.Generator, pool: list[int] | None = None) -> Utterance:
        pool = pool if pool is not None else range(len(self.corpus.utterances))
        return self.corpus.utterances[pool[int(rng.integers(len(pool)))]]

    def _cropped(self, u: Utterance, rng: np.random.Generator, max_seconds: float | None = None
                 ) -> tuple[np.ndarray, str]:
        """The utterance's audio and transcript, cut to a run of whole words if over max_seconds."""
        x = self.corpus.audio(u.path)
        limit = max_seconds or self.options.max_seconds
        i, j, start, end = word_window(u.words, len(x) / self.sr, limit, rng)
        audio = x[int(round(start * self.sr)):int(round(end * self.sr))].copy()
        whole = (start, end) == (0.0, len(x) / self.sr)
        return audio, words_text(u.text, u.words, i, j) if u.words or whole else ""  # no words: no crop's text

    def _text(self, text: str, rng: np.random.Generator) -> str | None:
        return text if rng.random() < self.options.text_probability and text else None

    def _noise(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if not self.corpus.noises:
            raise ValueError("the corpus has no noise bank (built with --no-noise)")
        for _ in range(10):  # a crop of a short sound can be silent: draw again
            row = self.corpus.noises[int(rng.integers(len(self.corpus.noises)))]
            x = loop_to_length(self.corpus.audio(row["path"]), n, rng, (0.0, 1.0) if row["kind"] == "file"
                               else (0.0, 0.0), self.sr)
            if power(x) > 1e-10:
                return x
        raise ValueError("the noise bank gave only silent segments")

    def _room(self, rng: np.random.Generator, info: dict) -> np.ndarray | None:
        """An impulse response for this example, or None (dry); its name goes into `info`."""
        if rng.random() >= self.options.reverb_probability:
            return None
        if self.corpus.rooms and rng.random() < self.options.real_room_probability:
            row = self.corpus.rooms[int(rng.integers(len(self.corpus.rooms)))]
            info["room"] = row["id"]
            return self.corpus.audio(row["path"])
        info["room"] = "simulated"
        return rooms.simulated_room(rng, self.sr, self.options.rt60_seconds)

    def _enrollment(self, u: Utterance, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        """Other utterances of u's speaker joined until 3 s (at most 10 s, cut on word boundaries)."""
        low, high = self.options.enrollment_seconds
        others = [i for i in self.corpus.by_speaker[u.speaker] if self.corpus.utterances[i].id != u.id]
        if not others:
            raise ValueError(f"speaker {u.speaker} has one utterance: no enrollment possible")
        order = rng.permutation(others)
        pieces, ids, total = [], [], 0
        for i in order:
            other = self.corpus.utterances[int(i)]
            x, _ = self._cropped(other, rng, max(high - total / self.sr, 0.5))
            if pieces and total + len(x) > high * self.sr:
                break
            pieces.append(x)
            ids.append(other.id)
            total += len(x)
            if total >= low * self.sr:
                break
        return np.concatenate(pieces).astype(np.float32), ids

    # --- tasks ---

    def _tts(self, task: Task, rng: np.random.Generator) -> Example:
        if not self.corpus.transcribed:
            raise ValueError("tts needs transcribed utterances; the corpus has none")
        u = self._utterance(rng, self.corpus.transcribed)
        target, text = self._cropped(u, rng)
        enrollment, enrollment_ids = self._enrollment(u, rng)
        return Example(task, text, enrollment, enrollment, target, utterance_id=u.id,
                       info={"enrollment_ids": enrollment_ids})

    def _ns_sr(self, task: Task, rng: np.random.Generator) -> Example:
        u = self._utterance(rng)
        speech, text = self._cropped(u, rng)
        snr = float(rng.uniform(*self.options.snr_db))
        info: dict = {}
        room = self._room(rng, info)
        heard = speech if room is None else rooms.reverberate(speech, room)
        noise = scale_to_ratio(heard, self._noise(len(speech), rng), snr).astype(np.float32)
        target = speech if task == Task.NS else noise  # the speech target is dry
        return Example(task, self._text(text, rng), None, heard + noise, target.copy(), snr_db=snr,
                       utterance_id=u.id, info=info)

    def _tse(self, task: Task, rng: np.random.Generator) -> Example:
        u = self._utterance(rng)
        speakers = sorted(s for s in self.corpus.by_speaker if s != u.speaker)
        if not speakers:
            raise ValueError("target speaker extraction needs at least two speakers")
        speech, text = self._cropped(u, rng)
        other = self._utterance(rng, self.corpus.by_speaker[speakers[int(rng.integers(len(speakers)))]])
        interferer = loop_to_length(self.corpus.audio(other.path), len(speech), rng, (0.1, 0.5), self.sr)
        sir = float(rng.uniform(*self.options.sir_db))
        enrollment, enrollment_ids = self._enrollment(u, rng)
        info = {"interferer": other.id, "enrollment_ids": enrollment_ids}
        room = self._room(rng, info)
        heard = speech if room is None else rooms.reverberate(speech, room)
        if room is not None:  # both talkers in the same room
            interferer = rooms.reverberate(interferer, room)
        interferer = scale_to_ratio(heard, interferer, sir).astype(np.float32)
        return Example(task, self._text(text, rng), enrollment, heard + interferer, speech.copy(),
                       sir_db=sir, utterance_id=u.id, info=info)

    def _edit(self, task: Task, rng: np.random.Generator) -> Example:
        u = self._utterance(rng, self.corpus.edited)
        edit = u.edit
        e_words = tuple((w["word"], w["start"], w["end"]) for w in edit["words"])
        margin = self.options.edit_margin_seconds
        e_left, e_right = span_bounds(e_words, edit["edit_span"], margin, edit["duration"])
        o_left, o_right = span_bounds(u.words, edit["orig_span"], margin, u.duration)
        info = {"kind": edit["kind"], "orig_span": edit["orig_span"], "edit_span": edit["edit_span"]}
        edited = self.corpus.audio(edit["path"])
        original = self.corpus.audio(u.path)
        room = self._room(rng, info)
        if room is not None:  # the whole recording is in the room: the new words must match it
            edited, original = rooms.reverberate(edited, room), rooms.reverberate(original, room)
        i, j, start, end = word_window(e_words, len(edited) / self.sr, self.options.max_seconds, rng,
                                       keep=(e_left, e_right))
        a = int(round(start * self.sr))
        target = edited[a:int(round(end * self.sr))].copy()
        pre_end = min(len(target), max(0, int(round(e_left * self.sr)) - a))
        post_start = max(pre_end, min(len(target), int(round(e_right * self.sr)) - a))
        text = words_text(edit["text"], e_words, i, j)
        if task == Task.EDIT_CLEAN:
            return Example(task, text, None, target.copy(), target, pre_end, post_start, None,
                           utterance_id=u.id, info=info)
        # One noise stream: stream[:len(target)] lies under E, and O's middle gets the samples that
        # follow the end of pre, so the background continues across pre -> original middle.
        o_a, o_b = int(round(o_left * self.sr)), int(round(o_right * self.sr))
        o_middle = original[o_a:o_b]
        stream = self._noise(len(target) + len(o_middle), rng)
        snr = float(rng.uniform(*self.options.snr_db))
        stream = stream * ratio_gain(target, stream[:len(target)], snr)
        noisy = (target + stream[:len(target)]).astype(np.float32)
        middle = (o_middle + stream[pre_end:pre_end + len(o_middle)]).astype(np.float32)
        return Example(task, text, None, noisy.copy(), noisy, pre_end, post_start, middle, snr_db=snr,
                       utterance_id=u.id, info=info)

    def _level(self, example: Example, rng: np.random.Generator) -> Example:
        gain = 10 ** (rng.uniform(*self.options.gain_db) / 20)
        arrays = [a for a in (example.source, example.target, example.middle) if a is not None]
        peak = max(float(np.abs(a).max()) if len(a) else 0.0 for a in arrays)
        gain = min(gain, PEAK_LIMIT / peak) if peak > 0 else gain
        example.info["gain"] = gain
        example.source = (example.source * gain).astype(np.float32)
        example.target = (example.target * gain).astype(np.float32)
        if example.middle is not None:
            example.middle = (example.middle * gain).astype(np.float32)
        if example.enrollment is not None:
            peak = float(np.abs(example.enrollment).max())
            enrollment_gain = min(gain, PEAK_LIMIT / max(peak, 1e-9))
            example.enrollment = (example.enrollment * enrollment_gain).astype(np.float32)
        return example
