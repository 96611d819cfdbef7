"""Pipeline (and windows.py): windows for long inputs, streaming == in-memory, edit splicing."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from speechx_cli import checkpoint
from speechx_cli import mask as M
from speechx_cli import pipeline as PL
from speechx_cli import speechfree as S
from speechx_cli import windows as W
from speechx_cli.detector import DetectorConfig, FrameDetector
from speechx_cli.window_options import DRAWS, GIVEN_FIELDS
from speechx_cli.engine import DecodingOptions
from speechx_cli.mask import Resynth
from speechx_cli.prompts import Task

from .conftest import SR, tone


@pytest.fixture(scope="module")
def sx(tiny_checkpoint):
    return checkpoint.load(tiny_checkpoint)


def test_split_windows_cover_the_input_and_joiner_restores_it():
    x = np.arange(1000, dtype=np.float32)
    blocks = [x[i: i + 77] for i in range(0, 1000, 77)]  # block size unrelated to the window
    windows = list(W.split_windows(blocks, 300, 50))
    assert [len(w) for w in windows] == [300, 300, 300, 250]
    assert np.array_equal(windows[1][:50], windows[0][-50:])
    joiner = W.WindowJoiner(50)
    y = np.concatenate([joiner.push(w) for w in windows] + [joiner.finish()])
    np.testing.assert_allclose(y, x, rtol=1e-6)  # identical windows crossfade into the input itself


def test_short_input_is_one_window():
    assert [len(w) for w in W.split_windows([np.ones(10)], 300, 50)] == [10]
    assert list(W.split_windows([np.ones(300)], 300, 50))[-1].shape == (300,)


def test_stream_equals_in_memory_run(sx):
    x = tone(7.3, seed=3)
    opts = DecodingOptions(temperature=0)
    win = PL.WindowOptions(seconds=2.0, overlap=0.5, batch_size=3)
    whole = PL.run(sx, [PL.Request(Task.NS, audio=x)], opts, win)[0]
    blocks = (x[i: i + 4000] for i in range(0, len(x), 4000))
    streamed = np.concatenate(list(PL.stream(sx, Task.NS, blocks, opts, win)))
    assert len(whole) == len(streamed) == len(x)
    np.testing.assert_allclose(whole, streamed, atol=1e-5)


@pytest.mark.parametrize("task", [Task.NS, Task.SR])
def test_mask_output_is_the_input_under_the_codec_outputs_gains(sx, task):
    """Resynth.MASK == mask.apply(input, what Resynth.CODEC returns) with the task's settings (and
    reference), and both come back as long as the input."""
    x = tone(1.7, seed=4)
    opts = DecodingOptions(temperature=0)
    codec, masked = (PL.run(sx, [PL.Request(task, audio=x)], opts, PL.WindowOptions(resynth=r, draws=1))[0]
                     for r in (Resynth.CODEC, Resynth.MASK))
    assert len(codec) == len(masked) == len(x)
    settings = PL.TASK_MASKS[task]
    # remove-speech compares with the codec's rendering of its input (its own codes, decoded)
    rendered = PL.to_audio(sx, PL.to_codes(sx, x))[: len(x)] if settings.codec_reference else None
    np.testing.assert_allclose(masked, M.apply(x, codec, SR, settings, rendered), atol=1e-6)
    assert not np.allclose(masked, codec, atol=1e-3)
    if rendered is not None:
        assert not np.allclose(masked, M.apply(x, codec, SR, settings), atol=1e-3)


@pytest.mark.parametrize("task", [Task.NS, Task.TSE])
def test_draws_are_independent_generations_whose_energies_the_mask_averages(sx, task):
    """draws=3: the window's prompt generated three times in one batch (different samples), and the
    output is the input under the mean of their band energies; one draw is what draws=1 gives."""
    x, enroll = tone(1.3, seed=5), tone(0.8, seed=6)
    opts = DecodingOptions(temperature=1.0, seed=2)
    req = PL.Request(task, audio=x, enrollment=enroll if task is Task.TSE else None)
    row = PL._rows(sx, 0, req, PL.WindowOptions(), {})[0]
    codes = PL.generate(sx.ar, sx.nar, [row.prompt] * 3, opts, sx.codec.frame_rate)
    assert not all(torch.equal(codes[0], c) for c in codes[1:])  # the copies drew different samples
    wavs = [PL.to_audio(sx, c)[: len(x)] for c in codes]
    settings = PL.TASK_MASKS[task]
    rendered = PL.to_audio(sx, row.source_codes)[: len(x)] if settings.codec_reference else None
    # batch_size 2 < 3 draws: the draws still decode together (two batches would repeat one seed's samples)
    got = PL.run(sx, [req], opts, PL.WindowOptions(draws=3, batch_size=2))[0]
    np.testing.assert_allclose(got, M.apply(x, wavs, SR, settings, rendered), atol=1e-6)
    one = PL.run(sx, [req], opts, PL.WindowOptions(draws=1))[0]
    np.testing.assert_allclose(one, M.apply(x, wavs[0], SR, settings, rendered), atol=1e-6)


def test_counterpart_mask_divides_by_both_tasks_draws(sx):
    """A denoise mask with counterpart=yes: the window's own draws over its own plus remove-speech's draws
    of the same window (each prompt's draws in their own batch at batch_size 2)."""
    x = tone(1.3, seed=5)
    opts = DecodingOptions(temperature=1.0, seed=2)
    settings = M.MaskOptions(counterpart=True)
    row = PL.window_row(sx, 0, Task.NS, x, None, None, Task.SR)
    own, other = (PL.generate(sx.ar, sx.nar, [p] * 2, opts, sx.codec.frame_rate) for p in (row.prompt, row.counterpart))
    wav = lambda codes: [PL.to_audio(sx, c)[: len(x)] for c in codes]  # noqa: E731
    got = PL.run(sx, [PL.Request(Task.NS, audio=x)], opts, PL.WindowOptions(draws=2, batch_size=2, mask=settings))[0]
    np.testing.assert_allclose(got, M.apply(x, wav(own), SR, settings, counterpart=wav(other)), atol=1e-6)
    assert not np.allclose(got, PL.run(sx, [PL.Request(Task.NS, audio=x)], opts,
                                       PL.WindowOptions(draws=2, batch_size=2))[0], atol=1e-3)
    with pytest.raises(ValueError, match="no counterpart"):
        PL.run(sx, [PL.Request(Task.TSE, audio=x, enrollment=x)], opts, PL.WindowOptions(mask=settings))


@pytest.mark.parametrize("task, mask, given", [
    (Task.SR, None, "off"), (Task.SR, M.MaskOptions(counterpart=True), "off"), (Task.SR, None, "denoise=3"),
    (Task.SR, None, "detector=0.5"), (Task.NS, None, "detector=0.5"), (Task.TSE, None, "detector=0.5")])
def test_stream_equals_in_memory_run_with_draws(sx, task, mask, given):
    x = tone(5.1, seed=7)
    voice = tone(1.0, freq=150.0, seed=6) if task is Task.TSE else None
    opts = DecodingOptions(temperature=1.0, seed=1)
    torch.manual_seed(0)
    small = dict(n_mels=16, channels=8, layers=2, hidden=8)
    sx = replace(sx, detectors={kind: FrameDetector(DetectorConfig(**small, task=kind, bands=16 * (kind in S.SHARES)))
                                for kind in S.KINDS})  # tse: with the target share too (its weight 0.5)
    how = {GIVEN_FIELDS[kind]: S.GivenFrames.parse(given, kind) for kind, of in S.TASK_OF.items() if of is task}
    win = PL.WindowOptions(seconds=2.0, overlap=0.5, batch_size=2, draws=2, mask=mask, **how)
    whole = PL.run(sx, [PL.Request(task, audio=x, enrollment=voice)], opts, win)[0]
    streamed = np.concatenate(list(PL.stream(sx, task, [x], opts, win, enrollment=voice)))
    np.testing.assert_allclose(whole, streamed, atol=1e-5)


def test_draws_need_the_mask_and_default_to_one_with_the_codec():
    with pytest.raises(ValueError, match="resynth mask"):
        PL.WindowOptions(draws=2, resynth=Resynth.CODEC).validate()
    with pytest.raises(ValueError, match="draws"):
        PL.WindowOptions(draws=0).validate()
    assert PL.WindowOptions().n_draws == DRAWS > 1
    assert PL.WindowOptions(resynth=Resynth.CODEC).validate().n_draws == 1


@pytest.mark.parametrize("task", [Task.SR, Task.TSE])
def test_a_second_pass_is_the_task_run_again_on_each_windows_output(sx, task):
    """passes=2: every window goes through the model again, its first output as its input; one window
    (and the transcript, the enrollment kept) is exactly the task run twice. Passes 3 differs from 2."""
    x, enroll = tone(1.3, seed=5), tone(0.8, seed=6)
    opts = DecodingOptions(temperature=1.0, seed=2)
    def req(a):
        return PL.Request(task, audio=a, enrollment=enroll if task is Task.TSE else None, text="a tone")
    once = PL.run(sx, [req(x)], opts, PL.WindowOptions(draws=2, passes=1))[0]
    twice = PL.run(sx, [req(x)], opts, PL.WindowOptions(draws=2, passes=2))[0]
    np.testing.assert_allclose(twice, PL.run(sx, [req(once)], opts, PL.WindowOptions(draws=2, passes=1))[0], atol=1e-6)
    assert not np.allclose(twice, once, atol=1e-3)
    assert not np.allclose(PL.run(sx, [req(x)], opts, PL.WindowOptions(draws=2, passes=3))[0], twice, atol=1e-3)


def test_passes_per_window_stream_as_they_run_and_leave_tts_alone(sx):
    """Over several windows, passes work window by window: the stream equals the in-memory run. A tts
    request run beside them is not run again: it comes out as it does with one pass."""
    x = tone(5.1, seed=7)
    opts = DecodingOptions(temperature=1.0, seed=1)
    win = PL.WindowOptions(seconds=2.0, overlap=0.5, batch_size=2, draws=2, passes=2)
    both = [PL.Request(Task.SR, audio=x), PL.Request(Task.TTS, enrollment=x, text="hi")]
    (whole, speech), (whole1, speech1) = PL.run(sx, both, opts, win), PL.run(sx, both, opts, replace(win, passes=1))
    np.testing.assert_allclose(whole, np.concatenate(list(PL.stream(sx, Task.SR, [x], opts, win))), atol=1e-5)
    assert not np.allclose(whole, whole1, atol=1e-3)
    assert np.array_equal(speech, speech1)


def test_remove_speech_takes_two_passes_by_default_where_it_finds_speech_free_frames(sx):
    """passes=None: 2 for remove-speech with the mask and the detector (auto), else 1; other tasks 1."""
    torch.manual_seed(0)
    with_detector = replace(sx, detectors={"sr": FrameDetector(DetectorConfig(n_mels=16, channels=8, layers=2,
                                                                                 hidden=8))})
    x, opts = tone(1.3, seed=4), DecodingOptions(temperature=1.0, seed=3)

    def out(model, task, **kw):
        req = PL.Request(task, audio=x, enrollment=x if task is Task.TSE else None)
        return PL.run(model, [req], opts, PL.WindowOptions(draws=2, **kw))[0]
    np.testing.assert_allclose(out(with_detector, Task.SR), out(with_detector, Task.SR, passes=2), atol=1e-6)
    assert not np.allclose(out(with_detector, Task.SR), out(with_detector, Task.SR, passes=1), atol=1e-3)
    np.testing.assert_allclose(out(sx, Task.SR), out(sx, Task.SR, passes=1), atol=1e-6)  # no detector
    np.testing.assert_allclose(out(with_detector, Task.TSE), out(with_detector, Task.TSE, passes=1), atol=1e-6)
    w = PL.WindowOptions()
    assert (w.n_passes(Task.SR, {"sr"}), w.n_passes(Task.SR, {"ns"}), w.n_passes(Task.NS, {"sr", "ns"})) == (2, 1, 1)
    assert PL.WindowOptions(resynth=Resynth.CODEC).validate().n_passes(Task.SR, {"sr"}) == 1
    for mode in ("off", "denoise"):
        assert PL.WindowOptions(speech_free=S.GivenFrames(mode)).n_passes(Task.SR, {"sr"}) == 1


def test_passes_need_the_mask():
    with pytest.raises(ValueError, match="passes"):
        PL.WindowOptions(passes=0).validate()
    with pytest.raises(ValueError, match="resynth mask"):
        PL.WindowOptions(passes=2, resynth=Resynth.CODEC).validate()


def test_edit_output_keeps_pre_and_post(sx):
    x = tone(2.0, seed=4)
    y = PL.edit(sx, x, "the dog sat down", span=(0.6, 1.2), background="keep",
                opts=DecodingOptions(temperature=1.0, seed=0))
    a, b = int(0.6 * SR), int(1.2 * SR)
    assert np.array_equal(y[:a], x[:a])
    assert np.array_equal(y[len(y) - (len(x) - b):], x[b:])


def test_requests_validate():
    with pytest.raises(ValueError, match="text is required"):
        PL.Request(Task.TTS, enrollment=np.ones(10)).validate()
    with pytest.raises(ValueError, match="enrollment"):
        PL.Request(Task.TSE, audio=np.ones(10)).validate()
    with pytest.raises(ValueError, match="span"):
        PL.Request(Task.EDIT_CLEAN, audio=np.ones(10), text="x").validate()


def test_long_tts_text_is_split_into_sentences(sx):
    from speechx_cli import text as T

    assert T.sentences("Hello there my friend. How are you today? Fine!") == [
        "Hello there my friend.", "How are you today? Fine!"]
    long = " ".join(["word"] * 70)
    assert all(len(p.split()) <= 30 for p in T.sentences(long))
    voice = tone(1.0)
    y = PL.tts(sx, "First sentence is here. And here is the second one.", voice,
               opts=DecodingOptions(temperature=1.0, seed=0, max_seconds=0.5))
    assert len(y) <= int((2 * 0.5 + PL.SENTENCE_PAUSE_SECONDS) * SR) + 1


def test_joiner_matches_levels_at_a_join():
    joiner = W.WindowJoiner(100)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(300).astype(np.float32), rng.standard_normal(300).astype(np.float32)
    first = joiner.push(a)
    second = joiner.push(b * 1.6)  # the second window came out 4 dB louder
    tail = joiner.finish()
    assert np.sqrt(np.mean(np.concatenate([second, tail])[100:] ** 2)) == pytest.approx(
        np.sqrt(np.mean(a[200:] ** 2)) * np.sqrt(np.mean(b[100:] ** 2)) / np.sqrt(np.mean(b[:100] ** 2)), rel=0.05)
    assert len(first) + len(second) + len(tail) == 500


def test_no_seam_at_window_joins():
    """Windows that come back at inconsistent levels (as a model's may) join without a level step:
    the output/input level ratio stays flat across every join, and the spectrum is the input's."""
    x = tone(12.0, seed=5)
    rng = np.random.default_rng(0)
    windows = list(W.split_windows([x], 2 * SR, SR // 2))
    joiner = W.WindowJoiner(SR // 2)
    gains = rng.uniform(0.6, 1.6, len(windows))
    y = np.concatenate([joiner.push(w * g) for w, g in zip(windows, gains)] + [joiner.finish()])
    hop = SR // 20
    n = len(x) // hop * hop
    ratio_db = 10 * np.log10(y[:n].reshape(-1, hop).var(1) / x[:n].reshape(-1, hop).var(1))
    assert np.ptp(ratio_db) < 0.5  # without level matching the steps are up to 8 dB
    spec = lambda z: np.abs(np.fft.rfft(z[:n].reshape(-1, hop) * np.hanning(hop), axis=1))  # noqa: E731
    cos = (spec(x) * spec(y)).sum(1) / np.linalg.norm(spec(x), axis=1) / np.linalg.norm(spec(y), axis=1)
    assert cos.min() > 0.99


def test_shared_enrollment_is_encoded_once_per_run(sx, monkeypatch):
    enroll = tone(2.0, seed=6)
    requests = [PL.Request(Task.TSE, audio=tone(1.0, seed=s), enrollment=enroll) for s in (7, 8, 9)]
    greedy = DecodingOptions(temperature=0)
    expected = [PL.run(sx, [r], greedy)[0] for r in requests]
    encoded = []
    real = PL.to_codes
    monkeypatch.setattr(PL, "to_codes", lambda sx_, audio: encoded.append(len(audio)) or real(sx_, audio))
    outs = PL.run(sx, requests, greedy)
    assert encoded.count(len(enroll)) == 1 and len(encoded) == 4  # one enrollment + three mixtures
    for y, want in zip(outs, expected):
        np.testing.assert_allclose(y, want, atol=1e-5)
