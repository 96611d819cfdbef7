"""mask.py: the generated estimate's band energies as gains on the input."""

import numpy as np
import pytest

from speechx_cli import mask as M

SR = 16000


def band_db(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return 10 * np.log10(spec[(f >= lo) & (f < hi)].sum() + 1e-12)


def tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def hiss(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Noise above 4 kHz only."""
    x = np.random.default_rng(seed).standard_normal(int(seconds * SR))
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / SR) < 4000] = 0
    return (0.05 * np.fft.irfft(spec, len(x))).astype(np.float32)


def test_estimate_equal_to_input_leaves_it_unchanged():
    x = tone(440) + hiss()
    y = M.apply(x, x, SR)
    assert len(y) == len(x)
    assert np.max(np.abs(y - x)) < 1e-3


def test_keeps_what_the_estimate_has_and_cuts_the_rest():
    speech, noise = tone(440), hiss()
    y = M.apply(speech + noise, speech, SR)
    # the tone's band is kept within 1 dB, the hiss band is cut by the floor (-10 dB) or close to it
    assert abs(band_db(y, 300, 600) - band_db(speech, 300, 600)) < 1.0
    cut = band_db(noise, 4500, 8000) - band_db(y, 4500, 8000)
    assert 8.0 < cut < 10.5
    # the other way round (remove-speech): the hiss is kept and the tone cut
    z = M.apply(speech + noise, noise, SR)
    assert abs(band_db(z, 4500, 8000) - band_db(noise, 4500, 8000)) < 1.0
    assert band_db(speech, 300, 600) - band_db(z, 300, 600) > 8.0


def test_several_estimates_cut_by_their_mean_band_energy():
    """Draws are averaged in energy: [estimate, silence] has half the estimate's energy in every band,
    which is the estimate scaled by 1/sqrt(2); two equal draws are one."""
    x = tone(440) + hiss()
    est = tone(440) + 0.3 * hiss(seed=1)
    np.testing.assert_allclose(M.apply(x, [est, np.zeros_like(est)], SR), M.apply(x, est / np.sqrt(2), SR),
                               atol=1e-5)
    np.testing.assert_allclose(M.apply(x, [est, est], SR), M.apply(x, est, SR), atol=1e-6)
    with pytest.raises(ValueError, match="no estimate"):
        M.apply(x, [], SR)


def test_a_share_weighs_its_gains_with_the_estimates():
    """A share of 1 everywhere adds no cut: the estimate's gains at weight 1 - w are its gains with the exponent
    times 1 - w; a share of 0.5 at weight 1 halves what the mixture keeps (above the floor)."""
    x = tone(440) + hiss()
    est = tone(440) + 0.3 * hiss(seed=1)
    opts, frames = M.MaskOptions(bands=16, exponent=1.0, floor=0.1), 60  # detector frames of 320 samples
    for w in (0.3, 0.5):
        ones = M.Share(np.ones((frames, 16)), 320, w)
        np.testing.assert_allclose(M.apply(x, est, SR, opts, share=ones),
                                   M.apply(x, est, SR, M.MaskOptions(bands=16, exponent=1.0 - w, floor=0.1)), atol=1e-6)
    half = M.Share(np.full((frames, 8), 0.5), 320, 1.0)  # 8 bands spread over the mask's 16
    np.testing.assert_allclose(M.apply(x, est, SR, opts, share=half), 0.5 * x, atol=1e-5)


def test_share_floor_is_the_deepest_cut_where_a_share_weighs_in():
    """A share of 0.01 at weight 1 cuts to the share floor (-20 dB here), not to the floor (-10 dB); without a
    share the floor holds, and a share floor of 0 means the floor."""
    x = tone(440) + hiss()
    est = np.zeros_like(x)  # the estimate's gains: 0, so the floor decides them alone
    tiny = M.Share(np.full((60, 16), 0.01), 320, 1.0)
    deep = M.MaskOptions(bands=16, floor=0.32, share_floor=0.1)
    np.testing.assert_allclose(M.apply(x, est, SR, deep, share=tiny), 0.1 * x, atol=1e-5)
    np.testing.assert_allclose(M.apply(x, est, SR, deep), 0.32 * x, atol=1e-5)
    plain = M.MaskOptions(bands=16, floor=0.32)
    np.testing.assert_allclose(M.apply(x, est, SR, plain, share=tiny), 0.32 * x, atol=1e-5)
    assert M.MaskOptions().with_overrides("share_floor=0.05").share_floor == 0.05
    with pytest.raises(ValueError, match="share_floor"):
        M.MaskOptions(share_floor=1.5).validate()


def test_share_gains_follow_its_frames_and_bands():
    """Frame k of the share sits at sample (k + 0.5) * hop: the mask's frames between two share frames take
    values between theirs; the same band count maps band to band."""
    values = np.zeros((4, 3))
    values[2:, 1] = 1.0  # band 1 on from the third frame (centred on sample 800)
    g = M.Share(values, 320, 0.5).gains(3, 10, 128)  # mask frames at samples 0, 128, ..., 1152
    assert g.shape == (3, 10) and not g[[0, 2]].any()
    np.testing.assert_allclose(g[1, :4], 0.0)  # up to sample 480 (the second share frame)
    np.testing.assert_allclose(g[1, 7:], 1.0)  # from sample 896 on: past the third frame
    assert 0 < g[1, 5] < 1  # sample 640: between them
    np.testing.assert_allclose(M.Share(np.full((4, 3), 0.25), 320, 0.5).gains(3, 10, 128), 0.25)  # the share itself


def test_a_counterpart_makes_the_gains_a_ratio_of_two_estimates():
    """counterpart: gain = (E_est / (E_est + E_counterpart))^(exponent/2) in every band; an estimate equal to
    its counterpart is -3 dB everywhere at exponent 1. A speech estimate against a hiss estimate keeps the
    tone and cuts the hiss, without looking at the input's level."""
    x = tone(440) + hiss()
    est = tone(440) + 0.3 * hiss(seed=1)
    half = M.apply(x, est, SR, M.MaskOptions(exponent=1.0, floor=0.1), counterpart=[est, est])
    np.testing.assert_allclose(half, x / np.sqrt(2), atol=1e-4)
    y = M.apply(x, 0.5 * tone(440), SR, counterpart=hiss(seed=2))
    assert abs(band_db(y, 300, 600) - band_db(tone(440), 300, 600)) < 1.0
    assert band_db(hiss(), 4500, 8000) - band_db(y, 4500, 8000) > 8.0
    with pytest.raises(ValueError, match="one of them"):
        M.apply(x, est, SR, reference=x, counterpart=est)


def test_gains_compare_the_estimate_with_the_reference():
    """A reference (the codec's rendering of the input) replaces the input in the gains' denominator:
    an estimate as quiet as a reference that renders the input 6 dB too quiet keeps everything."""
    x = tone(440) + hiss()
    quiet = 0.5 * x
    kept = M.apply(x, quiet, SR, reference=quiet)
    assert np.max(np.abs(kept - x)) < 1e-3
    cut = M.apply(x, quiet, SR)  # against the input itself, the same estimate cuts by half the ratio: 3 dB
    assert abs(band_db(x, 300, 600) - band_db(cut, 300, 600) - 3.0) < 0.5


def test_output_keeps_the_input_phase():
    """The estimate may be any waveform with the right band energies (here: the tone delayed by
    half a period, the way a codec's output is not phase-aligned): the output is the input's."""
    x = tone(440)
    shifted = np.roll(x, SR // 880)
    y = M.apply(x, shifted, SR)
    assert np.corrcoef(x[1000:-1000], y[1000:-1000])[0, 1] > 0.99


@pytest.mark.parametrize("n", [0, 1, 100, 600])
def test_short_and_empty_inputs_keep_their_length(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    y = M.apply(x, x[: n // 2], SR)  # a short estimate is padded with silence
    assert len(y) == n and np.all(np.isfinite(y))


def test_silent_input_stays_silent():
    x = np.zeros(SR, dtype=np.float32)
    assert np.all(M.apply(x, tone(440), SR) == 0)


def test_overrides_replace_only_the_named_fields():
    base = M.MaskOptions(bands=16, exponent=1.0, floor=0.1)
    assert base.with_overrides(" bands=64, codec_reference=yes,floor=0.18") == M.MaskOptions(
        bands=64, exponent=1.0, floor=0.18, codec_reference=True)
    assert base.with_overrides("") == base
    for bad in ("bands", "colour=1", "bands=x", "codec_reference=maybe", "floor=0"):
        with pytest.raises(ValueError, match="mask"):
            base.with_overrides(bad)


@pytest.mark.parametrize("bad", [dict(bands=0), dict(floor=0.0), dict(floor=1.5), dict(exponent=0.0),
                                 dict(smooth_frames=0)])
def test_bad_options_are_refused(bad):
    with pytest.raises(ValueError):
        M.MaskOptions(**bad).validate()
