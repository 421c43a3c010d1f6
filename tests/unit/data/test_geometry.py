"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.geometry import is_candidate, make_candidates, make_frame_pairs, wrapped_distance
from helpers.data.scenes import WIDTH


W = WIDTH

def _brute(fid, cx, w, m, wrap):
    out = set()
    for f in np.unique(fid):
        rows = np.flatnonzero(fid == f)
        for a, b in combinations(rows.tolist(), 2):
            d = abs(cx[a] - cx[b])
            d = min(d, W - d) if wrap else d
            if d <= m * max(w[a], w[b]):
                out.add((a, b))
    return out


# ----------------------------------------------------------------------------- geometry
def test_pair_straddling_the_seam_is_near_with_wrap_and_far_without():
    cx_a, cx_b, w = np.array([10.0]), np.array([3740.0]), np.array([50.0])
    assert wrapped_distance(cx_a, cx_b, W, wrap=True)[0] == pytest.approx(30.0)
    assert wrapped_distance(cx_a, cx_b, W, wrap=False)[0] == pytest.approx(3730.0)
    assert is_candidate(cx_a, cx_b, w, w, 3.0, W, wrap=True)[0]
    assert not is_candidate(cx_a, cx_b, w, w, 3.0, W, wrap=False)[0]


def test_rule_at_the_boundary_is_inclusive_and_uses_the_wider_box():
    # d = 150 = 3 * max(50, 20): kept; one pixel further: dropped.
    assert is_candidate(np.array([100.0]), np.array([250.0]), np.array([20.0]), np.array([50.0]), 3.0)[0]
    assert not is_candidate(np.array([100.0]), np.array([251.0]), np.array([20.0]), np.array([50.0]), 3.0)[0]
    # Across the seam the same boundary holds for the wrapped distance.
    assert is_candidate(np.array([50.0]), np.array([W - 100.0]), np.array([50.0]), np.array([10.0]), 3.0)[0]
    assert not is_candidate(np.array([51.0]), np.array([W - 100.0]), np.array([50.0]), np.array([10.0]), 3.0)[0]


@pytest.mark.parametrize("wrap", [True, False])
@pytest.mark.parametrize("m", [0.5, 1.0, 3.0, 6.0, 40.0])
def test_candidates_match_brute_force(wrap, m):
    rng = np.random.default_rng(int(m * 10) + wrap)
    sizes = rng.integers(0, 30, 40)
    fid = np.repeat(np.arange(40), sizes)
    cx = rng.uniform(0, W, len(fid))
    cx[rng.random(len(fid)) < 0.2] = rng.uniform(W - 150, W, 1)[0]   # crowd the seam, with ties
    cx[rng.random(len(fid)) < 0.2] = rng.uniform(0, 150, 1)[0]
    w = rng.uniform(5, 150, len(fid))
    i, j = make_candidates(fid, cx, w, m, wrap)
    assert np.all(i < j)
    got = list(zip(i.tolist(), j.tolist()))
    assert len(got) == len(set(got)), "no duplicates"
    assert set(got) == _brute(fid, cx, w, m, wrap)


def test_frame_pairs_enumerate_every_same_frame_pair():
    fid = np.array([0, 0, 0, 1, 2, 2, 2, 2])
    cx = np.arange(8) * 100.0
    p = make_frame_pairs(fid, cx, np.full(8, 10.0), np.zeros(8, np.int64))
    assert len(p["i"]) == 3 + 0 + 6
    assert np.all(fid[p["i"]] == fid[p["j"]]) and np.all(p["i"] < p["j"])


def test_unsorted_frames_rejected():
    with pytest.raises(WorkbookError, match="sorted by frame"):
        make_frame_pairs(np.array([1, 0]), np.zeros(2), np.ones(2), np.zeros(2, np.int64))
