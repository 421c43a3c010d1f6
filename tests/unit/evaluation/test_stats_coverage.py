"""Coverage of every interval method, measured on independent test sets drawn from generators with a known
truth: the 95% intervals of an accuracy and of a paired difference must cover it 0.92-0.98 of the time.
(Fixed seeds: the figures are deterministic; the README quotes them.)"""
import numpy as np
import pytest

from helpers.evaluation.stats import compare, compare_over_seeds, interval, Unit

N_SETS = 300         # independent test sets per method (coverage SE about 0.013 at 0.95)
N_BOOT = 400


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _scene_set(rng, n_seq=30, seed_shift=(0.0, 0.0)):
    """A test set of ``n_seq`` sequences of 5-40 pairs each: a sequence effect shared by both models (crowd,
    hotspots), a sequence effect on the difference, a pair effect. Returns A and B correctness and the ids."""
    size = rng.integers(5, 41, n_seq)
    seq = np.repeat(np.arange(n_seq), size)
    u, w = rng.normal(0, 0.8, n_seq)[seq], rng.normal(0, 0.5, n_seq)[seq]
    v = rng.normal(0, 0.5, seq.size)
    a = rng.random(seq.size) < _sigmoid(1.2 + u + v + seed_shift[0])
    b = rng.random(seq.size) < _sigmoid(1.5 + u + v + w + seed_shift[1])
    return a.astype(float), b.astype(float), seq


def _scene_truth(rng, shift=(0.0, 0.0), n=2_000_000):
    u, w, v = rng.normal(0, 0.8, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n)
    pa, pb = _sigmoid(1.2 + u + v + shift[0]), _sigmoid(1.5 + u + v + w + shift[1])
    return pa.mean(), (pb - pa).mean()


def _digit_set(rng, n_images=240, n_pairs=1200):
    """Image pairs over a pool of images with a per-image difficulty (and a per-image effect on the
    difference); 3% self-pairs, as a user's own ids may hold."""
    ida, idb = rng.integers(0, n_images, n_pairs), rng.integers(0, n_images, n_pairs)
    idb[: n_pairs * 3 // 100] = ida[: n_pairs * 3 // 100]
    z, w = rng.normal(0, 0.8, n_images), rng.normal(0, 0.4, n_images)
    a = rng.random(n_pairs) < _sigmoid(1.5 + z[ida] + z[idb])
    b = rng.random(n_pairs) < _sigmoid(1.8 + z[ida] + z[idb] + w[ida] + w[idb])
    return a.astype(float), b.astype(float), ida, idb


def _digit_truth(rng, n=2_000_000):
    za, zb, wa, wb = (rng.normal(0, s, n) for s in (0.8, 0.8, 0.4, 0.4))
    pa, pb = _sigmoid(1.5 + za + zb), _sigmoid(1.8 + za + zb + wa + wb)
    # (self-pairs are 3% of rows: their expectation differs slightly; include it exactly)
    zs, ws = rng.normal(0, 0.8, n), rng.normal(0, 0.4, n)
    pas, pbs = _sigmoid(1.5 + 2 * zs), _sigmoid(1.8 + 2 * zs + 2 * ws)
    f = 0.03
    return (1 - f) * pa.mean() + f * pas.mean(), (1 - f) * (pb - pa).mean() + f * (pbs - pas).mean()


def _coverage(draw, truth_acc, truth_diff):
    hit_acc = hit_diff = 0
    for i in range(N_SETS):
        a, unit = draw(i)
        r = interval(a[0], unit, n_boot=N_BOOT, seed=i)
        c = compare({"b - a": a}, unit, n_boot=N_BOOT, seed=i)["b - a"]
        hit_acc += r["ci_low"] <= truth_acc <= r["ci_high"]
        hit_diff += c.ci_low <= truth_diff <= c.ci_high
    return hit_acc / N_SETS, hit_diff / N_SETS


def test_sequence_bootstrap_covers_scene_accuracy_and_paired_difference():
    truth_acc, truth_diff = _scene_truth(np.random.default_rng(0))
    rng = np.random.default_rng(1)

    def draw(i):
        a, b, seq = _scene_set(rng)
        return (a, b), Unit("sequence", (seq,))

    cov_acc, cov_diff = _coverage(draw, truth_acc, truth_diff)
    print(f"sequence bootstrap coverage: accuracy {cov_acc:.3f}, paired difference {cov_diff:.3f}")
    assert 0.92 <= cov_acc <= 0.98 and 0.92 <= cov_diff <= 0.98, (cov_acc, cov_diff)


def test_a_finer_unit_undercovers_scene_data():
    # Why the sequence: resampling rows of the same data misses the sequence effect (a broken unit fails).
    truth_acc, _ = _scene_truth(np.random.default_rng(0))
    rng = np.random.default_rng(2)
    hits = 0
    for i in range(100):
        a, _, _ = _scene_set(rng)
        r = interval(a, Unit("row"), n_boot=N_BOOT, seed=i)
        hits += r["ci_low"] <= truth_acc <= r["ci_high"]
    assert hits / 100 < 0.85


def test_dyadic_interval_covers_digit_accuracy_and_paired_difference():
    truth_acc, truth_diff = _digit_truth(np.random.default_rng(0))
    rng = np.random.default_rng(3)

    def draw(i):
        a, b, ida, idb = _digit_set(rng)
        return (a, b), Unit("source image", (ida, idb))

    cov_acc, cov_diff = _coverage(draw, truth_acc, truth_diff)
    print(f"dyadic coverage: accuracy {cov_acc:.3f}, paired difference {cov_diff:.3f}")
    assert 0.92 <= cov_acc <= 0.98 and 0.92 <= cov_diff <= 0.98, (cov_acc, cov_diff)


def test_seed_and_test_split_interval_covers_the_recipe_difference():
    # Two recipes, 5 seeds each on one test split: each seed shifts a model's logit (training noise), each
    # test split is a fresh draw of sequences. Truth: the difference averaged over seeds and sequences.
    sd_seed = 0.15
    truth = np.mean([_scene_truth(np.random.default_rng(k), shift=tuple(np.random.default_rng(k + 9).normal(
        0, sd_seed, 2)), n=200_000)[1] for k in range(60)])
    rng = np.random.default_rng(4)
    hits = 0
    for i in range(N_SETS):
        size = rng.integers(5, 41, 30)
        seq = np.repeat(np.arange(30), size)
        u, w, v = rng.normal(0, 0.8, 30)[seq], rng.normal(0, 0.5, 30)[seq], rng.normal(0, 0.5, seq.size)
        sa, sb = rng.normal(0, sd_seed, 5), rng.normal(0, sd_seed, 5)
        a = rng.random((5, seq.size)) < _sigmoid(1.2 + u + v + sa[:, None])
        b = rng.random((5, seq.size)) < _sigmoid(1.5 + u + v + w + sb[:, None])
        c = compare_over_seeds(a, b, Unit("sequence", (seq,)), paired_seeds=False, n_boot=N_BOOT, seed=i)
        hits += c.ci_low <= truth <= c.ci_high
    cov = hits / N_SETS
    print(f"seed + test-split coverage: paired difference {cov:.3f}")
    assert 0.92 <= cov <= 0.98, cov
