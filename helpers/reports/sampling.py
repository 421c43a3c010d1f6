"""Notebook 01's report (pair sampling): the tables, figures, live panel and words of the sampling analysis,
from what `helpers.stages.sampling` measured; metrics.json's flat headline numbers."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.data.pair_sampling import _ratio, PairSample
from helpers.data.scene_pairs import make_split_method, MIN_GROUPS_PER_CLASS
from helpers.data.scene_stats import describe_scene_stats
from helpers.data.scenes import Scenes, TYPE_NAMES
from helpers.stages.sampling import evaluate_sampling_counts
from helpers.stages.words import markdown, render, render_answer

# What notebook 01 shows; the lower-layer words are imported above so the notebook needs this module.
__all__ = ["describe_answer", "describe_at_multiplier", "describe_crops", "describe_ratios", "describe_recall",
           "describe_scene_stats", "describe_type_coverage", "describe_wrap", "describe_written",
           "make_dataset_summary", "make_metrics", "make_ratio_table", "make_sampling_panel", "make_sweep_wide",
           "markdown", "plot_example_crops", "plot_pairs_per_frame", "plot_reduction_recall", "plot_seam_losses",
           "plot_sweep"]


def make_ratio_table(sample: PairSample) -> pd.DataFrame:
    """Positives and negatives after each step of the pipeline, what the step removed and how it changed
    the positive:negative ratio, next to the method notes' claims (docs/method.md, M0)."""
    c, st = sample.counts, sample.settings
    rows = [("all same-frame pairs", "every two people in a frame", c["all_positives"],
             c["all_pairs"] - c["all_positives"], ""),
            ("distance-limited candidates", _distance_step(c, st), c["candidate_positives"], c["candidate_negatives"],
             "70-80% fewer pairs than all"),
            ("+ group-inference sampling" if st["use_group_sampling"] else "(no group sampling)", _group_step(c, st),
             c["positives_sampled"], c["candidate_negatives"], "ratio 10:1 before"),
            ("+ negatives capped per frame", f"at most {st['max_negatives_per_frame']} negatives per frame: "
             f"-{c['candidate_negatives'] - c['negatives_capped']:,} negatives", c["positives_sampled"],
             c["negatives_capped"], ""),
            ("+ balanced (final)", _balance_step(c, st), c["positives"], c["negatives"], "ratio 2:1 after")]
    df = pd.DataFrame(rows, columns=["stage", "step", "positives", "negatives", "M0 claim"])
    df["pairs"] = df["positives"] + df["negatives"]
    df["positives per negative"] = [_ratio(a, b) for a, b in zip(df["positives"], df["negatives"])]
    before = df["positives per negative"].shift(1)
    df["ratio change"] = [_change(b, a) for b, a in zip(before, df["positives per negative"])]
    df["negatives per positive"] = [_ratio(b, a) for a, b in zip(df["positives"], df["negatives"])]
    df["pairs removed vs all"] = 1 - df["pairs"] / max(c["all_pairs"], 1)
    df["pairs per frame"] = df["pairs"] / max(c["frames"], 1)
    return df.set_index("stage")[["step", "positives", "negatives", "pairs", "positives per negative", "ratio change",
                                  "negatives per positive", "pairs removed vs all", "pairs per frame", "M0 claim"]]


def _distance_step(c: dict[str, int], st: dict[str, Any]) -> str:
    wrap = "wrapped" if st["use_wrap"] else "no wrap"
    return (f"distance rule (<= {st['distance_multiplier']:g} x wider box, {wrap}): "
            f"-{c['all_pairs'] - c['candidates']:,} pairs, {c['all_positives'] - c['candidate_positives']:,} "
            "of them interacting")


def _group_step(c: dict[str, int], st: dict[str, Any]) -> str:
    if not st["use_group_sampling"]:
        return "none: every interacting candidate kept"
    return (f"about {st['max_group_samples_ratio']:g} x n pairs per group of n: "
            f"-{c['candidate_positives'] - c['positives_sampled']:,} positives")


def _balance_step(c: dict[str, int], st: dict[str, Any]) -> str:
    r = st["stage1_balance_ratio"]
    if r <= 0:
        return "off (stage1_balance_ratio = 0)"
    cut_pos, cut_neg = c["positives_sampled"] - c["positives"], c["negatives_capped"] - c["negatives"]
    cut = f"-{cut_pos:,} positives" if cut_pos else f"-{cut_neg:,} negatives" if cut_neg else "nothing to trim"
    return f"to {r:g} negatives per positive: {cut}"


def _change(before: float, after: float) -> str:
    """'x0.55 (0.150 -> 0.083)': how a step changed the positives per negative."""
    if not np.isfinite(before) or not np.isfinite(after) or before == 0:
        return "" if not np.isfinite(before) else f"{before:.3g} -> {after:.3g}"
    return f"x{after / before:.3g} ({before:.3g} -> {after:.3g})"


def make_sweep_wide(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep as one row per multiplier: kept and recall with and without wrap, seam losses."""
    on = sweep[sweep["wrap"]].set_index("distance_multiplier")
    off = sweep[~sweep["wrap"]].set_index("distance_multiplier")
    return pd.DataFrame({"pairs kept (wrap)": on["frac_kept"], "recall (wrap)": on["positive_recall"],
                         "pairs kept (no wrap)": off["frac_kept"], "recall (no wrap)": off["positive_recall"],
                         "positives lost at seam (no wrap)": off["seam_positives_lost"],
                         "pairs per frame (wrap)": on["pairs_per_frame"]})


def describe_at_multiplier(at: dict[str, float], distance_multiplier: float) -> str:
    """Pairs kept and interacting pairs kept at the chosen multiplier, and what the wrap saves (template block)."""
    return render("01_pair_sampling", "at_multiplier", multiplier=f"{distance_multiplier:g}",
                  kept=at["candidate_frac_kept"], positive_recall=at["positive_recall"],
                  seam_lost=at["seam_positives_lost_without_wrap"], seam_lost_frac=at["seam_positives_lost_frac"])


def describe_ratios(sample: PairSample) -> str:
    """Which step moves the positive:negative ratio, and how far, computed from the ratio table (block ``ratios``)."""
    t = make_ratio_table(sample)
    r = t["positives per negative"].to_numpy()
    steps = [s.lstrip("+ ") for s in t.index[1:]]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = r[1:] / np.where(r[:-1] > 0, r[:-1], np.nan)
        size = np.abs(np.log(np.where(factor > 0, factor, np.nan)))
    big = int(np.nanargmax(size)) if np.isfinite(size).any() else 0
    verbs = {1: "raises it to", -1: "lowers it to", 0: "keeps it at"}
    moves = [(s, verbs[int(np.sign(f - 1))], v) for s, f, v in zip(steps[1:], factor[1:], r[2:]) if np.isfinite(f)]
    c = sample.counts
    return render("01_pair_sampling", "ratios", all_pairs=r[0], candidates=r[1], after_groups=r[2], steps=moves,
                  biggest=steps[big], biggest_factor=factor[big],
                  removed=1 - (c["positives"] + c["negatives"]) / max(c["all_pairs"], 1))


def describe_written(scenes: Scenes, folder, leak: dict[str, Any], unsplittable: str) -> str:
    """Where the pair datasets went, how they were split and what the leakage check found on the written arrays
    (template block ``written``); or why none were written."""
    gaps = [g for g in leak.get("closest_frames_apart", {}).values() if g is not None]
    return render("01_pair_sampling", "written", unsplittable=unsplittable.rstrip("."), folder=folder,
                  generated=bool(scenes.generated), by_sequence=make_split_method(scenes) == "by_sequence",
                  n_sequences=len(scenes.sequences), sequences_shared=sum(leak["sequences_shared"].values()),
                  ids_shared=sum(leak["person_ids_shared"].values()),
                  frames_shared=sum(leak.get("frames_shared", {}).values()), closest=min(gaps) if gaps else None)


def describe_recall(recall: pd.DataFrame) -> str:
    """Where the interacting pairs go, from the recall table's overall row (template block ``recall``)."""
    a = recall.loc["all"]
    n = max(int(a["interacting pairs"]), 1)
    lost = {"the distance rule": a["interacting pairs"] - a["after distance rule"],
            "group sampling": a["after distance rule"] - a["after group sampling"],
            "balancing": a["after group sampling"] - a["reach training"]}
    return render("01_pair_sampling", "recall", reached=int(a["reach training"]), interacting=n,
                  recall=a["end-to-end recall"], per_split=list(recall["end-to-end recall"].drop("all").items()),
                  lost=[(k, v / n) for k, v in lost.items()], with_inferred=a["recall incl. inferred"])


def describe_type_coverage(groups: pd.DataFrame, min_groups: int = MIN_GROUPS_PER_CLASS) -> str:
    """Whether every split holds enough groups of every interaction type to score the type head per class
    (template block ``type_coverage``)."""
    cells = groups[list(TYPE_NAMES)].stack()
    split, name = cells.idxmin()
    return render("01_pair_sampling", "type_coverage", min_groups=min_groups, fewest=int(cells.min()),
                  fewest_type=name, fewest_split=split, n_short=int((cells < min_groups).sum()), n_cells=len(cells),
                  smallest_split_sequences=int(groups["sequences"].min()))


def describe_wrap(sweep: pd.DataFrame, distance_multiplier: float) -> str:
    """What the wrap buys at the chosen multiplier, and how the two curves of the reduction-recall figure lie
    against each other at equal shares of pairs removed (template block ``wrap``)."""
    on = sweep[sweep["wrap"]].sort_values("reduction")
    off = sweep[~sweep["wrap"]].sort_values("reduction")
    inside = (on["reduction"] >= off["reduction"].min()) & (on["reduction"] <= off["reduction"].max())
    gap = np.interp(on["reduction"][inside], off["reduction"], off["positive_recall"]) - on["positive_recall"][inside]
    at_on = on[np.isclose(on["distance_multiplier"], distance_multiplier)]
    at_off = off[np.isclose(off["distance_multiplier"], distance_multiplier)]
    return render("01_pair_sampling", "wrap", multiplier=f"{distance_multiplier:g}",
                  lost=int(at_off["seam_positives_lost"].iloc[0]) if len(at_off) else 0,
                  extra=float(at_on["frac_kept"].iloc[0] - at_off["frac_kept"].iloc[0]) if len(at_on) and len(at_off)
                  else 0.0, most=float(np.abs(gap).max()) if len(gap) else 0.0, above=bool(gap.mean() > 0))


def make_metrics(scenes: Scenes, at: dict[str, float], sample: PairSample, ds: dict[str, dict[str, np.ndarray]],
                 recall: pd.DataFrame, groups: pd.DataFrame, unsplittable: str = "") -> dict[str, Any]:
    """The flat headline numbers of notebook 01 (metrics.json)."""
    c = sample.counts
    e2e = recall["end-to-end recall"]
    return {"pair_datasets_written": not unsplittable,**{k: at[k] for k in ("candidate_frac_kept", "positive_recall", "seam_positives_lost_without_wrap",
                                  "seam_positives_lost_frac")},
            "pos_neg_ratio_before": _ratio(c["candidate_positives"], c["candidate_negatives"]),
            "pos_neg_ratio_after_group_sampling": _ratio(c["positives_sampled"], c["candidate_negatives"]),
            "pos_neg_ratio_after_cap": _ratio(c["positives_sampled"], c["negatives_capped"]),
            "pos_neg_ratio_after": _ratio(c["positives"], c["negatives"]),
            "pair_reduction_vs_all": 1 - (c["positives"] + c["negatives"]) / max(c["all_pairs"], 1),
            "end_to_end_recall": _finite(e2e["all"]),
            **{f"end_to_end_recall_{k}": _finite(e2e[k]) for k in ds},
            "recall_incl_inferred": _finite(recall.loc["all", "recall incl. inferred"]),
            "type_min_groups_per_split": int(groups[list(TYPE_NAMES)].to_numpy().min()),
            "n_pairs_train": len(ds["train"]["y"]), "n_pairs_val": len(ds["val"]["y"]),
            "n_pairs_test": len(ds["test"]["y"]),
            "interacting_share_train": float(ds["train"]["y"].mean()) if len(ds["train"]["y"]) else None,
            "n_types_train": int(len(np.unique(ds["train"]["type"][ds["train"]["type"] >= 0]))),
            "n_frames": c["frames"], "people_per_frame": c["people"] / max(c["frames"], 1),
            "generated": bool(scenes.generated), "n_images": int(scenes.n_images),
            "split_method": make_split_method(scenes)}


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def describe_answer(at: dict[str, float], sample: PairSample, recall: pd.DataFrame, groups: pd.DataFrame,
                    distance_multiplier: float, min_groups: int = MIN_GROUPS_PER_CLASS, unsplittable: str = "") -> str:
    """The notebook's answer (template block ``answer``), filled from its tables."""
    r = make_ratio_table(sample)["positives per negative"]
    c = sample.counts
    return render_answer("01_pair_sampling", multiplier=f"{distance_multiplier:g}",
                        candidates_kept=at["candidate_frac_kept"], positive_recall=at["positive_recall"],
                        per_negative_before=float(r.iloc[2]), per_negative_after=float(r.iloc[3]),
                        balance_ratio=sample.settings["stage1_balance_ratio"],
                        trimmed_positives=int(c["positives_sampled"] - c["positives"]),
                        trimmed_negatives=int(c["negatives_capped"] - c["negatives"]),
                        end_to_end=float(recall.loc["all", "end-to-end recall"]),
                        with_inferred=float(recall.loc["all", "recall incl. inferred"]),
                        unsplittable=unsplittable.rstrip("."), min_groups=min_groups,
                        fewest_groups=int(groups[list(TYPE_NAMES)].to_numpy().min()))


def plot_example_crops(examples: dict[str, Any], ax=None):
    """Each example pair as a column: person a above person b, titled with the pair's label (``ax`` is used
    for the no-images note only: the pairs need a grid of their own)."""
    import matplotlib.pyplot as plt

    n = len(examples["titles"])
    if n == 0:
        fig, ax = _axes(ax, figsize=(6.4, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no stitched images: the data are geometry only (n_images = 0)", ha="center", va="center")
        return fig
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 4.6), squeeze=False)
    for k in range(n):
        for r, key in enumerate(("a", "b")):
            axes[r, k].imshow(examples[key][k].transpose(1, 2, 0))
            axes[r, k].set_xticks([])
            axes[r, k].set_yticks([])
        axes[0, k].set_title(examples["titles"][k], fontsize=7)
    axes[0, 0].set_ylabel("person a")
    axes[1, 0].set_ylabel("person b")
    fig.suptitle("Training pairs as the image models see them (person crops)", fontsize=10)
    return fig


def describe_crops(scenes: Scenes, size) -> str:
    """Where the pictures come from and how the crops are kept (template block ``crops``)."""
    return render("01_pair_sampling", "crops", n_images=scenes.n_images, root=scenes.root,
                  generated=bool(scenes.generated), size=list(size))


def _axes(ax, figsize=(6.4, 4.2)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def plot_reduction_recall(sweep: pd.DataFrame, chosen: float | None = None, ax=None):
    """Share of pairs removed (x) against positive recall (y), one curve per wrap setting."""
    fig, ax = _axes(ax)
    for wrap, style in ((True, "-o"), (False, "--s")):
        d = sweep[sweep["wrap"] == wrap]
        ax.plot(d["reduction"], d["positive_recall"], style, ms=4, label=f"wrap {'on' if wrap else 'off'}")
        if wrap:
            for _, r in d.iterrows():
                if float(r["distance_multiplier"]).is_integer():
                    ax.annotate(f"{r['distance_multiplier']:g}x", (r["reduction"], r["positive_recall"]),
                                textcoords="offset points", xytext=(4, -10), fontsize=8)
    if chosen is not None:
        c = sweep[(sweep["wrap"]) & np.isclose(sweep["distance_multiplier"], chosen)]
        if len(c):
            ax.plot(c["reduction"], c["positive_recall"], "r*", ms=14, label=f"chosen {chosen:g}x")
    ax.set_xlabel("share of same-frame pairs removed")
    ax.set_ylabel("share of interacting pairs kept (recall)")
    ax.set_title("Distance-limited pairing: reduction vs recall")
    ax.legend()
    return fig


def plot_sweep(sweep: pd.DataFrame, ax=None):
    """Share of pairs kept and recall against the multiplier, with and without wrap."""
    fig, ax = _axes(ax)
    for wrap, style in ((True, "-"), (False, "--")):
        d = sweep[sweep["wrap"] == wrap]
        tag = "wrap on" if wrap else "wrap off"
        ax.plot(d["distance_multiplier"], d["frac_kept"], style, color="tab:blue", label=f"all pairs kept ({tag})")
        ax.plot(d["distance_multiplier"], d["positive_recall"], style, color="tab:green",
                label=f"interacting pairs kept ({tag})")
    ax.set_xlabel("distance_multiplier (x max box width)")
    ax.set_ylabel("share kept")
    ax.set_ylim(0, 1.02)
    ax.set_title("What the distance rule keeps")
    ax.legend(fontsize=8)
    return fig


def plot_seam_losses(sweep: pd.DataFrame, ax=None):
    """Interacting pairs the rule loses at the seam when the wrap is ignored."""
    fig, ax = _axes(ax)
    d = sweep[~sweep["wrap"]]
    ax.bar(d["distance_multiplier"], d["seam_positives_lost"], width=0.35, color="tab:red")
    ax.set_xlabel("distance_multiplier")
    ax.set_ylabel("interacting pairs lost without wrap")
    ax.set_title("Positives lost at the panorama seam (wrap off)")
    return fig


def plot_pairs_per_frame(per_frame: pd.DataFrame, ax=None):
    """Distribution over frames of all pairs, candidates and sampled pairs (log scale)."""
    fig, ax = _axes(ax)
    cols = ["all pairs", "candidates", "sampled pairs"]
    data = [np.maximum(per_frame[c].to_numpy(), 0.5) for c in cols]
    ax.boxplot(data, tick_labels=cols, showfliers=False)
    ax.set_yscale("log")
    ax.set_ylabel("pairs per frame (log)")
    ax.set_title("Pairs per frame at each stage")
    return fig


def plot_panel_state(pairs: dict[str, np.ndarray], sweep: pd.DataFrame, distance_multiplier: float,
                     max_negatives_per_frame: int, use_wrap: bool, ax=None):
    """The panel's figure: the reduction-recall curve with the current setting and its counts."""
    fig, ax = _axes(ax)
    d = sweep[sweep["wrap"] == use_wrap]
    ax.plot(d["reduction"], d["positive_recall"], "-o", ms=3, color="0.5")
    c = evaluate_sampling_counts(pairs, distance_multiplier, max_negatives_per_frame, use_wrap)
    ax.plot([1 - c["candidate_frac_kept"]], [c["positive_recall"]], "r*", ms=14)
    ax.set_xlabel("share of same-frame pairs removed")
    ax.set_ylabel("recall of interacting pairs")
    ax.set_title(f"{distance_multiplier:g}x, cap {max_negatives_per_frame}, wrap {'on' if use_wrap else 'off'}: "
                 f"{c['positives_kept']} pos, {c['negatives_after_cap']} neg, {c['pairs_per_frame']:.1f} pairs/frame",
                 fontsize=9)
    return fig


def make_sampling_panel(pairs: dict[str, np.ndarray], sweep: pd.DataFrame, distance_multiplier: float = 3.0,
                        max_negatives_per_frame: int = 5, use_wrap: bool = True, interactive: bool = True):
    """An ipywidgets panel (multiplier, negatives cap, wrap) that redraws counts and the plot.

    With ``interactive=False`` (papermill, static HTML) it returns the static figure for the
    given setting instead, since widget state does not survive outside a live kernel."""
    import matplotlib.pyplot as plt

    if not interactive:
        fig = plot_panel_state(pairs, sweep, distance_multiplier, max_negatives_per_frame, use_wrap)
        plt.close(fig)  # shown once, as the cell's value, not again by the inline backend
        return fig
    import ipywidgets as wg

    # continuous_update=False: one redraw when a slider is released, not one per step of a drag.
    m = wg.FloatSlider(value=distance_multiplier, min=1.0, max=6.0, step=0.25, description="multiplier",
                       continuous_update=False)
    cap = wg.IntSlider(value=max_negatives_per_frame, min=0, max=15, description="neg cap", continuous_update=False)
    wrap = wg.Checkbox(value=use_wrap, description="wrap at seam")
    image, table = wg.Image(format="png"), wg.HTML()

    def redraw(*_):
        # The new picture replaces the old one in a single value change, so quick changes never leave
        # an emptied output area behind (clearing and redrawing an Output could show a blank figure).
        image.value = _panel_png(plot_panel_state(pairs, sweep, m.value, cap.value, wrap.value))
        table.value = _counts_table(evaluate_sampling_counts(pairs, m.value, cap.value, wrap.value)).to_html()

    for wdg in (m, cap, wrap):
        wdg.observe(redraw, names="value")
    redraw()
    return wg.VBox([wg.HBox([m, cap, wrap]), wg.HBox([image, table])])


def _panel_png(fig) -> bytes:
    import io as _bytes_io

    import matplotlib.pyplot as plt

    buf = _bytes_io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _counts_table(counts: dict[str, float]) -> pd.DataFrame:
    """Counts stay integers and shares get three decimals (one float column would print 139255.0000)."""
    shown = {k: (f"{v:,}" if isinstance(v, (int, np.integer)) else f"{v:.3f}") for k, v in counts.items()}
    return pd.Series(shown, dtype=object).to_frame("value")


def make_dataset_summary(ds: dict[str, dict[str, np.ndarray]], sequences: list[str]) -> pd.DataFrame:
    """Rows per split: pairs, interacting share, sequences, and the 5-type counts."""
    rows = []
    for name, a in ds.items():
        r = {"split": name, "pairs": len(a["y"]), "interacting share": float(a["y"].mean()) if len(a["y"]) else np.nan,
             "sequences": len(np.unique(a["seq"])), "frames": len(np.unique(a["seq"] * 10**7 + a["frame"]))}
        for t, tn in enumerate(TYPE_NAMES):
            r[tn] = int((a["type"] == t).sum())
        rows.append(r)
    return pd.DataFrame(rows).set_index("split")
