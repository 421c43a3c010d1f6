"""A history prepared for the finding rules: its arrays, where it diverged, and what is measured once."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from helpers.evaluation.doctor.formats import percent_from_name
from helpers.evaluation.doctor.history import metric_direction
from helpers.evaluation.doctor.rules import (estimate_noise, expanding_noise, find_plateau, noise_tolerance,
                                             smooth, smoothing_rows, trend_slope)


# Scores with a natural best (1, or 100 for percentages) when no ceiling is given.
_BOUNDED_SCORES = ("accuracy", "acc", "top1", "top5", "f1", "auc", "precision", "recall", "map")


# The learning rate counts as "low" from this fraction of its peak on: a cosine or linear schedule
# spends its last ~third there, and a step schedule's second cut (x0.1 or x0.5 twice) gets there.
LOW_LR_FRACTION = 0.25


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
    percent: bool | None = None     # the format says the score is a percentage (timm's top-1)

    def epoch_at(self, i: int | None) -> float | None:
        """The epoch number of row ``i`` (an int when it is whole)."""
        if i is None:
            return None
        e = float(self.epochs[i])
        return int(e) if e.is_integer() else e

    @property
    def best(self) -> float | None:
        return rounded(self.y[self.best_i]) if self.best_i is not None else None

    @property
    def up(self) -> np.ndarray:
        """The metric oriented so that up is better."""
        return self.y if self.gib else -self.y

    def head(self, k: int) -> "Curve":
        """The first ``k`` rows (the rows before a divergence)."""
        cut = lambda a: None if a is None else a[:k]  # noqa: E731
        out = _make_curve(self.metric, self.gib, self.epochs[:k], self.y[:k], cut(self.train_loss),
                          cut(self.val_loss), cut(self.lr), self.window)
        out.percent = self.percent
        return out


def _make_curve(metric: str, gib: bool, epochs: np.ndarray, y: np.ndarray, train_loss, val_loss, lr,
                window: int) -> Curve:
    n = len(y)
    finite = np.isfinite(y)
    best_i = (int(np.nanargmax(np.where(finite, y, np.nan)) if gib else np.nanargmin(np.where(finite, y, np.nan)))
              if finite.any() else None)
    return Curve(metric, gib, epochs, y, train_loss, val_loss, lr, n, int(min(window, max(4, n // 3))), best_i)


def prepare_curve(df: pd.DataFrame, metric: str, window: int) -> Curve:
    """The arrays of a normalised history; the trend window shrinks to a third of a short history."""
    col = lambda name: df[name].to_numpy(dtype=float) if name in df else None  # noqa: E731
    c = _make_curve(metric, metric_direction(metric), df["epoch"].to_numpy(dtype=float),
                    df[metric].to_numpy(dtype=float), col("train_loss"), col("val_loss"), col("lr"), window)
    c.percent = True if metric in df.attrs.get("percent_columns", ()) or percent_from_name(metric) else None
    return c


# ------------------------------------------------------------------------------------- divergence
@dataclass
class Divergence:
    """Where a run diverged: ``row`` is the first row no finding may use (the rows kept are [0, keep))."""
    kind: str                       # "nonfinite" | "explosion" | "returned" | "collapse"
    column: str
    row: int                        # the first bad row (nonfinite) or where the loss started to climb
    keep: int
    detail: dict[str, Any]


def find_divergence(c: Curve) -> Divergence | None:
    """The earliest of: a non-finite loss or metric, a loss explosion or return to its starting level, a
    score collapsing back to its starting level (chance)."""
    found = [d for d in (_first_nonfinite(c), _explosion(c), _collapse(c)) if d is not None]
    return min(found, key=lambda d: d.keep) if found else None


def _nonfinite_row(arr: np.ndarray, is_loss: bool) -> int | None:
    """First row that is Inf, or NaN from there to the end after the column had been finite (or NaN
    everywhere, for a loss). A column that starts empty (logged from a later epoch on) or has a hole is not a
    divergence."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    if not (~bad).any():
        return 0 if is_loss else None
    after_finite = np.cumsum(~bad) > 0
    # NaN from a row on to the end (a run that blew up); a NaN hole followed by values is a missing entry
    to_end = np.flip(np.cumsum(np.flip(~bad))) == 0
    cand = np.flatnonzero(np.isinf(arr) | (bad & after_finite & to_end))
    return int(cand[0]) if len(cand) else None


def _first_nonfinite(c: Curve) -> Divergence | None:
    hits = []
    for col, arr, is_loss in (("train_loss", c.train_loss, True), ("val_loss", c.val_loss, True),
                              (c.metric, c.y, c.metric in ("train_loss", "val_loss"))):
        i = _nonfinite_row(arr, is_loss) if arr is not None else None
        # A NaN score on a row whose losses are finite is a missing value, not a blow-up; so is a loss that
        # stops being logged while the monitor goes on (Lightning logging some epochs only).
        if i is not None and not is_loss and _losses_finite_at(c, i):
            i = None
        if i is not None and is_loss and col != c.metric and not np.isinf(arr[i]) and np.isfinite(c.y[-1]):
            i = None
        if i is not None:
            hits.append((i, col, int((~np.isfinite(arr)).sum())))
    if not hits:
        return None
    i, col, bad = min(hits)
    return Divergence("nonfinite", col, i, i, {"first_nonfinite_epoch": c.epoch_at(i), "nonfinite_rows": bad,
                                                "rows": c.n})


def _losses_finite_at(c: Curve, i: int) -> bool:
    losses = [a for a in (c.train_loss, c.val_loss) if a is not None]
    return bool(losses) and all(np.isfinite(a[i]) for a in losses)


# A training loss "returned to its start" when it climbed back this share of the way from its lowest value to
# its first one (cross-entropy back at ln(classes): the model predicts chance again).
RETURN_SHARE = 0.8


def _explosion(c: Curve) -> Divergence | None:
    """The training loss (else the validation loss) climbs above its first value, twice its lowest value
    so far and that lowest value plus ten times its noise so far -- or the training loss climbs back
    `RETURN_SHARE` of the way to its starting level after a real fall -- and is still there at the end.
    Linear in rows: running minima and an expanding noise estimate, no loop over rows."""
    col, arr = ("train_loss", c.train_loss) if c.train_loss is not None else ("val_loss", c.val_loss)
    if arr is None or np.isfinite(arr).sum() < 4:
        return None
    a = np.where(np.isfinite(arr), arr, np.nan)
    fin = np.isfinite(a)
    first = float(a[fin][0])
    low_prev = np.concatenate([[np.inf], np.fmin.accumulate(np.where(fin, a, np.inf))[:-1]])
    noise_prev = expanding_noise(a)
    with np.errstate(invalid="ignore"):
        lim = np.maximum(np.maximum(first, 2.0 * low_prev), low_prev + 10.0 * noise_prev)
        if col == "train_loss":
            fall = first - low_prev
            back = low_prev + RETURN_SHARE * fall
            real = np.isfinite(fall) & (fall > 0.2 * abs(first)) & (fall > 10.0 * noise_prev)
            lim = np.where(real, np.minimum(lim, back), lim)
        end = tail_median(a, 3)
        hit = np.flatnonzero(fin & (np.arange(len(a)) >= 3) & np.isfinite(low_prev) & (a > lim) & (end > lim))
    if not len(hit):
        return None
    j = int(hit[0])
    start = int(np.nanargmin(a[:j]))
    low = float(a[start])
    returned = a[j] <= max(first, 2.0 * low, low + 10.0 * noise_prev[j])
    return Divergence("returned" if returned else "explosion", col, start, start + 1,
                      {"min_loss": rounded(low), "min_epoch": c.epoch_at(start), "exploded_epoch": c.epoch_at(j),
                       "exploded_loss": rounded(a[j]), "end_loss": rounded(end), "first_loss": rounded(first)})


# A score "collapsed" when, after rising by at least this share of its scale (and ten times its noise), it
# fell back to within `COLLAPSE_SHARE` of that rise above its starting level and ended there.
COLLAPSE_RISE = 0.05
COLLAPSE_SHARE = 0.15


def _collapse(c: Curve) -> Divergence | None:
    """A score (greater is better) that rose, then fell back to its starting level -- for a classifier
    that starts at chance, back to chance -- and is still there at the end."""
    if not c.gib or c.best_i is None:
        return None
    fin = np.isfinite(c.y)
    y0, best, end = float(c.y[fin][0]), float(c.y[c.best_i]), tail_median(c.y, 3)
    scale = _scale_top(c) or max(abs(best), 1e-12)
    rise = best - y0
    if rise < max(COLLAPSE_RISE * scale, 10.0 * estimate_noise(c.y)):
        return None
    floor = y0 + COLLAPSE_SHARE * rise
    after = np.flatnonzero(fin & (np.arange(c.n) > c.best_i) & (c.y <= floor))
    if not len(after) or end > floor:
        return None
    j = int(after[0])
    return Divergence("collapse", c.metric, c.best_i, c.best_i + 1,
                      {"start_value": rounded(y0), "best": rounded(best), "best_epoch": c.epoch_at(c.best_i),
                       "collapsed_epoch": c.epoch_at(j), "collapsed_value": rounded(c.y[j]), "end_value": rounded(end),
                       **_chance(c)})


def _chance(c: Curve) -> dict[str, Any]:
    """Chance accuracy if the training loss is a cross-entropy: its first value ≈ ln(classes)."""
    tl = c.train_loss
    if tl is None or not np.isfinite(tl).any() or _scale_top(c) is None:
        return {}
    first = float(tl[np.isfinite(tl)][0])
    if not 0.5 < first < 12.0:
        return {}
    return {"classes_if_cross_entropy": rounded(math.exp(first)), "chance_if_cross_entropy": rounded(_scale_top(c) / math.exp(first))}


# ------------------------------------------------------------------------------------ measurements
@dataclass
class LossRatio:
    """val_loss/train_loss over the rows where both are finite and positive, and val_loss's minimum."""
    first: float
    mid: float                      # median over the middle window
    late: float                     # median over the last window
    slope: float                    # trend of the ratio over its second half, per epoch
    noise: float                    # the ratio's epoch-to-epoch noise
    val_min_i: int
    val_end: float
    train_end: float
    val_rise: float                 # val_loss's rise from its minimum (end median - minimum)
    val_tol: float                  # the smallest rise of val_loss that is not noise
    train_drop: float               # train_loss's fall after val_loss's minimum
    train_tol: float


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
    decayed: bool                   # it ends at <= LOW_LR_FRACTION of its peak
    low_i: int | None               # first row after the peak at <= LOW_LR_FRACTION of it
    at_plateau: float | None = None             # the LR where the stall starts (if any)
    at_plateau_fraction: float | None = None


@dataclass
class Warmup:
    """The leading rows where the LR rises, and their largest deviation from a straight line."""
    rows: int
    lr: np.ndarray
    deviation: float
    steps: np.ndarray


@dataclass
class Late:
    """The metric's trend over the last window (up = better) next to its noise."""
    gain: float                     # trend gain across the window
    se: float                       # its standard error
    noise: float                    # the whole curve's epoch-to-epoch noise
    tol: float                      # the smallest change that is not noise
    span: float                     # range of the smoothed curve

    @property
    def improving(self) -> bool:
        """Still improving beyond noise: the late trend beats two of its standard errors and the noise."""
        return self.gain > max(2.0 * self.se, self.tol)


@dataclass
class Measures:
    """What the trend rules look at, measured once on a history long enough to judge."""
    ceiling: float | None
    ceiling_is_implicit: bool
    reduce_lr_first_cut_epoch: float | None     # cited by the plateau finding
    plateau: dict[str, Any] | None              # `find_plateau`'s result (a stall, whatever its cause)
    ratio: LossRatio | None
    swings: Swings | None
    lr: LrSchedule | None
    warmup: Warmup | None
    late: Late
    top: float | None                           # the score's natural maximum (1 or 100), if bounded

    @property
    def still_improving(self) -> float:
        return self.late.gain


def measure_curve(c: Curve, ceiling: float | None, reduce_lr_first_cut_epoch: float | None) -> Measures:
    ceiling, implicit = _natural_ceiling(c, ceiling)
    late = _measure_late(c)
    pl = find_plateau(c.y, c.gib, window=c.window)
    ratio, swings, lr = _measure_loss_ratio(c), _measure_swings(c), _measure_lr(c, pl)
    warmup = _measure_warmup(c, lr) if lr is not None else None
    return Measures(ceiling, implicit, reduce_lr_first_cut_epoch, pl, ratio, swings, lr, warmup, late,
                    _natural_top(c))


def _scale_top(c: Curve) -> float | None:
    """The score's scale: 100 when the format or name says percent or a value exceeds 1, else 1; None for
    scores without a natural maximum and for losses."""
    if not (c.gib and np.isfinite(c.y).any() and any(w_ in c.metric for w_ in _BOUNDED_SCORES)):
        return None
    top = float(np.nanmax(c.y))
    if c.percent or 1.0 < top <= 100.0:
        return 100.0
    return 1.0 if top <= 1.0 else None


def _natural_top(c: Curve) -> float | None:
    """1 or 100 for an accuracy-like score (whichever scale its values use, or the format states), else None."""
    return _scale_top(c)


def _natural_ceiling(c: Curve, ceiling: float | None) -> tuple[float | None, bool]:
    """The given ceiling, else an accuracy-like score's maximum (1 or 100); True when implied."""
    if ceiling is None:
        top = _natural_top(c)
        return (top, True) if top is not None else (None, False)
    return ceiling, False


def _measure_late(c: Curve) -> Late:
    up = c.up[np.isfinite(c.y)]
    noise = estimate_noise(up)
    ys = smooth(up, smoothing_rows(len(up))) if len(up) else up
    span = float(np.max(ys) - np.min(ys)) if len(ys) else 0.0
    tail = up[-c.window:]
    gain, se = (0.0, math.inf) if len(tail) < 3 else (lambda b: (b[0] * (len(tail) - 1), b[1] * (len(tail) - 1)))(
        trend_slope(tail))
    total = float(np.max(ys) - ys[0]) if len(ys) else 0.0
    return Late(gain, se, noise, noise_tolerance(noise, smoothing_rows(max(len(up), 1)), total), span)


def _rise_and_tol(a: np.ndarray, start: int, w: int) -> tuple[float, float]:
    """How far ``a`` rose from row ``start`` to the median of its last rows, and the noise tolerance."""
    end = tail_median(a, max(2, w // 2))
    return end - a[start], noise_tolerance(estimate_noise(a), smoothing_rows(len(a)), np.nanmax(a) - np.nanmin(a))


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
    v_rise, v_tol = _rise_and_tol(np.where(ok, va, np.nan), vmin_i, w)
    t_rise, t_tol = _rise_and_tol(np.where(ok, tr, np.nan), vmin_i, w)
    h = len(r_ok) // 2
    mid = float(np.median(r_ok[max(0, h - w // 2):h + max(1, w // 2)]))
    return LossRatio(r_ok[0], mid, tail_median(ratio, w), r_slope, estimate_noise(r_ok), vmin_i,
                     tail_median(va, max(2, w // 2)), tail_median(tr, max(2, w // 2)), v_rise, v_tol, -t_rise, t_tol)


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
    final = float(lr_ok[np.flatnonzero(np.isfinite(lr_ok))[-1]])
    low = np.flatnonzero((np.arange(len(lr_ok)) > peak_i) & (lr_ok <= LOW_LR_FRACTION * peak))
    out = LrSchedule(lr_ok, peak_i, peak, final, final <= LOW_LR_FRACTION * peak, int(low[0]) if len(low) else None)
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


def short_summary(c: Curve) -> dict[str, Any]:
    """The summary of a history too short to judge."""
    return {"rows": c.n, "best": c.best, "best_epoch": c.epoch_at(c.best_i)}


def summarise(c: Curve, m: Measures) -> dict[str, Any]:
    """The measured numbers, in the order the diagnosis reports them."""
    s: dict[str, Any] = {**short_summary(c), "window": c.window, "noise": rounded(m.late.noise),
                         "noise_tolerance": rounded(m.late.tol)}
    if m.plateau is not None:
        s.update({"stall_epoch": c.epoch_at(m.plateau["start"]), "stall_level": rounded(m.plateau["level"])})
    if m.ratio is not None:
        s.update({"overfit_ratio": rounded(m.ratio.late), "ratio_slope": rounded(m.ratio.slope)})
    if m.swings is not None:
        s.update({"oscillation_amplitude": rounded(m.swings.amplitude),
                  "oscillation_flip_rate": rounded(m.swings.flip_rate)})
    if m.lr is not None:
        s.update({"lr_peak": rounded(m.lr.peak), "lr_final": rounded(m.lr.final),
                  "lr_peak_epoch": c.epoch_at(m.lr.peak_i), "lr_final_fraction": rounded(m.lr.final / m.lr.peak)})
    if m.warmup is not None:
        s.update({"warmup_epochs": m.warmup.rows, "warmup_max_deviation": rounded(m.warmup.deviation)})
    if m.lr is not None and m.lr.at_plateau_fraction is not None:
        s.update({"lr_at_plateau_fraction": rounded(m.lr.at_plateau_fraction)})
    g = m.late.gain / max(c.window - 1, 1)
    s["still_improving_per_epoch"] = rounded(g if c.gib else -g)
    s["still_improving"] = m.late.improving
    return s
