"""Confidence intervals and paired tests, with the data's independent unit as the unit of resampling.

Pairs are not independent: one digit image appears in up to 17 test pairs, and the same two people are
paired in many frames. A `Unit` says what is independent:

- one id per row (``person pair`` of a scene pair, ``subject`` of a table row): the interval is a
  cluster bootstrap over those ids, and the paired test a paired cluster bootstrap;
- two ids per row from one pool (``source image``: both images of an image pair): a bootstrap cannot
  resample such crossed units without overstating the variance (the "pigeonhole" bootstrap of Owen,
  2007, inflates row-level noise about threefold: measured in the unit tests), so the interval and the
  test use the dyadic cluster-robust variance (Aronow, Samii & Assenova, 2015): every two pairs that
  share an image are treated as correlated, with a normal interval;
- no ids: rows are independent (a row bootstrap).

Verdict words come from the paired test at a stated level ("better, p = 0.003", "not
distinguishable, p = 0.41"), never from overlapping intervals; with several comparisons in one
table, `holm` adjusts the p-values. A bootstrap p-value of 0 is reported as ``p < 1/B``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


# ------------------------------------------------------------------------- the independent unit
@dataclass(frozen=True)
class Unit:
    """What is independent in the data: ``ids`` is () for rows, one id array for clusters (person pair,
    subject), or two id arrays sharing one id space for dyads (the two source images of a pair)."""
    name: str
    ids: tuple = ()

    @property
    def n_units(self) -> int:
        return int(len(np.unique(np.concatenate([np.asarray(a) for a in self.ids])))) if self.ids else 0

    def describe(self, n_rows: int) -> str:
        if not self.ids:
            return f"{n_rows:,} rows, each independent"
        return f"{self.n_units:,} {self.name}s" + (" (both of each pair)" if len(self.ids) == 2 else "")


ROWS = Unit("row")


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2))


def dyadic_variance(values: np.ndarray, ida: np.ndarray, idb: np.ndarray) -> float:
    """Variance of the mean of ``values`` when any two rows sharing an id (a or b) may be correlated:
    (1/N^2) * sum over row pairs sharing an id of e_p e_q, e = value - mean, with a G/(G-1) correction."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    e = v - v.mean()
    uniq, inv = np.unique(np.concatenate([ida, idb]), return_inverse=True)
    s = np.bincount(inv[:n], weights=e, minlength=len(uniq)) + np.bincount(inv[n:], weights=e, minlength=len(uniq))
    total = float((s ** 2).sum())                          # counts row pairs sharing an id, once per id
    total -= float((e ** 2)[ida != idb].sum())             # each row with two ids met itself twice
    lo, hi = np.minimum(ida, idb), np.maximum(ida, idb)    # the same two ids in several rows: counted twice
    _, grp = np.unique(lo.astype(np.int64) * (int(hi.max()) + 1) + hi, return_inverse=True)
    g_sum = np.bincount(grp, weights=e)
    g_sq = np.bincount(grp, weights=e ** 2)
    total -= float((g_sum ** 2 - g_sq).sum())           # (zero for a dyad seen once)
    g = len(uniq)
    return max(total, 0.0) / n ** 2 * (g / max(g - 1, 1))


def interval(values: np.ndarray, unit: Unit = ROWS, n_boot: int = 2000, seed: int = 0,
             confidence: float = 0.95) -> dict[str, Any]:
    """Mean of per-row ``values`` (0/1 correctness for an accuracy) with an interval that respects the unit."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"mean": float(v.mean()) if v.size else float("nan"), "n": int(v.size),
                           "n_units": unit.n_units or int(v.size), "unit": unit.name}
    if len(unit.ids) == 2:
        half = _z(confidence) * math.sqrt(dyadic_variance(v, *unit.ids))
        out.update(ci_low=max(0.0, out["mean"] - half), ci_high=min(1.0, out["mean"] + half),
                   method=f"dyadic cluster-robust interval over {unit.describe(v.size)}")
        return out
    w = unit_weights(list(unit.ids), v.size, n_boot, seed)
    means = (w @ v) / np.maximum(w.sum(axis=1), 1e-12)
    lo, hi = np.quantile(means, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    out.update(ci_low=float(lo), ci_high=float(hi),
               method=f"{'cluster' if unit.ids else 'row'} bootstrap over {unit.describe(v.size)}, {n_boot:,} resamples")
    return out


def paired_test(correct_a: np.ndarray, correct_b: np.ndarray, unit: Unit = ROWS, n_boot: int = 2000,
                seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """B minus A on the same rows: the difference, its interval and a two-sided p-value for "no
    difference", all respecting the unit; the exact McNemar p (rows as independent) is kept beside it."""
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_test: need two equal 1-D vectors, got {a.shape} and {b.shape}")
    d = b - a
    out: dict[str, Any] = {"diff": float(d.mean()), "unit": unit.name, "n": int(d.size),
                           "n_units": unit.n_units or int(d.size), "mcnemar_p": mcnemar_test(a > 0.5, b > 0.5)["p_value"]}
    if len(unit.ids) == 2:
        se = math.sqrt(dyadic_variance(d, *unit.ids))
        z = _z(confidence)
        p = 1.0 if se == 0 else float(2 * _st.norm.sf(abs(out["diff"]) / se))
        out.update(ci_low=out["diff"] - z * se, ci_high=out["diff"] + z * se, p_value=p, p_floor=None,
                   method=f"paired dyadic cluster-robust test over {unit.describe(d.size)}")
        return out
    w = unit_weights(list(unit.ids), d.size, n_boot, seed)
    diffs = (w @ d) / np.maximum(w.sum(axis=1), 1e-12)                                     # [B]
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    p = min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())) if d.any() else 1.0
    out.update(ci_low=float(lo), ci_high=float(hi), p_value=float(p), p_floor=1.0 / n_boot,
               method=f"paired {'cluster' if unit.ids else 'row'} bootstrap over {unit.describe(d.size)}, "
                      f"{n_boot:,} resamples")
    return out


# ------------------------------------------------------------------------------ cluster bootstrap
Units = list  # of np.ndarray, or of tuples of np.ndarray sharing one id space


def _as_way(way, n_rows: int) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(a) for a in (way if isinstance(way, tuple) else (way,)))
    for a in arrays:
        if a.shape != (n_rows,):
            raise ValueError(f"unit ids have shape {a.shape}; expected ({n_rows},)")
    return arrays


def unit_weights(units: Units, n_rows: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """Bootstrap weights [n_boot, n_rows]: each way's distinct ids drawn with replacement, a row weighted
    by the product of its ids' counts. ``units == []`` resamples rows."""
    rng = np.random.default_rng(seed)
    w = np.ones((n_boot, n_rows), dtype=np.float32)
    for way in units or [np.arange(n_rows)]:
        arrays = _as_way(way, n_rows)
        uniq, inv = np.unique(np.concatenate(arrays), return_inverse=True)
        counts = rng.multinomial(len(uniq), np.full(len(uniq), 1.0 / len(uniq)), size=n_boot)   # [B, U]
        for k in range(len(arrays)):                       # (ida, idb): count of image a x count of image b
            w *= counts[:, inv[k * n_rows:(k + 1) * n_rows]].astype(np.float32)                   # [B, N]
    return w


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values (same order as given)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def format_p(p: float, p_floor: float | None = None) -> str:
    """``p = 0.012``, or ``p < 5e-4`` when a bootstrap saw no replicate on the other side."""
    if p_floor is not None and p < p_floor:
        return f"p < {p_floor:.0e}"
    if p_floor is not None and p == 0:
        return f"p < {p_floor:.0e}"
    return f"p = {p:.2g}" if p >= 0.001 else f"p = {p:.1e}"


def verdict(test: dict[str, float], better: str = "better", worse: str = "worse", alpha: float = 0.05,
            p_key: str = "p_value") -> str:
    """Words from the paired test at level ``alpha``: "better, p = 0.003" or "not distinguishable, p = 0.41"."""
    p = test[p_key]
    words = (better if test["diff"] > 0 else worse) if p < alpha else "not distinguishable"
    return f"{words} ({format_p(p, test.get('p_floor'))}, alpha {alpha:g}; {test.get('method', 'paired test')})"


def unit_of(split) -> Unit:
    """The independent unit of a pair split (`helpers.data.pairs.PairSet`): the person pair for scene
    pairs (the same two people in many frames), both source images for image pairs with ids, else rows."""
    extras = getattr(split, "extras", None) or {}
    if all(k in extras for k in ("seq", "track_a", "track_b")):
        seq = np.asarray(extras["seq"], dtype=np.int64)
        a, b = np.asarray(extras["track_a"], dtype=np.int64), np.asarray(extras["track_b"], dtype=np.int64)
        return Unit("person pair", ((seq << 40) + (np.minimum(a, b) << 20) + np.maximum(a, b),))
    if getattr(split, "ida", None) is not None and getattr(split, "idb", None) is not None:
        return Unit("source image", (np.asarray(split.ida), np.asarray(split.idb)))
    return ROWS
