"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from helpers.bench.sampling import bench_main
from helpers.core.errors import WorkbookError
from helpers.data.geometry import is_candidate, make_candidates, make_frame_pairs, wrapped_distance
from helpers.data.jrdb import load_jrdb
from helpers.data.pair_sampling import cap_per_frame, group_sample_count, make_pair_sample, sample_group_pairs
from helpers.data.pairs import load_pair_folder
from helpers.data.scene_generator import make_generated_people
from helpers.data.scene_pairs import PAIR_FEATURES, PERSON_FEATURES, make_dataset_meta, make_scene_pair_dataset, make_sequence_split, write_pair_dataset
from helpers.data.scenes import Scenes, WIDTH
from helpers.stages.sampling import evaluate_sampling_counts, make_pairs_per_frame_table, make_presets_table, make_ratio_table, make_sampling_panel, make_sweep_table, plot_pairs_per_frame, plot_reduction_recall, plot_seam_losses, plot_sweep


FIXTURE = Path(__file__).parent / "fixtures" / "jrdb_tiny"
W = WIDTH


@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)


@pytest.fixture(scope="module")
def gen() -> Scenes:
    """Generated scenes, loaded in memory without touching the cache."""
    import pandas as pd

    p, _ = make_generated_people(n_sequences=5, frames_per_sequence=12, seed=3)
    p = p.assign(cx=np.mod(p["x"] + p["w"] / 2, W), y_bottom=p["y"] + p["h"], occlusion=p["occlusion"],
                 no_eval=False, vx=0.0, vy=0.0)
    p = p.sort_values(["seq", "frame", "track"]).reset_index(drop=True)
    p["fid"] = pd.factorize(pd.MultiIndex.from_arrays([p["seq"], p["frame"]]), sort=True)[0]
    return Scenes(people=p, sequences=[f"s{i}" for i in range(5)], generated=True, source="generated (test)")


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


def test_sweep_table_on_fixture(tiny):
    pairs = make_frame_pairs(tiny.people["fid"].to_numpy(), tiny.people["cx"].to_numpy(),
                                      tiny.people["w"].to_numpy(), tiny.people["group"].to_numpy())
    sw = make_sweep_table(pairs, [1, 2, 3, 6])
    on, off = sw[sw["wrap"]], sw[~sw["wrap"]]
    assert np.all(np.diff(on["frac_kept"]) >= 0) and np.all(np.diff(on["positive_recall"]) >= 0)
    assert np.all(on["positive_recall"].to_numpy() >= off["positive_recall"].to_numpy())
    assert off.loc[off["distance_multiplier"] == 3, "seam_positives_lost"].item() == 2
    assert on["seam_positives_lost"].eq(0).all()
    c = evaluate_sampling_counts(pairs, 3.0, 5, True)
    assert c["positive_recall"] == pytest.approx(on.loc[on["distance_multiplier"] == 3, "positive_recall"].item())


def test_balance_and_cap(gen):
    s = make_pair_sample(gen, 6.0, True, False, 1.0, 1000, 0.5, seed=1)
    assert s.counts["negatives"] == round(0.5 * s.counts["positives"])
    s = make_pair_sample(gen, 6.0, True, False, 1.0, 2, 100.0, seed=1)
    fid = gen.people["fid"].to_numpy()
    assert np.bincount(fid[s.i[s.y == 0]]).max() <= 2
    with pytest.raises(WorkbookError):
        make_pair_sample(gen, 0.0)


def test_group_sampling_reduces_positives(gen):
    a = make_pair_sample(gen, 6.0, True, False, 1.0, 5, 1.0)
    b = make_pair_sample(gen, 6.0, True, True, 1.0, 5, 1.0)
    assert b.counts["positives"] <= a.counts["positives"]


def test_dataset_split_by_sequence_and_schema(gen, tmp_path):
    s = make_pair_sample(gen, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(gen, s, 0.2, 0.2, seed=0)
    seqs = [set(ds[k]["seq"].tolist()) for k in ("train", "val", "test")]
    assert not (seqs[0] & seqs[1]) and not (seqs[0] & seqs[2]) and not (seqs[1] & seqs[2])
    n = sum(len(ds[k]["y"]) for k in ds)
    assert n == len(s.y)
    for a in ds.values():
        assert a["xa"].shape[1] == len(PERSON_FEATURES) and a["xa"].dtype == np.float32
        assert a["pair"].shape[1] == len(PAIR_FEATURES)
        assert np.isfinite(a["xa"]).all() and np.isfinite(a["pair"]).all()
        assert np.all((a["type"] >= 0) == (a["y"] == 1)) and a["type"].max() <= 4
    meta = make_dataset_meta(gen, s, ds)
    folder = write_pair_dataset(ds, tmp_path / "scene_pairs", meta)

    splits = load_pair_folder(folder, name="scene_pairs")
    assert splits.kind == "vector" and splits.generated
    assert splits.train.extras["pair"].shape[1] == len(PAIR_FEATURES)
    assert set(splits.test.extras) >= {"pair", "type", "seq", "frame"}


def test_split_needs_three_sequences():
    with pytest.raises(WorkbookError, match="at least 3"):
        make_sequence_split(2, 0.2, 0.2, 0)


def test_tables_and_plots(tiny, gen):
    import matplotlib

    matplotlib.use("Agg")
    s = make_pair_sample(gen, 3.0)
    rt = make_ratio_table(s)
    assert rt.loc["+ balanced (final)", "pairs"] == len(s.y)
    pairs = make_frame_pairs(gen.people["fid"].to_numpy(), gen.people["cx"].to_numpy(),
                                      gen.people["w"].to_numpy(), gen.people["group"].to_numpy())
    sw = make_sweep_table(pairs)
    ppf = make_pairs_per_frame_table(gen, pairs, s)
    assert ppf["sampled pairs"].sum() == len(s.y)
    pt = make_presets_table(gen)
    assert list(pt.index) == ["quick", "standard", "high quality"]
    for fig in (plot_reduction_recall(sw, 3.0), plot_sweep(sw), plot_seam_losses(sw),
                plot_pairs_per_frame(ppf), make_sampling_panel(pairs, sw, interactive=False)):
        assert fig.axes
    panel = make_sampling_panel(pairs, sw, interactive=True)
    assert len(panel.children) == 2


def test_bench_runs_small(capsys):
    rc = bench_main(["--frames", "60", "--sequences", "3", "--subset-frames", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and "ratio" in out and "match" in out
