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

    import textwrap

    cm = np.asarray(cm, dtype=float)
    k = cm.shape[0]
    # Long class names wrap at spaces onto two lines, and the cells grow with them, so neighbouring
    # labels never run into each other; the title wraps to the figure's width.
    labels = [textwrap.fill(str(s), 12) for s in (labels if labels is not None else range(k))]
    widest = max((len(line) for s in labels for line in s.splitlines()), default=1)
    cell = max(0.75, 0.09 * widest + 0.2)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    if ax is None:
        fig, ax = plt.subplots(figsize=(1.4 + cell * k, 1.0 + 0.85 * cell * k))
    title = textwrap.fill(title, max(24, int(ax.figure.get_figwidth() * 11)))
    fig = ax.figure
    ax.imshow(shown, cmap="Blues", vmin=0)
    ax.grid(False)
    for i in range(k):
        for j in range(k):
            txt = f"{shown[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, txt, ha="center", va="center", fontsize=9,
                    color="white" if shown[i, j] > 0.6 * shown.max() else "black")
    slant = k > 2 and widest > 4
    ax.set_xticks(range(k), labels, rotation=30 if slant else 0, ha="right" if slant else "center")
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


def tidy_figure(fig):
    """Make a finished figure readable before it is saved or shown: any text that is not valid
    mathtext (a name with ``$`` or ``_`` drawn as a label) is drawn literally instead of failing the
    draw; log axes label their ticks without mathtext; a legend that covers bars, points or line
    vertices moves outside its axes (right of the rightmost panel, else below). Returns ``fig``."""
    from matplotlib.ticker import FixedFormatter, FuncFormatter, LogFormatter, LogFormatterSciNotation

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for fmt in (axis.get_major_formatter(), axis.get_minor_formatter()):
                # Labels given as strings (names): escaped in the formatter, so every redraw is safe.
                if isinstance(fmt, FixedFormatter):
                    fmt.seq = [_literal_text(s) for s in fmt.seq]
                elif isinstance(fmt, FuncFormatter) and not getattr(fmt.func, "_literal", False):
                    fmt.func = _literal_func(fmt.func)
            if isinstance(axis.get_major_formatter(), LogFormatterSciNotation):
                # the same ticks as plain text ("1e-04"; minor ones labelled when under ~a decade shows)
                axis.set_major_formatter(LogFormatter())
                axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    _literal_invalid_math(fig)
    if not hasattr(fig.canvas, "get_renderer"):
        # a Figure made without pyplot (e.g. 01's sampling panel) has a bare canvas: give it Agg's to measure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig)
    renderer = fig.canvas.get_renderer()
    fig.draw_without_rendering()
    rightmost = max((a.get_position().x1 for a in fig.axes), default=1.0)
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None and _legend_covers_data(ax, legend, renderer):
            _move_legend_outside(ax, legend, right=ax.get_position().x1 >= rightmost - 1e-6)
    return fig


def _literal_text(s: str) -> str:
    """A user string for a tick label, with ``$`` escaped so mathtext never parses it."""
    return str(s).replace("\\$", "$").replace("$", "\\$")


def _literal_func(func):
    def literal(x, pos=None):
        return _literal_text(func(x, pos))

    literal._literal = True
    return literal


def _literal_invalid_math(fig) -> None:
    """Titles, labels, legend entries and annotations that mathtext cannot parse are drawn literally."""
    from matplotlib.mathtext import MathTextParser
    from matplotlib.text import Text

    parser = MathTextParser("path")
    for text in fig.findobj(Text):
        s = text.get_text()
        if "$" not in s or not text.get_parse_math():
            continue
        try:
            parser.parse(s)
        except ValueError:
            text.set_parse_math(False)


def _legend_covers_data(ax, legend, renderer) -> bool:
    box = legend.get_window_extent(renderer)
    for patch in ax.patches:
        pb = patch.get_window_extent(renderer)
        if pb.width > 0 and pb.height > 0 and box.overlaps(pb):
            return True
    for line in ax.lines:
        xy = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=float))
        if len(xy) > 2 and _inside(box, xy):   # not axhline/axvline: two points spanning the axes
            return True
    for coll in ax.collections:
        offsets = coll.get_offset_transform().transform(coll.get_offsets())
        if len(offsets) and _inside(box, offsets):
            return True
    return False


def _inside(box, xy) -> bool:
    """Whether any finite display point of ``xy`` [N, 2] lies in ``box``."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return bool(((xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1) & (xy[:, 1] >= box.y0) & (xy[:, 1] <= box.y1)).any())


def _move_legend_outside(ax, legend, right: bool) -> None:
    handles, labels = legend.legend_handles, [t.get_text() for t in legend.get_texts()]
    size = legend.get_texts()[0].get_fontsize() if labels else None
    title = legend.get_title().get_text() or None
    if right:
        ax.legend(handles, labels, title=title, fontsize=size, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  borderaxespad=0.0)
    else:
        ax.legend(handles, labels, title=title, fontsize=size, loc="upper center", bbox_to_anchor=(0.5, -0.22),
                  ncol=min(len(labels), 3), borderaxespad=0.0)
