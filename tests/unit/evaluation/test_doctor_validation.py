"""Scoring the doctor against hand labels (ambiguous kinds left out, intervals over repositories), the
fixed-rule baselines as their documentation states them, and the paired seed test of the planted faults."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.evaluation.doctor.seedtest import paired_seed_test
from helpers.evaluation.doctor.validation import (counts, keras_early_stopping, keras_reduce_lr, LabelledLog,
                                                  paired_versus, pooled_scores, SCORED_KINDS, sm_loss_not_decreasing,
                                                  sm_overfit, sm_overtraining)


def _log(name, repo, kinds, ambiguous=()):
    return LabelledLog(name, Path(name), repo, "heldout", frozenset(kinds), frozenset(ambiguous))


def test_counts_leave_ambiguous_kinds_out():
    logs = [_log("a", "r1", ["overfitting"], ["noise"]), _log("b", "r2", ["healthy"])]
    c = counts(logs, [{"overfitting", "noise", "plateau"}, {"plateau"}])
    k = {kind: i for i, kind in enumerate(SCORED_KINDS)}
    assert c[0, k["overfitting"]].tolist() == [1, 0, 0]
    assert c[0, k["noise"]].tolist() == [0, 0, 0]          # ambiguous: neither tp nor fp
    assert c[0, k["plateau"]].tolist() == [0, 1, 0]
    assert c[1, k["healthy"]].tolist() == [0, 0, 1] and c[1, k["plateau"]].tolist() == [0, 1, 0]


def test_pooled_scores_and_a_paired_comparison_resample_repositories():
    logs = [_log(f"f{i}", f"r{i // 2}", ["overfitting"]) for i in range(20)]
    good = counts(logs, [{"overfitting"}] * 20)
    bad = counts(logs, [{"overfitting"} if i % 2 else {"plateau"} for i in range(20)])
    repos = [x.repo for x in logs]
    s = pooled_scores(bad, repos, n_boot=500)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["repositories"] == 10 and s["precision_low"] <= 0.5 <= s["precision_high"]
    v = paired_versus(bad, good, repos, n_boot=500)
    assert v["recall_diff"] == pytest.approx(0.5) and v["recall_diff_low"] > 0 and v["recall_p"] == pytest.approx(1 / 500)
    same = paired_versus(good, good, repos, n_boot=500)
    assert same["precision_diff"] == 0 and same["precision_p"] == 1.0


def test_baseline_rules_fire_as_documented():
    e = np.arange(30.0)
    falling = 1.0 / (1 + e)
    assert not sm_loss_not_decreasing(falling, falling * 1.05)
    flat = np.r_[falling[:10], np.full(20, falling[9])]
    assert sm_loss_not_decreasing(flat, flat)                       # loss at step 20 is not below step 10
    assert sm_overfit(falling, falling * 1.2) and not sm_overfit(falling, falling * 1.05)
    assert sm_overtraining(np.full(30, 0.5), np.full(30, 0.6)) and not sm_overtraining(3 - 0.2 * e, 3 - 0.2 * e)
    up = np.r_[falling[:5], falling[4] + 0.01 * np.arange(25)]
    assert keras_early_stopping(None, up) and not keras_early_stopping(None, falling)
    assert keras_reduce_lr(None, up) and not keras_reduce_lr(None, falling)


def test_paired_seed_test():
    r = paired_seed_test([0.5, 0.52, 0.51], [0.6, 0.63, 0.61])
    assert r["helped"] and r["gain"] == pytest.approx(0.1033, abs=1e-3) and r["p_value"] < 0.01
    assert not paired_seed_test([0.5, 0.6, 0.55], [0.52, 0.55, 0.58])["helped"]
    with pytest.raises(ValueError):
        paired_seed_test([0.5], [0.6])
