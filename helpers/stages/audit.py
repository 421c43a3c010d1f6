"""Notebook 00 (data audit): what the later notebooks train and test on, and whether anything leaks."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.data.audit import (evaluate_leakage, make_dataset_card, make_digit_frequency, make_leakage_table,
                                make_split_summary)
from helpers.data.digits import load_audit_pairs
from helpers.data.jrdb import load_scenes
from helpers.data.pairs import PairSet
from helpers.data.scene_stats import make_scene_stats_table
from helpers.data.scenes import select_keyframes

# What notebook 00 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_balance", "describe_leakage", "evaluate_leakage", "load_audit_pairs", "load_scenes", "make_dataset_card", "make_digit_frequency", "make_leakage_table", "make_scene_stats_table", "make_split_summary", "plot_sample_pairs", "plot_split_balance", "select_keyframes"]



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
    """One-line takeaway on split sizes and label balance, computed from the summary table."""
    rates = summary["positive rate"]
    spread = float(rates.max() - rates.min())
    verdict = "balanced alike" if spread < 0.05 else "NOT balanced alike: compare accuracies with care"
    return (f"{int(summary['pairs'].sum()):,} pairs in all; positive rate {rates.min():.3f}–{rates.max():.3f} "
            f"across splits ({verdict}).")


def describe_leakage(leak: dict[str, Any]) -> str:
    dup = leak["duplicate_pairs_across_splits"]
    dup_txt = "no exact duplicate pair across splits" if dup == 0 else \
        f"WARNING: {dup} pairs appear in two splits with identical content"
    return f"{leak['leak_message']}; {dup_txt}."
