"""Notebook 05: the stacking report: fair references, paired tests over the unit, the goal verdict from the
interval of the error ratio, trimmed tables and figures, and the computed answer."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers.data.pairs import dataset_labels, load_pair_dataset
from helpers.data.predictions import BasePredictions, load_base_predictions
from helpers.evaluation.stacking import (BEST, check_no_leakage, evaluate_stacking, goal_verdict, LOGREG,
                                         make_error_correlation, make_split_keys, rank_by_validation, STACK,
                                         StackingResult, TOPK)
from helpers.evaluation.stats import format_p, unit_of

# What notebook 05 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["check_no_leakage", "dataset_labels", "describe_answer", "describe_diversity", "describe_goal",
           "describe_leakage", "describe_paired", "describe_topk", "evaluate_stacking", "load_base_predictions",
           "load_pair_dataset", "make_answer_headline", "make_claims_table", "make_error_correlation",
           "make_goal_table", "make_leakage_record", "make_metrics_view", "make_paired_view", "make_split_keys",
           "plot_error_correlation", "plot_meta_importance", "plot_method_comparison", "top_by_validation", "unit_of"]


# What M1 reports for stage 4 on its own data (validation accuracy, 10 base models).
NOTE_001_STACKING_CLAIM = {"stacking_val_acc": 0.9309, "best_single_val_acc": 0.8875, "n_base_models": 10}


def make_claims_table(result: StackingResult) -> pd.DataFrame:
    """M1's stage-4 claim next to what this run measured (their data vs this data)."""
    h = result.headline()
    claim = NOTE_001_STACKING_CLAIM
    return pd.DataFrame([
        {"quantity": "base models", "M1 (their data)": claim["n_base_models"], "this run": h["n_base_models"]},
        {"quantity": "best single accuracy", "M1 (their data)": claim["best_single_val_acc"],
         "this run": h["best_single_test_acc"]},
        {"quantity": "stacking accuracy", "M1 (their data)": claim["stacking_val_acc"],
         "this run": h["stacking_test_acc"]},
        {"quantity": "error ratio stacking / best single",
         "M1 (their data)": (1 - claim["stacking_val_acc"]) / (1 - claim["best_single_val_acc"]),
         "this run": h["error_ratio"]},
    ])


def make_leakage_record(table: pd.DataFrame) -> dict[str, Any]:
    """The run card's record of the leakage check that ran (`check_no_leakage` raises on any leak): what was
    compared, the counts, and the verdict."""
    return {"checked": "every base model's training examples (its recorded content keys, else its training "
                       "split's) against the validation rows the meta-learner trains on and the test rows it is "
                       "scored on, by order-free content keys",
            "base_models": int(len(table)), "checked_with_train_keys": int((table["checked_with"] == "train_keys").sum()),
            "assumed_train_split": int((table["record"] != "recorded").sum()),
            "val_rows_seen": int(table["val_rows_seen"].sum()), "test_rows_seen": int(table["test_rows_seen"].sum()),
            "selected_on_val": int((table["selected_on"] == "val").sum()),
            "verdict": "passed" if table["val_rows_seen"].sum() == 0 and table["test_rows_seen"].sum() == 0 else "FAILED"}


def make_goal_table(result: StackingResult, goal_ratio: float = 0.8) -> pd.DataFrame:
    """The goal "stacking's test error <= goal_ratio x the best single model's", and what limits it.

    Rows: the two errors, their ratio with its 95% interval over the data's independent unit
    (`evaluate_error_ratio`), the verdict from that interval (met / missed / undecided), the error stacking
    would have needed, the same ratio against the best single model recalibrated on validation (what
    ensembling adds beyond recalibration), and two limits: the share of test examples *every* base model
    gets wrong (no combination of their votes fixes those) and the mean pairwise error correlation on
    validation (high = little diversity to exploit).
    """
    yt = result.base.test_y
    r = result.error_ratio
    e_b = float(((result.test_pred[BEST] >= 0.5) != yt).mean())
    e_s = float(((result.test_pred[STACK] >= 0.5) != yt).mean())
    e_cal = float(((result.test_pred["best single, recalibrated on val"] >= 0.5) != yt).mean())
    corr = make_error_correlation(result.base).to_numpy()
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    rows = [
        ("best single model: test error", e_b),
        ("stacking: test error", e_s),
        ("error ratio stacking / best single", r["ratio"]),
        ("error ratio, 95% interval low", r["ci_low"]),
        ("error ratio, 95% interval high", r["ci_high"]),
        ("interval method", r.get("method", "")),
        ("goal: ratio at most", goal_ratio),
        ("goal verdict (from the interval)", goal_verdict(r["ci_low"], r["ci_high"], goal_ratio)),
        ("stacking error needed for the goal", goal_ratio * e_b),
        ("test examples short of the goal (point estimate)",
         max(0, int(np.ceil((e_s - goal_ratio * e_b) * yt.size - 1e-9)))),
        ("best single recalibrated on val: test error", e_cal),
        ("error ratio stacking / recalibrated best single", e_s / e_cal if e_cal > 0 else float("nan")),
        ("limit: share of test examples every base model gets wrong",
         float(((result.base.test_prob >= 0.5) != yt[:, None]).all(axis=1).mean())),
        ("limit: mean pairwise error correlation (val)",
         float(np.nanmean(off)) if off.size and np.isfinite(off).any() else float("nan")),
        ("base models", result.base.n_models),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


def describe_leakage(table: pd.DataFrame) -> str:
    """One line on the leakage check's outcome (it raised if anything leaked)."""
    assumed = int((table["record"] != "recorded").sum())
    keyed = int((table["checked_with"] == "train_keys").sum())
    on_val = int((table["selected_on"] == "val").sum())
    text = (f"Leakage check passed for {len(table)} base models: none trained on a validation or test example "
            f"({keyed} checked against their recorded training examples, {len(table) - keyed} against their "
            f"training split; {assumed} did not record what they trained on and were assumed to use 'train').")
    if on_val:
        text += (f" Note: {on_val} of them used the validation split for early stopping or checkpoint choice "
                 "(selection, not training): their validation probabilities can be slightly optimistic, which "
                 "also favours them when models are ranked on validation.")
    return text


def top_by_validation(base: BasePredictions, n: int = 10) -> list[str]:
    """Names of the ``n`` best base models by validation accuracy (then log-loss)."""
    return [base.names[j] for j in rank_by_validation(base)[:n]]


def describe_diversity(corr: pd.DataFrame) -> str:
    c = corr.to_numpy()
    off = c[~np.eye(c.shape[0], dtype=bool)]
    if not off.size or not np.isfinite(off).any():
        return "Fewer than two base models with errors: no diversity to measure."
    i, j = np.unravel_index(np.nanargmin(np.where(np.eye(c.shape[0], dtype=bool), np.nan, c)), c.shape)
    return (f"Mean pairwise error correlation {np.nanmean(off):.3f} over all {c.shape[0]} base models (range "
            f"{np.nanmin(off):.3f} to {np.nanmax(off):.3f}); the most complementary pair is "
            f"{corr.index[i]} / {corr.columns[j]}.")


def describe_topk(result: StackingResult) -> str:
    t = result.topk
    chosen = t[t["chosen"]].iloc[0]
    return (f"The top-k average uses the {int(chosen['k'])} best base models by validation accuracy "
            f"(validation accuracy {chosen['val_acc']:.4f}; k from 1 to {len(t)} gives "
            f"{t['val_acc'].min():.4f}–{t['val_acc'].max():.4f}); chosen on validation, so its test score is a fair reference.")


def _p_text(r) -> str:
    """The Holm-adjusted p of one paired-table row; a bootstrap bound is shown as an upper bound."""
    return f"Holm p ≤ {r.p_holm:.2g}" if r.p_is_bound else f"Holm {format_p(r.p_holm)}"


def make_paired_view(result: StackingResult) -> pd.DataFrame:
    """The paired tests as shown: stacking minus each reference, its interval, raw and Holm-adjusted p, verdict."""
    df = result.paired.copy()
    acc = result.comparison.set_index("method")["test_acc"]
    df.insert(1, "reference_test_acc", df["reference"].map(acc))
    df["p (raw)"] = [f"p < {r.p_value:.0e}" if r.p_is_bound else format_p(r.p_value) for r in df.itertuples()]
    df["p (Holm)"] = [_p_text(r) for r in df.itertuples()]
    cols = ["reference", "reference_test_acc", "stacking_minus_reference", "ci_low", "ci_high", "p (raw)", "p (Holm)",
            "verdict", "method"]
    return df[cols].set_index("reference")


def make_metrics_view(table: pd.DataFrame) -> pd.DataFrame:
    """metrics.json as shown: p-values as text (never a rounded 0; a bootstrap bound reads as its value,
    an upper bound); the file keeps the numbers."""
    out = table.astype(object)
    for key in out.index[out.index.str.endswith(("_p", "_p_value"))]:
        v = out.loc[key, "value"]
        out.loc[key, "value"] = format_p(float(v), 1e-16) if isinstance(v, (int, float)) and np.isfinite(v) else v
    return out


def describe_paired(result: StackingResult) -> str:
    lines = []
    for r in result.paired.itertuples():
        lines.append(f"stacking vs {r.reference}: {r.stacking_minus_reference:+.4f} (95% interval "
                     f"{r.ci_low:+.4f} to {r.ci_high:+.4f}), {r.verdict} ({_p_text(r)}, {len(result.paired)} tests)")
    return "\n".join(lines) + f"\nUnit: {result.paired['method'].iloc[0]}."


def describe_goal(goal: pd.DataFrame) -> str:
    v = goal["value"]
    ratio, target = float(v["error ratio stacking / best single"]), float(v["goal: ratio at most"])
    lo, hi = float(v["error ratio, 95% interval low"]), float(v["error ratio, 95% interval high"])
    verdict = str(v["goal verdict (from the interval)"])
    why = {"met": f"the whole interval lies below {target:g}",
           "missed": f"the whole interval lies above {target:g}",
           "undecided": f"the interval contains {target:g}, so this test split cannot tell"}[verdict]
    text = (f"Goal {verdict.upper()}: stacking's test error {float(v['stacking: test error']):.4f} vs the best single "
            f"model's {float(v['best single model: test error']):.4f} — ratio {ratio:.3f} (95% interval {lo:.3f}–"
            f"{hi:.3f}, {v['interval method']}); goal ≤ {target:g}, and {why}.")
    r_cal = float(v["error ratio stacking / recalibrated best single"])
    text += (f" Against the best single model recalibrated on validation (test error "
             f"{float(v['best single recalibrated on val: test error']):.4f}) the ratio is {r_cal:.3f}.")
    if verdict != "met":
        text += (f" Limits: {float(v['limit: share of test examples every base model gets wrong']):.4f} of test "
                 f"examples are wrong for every base model; mean error correlation "
                 f"{float(v['limit: mean pairwise error correlation (val)']):.3f}.")
    return text


def describe_answer(result: StackingResult, goal_ratio: float = 0.8) -> str:
    """The notebook's answer in two to four sentences: stacking's accuracy, each reference with its paired
    verdict (Holm), and the goal verdict from the interval of the error ratio."""
    h = result.headline(goal_ratio)
    acc = result.comparison.set_index("method")["test_acc"]
    names = {BEST: f"the best single model ({result.best_single})", TOPK: f"the top-{result.topk_k} average",
             LOGREG: "the logistic-regression meta-learner"}
    refs = "; ".join(f"{names.get(r.reference, r.reference)} {acc[r.reference]:.4f} "
                     f"({r.stacking_minus_reference:+.4f}, {r.verdict}, {_p_text(r)})"
                     for r in result.paired.itertuples())
    return (f"On the test split of {result.dataset}, LightGBM stacking over {h['n_base_models']} base models scores "
            f"{h['stacking_test_acc']:.4f} (95% interval {h['stacking_ci_low']:.4f}–{h['stacking_ci_high']:.4f} "
            f"over {result.unit}s). Against the references, paired over {result.unit}s and Holm-adjusted: {refs}. "
            f"Its error is {h['error_ratio']:.3f}× the best single model's (95% interval {h['error_ratio_ci_low']:.3f}–"
            f"{h['error_ratio_ci_high']:.3f}), so the goal of at most {goal_ratio:g}× is {h['goal_verdict'].upper()}.")


def make_answer_headline(result: StackingResult, goal_ratio: float = 0.8) -> dict[str, Any]:
    h = result.headline(goal_ratio)
    return {"stacking test accuracy": h["stacking_test_acc"],
            f"stacking − top-{result.topk_k} average": h["stacking_test_acc"] - h["topk_average_test_acc"],
            "error ratio, 95% upper end": h["error_ratio_ci_high"]}


def plot_error_correlation(corr: pd.DataFrame, keep: Sequence[str] | None = None, ax=None):
    """Heatmap of the error correlations (validation split) of the base models in ``keep`` (all when None)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    corr = corr.loc[list(keep), list(keep)] if keep is not None else corr
    n = corr.shape[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    sns.heatmap(corr, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=n <= 16, fmt=".2f",
                annot_kws={"size": 7}, square=True, cbar_kws={"shrink": 0.7, "label": "error correlation"})
    ax.set_title(f"Error correlation, validation split ({n} best base models by validation)", fontsize=9)
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    return ax.figure


def plot_meta_importance(importance: pd.DataFrame, ax=None):
    """Horizontal bars: share of the LightGBM meta-learner's split gain per base model (fitted on validation)."""
    import matplotlib.pyplot as plt

    df = importance.sort_values("gain_share")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.3 * len(df)))
    ax.barh(df["model"], df["gain_share"], color="tab:blue")
    ax.set_xlabel("share of total split gain (meta-learner fitted on the validation split)")
    ax.set_title("LightGBM meta-learner: which base models it relies on")
    ax.tick_params(axis="y", labelsize=7)
    return ax.figure


def plot_method_comparison(comparison: pd.DataFrame, unit: str = "row", ax=None):
    """Test accuracy of each method with its 95% interval over the unit; dashed line = best single model."""
    import matplotlib.pyplot as plt

    df = comparison.reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(df)))
    y = np.arange(len(df))
    err = np.vstack([df["test_acc"] - df["ci_low"], df["ci_high"] - df["test_acc"]])
    colors = ["tab:red" if m == STACK else "tab:gray" for m in df["method"]]
    ax.errorbar(df["test_acc"], y, xerr=err, fmt="none", ecolor="black", capsize=3)
    ax.scatter(df["test_acc"], y, c=colors, zorder=3)
    best = df.loc[df["method"] == BEST, "test_acc"]
    if len(best):
        ax.axvline(float(best.iloc[0]), ls="--", color="tab:gray", lw=1)
    ax.set_yticks(y, df["method"])
    ax.invert_yaxis()
    ax.set_xlabel(f"test-split accuracy (95% interval over {unit}s)")
    ax.set_title("Ensembles vs the references, same test split")
    return ax.figure
