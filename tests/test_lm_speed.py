"""lm_speed: candidate LM sizes parse, and a measured size trains real updates on the recipe's batch."""

import pytest

from speechx_cli.train import lm_speed


def test_sizes_parse_and_a_tiny_size_measures():
    cfg = lm_speed.model_config("384x8", 1024, 8)
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff) == (384, 8, 6, 1536)
    with pytest.raises(ValueError, match="multiple of 64"):
        lm_speed.model_config("100x2", 1024, 8)
    with pytest.raises(ValueError, match="D_MODELxLAYERS"):
        lm_speed.model_config("big", 1024, 8)
    data = lm_speed.synthetic_set(n=12, codebook_size=64, n_codebooks=4)
    assert {e.task for e in data.examples} == set(lm_speed.Task)
    row = lm_speed.measure_size("64x1", data, steps=1, batch_frames=2400, precision="fp32")
    assert 0 < row["tokens_per_step"] <= 2400 and row["tokens_per_s"] > 0 and row["tokens_per_cpu_s"] > 0
    assert row["params_m"] > 0 and row["fp16_mb"] == pytest.approx(row["params_m"] * 1e6 * 2 / 2**20)
