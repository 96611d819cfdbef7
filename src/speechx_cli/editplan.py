"""Word-level editing: from (audio, transcript, edited text) to time spans for the edit task.

transcript + edited text -> `diff_words` (replace / insert / delete operations on normalised words)
audio + transcript -> pocketsphinx forced alignment (align.py) -> `check_alignment`
operations + word times -> `edit_span` (seconds, with margins) -> `EditPlan`.

The edit task takes one span and the full edited transcript. Several edits are run from the last
to the first on the progressively edited audio: an edit only changes audio from its span on, so
the spans to its left keep their times. Each step's text is the transcript as it stands after
that step: original words before the edit, edited words from it on. `word_steps` turns a plan into
the `EditStep`s that pipeline.edit_steps runs (`span_step`: one step for a span given in seconds).
Nothing here touches files or the model.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

import numpy as np

from . import text as T
from .align import AlignedWord, AlignmentError, align_words

MIN_MARGIN = 0.02  # s: an edit reaches at least this far past its words (co-articulation)
MAX_MARGIN = 0.15  # s: and takes at most this much of a pause next to them
INSERT_HALF_WIDTH = 0.04  # s: room on each side of an insertion point for the new words
NEIGHBOUR_SHARE = 0.25  # an edit may reach into at most this share of a kept neighbour word
MIN_KEPT_SECONDS = 0.1  # two edits closer than this become one (no sliver of kept audio between)
PAUSE_SPEECH_SECONDS = 0.2  # this much speech inside an aligned pause means missing words
WORD_SECONDS = 0.3  # a word longer than WORD_SECONDS + PHONE_SECONDS per phoneme hides others
PHONE_SECONDS = 0.15  # (1.5x the slowest seen on synthetic voices, sentence-final words included)
SPEECH_RANGE_DB = 25.0  # frames this far below the speech level never count as speech
ENERGY_FRAME_SECONDS = 0.01
_PUNCT = frozenset(T.PUNCTUATION)


class Op(str, Enum):
    REPLACE = "replace"
    INSERT = "insert"
    DELETE = "delete"


@dataclass(frozen=True)
class WordEdit:
    """One operation: original words [i1, i2) become edited words [j1, j2)."""

    op: Op
    old: tuple[int, int]
    new: tuple[int, int]
    old_words: tuple[str, ...]
    new_words: tuple[str, ...]

    def describe(self) -> str:
        old, new = " ".join(self.old_words), " ".join(self.new_words)
        if self.op is Op.INSERT:
            return f'insert "{new}"'
        if self.op is Op.DELETE:
            return f'delete "{old}"'
        return f'replace "{old}" -> "{new}"'


@dataclass(frozen=True)
class PlannedEdit:
    edit: WordEdit
    span: tuple[float, float]  # s of the input audio to regenerate
    text: str  # full transcript after this edit (and every edit to its right) is applied


@dataclass(frozen=True)
class EditPlan:
    words: tuple[AlignedWord, ...]  # the original transcript, aligned to the input
    duration: float  # s, of the input
    edits: tuple[PlannedEdit, ...]  # left to right; run them right to left


# ---------------------------------------------------------------------------------------------
# Text: word diff and the transcript after each step
# ---------------------------------------------------------------------------------------------


def diff_words(original: str, edited: str) -> list[WordEdit]:
    """Replace / insert / delete operations turning the original words into the edited ones.

    Words are compared after normalisation (case, punctuation and number spelling are not edits).
    Raises ValueError when there is nothing to edit or the texts share no word.
    """
    old, new = T.normalize_words(original), T.normalize_words(edited)
    if not old:
        raise ValueError("the transcript has no words")
    if not new:
        raise ValueError("--text has no words")
    if old == new:
        raise ValueError("nothing to edit: --text says the same words as the transcript")
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    if not any(size for _, _, size in matcher.get_matching_blocks()):
        raise ValueError("--text shares no word with the transcript, so nothing would be kept "
                         "(to say something new, use `speechx tts`)")
    ops = {"replace": Op.REPLACE, "insert": Op.INSERT, "delete": Op.DELETE}
    return [WordEdit(ops[tag], (i1, i2), (j1, j2), tuple(old[i1:i2]), tuple(new[j1:j2]))
            for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal"]


def _cut_after_word(tokens: list[str], n_words: int) -> int:
    """Token index just past the n-th word (0 for n = 0): punctuation after it is left behind."""
    if n_words == 0:
        return 0
    seen = 0
    for k, tok in enumerate(tokens):
        if tok not in _PUNCT:
            seen += 1
            if seen == n_words:
                return k + 1
    raise ValueError(f"text has fewer than {n_words} words")


def step_text(original: str, edited: str, edit: WordEdit) -> str:
    """The transcript once `edit` and everything right of it is done: original words before the
    edit, edited words (with their punctuation) from it on."""
    old_tokens, new_tokens = T.tokens(original), T.tokens(edited)
    head = old_tokens[: _cut_after_word(old_tokens, edit.old[0])]
    tail = new_tokens[_cut_after_word(new_tokens, edit.new[0]):]
    return " ".join(head + tail)


# ---------------------------------------------------------------------------------------------
# Time: alignment check and spans
# ---------------------------------------------------------------------------------------------


def _frame_db(audio: np.ndarray, sr: int) -> np.ndarray:
    hop = max(1, int(ENERGY_FRAME_SECONDS * sr))
    n = len(audio) // hop
    frames = np.asarray(audio[: n * hop], np.float64).reshape(n, hop)  # (F, hop)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def _pauses(words: Sequence[AlignedWord], duration: float) -> list[tuple[float, float]]:
    edges = [0.0] + [t for w in words for t in (w.start, w.end)] + [duration]
    return [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]


def check_alignment(audio: np.ndarray, sr: int, words: Sequence[AlignedWord]) -> None:
    """Raise ValueError when the alignment shows the transcript leaves words out.

    The aligner does not fail on a transcript missing words: it puts the unnamed speech in a
    pause or stretches a word over it. So: no pause may hold PAUSE_SPEECH_SECONDS of speech
    (frames louder than halfway between the noise floor and the speech level, and within
    SPEECH_RANGE_DB of it: breaths stay below), and no word may last longer than WORD_SECONDS +
    PHONE_SECONDS per phoneme.
    """
    db = _frame_db(audio, sr)
    if len(db) == 0:
        raise ValueError("the input is too short to align")
    floor, level = np.percentile(db, 10), np.percentile(db, 90)
    loud = db > max((floor + level) / 2, level - SPEECH_RANGE_DB)
    duration = len(audio) / sr
    least = int(round(PAUSE_SPEECH_SECONDS / ENERGY_FRAME_SECONDS))
    for a, b in _pauses(words, duration):
        if np.count_nonzero(loud[int(a / ENERGY_FRAME_SECONDS): int(b / ENERGY_FRAME_SECONDS)]) >= least:
            raise ValueError(f"the transcript does not match the audio: speech at {a:.2f}-{b:.2f} s "
                             "has no words in it (give the full transcript, or use --span)")
    for w in words:
        if w.phones and w.end - w.start > WORD_SECONDS + PHONE_SECONDS * w.phones:
            raise ValueError(f'the transcript does not match the audio: "{w.word}" would last '
                             f"{w.end - w.start:.2f} s (give the full transcript, or use --span)")


def _reach(gap: float, neighbour: AlignedWord | None) -> float:
    """How far an edit extends past its words on one side: half the pause (at most MAX_MARGIN),
    at least MIN_MARGIN, and never more than NEIGHBOUR_SHARE of the kept word beyond the pause."""
    reach = max(min(gap / 2, MAX_MARGIN), MIN_MARGIN)
    if neighbour is None:
        return min(reach, gap)  # the file's edge
    return min(reach, gap + NEIGHBOUR_SHARE * (neighbour.end - neighbour.start))


def edit_span(words: Sequence[AlignedWord], edit: WordEdit, duration: float) -> tuple[float, float]:
    """Seconds of the input an edit regenerates: its words with margins, clamped to the audio.

    An insertion gets a span around the middle of the pause between its neighbours (the file's
    edges count as neighbours): half the pause each side, at most MAX_MARGIN, at least
    INSERT_HALF_WIDTH (reaching into the neighbour words when they abut).
    """
    i1, i2 = edit.old
    before = words[i1 - 1] if i1 > 0 else None
    after = words[i2] if i2 < len(words) else None
    left_edge = before.end if before else 0.0
    right_edge = after.start if after else duration
    if edit.op is Op.INSERT:
        middle = (left_edge + right_edge) / 2
        half = max(INSERT_HALF_WIDTH, min((right_edge - left_edge) / 2, MAX_MARGIN))
        lowest = left_edge - NEIGHBOUR_SHARE * (before.end - before.start) if before else 0.0
        highest = right_edge + NEIGHBOUR_SHARE * (after.end - after.start) if after else duration
        start, end = max(middle - half, lowest), min(middle + half, highest)
    else:
        start = words[i1].start - _reach(words[i1].start - left_edge, before)
        end = words[i2 - 1].end + _reach(right_edge - words[i2 - 1].end, after)
    return max(0.0, start), min(duration, end)


def _merge(a: PlannedEdit, b: PlannedEdit, old_words: Sequence[str], new_words: Sequence[str]) -> PlannedEdit:
    """One replace covering two edits and the few kept words between them."""
    (i1, _), (_, i2) = a.edit.old, b.edit.old
    (j1, _), (_, j2) = a.edit.new, b.edit.new
    edit = WordEdit(Op.REPLACE, (i1, i2), (j1, j2), tuple(old_words[i1:i2]), tuple(new_words[j1:j2]))
    return PlannedEdit(edit, (a.span[0], b.span[1]), a.text)


def plan(audio: np.ndarray, sr: int, transcript: str, edited: str) -> EditPlan:
    """Diff the texts, align the transcript to `audio` and give every edit its span and text."""
    edits = diff_words(transcript, edited)
    old_words, new_words = T.normalize_words(transcript), T.normalize_words(edited)
    duration = len(audio) / sr
    try:
        words = align_words(audio, sr, old_words, guess_unknown=True)
    except AlignmentError as e:
        raise ValueError(f"the transcript does not match the audio ({e}): check it, or use --span") from None
    check_alignment(audio, sr, words)
    planned: list[PlannedEdit] = []
    for edit in edits:
        step = PlannedEdit(edit, edit_span(words, edit, duration), "")
        if planned and step.span[0] - planned[-1].span[1] < MIN_KEPT_SECONDS:
            step = _merge(planned.pop(), step, old_words, new_words)
        planned.append(step)
    planned = [replace(p, text=step_text(transcript, edited, p.edit)) for p in planned]
    return EditPlan(tuple(words), duration, tuple(planned))


# ---------------------------------------------------------------------------------------------
# Steps: what pipeline.edit_steps runs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditStep:
    """One run of the edit task: regenerate `span` so that the recording says `text`."""

    span: tuple[float, float]  # s of the audio as it stands when this step runs
    text: str  # the full transcript after this step
    label: str  # what the step changes, for the user


SPAN_SLACK_SECONDS = 0.01  # a span may end this far past the audio (rounding of a typed end time)


def span_step(span: tuple[float, float], duration: float, text: str) -> EditStep:
    """The one step that replaces `span` (s) of audio `duration` s long; `text`: the full edited transcript."""
    start, end = span
    if not 0 <= start < end:
        raise ValueError(f"--span {start:g}:{end:g}: need 0 <= START < END")
    if start >= duration or end > duration + SPAN_SLACK_SECONDS:
        raise ValueError(f"--span {start:g}:{end:g}: goes beyond the audio ({duration:.2f} s long)")
    return EditStep((start, min(end, duration)), text, "replace the span")


def word_steps(audio: np.ndarray, sr: int, transcript: str, edited: str) -> list[EditStep]:
    """The steps of a word-level edit, left to right: one per changed group of words (see `plan`)."""
    return [EditStep(e.span, e.text, e.edit.describe()) for e in plan(audio, sr, transcript, edited).edits]


def describe_steps(steps: Sequence[EditStep]) -> list[str]:
    """One numbered line per step: what it changes and its span, e.g. '1. replace "cat" -> "dog"  0.42-0.80 s'."""
    width = max(len(s.label) for s in steps)
    return [f"{k}. {s.label:{width}}  {s.span[0]:.2f}-{s.span[1]:.2f} s" for k, s in enumerate(steps, 1)]
