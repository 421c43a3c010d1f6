"""A history prepared for the finding rules: its arrays, and what is measured on them once."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers.evaluation.doctor.history import metric_direction
from helpers.evaluation.doctor.rules import find_plateau, trend_slope


# Scores with a natural best (1, or 100 for percentages) when no ceiling is given.
_BOUNDED_SCORES = ("accuracy", "acc", "top1", "top5", "f1", "auc", "precision", "recall")


def tail_median(x: np.ndarray, k: int) -> float:
    """Median of the last ``k`` finite values (NaN when there are none)."""
    x = x[np.isfinite(x)]
    return float(np.median(x[-k:])) if len(x) else math.nan


def rounded(x: Any, nd: int = 4) -> Any:
    """Round for evidence; keep None/NaN readable."""
    if x is None:
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{nd}g}")


@dataclass
class Curve:
    """The judged metric and the history's losses and LR as float arrays (None when absent)."""
    metric: str
    gib: bool                       # greater is better
    epochs: np.ndarray
    y: np.ndarray                   # the judged metric
    train_loss: np.ndarray | None
    val_loss: np.ndarray | None
    lr: np.ndarray | None
    n: int                          # rows
    window: int                     # rows of the trend tests
    best_i: int | None              # row of the best finite value of the metric

    def epoch_at(self, i: int | None) -> float | None:
        """The epoch number of row ``i`` (an int when it is whole)."""
        if i is None:
            return None
        e = float(self.epochs[i])
        return int(e) if e.is_integer() else e

    @property
    def best(self) -> float | None:
        return rounded(self.y[self.best_i]) if self.best_i is not None else None


def prepare_curve(df: pd.DataFrame, metric: str, window: int) -> Curve:
    """The arrays of a normalised history; the trend window shrinks to a third of a short history."""
    gib = metric_direction(metric)
    n = len(df)
    y = df[metric].to_numpy(dtype=float)
    best_i = (int(np.nanargmax(y) if gib else np.nanargmin(y))) if np.isfinite(y).any() else None
    return Curve(metric, gib, df["epoch"].to_numpy(dtype=float), y, _column(df, "train_loss"),
                 _column(df, "val_loss"), _column(df, "lr"), n, int(min(window, max(4, n // 3))), best_i)


def _column(df: pd.DataFrame, name: str) -> np.ndarray | None:
    return df[name].to_numpy(dtype=float) if name in df else None


@dataclass
class LossRatio:
    """val_loss/train_loss over the rows where both are finite and positive, and val_loss's minimum."""
    first: float
    mid: float
    late: float                     # median over the last window
    slope: float                    # trend of the ratio over its second half, per epoch
    val_min_i: int
    val_end: float
    train_end: float
    val_rise: float                 # val_loss's rise from its minimum, relative


@dataclass
class Swings:
    """Epoch-to-epoch swings of a loss around its centred 5-epoch mean, over its last two thirds."""
    column: str
    threshold: float
    amplitude: float                # median |residual| / median |trend|
    flip_rate: float                # share of epochs where the direction changes
    start: int                      # first row judged


@dataclass
class LrSchedule:
    values: np.ndarray              # the LR, NaN where missing
    peak_i: int
    peak: float
    final: float
    at_plateau: float | None = None             # the LR where the plateau starts (if any)
    at_plateau_fraction: float | None = None


@dataclass
class Warmup:
    """The leading rows where the LR rises, and their largest deviation from a straight line."""
    rows: int
    lr: np.ndarray
    deviation: float
    steps: np.ndarray


@dataclass
class Measures:
    """What the trend rules look at, measured once on a history long enough to judge."""
    ceiling: float | None
    ceiling_is_implicit: bool
    reduce_lr_first_cut_epoch: float | None     # cited by the plateau finding
    plateau: dict[str, Any] | None              # `find_plateau`'s result
    ratio: LossRatio | None
    swings: Swings | None
    lr: LrSchedule | None
    warmup: Warmup | None
    still_improving: float                      # trend over the last window, up = better


def measure_curve(c: Curve, ceiling: float | None, rel_tol: float,
                  reduce_lr_first_cut_epoch: float | None) -> Measures:
    ceiling, implicit = _natural_ceiling(c, ceiling)
    pl = find_plateau(c.y, c.gib, window=c.window, rel_tol=rel_tol)
    ratio, swings, lr = _measure_loss_ratio(c), _measure_swings(c), _measure_lr(c, pl)
    warmup = _measure_warmup(c, lr) if lr is not None else None
    return Measures(ceiling, implicit, reduce_lr_first_cut_epoch, pl, ratio, swings, lr, warmup,
                    _still_improving(c))


def _natural_ceiling(c: Curve, ceiling: float | None) -> tuple[float | None, bool]:
    """The given ceiling, else an accuracy-like score's maximum (1 or 100); True when implied."""
    if ceiling is None and c.gib and np.isfinite(c.y).any() and any(w_ in c.metric for w_ in _BOUNDED_SCORES):
        top = float(np.nanmax(c.y))
        return (1.0 if top <= 1.0 else 100.0 if top <= 100.0 else None), True
    return ceiling, False


def _measure_loss_ratio(c: Curve) -> LossRatio | None:
    tr, va, w = c.train_loss, c.val_loss, c.window
    if tr is None or va is None:
        return None
    ok = np.isfinite(tr) & np.isfinite(va) & (tr > 0) & (va > 0)
    if ok.sum() < 4:
        return None
    ratio = np.where(ok, va / np.where(ok, tr, 1.0), np.nan)
    r_ok = ratio[ok]
    r_slope, _ = trend_slope(r_ok[len(r_ok) // 2:])
    vmin_i = int(np.nanargmin(np.where(ok, va, np.nan)))
    v_end = tail_median(va, max(2, w // 2))
    v_rise = (v_end - va[vmin_i]) / max(abs(va[vmin_i]), 1e-12)
    return LossRatio(r_ok[0], r_ok[len(r_ok) // 2], tail_median(ratio, w), r_slope, vmin_i, v_end,
                     tail_median(tr, max(2, w // 2)), v_rise)


def _measure_swings(c: Curve) -> Swings | None:
    # The training loss when there is one (5 % swings count), else the validation loss (10 %).
    for col, arr, thr in (("train_loss", c.train_loss, 0.05), ("val_loss", c.val_loss, 0.10)):
        if arr is not None and np.isfinite(arr).sum() >= 6:
            break
    else:
        return None
    a = arr[np.isfinite(arr)]
    # a centred 5-epoch mean: an alternating ±a swing leaves a residual of ~0.8a
    trend = pd.Series(a).rolling(5, center=True, min_periods=1).mean().to_numpy()
    late = slice(len(a) // 3, None)
    resid = (a - trend)[late]
    amp = float(np.median(np.abs(resid)) / max(np.median(np.abs(trend[late])), 1e-12))
    d = np.diff(a[late])
    flips = float(np.mean(np.sign(d[1:]) != np.sign(d[:-1]))) if len(d) > 2 else 0.0
    return Swings(col, thr, amp, flips, len(a) // 3)


def _measure_lr(c: Curve, pl: dict[str, Any] | None) -> LrSchedule | None:
    lr = c.lr
    if lr is None or not (np.isfinite(lr).sum() >= 4 and np.nanmax(lr) > 0):
        return None
    lr_ok = np.where(np.isfinite(lr), lr, np.nan)
    peak_i = int(np.nanargmax(lr_ok))
    peak = float(lr_ok[peak_i])
    out = LrSchedule(lr_ok, peak_i, peak, float(lr_ok[np.flatnonzero(np.isfinite(lr_ok))[-1]]))
    if pl is not None:
        out.at_plateau = float(lr_ok[pl["start"]]) if np.isfinite(lr_ok[pl["start"]]) else math.nan
        out.at_plateau_fraction = out.at_plateau / peak
    return out


def _measure_warmup(c: Curve, lr: LrSchedule) -> Warmup | None:
    """None when the LR rises over fewer than 2 leading steps."""
    lr_ok, k = lr.values, 0
    while k + 1 < c.n and np.isfinite(lr_ok[k + 1]) and lr_ok[k + 1] > lr_ok[k] * (1 + 1e-9):
        k += 1
    if k < 2:
        return None
    seg = lr_ok[:k + 1]
    xs = np.arange(k + 1, dtype=float)
    fit = np.polyval(np.polyfit(xs, seg, 1), xs)
    dev = float(np.max(np.abs(seg - fit)) / max(seg[-1] - seg[0], 1e-30))
    return Warmup(k, seg, dev, np.diff(seg))


def _still_improving(c: Curve) -> float:
    """Trend of the metric over the last window, oriented so that up is better (0 if too few values)."""
    y, w = c.y, c.window
    if np.isfinite(y[-w:]).sum() < 3:
        return 0.0
    return trend_slope((y if c.gib else -y)[-w:][np.isfinite(y[-w:])])[0]


def short_summary(c: Curve) -> dict[str, Any]:
    """The summary of a history too short to judge."""
    return {"rows": c.n, "best": c.best, "best_epoch": c.epoch_at(c.best_i)}


def summarise(c: Curve, m: Measures) -> dict[str, Any]:
    """The measured numbers, in the order the diagnosis reports them."""
    s: dict[str, Any] = {**short_summary(c), "window": c.window}
    if m.plateau is not None:
        s.update({"plateau_epoch": c.epoch_at(m.plateau["start"]), "plateau_level": rounded(m.plateau["level"])})
    if m.ratio is not None:
        s.update({"overfit_ratio": rounded(m.ratio.late), "ratio_slope": rounded(m.ratio.slope)})
    if m.swings is not None:
        s.update({"oscillation_amplitude": rounded(m.swings.amplitude),
                  "oscillation_flip_rate": rounded(m.swings.flip_rate)})
    if m.lr is not None:
        s.update({"lr_peak": rounded(m.lr.peak), "lr_final": rounded(m.lr.final),
                  "lr_peak_epoch": c.epoch_at(m.lr.peak_i)})
    if m.warmup is not None:
        s.update({"warmup_epochs": m.warmup.rows, "warmup_max_deviation": rounded(m.warmup.deviation)})
    if m.lr is not None and m.lr.at_plateau_fraction is not None:
        s.update({"lr_at_plateau_fraction": rounded(m.lr.at_plateau_fraction)})
    s["still_improving_per_epoch"] = rounded(m.still_improving if c.gib else -m.still_improving)
    return s
