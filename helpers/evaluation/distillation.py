"""The stacked ensemble distilled into one model, measured (notebook 05): the teacher's out-of-sample soft
targets, and the distilled student against the teacher, the best single model and its undistilled twin (paired
over the data's independent unit and over the students' seeds), with the share of the teacher's gain it keeps."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as st

from helpers.core.errors import WorkbookError
from helpers.data.predictions import load_threshold
from helpers.evaluation.metrics import correct
from helpers.evaluation.stacking import BEST, make_comparison_frame, STACK, StackingResult
from helpers.evaluation.stats import (adjust, compare, compare_over_seeds, dyadic_variance, interval, ROWS,
                                      unit_weights, Unit, with_seed_noise)


def make_teacher_targets(result: StackingResult) -> np.ndarray:
    """The stacked ensemble's out-of-sample probabilities on the validation pairs, the teacher's soft targets.

    Level 0: no base model trained on a validation pair (checked by `check_no_leakage`). Level 1: each value is
    the out-of-fold prediction of the chosen LightGBM meta-learner fitted on the other folds (`MetaResult.oof`),
    never on the row itself. Training pairs get none: every base model trained on them, so their probabilities
    there are in-sample (overconfident) and the meta-learner, fitted on validation probabilities, would turn
    them into targets that repeat the labels."""
    oof = np.asarray(result.meta.oof.oof, dtype=np.float64)
    if oof.shape != result.base.val_y.shape or not np.isfinite(oof).all():
        raise WorkbookError("make_teacher_targets: the meta-learner's out-of-fold predictions do not cover every "
                            "validation row")
    return oof


def evaluate_gain_kept(correct_best: np.ndarray, correct_teacher: np.ndarray, correct_student: np.ndarray,
                       unit: Unit = ROWS, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Share of the teacher's gain over the best single model that the student keeps:
    (acc_student − acc_best) / (acc_teacher − acc_best), on the same rows, with an interval over the unit
    (delta method with the dyadic variance for two ids per row, else a cluster or row bootstrap of the ratio).
    Undefined (NaN) when the teacher does not beat the best single model; an interval whose denominator's
    own interval reaches 0 is unbounded, and ``denominator_p`` says so."""
    b, t, s = (np.asarray(x, np.float64) for x in (correct_best, correct_teacher, correct_student))
    num, den = s - b, t - b
    out: dict[str, Any] = {"kept": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                           "teacher_gain": float(den.mean()), "student_gain": float(num.mean()), "unit": unit.name,
                           "denominator_p": compare({"gain": (b, t)}, unit, n_boot=n_boot, seed=seed)["gain"].p}
    if den.mean() <= 0:
        return {**out, "method": "the teacher does not beat the best single model: no gain to keep"}
    r = float(num.mean() / den.mean())
    out["kept"] = r
    z = float(st.norm.ppf(0.5 + confidence / 2))
    if len(unit.ids) == 2:
        se = float(np.sqrt(dyadic_variance((num - r * den) / den.mean(), *unit.ids)))
        return {**out, "ci_low": r - z * se, "ci_high": r + z * se,
                "method": f"delta method, dyadic cluster-robust variance over {unit.describe(b.size)}"}
    w = unit_weights(list(unit.ids), b.size, n_boot, seed)
    wn, wd = w @ num, w @ den
    ratios = wn[wd > 0] / wd[wd > 0]
    if ratios.size < 0.9 * n_boot:      # the resampled denominator is often not positive: no useful interval
        return {**out, "method": f"{'cluster' if unit.ids else 'row'} bootstrap: the teacher's gain is not "
                                 "positive in many resamples, so the share has no finite interval"}
    lo, hi = np.quantile(ratios, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {**out, "ci_low": float(lo), "ci_high": float(hi),
            "method": f"{'cluster' if unit.ids else 'row'} bootstrap over {unit.describe(b.size)}, {n_boot:,} resamples"}


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
