"""Notebook 00's report (data audit): the figures of the splits, and the words on their balance, the leakage
check and the answer, from what `helpers.stages.audit` measured."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.data.audit import make_leakage_table
from helpers.data.pairs import PairSet, PairSplits
from helpers.data.scene_stats import describe_scene_stats
from helpers.stages.audit import DIGIT_WRITERS, make_leak_scope
from helpers.stages.words import markdown, render, render_answer

# What notebook 00 shows; the lower-layer table and words are imported above so the notebook needs this module.
__all__ = ["describe_answer", "describe_balance", "describe_leakage", "describe_scene_stats", "make_leakage_table",
           "markdown", "plot_sample_pairs", "plot_split_balance"]


def plot_sample_pairs(s: PairSet, n_per_label: int = 6, seed: int = 0):
    """A grid: one row of pairs per label (top: different, bottom: same)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, n_per_label, figsize=(1.6 * n_per_label, 3.6), squeeze=False)
    for row, label in enumerate((0, 1)):
        idx = np.flatnonzero(s.y == label)
        pick = rng.choice(idx, size=min(n_per_label, idx.size), replace=False) if idx.size else []
        for col in range(n_per_label):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(pick):
                i = pick[col]
                img = np.concatenate([s.xa[i, 0], np.full((s.xa.shape[2], 1), 0.3), s.xb[i, 0]], axis=1)
                ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
                if col == 0:
                    ax.set_title("y = 1 (same)" if label else "y = 0 (different)", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_split_balance(summary: pd.DataFrame, freq: pd.DataFrame | None = None):
    """Pairs and positive rate per split, and (when known) digit frequency per split."""
    import matplotlib.pyplot as plt

    ncols = 2 if freq is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 3.2), squeeze=False)
    ax = axes[0, 0]
    pos = summary["pairs"] * summary["positive rate"]
    ax.bar(summary.index, summary["pairs"] - pos, label="y = 0")
    ax.bar(summary.index, pos, bottom=summary["pairs"] - pos, label="y = 1")
    ax.set_ylabel("pairs")
    ax.set_title("pairs per split and label")
    ax.legend()
    if freq is not None:
        freq.plot.bar(ax=axes[0, 1], width=0.8)
        axes[0, 1].set_ylabel("share of pair members")
        axes[0, 1].set_title("digit frequency per split")
    fig.tight_layout()
    return fig


def describe_balance(summary: pd.DataFrame) -> str:
    """One-line takeaway on split sizes and label balance (template block ``balance``)."""
    rates = summary["positive rate"]
    return render("00_data_audit", "balance", pairs=int(summary["pairs"].sum()), rate_low=float(rates.min()),
                  rate_high=float(rates.max()), balance_tolerance=0.05)


def describe_leakage(leak: dict[str, Any], splits: PairSplits) -> str:
    """What the leakage check compared, with the counts, and what the split does not keep apart (template
    block ``leakage``)."""
    scope = make_leak_scope(splits, leak)
    return render("00_data_audit", "leakage", ids_available=bool(leak.get("ids_available")),
                  pairs_per_split=list(scope["pairs_per_split"].values()),
                  sources_per_split=list(scope["sources_per_split"].values()), shared=leak.get("leaked_sources"),
                  duplicates=int(leak["duplicate_pairs_across_splits"]), not_checked=scope["not_checked"])


def describe_answer(summary: pd.DataFrame, leak: dict[str, Any], splits: PairSplits, scene_stats: pd.DataFrame,
                    tolerance: float = 0.25) -> str:
    """The notebook's answer (template block ``answer``), filled from its tables."""
    n, rates = summary["pairs"], summary["positive rate"]
    label = scene_stats.columns[0]
    rel = ((scene_stats[label] - scene_stats["JRDB reference"]).abs() / scene_stats["JRDB reference"].abs()).dropna()
    return render_answer("00_data_audit", n_train=int(n["train"]), n_val=int(n["val"]), n_test=int(n["test"]),
                        source=splits.source.split(";")[0].split(" (")[0], rate_low=float(rates.min()),
                        rate_high=float(rates.max()), shared=leak.get("leaked_sources"),
                        duplicates=int(leak["duplicate_pairs_across_splits"]),
                        writers=DIGIT_WRITERS if splits.name == "digit_pairs" else None,
                        scenes_generated=label == "generated", stats_within=int((rel <= tolerance).sum()),
                        stats_n=len(rel), tolerance=tolerance)
