"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.data.jrdb import load_jrdb
from helpers.data.pair_sampling import cap_per_frame, group_sample_count, make_pair_sample, sample_group_pairs
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
