"""Notebook 00 (data audit): what the later notebooks train and test on, and whether anything leaks."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.data.audit import (evaluate_leakage, make_dataset_card as make_pair_card, make_digit_frequency,
                                make_leakage_table, make_split_summary)
from helpers.data.digits import load_audit_pairs
from helpers.data.jrdb import load_scenes
from helpers.data.pairs import PairSet
from helpers.data.pairs import PairSplits
from helpers.data.scene_stats import describe_scene_stats, make_scene_stats_table
from helpers.data.scenes import select_keyframes
from helpers.stages.words import markdown, render, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 00 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_answer", "describe_balance", "describe_leakage", "describe_scene_stats", "evaluate_leakage", "load_audit_pairs", "load_scenes", "make_dataset_card", "make_digit_frequency", "make_leakage_table", "make_scene_stats_table", "make_split_summary", "plot_sample_pairs", "plot_split_balance", "select_keyframes"]


# scikit-learn's digits are the UCI test set: 1,797 images written by 13 people (load_digits().DESCR),
# with no writer id, so a split by source image cannot keep writers apart.
_DIGIT_WRITERS = 13



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
    scope = _leak_scope(splits, leak)
    return render("00_data_audit", "leakage", ids_available=bool(leak.get("ids_available")),
                  pairs_per_split=list(scope["pairs_per_split"].values()),
                  sources_per_split=list(scope["sources_per_split"].values()), shared=leak.get("leaked_sources"),
                  duplicates=int(leak["duplicate_pairs_across_splits"]), not_checked=scope["not_checked"])


def _leak_scope(splits: PairSplits, leak: dict[str, Any]) -> dict[str, Any]:
    """What the leakage check compared and on how many pairs and sources, and what it cannot see."""
    compared = ("source ids (ida, idb) of every pair, and every pair's content (order-free hash), between each two "
                "splits" if leak.get("ids_available") else "every pair's content (order-free hash) between each two "
                "splits; no ids, so shared sources were not compared")
    if splits.name == "digit_pairs":
        unchecked = (f"writers: the split by source image keeps images apart but not writers (the 1,797 UCI digits "
                     f"come from {_DIGIT_WRITERS} writers and carry no writer id), so test digits are new images by "
                     "writers also seen in training")
    else:
        unchecked = "anything coarser than a source id (the same person, writer or scene under different ids)"
    return {"compared": compared, "pairs_per_split": {k: len(s) for k, s in splits.items()},
            "sources_per_split": {k: None if s.sources is None else int(len(s.sources)) for k, s in splits.items()},
            "not_checked": unchecked}


def make_dataset_card(splits: PairSplits, leak: dict[str, Any]) -> dict[str, Any]:
    """The run card's dataset section (M3); its leakage check says what was compared, the counts per split
    and shared between splits, and what the split does not keep apart. ``data_leakage_prevention`` is the
    check's result (no source shared), not a promise."""
    card = make_pair_card(splits, leak)
    card["leakage_check"] = {**card["leakage_check"], **_leak_scope(splits, leak)}
    return card


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
                        writers=_DIGIT_WRITERS if splits.name == "digit_pairs" else None,
                        scenes_generated=label == "generated", stats_within=int((rel <= tolerance).sum()),
                        stats_n=len(rel), tolerance=tolerance)
