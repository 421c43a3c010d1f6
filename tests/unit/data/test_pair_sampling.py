"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.data.jrdb import load_jrdb
from helpers.data.pair_sampling import (cap_per_frame, group_sample_count, make_inferred_counts,
                                        make_interacting_counts, make_pair_sample, make_stage1_balance_picks,
                                        sample_group_pairs)
from helpers.data.scenes import Scenes, WIDTH


W = WIDTH

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"

@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)


# ----------------------------------------------------------------------------- group sampling
@pytest.mark.parametrize("n, ratio, k", [(2, 1.0, 1), (3, 1.0, 3), (4, 1.0, 4), (5, 1.0, 5), (5, 0.5, 3),
                                         (6, 0.5, 3), (7, 0.5, 4), (10, 1.0, 10), (10, 2.0, 20), (4, 3.0, 6),
                                         (28, 1.0, 28)])
def test_group_sample_counts_and_coverage(n, ratio, k):
    assert int(group_sample_count(n, ratio)) == k
    fid = np.zeros(n + 3, np.int64)
    group = np.r_[np.full(n, 7), [1, 2, 3]]          # one group of n, three people alone
    cx = np.random.default_rng(n).uniform(0, W, n + 3)
    i, j = sample_group_pairs(fid, group, cx, ratio)
    assert len(i) == k
    assert np.all(i < j) and len(set(zip(i.tolist(), j.tolist()))) == k
    assert set(i.tolist()) | set(j.tolist()) == set(range(n)), "every member appears"


def test_group_sampling_per_frame_and_neighbours_first():
    fid = np.array([0, 0, 0, 1, 1, 1, 1])
    group = np.array([5, 5, 5, 5, 5, 9, 9])
    cx = np.array([300.0, 100.0, 200.0, 10.0, 20.0, 30.0, 40.0])
    i, j = sample_group_pairs(fid, group, cx, 1.0)
    pairs = set(zip(i.tolist(), j.tolist()))
    assert pairs == {(1, 2), (0, 2), (0, 1), (3, 4), (5, 6)}
    # With fewer pairs than members, the first ones are horizontal neighbours.
    fid, group = np.zeros(6, np.int64), np.zeros(6, np.int64)
    cx = np.array([600.0, 100.0, 500.0, 200.0, 400.0, 300.0])
    i, j = sample_group_pairs(fid, group, cx, 0.5)
    for a, b in zip(i, j):
        assert abs(cx[a] - cx[b]) == 100.0


def test_cap_per_frame():
    rng = np.random.default_rng(0)
    f = np.repeat(np.arange(4), [10, 2, 0, 7])
    keep = cap_per_frame(f, 3, rng)
    assert np.bincount(f[keep], minlength=4).tolist() == [3, 2, 0, 3]


# ----------------------------------------------------------------------------- pipeline
def test_pair_sample_on_fixture(tiny):
    s = make_pair_sample(tiny, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    grp = tiny.people["group"].to_numpy()
    assert np.all((grp[s.i] == grp[s.j]) == (s.y == 1))
    c = s.counts
    assert c["all_pairs"] == 10 + 3 + 10
    assert c["positives"] == int(s.y.sum()) and c["negatives"] == int((s.y == 0).sum())
    assert c["negatives"] <= c["positives"] * 1.0 + 0.5
    # The seam pair (1, 2) of seq_a is positive with wrap and lost without.
    s_off = make_pair_sample(tiny, 3.0, False, True, 1.0, 5, 1.0, seed=0)
    assert s_off.counts["candidate_positives"] == c["candidate_positives"] - 2


# ----------------------------------------------------------------------------- balancing, per-frame counts
@pytest.mark.parametrize("n_pos, n_neg, ratio, kept", [(10, 30, 1.0, (10, 10)), (10, 30, 0.5, (10, 5)),
                                                        (30, 10, 1.0, (10, 10)), (30, 10, 2.0, (5, 10)),
                                                        (30, 10, 0.0, (30, 10)), (30, 0, 1.0, (30, 0)),
                                                        (10, 10, 1.0, (10, 10))])
def test_balance_trims_whichever_side_is_over(n_pos, n_neg, ratio, kept):
    keep_pos, keep_neg = make_stage1_balance_picks(n_pos, n_neg, ratio, np.random.default_rng(0))
    assert (len(keep_pos), len(keep_neg)) == kept
    assert len(set(keep_pos.tolist())) == len(keep_pos) and np.all(np.diff(keep_pos) > 0)


def test_balance_ratio_reached_when_negatives_are_scarce(tiny):
    # Cap 1 negative per frame: fewer negatives than positives, so positives are trimmed to the ratio.
    free = make_pair_sample(tiny, 6.0, True, False, 1.0, 1, 0.0, seed=0)
    bal = make_pair_sample(tiny, 6.0, True, False, 1.0, 1, 1.0, seed=0)
    assert free.counts["positives"] > free.counts["negatives"], "the fixture must have more positives than negatives"
    assert bal.counts["positives"] == bal.counts["negatives"] == free.counts["negatives"]
    assert bal.counts["positives_sampled"] == free.counts["positives"]
    assert int(bal.y.sum()) == bal.counts["positives"]


def test_frame_counts_add_up(tiny):
    s = make_pair_sample(tiny, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    fc, c = s.frame_counts, s.counts
    assert all(len(v) == tiny.n_frames for v in fc.values())
    for key in ("all_positives", "candidate_positives", "positives_sampled", "positives", "negatives"):
        assert int(fc[key].sum()) == c[key], key
    assert np.all(fc["all_positives"] >= fc["candidate_positives"])
    assert np.all(fc["candidate_positives"] >= fc["positives_sampled"])


def test_interacting_and_inferred_counts():
    fid = np.array([0, 0, 0, 0, 1, 1, 1])
    group = np.array([1, 1, 1, 2, 1, 1, 3])              # frame 0: a group of 3 and one alone; frame 1: a pair
    assert make_interacting_counts(fid, group, 3).tolist() == [3, 1, 0]
    # Kept pairs 0-1 and 1-2 give 0-2 by transitivity; 4-5 stays one pair.
    assert make_inferred_counts(fid, np.array([0, 1, 4]), np.array([1, 2, 5]), 3).tolist() == [3, 1, 0]
    assert make_inferred_counts(fid, np.array([0]), np.array([1]), 3).tolist() == [1, 0, 0]
    assert make_inferred_counts(fid, np.zeros(0, np.int64), np.zeros(0, np.int64), 2).tolist() == [0, 0]
