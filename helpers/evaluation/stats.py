"""One statistics vocabulary: intervals over the data's independent unit, paired comparisons with Holm,
and comparisons that count seed noise beside test-split noise.

Pairs are not independent, and a `Unit` says what is:

- one id per row: a cluster bootstrap over those ids. Scene pairs use the **sequence** (crowd size,
  walking direction and hotspots are drawn per sequence, so pairs of one sequence err together; an
  interval over person pairs covered 0.68 of independent 4-sequence test sets). With fewer than
  `MIN_SEQUENCES` sequences a bootstrap over them is unreliable, so the unit falls back to the person
  pair and the unit's name says the interval is conditional on those sequences;
- two ids per row from one pool (both source images of an image pair): the dyadic cluster-robust
  variance (Aronow, Samii & Assenova, 2015) with a normal interval; a product-weight ("pigeonhole")
  bootstrap would inflate row noise about threefold. Conditional on the one draw of training images;
- no ids: rows are independent (a row bootstrap).

Every question has one function: `interval` (a statistic over its unit), `compare` (paired
comparisons of models on the same rows, a family Holm-adjusted), `compare_over_seeds` (seed noise and
test-split noise together, t with Welch-Satterthwaite degrees of freedom) and `seed_prediction_bound`
(how far two single-seed runs can land apart). Each returns a `Comparison` (or a dict for an interval)
whose verdict words come from the (adjusted) p at ``alpha`` -- "better", "worse" or "not
distinguishable", never "does not help" -- with the interval adjusted the same way beside it. The
coverage of every interval method is measured in tests/unit/evaluation/test_stats_coverage.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
from scipy import stats as _st

ALPHA = 0.05
P_FLOOR = 1e-16        # an analytic p below this is reported as "p < 1e-16" (never printed as 0)
MIN_SEQUENCES = 10     # fewer sequences than this: intervals resample person pairs within them
VERDICT_WORDS = ("better", "worse", "not distinguishable")


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


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict[str, float]:
    """Exact McNemar test on paired per-example correctness of two models (rows as independent).

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


# ------------------------------------------------------------------------- the independent unit
@dataclass(frozen=True)
class Unit:
    """What is independent in the data: ``ids`` is () for rows, one id array for clusters (sequence,
    person pair, subject), or two id arrays sharing one id space for dyads (the two source images of a
    pair). ``conditional`` names what the interval is conditional on, when that is not obvious."""
    name: str
    ids: tuple = ()
    conditional: str = ""

    @property
    def n_units(self) -> int:
        return int(len(np.unique(np.concatenate([np.asarray(a) for a in self.ids])))) if self.ids else 0

    def describe(self, n_rows: int) -> str:
        if not self.ids:
            return f"{n_rows:,} rows, each independent"
        text = f"{self.n_units:,} {self.name}s" + (" (both of each pair)" if len(self.ids) == 2 else "")
        return text + (f"; conditional on {self.conditional}" if self.conditional else "")


ROWS = Unit("row")


def unit_of(split) -> Unit:
    """The independent unit of a pair split (`helpers.data.pairs.PairSet`): the sequence for scene pairs
    (the person pair within them when fewer than `MIN_SEQUENCES`, conditional on those sequences), both
    source images for image pairs with ids (conditional on the one draw of images), else rows."""
    extras = getattr(split, "extras", None) or {}
    if "seq" in extras:
        seq = np.asarray(extras["seq"], dtype=np.int64)
        n_seq = len(np.unique(seq))
        if n_seq >= MIN_SEQUENCES or not all(k in extras for k in ("track_a", "track_b")):
            return Unit("sequence", (seq,))
        a, b = np.asarray(extras["track_a"], dtype=np.int64), np.asarray(extras["track_b"], dtype=np.int64)
        return Unit("person pair", ((seq << 40) + (np.minimum(a, b) << 20) + np.maximum(a, b),),
                    conditional=f"these {n_seq} sequences (fewer than {MIN_SEQUENCES} to resample)")
    if getattr(split, "ida", None) is not None and getattr(split, "idb", None) is not None:
        return Unit("source image", (np.asarray(split.ida), np.asarray(split.idb)),
                    conditional="this draw of images")
    return ROWS


def _z(confidence: float) -> float:
    return float(_st.norm.ppf(0.5 + confidence / 2))


def dyadic_variance(values: np.ndarray, ida: np.ndarray, idb: np.ndarray) -> float:
    """Variance of the mean of ``values`` when any two rows sharing an id (a or b) may be correlated:
    (1/N^2) * sum over ordered row pairs (p, q) sharing an id of e_p e_q (p == q included once),
    e = value - mean, with a G/(G-1) correction. A row whose two ids are equal (a self-pair) shares
    one id with itself, not two."""
    v = np.asarray(values, dtype=np.float64)
    ida, idb = np.asarray(ida), np.asarray(idb)
    n = v.size
    e = v - v.mean()
    uniq, inv = np.unique(np.concatenate([ida, idb]), return_inverse=True)
    ia, ib = inv[:n], inv[n:]
    same = ia == ib
    # Each row enters an id's sum once per distinct id it holds: a self-pair adds to its id once.
    s = np.bincount(ia, weights=e, minlength=len(uniq)) + np.bincount(ib[~same], weights=e[~same],
                                                                       minlength=len(uniq))
    total = float((s ** 2).sum())                          # ordered row pairs sharing an id, once per shared id
    total -= float((e ** 2)[~same].sum())                  # a two-id row met itself under both ids
    # Two rows with the same two distinct ids met under both: subtract the second count.
    lo, hi = np.minimum(ia, ib)[~same], np.maximum(ia, ib)[~same]
    if lo.size:
        _, grp = np.unique(lo.astype(np.int64) * len(uniq) + hi, return_inverse=True)
        g_sum = np.bincount(grp, weights=e[~same])
        g_sq = np.bincount(grp, weights=e[~same] ** 2)
        total -= float((g_sum ** 2 - g_sq).sum())          # (zero for a dyad seen once)
    g = len(uniq)
    return max(total, 0.0) / n ** 2 * (g / max(g - 1, 1))


# ------------------------------------------------------------------------------ cluster bootstrap
def _as_way(way, n_rows: int) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(a) for a in (way if isinstance(way, tuple) else (way,)))
    for a in arrays:
        if a.shape != (n_rows,):
            raise ValueError(f"unit ids have shape {a.shape}; expected ({n_rows},)")
    return arrays


def unit_weights(units: list, n_rows: int, n_boot: int, seed: int = 0) -> np.ndarray:
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


def bootstrap_means(values: np.ndarray, unit: Unit, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Means of ``values`` [N] (or of each column of [N, K]) over ``n_boot`` resamples of the unit."""
    w = unit_weights(list(unit.ids), len(values), n_boot, seed)
    return (w @ np.asarray(values, np.float64)) / np.maximum(w.sum(axis=1), 1e-12).reshape(
        (-1,) + (1,) * (np.ndim(values) - 1))


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p of "no difference": how often resampled differences fall on the far side of zero."""
    if not np.any(draws):
        return 1.0
    return float(min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean())))


# --------------------------------------------------------------------------------- the spread
@dataclass(frozen=True)
class Spread:
    """How an estimate varies: bootstrap ``draws``, or a standard error ``se`` with ``df`` degrees of
    freedom (inf: normal). Gives the interval at any level and the two-sided p of "zero"."""
    estimate: float
    draws: np.ndarray | None = None
    se: float = float("nan")
    df: float = math.inf

    def interval(self, confidence: float) -> tuple[float, float]:
        if self.draws is not None:
            lo, hi = np.quantile(self.draws, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
            return float(lo), float(hi)
        if not np.isfinite(self.se):
            return float("nan"), float("nan")
        q = _z(confidence) if math.isinf(self.df) else float(_st.t.ppf(0.5 + confidence / 2, self.df))
        return self.estimate - q * self.se, self.estimate + q * self.se

    @property
    def p(self) -> float:
        if self.draws is not None:
            return _bootstrap_p(self.draws)
        if not np.isfinite(self.se):
            return float("nan")
        if self.se == 0:
            return 1.0 if self.estimate == 0 else 0.0
        dist = _st.norm if math.isinf(self.df) else _st.t(self.df)
        return float(2 * dist.sf(abs(self.estimate) / self.se))

    @property
    def p_floor(self) -> float:
        return 1.0 / len(self.draws) if self.draws is not None else P_FLOOR


def spread_of(values: np.ndarray, unit: Unit, n_boot: int = 2000, seed: int = 0) -> Spread:
    """The spread of the mean of per-row ``values`` over the unit: dyadic SE for two ids, else bootstrap."""
    v = np.asarray(values, dtype=np.float64)
    if len(unit.ids) == 2:
        return Spread(float(v.mean()), se=math.sqrt(dyadic_variance(v, *unit.ids)))
    return Spread(float(v.mean()), draws=bootstrap_means(v, unit, n_boot, seed))


def _method(unit: Unit, n_rows: int, n_boot: int, paired: bool) -> str:
    lead = "paired " if paired else ""
    if len(unit.ids) == 2:
        return f"{lead}dyadic cluster-robust {'test' if paired else 'interval'} over {unit.describe(n_rows)}"
    return f"{lead}{'cluster' if unit.ids else 'row'} bootstrap over {unit.describe(n_rows)}, {n_boot:,} resamples"


def interval(values: np.ndarray, unit: Unit = ROWS, n_boot: int = 2000, seed: int = 0,
             confidence: float = 0.95) -> dict[str, Any]:
    """Mean of per-row ``values`` (0/1 correctness for an accuracy) with an interval over the unit."""
    v = np.asarray(values, dtype=np.float64)
    out: dict[str, Any] = {"mean": float(v.mean()) if v.size else float("nan"), "n": int(v.size),
                           "n_units": unit.n_units or int(v.size), "unit": unit.name,
                           "method": _method(unit, v.size, n_boot, paired=False)}
    lo, hi = spread_of(v, unit, n_boot, seed).interval(confidence) if v.size else (float("nan"),) * 2
    if len(unit.ids) == 2:
        lo, hi = max(0.0, lo), min(1.0, hi)
    return {**out, "ci_low": lo, "ci_high": hi}


# ------------------------------------------------------------------------------- comparisons
def format_p(p: float, p_floor: float | None = None) -> str:
    """``p = 0.012``, or ``p < 5e-04`` at the method's resolution (a bootstrap that saw no replicate on
    the other side of zero; a normal tail below `P_FLOOR`)."""
    floor = P_FLOOR if p_floor is None else p_floor
    if not np.isfinite(p):
        return "p n/a"
    if p <= floor:
        return f"p < {floor:.0e}"
    return f"p = {p:.2g}" if p >= 0.001 else f"p = {p:.1e}"


@dataclass(frozen=True)
class Comparison:
    """B minus A (or one estimate) with its interval, p, Holm-adjusted p and the interval adjusted the same
    way, the verdict at ``alpha`` from the adjusted p, and the unit it was resampled over."""
    estimate: float
    ci_low: float
    ci_high: float
    p: float
    p_adjusted: float
    ci_low_adjusted: float
    ci_high_adjusted: float
    verdict: str                    # one of VERDICT_WORDS, or "not testable"
    unit: str
    n_units: int
    method: str
    n_family: int = 1
    alpha: float = ALPHA
    p_floor: float = P_FLOOR
    extra: Mapping[str, Any] = field(default_factory=dict)
    spread: Spread | None = field(default=None, repr=False, compare=False)

    def words(self, better: str = "better", worse: str = "worse") -> str:
        """The verdict with the caller's names: "stage 1 better", "stage 1 worse", "not distinguishable"."""
        return {"better": better, "worse": worse}.get(self.verdict, self.verdict)

    def text(self, better: str = "better", worse: str = "worse") -> str:
        """"stage 1 better (p = 0.003, Holm over 4, alpha 0.05; paired cluster bootstrap over 30 sequences)"."""
        if self.verdict == "not testable":
            return f"not testable ({self.method})"
        holm_note = f", Holm over {self.n_family}" if self.n_family > 1 else ""
        return (f"{self.words(better, worse)} ({format_p(self.p_adjusted, self.p_floor)}{holm_note}, "
                f"alpha {self.alpha:g}; {self.method})")

    def as_dict(self, better: str = "better", worse: str = "worse") -> dict[str, Any]:
        """The flat record written to metrics and tables (``diff``, ``p_value``, ``p_holm``, ``verdict`` ...)."""
        return {"diff": self.estimate, "ci_low": self.ci_low, "ci_high": self.ci_high, "p_value": self.p,
                "p_holm": self.p_adjusted, "ci_low_adjusted": self.ci_low_adjusted,
                "ci_high_adjusted": self.ci_high_adjusted, "p_floor": self.p_floor, "n_family": self.n_family,
                "verdict": self.text(better, worse), "verdict_word": self.verdict, "unit": self.unit, "n_units": self.n_units,
                "method": self.method, **dict(self.extra)}


def _verdict_words(estimate: float, p: float, alpha: float) -> str:
    if not np.isfinite(p):
        return "not testable"
    return ("better" if estimate > 0 else "worse") if p < alpha else "not distinguishable"


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment of several p-values (same order as given); NaN stays NaN, out of the family."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (len(finite) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def make_comparison(spread: Spread, unit: str, n_units: int, method: str, alpha: float = ALPHA,
                    extra: Mapping[str, Any] | None = None, testable: bool = True) -> Comparison:
    """A single (unadjusted) comparison from its spread; `adjust` makes it one of a Holm family."""
    p = spread.p if testable else float("nan")
    lo, hi = spread.interval(1 - alpha)
    return Comparison(spread.estimate, lo, hi, p, p, lo, hi, _verdict_words(spread.estimate, p, alpha), unit,
                      int(n_units), method, 1, alpha, spread.p_floor, dict(extra or {}), spread)


def adjust(comparisons: Mapping[str, Comparison]) -> dict[str, Comparison]:
    """Holm-adjust one table's comparisons: each gets its adjusted p, the verdict from it, and the interval at
    level 1 - alpha * p / p_adjusted, which excludes zero exactly when the adjusted p is below alpha.
    A p at its method's floor enters Holm at the floor (never as 0)."""
    names = list(comparisons)
    raw = [max(c.p, c.p_floor) if np.isfinite(c.p) else np.nan for c in comparisons.values()]
    adj = holm(raw)
    n = int(np.isfinite(raw).sum())
    out = {}
    for name, p, pa in zip(names, raw, adj):
        c = comparisons[name]
        if not np.isfinite(p) or c.spread is None:
            out[name] = replace(c, n_family=n)
            continue
        level = 1 - min(c.alpha, c.alpha * p / pa) if pa > 0 else 1 - c.alpha
        lo, hi = c.spread.interval(level)
        # a p at its floor is a bound, and so is its adjusted p: "p < 2e-16" after Holm over 2
        floor = c.p_floor * pa / p if c.p <= c.p_floor else c.p_floor
        out[name] = replace(c, p_adjusted=float(pa), ci_low_adjusted=lo, ci_high_adjusted=hi, n_family=n,
                            verdict=_verdict_words(c.estimate, pa, c.alpha), p_floor=float(floor))
    return out


def compare(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], unit: Unit = ROWS, n_boot: int = 2000,
            seed: int = 0, alpha: float = ALPHA) -> dict[str, Comparison]:
    """The paired comparison entry point: for each name, B minus A (per-row 0/1 correctness or scores of two
    models on the same rows) over ``unit`` -- a paired cluster bootstrap, or the dyadic variance for two ids --
    Holm-adjusted as one family when there are several. The exact McNemar p (rows as independent) is kept
    in ``extra`` beside it."""
    out = {}
    for name, (a, b) in pairs.items():
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape or a.ndim != 1:
            raise ValueError(f"compare {name!r}: need two equal 1-D vectors, got {a.shape} and {b.shape}")
        d = b - a
        extra = {"n": int(d.size), "mcnemar_p": mcnemar_test(a > 0.5, b > 0.5)["p_value"]}
        out[name] = make_comparison(spread_of(d, unit, n_boot, seed), unit.name, unit.n_units or d.size,
                                    _method(unit, d.size, n_boot, paired=True), alpha, extra)
    return adjust(out) if len(out) > 1 else out


def compare_to_references(model: np.ndarray, references: Mapping[str, np.ndarray], unit: Unit = ROWS,
                          **kw) -> dict[str, Comparison]:
    """The model minus each reference on the same rows (`compare`), Holm-adjusted over the references."""
    return compare({name: (ref, model) for name, ref in references.items()}, unit, **kw)


def compare_over_seeds(ref: np.ndarray, other: np.ndarray, unit: Unit = ROWS, paired_seeds: bool = True,
                       n_boot: int = 2000, seed: int = 0, alpha: float = ALPHA) -> Comparison:
    """``other`` minus ``ref`` in mean per-row value, counting both sources of noise: the test split (the
    paired spread over ``unit`` of the seed-averaged rows) and training randomness (the per-seed
    differences' SE when the seeds are paired -- the same seed for both -- else each side's seed variance /
    its count). ``ref`` and ``other`` are [S, N] (a single model: [N], paired with every seed). A t interval
    and p with Welch-Satterthwaite degrees of freedom; with one seed per side the seed noise cannot be
    estimated and the comparison is "not testable"."""
    a, b = np.atleast_2d(np.asarray(ref, np.float64)), np.atleast_2d(np.asarray(other, np.float64))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"compare_over_seeds: {a.shape} and {b.shape} are not the same test rows")
    test = spread_of(b.mean(0) - a.mean(0), unit, n_boot, seed)
    se_test = float(np.std(test.draws, ddof=1)) if test.draws is not None else test.se
    acc_a, acc_b = a.mean(1), b.mean(1)
    if paired_seeds and (len(a) == len(b) or min(len(a), len(b)) == 1):
        per_seed = acc_b - acc_a if len(a) == len(b) else (acc_b[:, None] - acc_a[None, :]).ravel()
        parts = [(per_seed.var(ddof=1) / len(per_seed), len(per_seed) - 1)] if len(per_seed) > 1 else []
    else:
        per_seed = np.array([])
        parts = [(x.var(ddof=1) / len(x), len(x) - 1) for x in (acc_a, acc_b) if len(x) > 1]
    testable = bool(parts) and (paired_seeds or len(parts) == 2)
    est = float(acc_b.mean() - acc_a.mean())
    n_seeds = int(max(len(a), len(b)))
    spread = with_seed_noise(est, se_test, parts)
    se, df, var_seed = spread.se, spread.df, float(sum(v for v, _ in parts))
    method = (f"{_method(unit, a.shape[1], n_boot, paired=True)} on seed-averaged rows, with the spread of "
              f"{n_seeds} seeds{' (paired by seed)' if paired_seeds else ''} (t, {df:.1f} df)" if testable else
              f"one seed per side: the seed noise cannot be estimated")
    extra = {"se_test": se_test, "se_seeds": math.sqrt(var_seed), "se": se, "df": df, "n_seeds": n_seeds,
             "per_seed": per_seed.tolist(), "p_test_only": test.p,
             "same_sign": int((np.sign(per_seed) == np.sign(est)).sum()) if est and per_seed.size else 0}
    return make_comparison(spread, unit.name, unit.n_units or a.shape[1], method, alpha, extra, testable)


def with_seed_noise(estimate: float, se_test: float, seed_parts: list[tuple[float, int]]) -> Spread:
    """The spread of an estimate from a test split (standard error ``se_test``) and training seeds: each seed
    part is (its variance of the estimate, its degrees of freedom), e.g. sd^2 / S with S - 1. A t with
    Welch-Satterthwaite degrees of freedom (the test-split term has, nearly, infinitely many)."""
    var_seed = float(sum(v for v, _ in seed_parts))
    se = math.sqrt(se_test ** 2 + var_seed)
    den = sum(v ** 2 / k for v, k in seed_parts if v > 0 and k > 0)
    return Spread(float(estimate), se=se, df=(se ** 4 / den) if den > 0 else math.inf)


def seed_prediction_bound(sd: float, n_seeds: int, confidence: float = 0.95) -> float:
    """How far apart two single-seed runs of one recipe can land from the seed alone (a prediction bound
    for the difference of two new runs): t with n_seeds - 1 df times sqrt(2) times the seed SD, so the
    SD's own uncertainty from few seeds widens it. NaN with fewer than two seeds."""
    if n_seeds < 2 or not np.isfinite(sd):
        return float("nan")
    return float(_st.t.ppf(0.5 + confidence / 2, n_seeds - 1) * math.sqrt(2) * sd)


def compare_seed_scores(ref: Mapping[int, float], other: Mapping[int, float], alpha: float = ALPHA) -> Comparison:
    """``other`` minus ``ref`` when only one score per seed is kept (no per-row predictions): a paired t over the
    seeds both ran (the same seed gives both the same data order), Welch's t over unpaired seeds when fewer
    than two are shared, "not testable" with fewer than two per side. Seed noise only: the scores share one
    fixed test split, whose sampling noise this cannot count (the method says so)."""
    common = sorted(set(ref) & set(other))
    fixed = "; the test split is fixed: its sampling noise is not counted"
    if len(common) >= 2:
        d = np.array([other[k] - ref[k] for k in common], float)
        spread = Spread(float(d.mean()), se=float(d.std(ddof=1) / math.sqrt(len(d))), df=len(d) - 1)
        return make_comparison(spread, "seed", len(d), f"paired t-test over {len(d)} shared seeds{fixed}", alpha)
    x, y = np.asarray(list(ref.values()), float), np.asarray(list(other.values()), float)
    est = float(y.mean() - x.mean()) if len(x) and len(y) else float("nan")
    if min(len(x), len(y)) < 2:
        return make_comparison(Spread(est), "seed", len(x) + len(y), "fewer than two seeds per side", alpha,
                               testable=False)
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)) if va + vb > 0 else len(x) + len(y) - 2
    return make_comparison(Spread(est, se=math.sqrt(va + vb), df=df), "seed", len(x) + len(y),
                           f"Welch t-test over seeds (unpaired: fewer than two shared seeds){fixed}", alpha)
