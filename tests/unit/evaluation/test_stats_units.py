"""Intervals and paired tests that respect the independent unit: coverage with and without clustering."""
import numpy as np
import pytest

from helpers.evaluation.stats import (format_p, holm, interval, paired_test, ROWS, Unit, unit_of, unit_weights,
                                      verdict, wilson_interval)


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
    t = paired_test(a, b, Unit("person pair", (pair,)))
    assert t["diff"] > 0 and t["p_value"] == 0.0 and verdict(t).startswith("better (p < 5e-04")
    t2 = paired_test(a, a, ROWS)
    assert t2["p_value"] == 1.0 and verdict(t2).startswith("not distinguishable")
    c, ida, idb = _digit_like(rng, 0.5)
    t3 = paired_test(c, c | (rng.random(c.size) < 0.01), Unit("source image", (ida, idb)))
    assert t3["ci_low"] <= t3["diff"] <= t3["ci_high"] and 0 <= t3["p_value"] <= 1 and "mcnemar_p" in t3
    assert format_p(0.0, 5e-4) == "p < 5e-04" and format_p(0.0123) == "p = 0.012"


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_unit_of_a_split():
    class S:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    scene = S(extras={"seq": np.array([0, 0, 1]), "track_a": np.array([5, 7, 5]), "track_b": np.array([7, 5, 7])},
              ida=None, idb=None)
    u = unit_of(scene)
    assert u.name == "person pair" and u.n_units == 2                  # (5,7) and (7,5) are one pair
    assert unit_of(S(extras={}, ida=np.array([1, 2]), idb=np.array([3, 1]))).name == "source image"
    assert unit_of(S(extras={}, ida=None, idb=None)) is ROWS
