"""The standard rules on a curve (PyTorch ReduceLROnPlateau, Lightning EarlyStopping) and the doctor's own
measures: a curve's epoch-to-epoch noise and the trend test for where it stops improving beyond it."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd


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


# median |N(0, 1.5)| = 0.6745 * sqrt(1.5): turns the median absolute second difference into a standard
# deviation; 0.7979 * sqrt(1.5) does the same for the mean absolute one.
_MEDIAN_TO_SD = 0.6745 * math.sqrt(1.5)
_MEAN_TO_SD = 0.7979 * math.sqrt(1.5)


def estimate_noise(values: Sequence[float]) -> float:
    """A curve's epoch-to-epoch noise: the standard deviation of one epoch's value around the straight
    line through its two neighbours, from the median absolute second difference. A trend or a single
    spike barely moves it (unlike the spread of the values or of their first differences). 0 for fewer
    than 3 finite values."""
    y = np.asarray(values, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return 0.0
    d = np.abs(y[1:-1] - 0.5 * (y[:-2] + y[2:]))
    med = float(np.median(d))
    # Quantised scores (accuracy on a small split) can repeat so often that the median is 0.
    return med / _MEDIAN_TO_SD if med > 0 else float(np.mean(d)) / _MEAN_TO_SD


# Prefix lengths at which `expanding_noise` takes an exact median: every length up to this, then lengths
# growing by `_NOISE_GROWTH` (the cost is a geometric sum: linear in rows).
_NOISE_EXACT, _NOISE_GROWTH = 64, 1.05


def expanding_noise(a: np.ndarray) -> np.ndarray:
    """``estimate_noise(a[:j])`` for every j, linear in rows: exact for prefixes of up to `_NOISE_EXACT`
    finite values, beyond that the value at the last prefix length of a sequence growing by 5 % (the
    noise of a long prefix barely moves between them)."""
    fin = np.isfinite(a)
    y = a[fin]
    if len(y) < 3:
        return np.zeros(len(a))
    d = np.abs(y[1:-1] - 0.5 * (y[:-2] + y[2:]))
    m = len(d)
    marks = list(range(1, min(m, _NOISE_EXACT) + 1))
    while marks[-1] < m:
        marks.append(min(m, max(marks[-1] + 1, int(marks[-1] * _NOISE_GROWTH))))
    marks = np.asarray(marks)
    cums = np.concatenate([[0.0], np.cumsum(d)])
    vals = np.empty(len(marks))
    for i, k in enumerate(marks):                   # geometric: sum of k is O(m)
        med = float(np.median(d[:k])) / _MEDIAN_TO_SD
        vals[i] = med if med > 0 else cums[k] / k / _MEAN_TO_SD
    # noise of the first k finite values (k - 2 second differences), held between marks
    per_d = vals[np.searchsorted(marks, np.arange(1, m + 1), side="right") - 1]
    per_k = np.concatenate([[0.0, 0.0, 0.0], per_d])
    k_prev = np.concatenate([[0], np.cumsum(fin)])[:-1]           # finite values in a[:j]
    return per_k[k_prev]


def smooth(values: Sequence[float], rows: int) -> np.ndarray:
    """A centred running median over ``rows`` rows: one lucky (or unlucky) epoch does not move it."""
    return pd.Series(np.asarray(values, dtype=float)).rolling(rows, center=True, min_periods=1).median().to_numpy()


def smoothing_rows(n: int) -> int:
    """Rows of the running median: 3 on short curves, 5 from 20 rows on."""
    return 3 if n < 20 else 5


def noise_tolerance(noise: float, rows: int, total_gain: float) -> float:
    """The smallest change that counts as a change: two standard errors of the difference of two means
    over ``rows`` epochs of noise ``noise``, and never below 0.1 % of the curve's total rise (so a
    noiseless curve is not "improving" by rounding errors)."""
    return max(2.0 * noise * math.sqrt(2.0 / rows), 1e-3 * abs(total_gain), 1e-12)


def find_plateau(values: Sequence[float], greater_is_better: bool = True, window: int = 8,
                 noise: float | None = None) -> dict[str, Any] | None:
    """Where a curve stops improving beyond its own noise, judged by a trend test over a window.

    The curve is oriented so that up is better. For each
    candidate row t, sigma is the noise of the rows from t on (`estimate_noise`; a curve is often much
    noisier early than late) unless ``noise`` is given, and tol = `noise_tolerance`. Row t starts a
    plateau when
      (1) the least-squares trend over rows [t, t+window) gains less than tol, and
      (2) its running mean over `window` rows never again rises more than tol above its best up to t.
    Returns None if no row qualifies (the curve is still improving); otherwise the start row, the
    row at which an online observer could flag it (start + window - 1), its level and the trend.
    """
    y = np.asarray(values, dtype=float)
    y = y if greater_is_better else -y
    ok = np.isfinite(y)
    if ok.sum() < window + 2:
        return None
    idx, y = np.flatnonzero(ok), y[ok]
    rows = smoothing_rows(len(y))
    ys = smooth(y, rows)
    gain = float(np.max(ys) - ys[0])
    # (2) compares means over a window: the maximum of a long noisy tail sits well above its level, which
    # would push the start of every plateau late by however long the tail is.
    ym = pd.Series(y).rolling(window, center=True, min_periods=1).mean().to_numpy()
    run_best = np.maximum.accumulate(ym)
    n, sign = len(y), (1.0 if greater_is_better else -1.0)
    # Every candidate row at once (linear in rows): the noise of the rows from t on, the trend over
    # [t, t+window) from running sums.
    sigma = expanding_noise(y[::-1])
    sigma = np.concatenate([sigma, [estimate_noise(y)]])[::-1][:n] if noise is None else np.full(n, float(noise))
    tol = np.maximum(np.maximum(2.0 * sigma * math.sqrt(2.0 / rows), 1e-3 * abs(gain)), 1e-12)
    t = np.arange(n - window + 1)
    s0 = np.concatenate([[0.0], np.cumsum(y)])
    s1 = np.concatenate([[0.0], np.cumsum(np.arange(n) * y)])
    sum_y = s0[t + window] - s0[t]
    sum_iy = s1[t + window] - s1[t] - t * sum_y
    xm = (window - 1) / 2.0
    b = (sum_iy - xm * sum_y) / float(((np.arange(window) - xm) ** 2).sum())
    ok = (b * (window - 1) < tol[t]) & (run_best[-1] - run_best[t] <= tol[t])
    if ok.any():
        t0 = int(np.flatnonzero(ok)[0])
        b0, se = trend_slope(y[t0:t0 + window])
        return {"start": int(idx[t0]), "flagged": int(idx[min(t0 + window - 1, n - 1)]),
                "level": sign * float(np.mean(y[t0:])), "best": sign * float(np.max(y)),
                "window_gain": sign * b0 * (window - 1), "tolerance": float(tol[t0]), "noise": float(sigma[t0]),
                "total_gain": gain, "slope_per_epoch": sign * b0, "slope_se": se}
    return None
