"""Intervals and paired tests that respect the independent unit: coverage with and without clustering."""
import numpy as np
import pytest

from helpers.evaluation.stats import (adjust, compare, compare_over_seeds, dyadic_variance, format_p, holm,
                                      interval, MIN_SEQUENCES, ROWS, seed_prediction_bound, Unit, unit_of,
                                      unit_weights, wilson_interval)


def _digit_like(rng, effect, n=4000, g=1197):
    ida, idb = rng.integers(0, g, n), rng.integers(0, g, n)
    z = rng.normal(0, effect, g)
    p = 1 / (1 + np.exp(-(2.5 + z[ida] + z[idb])))
    return rng.random(n) < p, ida, idb


def test_dyadic_interval_matches_wilson_without_clustering_and_widens_with_it():
    rng = np.random.default_rng(1)
    c, ida, idb = _digit_like(rng, 0.0)
    r = interval(c, Unit("source image", (ida, idb)))
    lo, hi = wilson_interval(int(c.sum()), c.size)
    assert (r["ci_high"] - r["ci_low"]) == pytest.approx(hi - lo, rel=0.15)
    c, ida, idb = _digit_like(rng, 2.0)
    r = interval(c, Unit("source image", (ida, idb)))
    lo, hi = wilson_interval(int(c.sum()), c.size)
    assert (r["ci_high"] - r["ci_low"]) > 1.5 * (hi - lo), "image difficulty makes pairs sharing an image correlated"
    assert "1,19" in r["method"] and "source images" in r["method"]


def test_dyadic_interval_covers_the_truth_under_image_effects():
    rng = np.random.default_rng(2)
    truth = np.mean(1 / (1 + np.exp(-(2.5 + rng.normal(0, 1.5, 400000) + rng.normal(0, 1.5, 400000)))))
    hits = 0
    for _ in range(120):
        c, ida, idb = _digit_like(rng, 1.5)
        r = interval(c, Unit("source image", (ida, idb)))
        hits += r["ci_low"] <= truth <= r["ci_high"]
    assert hits / 120 > 0.9


def test_the_pigeonhole_bootstrap_would_overstate_row_noise():
    # Why crossed units use the dyadic variance: product weights of two resampled images inflate the
    # variance of independent rows about threefold.
    rng = np.random.default_rng(3)
    n, g = 4000, 1197
    ida, idb = rng.integers(0, g, n), rng.integers(0, g, n)
    v = (rng.random(n) < 0.9).astype(float)
    w = unit_weights([(ida, idb)], n, 1000, seed=0)
    boot_var = np.var((w @ v) / w.sum(1))
    assert 2.2 < boot_var / (v.var() / n) < 4.5


def test_cluster_bootstrap_over_person_pairs_widens_an_interval_of_repeated_pairs():
    rng = np.random.default_rng(4)
    pair = np.repeat(np.arange(200), 20)                     # 200 person pairs seen in 20 frames each
    c = np.repeat(rng.random(200) < 0.8, 20)                 # a pair is right or wrong in every frame
    r = interval(c, Unit("person pair", (pair,)))
    lo, hi = wilson_interval(int(c.sum()), c.size)
    assert r["ci_high"] - r["ci_low"] > 3 * (hi - lo)
    assert r["n_units"] == 200 and "cluster bootstrap over 200 person pairs" in r["method"]


def test_paired_test_verdicts_and_p_floor():
    rng = np.random.default_rng(5)
    pair = np.repeat(np.arange(300), 5)
    a = rng.random(1500) < 0.8
    b = a.copy()
    b[:150] = True
    t = compare({"b": (a, b)}, Unit("person pair", (pair,)))["b"]
    assert t.estimate > 0 and t.p == 0.0 and t.text().startswith("better (p < 5e-04")
    t2 = compare({"same": (a, a)}, ROWS)["same"]
    assert t2.p == 1.0 and t2.text().startswith("not distinguishable") and t2.verdict == "not distinguishable"
    c, ida, idb = _digit_like(rng, 0.5)
    t3 = compare({"x": (c, c | (rng.random(c.size) < 0.01))}, Unit("source image", (ida, idb)))["x"].as_dict()
    assert t3["ci_low"] <= t3["diff"] <= t3["ci_high"] and 0 <= t3["p_value"] <= 1 and "mcnemar_p" in t3
    assert format_p(0.0, 5e-4) == "p < 5e-04" and format_p(0.0123) == "p = 0.012"


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = holm([0.01, float("nan"), 0.04])          # NaN (not testable) stays out of the family
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.04)


def _brute_force_dyadic(v, ida, idb):
    e = v - v.mean()
    ids = [{a, b} for a, b in zip(ida, idb)]
    total = sum(e[p] * e[q] for p in range(len(v)) for q in range(len(v)) if ids[p] & ids[q])
    g = len(set(ida) | set(idb))
    return total / len(v) ** 2 * g / (g - 1)


@pytest.mark.parametrize("self_share", [0.0, 0.3, 1.0])
def test_dyadic_variance_matches_brute_force_with_self_pairs_and_repeated_dyads(self_share):
    rng = np.random.default_rng(7)
    n = 120
    ida, idb = rng.integers(0, 25, n), rng.integers(0, 25, n)
    k = int(self_share * n)
    idb[:k] = ida[:k]                                   # self-pairs (ida == idb)
    idb[k:k + 5], ida[k:k + 5] = ida[k + 5:k + 10], idb[k + 5:k + 10]     # the same dyad, ids swapped
    v = rng.normal(size=n)
    assert dyadic_variance(v, ida, idb) == pytest.approx(_brute_force_dyadic(v, ida, idb), rel=1e-10)


def test_adjusted_interval_excludes_zero_exactly_when_the_holm_verdict_is_called():
    rng = np.random.default_rng(8)
    seq = np.repeat(np.arange(40), 20)
    a = (rng.random(800) < 0.7).astype(float)
    pairs = {f"m{k}": (a, np.where(rng.random(800) < 0.04 * k, 1.0, a)) for k in range(4)}
    out = compare(pairs, Unit("sequence", (seq,)))
    assert {c.n_family for c in out.values()} == {4}
    for c in out.values():
        called = c.p_adjusted < c.alpha
        assert called == (c.ci_low_adjusted > 0 or c.ci_high_adjusted < 0)
        assert c.ci_low_adjusted <= c.ci_low and c.ci_high_adjusted >= c.ci_high    # adjusted is wider
        assert (c.verdict != "not distinguishable") == called and "Holm over 4" in c.text()
    assert out["m0"].verdict == "not distinguishable" and out["m3"].words("m3 better") == "m3 better"
    assert adjust({"one": out["m3"]})["one"].n_family == 1


def test_seed_comparison_counts_seed_noise_and_says_when_it_cannot():
    rng = np.random.default_rng(9)
    seq = np.repeat(np.arange(30), 30)
    base = rng.random(900)
    a = np.stack([(base < 0.70 + s).astype(float) for s in (0.0, 0.05, -0.05)])
    b = np.stack([(base < 0.72 + s).astype(float) for s in (0.04, -0.04, 0.0)])
    unit = Unit("sequence", (seq,))
    both = compare_over_seeds(a, b, unit, paired_seeds=True)
    test_only = compare({"d": (a.mean(0), b.mean(0))}, unit)["d"]
    assert both.extra["se_seeds"] > 0 and both.ci_high - both.ci_low > test_only.ci_high - test_only.ci_low
    assert np.isfinite(both.extra["df"]) and both.extra["n_seeds"] == 3
    one = compare_over_seeds(a[:1], b[:1], unit)
    assert one.verdict == "not testable" and np.isnan(one.p) and "not testable" in one.text()


def test_seed_prediction_bound_uses_t_with_the_sds_degrees_of_freedom():
    # 5 seeds, SD 0.00494: 1.96 * sqrt(2) * sd = 0.0137 would ignore the SD's own uncertainty; t(4) gives 0.019.
    assert seed_prediction_bound(0.00494, 5) == pytest.approx(0.0194, abs=2e-4)
    assert np.isnan(seed_prediction_bound(0.01, 1))


def test_unit_of_a_split():
    class S:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    scene = S(extras={"seq": np.array([0, 0, 1]), "track_a": np.array([5, 7, 5]), "track_b": np.array([7, 5, 7])},
              ida=None, idb=None)
    u = unit_of(scene)
    assert u.name == "person pair" and u.n_units == 2                  # (5,7) and (7,5) are one pair
    assert "conditional on these 2 sequences" in u.describe(3)           # too few sequences to resample
    many = S(extras={"seq": np.arange(2 * MIN_SEQUENCES) // 2, "track_a": np.zeros(2 * MIN_SEQUENCES, int),
                     "track_b": np.ones(2 * MIN_SEQUENCES, int)}, ida=None, idb=None)
    assert unit_of(many).name == "sequence" and unit_of(many).n_units == MIN_SEQUENCES
    assert unit_of(S(extras={}, ida=np.array([1, 2]), idb=np.array([3, 1]))).name == "source image"
    assert unit_of(S(extras={}, ida=None, idb=None)) is ROWS
