"""Plain English sentences for the synthetic corpus, from Debian's fortune data (offline).

A sentence is kept only when every token is a plain word (letters, one inner apostrophe) after
spelling out small numbers and a few abbreviations, so every synthesizer reads it word for word and
its word timings can be matched back to the text. Sentences are split into train/dev pools by a hash
of their text, so the pools never change with the seed or the amount of data asked for.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

FORTUNE_DIRS = (Path("/usr/share/games/fortunes"),)
# Files full of drawings, code or non-English text give few usable sentences.
SKIP_FORTUNE_FILES = {"ascii-art", "art", "perl", "translate-me", "debian", "linux", "linuxcookie"}
MIN_WORDS, MAX_WORDS = 4, 20
DEV_SENTENCE_FRACTION = 0.05

_ABBREVIATIONS = {
    "Mr.": "Mister", "Mrs.": "Missus", "Dr.": "Doctor", "St.": "Saint", "Mt.": "Mount",
    "Jr.": "Junior", "Sr.": "Senior", "vs.": "versus", "Prof.": "Professor", "Gen.": "General",
}
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_WORD_RE = re.compile(r"^[A-Za-z]+(?:'[A-Za-z]+)?$")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_MAX_NUMBERS_PER_SENTENCE = 2


@dataclass(frozen=True)
class Sentence:
    text: str  # what the synthesizer reads: words, commas, one final . ! or ?
    words: tuple[str, ...]  # the text's words in order, punctuation stripped

    @property
    def split(self) -> str:
        return sentence_split(self.text)


def number_to_words(n: int) -> str:
    """Spell out 0 <= n < 1,000,000 ("one hundred and five" style without "and")."""
    if n < 0 or n >= 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    thousands, rest = divmod(n, 1000)
    return f"{number_to_words(thousands)} thousand" + (f" {number_to_words(rest)}" if rest else "")


def _spell_numbers(text: str) -> str | None:
    numbers = re.findall(r"\d+", text)
    if len(numbers) > _MAX_NUMBERS_PER_SENTENCE:
        return None
    if re.search(r"\d[^\d\s,.!?]|[^\d\s]\d", text):  # 1st, 3D, $5, 10%: not plain numbers
        return None
    return re.sub(r"\d+", lambda m: number_to_words(int(m.group())) if len(m.group()) <= 6 else "#", text)


def clean_sentence(raw: str) -> Sentence | None:
    """Normalise one raw sentence; None when it is not plain English of 4-20 words."""
    text = " ".join(raw.split())
    for abbreviation, full in _ABBREVIATIONS.items():
        text = text.replace(abbreviation, full)
    text = text.replace("\u2019", "'").replace("`", "'")
    text = re.sub(r"(?<=[A-Za-z])-(?=[A-Za-z])", " ", text)  # well-known -> well known
    text = re.sub(r"[\"()\[\]]|''", "", text)
    text = re.sub(r"\s*[;:]\s*", ", ", text)
    text = re.sub(r"\s+-+\s+", ", ", text)
    spelled = _spell_numbers(text)
    if spelled is None:
        return None
    text = spelled.strip(" ,")
    if not text or text[-1] not in ".!?":
        text = text.rstrip(".!?") + "."
    text = re.sub(r"[.!?]+$", lambda m: m.group()[0], text)
    words = []
    for token in text.split():
        word = token.rstrip(",.!?")
        if not _WORD_RE.match(word) or not _plain_word(word) or re.search(r"[.!?]", token[:-1]):
            return None
        words.append(word)
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    text = re.sub(r",+", ",", text)
    text = text[0].upper() + text[1:]
    return Sentence(text=text, words=tuple(token.rstrip(",.!?") for token in text.split()))


def _plain_word(word: str) -> bool:
    letters = word.replace("'", "")
    if sum(c.isupper() for c in letters) > 1:  # acronyms: synthesizers spell them differently
        return False
    return len(letters) > 1 or letters.lower() in {"a", "i"}


def sentence_split(text: str) -> str:
    """'train' or 'dev' for a sentence text, stable across runs and machines."""
    digest = hashlib.sha1(text.lower().encode()).digest()
    return "dev" if int.from_bytes(digest[:4], "big") / 2**32 < DEV_SENTENCE_FRACTION else "train"


def _fortune_entries(path: Path) -> list[str]:
    raw = path.read_bytes().decode("utf-8", errors="ignore")
    raw = re.sub(r".\x08", "", raw)  # overstrike (bold/underline) sequences
    entries = []
    for entry in raw.split("\n%\n"):
        entry = re.split(r"\n\s*--", entry)[0]  # drop the attribution
        if re.search(r"^\s*[A-Za-z ]{1,20}:", entry, re.MULTILINE):  # dialogue scripts
            continue
        entries.append(entry)
    return entries


def load_sentences(dirs: tuple[Path, ...] = FORTUNE_DIRS) -> list[Sentence]:
    """All usable sentences, deduplicated, in a fixed order (sorted by text)."""
    files = sorted(p for d in dirs if d.is_dir() for p in d.iterdir()
                   if p.is_file() and not p.suffix and p.name not in SKIP_FORTUNE_FILES)
    if not files:
        raise FileNotFoundError(
            f"no fortune files under {', '.join(map(str, dirs))}: `apt-get install fortunes fortunes-min`")
    seen: dict[str, Sentence] = {}
    for path in files:
        for entry in _fortune_entries(path):
            for raw in _SENTENCE_END_RE.split(" ".join(entry.split())):
                sentence = clean_sentence(raw)
                if sentence is not None:
                    seen.setdefault(sentence.text.lower(), sentence)
    return [seen[key] for key in sorted(seen)]
