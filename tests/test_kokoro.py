"""The Kokoro-82M source of the corpus builder: phoneme mapping, blends, a tiny build, the filter."""

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from speechx_cli.align import align_words
from speechx_cli.train import corpus, kokoro
from speechx_cli.train.sentences import clean_sentence

SENTENCES = [clean_sentence(t) for t in (
    "The old man walked slowly down the long road.",
    "Every morning she reads the paper before breakfast.",
)]
# One example word per ARPAbet phoneme (the CMU dictionary's own table), plus the flap (butter),
# the syllabic n and glottal stop (button), and r-coloured vowels (her, water).
PHONEME_WORDS = ("odd at hut ought cow hide be cheese dee thee Ed hurt ate fee green he it eat gee key "
                 "lee me knee ping oat toy pee read sea she tea theta hood two vee we yield zee seizure "
                 "butter button her water").split()


@pytest.fixture(scope="module")
def vocabulary():
    return kokoro.vocabulary()


def test_every_english_phoneme_maps_into_kokoros_vocabulary(vocabulary):
    dropped = set()
    for word in PHONEME_WORDS:
        mapped, lost = kokoro.to_kokoro(kokoro._espeak_ipa(word), vocabulary)
        assert mapped and all(c in vocabulary for c in mapped), word
        dropped |= set(lost)
    assert dropped <= kokoro.DROPPED  # only marks Kokoro cannot read are lost
    assert "\u0329" in dropped  # button's syllabic n: the one mark en-us needs and Kokoro lacks
    golden = {"say": "A", "my": "I", "how": "W", "boy": "Y", "go": "O", "judge": "ʤ", "church": "ʧ",
              "butter": "T", "her": "ɜɹ", "water": "əɹ", "green": "ɡ"}
    for word, symbol in golden.items():
        assert symbol in kokoro.to_kokoro(kokoro._espeak_ipa(word), vocabulary)[0], word
    assert kokoro.to_kokoro("ʃˈuːz", vocabulary) == ("ʃˈuz", [])  # no length marks (misaki's US style)


def test_punctuation_survives_clause_by_clause(vocabulary):
    mapped, _ = kokoro.phonemes("Well, I never did. Did you?", vocabulary)
    assert mapped.count(",") == 1 and mapped.count(".") == 1 and mapped.endswith("?")


def test_blends_are_seeded_speakers_with_held_out_ones():
    a, b = kokoro.blend(3), kokoro.blend(3)
    assert a == b and abs(sum(a.weights) - 1) < 1e-9 and len(a.weights) == len(kokoro.STYLES)
    assert kokoro.blend(4).weights != a.weights
    assert kokoro.SPEED_RANGE[0] <= a.speed <= kokoro.SPEED_RANGE[1]
    assert kokoro.parse_blend("b0003") == a
    splits = [kokoro.blend(k).split for k in range(2 * kokoro.DEV_EVERY)]
    assert splits.count("dev") == 2 and kokoro.blend(kokoro.DEV_EVERY - 1).split == "dev"
    with pytest.raises(ValueError):
        kokoro.parse_blend("alice")


def _build(out, voices, monkeypatch):
    monkeypatch.setitem(corpus._SENTENCES, "train", SENTENCES)
    monkeypatch.setitem(corpus._SENTENCES, "dev", SENTENCES)
    monkeypatch.setitem(corpus._VOCABULARY, "train", ["apple", "river", "green"])
    monkeypatch.setitem(corpus._VOCABULARY, "dev", ["apple", "river", "green"])
    config = corpus.CorpusConfig(n_per_speaker=1, seed=0, edit_fraction=1.0, noise=False,
                                 kokoro_speakers=8, kokoro_per_speaker=2)
    stats = [corpus.run_chunk(corpus.ChunkJob(str(out), voice, k, 0, 0, 2, config))
             for k, voice in enumerate(voices)]
    records = [r for part in sorted((out / "parts").glob("*.jsonl")) for r in corpus.read_manifest(part)]
    return records, stats


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    out = tmp_path_factory.mktemp("kokoro")
    try:
        records, stats = _build(out, ["kokoro:b0000", "kokoro:b0007"], monkeypatch)
    finally:
        monkeypatch.undo()
    return out, records, stats


def test_a_tiny_build_gives_16k_utterances_whose_timings_the_aligner_agrees_with(tiny_build):
    out, records, stats = tiny_build
    assert {r["speaker"] for r in records} == {"kokoro:b0000", "kokoro:b0007"}
    assert {r["split"] for r in records if r["speaker"] == "kokoro:b0007"} == {"dev"}
    assert all(s["engine"] == "kokoro" for s in stats)
    for r in records:
        assert set(r["voice"]["styles"]) == set(kokoro.STYLES) and abs(sum(r["voice"]["styles"].values()) - 1) < 1e-3
        assert 0.0 <= r["asr_wer"] <= kokoro.MAX_WER
        for path, words, text in ((r["path"], r["words"], r["text"]),
                                  *([(r["edit"]["path"], r["edit"]["words"], r["edit"]["text"])] if r["edit"] else [])):
            audio, rate = sf.read(out / path, dtype="float32")
            assert rate == 16_000 and abs(len(audio) / rate - (r["duration"] if path == r["path"]
                                                              else r["edit"]["duration"])) < 1e-3
            assert [w["word"] for w in words] == [w.rstrip(",.!?") for w in text.split()]
            again = align_words(audio, rate, [w["word"] for w in words], guess_unknown=True)
            for mine, theirs in zip(words, again):
                assert abs(mine["start"] - theirs.start) <= 0.02 and abs(mine["end"] - theirs.end) <= 0.02
    assert sum(r["edit"] is not None for r in records) >= 2  # the same voice saying the edited sentence


def test_a_rebuild_gives_the_same_audio(tiny_build, tmp_path, monkeypatch):
    out, records, _ = tiny_build
    again, _ = _build(tmp_path, ["kokoro:b0000"], monkeypatch)
    first = [r for r in records if r["speaker"] == "kokoro:b0000"]
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)
    for r in again:
        np.testing.assert_array_equal(sf.read(tmp_path / r["path"])[0], sf.read(out / r["path"])[0])


def test_garbled_utterances_are_dropped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(kokoro, "transcribe", lambda audio, sr: "nothing like the text at all")
    records, stats = _build(tmp_path, ["kokoro:b0001"], monkeypatch)
    assert records == [] and stats[0]["garbled"] == 2 and stats[0]["failed"] == 0


def test_the_builders_help_names_the_kokoro_source():
    result = CliRunner().invoke(corpus.app, ["build", "--help"])
    assert result.exit_code == 0 and "--kokoro-speakers" in result.output and "Kokoro" in result.output
    assert len([v for v in corpus.voice_pool(10) if v.engine == "kokoro"]) == 10
    assert corpus.CorpusConfig(n_per_speaker=5).settings() == {"format": 1, "n_per_speaker": 5, "seed": 0,
                                                               "edit_fraction": 0.3}


def test_the_corpus_report_measures_sources_wer_and_distinctness(tiny_build):
    out, records, _ = tiny_build
    corpus._write_jsonl(out / "manifest.jsonl", records)
    result = CliRunner().invoke(corpus.app, ["report", str(out), "--speakers", "2", "--json", str(out / "r.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "r.json").read_text())
    facts = report["sources"]["kokoro"]
    assert facts["speakers"] == 2 and facts["dev_speakers"] == 1 and facts["utterances"] == len(records)
    assert facts["garbled"] == 0 and facts["synthesis_real_time_factor"] > 0
    assert report["wer"]["kokoro"]["n"] == len(records)
    assert report["wer"]["kokoro"]["median"] == float(np.median([r["asr_wer"] for r in records]))
    voices = report["distinctness"]["kokoro"]
    assert voices["speakers"] == 2 and -1 <= voices["other"][0] <= 1 and 0 < voices["same"][0] <= 1
