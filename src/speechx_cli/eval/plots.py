"""PNG figures of an evaluation report (matplotlib, Agg backend: no display needed).

    metric_bars     one metric: a bar per system in each subset, 95% interval as error bars
    spectrograms    one item: input, each system's output and the reference, stacked
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from speechx_cli.files import atomic_path

from . import metrics as M

SPEC_N_FFT = 512  # 32 ms at 16 kHz
SPEC_HOP = 128  # 8 ms
SPEC_FLOOR_DB = -90.0


def _pyplot():
    import matplotlib  # the eval extra's; only when plots are drawn

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def metric_bars(report, summary: dict, metric: str, info, path: Path) -> Path:
    """Grouped bars: x = subsets, one bar per system, error bars = the 95% interval (none for n < 2).
    info: the metric's report.Metric (its label and direction)."""
    plt = _pyplot()
    subsets, systems = report.subsets, report.systems
    width = 0.8 / max(len(systems), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 1.1 * len(subsets) * max(len(systems), 2) * 0.5), 3.2))
    x = np.arange(len(subsets))
    for k, system in enumerate(systems):
        cells = [summary[system][s][metric] for s in subsets]
        means = np.array([c["mean"] for c in cells], dtype=float)
        low = np.array([c["mean"] - c["ci95_low"] if math.isfinite(c["ci95_low"]) else 0.0 for c in cells])
        high = np.array([c["ci95_high"] - c["mean"] if math.isfinite(c["ci95_high"]) else 0.0 for c in cells])
        ax.bar(x + (k - (len(systems) - 1) / 2) * width, np.nan_to_num(means), width, label=system,
               yerr=[np.nan_to_num(low), np.nan_to_num(high)], capsize=3)
    ax.set_xticks(x, subsets)
    ax.set_ylabel(info.label + (" (higher is better)" if info.higher_is_better else " (lower is better)"))
    ax.set_title(f"{report.task}: {metric}", fontsize=10)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path)


def _log_spectrogram(x: np.ndarray) -> np.ndarray:
    import librosa  # seconds to import; only when spectrograms are drawn

    s = np.abs(librosa.stft(x, n_fft=SPEC_N_FFT, hop_length=SPEC_HOP)) ** 2  # (freq, frames)
    return np.maximum(10 * np.log10(s + 1e-12), SPEC_FLOOR_DB)


def spectrograms(signals: dict, path: Path) -> Path:
    """Stacked log spectrograms (16 kHz) of {"input": Output, system: Output, ..., "reference": Output}."""
    plt = _pyplot()
    order = [k for k in signals if k not in ("input", "reference")]
    names = (["input"] if "input" in signals else []) + order + (["reference"] if "reference" in signals else [])
    fig, axes = plt.subplots(len(names), 1, figsize=(8, 1.7 * len(names)), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        out = signals[name]
        x = M.as_16k(out.audio, out.sample_rate)
        spec = _log_spectrogram(x) if len(x) else np.full((SPEC_N_FFT // 2 + 1, 1), SPEC_FLOOR_DB)
        top = float(spec.max())
        ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                  extent=(0, len(x) / M.SR, 0, M.SR / 2000))
        ax.set_ylabel("kHz")
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    return _save(fig, path)
