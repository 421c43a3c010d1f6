"""Notebook 05's report: the tables, figures and words made from what `helpers.stages.stacking` computed
(the stacking comparison, the goal, the distillation and the inference cost)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.core.display import make_dataset_table  # noqa: F401 (the notebook shows tables with it)
from helpers.data.predictions import BasePredictions
from helpers.evaluation.distillation import DistillResult, STUDENT_REFERENCES
from helpers.evaluation.ensemble_inference import SpeedResult
from helpers.evaluation.stacking import BEST, rank_by_validation, STACK, StackingResult
from helpers.evaluation.stats import format_p
from helpers.stages.words import markdown, render, render_answer  # noqa: F401 (markdown: the notebook shows words with it)


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


def describe_leakage(table: pd.DataFrame) -> str:
    """One line on the leakage check's outcome (it raised if anything leaked); template block ``leakage``."""
    return render("05_stacking", "leakage", n=len(table), keyed=int((table["checked_with"] == "train_keys").sum()),
                  assumed=int((table["record"] != "recorded").sum()), on_val=int((table["selected_on"] == "val").sum()))


def top_by_validation(base: BasePredictions, n: int = 10) -> list[str]:
    """Names of the ``n`` best base models by validation accuracy (then log-loss)."""
    return [base.names[j] for j in rank_by_validation(base)[:n]]


def describe_diversity(corr: pd.DataFrame) -> str:
    """The base models' mean pairwise error correlation, its range and the most complementary pair."""
    c = corr.to_numpy()
    off = c[~np.eye(c.shape[0], dtype=bool)]
    if not off.size or not np.isfinite(off).any():
        return render("05_stacking", "diversity", mean=None)
    i, j = np.unravel_index(np.nanargmin(np.where(np.eye(c.shape[0], dtype=bool), np.nan, c)), c.shape)
    return render("05_stacking", "diversity", mean=float(np.nanmean(off)), n=c.shape[0], low=float(np.nanmin(off)),
                  high=float(np.nanmax(off)), pair=(corr.index[i], corr.columns[j]))


def describe_topk(result: StackingResult) -> str:
    t = result.topk
    chosen = t[t["chosen"]].iloc[0]
    return render("05_stacking", "topk", k=int(chosen["k"]), val_acc=chosen["val_acc"], n=len(t),
                  low=t["val_acc"].min(), high=t["val_acc"].max())


def _p_text(r) -> str:
    """The Holm-adjusted p of one paired-table row; a bootstrap bound is shown as an upper bound."""
    return f"Holm p ≤ {r.p_holm:.2g}" if r.p_is_bound else f"Holm {format_p(r.p_holm)}"


def make_paired_view(result: StackingResult) -> pd.DataFrame:
    """The paired tests as shown: stacking minus each reference, its interval, raw and Holm-adjusted p, verdict."""
    df = result.paired.rename(columns={"ci_low_adjusted": "CI low (Holm)", "ci_high_adjusted": "CI high (Holm)"})
    df["p (raw)"] = [f"p < {r.p_value:.0e}" if r.p_is_bound else format_p(r.p_value) for r in df.itertuples()]
    df["p (Holm)"] = [_p_text(r) for r in df.itertuples()]
    cols = ["reference", "reference_test_acc", "stacking_minus_reference", "CI low (Holm)", "CI high (Holm)", "p (raw)",
            "p (Holm)", "verdict", "method"]
    return df[cols].set_index("reference")


def make_metrics_view(table: pd.DataFrame) -> pd.DataFrame:
    """metrics.json as shown: p-values as text (never a rounded 0; a bootstrap bound reads as its value,
    an upper bound); the file keeps the numbers."""
    out = table.astype(object)
    for key in out.index[out.index.str.endswith(("_p", "_p_value"))]:
        v = out.loc[key, "value"]
        out.loc[key, "value"] = format_p(float(v)) if isinstance(v, (int, float)) and np.isfinite(v) else v
    return out


def describe_paired(result: StackingResult) -> str:
    """Stacking against each reference: the difference with its Holm-adjusted interval and the verdict."""
    rows = [{"reference": r.reference, "diff": r.stacking_minus_reference, "ci_low": r.ci_low_adjusted,
             "ci_high": r.ci_high_adjusted, "verdict": r.verdict, "p_text": _p_text(r)}
            for r in result.paired.itertuples()]
    return render("05_stacking", "paired", rows=rows, method=result.paired["method"].iloc[0])


def describe_goal(goal: pd.DataFrame) -> str:
    """The goal verdict from the interval of the error ratio, with the errors and the limits (template block)."""
    v = goal["value"]
    return render("05_stacking", "goal", verdict=str(v["goal verdict (from the interval)"]),
                  error=float(v["stacking: test error"]), best_error=float(v["best single model: test error"]),
                  ratio=float(v["error ratio stacking / best single"]), low=float(v["error ratio, 95% interval low"]),
                  high=float(v["error ratio, 95% interval high"]), method=v["interval method"],
                  target=f'{float(v["goal: ratio at most"]):g}',
                  recalibrated_error=float(v["best single recalibrated on val: test error"]),
                  recalibrated_ratio=float(v["error ratio stacking / recalibrated best single"]),
                  all_wrong=float(v["limit: share of test examples every base model gets wrong"]),
                  correlation=float(v["limit: mean pairwise error correlation (val)"]))


def _answer_facts(result: StackingResult, goal_ratio: float) -> dict[str, Any]:
    h = result.headline(goal_ratio)
    return {"name": result.dataset, "n_models": h["n_base_models"], "accuracy": h["stacking_test_acc"],
            "ci_low": h["stacking_ci_low"], "ci_high": h["stacking_ci_high"], "ratio": h["error_ratio"],
            "ratio_low": h["error_ratio_ci_low"], "ratio_high": h["error_ratio_ci_high"], "goal": h["goal_verdict"]}


def _student_facts(name: str, d: "DistillResult", speed: "SpeedResult | None") -> dict[str, Any]:
    """The student against its teacher (Holm over the student's three references) and its speed-up."""
    t = d.paired.set_index("reference").loc[STUDENT_REFERENCES[0]]
    return {"name": name, "accuracy": float(d.accuracy.set_index("model").loc["distilled student", "test_acc"]),
            "diff": float(t["student_minus_reference"]), "ci_low": float(t["ci_low_adjusted"]),
            "ci_high": float(t["ci_high_adjusted"]), "verdict": t["verdict"],
            "speedup": None if speed is None else float(speed.speedup)}


def describe_answer(results: Mapping[str, StackingResult], goal_ratio: float = 0.8,
                    distilled: Mapping[str, "DistillResult"] | None = None,
                    speeds: Mapping[str, "SpeedResult"] | None = None) -> str:
    """The notebook's answer (template block ``answer``): per dataset stacking's accuracy and the goal verdict
    from the interval of the error ratio; for the first distilled dataset, the student against the ensemble and
    its speed-up."""
    distilled, speeds = distilled or {}, speeds or {}
    first = next(iter(distilled), None)
    student = None if first is None else _student_facts(results[first].dataset, distilled[first], speeds.get(first))
    return render_answer("05_stacking", datasets=[_answer_facts(r, goal_ratio) for r in results.values()],
                        goal_ratio=f"{goal_ratio:g}", student=student)


def describe_bases(base: BasePredictions, splits, unit) -> str:
    """What is stacked: the base models, the validation rows the meta-learner learns from, the test rows and their
    independent unit, the data, and the prediction files stacked once because they were bit-identical to
    another (template block ``bases``)."""
    return render("05_stacking", "bases", name=base.dataset, n=base.n_models, n_val=len(base.val_y),
                  n_test=len(base.test_y), test=unit.describe(len(base.test_y)), source=splits.source, threshold=base.threshold,
                  duplicates=list(base.duplicates.items()))


def make_answer_headline(result: StackingResult, goal_ratio: float = 0.8, distill: "DistillResult | None" = None,
                         speed: "SpeedResult | None" = None) -> dict[str, Any]:
    h = result.headline(goal_ratio)
    if distill is not None:
        out = {"stacking test accuracy": h["stacking_test_acc"],
               "distilled student test accuracy": float(distill.accuracy.set_index("model").loc["distilled student",
                                                                                              "test_acc"])}
        if speed is not None:
            out["student inference speed-up ×"] = speed.speedup
        else:
            out["share of the gain kept"] = distill.gain_kept["kept"]
        return out
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


def make_speed_table(speed: SpeedResult) -> pd.DataFrame:
    """Ensemble and student side by side: seconds for the test split, samples/s, and what was timed."""
    return pd.DataFrame([
        {"model": f"ensemble: {speed.n_models} base models + LightGBM meta-learner", "seconds": speed.ensemble_seconds,
         "samples_per_s": speed.ensemble_samples_per_s,
         "timed": f"{speed.n_timed} of {speed.n_models} base models rebuilt ({speed.n_exact} reproduce their "
                  f"prediction file exactly) and the meta-learner"},
        {"model": "distilled student (stage-2 recipe)", "seconds": speed.student_seconds,
         "samples_per_s": speed.student_samples_per_s, "timed": "its kept weights"},
    ]).set_index("model")


def make_distill_paired_view(d: DistillResult) -> pd.DataFrame:
    df = d.paired.rename(columns={"ci_low_adjusted": "CI low (Holm)", "ci_high_adjusted": "CI high (Holm)"})
    df["p (raw)"] = [f"p < {r.p_value:.0e}" if r.p_is_bound else format_p(r.p_value) for r in df.itertuples()]
    df["p (Holm)"] = [_p_text(r) for r in df.itertuples()]
    return df[["reference", "reference_test_acc", "student_minus_reference", "CI low (Holm)", "CI high (Holm)",
               "p (raw)", "p (Holm)", "verdict", "method"]].set_index("reference")


def describe_distillation(d: DistillResult, seed_sd: float | None = None) -> str:
    """The student against the three references (Holm), the share of the gain it keeps, and the seed sd of the
    recipe (from notebook 04) as the scale of a single-seed difference (template block ``distillation``)."""
    acc = d.accuracy.set_index("model")
    rows = [{"reference": r.reference, "accuracy": r.reference_test_acc, "diff": r.student_minus_reference,
             "ci_low": r.ci_low_adjusted, "ci_high": r.ci_high_adjusted, "verdict": r.verdict, "p_text": _p_text(r)}
            for r in d.paired.itertuples()]
    return render("05_stacking", "distillation", accuracy=acc.loc["distilled student", "test_acc"], kept=d.gain_kept,
                  rows=rows, n_seeds=int(d.students.loc[d.students["student"] == "distilled", "seed"].nunique()),
                  student_sd=acc.loc["distilled student", "seed_sd"], twin_sd=acc.loc[STUDENT_REFERENCES[2], "seed_sd"],
                  seed_sd=seed_sd)


def describe_speed(speed: SpeedResult) -> str:
    """The ensemble's inference time against the student's, what was timed and how faithfully (block ``speed``)."""
    return render("05_stacking", "speed", s=speed, top=speed.steps.sort_values("seconds", ascending=False).iloc[0])


def plot_distillation(d: DistillResult, speed: SpeedResult | None = None, axes=None):
    """Left: test accuracy of the student, its undistilled twin, the best single model and the teacher, with
    95% intervals over the unit. Right: samples/s of the ensemble and the student (log scale)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2 if speed is not None else 1, figsize=(11 if speed is not None else 6, 3.2),
                               squeeze=False)
        axes = axes[0]
    df = d.accuracy.reset_index(drop=True)
    y = np.arange(len(df))
    ax = axes[0]
    ax.errorbar(df["test_acc"], y, xerr=np.vstack([df["test_acc"] - df["ci_low"], df["ci_high"] - df["test_acc"]]),
                fmt="o", color="black", ecolor="gray", capsize=3)
    ax.set_yticks(y, df["model"])
    ax.invert_yaxis()
    ax.set_xlabel(f"test accuracy (95% interval over {d.unit}s)")
    ax.set_title("Distilled student vs the references", fontsize=10)
    if speed is not None:
        ax = axes[1]
        ax.barh(["ensemble", "student"], [speed.ensemble_samples_per_s, speed.student_samples_per_s],
                color=["tab:gray", "tab:red"])
        ax.set_xscale("log")
        ax.set_xlabel(f"test pairs per second (log scale, {speed.threads} thread(s))")
        ax.set_title(f"Inference: the student is {speed.speedup:.1f}× faster", fontsize=10)
    axes[0].figure.tight_layout()
    return axes[0].figure
