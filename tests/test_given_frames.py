"""The pipeline's given frames (speechfree.py: speech-free, noise-free, target-alone, target-silent) and band shares
(target-share): which frames each kind gives the prompt, and how a share weighs in the mask."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from speechx_cli import mask as M
from speechx_cli import pipeline as PL
from speechx_cli import prompts as P
from speechx_cli import speechfree as S
from speechx_cli.detector import DetectorConfig, FrameDetector
from speechx_cli.engine import DecodingOptions
from speechx_cli.mask import Resynth
from speechx_cli.prompts import Task

from .conftest import SR, tone
from .test_pipeline import sx  # noqa: F401  (the tiny checkpoint, loaded once)


def test_speech_free_frames_are_those_whose_speech_estimate_is_far_under_the_input():
    """Per codec frame: the mean energy of the estimates against the source's; a silent source frame never counts."""
    hop = 4
    source = np.repeat([1.0, 1.0, 0.0, 1.0, 1.0], hop).astype(np.float32)
    speech = [np.repeat([1.0, 0.1, 0.0, 0.45, 0.1], hop), np.repeat([1.0, 0.1, 0.0, 0.45, 0.0], hop)]
    # mean energies 1, 0.01, 0, 0.2, 0.005: 0, 20, -, 7, 23 dB under the source; then a source that ends early
    np.testing.assert_allclose(S.frame_energy(source, hop, 6), [1, 1, 0, 1, 1, 0])
    assert S.speech_free(source, speech, hop, 5, 10.0).tolist() == [False, True, False, False, True]
    assert S.speech_free(source, speech, hop, 5, 5.0).tolist() == [False, True, False, True, True]
    assert S.speech_free(source[:16], speech, hop, 5, 5.0).tolist() == [False, True, False, True, False]


def test_remove_speech_feeds_its_input_where_its_denoise_draws_find_no_speech(sx):
    """remove-speech == its window's denoise draws, then its own draws with the input's codes given in the frames
    where those draws are DB under the input, under the task's mask; off turns it off."""
    x = tone(1.3, seed=5)
    opts = DecodingOptions(temperature=1.0, seed=2)
    row = PL.window_row(sx, 0, Task.SR, x, None, None)
    mix, hop, frames = row.source_codes, sx.codec.hop_length, len(row.source_codes)
    speech = [PL.to_audio(sx, c) for c in PL.generate(sx.ar, sx.nar, [P.ns(mix, sx.config.codebook_size)] * 2,
                                                      opts, sx.codec.frame_rate)]
    under = 10 * np.log10(S.frame_energy(x, hop, frames) / np.mean([S.frame_energy(s, hop, frames) for s in speech], 0))
    db = float(np.median(under))  # a threshold that picks about half of this untrained model's frames
    free = S.speech_free(x, speech, hop, frames, db)
    assert 0 < int(free.sum()) < frames
    settings = PL.TASK_MASKS[Task.SR]
    rendered = PL.to_audio(sx, mix)[: len(x)]

    def masked(prompt):
        codes = PL.generate(sx.ar, sx.nar, [prompt] * 2, opts, sx.codec.frame_rate)
        return codes, M.apply(x, [PL.to_audio(sx, c)[: len(x)] for c in codes], SR, settings, rendered)
    codes, expected = masked(replace(row.prompt, prefix=mix, given=free))
    assert all(torch.equal(c[free], mix[free]) for c in codes)
    got = PL.run(sx, [PL.Request(Task.SR, audio=x)], opts,
                 PL.WindowOptions(draws=2, speech_free=S.GivenFrames("denoise", db)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    off = PL.run(sx, [PL.Request(Task.SR, audio=x)], opts, PL.WindowOptions(draws=2))[0]
    plain, unforced = masked(row.prompt)
    np.testing.assert_allclose(off, unforced, atol=1e-6)
    assert not all(torch.equal(a, b) for a, b in zip(codes, plain))
    # the checkpoint's detector instead: its frames given, nothing generated before
    torch.manual_seed(0)
    detector = FrameDetector(DetectorConfig(n_mels=16, channels=8, layers=2, hidden=8))
    p = float(torch.sigmoid(detector(torch.from_numpy(x)[None], frames)).median())
    free = detector.pick(x, frames, p)
    assert 0 < int(free.sum()) < frames
    codes, expected = masked(replace(row.prompt, prefix=mix, given=free))
    got = PL.run(replace(sx, detectors={"sr": detector}), [PL.Request(Task.SR, audio=x)], opts,
                 PL.WindowOptions(draws=2, passes=1, speech_free=S.GivenFrames("detector", p)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # auto, the default: the detector (at its own threshold) where the checkpoint has one; off (above) where not
    detector.cfg = replace(detector.cfg, threshold=p)
    auto = PL.run(replace(sx, detectors={"sr": detector}), [PL.Request(Task.SR, audio=x)], opts,
                  PL.WindowOptions(draws=2, passes=1))[0]
    np.testing.assert_allclose(auto, expected, atol=1e-6)
    with pytest.raises(ValueError, match="no speech-free detector"):
        PL.run(sx, [PL.Request(Task.SR, audio=x)], opts, PL.WindowOptions(speech_free=S.GivenFrames("detector")))


def _capture_prompts(monkeypatch) -> list:
    """Every prompt the pipeline hands the engine from now on (the engine still generates)."""
    prompts, real = [], PL.generate

    def seen(ar, nar, batch, *args, **kwargs):
        prompts.extend(batch)
        return real(ar, nar, batch, *args, **kwargs)
    monkeypatch.setattr(PL, "generate", seen)
    return prompts


def test_speech_free_denoise_draws_serve_as_the_counterpart_and_are_generated_once(sx, monkeypatch):
    """remove-speech with --speech-free denoise and a counterpart mask: the denoise draws that find the
    speech-free frames are the counterpart's draws (the same prompt and seed), not generated a second time."""
    x = tone(1.3, seed=5)
    opts = DecodingOptions(temperature=1.0, seed=2)
    settings = M.MaskOptions(counterpart=True)
    row = PL.window_row(sx, 0, Task.SR, x, None, None, Task.NS)
    mix, hop, frames = row.source_codes, sx.codec.hop_length, len(row.source_codes)

    def wav(codes):
        return [PL.to_audio(sx, c)[: len(x)] for c in codes]
    speech = PL.generate(sx.ar, sx.nar, [row.counterpart] * 2, opts, sx.codec.frame_rate)
    energy = np.mean([S.frame_energy(PL.to_audio(sx, c), hop, frames) for c in speech], 0)
    db = float(np.median(10 * np.log10(S.frame_energy(x, hop, frames) / energy)))
    free = S.speech_free(x, [PL.to_audio(sx, c) for c in speech], hop, frames, db)
    assert 0 < int(free.sum()) < frames
    own = PL.generate(sx.ar, sx.nar, [replace(row.prompt, prefix=mix, given=free)] * 2, opts, sx.codec.frame_rate)
    expected = M.apply(x, wav(own), SR, settings, counterpart=wav(speech))
    prompts = _capture_prompts(monkeypatch)
    got = PL.run(sx, [PL.Request(Task.SR, audio=x)], opts,
                 PL.WindowOptions(draws=2, mask=settings, speech_free=S.GivenFrames("denoise", db)))[0]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    tasks = [q.task for q in prompts]
    assert tasks.count(Task.NS) == 2 and tasks.count(Task.SR) == 2


@pytest.mark.parametrize("spec, parsed", [("off", S.GivenFrames()), ("auto", S.SPEECH_FREE),
                                          ("detector", S.GivenFrames("detector")),
                                          ("detector=0.7", S.GivenFrames("detector", 0.7)),
                                          (" denoise = 12 ", S.GivenFrames("denoise", 12.0))])
def test_speech_free_specs(spec, parsed):
    assert S.GivenFrames.parse(spec) == parsed and S.GivenFrames.parse(str(parsed)) == parsed
    assert S.GivenFrames.parse("denoise").db == S.DENOISE_DB
    assert parsed.resolve(True).mode != "auto" and parsed.resolve(False).mode != "auto"
    assert S.SPEECH_FREE.resolve(True).mode == "detector" and S.SPEECH_FREE.resolve(False).mode == "off"


@pytest.mark.parametrize("spec", ["on", "detector=1.5", "denoise=-1", "denoise=x", "off=3", "auto=0.5", ""])
def test_bad_speech_free_specs_are_refused(spec):
    with pytest.raises(ValueError, match="--speech-free"):
        S.GivenFrames.parse(spec)


@pytest.mark.parametrize("spec", ["denoise", "denoise=10", "on", "detector=0"])
def test_noise_free_takes_no_denoise_draws(spec):
    with pytest.raises(ValueError, match="--noise-free"):
        S.GivenFrames.parse(spec, "ns")
    assert S.GivenFrames.parse("detector=0.6", "ns") == S.GivenFrames("detector", 0.6)


def test_denoise_feeds_its_input_where_its_detector_finds_no_noise(sx, monkeypatch):
    """denoise with the checkpoint's noise-free detector gives the model the input's codes in the frames the
    detector picks (Prompt.given); auto uses it, off, remove-speech's detector and a checkpoint without one
    do not. (This untrained codec decodes every code alike, so the prompts the engine gets are compared.)"""
    x = tone(1.3, seed=5)
    opts = DecodingOptions(temperature=1.0, seed=2)
    row = PL.window_row(sx, 0, Task.NS, x, None, None)
    mix, frames = row.source_codes, len(row.source_codes)
    torch.manual_seed(0)
    detector = FrameDetector(DetectorConfig(n_mels=16, channels=8, layers=2, hidden=8, task="ns"))
    with torch.no_grad():
        p = float(torch.sigmoid(detector(torch.from_numpy(x)[None], frames)).median())
    free = detector.pick(x, frames, p)
    assert 0 < int(free.sum()) < frames
    codes = PL.generate(sx.ar, sx.nar, [replace(row.prompt, prefix=mix, given=free)], opts, sx.codec.frame_rate)[0]
    assert torch.equal(codes[free], mix[free])
    with_ns = replace(sx, detectors={"ns": detector})
    prompts = _capture_prompts(monkeypatch)

    def given(model, **window):
        prompts.clear()
        PL.run(model, [PL.Request(Task.NS, audio=x)], opts, PL.WindowOptions(draws=2, **window))
        assert len(prompts) == 2 and all(q.task is Task.NS for q in prompts)
        return [None if q.given is None else (q.given.tolist(), torch.equal(q.prefix, mix)) for q in prompts]
    assert given(with_ns, noise_free=S.GivenFrames("detector", p)) == [(free.tolist(), True)] * 2
    detector.cfg = replace(detector.cfg, threshold=p)
    assert given(with_ns) == [(free.tolist(), True)] * 2  # auto: the detector at its threshold
    assert given(with_ns, noise_free=S.GivenFrames("off")) == [None, None]
    assert given(sx) == [None, None]
    assert given(replace(sx, detectors={"sr": detector})) == [None, None]  # remove-speech's does not serve denoise
    with pytest.raises(ValueError, match="no noise-free detector"):
        given(sx, noise_free=S.GivenFrames("detector"))


def test_extract_speaker_feeds_the_mixture_where_its_detector_hears_the_target_alone(sx, monkeypatch):
    """extract-speaker with the checkpoint's target-alone detector gives the mixture's codes in the frames the
    detector picks, reading the enrollment (another enrollment, other frames); off and no detector: none."""
    x, voice, other = tone(1.3, seed=5), tone(1.0, freq=150.0, seed=6), tone(1.0, freq=400.0, seed=8)
    opts = DecodingOptions(temperature=1.0, seed=2)
    frames = len(PL.to_codes(sx, x))
    torch.manual_seed(0)
    detector = FrameDetector(DetectorConfig(n_mels=16, channels=8, layers=2, hidden=8, task="tse"))
    torch.nn.init.normal_(detector.film.weight, std=0.5)  # untrained it ignores the enrollment (starts at zero)
    with torch.no_grad():
        p = float(torch.sigmoid(detector(torch.from_numpy(x)[None], frames, torch.from_numpy(voice)[None])).median())
    picked = detector.pick(x, frames, p, voice)
    assert 0 < int(picked.sum()) < frames and not torch.equal(picked, detector.pick(x, frames, p, other))
    with_tse = replace(sx, detectors={"tse": detector})
    prompts = _capture_prompts(monkeypatch)

    def given(model, enrollment=voice, **window):
        prompts.clear()
        PL.run(model, [PL.Request(Task.TSE, audio=x, enrollment=enrollment)], opts,
               PL.WindowOptions(draws=1, **window))
        (q,) = prompts
        return None if q.given is None else (q.given.tolist(), torch.equal(q.prefix, PL.to_codes(sx, x)))
    assert given(with_tse, target_alone=S.GivenFrames("detector", p)) == (picked.tolist(), True)
    assert given(with_tse, other, target_alone=S.GivenFrames("detector", p))[0] != picked.tolist()
    assert given(with_tse, target_alone=S.GivenFrames("off")) is None
    assert given(sx) is None
    with pytest.raises(ValueError, match="no target-alone detector"):
        given(sx, target_alone=S.GivenFrames("detector"))


def test_extract_speaker_gives_silence_where_its_detector_hears_the_target_silent(sx, monkeypatch):
    """With a target-silent detector too, extract-speaker gives the codes of silence in the frames it picks,
    except where the target-alone detector gave the mixture's codes already; off: only the mixture's."""
    x, voice = tone(1.3, seed=5), tone(1.0, freq=150.0, seed=6)
    opts = DecodingOptions(temperature=1.0, seed=2)
    mix = PL.to_codes(sx, x)
    frames = len(mix)
    silence = PL.to_codes(sx, np.zeros(frames * sx.codec.hop_length, dtype=np.float32))
    assert not torch.equal(silence, mix)
    torch.manual_seed(0)
    small = dict(n_mels=16, channels=8, layers=2, hidden=8)
    alone, silent = (FrameDetector(DetectorConfig(**small, task=kind)) for kind in ("tse", "tse_silent"))
    torch.nn.init.normal_(silent.film.weight, std=0.5)

    def median(det):
        with torch.no_grad():
            return float(torch.sigmoid(det(torch.from_numpy(x)[None], frames, torch.from_numpy(voice)[None])).median())
    pa, ps = median(alone), median(silent)
    a, q = alone.pick(x, frames, pa, voice), silent.pick(x, frames, ps, voice)
    assert bool((q & ~a).any()) and bool((q & a).any())  # some frames picked by both: the mixture's codes win
    prompts = _capture_prompts(monkeypatch)

    def given(model, **window):
        prompts.clear()
        PL.run(model, [PL.Request(Task.TSE, audio=x, enrollment=voice)], opts, PL.WindowOptions(draws=1, **window))
        (p,) = prompts
        return p
    both = replace(sx, detectors={"tse": alone, "tse_silent": silent})
    p = given(both, target_alone=S.GivenFrames("detector", pa), target_silent=S.GivenFrames("detector", ps))
    assert p.given.tolist() == (a | q).tolist()
    assert torch.equal(p.prefix[a], mix[a]) and torch.equal(p.prefix[q & ~a], silence[q & ~a])
    p = given(both, target_alone=S.GivenFrames("off"), target_silent=S.GivenFrames("detector", ps))
    assert p.given.tolist() == q.tolist() and torch.equal(p.prefix[q], silence[q])
    p = given(both, target_alone=S.GivenFrames("detector", pa), target_silent=S.GivenFrames("off"))
    assert p.given.tolist() == a.tolist() and torch.equal(p.prefix, mix)
    with pytest.raises(ValueError, match="no target-silent detector"):
        given(replace(sx, detectors={"tse": alone}), target_silent=S.GivenFrames("detector"))


def test_extract_speaker_weighs_its_mask_with_the_target_share(sx, monkeypatch):
    """With a target-share detector the mask is the draw's gains weighed with the detector's shares (mask.Share, the
    flag's weight or 0.5); the prompt gives no frames for it; off (or no such detector) leaves the output as before."""
    x, voice = tone(1.3, seed=5), tone(1.0, freq=150.0, seed=6)
    opts = DecodingOptions(temperature=1.0, seed=2)
    torch.manual_seed(0)
    share = FrameDetector(DetectorConfig(n_mels=16, channels=8, layers=2, hidden=8, task="tse_gain", bands=16))
    with_share = replace(sx, detectors={"tse_gain": share})
    prompts = _capture_prompts(monkeypatch)
    mask = M.MaskOptions(bands=16, exponent=0.05, floor=0.01)  # the tiny model's draw is near silence: cut gently

    def run(model, **window):
        return PL.run(model, [PL.Request(Task.TSE, audio=x, enrollment=voice)], opts,
                      PL.WindowOptions(draws=1, mask=mask, **window))[0]
    plain = run(sx)
    np.testing.assert_array_equal(run(with_share, target_share=S.GivenFrames("off")), plain)
    assert all(p.given is None for p in prompts)
    draw = run(with_share, resynth=Resynth.CODEC)  # the same draw's own waveform
    values = share.probabilities(x, len(PL.to_codes(sx, x)), voice).numpy()
    for flag, weight in ((S.GivenFrames("detector", 0.3), 0.3), (S.GivenFrames("auto"), S.SHARE_WEIGHT["tse_gain"])):
        want = M.apply(x, draw, SR, mask, share=M.Share(values, share.cfg.hop_length, weight))
        np.testing.assert_allclose(run(with_share, target_share=flag), want, atol=1e-6)
    assert np.abs(want - plain).max() > 0.05 * np.abs(plain).max()  # the default weight moves the output
    with pytest.raises(ValueError, match="no target-share detector"):
        run(sx, target_share=S.GivenFrames("detector"))
