"""Figures a reader can read: legends off the data, confusion-matrix labels apart, names with ``$``/``_``
drawn literally instead of failing the draw."""
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from helpers.evaluation.plots import plot_confusion_matrix, tidy_figure  # noqa: E402


def _draw(fig) -> None:
    fig.savefig(io.BytesIO(), format="png")


def _boxes(fig, artists):
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists]


def test_a_legend_covering_bars_moves_off_them():
    fig, ax = plt.subplots(figsize=(4, 3))
    for i, name in enumerate(("train", "val", "test")):
        ax.bar(np.arange(10) + i * 0.25, np.full(10, 1.0), width=0.25, label=name)   # bars fill the axes
    ax.legend(loc="upper right")
    tidy_figure(fig)
    _draw(fig)
    legend = _boxes(fig, [ax.get_legend()])[0]
    assert not any(legend.overlaps(b) for b in _boxes(fig, ax.patches))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "val", "test"]


def test_a_legend_on_empty_space_stays():
    fig, ax = plt.subplots()
    ax.plot([0, 1, 2], [0, 0.1, 0.2], label="curve")
    ax.set_ylim(0, 10)
    ax.legend(loc="upper left")
    tidy_figure(fig)
    assert ax.get_legend()._loc == 2      # upper left, where it was put


def test_user_strings_with_dollar_and_underscore_draw():
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [1e-3, 1e-4, 1e-5])
    ax.set_yscale("log")
    ax.set_xticks([1, 2], ["lr_$_$", "$val_cos"])
    ax.set_title("04_multi_seed/stage2_s456 $^$")
    with np.testing.assert_raises(ValueError):
        _draw(fig)                          # the failure the picker hit
    tidy_figure(fig)
    _draw(fig)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr_\\$_\\$", "\\$val_cos"]


def test_confusion_matrix_labels_do_not_overlap():
    fig = plot_confusion_matrix([[50, 3], [7, 40]], ["different (0)", "same (1)"],
                                title="digit_pairs: test split of the stage-1 model, threshold 0.50")
    _draw(fig)
    ax = fig.axes[0]
    for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
        a, b = _boxes(fig, labels)
        assert not a.overlaps(b)
    assert "\n" in ax.get_title()           # the long title wraps to the figure's width


def test_a_log_axis_spanning_under_a_decade_keeps_readable_labels():
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.plot([1, 2], [1.2e-3, 6e-4])              # a learning rate that fell by half
    ax.set_yscale("log")
    tidy_figure(fig)
    _draw(fig)
    shown = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True) if t.get_text()]
    assert len(shown) >= 3 and not any("$" in s for s in shown)


def test_a_figure_made_without_pyplot_is_tidied():
    # 01's sampling panel builds matplotlib.figure.Figure directly: its canvas has no renderer of its own.
    from matplotlib.figure import Figure

    from helpers.evaluation.plots import tidy_figure
    fig = Figure(figsize=(4, 3))
    ax = fig.subplots()
    ax.bar(["a", "b"], [1, 2], label="counts")
    ax.legend()
    assert tidy_figure(fig) is fig
