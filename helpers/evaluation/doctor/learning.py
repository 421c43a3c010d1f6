"""A learning-curve probe read as evidence: does the score still rise with more training data?"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.evaluation.doctor.rules import noise_tolerance


def _points(learning_curve: Mapping[float, float] | Sequence[tuple[float, float]] | pd.DataFrame) -> list[tuple[float, float]]:
    """(fraction of the training data, best score) pairs, sorted by fraction."""
    if isinstance(learning_curve, pd.DataFrame):
        if not {"fraction", "score"} <= set(learning_curve.columns):
            raise WorkbookError("learning_curve: a table needs the columns fraction and score (the best "
                                f"score of a run on that share of the training data); got {list(learning_curve.columns)}")
        pairs = zip(learning_curve["fraction"], learning_curve["score"])
    elif isinstance(learning_curve, Mapping):
        pairs = learning_curve.items()
    else:
        pairs = learning_curve
    pts = sorted((float(f), float(s)) for f, s in pairs)
    if len(pts) < 2 or any(f <= 0 or not math.isfinite(s) for f, s in pts):
        raise WorkbookError("learning_curve: expected at least two (fraction > 0, finite score) points, "
                            f"e.g. {{0.25: s1, 0.5: s2, 1.0: s3}}; got {pts}")
    return pts


def evaluate_learning_curve(learning_curve, greater_is_better: bool = True, noise: float = 0.0) -> dict[str, Any]:
    """Whether the score still rises with data, from runs of the same model on shares of the training data.

    ``noise`` is the score's epoch-to-epoch noise (a best score carries about that much); a gain counts
    when it beats `noise_tolerance` for two single values. The gain of doubling the data is projected from
    the last doubling, shrunk by how the gains shrank from one doubling to the next (never negative).
    """
    pts = _points(learning_curve)
    sign = 1.0 if greater_is_better else -1.0
    fr = np.array([f for f, _ in pts])
    sc = sign * np.array([s for _, s in pts])
    tol = noise_tolerance(noise, 1, 0.0)
    last = float(sc[-1] - sc[-2])                        # gain of the last step (e.g. 1/2 -> all)
    prev = float(sc[-2] - sc[-3]) if len(sc) >= 3 else math.nan
    per_doubling = last / max(math.log2(fr[-1] / fr[-2]), 1e-12)
    shrink = min(1.0, max(0.0, last / prev)) if len(sc) >= 3 and prev > 0 else 1.0
    return {"fractions": fr.tolist(), "scores": (sign * sc).tolist(), "noise_tolerance": tol,
            "gain_last_step": sign * last, "gain_previous_step": sign * prev if len(sc) >= 3 else None,
            "rises": bool(last > tol), "projected_gain_of_doubling": sign * max(0.0, per_doubling * shrink)}


def describe_learning_curve(lc: Mapping[str, Any]) -> str:
    """One sentence: the scores by share of the data and whether more data is expected to help."""
    parts = ", ".join(f"{f:.3g}× → {s:.4g}" for f, s in zip(lc["fractions"], lc["scores"]))
    verdict = (f"still rising with data (last step {lc['gain_last_step']:+.3g}, beyond the noise tolerance "
               f"{lc['noise_tolerance']:.2g}); doubling the data is projected to add about "
               f"{lc['projected_gain_of_doubling']:+.3g}" if lc["rises"] else
               f"flat with data (last step {lc['gain_last_step']:+.3g}, within the noise tolerance "
               f"{lc['noise_tolerance']:.2g}): more data is unlikely to help")
    return f"learning curve (share of the training data → best score): {parts}; {verdict}"
