"""Figures shared by the training notebooks. Each takes data and an optional ``ax`` and returns the
figure; saving is ``ctx.save_figure``.

`plot_training_curves` overlays several runs: pass ``{"run name": history, ...}`` where a history
is the list of rows of ``history.json`` (or a DataFrame of them).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd


_TITLES = {"loss": "loss (solid: val, dashed: train)", "accuracy": "val accuracy", "f1": "val F1",
           "lr": "learning rate", "grad_norm": "gradient norm (mean per step)",
           "samples_per_s": "training samples/s"}


def _frames(history) -> dict[str, pd.DataFrame]:
    if isinstance(history, pd.DataFrame):
        return {"": history}
    if isinstance(history, Mapping):
        return {str(k): (v if isinstance(v, pd.DataFrame) else pd.DataFrame(list(v))) for k, v in history.items()}
    return {"": pd.DataFrame(list(history))}


def _axes_grid(n: int, ax, width: float = 3.6, height: float = 2.9):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
        return fig, list(axes[0])
    axes = list(np.atleast_1d(ax).ravel())
    if len(axes) < n:
        raise ValueError(f"plot needs {n} axes, got {len(axes)}")
    return axes[0].figure, axes[:n]


def plot_training_curves(history, metrics: Sequence[str] = ("loss", "accuracy", "lr", "grad_norm"), ax=None):
    """One panel per metric over epochs; several runs are overlaid in the same colours.

    history: rows of history.json, a DataFrame, or a mapping name -> either (overlay).
    metrics: "loss" (val solid, train dashed) or any history column, e.g. "f1", "lr", "samples_per_s".
    """
    import matplotlib.pyplot as plt

    runs = _frames(history)
    metrics = [m for m in metrics if m == "loss" or any(m in df for df in runs.values())]
    fig, axes = _axes_grid(len(metrics), ax)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, df) in enumerate(runs.items()):
        c = colours[i % len(colours)]
        if df.empty:
            continue
        for a, m in zip(axes, metrics):
            mk = "." if len(df) < 15 else None   # short runs: show the points
            if m == "loss":
                a.plot(df["epoch"], df["val_loss"], color=c, label=name or "val", marker=mk)
                if "train_loss" in df:
                    a.plot(df["epoch"], df["train_loss"], color=c, ls="--", alpha=0.7, marker=mk,
                           label=None if name else "train")
            elif m in df:
                a.plot(df["epoch"], df[m], color=c, label=name or None, marker=mk)
    from matplotlib.ticker import MaxNLocator

    max_epoch = int(max((df["epoch"].max() for df in runs.values() if not df.empty), default=1))

    for a, m in zip(axes, metrics):
        a.set_title(_TITLES.get(m, m), fontsize=10)
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if max_epoch <= 2:   # one or two epochs: avoid fractional ticks around a single point
            a.set_xticks(range(1, max_epoch + 1))
            a.set_xlim(0.5, max_epoch + 0.5)
        if m == "lr":
            a.set_yscale("log")
    if len(runs) > 1 or "" in runs:
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(cm, labels: Sequence[str] | None = None, normalize: bool = False, ax=None,
                          title: str = "confusion matrix"):
    """Heatmap of a confusion matrix (rows = truth, columns = prediction) with counts printed."""
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=float)
    k = cm.shape[0]
    labels = list(labels) if labels is not None else [str(i) for i in range(k)]
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.0 + 0.75 * k, 0.8 + 0.7 * k))
    fig = ax.figure
    ax.imshow(shown, cmap="Blues", vmin=0)
    ax.grid(False)
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=9,
                    color="white" if shown[i, j] > 0.6 * shown.max() else "black")
    ax.set_xticks(range(k), labels, rotation=30 if k > 2 else 0, ha="right" if k > 2 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title + (" (row-normalised)" if normalize else ""), fontsize=10)
    fig.tight_layout()
    return fig


def plot_probability_distributions(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5, ax=None,
                                   labels: tuple[str, str] = ("y = 0", "y = 1"), title: str = ""):
    """Histograms of P(y = 1) for each true class, with the decision threshold."""
    import matplotlib.pyplot as plt

    y = np.asarray(y).reshape(-1)
    prob = np.asarray(prob, dtype=float).reshape(-1)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.0, 3.0))
    fig = ax.figure
    bins = np.linspace(0, 1, 26)
    for cls, lab in zip((0, 1), labels):
        ax.hist(prob[y == cls], bins=bins, alpha=0.55, label=f"{lab} (n={int((y == cls).sum())})")
    ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("predicted P(y = 1)")
    ax.set_ylabel("pairs")
    ax.set_title(title or "predicted probabilities by true class", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_fusion_weights(weights: Mapping[str, Mapping[str, float]], ax=None):
    """Bar chart of the learned softmax weights of the six fusion branches, one group per run."""
    import matplotlib.pyplot as plt

    df = pd.DataFrame(weights)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.0))
    fig = ax.figure
    df.plot.bar(ax=ax, rot=25)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    ax.axhline(1 / max(len(df), 1), color="k", ls=":", lw=1, label="uniform")
    ax.set_ylabel("softmax weight")
    ax.set_title("learned fusion weights (sum to 1)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
