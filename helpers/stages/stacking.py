"""Notebook 05: the stacking report: fair references, paired tests over the unit, the goal verdict from the
interval of the error ratio, trimmed tables and figures, and the computed answer; then the ensemble distilled
into one model (M1's loss), with the leak-free design below, and the ensemble's inference cost against it.

Distillation without leakage: every base model trained on the training pairs, so their probabilities there are
in-sample and the meta-learner (fitted on validation probabilities) applied to them would return targets that
repeat the labels. The teacher's soft targets are therefore the LightGBM meta-learner's out-of-fold predictions on
the validation pairs (`make_teacher_targets`), out of sample at both levels; the student fits the training pairs
on their labels alone and the validation pairs on labels and soft targets, early-stops on validation pairs of
held-out validation source images (`make_val_holdout`), and is scored once on test. Its undistilled twin is the
same recipe on the same pairs with the soft weight at 0."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.core.io import atomic_savez, atomic_torch_save, atomic_write_json, read_json
from helpers.data.pairs import _uses_pair, dataset_labels, load_pair_dataset, make_inputs
from helpers.data.predictions import BasePredictions, load_base_predictions, load_threshold
from helpers.evaluation.stacking import (BasePredictor, BEST, check_agreement, check_no_leakage, evaluate_gain_kept,
                                         evaluate_stacking, goal_verdict, LOGREG, make_baseline_predictor,
                                         make_checkpoint_predictor, make_comparison_frame, make_error_correlation,
                                         make_split_keys, make_teacher_targets, measure_ensemble_inference,
                                         measure_seconds, rank_by_validation, STACK, StackingResult, TOPK)
from helpers.evaluation.metrics import correct
from helpers.evaluation.stats import adjust, compare_over_seeds, format_p, interval, unit_of, with_seed_noise
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.distill import DistillTask, make_distill_targets
from helpers.training.loop import predict, train_model
from helpers.training.search import load_recipe
from helpers.training.workers import resolve_workers, run_in_workers
from helpers.stages.words import markdown, render, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 05 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["check_no_leakage", "dataset_labels", "describe_answer", "describe_distillation", "describe_diversity",
           "describe_duplicates",
           "describe_goal", "describe_leakage", "describe_paired", "describe_speed", "describe_topk",
           "evaluate_distillation", "evaluate_stacking", "load_base_predictions", "load_pair_dataset",
           "load_seed_sd", "make_answer_headline", "make_base_predictors", "make_claims_table",
           "make_distill_card", "make_distill_headline", "make_distill_paired_view", "make_error_correlation",
           "make_goal_table", "make_leakage_record", "make_metrics_view", "make_paired_view", "make_speed_table",
           "make_split_keys", "make_student_specs", "make_teacher_targets", "measure_speed", "plot_distillation",
           "plot_error_correlation", "plot_meta_importance", "plot_method_comparison", "top_by_validation",
           "train_students", "unit_of"]


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
    yt, thr = result.base.test_y, result.threshold
    r = result.error_ratio
    e_b, e_s, e_cal = (1 - float(correct(result.test_pred[m], yt, thr).mean()) for m in
                       (BEST, STACK, "best single, recalibrated on val"))
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
         float((correct(result.base.test_prob, yt[:, None], result.base.thresholds) == 0).all(axis=1).mean())),
        ("limit: mean pairwise error correlation (val)",
         float(np.nanmean(off)) if off.size and np.isfinite(off).any() else float("nan")),
        ("base models", result.base.n_models),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


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


def describe_duplicates(base) -> str:
    """Which prediction files were bit-identical to another and so stacked once ("" when none)."""
    if not base.duplicates:
        return ""
    pairs = "; ".join(f"{d} = {k}" for d, k in base.duplicates.items())
    return (f" {len(base.duplicates)} prediction file(s) were bit-identical to another and are stacked once, so "
            f"no model counts twice in the ensembles or the references ({pairs}).")


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


# ------------------------------------------------------------------------------ distillation
STUDENT_ROWS = ("train+val", "val")
HARD_LOSSES = ("bce", "recipe")
STUDENT_RECIPE = "03_stage2"


@dataclass
class StudentSpec:
    """One student: the stage-2 recipe (model, kwargs, TrainConfig, stage-1 start) trained on the distillation
    loss; ``soft_weight = 0`` is the same student without the teacher."""
    name: str                      # "distilled" | "undistilled"; also the folder name
    dataset: str
    label: str
    run_dir: str
    out_dir: str                   # <05>/<label>/students/<name>
    teacher_file: str              # soft_targets.npz: the teacher's out-of-fold P(y=1) on the validation pairs
    model: str
    kwargs: dict[str, Any]
    train: dict[str, Any]          # TrainConfig fields of the recipe
    start: str = ""                # stage-1 weights the recipe starts from
    temperature: float = 3.0
    soft_weight: float = 0.7
    hard_weight: float = 0.3
    hard_loss: str = "bce"
    threshold: float | None = None  # the decision threshold the recipe's notebook (03) declared
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0
    rows: str = "train+val"
    holdout_frac: float = 0.3
    seed: int = 42
    max_epochs: int = 0
    device: str = "cpu"


def make_student_specs(run_dir: str | Path, dataset: str, label: str, out_dir: str | Path, teacher_val: np.ndarray,
                       temperature: float = 3.0, soft_weight: float = 0.7, hard_weight: float = 0.3,
                       hard_loss: str = "bce", rows: str = "train+val", holdout_frac: float = 0.3, seed: int = 42,
                       max_epochs: int = 0, device: str = "cpu", n_seeds: int = 1) -> list[StudentSpec]:
    """The distilled student and its undistilled twin (same recipe, rows, start, seed and stopping; soft weight
    0 and hard weight ``soft_weight + hard_weight``), each with seeds ``seed .. seed + n_seeds - 1`` (folders
    ``students/<name>/seed_<seed>``) so that their comparison counts seed noise. The recipe is 03's
    (`load_recipe`); the teacher's soft targets are written to ``<out>/<label>/students/soft_targets.npz``."""
    if n_seeds < 1:
        raise WorkbookError(f"student_seeds = {n_seeds}; expected at least 1 (3 or more to count seed noise)")
    if rows not in STUDENT_ROWS:
        raise WorkbookError(f"student_rows = {rows!r}; expected one of {'|'.join(STUDENT_ROWS)}")
    if hard_loss not in HARD_LOSSES:
        raise WorkbookError(f"distill_hard_loss = {hard_loss!r}; expected one of {'|'.join(HARD_LOSSES)}")
    DistillTask(temperature, soft_weight, hard_weight)          # checks the settings before any training
    recipe = load_recipe(run_dir, STUDENT_RECIPE, label)
    folder = Path(out_dir) / label / "students"
    atomic_savez(folder / "soft_targets.npz", val_teacher_prob=np.asarray(teacher_val, np.float64))
    loss = recipe["loss"] if hard_loss == "recipe" else "bce"
    common = dict(dataset=str(dataset), label=label, run_dir=str(run_dir), teacher_file=str(folder / "soft_targets.npz"),
                  model=recipe["model"], kwargs=recipe["kwargs"], train=recipe["train"], start=recipe["start"],
                  temperature=float(temperature), hard_loss=loss, threshold=recipe["threshold"],
                  focal_alpha=recipe["focal_alpha"],
                  focal_gamma=recipe["focal_gamma"], rows=rows, holdout_frac=float(holdout_frac),
                  max_epochs=int(max_epochs), device=str(device))
    weights = {"distilled": (float(soft_weight), float(hard_weight)), "undistilled": (0.0, float(soft_weight + hard_weight))}
    return [StudentSpec(name, out_dir=str(folder / name / f"seed_{sd}"), soft_weight=sw, hard_weight=hw, seed=sd,
                        **common)
            for sd in range(int(seed), int(seed) + int(n_seeds)) for name, (sw, hw) in weights.items()]


def _groups(s) -> tuple[np.ndarray, np.ndarray] | None:
    if "seq" in (s.extras or {}):
        return np.asarray(s.extras["seq"]), np.asarray(s.extras["seq"])
    return (s.ida, s.idb) if s.ida is not None else None


def make_val_holdout(val, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, early-stopping rows) of the validation split: a share ``frac`` of its source images (sequences
    for scene pairs) is held out; pairs with both images held out stop, pairs with neither fit, mixed pairs
    are dropped, so the stopping pairs show the student no image it fits on. Rows without ids: a random share."""
    n = len(val.y)
    rng = np.random.default_rng(seed)
    g = _groups(val)
    if g is None:
        stop = np.sort(rng.choice(n, max(2, int(round(frac * n))), replace=False))
        return np.setdiff1d(np.arange(n), stop), stop
    uniq = np.unique(np.concatenate(g))
    held = rng.choice(uniq, max(1, int(round(frac * len(uniq)))), replace=False)
    ina, inb = np.isin(g[0], held), np.isin(g[1], held)
    fit, stop = np.flatnonzero(~ina & ~inb), np.flatnonzero(ina & inb)
    if len(np.unique(val.y[stop])) < 2 or len(np.unique(val.y[fit])) < 2:
        raise WorkbookError(f"student_holdout_frac = {frac}: {len(stop)} early-stopping and {len(fit)} fitting "
                            "validation pairs, one of them without both labels; raise student_holdout_frac")
    return fit, stop


def _sources(s, rows) -> np.ndarray | None:
    g = _groups(s)
    return None if g is None else np.unique(np.concatenate([g[0][rows], g[1][rows]]))


def _student_leakage(splits, fit_val: np.ndarray, stop: np.ndarray, use_train: bool) -> dict[str, Any]:
    """What the student fitted on (training pairs and/or validation fitting pairs) held against the test pairs
    and its early-stopping pairs: equal content (order-free keys) and shared source images."""
    tr, va, te = splits.train, splits.val, splits.test
    pair = _uses_pair(splits)
    key = lambda s, r: make_example_keys(s.xa[r], s.xb[r], s.extras["pair"][r] if pair else None)  # noqa: E731
    fit_keys = np.concatenate(([key(tr, slice(None))] if use_train else []) + [key(va, fit_val)])
    out = {"test_pairs_shared": int(np.isin(key(te, slice(None)), fit_keys).sum()),
           "stop_pairs_shared": int(np.isin(key(va, stop), fit_keys).sum())}
    src_fit = [x for x in ([_sources(tr, slice(None))] if use_train else []) + [_sources(va, fit_val)] if x is not None]
    if src_fit:
        fit_src = np.unique(np.concatenate(src_fit))
        for name, s, r in (("test", te, slice(None)), ("stop", va, stop)):
            src = _sources(s, r)
            if src is not None:
                out[f"{name}_sources_shared"] = int(np.intersect1d(src, fit_src).size)
    shared = sum(out.values())
    out["verdict"] = "passed: no pair and no source image shared" if shared == 0 else f"FAILED: {shared} shared"
    return out


def train_student(spec: StudentSpec | dict) -> dict[str, Any]:
    """Train one student and write its folder: history.json and TensorBoard event files (the loop),
    ``model.pt``, ``predictions.npz`` (validation and test P(y=1)), ``metrics.json`` and ``config.json``.
    A worker entry point (module level, so worker processes import it by name)."""
    spec = spec if isinstance(spec, StudentSpec) else StudentSpec(**spec)
    t0 = time.perf_counter()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_pair_dataset(spec.dataset, spec.run_dir, label=spec.label)
    tr, va, te = splits.train, splits.val, splits.test
    pair = _uses_pair(splits)
    with np.load(spec.teacher_file) as z:
        teacher = z["val_teacher_prob"]
    if teacher.shape != va.y.shape:
        raise WorkbookError(f"{spec.teacher_file}: {teacher.shape[0]} teacher probabilities for {len(va.y)} validation pairs")
    fit_val, stop = make_val_holdout(va, spec.holdout_frac, spec.seed)
    leakage = _student_leakage(splits, fit_val, stop, spec.rows == "train+val")
    if not leakage["verdict"].startswith("passed"):
        raise WorkbookError(f"student {spec.name}: leakage check {leakage}")
    vin = make_inputs(va, pair)
    parts = [(*make_inputs(tr, pair), make_distill_targets(tr.y))] if spec.rows == "train+val" else []
    parts.append((*[a[fit_val] for a in vin], make_distill_targets(va.y[fit_val], teacher[fit_val])))
    fit = tuple(np.concatenate(cols) for cols in zip(*parts))
    stop_data = (*[a[stop] for a in vin], make_distill_targets(va.y[stop], teacher[stop]))
    torch.manual_seed(spec.seed)
    kw = {"in_channels": int(tr.xa.shape[1])} if splits.kind == "image" else {"in_features": int(tr.xa.shape[1])}
    kw.update(spec.kwargs)
    model = create_model(spec.model, **kw)
    transfer = transfer_weights(model, read_checkpoint_file(spec.start)["model_state_dict"]) if spec.start else None
    task = DistillTask(spec.temperature, spec.soft_weight, spec.hard_weight, spec.hard_loss, spec.focal_alpha,
                       spec.focal_gamma, threshold=spec.threshold)
    train = {**spec.train, "seed": spec.seed, "log_every": 0, "num_threads": 0, "checkpoint": False,
             "resume": False, "tensorboard": True}
    if spec.max_epochs:
        train["epochs"] = min(int(train.get("epochs", spec.max_epochs)), spec.max_epochs)
    train["amp"] = bool(train.get("amp", False)) and str(spec.device).startswith("cuda")
    cfg = TrainConfig(**train)
    res = train_model(model, task, fit, stop_data, cfg, out_dir=out, device=spec.device)
    val_prob = predict(model, task, vin, device=spec.device).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, pair), device=spec.device).astype(np.float64)
    atomic_savez(out / "predictions.npz", val_prob=val_prob, test_prob=test_prob, val_y=va.y, test_y=te.y,
                 fit_val_rows=fit_val, stop_rows=stop, threshold=np.float64(spec.threshold))
    atomic_torch_save({"model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "model_spec": getattr(model, "spec", None), "config": res.config}, out / "model.pt")
    n_soft = int(np.isfinite(fit[-1][:, 1]).sum())
    metrics = {"name": spec.name, "test_acc": float(correct(test_prob, te.y, spec.threshold).mean()),
               "stop_acc": float(correct(val_prob[stop], va.y[stop], spec.threshold).mean()),
               "n_fit": int(len(fit[-1])), "n_fit_train": int(len(tr.y)) if spec.rows == "train+val" else 0,
               "n_fit_val": int(fit_val.size), "n_with_teacher": n_soft, "n_stop": int(stop.size),
               "n_val_dropped": int(len(va.y) - fit_val.size - stop.size), "epochs_run": res.epochs_run,
               "best_epoch": res.best.get("monitor", {}).get("epoch"), "stopped_early": res.stopped_early,
               "params": int(sum(p.numel() for p in model.parameters())), "seconds": time.perf_counter() - t0,
               "leakage": leakage, "threads": torch.get_num_threads()}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "config.json", {
        "student": asdict(spec), "model": {"architecture": spec.model, "kwargs": kw, "spec": getattr(model, "spec", None),
                                           "recipe": STUDENT_RECIPE, "pretrained": (
                                               f"{spec.start} ({transfer['copied']} of {transfer['total']} tensors)"
                                               if transfer else False)},
        "training": res.config, "task": asdict(task),
        "dataset": {"name": splits.name, "generated": splits.generated, "source": splits.source,
                    "rows": spec.rows, "fit_rows": metrics["n_fit"], "with_teacher_targets": n_soft,
                    "early_stop_rows": int(stop.size), "early_stop_split": "validation pairs of held-out source images",
                    "data_leakage_prevention": leakage},
        "torch": torch.__version__, "device": spec.device})
    return metrics


def train_students(specs: Sequence[StudentSpec], workers: int = 0, verbose: bool = True) -> pd.DataFrame:
    """Train the students in parallel worker processes (`helpers.training.workers`); one row per student.
    A student that fails raises: the comparison needs both."""
    n_workers, threads = resolve_workers(len(specs), workers, specs[0].device if specs else "cpu")
    if verbose:
        print(f"{len(specs)} students on {n_workers} worker process(es) × {threads} torch thread(s)", flush=True)
    outcomes = run_in_workers(train_student, [asdict(s) for s in specs], n_workers, threads)
    bad = [f"{specs[o.index].name}: {o.error.strip().splitlines()[0] if o.error else 'failed'}" for o in outcomes if not o.ok]
    if bad:
        raise WorkbookError("student training failed: " + "; ".join(bad))
    rows = []
    for s, o in zip(specs, outcomes):
        m = o.value
        rows.append({"student": s.name, "seed": s.seed, "soft_weight": s.soft_weight, "hard_weight": s.hard_weight,
                     "temperature": s.temperature, "hard_loss": s.hard_loss, "test_acc": m["test_acc"],
                     "stop_acc": m["stop_acc"], "n_fit": m["n_fit"], "n_with_teacher": m["n_with_teacher"],
                     "n_stop": m["n_stop"], "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
                     "leakage": m["leakage"]["verdict"], "seconds": round(o.seconds, 1), "folder": s.out_dir})
    return pd.DataFrame(rows)


def _student_probs(students: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Test probabilities of one student over its seeds [S, N] in seed order, the test labels, and the threshold
    its predictions.npz records."""
    out, thresholds = [], set()
    for folder in students[students["student"] == name].sort_values("seed")["folder"]:
        with np.load(Path(folder) / "predictions.npz") as z:
            out.append(z["test_prob"].astype(np.float64))
            y = z["test_y"]
        thresholds.add(load_threshold(Path(folder) / "predictions.npz"))
    if len(thresholds) != 1:
        raise WorkbookError(f"students {name!r}: their seeds record different thresholds {sorted(thresholds)}")
    return np.stack(out), y, thresholds.pop()


STUDENT_REFERENCES = ("teacher (LightGBM stacking)", "best single (chosen on val)", "undistilled student")


@dataclass
class DistillResult:
    """The distilled student against the teacher, the best single model and its undistilled twin."""
    students: pd.DataFrame
    accuracy: pd.DataFrame           # per model: test accuracy with its 95% interval over the unit
    paired: pd.DataFrame             # student minus each reference, Holm-adjusted
    gain_kept: dict[str, Any]
    unit: str
    best_single: str


def evaluate_distillation(result: StackingResult, students: pd.DataFrame, unit, n_boot: int = 2000,
                          seed: int = 0) -> DistillResult:
    """Test accuracy of the teacher, the best single model and both students (intervals over the unit); the
    distilled student against each of the other three (paired over the unit, Holm over the three); and the
    share of the teacher's gain over the best single model that the student keeps (`evaluate_gain_kept`)."""
    y, thr = result.base.test_y, result.threshold
    # The teacher and the best single model at the threshold the base models declared; each student at the one
    # its recipe (03) declared, recorded in its predictions.npz.
    student = correct(*_student_probs(students, "distilled"))                                # [S, N]
    refs = {STUDENT_REFERENCES[0]: correct(result.test_pred[STACK], y, thr),
            STUDENT_REFERENCES[1]: correct(result.test_pred[BEST], y, thr),
            STUDENT_REFERENCES[2]: correct(*_student_probs(students, "undistilled"))}
    rows = []
    for name, c in [("distilled student", student), *refs.items()]:
        c2 = np.atleast_2d(c)
        a = interval(c2.mean(0), unit, n_boot=n_boot, seed=seed)      # the seed-averaged rows: test-split noise
        rows.append({"model": name, "test_acc": a["mean"], "ci_low": a["ci_low"], "ci_high": a["ci_high"],
                     "n_seeds": len(c2), "seed_sd": float(c2.mean(1).std(ddof=1)) if len(c2) > 1 else float("nan")})
    # each reference against the student's seeds (the twin paired by seed): seed noise and test-split noise
    tests = adjust({k: compare_over_seeds(c, student, unit, paired_seeds=True, n_boot=n_boot, seed=seed)
                    for k, c in refs.items()})
    paired = make_comparison_frame(tests, {k: float(np.mean(c)) for k, c in refs.items()}, "student_minus_reference")
    kept = _gain_kept_over_seeds(refs[STUDENT_REFERENCES[1]], refs[STUDENT_REFERENCES[0]], student, unit, n_boot, seed)
    return DistillResult(students, pd.DataFrame(rows), paired, kept, getattr(unit, "name", "row"), result.best_single)


def _gain_kept_over_seeds(best: np.ndarray, teacher: np.ndarray, student: np.ndarray, unit, n_boot: int,
                          seed: int) -> dict[str, Any]:
    """`evaluate_gain_kept` of the seed-averaged student (test-split noise), its interval widened by the seed
    noise of the per-seed shares (`stats.with_seed_noise`, t with Welch-Satterthwaite df)."""
    k = evaluate_gain_kept(best, teacher, student.mean(0), unit, n_boot, seed)
    den = float(np.mean(teacher) - np.mean(best))
    if len(student) < 2 or not np.isfinite(k["kept"]) or not np.isfinite(k["ci_low"]):
        return {**k, "n_seeds": len(student), "seed_noise": len(student) >= 2}
    per_seed = (student.mean(1) - np.mean(best)) / den
    se_test = (k["ci_high"] - k["ci_low"]) / (2 * 1.959964)
    lo, hi = with_seed_noise(k["kept"], se_test, [(per_seed.var(ddof=1) / len(per_seed), len(per_seed) - 1)]).interval(0.95)
    return {**k, "ci_low": lo, "ci_high": hi, "n_seeds": len(student), "seed_noise": True,
            "kept_per_seed": per_seed.tolist(), "method": f"{k['method']}, widened by the spread of {len(student)} seeds"}


def make_base_predictors(base: BasePredictions, run_dir: str | Path, splits, label: str, seed: int = 42,
                         threads: int = 1, device: str = "cpu") -> list[BasePredictor]:
    """Every base model of the ensemble rebuilt for timing, in the meta-learner's column order: 04's members
    from their ``model.pt``; 02's and 03's reported models from their scored checkpoints; 03's ablation
    variants from a checkpoint in their folder where one was kept (else their architecture from a sibling
    checkpoint, fresh weights); 02's classical baselines refitted with their recorded settings. Each gets
    the share of test rows on which it reproduces its prediction file (`check_agreement`)."""
    out = []
    cards: dict[str, dict] = {}
    for i, name in enumerate(base.names):
        stem, model = name.split("/", 1)
        folder = paths.upstream(run_dir, stem) / label
        if stem not in cards:
            cards[stem] = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        p = _locate_predictor(name, stem, model, folder, cards[stem], splits, seed, threads, device)
        out.append(check_agreement(p, base.test_prob[:, i], float(base.thresholds[i])))
    return out


def _scored(folder: Path, card: dict) -> Path:
    monitor = str(card.get("training", {}).get("monitor", "accuracy")).removeprefix("val_")
    return folder / f"best_{monitor}.pt"


def _locate_predictor(name: str, stem: str, model: str, folder: Path, card: dict, splits, seed: int, threads: int,
                      device: str) -> BasePredictor:
    if model.startswith("baseline_"):
        info = card.get("baselines", {}).get(model.removeprefix("baseline_"))
        if not isinstance(info, dict):
            return BasePredictor(name, "not rebuilt", f"{folder / 'config.json'} records no setting for {model}")
        return make_baseline_predictor(name, info, splits, int(card.get("training", {}).get("seed", seed)), threads,
                                       device)
    candidates = [folder / "members" / model / "model.pt", folder / model / "model.pt"]
    if model.startswith("ablation_"):
        sub = folder / "ablation" / model.removeprefix("ablation_")
        candidates += [sub / "model.pt", sub / "best_accuracy.pt", sub / "best_f1.pt", sub / "best_loss.pt",
                       sub / "final.pt"]
    if model in ("stage1", "stage2"):
        candidates.append(_scored(folder, card))
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return make_checkpoint_predictor(name, found, splits, device)
    # The weights were not kept: the reported model's architecture, with the change an ablation variant's name
    # states, times the same inference.
    sibling = _scored(folder, card)
    if sibling.is_file():
        return make_checkpoint_predictor(name, sibling, splits, device, fresh=True, changes=_variant_changes(model))
    return BasePredictor(name, "not rebuilt", f"no checkpoint for {name} under {folder}")


def _variant_changes(model: str) -> dict[str, Any]:
    """The architecture change an ablation variant's file name states (03's variants: ``ablation_no_SE``,
    ``ablation_layers_1_1_1``); none for a change of loss or precision."""
    name = model.removeprefix("ablation_")
    if name == "no_SE":
        return {"attention": "none"}
    m = re.fullmatch(r"layers_(\d+(?:_\d+)*)", name)
    return {"layers": [int(v) for v in m.group(1).split("_")]} if m else {}


@dataclass
class SpeedResult:
    """Test-split inference of the whole ensemble (every base model + the meta-learner) and of the student."""
    steps: pd.DataFrame              # one row per base model and the meta-learner (`measure_ensemble_inference`)
    n_rows: int
    ensemble_seconds: float
    student_seconds: float
    n_models: int
    n_timed: int                     # base models rebuilt and timed
    n_exact: int                     # ... that reproduce their prediction file on every test row
    pipeline_agreement: float        # share of test rows where the timed pipeline's ensemble = the reported one
    threads: int

    @property
    def ensemble_samples_per_s(self) -> float:
        return self.n_rows / self.ensemble_seconds if self.ensemble_seconds > 0 else float("nan")

    @property
    def student_samples_per_s(self) -> float:
        return self.n_rows / self.student_seconds if self.student_seconds > 0 else float("nan")

    @property
    def speedup(self) -> float:
        return self.ensemble_seconds / self.student_seconds if self.student_seconds > 0 else float("nan")


def measure_speed(result: StackingResult, predictors: Sequence[BasePredictor], students: pd.DataFrame, splits,
                  repeats: int = 5, device: str = "cpu") -> SpeedResult:
    """Time the ensemble (`measure_ensemble_inference`: each base model from raw test inputs, then the
    meta-learner on their probabilities) and the distilled student (its kept weights) on the same test split,
    in this process, with the same threads; the fastest of ``repeats`` runs after a warm-up."""
    steps, ens_prob = measure_ensemble_inference(predictors, result.meta, len(splits.test.y), repeats)
    folder = Path(students[students["student"] == "distilled"].sort_values("seed")["folder"].iloc[0])
    student = make_checkpoint_predictor("distilled student", folder / "model.pt", splits, device)
    sec, _ = measure_seconds(student.predict, repeats)
    timed = [p for p in predictors if p.predict is not None]
    thr = result.threshold
    agree = float(((ens_prob >= thr) == (result.test_pred[STACK] >= thr)).mean()) if len(timed) == len(predictors) \
        else float("nan")
    return SpeedResult(steps, len(splits.test.y), float(steps["seconds"].sum()), sec, len(predictors), len(timed),
                       sum(1 for p in timed if p.agreement == 1.0), agree, torch.get_num_threads())


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


def _kept_text(k: dict[str, Any]) -> str:
    if not np.isfinite(k["kept"]):
        return "no share of the gain to keep: the teacher does not beat the best single model on test"
    ci = (f" (95% interval {k['ci_low']:.2f} to {k['ci_high']:.2f})" if np.isfinite(k["ci_low"])
          else " (no finite interval: the teacher's own gain is not clearly positive)")
    caveat = "" if k["denominator_p"] < 0.05 else (f"; the teacher's gain itself is not significant "
                                                    f"({format_p(k['denominator_p'])}), so the share is poorly determined")
    return f"the student keeps {k['kept']:.2f} of the teacher's gain over the best single model{ci}{caveat}"


def load_seed_sd(run_dir: str | Path, label: str, arch: str = "stage2") -> float:
    """Notebook 04's seed sd of the stage-2 recipe's test accuracy on this dataset (NaN when not measured)."""
    f = paths.upstream(run_dir, "04_multi_seed") / "metrics.json"
    v = read_json(f).get(f"{label}.{arch}.std_test_acc") if f.is_file() else None
    return float(v) if isinstance(v, (int, float)) else float("nan")


def describe_distillation(d: DistillResult, seed_sd: float | None = None) -> str:
    """The student against the three references (Holm), the share of the gain it keeps, and the seed sd of
    the recipe (from notebook 04) as the scale of a single-seed difference."""
    acc = d.accuracy.set_index("model")["test_acc"]
    lines = [f"distilled student: test accuracy {acc['distilled student']:.4f}; " + _kept_text(d.gain_kept) + "."]
    for r in d.paired.itertuples():
        lines.append(f"student vs {r.reference} ({r.reference_test_acc:.4f}): {r.student_minus_reference:+.4f} "
                     f"(Holm-adjusted interval {r.ci_low_adjusted:+.4f} to {r.ci_high_adjusted:+.4f}), {r.verdict} ({_p_text(r)}, "
                     f"{len(d.paired)} tests)")
    n = int(d.students.loc[d.students["student"] == "distilled", "seed"].nunique())
    own = d.accuracy.set_index("model")["seed_sd"]
    lines.append(f"Student and twin ran {n} seed(s) each (seed sd of the student {own['distilled student']:.4f}, of the "
                 f"twin {own[STUDENT_REFERENCES[2]]:.4f}); the paired tests count that seed noise and the test split's"
                 + ("." if n >= 2 else ": with one seed they cannot, and say 'not testable'."))
    if seed_sd is not None and np.isfinite(seed_sd):
        lines.append(f"For scale: notebook 04 measured a seed sd of {seed_sd:.4f} for the stage-2 recipe.")
    return "\n".join(lines)


def describe_speed(speed: SpeedResult) -> str:
    top = speed.steps.sort_values("seconds", ascending=False).iloc[0]
    text = (f"Inference on the {speed.n_rows:,} test pairs ({speed.threads} torch thread(s)): the ensemble takes "
            f"{speed.ensemble_seconds * 1e3:.0f} ms ({speed.ensemble_samples_per_s:,.0f} samples/s) — {speed.n_models} "
            f"base models and the meta-learner, the slowest step {top['step']} ({top['share_of_time']:.0%}) — the "
            f"student {speed.student_seconds * 1e3:.1f} ms ({speed.student_samples_per_s:,.0f} samples/s): "
            f"{speed.speedup:.1f}× faster.")
    if speed.n_timed < speed.n_models:
        text += f" {speed.n_models - speed.n_timed} base model(s) could not be rebuilt: the ensemble time is a lower bound."
    if speed.n_exact < speed.n_timed:
        text += (f" {speed.n_timed - speed.n_exact} rebuilt model(s) do not reproduce their prediction file exactly "
                 "(architecture only, or a refit that differs slightly); their time is that of the same computation.")
    if np.isfinite(speed.pipeline_agreement):
        text += f" The timed pipeline's ensemble agrees with the reported one on {speed.pipeline_agreement:.1%} of test pairs."
    return text


def make_distill_headline(d: DistillResult, speed: SpeedResult | None) -> dict[str, Any]:
    """metrics.json keys of the distillation and the speed comparison."""
    acc = d.accuracy.set_index("model")
    p = d.paired.set_index("reference")
    s = d.students[d.students["student"] == "distilled"].sort_values("seed").iloc[0]      # its first seed
    t, b, u = STUDENT_REFERENCES
    out = {"student_test_acc": float(acc.loc["distilled student", "test_acc"]),
           "student_ci_low": float(acc.loc["distilled student", "ci_low"]),
           "student_ci_high": float(acc.loc["distilled student", "ci_high"]),
           "undistilled_test_acc": float(acc.loc[u, "test_acc"]), "teacher_test_acc": float(acc.loc[t, "test_acc"]),
           "student_vs_teacher_diff": float(p.loc[t, "student_minus_reference"]),
           "student_vs_teacher_p": float(p.loc[t, "p_holm"]),
           "student_vs_best_single_diff": float(p.loc[b, "student_minus_reference"]),
           "student_vs_best_single_p": float(p.loc[b, "p_holm"]),
           "student_vs_undistilled_diff": float(p.loc[u, "student_minus_reference"]),
           "student_vs_undistilled_p": float(p.loc[u, "p_holm"]),
           "gain_kept": d.gain_kept["kept"], "gain_kept_ci_low": d.gain_kept["ci_low"],
           "gain_kept_ci_high": d.gain_kept["ci_high"], "teacher_gain_over_best_single": d.gain_kept["teacher_gain"],
           "student_seeds": int(acc.loc["distilled student", "n_seeds"]),
           "student_epochs_run": int(s["epochs_run"]), "student_n_with_teacher_targets": int(s["n_with_teacher"]),
           "student_n_fit": int(s["n_fit"])}
    if speed is not None:
        out.update(student_samples_per_s=speed.student_samples_per_s, ensemble_samples_per_s=speed.ensemble_samples_per_s,
                   student_speedup=speed.speedup, ensemble_models_timed=speed.n_timed,
                   ensemble_models_exact=speed.n_exact, ensemble_pipeline_agreement=speed.pipeline_agreement)
    return out


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


def make_distill_card(d: DistillResult, speed: SpeedResult | None = None) -> dict[str, Any]:
    """The run card's record of the distillation: the leak-free design, both students, the share of the gain
    kept (with its method) and how the inference was timed."""
    card: dict[str, Any] = {
        "teacher": "LightGBM stacking over the base models; soft targets = the chosen meta-learner's out-of-fold "
                   "probabilities on the validation pairs (no base model trained on them; no booster saw its own row)",
        "training_pairs": "labels only: every base model trained on them, so teacher probabilities there are in-sample",
        "student_recipe": STUDENT_RECIPE, "early_stopping": "validation pairs of held-out validation source images",
        "students": d.students.drop(columns=["folder"]).to_dict(orient="records"),
        "folders": d.students["folder"].tolist(), "gain_kept": d.gain_kept,
        "tests": f"paired over {d.unit}s, Holm over {len(d.paired)} references"}
    if speed is not None:
        card["inference"] = {"test_rows": speed.n_rows, "threads": speed.threads, "ensemble_seconds": speed.ensemble_seconds,
                             "student_seconds": speed.student_seconds, "base_models": speed.n_models,
                             "base_models_timed": speed.n_timed, "base_models_exact": speed.n_exact,
                             "pipeline_agreement": speed.pipeline_agreement,
                             "rebuilt_as": speed.steps.set_index("step")["kind"].to_dict()}
    return card
