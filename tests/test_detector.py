"""The frame detectors (remove-speech's speech-free, denoise's noise-free frames): level-free features on the
codec's frames, labels, training and their place in a checkpoint."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from speechx_cli.detector import TASKS as D_TASKS, DetectorConfig, FrameDetector
from speechx_cli.train import detector_train as D
from tests.test_simulate import tiny  # noqa: F401  (the tiny espeak corpus fixture)

SMALL = DetectorConfig(n_mels=16, channels=8, layers=2, hidden=8)
HOP = SMALL.hop_length


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.05, int(seconds * 16_000)).astype(np.float32)


def test_features_are_level_free_and_on_the_codec_frames():
    torch.manual_seed(0)
    model = FrameDetector(SMALL)
    x = _noise(1.0) * 0.01
    x[10 * HOP: 11 * HOP] += _noise(HOP / 16_000, 1) * 20  # a burst exactly in codec frame 10
    feats = model.features(torch.from_numpy(x)[None], 50)[0]
    loud = model.features(torch.from_numpy(x * 7.0)[None], 50)[0]
    assert feats.shape == (50, SMALL.n_mels + 1)
    torch.testing.assert_close(feats, loud, atol=1e-2, rtol=0)  # only the log floor differs
    assert int(feats[:, -1].argmax()) == 10  # the level channel peaks on the burst's own frame
    # a short input is padded to the frames asked for
    assert model.features(torch.from_numpy(x[: 20 * HOP])[None], 50).shape == (1, 50, SMALL.n_mels + 1)


def test_silent_frames_are_never_speech_free():
    model = FrameDetector(SMALL)
    x = _noise(1.0)
    x[: 20 * HOP] = 0.0
    free = model.pick(x, 50, threshold=1e-6)  # every frame with sound passes this threshold
    assert not free[:20].any() and free[20:].all()


def test_frame_labels_mark_where_the_speech_is_under_the_background():
    background = np.full(10 * HOP, 0.1, dtype=np.float32)
    speech = np.zeros(10 * HOP, dtype=np.float32)
    speech[3 * HOP: 5 * HOP] = 0.1  # equal to the background: not speech-free
    speech[6 * HOP: 7 * HOP] = 0.05  # 6 dB under: not at 10 dB, yes at 5 dB
    assert D.frame_labels(speech, background, HOP, 10.0).tolist() == [1, 1, 1, 0, 0, 1, 0, 1, 1, 1]
    assert D.frame_labels(speech, background, HOP, 5.0).tolist() == [1, 1, 1, 0, 0, 1, 1, 1, 1, 1]


def test_threshold_is_the_lowest_reaching_the_precision():
    rows = [{"threshold": 0.3, "precision": 0.6}, {"threshold": 0.5, "precision": 0.82},
            {"threshold": 0.7, "precision": 0.9}]
    assert D.choose_threshold(rows, 0.8) == 0.5
    assert D.choose_threshold(rows, 0.95) == 0.7


def test_examples_are_the_simulations_mixtures_with_their_labels(tiny):  # noqa: F811
    data = D.make_examples(tiny.root, 3, 0, SMALL)
    assert len(data["starts"]) == 4 and data["starts"][-1] == len(data["labels"])
    assert len(data["audio"]) == len(data["labels"]) * HOP
    x, y, _ = D._item(data, 1, HOP)
    assert len(x) == len(y) * HOP and set(np.unique(y)) <= {0.0, 1.0}


def test_denoise_examples_label_the_frames_where_the_noise_is_under_the_speech(tiny):  # noqa: F811
    from speechx_cli.prompts import Task
    from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator
    ns = DetectorConfig(n_mels=16, channels=8, layers=2, hidden=8, task="ns")
    data = D.make_examples(tiny.root, 2, 0, ns)
    ex = Simulator(Corpus.load(tiny.root, "train"), SimulationOptions(tasks=(Task.NS,))).example(0, 0, Task.NS)
    n = int(data["starts"][1])
    np.testing.assert_array_equal(data["labels"][:n], D.frame_labels(ex.source - ex.target, ex.target, HOP, 10.0))
    np.testing.assert_array_equal(data["audio"][: n * HOP], ex.source[: n * HOP])
    with pytest.raises(ValueError, match="task"):
        DetectorConfig(task="edit").validate()


def test_target_alone_examples_carry_their_enrollment_and_the_detector_reads_it(tiny):  # noqa: F811
    from speechx_cli.prompts import Task
    from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator
    tse = replace(SMALL, task="tse")
    data = D.make_examples(tiny.root, 2, 0, tse)
    ex = Simulator(Corpus.load(tiny.root, "train"), SimulationOptions(tasks=(Task.TSE,))).example(0, 0, Task.TSE)
    n = int(data["starts"][1])
    np.testing.assert_array_equal(data["labels"][:n], D.frame_labels(ex.source - ex.target, ex.target, HOP, 10.0))
    np.testing.assert_array_equal(data["enroll"][: data["enroll_starts"][1]], ex.enrollment)
    x, y, e = D._batch(data, np.random.default_rng(0), 3, 40, HOP)
    assert x.shape == (3, y.shape[1] * HOP) and e.shape[0] == 3
    torch.manual_seed(0)
    model = FrameDetector(tse).eval()
    a, b = (torch.from_numpy(_noise(1.0, seed) * (1 + 3 * seed))[None] for seed in (1, 2))
    torch.testing.assert_close(model(x[:1], y.shape[1], a), model(x[:1], y.shape[1], b))  # untrained: no change yet
    torch.nn.init.normal_(model.film.weight, std=0.5)
    assert not torch.allclose(model(x[:1], y.shape[1], a), model(x[:1], y.shape[1], b))  # then the voice matters
    with pytest.raises(ValueError, match="enrollment"):
        model(x[:1], y.shape[1])
    with pytest.raises(ValueError, match="enrollment"):
        FrameDetector(SMALL)(x[:1], y.shape[1], a)


def test_every_detector_kind_has_its_task_flag_and_window_field():
    from speechx_cli import speechfree as S
    from speechx_cli.window_options import GIVEN_FIELDS, WindowOptions
    assert set(S.TASK_OF) == set(S.FLAGS) == set(S.KINDS) == set(GIVEN_FIELDS) == set(D_TASKS)
    assert all(WindowOptions().given_frames(kind) == S.GivenFrames("auto") for kind in S.KINDS)


def test_target_silent_examples_label_the_frames_where_the_target_is_under_the_interferer(tiny):  # noqa: F811
    from speechx_cli.prompts import Task
    from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator
    cfg = replace(SMALL, task="tse_silent")
    data = D.make_examples(tiny.root, 2, 0, cfg)
    ex = Simulator(Corpus.load(tiny.root, "train"), SimulationOptions(tasks=(Task.TSE,))).example(0, 0, Task.TSE)
    n = int(data["starts"][1])
    labels = D.frame_labels(ex.target, ex.source - ex.target, HOP, 10.0)
    np.testing.assert_array_equal(data["labels"][:n], labels)
    assert not np.array_equal(labels, D.frame_labels(ex.source - ex.target, ex.target, HOP, 10.0))
    np.testing.assert_array_equal(data["enroll"][: data["enroll_starts"][1]], ex.enrollment)
    assert FrameDetector(cfg).film is not None  # it reads the enrollment too


@pytest.mark.parametrize("kind", ["tse_gain", "ns_gain"])
def test_share_examples_label_each_bands_share(tiny, tmp_path, kind):  # noqa: F811
    """Per frame and band, the kept part's share of the band's energy (extract-speaker's target, denoise's dry
    speech; 0.5 where both are silent); the network gives one logit per band (tse_gain reads the enrollment) and
    trains, validates and loads like the others, with no threshold."""
    from speechx_cli.speechfree import TASK_OF
    from speechx_cli.train.simulate import Corpus, SimulationOptions, Simulator
    task = TASK_OF[kind]
    cfg = replace(SMALL, task=kind, bands=4)
    data = D.make_examples(tiny.root, 2, 0, cfg)
    ex = Simulator(Corpus.load(tiny.root, "train"), SimulationOptions(tasks=(task,))).example(0, 0, task)
    n = int(data["starts"][1])
    model = FrameDetector(cfg)
    np.testing.assert_allclose(data["labels"][:n], D.band_labels(model, ex.source - ex.target, ex.target))
    energy = model.band_energy(torch.from_numpy(ex.target)[None], n)[0].numpy()
    other = model.band_energy(torch.from_numpy(ex.source - ex.target)[None], n)[0].numpy()
    loud = (energy + other) > 1e-6
    np.testing.assert_allclose(data["labels"][:n][loud], (energy / (energy + other))[loud], rtol=1e-3, atol=1e-6)
    silent = np.zeros(4 * HOP, dtype=np.float32)
    np.testing.assert_allclose(D.band_labels(model, silent, silent), 0.5)
    reads = kind == "tse_gain"
    assert data["labels"].shape[1] == 4 and (model.film is not None) == reads and ("enroll" in data) == reads
    report = D.train(tmp_path / "share", tiny.root, 4, 2, 20, batch=2, max_frames=40, cfg=cfg, log=lambda *_: None)
    assert report["thresholds"] == [] and 0 < report["share_error"] < 1
    got = D.load(tmp_path / "share" / D.WEIGHTS_NAME)
    x, e = torch.from_numpy(_noise(0.5))[None], _noise(0.3) if reads else None
    assert got.cfg == cfg and got(x, 25, x if reads else None).shape == (1, 25, 4)
    assert got.probabilities(_noise(0.5), 25, e).shape == (25, 4)


def test_resumed_training_equals_straight_and_the_file_round_trips(tiny, tmp_path):  # noqa: F811
    kw = dict(corpus=tiny.root, examples=6, val_examples=2, steps=4, batch=2, max_frames=40, cfg=SMALL,
              save_every=3, log=lambda *_: None)
    straight = D.train(tmp_path / "a", **kw)
    assert D.train(tmp_path / "b", stop_at=2, **kw) is None  # killed after step 2
    resumed = D.train(tmp_path / "b", **kw)
    assert resumed["loss"] == straight["loss"] and resumed["threshold"] == straight["threshold"]
    one, two = D.load(tmp_path / "a" / D.WEIGHTS_NAME), D.load(tmp_path / "b" / D.WEIGHTS_NAME)
    for (k, v), w in zip(one.state_dict().items(), two.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    assert one.cfg.threshold == straight["threshold"] and 0 < straight["positive"] < 1
    x = torch.from_numpy(_noise(0.5))[None]
    assert one(x, 25).shape == (1, 25)


def test_examples_on_disk_are_memory_mapped_and_equal_the_ones_in_memory(tiny, tmp_path):  # noqa: F811
    """A run's examples go to one .npy per array (written piece by piece, read memory-mapped): the same
    arrays as in memory, 2-D share labels and enrollments too; a run made before keeps its .npz."""
    cfg = replace(SMALL, task="tse_gain", bands=4)  # labels (frames, bands) and enrollments
    memory = D.make_examples(tiny.root, 3, 0, cfg)
    (tmp_path / "run").mkdir()
    disk = D._examples(tmp_path / "run", "train", tiny.root, 3, 0, cfg)
    assert sorted(disk) == sorted(memory) == ["audio", "enroll", "enroll_starts", "labels", "starts"]
    for k in memory:
        np.testing.assert_array_equal(disk[k], memory[k], err_msg=k)
    assert isinstance(disk["audio"], np.memmap) and disk["labels"].shape[1] == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["data-train"]  # no partial folder left
    assert sorted(p.name for p in (tmp_path / "run" / "data-train").iterdir()) == [f"{k}.npy" for k in sorted(memory)]
    for a, b in zip(D._item(disk, 2, HOP), D._item(memory, 2, HOP)):
        np.testing.assert_array_equal(a, b)
    old = tmp_path / "old"
    old.mkdir()
    np.savez(old / "data-val.npz", **D.make_examples(tiny.root, 2, 5, SMALL))
    kept = D._examples(old, "val", tiny.root, 2, 5, SMALL)
    np.testing.assert_array_equal(kept["labels"], D.make_examples(tiny.root, 2, 5, SMALL)["labels"])
    assert not (old / "data-val").exists()


@pytest.mark.parametrize("bad", [dict(threshold=1.0), dict(n_fft=100), dict(layers=0), dict(bands=4),
                                 dict(task="tse_gain"), dict(task="tse_gain", bands=-1)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValueError):
        DetectorConfig(**bad).validate()


def test_an_inference_checkpoint_carries_a_detector_per_task(tiny_checkpoint, tmp_path):
    from speechx_cli import checkpoint
    assert checkpoint.load(tiny_checkpoint).detectors == {}
    torch.manual_seed(0)
    sr, ns = FrameDetector(SMALL).eval(), FrameDetector(replace(SMALL, task="ns", threshold=0.4)).eval()
    tse = FrameDetector(replace(SMALL, task="tse")).eval()
    silent = FrameDetector(replace(SMALL, task="tse_silent")).eval()
    share = FrameDetector(replace(SMALL, task="tse_gain", bands=16)).eval()
    speech = FrameDetector(replace(SMALL, task="ns_gain", bands=16)).eval()
    x = torch.from_numpy(_noise(0.6))[None]
    for half in (False, True):
        path = checkpoint.with_detectors(tiny_checkpoint, [sr, ns, tse, silent, share, speech],
                                         tmp_path / f"d{half}.safetensors", half=half)
        got = checkpoint.load(path).detectors
        assert sorted(got) == ["ns", "ns_gain", "sr", "tse", "tse_gain", "tse_silent"]
        assert (got["sr"].cfg, got["ns"].cfg, got["tse_gain"].cfg) == (sr.cfg, ns.cfg, share.cfg)
        for task, model in (("sr", sr), ("ns", ns), ("ns_gain", speech)):
            torch.testing.assert_close(got[task](x, 30), model(x, 30), atol=1e-2 if half else 0, rtol=0)
        for task, model in (("tse", tse), ("tse_silent", silent), ("tse_gain", share)):
            torch.testing.assert_close(got[task](x, 30, x), model(x, 30, x), atol=1e-2 if half else 0, rtol=0)
    # a codec replaced keeps them; a new detector replaces its task's only; keep=False takes the others out
    again = checkpoint.load(tmp_path / "dFalse.safetensors")
    kept = checkpoint.replace_codec(tmp_path / "dFalse.safetensors", again.codec, tmp_path / "kept.safetensors")
    assert sorted(checkpoint.load(kept).detectors) == ["ns", "ns_gain", "sr", "tse", "tse_gain", "tse_silent"]
    torch.manual_seed(1)
    sr2 = FrameDetector(SMALL).eval()
    got = checkpoint.load(checkpoint.with_detectors(kept, [sr2], tmp_path / "sr2.safetensors")).detectors
    torch.testing.assert_close(got["sr"](x, 30), sr2(x, 30))
    torch.testing.assert_close(got["ns"](x, 30), ns(x, 30))
    only = checkpoint.with_detectors(kept, [sr2], tmp_path / "only.safetensors", keep=False)
    assert sorted(checkpoint.load(only).detectors) == ["sr"]
    none = checkpoint.with_detectors(kept, [], tmp_path / "none.safetensors", keep=False)
    assert checkpoint.load(none).detectors == {}
    with pytest.raises(checkpoint.CheckpointError, match="two detectors"):
        checkpoint.with_detectors(kept, [sr, sr2], tmp_path / "two.safetensors")


def test_export_puts_a_trained_detector_into_a_checkpoint(tiny_checkpoint, tmp_path):
    from typer.testing import CliRunner

    from speechx_cli import checkpoint
    from speechx_cli.cli import app
    torch.manual_seed(1)
    model = FrameDetector(SMALL).eval()
    ns = FrameDetector(replace(SMALL, task="ns")).eval()
    D.save(tmp_path / "det.safetensors", model)
    D.save(tmp_path / "ns.safetensors", ns)
    out = tmp_path / "with.safetensors"
    r = CliRunner().invoke(app, ["train", "export", str(tiny_checkpoint), str(out), "--codec-checkpoint",
                                 str(tiny_checkpoint), "--detector", str(tmp_path / "det.safetensors"),
                                 "--detector", str(tmp_path / "ns.safetensors")])
    assert r.exit_code == 0, r.output
    x = torch.from_numpy(_noise(0.4))[None]
    got = checkpoint.load(out).detectors
    torch.testing.assert_close(got["sr"](x, 20), model(x, 20))
    torch.testing.assert_close(got["ns"](x, 20), ns(x, 20))
    r = CliRunner().invoke(app, ["train", "export", str(tiny_checkpoint), str(tmp_path / "bad.safetensors"),
                                 "--codec-checkpoint", str(tiny_checkpoint), "--detector", str(tiny_checkpoint)])
    assert r.exit_code != 0 and not (tmp_path / "bad.safetensors").exists()  # not a detector file


def test_a_detector_is_made_for_its_codecs_frames(tiny, tiny_checkpoint, tmp_path):  # noqa: F811
    from speechx_cli import checkpoint
    at24 = DetectorConfig(sample_rate=24_000, n_mels=16, channels=8, layers=2, hidden=8)
    data16, data24 = D.make_examples(tiny.root, 2, 0, SMALL), D.make_examples(tiny.root, 2, 0, at24)
    assert len(data24["audio"]) == len(data24["labels"]) * HOP  # resampled to 24 kHz, framed by its hop
    assert abs(len(data24["labels"]) - 1.5 * len(data16["labels"])) <= 2
    with pytest.raises(checkpoint.CheckpointError, match="train it with the codec's"):
        checkpoint.with_detectors(tiny_checkpoint, [FrameDetector(at24)], tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_bad_runs_are_one_line_errors(tiny, tmp_path):  # noqa: F811
    from typer.testing import CliRunner
    run = ["run", str(tmp_path / "d"), "--examples", "2", "--val-examples", "1", "--steps", "1", "--batch", "1"]
    r = CliRunner().invoke(D.app, [*run, "--corpus", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "nowhere" in r.output and "Traceback" not in r.output
    assert CliRunner().invoke(D.app, [*run, "--corpus", str(tiny.root)]).exit_code == 0
    again = CliRunner().invoke(D.app, [*run[:-4], "--steps", "2", "--batch", "1", "--corpus", str(tiny.root)])
    assert again.exit_code == 2 and "other settings" in again.output
    share = ["run", str(tmp_path / "s"), *run[2:], "--corpus", str(tiny.root), "--task", "ns_gain", "--bands", "6"]
    assert CliRunner().invoke(D.app, share).exit_code == 0
    assert D.load(tmp_path / "s" / D.WEIGHTS_NAME).cfg.bands == 6
    bad = CliRunner().invoke(D.app, [*share[:-1], "0"])
    assert bad.exit_code == 2 and "bands" in bad.output
