"""Notebook 05: the stacking report: goal table, leakage and diversity text, figures."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.data.pairs import load_pair_dataset
from helpers.data.predictions import load_base_predictions
from helpers.evaluation.stacking import (check_no_leakage, evaluate_stacking, make_error_correlation,
                                         make_split_keys, StackingResult)

# What notebook 05 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["check_no_leakage", "describe_diversity", "describe_goal", "describe_leakage", "evaluate_stacking", "load_base_predictions", "load_pair_dataset", "make_claims_table", "make_error_correlation", "make_goal_table", "make_split_keys", "plot_error_correlation", "plot_meta_importance", "plot_method_comparison"]



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


def make_goal_table(result: StackingResult, goal_ratio: float = 0.8, n_boot: int = 2000,
                    seed: int = 42) -> pd.DataFrame:
    """The goal "stacking's test error <= goal_ratio x the best single model's", and what limits it.

    Rows: the two errors, their ratio with a paired-bootstrap 95% interval, the error stacking would
    have needed, the gap in test examples, the same ratio against the best single model
    recalibrated on validation (what ensembling adds beyond recalibration), and two limits: the share of test examples that *every*
    base model gets wrong (no combination of their votes can fix those) and the base models' mean
    pairwise error correlation on validation (high = little diversity to exploit).
    """
    yt = result.base.test_y
    err_b = (result.test_pred["best single (chosen on val)"] >= 0.5) != yt
    err_s = (result.test_pred["LightGBM stacking"] >= 0.5) != yt
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, yt.size, size=(n_boot, yt.size))          # (n_boot, N) resampled rows
    eb, es = err_b[idx].mean(1), err_s[idx].mean(1)
    ratios = es[eb > 0] / eb[eb > 0]
    lo, hi = (np.quantile(ratios, [0.025, 0.975]) if ratios.size else (np.nan, np.nan))
    e_b, e_s = float(err_b.mean()), float(err_s.mean())
    ratio = e_s / e_b if e_b > 0 else float("nan")
    need = goal_ratio * e_b
    e_cal = float(((result.test_pred["best single, recalibrated on val"] >= 0.5) != yt).mean())
    all_wrong = float(((result.base.test_prob >= 0.5) != yt[:, None]).all(axis=1).mean())
    corr = make_error_correlation(result.base).to_numpy()
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    mean_corr = float(np.nanmean(off)) if off.size and np.isfinite(off).any() else float("nan")
    rows = [
        ("best single model: test error", e_b),
        ("stacking: test error", e_s),
        ("error ratio stacking / best single", ratio),
        ("error ratio, 95% bootstrap interval low", float(lo)),
        ("error ratio, 95% bootstrap interval high", float(hi)),
        ("goal: ratio at most", goal_ratio),
        ("goal met", bool(np.isfinite(ratio) and ratio <= goal_ratio)),
        ("stacking error needed for the goal", need),
        ("test examples short of the goal", max(0, int(np.ceil((e_s - need) * yt.size - 1e-9)))),
        ("best single recalibrated on val: test error", e_cal),
        ("error ratio stacking / recalibrated best single", e_s / e_cal if e_cal > 0 else float("nan")),
        ("limit: share of test examples every base model gets wrong", all_wrong),
        ("limit: mean pairwise error correlation (val)", mean_corr),
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
                 "(selection, not training): their validation probabilities can be slightly optimistic.")
    return text


def describe_diversity(corr: pd.DataFrame) -> str:
    c = corr.to_numpy()
    off = c[~np.eye(c.shape[0], dtype=bool)]
    if not off.size or not np.isfinite(off).any():
        return "Fewer than two base models with errors: no diversity to measure."
    i, j = np.unravel_index(np.nanargmin(np.where(np.eye(c.shape[0], dtype=bool), np.nan, c)), c.shape)
    return (f"Mean pairwise error correlation {np.nanmean(off):.3f} (range {np.nanmin(off):.3f} to {np.nanmax(off):.3f}); "
            f"the most complementary pair is {corr.index[i]} / {corr.columns[j]}.")


def describe_goal(goal: pd.DataFrame) -> str:
    v = goal["value"]
    ratio, target = float(v["error ratio stacking / best single"]), float(v["goal: ratio at most"])
    verdict = "MET" if bool(v["goal met"]) else "MISSED"
    text = (f"Goal {verdict}: stacking's test error {float(v['stacking: test error']):.4f} vs the best single "
            f"model's {float(v['best single model: test error']):.4f} — ratio {ratio:.3f} "
            f"(95% interval {float(v['error ratio, 95% bootstrap interval low']):.3f}–"
            f"{float(v['error ratio, 95% bootstrap interval high']):.3f}), goal ≤ {target:g}.")
    r_cal = float(v["error ratio stacking / recalibrated best single"])
    text += (f" Against the best single model recalibrated on validation (test error "
             f"{float(v['best single recalibrated on val: test error']):.4f}) the ratio is {r_cal:.3f}: "
             + ("most of the gain is ensembling, not recalibration." if r_cal <= (1 + ratio) / 2 else
                "much of the gain is recalibration to the unseen images of val/test, not ensembling."))
    if verdict == "MISSED":
        text += (f" Short by {int(v['test examples short of the goal'])} test examples "
                 f"(needed error ≤ {float(v['stacking error needed for the goal']):.4f}). Limits: "
                 f"{float(v['limit: share of test examples every base model gets wrong']):.4f} of test examples are "
                 f"wrong for every base model, mean error correlation "
                 f"{float(v['limit: mean pairwise error correlation (val)']):.3f}.")
    return text


def plot_error_correlation(corr: pd.DataFrame, ax=None):
    """Heatmap of the base models' error correlations."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = corr.shape[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    sns.heatmap(corr, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=n <= 16, fmt=".2f",
                annot_kws={"size": 7}, square=True, cbar_kws={"shrink": 0.7, "label": "error correlation"})
    ax.set_title("Error correlation of the base models (validation split)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    return ax.figure


def plot_meta_importance(importance: pd.DataFrame, ax=None):
    """Horizontal bars: share of the LightGBM meta-learner's split gain per base model."""
    import matplotlib.pyplot as plt

    df = importance.sort_values("gain_share")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.3 * len(df)))
    ax.barh(df["model"], df["gain_share"], color="tab:blue")
    ax.set_xlabel("share of total split gain")
    ax.set_title("LightGBM meta-learner: which base models it relies on")
    ax.tick_params(axis="y", labelsize=7)
    return ax.figure


def plot_method_comparison(comparison: pd.DataFrame, ax=None):
    """Test accuracy of each method with its 95% Wilson interval; dashed line = best single model."""
    import matplotlib.pyplot as plt

    df = comparison.reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(df)))
    y = np.arange(len(df))
    err = np.vstack([df["test_acc"] - df["ci_low"], df["ci_high"] - df["test_acc"]])
    colors = ["tab:red" if m == "LightGBM stacking" else "tab:gray" for m in df["method"]]
    ax.errorbar(df["test_acc"], y, xerr=err, fmt="none", ecolor="black", capsize=3)
    ax.scatter(df["test_acc"], y, c=colors, zorder=3)
    best = df.loc[df["method"] == "best single (chosen on val)", "test_acc"]
    if len(best):
        ax.axvline(float(best.iloc[0]), ls="--", color="tab:gray", lw=1)
    ax.set_yticks(y, df["method"])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (95% Wilson interval)")
    ax.set_title("Ensembles vs the best single model, same test split")
    return ax.figure
