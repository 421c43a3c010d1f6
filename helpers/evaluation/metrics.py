"""Scoring predictions: binary metrics at a stated threshold, per-class metrics, the text report.

Functions take labels and probabilities (numpy) and return plain dicts / DataFrames, so they work
the same for a network, a baseline or a stacked model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.evaluation.stats import wilson_interval


def _check(y: np.ndarray, prob: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).reshape(-1)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.shape[0] != y.shape[0]:
        raise WorkbookError(f"{what}: {prob.shape[0]} predictions for {y.shape[0]} labels")
    if not np.isfinite(prob).all():
        raise WorkbookError(f"{what}: probabilities contain NaN or Inf")
    return y, prob


def correct(prob, y, threshold) -> np.ndarray:
    """1.0 where P(y = 1) at ``threshold`` (positive when prob >= threshold) matches the label, else 0.0.
    Shapes broadcast: probabilities [N, M] of M models take labels ``y[:, None]`` and thresholds [M]."""
    return ((np.asarray(prob) >= threshold) == (np.asarray(y) == 1)).astype(np.float64)


def evaluate_binary(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5, confidence: float = 0.95) -> dict:
    """Accuracy (with a Wilson interval), F1, precision, recall, ROC-AUC and the confusion matrix
    of P(y = 1) thresholded at ``threshold`` (positive when prob >= threshold).

    Returns a flat dict; ``confusion`` is [[TN, FP], [FN, TP]] (rows = truth).
    """
    from sklearn.metrics import roc_auc_score

    y, prob = _check(y, prob, "evaluate_binary")
    prob = prob.reshape(-1)
    pred = (prob >= threshold).astype(np.int64)
    yt = y.astype(np.int64)
    tp = int(((pred == 1) & (yt == 1)).sum())
    fp = int(((pred == 1) & (yt == 0)).sum())
    fn = int(((pred == 0) & (yt == 1)).sum())
    tn = int(((pred == 0) & (yt == 0)).sum())
    n = len(yt)
    correct = tp + tn
    lo, hi = wilson_interval(correct, n, confidence)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    auc = float(roc_auc_score(yt, prob)) if 0 < yt.sum() < n else float("nan")
    return {"n": n, "threshold": float(threshold), "accuracy": correct / n if n else float("nan"),
            "acc_ci_low": lo, "acc_ci_high": hi, "f1": f1, "precision": precision, "recall": recall,
            "roc_auc": auc, "positive_rate": float(yt.mean()) if n else float("nan"),
            "confusion": [[tn, fp], [fn, tp]]}


def evaluate_multiclass(y: np.ndarray, prob: np.ndarray, class_names: Sequence[str] | None = None,
                        confidence: float = 0.95) -> tuple[dict, pd.DataFrame]:
    """Accuracy (Wilson interval), macro-F1 and per-class precision / recall / F1 / support.

    ``prob``: [N, K] class probabilities (or [N] predicted classes). Rows with y < 0 are ignored.
    Returns (summary dict with ``confusion`` [K, K] rows = truth, per-class DataFrame).
    """
    y, prob = _check(y, prob, "evaluate_multiclass")
    keep = y >= 0
    y = y[keep].astype(np.int64)
    pred = prob[keep].argmax(1) if prob.ndim == 2 else prob[keep].astype(np.int64)
    k = prob.shape[1] if prob.ndim == 2 else int(max(y.max(initial=0), pred.max(initial=0)) + 1)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise WorkbookError(f"evaluate_multiclass: {len(names)} class names for {k} classes")
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        rec = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    support = cm.sum(1)
    table = pd.DataFrame({"precision": prec, "recall": rec, "f1": f1, "support": support},
                         index=pd.Index(names, name="class"))
    present = support > 0
    n = int(len(y))
    lo, hi = wilson_interval(int(tp.sum()), n, confidence)
    summary = {"n": n, "accuracy": float(tp.sum() / n) if n else float("nan"), "acc_ci_low": lo,
               "acc_ci_high": hi, "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
               "classes_present": int(present.sum()), "confusion": cm.tolist(), "class_names": names}
    return summary, table


def make_evaluation_report(title: str, results: dict[str, dict], notes: Sequence[str] = ()) -> str:
    """``evaluation_report.txt``: one block per evaluated model/split (from `evaluate_binary`)."""
    lines = [title, "=" * len(title), ""]
    for name, r in results.items():
        (tn, fp), (fn, tp) = r["confusion"]
        lines += [
            f"[{name}]  n = {r['n']}, positive rate {r['positive_rate']:.3f}",
            f"  threshold   : P(y=1) >= {r['threshold']:.2f} -> predicted positive",
            f"  accuracy    : {r['accuracy']:.4f}  (95% CI {r['acc_ci_low']:.4f}-{r['acc_ci_high']:.4f}, "
            f"{r.get('acc_ci_method', 'Wilson')})",
            f"  F1          : {r['f1']:.4f}",
            f"  precision   : {r['precision']:.4f}",
            f"  recall      : {r['recall']:.4f}",
            f"  ROC-AUC     : {r['roc_auc']:.4f}",
            "  confusion (rows = truth, columns = prediction):",
            "                 pred 0   pred 1",
            f"    true 0     {tn:7d}  {fp:7d}",
            f"    true 1     {fn:7d}  {tp:7d}",
            "",
        ]
    lines += list(notes)
    return "\n".join(lines).rstrip() + "\n"


def make_multiclass_report(title: str, summary: dict, table: pd.DataFrame) -> str:
    """Text block for a K-class evaluation (per-class table and confusion matrix)."""
    names = summary["class_names"]
    cm = np.asarray(summary["confusion"])
    w = max(len(n) for n in names) + 2
    lines = [title, "-" * len(title),
             f"n = {summary['n']}, accuracy {summary['accuracy']:.4f} (95% CI {summary['acc_ci_low']:.4f}-"
             f"{summary['acc_ci_high']:.4f}), macro-F1 {summary['macro_f1']:.4f} (classes with support)",
             "", table.to_string(float_format=lambda v: f"{v:.4f}"), "",
             "confusion (rows = truth, columns = prediction):",
             " " * w + "".join(f"{n[:8]:>10}" for n in names)]
    lines += [f"{n:<{w}}" + "".join(f"{v:10d}" for v in row) for n, row in zip(names, cm)]
    return "\n".join(lines) + "\n"


def correct_at(prob: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """1.0 where the prediction at ``threshold`` matches the label, else 0.0: the per-row scores a paired
    test or a unit-aware interval of accuracy resamples."""
    return ((np.asarray(prob) >= threshold) == (np.asarray(y) == 1)).astype(np.float64)


def with_interval(ev: dict, ci: dict) -> dict:
    """An `evaluate_binary` result whose accuracy interval is ``ci`` (a unit-aware `interval`) instead of Wilson's."""
    return {**ev, "acc_ci_low": ci["ci_low"], "acc_ci_high": ci["ci_high"], "acc_ci_method": ci["method"]}
