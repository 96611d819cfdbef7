"""The benchmark: the no-cache baseline decodes like the engine; `speechx bench --quick` reports
every measurement as a positive number. No timing is asserted (shared 2-core machines)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from speechx_cli.cli import app
from speechx_cli.engine import DecodingOptions
from speechx_cli.eval import bench as B
from speechx_cli.eval import bench_ar as BA
from speechx_cli.model import ARModel, ModelConfig

CFG = ModelConfig.tiny()


@pytest.mark.parametrize("batch", [1, 3])
def test_uncached_baseline_matches_cached_engine_greedy(batch):
    torch.manual_seed(0)
    ar = ARModel(CFG).eval()
    prompts = B.ar_batch(CFG, batch, prompt_frames=12, seed=5)
    opts = DecodingOptions(temperature=0)
    cached = BA.run_cached(ar, prompts, 6, opts)
    uncached = BA.generate_uncached(ar, prompts, 6, opts)
    assert cached.shape == (batch, 6)
    assert torch.equal(cached, uncached)


def test_uncached_baseline_matches_cached_engine_seeded_sampling():
    torch.manual_seed(1)
    ar = ARModel(CFG).eval()
    prompts = B.ar_batch(CFG, 2, prompt_frames=9, seed=6)
    opts = DecodingOptions(temperature=1.0, seed=3)
    assert torch.equal(BA.run_cached(ar, prompts, 5, opts), BA.generate_uncached(ar, prompts, 5, opts))


@pytest.mark.parametrize("steps", [375, 24, 2, 1])
def test_quadratic_total_is_exact_for_quadratic_step_costs(steps):
    cost = lambda t: 2.0 + 0.5 * t + 0.01 * t * t  # noqa: E731
    assert BA.quadratic_total(cost, steps) == pytest.approx(sum(cost(t) for t in range(steps)), rel=1e-9)


def test_unknown_config_is_one_line_error():
    r = CliRunner().invoke(app, ["bench", "--configs", "huge", "--quick"])
    assert r.exit_code == 2
    assert r.output.strip().startswith("error:") and "huge" in r.output


def _numbers(d, path=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _numbers(v, f"{path}{k}.")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{path}{k}", v


def test_quick_bench_on_tiny_reports_positive_numbers(tmp_path, tiny_checkpoint):
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(app, ["bench", "--configs", "tiny", "--quick", "--json", str(out),
                                 "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    result = json.loads(out.read_text())
    assert set(result) >= {"machine", "bounds", "configs", "folder", "targets"}
    tiny = result["configs"]["tiny"]
    assert set(tiny) >= {"model", "ar", "decode_bounds", "nar", "codec", "pipeline", "pipeline_sr", "memory"}
    assert (tiny["pipeline"]["passes"], tiny["pipeline_sr"]["passes"]) == (1, 2)  # with its detector: two
    for b in ("batch1", "batch8"):
        assert set(tiny["ar"][b]) >= {"cached_tok_s", "uncached_tok_s", "cache_speedup", "prefill_s"}
    assert set(tiny["memory"]) >= {"ar_cached_b1", "ar_uncached_b8", "nar", "codec_encode", "codec_decode",
                                   "pipeline", "pipeline_sr"}
    assert set(tiny["decode_bounds"]) >= {"flops_per_token", "bytes_per_token", "bandwidth_fraction",
                                          "flop_fraction"}
    assert set(result["folder"]) >= {"folder_s", "loop_s", "folder_speedup"}
    assert result["long"]["minutes"] == 2 and result["long"]["memory_ratio"] > 0  # quick: a 2-minute file
    measured = {k: tiny[k] for k in ("ar", "decode_bounds", "nar", "codec", "pipeline", "pipeline_sr", "memory")}
    numbers = dict(_numbers({"bounds": result["bounds"], "tiny": measured, "folder": result["folder"]}))
    skip = ("rss_growth_mb",)  # a phase may reuse memory the process already holds
    bad = {k: v for k, v in numbers.items() if v <= 0 and not k.endswith(skip)}
    assert not bad, bad
    assert len(result["targets"]) == 5 and all(isinstance(t["met"], bool) for t in result["targets"])
    assert result["long"]["minutes"] == 2 and result["long"]["long_peak_mb"] > 0
    assert "AR tok/s b1" in r.output  # the rich table went to stdout
    r2 = CliRunner().invoke(app, ["bench", "--configs", "tiny", "--quick", "--json", str(out)])
    assert r2.exit_code == 2 and "--force" in r2.output  # never overwrites silently


def test_uncached_baseline_matches_cached_engine_when_greedy_escapes_runs():
    torch.manual_seed(2)
    ar = ARModel(CFG).eval()
    with torch.no_grad():  # code 3 is the argmax at every step: runs form at once
        ar.head.weight.zero_()
        ar.head.bias.zero_()
        ar.head.bias[3] = 2.0
    prompts = B.ar_batch(CFG, 2, prompt_frames=9, seed=7)
    opts = DecodingOptions(temperature=0, escape_after=2)
    cached = BA.run_cached(ar, prompts, 12, opts)
    assert (cached != 3).any()  # escapes happened
    assert torch.equal(cached, BA.generate_uncached(ar, prompts, 12, opts))
