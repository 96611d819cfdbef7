import socket
import sys

import pytest

from speechx_cli import text
from speechx_cli.text import PHONEME_TABLE, Word


def test_table_has_no_duplicates_and_fixed_size():
    assert len(set(PHONEME_TABLE)) == len(PHONEME_TABLE)
    assert len(text.ARPABET) == 69
    assert len(PHONEME_TABLE) == 96


def test_table_ids_are_pinned():
    # Golden: these ids are baked into checkpoints; changing one breaks every trained model.
    pinned = {
        "<pad>": 0, "<unk>": 1, " ": 2, ",": 3, ".": 4, "?": 5, "!": 6, ";": 7, ":": 8, "-": 9,
        '"': 10, "AA0": 11, "AA1": 12, "AH0": 17, "UW2": 55, "B": 56, "HH": 62, "ZH": 79, "<r0>": 80,
        "<r15>": 95,
    }
    assert {s: PHONEME_TABLE.index(s) for s in pinned} == pinned
    assert (text.PAD_ID, text.UNK_ID, text.WORD_BOUNDARY_ID) == (0, 1, 2)


def test_hello_world_phoneme_stream():
    assert text.phonemes("Hello, world!") == ["HH", "AH0", "L", "OW1", ",", " ", "W", "ER1", "L", "D", "!"]
    assert text.words("Hello, world!") == [
        Word("hello", ("HH", "AH0", "L", "OW1")),
        Word("world", ("W", "ER1", "L", "D")),
    ]


def test_numbers_are_spelled_out():
    assert text.normalize_words("42") == ["forty", "two"]
    assert text.normalize_words("In 1999 it cost $2.50") == [
        "in", "nineteen", "ninety", "nine", "it", "cost", "two", "dollars", "fifty", "cents",
    ]
    assert text.normalize_words("3.14 and the 21st") == [
        "three", "point", "one", "four", "and", "the", "twenty", "first",
    ]
    assert text.normalize_words("1,000,000") == ["one", "million"]


def test_normalize_words_ignores_case_and_punctuation():
    assert text.normalize_words("The cat, sat.") == text.normalize_words("the cat sat") == ["the", "cat", "sat"]
    assert text.normalize_words("\u201cDon\u2019t\u201d \u2014 STOP!") == ["don't", "stop"]
    assert text.normalize_words("well-known") == ["well", "known"]


def test_contraction_is_one_word():
    (dont,) = text.words("don't")
    assert dont == Word("don't", ("D", "OW1", "N", "T"))


def test_boundaries_separate_words_only():
    stream = text.phonemes('"Wait," she said... "no - stop!"')
    assert stream.count(" ") == len(text.words('"Wait," she said... "no - stop!"')) - 1
    assert stream[0] == '"' and stream[-2:] == ["!", '"']
    assert stream.count(".") == 1  # "..." collapses to one mark


def test_homographs_use_context():
    i, refuse_verb, to, collect, the, refuse_noun = text.words("I refuse to collect the refuse.")
    assert refuse_verb.phonemes == ("R", "IH0", "F", "Y", "UW1", "Z")
    assert refuse_noun.phonemes == ("R", "EH1", "F", "Y", "UW2", "Z")
    assert text.words("I used to")[1].phonemes == ("Y", "UW1", "S", "T")
    assert text.words("it was used")[2].phonemes == ("Y", "UW1", "Z", "D")


def test_oov_word_uses_neural_model():
    (w,) = text.words("zorblaxian")
    g2p = text._g2p()
    assert "zorblaxian" not in g2p.cmu
    assert w.phonemes and w.phonemes[0] == "Z"
    assert all(p in PHONEME_TABLE for p in w.phonemes)
    assert w.phonemes == text._canonical(g2p.predict("zorblaxian"))


def test_fresh_import_is_silent_and_offline(monkeypatch, capfd):
    def no_network(*args, **kwargs):
        raise AssertionError("text front end tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    # Re-run g2p_en's import-time download check and the G2p build from scratch.
    for name in [m for m in sys.modules if m == "g2p_en" or m.startswith("g2p_en.")]:
        monkeypatch.delitem(sys.modules, name)
    text._g2p.cache_clear()
    text._predict.cache_clear()
    try:
        assert text.phonemes("Hello there, zorblaxian 42!")
    finally:
        text._g2p.cache_clear()
        text._predict.cache_clear()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_encode_decode_round_trip():
    ids = text.encode("Hello, world! It's 7 o'clock.")
    assert all(0 <= i < text.NUM_USED_SYMBOLS for i in ids)
    assert text.UNK_ID not in ids
    assert text.decode(ids) == text.phonemes("Hello, world! It's 7 o'clock.")
    assert text.decode([text.PAD_ID, 10_000]) == ["<pad>", "<unk>"]


def test_check_table():
    text.check_table(list(PHONEME_TABLE))
    text.check_table(list(PHONEME_TABLE) + ["NEW"])  # newer checkpoint: extra ids never produced
    text.check_table(list(PHONEME_TABLE[: text.NUM_USED_SYMBOLS]))
    swapped = list(PHONEME_TABLE)
    swapped[11], swapped[12] = swapped[12], swapped[11]
    with pytest.raises(ValueError, match="at id 11"):
        text.check_table(swapped)
    with pytest.raises(ValueError, match="older"):
        text.check_table(list(PHONEME_TABLE[:20]))
