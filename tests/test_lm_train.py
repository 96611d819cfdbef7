"""LM training: shards, learning, exact resume, DDP equivalence, stage 1 -> 2, export.

All tiny: synthetic codes (or a tiny causal codec on tones) and ModelConfig.tiny().
"""

import json
import random
import socket
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from speechx_cli import checkpoint
from speechx_cli.codec import SmallCodec, SmallCodecConfig
from speechx_cli.engine import DecodingOptions, generate
from speechx_cli.model import ARModel, ModelConfig
from speechx_cli.prompts import SPECIAL, Task
from speechx_cli.train import dataset, lm_train, shards
from speechx_cli.train.lm_train import TrainConfig, train
from speechx_cli.train.dataset import EncodedExample, ExampleSet

CFG = ModelConfig.tiny()
V, K = CFG.codebook_size, CFG.n_codebooks
BASE = TrainConfig(model=CFG, batch_size=6, lr=3e-3, warmup_steps=2, max_steps=6, eval_every=1000,
                   ckpt_every=1000, log_every=1, dev_per_task=4, device="cpu",
                   precision="fp32")  # exact comparisons (resume, DDP); bf16 is tested on its own


def synthetic_examples(n: int = 48, seed: int = 0) -> list[EncodedExample]:
    """Every task in turn; codes from an 8-symbol alphabet so that a few steps can learn it."""
    g = torch.Generator().manual_seed(seed)

    def codes(lo: int, hi: int) -> torch.Tensor:
        t = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return torch.randint(0, 8, (t, K), generator=g) * 7

    def text() -> torch.Tensor:
        return torch.randint(3, 60, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g)

    out = []
    for i in range(n):
        task = list(Task)[i % len(Task)]
        target = codes(4, 10)
        if task == Task.TTS:
            out.append(EncodedExample(task, text(), target, enrollment=codes(3, 6)))
        elif task in (Task.NS, Task.SR):
            out.append(EncodedExample(task, text() if i % 2 else torch.zeros(0, dtype=torch.long), target,
                                      source=codes(len(target), len(target))))
        elif task == Task.TSE:
            out.append(EncodedExample(task, text(), target, source=codes(len(target), len(target)),
                                      enrollment=codes(3, 5)))
        else:
            middle = codes(1, 3) if task == Task.EDIT_NOISY else None
            out.append(EncodedExample(task, text(), target, middle=middle, pre_frames=1,
                                      post_start=len(target) - 2))
    return out


def data(n: int = 48, seed: int = 0) -> ExampleSet:
    return ExampleSet(synthetic_examples(n, seed), codebook_size=V)


def weights(result) -> dict[str, torch.Tensor]:
    return {**{f"ar.{k}": v.detach().clone() for k, v in result.ar.state_dict().items()},
            **{f"nar.{k}": v.detach().clone() for k, v in result.nar.state_dict().items()}}


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=atol), (k, (a[k] - b[k]).abs().max())


# ---- training ------------------------------------------------------------------------------------

def test_bf16_trains_like_fp32_and_auto_picks_it_only_where_native(tmp_path, monkeypatch):
    results = {p: train(replace(BASE, out_dir=str(tmp_path / p), precision=p), data(), progress=False)
               for p in ("fp32", "bf16")}
    assert_same(weights(results["fp32"]), weights(results["bf16"]), atol=2e-2)  # 6 steps at lr 3e-3
    moved = max((a - b).abs().max() for a, b in zip(weights(results["bf16"]).values(),
                                                       weights(results["fp32"]).values()))
    assert moved > 0  # bf16 really ran: not bit-identical to fp32
    cpu = torch.device("cpu")
    for native in (True, False):
        monkeypatch.setattr(lm_train, "native_bf16", lambda device, native=native: native)
        assert lm_train.uses_bf16("auto", cpu) is native
        assert lm_train.uses_bf16("bf16", cpu) and not lm_train.uses_bf16("fp32", cpu)


def test_a_few_steps_reduce_dev_loss(tmp_path):
    cfg = replace(BASE, out_dir=str(tmp_path), max_steps=20, task_sampling="example")
    train(cfg, data(), data(24, seed=1), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    dev = {r["step"]: r["dev"] for r in rows if "dev" in r}
    assert sorted(dev) == [0, 20]  # untrained baseline, then the end of the run
    first, last = dev[0], dev[20]
    assert set(last) == {t.value for t in Task}
    for task in last:
        assert last[task]["ar"] < first[task]["ar"] - 0.3, task
        assert last[task]["nar"] < first[task]["nar"] - 0.3, task


def test_resume_continues_exactly(tmp_path):
    cfg = replace(BASE, model=replace(CFG, dropout=0.1), max_steps=6, ckpt_every=3, grad_accum=2)
    straight = train(replace(cfg, out_dir=str(tmp_path / "a")), data(), progress=False)
    b = replace(cfg, out_dir=str(tmp_path / "b"))
    train(b, data(), progress=False, stop_at=3)  # as if killed right after the step-3 checkpoint
    torch.manual_seed(1234), random.seed(1234), np.random.seed(1234)  # fresh process state
    with pytest.raises(FileExistsError):
        train(b, data(), progress=False)
    with pytest.raises(ValueError, match="lr"):
        train(replace(b, lr=1e-3), data(), progress=False, resume=True)
    first_part = checkpoint.read_training(tmp_path / "b" / "lm_train.pt", checkpoint.LM_TRAINING)["trained_s"]
    resumed = train(b, data(), progress=False, resume=True)
    assert resumed.step == straight.step == 6
    assert_same(weights(straight), weights(resumed))
    assert resumed.last["loss"] == straight.last["loss"]
    # the training time adds up over the parts: what a stage's cost is stated from
    total = checkpoint.read_training(tmp_path / "b" / "lm_train.pt", checkpoint.LM_TRAINING)["trained_s"]
    assert 0 < first_part < total and first_part < resumed.last["trained_s"] <= total


def test_resuming_a_finished_run_trains_nothing_and_shows_no_empty_progress(tmp_path, capsys):
    cfg = replace(BASE, out_dir=str(tmp_path), max_steps=2, ckpt_every=1)
    done = train(cfg, data(), progress=False)
    capsys.readouterr()
    again = train(cfg, data(), progress=True, resume=True)
    assert again.step == done.step == 2 and again.last == {}
    assert_same(weights(done), weights(again))
    assert "nan" not in capsys.readouterr().out  # no bar with a loss it never measured


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, aids: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        cfg = replace(BASE, out_dir=f"{out}/ddp", max_steps=4, batch_size=8, **aids)
        result = train(cfg, data(), progress=False)
        torch.save({"w": weights(result), "loss": result.last["loss"], "grad_norm": result.last["grad_norm"]},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("aids", [{}, {"aux_ctc_weight": 0.3, "curriculum_steps": 3, "bucket_pool": 1}],
                         ids=["plain", "alignment-aids"])
def test_two_ddp_processes_match_one_process(tmp_path, aids):
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), aids), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert_same(r0["w"], r1["w"])  # DDP keeps the ranks identical
    single = train(replace(BASE, out_dir=str(tmp_path / "one"), max_steps=4, batch_size=8, **aids), data(),
                   progress=False)
    assert_same(weights(single), r0["w"], atol=2e-5)  # same global batches, same gradients
    assert abs(single.last["loss"] - r0["loss"]) < 1e-4
    assert abs(single.last["grad_norm"] - r0["grad_norm"]) < 1e-4 * single.last["grad_norm"]  # same scale


def test_stage2_starts_from_stage1_and_exports(tmp_path):
    s1 = replace(BASE, out_dir=str(tmp_path / "s1"), stage="tts", max_steps=3)
    stage1 = train(s1, data(), progress=False)
    torch.manual_seed(BASE.seed)
    fresh = ARModel(CFG)
    ns_row = V + SPECIAL["<ns>"]  # a task token: untouched by stage 1 (no gradient, no decay)
    assert torch.equal(stage1.ar.cond.acoustic[0].weight[ns_row], fresh.cond.acoustic[0].weight[ns_row])
    assert not torch.equal(stage1.ar.head.weight, fresh.head.weight)

    s2 = replace(BASE, out_dir=str(tmp_path / "s2"), stage="all", seed=5, init_from=str(stage1.checkpoint))
    start = train(s2, data(), progress=False, stop_at=0)
    assert_same(weights(start), weights(stage1))
    stage2 = train(s2, data(), progress=False, resume=True)
    assert stage2.step == s2.max_steps

    torch.manual_seed(0)
    codec = SmallCodec(SmallCodecConfig.tiny()).eval()
    path = lm_train.export(stage2.checkpoint, codec, tmp_path / "model.safetensors")
    model = checkpoint.load(path)
    assert model.info["stage"] == "all" and model.info["step"] == s2.max_steps
    example = synthetic_examples(6)[1]  # ns: output length known
    out = generate(model.ar, model.nar, [example.prompt(V)], DecodingOptions(temperature=0), frame_rate=50)
    assert out[0].shape == example.source.shape


def test_sampler_buckets_by_length_and_one_task_per_update():
    ds = data(120)
    cfg = replace(BASE, batch_size=0, batch_frames=120, stage="all")
    sampler = lm_train.BucketSampler(ds.lengths, ds.tasks, cfg, min_examples=2)
    seen = set()
    for step in range(40):
        group, batch = sampler.batch(step)
        assert len(batch) >= 2 and len(set(ds.tasks[batch])) == 1 and list(ds.tasks[batch])[0] == \
            dataset.TASK_ID[Task(group)]
        assert len(batch) * ds.lengths[batch].max() <= 120 or len(batch) == 2
        seen.add(group)
    assert seen == {t.value for t in Task}
    stage1 = lm_train.BucketSampler(ds.lengths, ds.tasks, replace(cfg, stage="tts"), 1)
    assert {stage1.batch(s)[0] for s in range(10)} == {"tts"}


# ---- shards --------------------------------------------------------------------------------------

SR = 16_000


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(7 * t)) + 0.01 * rng.standard_normal(len(t))
            ).astype(np.float32)


def _words(n: int, seconds: float) -> list[dict]:
    step = seconds / (n + 1)
    return [{"word": f"w{i}", "start": round(step * (i + 0.5), 3), "end": round(step * (i + 1.2), 3)}
            for i in range(n)]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "wav").mkdir()
    (root / "noise").mkdir()
    records = []
    for s, freq in enumerate((180.0, 260.0)):
        for u in range(3):
            uid = f"spk{s}-{u}"
            sf.write(root / f"wav/{uid}.wav", _tone(1.0, freq + 10 * u, s * 10 + u), SR)
            edit = None
            if u == 0:
                sf.write(root / f"wav/{uid}.edit.wav", _tone(1.2, freq * 1.3, 99 + s), SR)
                edit = {"kind": "replace", "text": "the w1 cat w2", "path": f"wav/{uid}.edit.wav", "duration": 1.2,
                        "words": _words(4, 1.2), "orig_span": [1, 2], "edit_span": [1, 3]}
            records.append({"id": uid, "speaker": f"spk{s}", "split": "train", "text": "the w1 w2",
                            "path": f"wav/{uid}.wav", "duration": 1.0, "words": _words(3, 1.0), "edit": edit})
    sf.write(root / "noise/white.wav", (0.05 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32), SR)
    noises = [{"id": "white", "kind": "white", "path": "noise/white.wav", "duration": 2.0, "split": "train"}]
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (root / "noise.jsonl").write_text("".join(json.dumps(r) + "\n" for r in noises))
    return root


def _causal_codec(seed: int = 0, init: bool = True) -> SmallCodec:
    """Tiny causal codec (right padding never changes a frame), codebooks initialised on noise."""
    torch.manual_seed(seed)
    codec = SmallCodec(replace(SmallCodecConfig.tiny(), causal=True)).train()
    if init:
        codec(torch.randn(2, SR // 2) * 0.1)  # k-means initialisation
    return codec.eval()


def _letters(text: str) -> list[int]:
    return [3 + (ord(c) % 60) for c in text.lower() if c.isalpha()]


def test_shards_hold_the_in_memory_examples(corpus_dir, tmp_path):
    from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator

    codec = _causal_codec()
    simulation = SimulationOptions(enrollment_seconds=(1.0, 2.0))
    opts = shards.ShardOptions(variants=3, examples_per_shard=8, chunk=4, seed=3)
    prepare = lambda codec: shards.prepare_shards(corpus_dir, tmp_path, codec, opts,  # noqa: E731
                                                   encode_text=_letters, simulation=simulation)
    summary = prepare(codec)
    index = summary["index"]
    assert index["examples"] == 18 and [s["examples"] for s in index["shards"]] == [8, 8, 2]
    assert index["task_counts"] == {t.value: 3 for t in Task}
    assert summary["examples_per_s"] > 0 and summary["audio_seconds_per_s"] > 0

    stored = dataset.ShardSet(tmp_path, expect_codec=codec.config())
    sim = Simulator(Corpus.load(corpus_dir, sample_rate=SR), simulation)
    memory = ExampleSet(shards.build_examples(sim, codec, 18, seed=3, encode_text=_letters), V,
                        codec.config())
    assert len(stored) == len(memory) == 18
    np.testing.assert_array_equal(stored.lengths, memory.lengths)
    for i in range(18):
        a, b = stored[i], memory[i]
        assert a.task == b.task and (a.pre_frames, a.post_start) == (b.pre_frames, b.post_start)
        for name in ("text", *dataset.SEGMENTS):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), (i, name)
        if a.task == Task.EDIT_CLEAN:
            assert torch.equal(a.prompt(V).prefix, a.target[: a.pre_frames])

    assert prepare(codec)["examples"] == 0  # every shard was already there: nothing redone
    with pytest.raises(FileExistsError):
        prepare(_causal_codec(seed=1, init=False))  # another codec's shards are not mixed in
    with pytest.raises(ValueError, match="codec"):
        dataset.ShardSet(tmp_path, expect_codec=SmallCodecConfig.demo().to_dict())


def test_a_smaller_set_of_the_same_stream_links_the_bigger_sets_shards(corpus_dir, tmp_path):
    from speechx_cli.train.simulate import SimulationOptions

    codec = _causal_codec()
    simulation = SimulationOptions(enrollment_seconds=(1.0, 2.0))
    opts = shards.ShardOptions(variants=3, examples_per_shard=8, chunk=4, seed=3)
    prepare = lambda out, **kw: shards.prepare_shards(  # noqa: E731
        corpus_dir, tmp_path / out, codec, replace(opts, **kw.pop("opts", {})), encode_text=_letters,
        simulation=simulation, **kw)
    prepare("big")
    small = prepare("small", opts={"max_examples": 12}, reuse=tmp_path / "big")
    assert small["reused"] == 8 and small["examples"] == 4  # shard 0 linked, shard 1 (4 examples) built
    assert (tmp_path / "small/shard-00000.safetensors").read_bytes() == \
        (tmp_path / "big/shard-00000.safetensors").read_bytes()
    fresh = prepare("fresh", opts={"max_examples": 12})
    assert fresh["index"]["shards"] == small["index"]["shards"]
    from safetensors.torch import load_file

    for name in ("shard-00000.safetensors", "shard-00001.safetensors"):  # (metadata key order may differ)
        linked, built = load_file(tmp_path / "small" / name), load_file(tmp_path / "fresh" / name)
        assert linked.keys() == built.keys() and all(torch.equal(linked[k], built[k]) for k in linked)
    with pytest.raises(ValueError, match="seed"):
        prepare("other", opts={"seed": 4}, reuse=tmp_path / "big")
