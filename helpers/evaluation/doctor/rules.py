"""The standard rules on a curve: PyTorch ReduceLROnPlateau, Lightning EarlyStopping, and the
doctor's own trend test for where a plateau starts."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def evaluate_reduce_lr_on_plateau(values: Sequence[float], greater_is_better: bool = False,
                                  patience: int = 10, threshold: float = 1e-4,
                                  threshold_mode: str = "rel", cooldown: int = 0) -> list[int]:
    """Row indices at which PyTorch's ReduceLROnPlateau would cut the learning rate.

    Same rule as torch.optim.lr_scheduler.ReduceLROnPlateau: improvement is ``a < best·(1−thr)``
    (min, rel) / ``a > best·(1+thr)`` (max, rel) or ``∓ thr`` (abs); the LR is cut when the number
    of bad epochs exceeds ``patience``, then the counter resets. NaN counts as a bad epoch.
    """
    best = -math.inf if greater_is_better else math.inf
    bad, cool, cuts = 0, 0, []
    for i, a in enumerate(np.asarray(values, dtype=float)):
        if greater_is_better:
            ref = best * (1 + threshold) if threshold_mode == "rel" else best + threshold
            better = a > ref
        else:
            ref = best * (1 - threshold) if threshold_mode == "rel" else best - threshold
            better = a < ref
        if better:
            best, bad = a, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            cuts.append(i)
            cool, bad = cooldown, 0
    return cuts


def evaluate_early_stopping(values: Sequence[float], greater_is_better: bool = False,
                            patience: int = 20, min_delta: float = 1e-4,
                            check_finite: bool = True) -> int | None:
    """Row index at which Lightning's EarlyStopping would stop (None if it never would).

    Improvement is ``current < best − |min_delta|`` (min) / ``current > best + |min_delta|`` (max);
    it stops when ``wait_count >= patience``; a non-finite value stops at once (check_finite).
    """
    best = -math.inf if greater_is_better else math.inf
    wait = 0
    d = abs(min_delta)
    for i, a in enumerate(np.asarray(values, dtype=float)):
        if check_finite and not math.isfinite(a):
            return i
        better = a > best + d if greater_is_better else a < best - d
        if better:
            best, wait = a, 0
        else:
            wait += 1
            if wait >= patience:
                return i
    return None


def trend_slope(y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope per step of y against 0..n-1, and its standard error."""
    n = len(y)
    if n < 3:
        return (float(y[-1] - y[0]) / max(n - 1, 1), math.inf)
    x = np.arange(n, dtype=float)
    x -= x.mean()
    b = float((x * (y - y.mean())).sum() / (x ** 2).sum())
    resid = y - y.mean() - b * x
    se = math.sqrt(float((resid ** 2).sum()) / (n - 2) / float((x ** 2).sum()))
    return b, se


def find_plateau(values: Sequence[float], greater_is_better: bool = True, window: int = 8,
                 rel_tol: float = 0.05) -> dict[str, Any] | None:
    """Where a curve stops improving, judged by a trend test over a window, not a single epoch.

    The curve is oriented so that up is better. With G the total gain (best − first value) and
    tol = rel_tol·G, row t starts a plateau when
      (1) the least-squares trend over rows [t, t+window) gains less than tol across the window, and
      (2) the curve never again improves on its running best at t by more than tol.
    Returns None if no row qualifies (the curve is still improving); otherwise the start row, the
    row at which an online observer could flag it (start + window − 1), its level and the trend.
    """
    y = np.asarray(values, dtype=float)
    y = y if greater_is_better else -y
    ok = np.isfinite(y)
    if ok.sum() < window + 2:
        return None
    idx = np.flatnonzero(ok)
    y = y[ok]
    run_best = np.maximum.accumulate(y)
    gain = float(run_best[-1] - y[0])
    # A curve that never improved is flat from the start; tol then comes from its noise.
    noise = float(np.median(np.abs(np.diff(y)))) if len(y) > 2 else 0.0
    tol = max(rel_tol * gain, 2.0 * noise / math.sqrt(window), 1e-12)
    n = len(y)
    for t in range(0, n - window + 1):
        b, se = trend_slope(y[t:t + window])
        if b * (window - 1) >= tol:
            continue
        if run_best[-1] - run_best[t] > tol:
            continue
        seg = y[t:]
        level = float(np.mean(seg))
        sign = 1.0 if greater_is_better else -1.0
        return {"start": int(idx[t]), "flagged": int(idx[min(t + window - 1, n - 1)]),
                "level": sign * level, "best": sign * float(run_best[-1]),
                "window_gain": sign * b * (window - 1), "tolerance": tol,
                "total_gain": gain, "slope_per_epoch": sign * b, "slope_se": se}
    return None
