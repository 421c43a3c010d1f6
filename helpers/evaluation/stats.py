"""Confidence intervals and paired tests for accuracies measured on the same examples."""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (better than the normal one near 0 or 1)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = _st.norm.ppf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_with_ci(correct: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """Accuracy of a boolean vector of per-example correctness, with its Wilson interval."""
    correct = np.asarray(correct, dtype=bool)
    lo, hi = wilson_interval(int(correct.sum()), correct.size, confidence)
    return {"acc": float(correct.mean()) if correct.size else float("nan"), "ci_low": lo, "ci_high": hi, "n": int(correct.size)}


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired per-example correctness of two models.

    b = A right and B wrong, c = A wrong and B right; under H0 b ~ Binomial(b + c, 0.5).
    """
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError(f"mcnemar_test: shapes differ {a.shape} vs {b_.shape}")
    b = int((a & ~b_).sum())
    c = int((~a & b_).sum())
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2 * _st.binom.cdf(min(b, c), n, 0.5)))
    return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": p}


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, float]:
    """Bootstrap of acc(B) - acc(A) resampling examples jointly; two-sided p-value for diff = 0."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_bootstrap: need two equal 1-D vectors, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))  # (n_boot, N), vectorised resampling
    diffs = b[idx].mean(axis=1) - a[idx].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    # Two-sided p: how often the resampled difference falls on the other side of zero.
    p = 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())
    return {"diff": float(b.mean() - a.mean()), "ci_low": float(lo), "ci_high": float(hi), "p_value": float(min(1.0, p))}
