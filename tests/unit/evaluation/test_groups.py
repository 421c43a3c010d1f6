"""Groups from pair probabilities and their PAR / JRDB-Act scores (the official toolkit's numbers on a
hand-checked fixture: tests/fixtures/groups/README.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from helpers.core.errors import WorkbookError
from helpers.data.jrdb import load_jrdb
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import Scenes, WIDTH
from helpers.evaluation import groups as G


FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "groups"


def _pairs(rows, seq=0, frame=15) -> pd.DataFrame:
    return pd.DataFrame([(seq, frame, a, b, p) for a, b, p in rows], columns=list(G.PAIR_COLUMNS))


def _people(tracks, seq=0, frame=15) -> pd.DataFrame:
    return pd.DataFrame({"seq": seq, "frame": frame, "track": list(tracks)})


def _partition(df: pd.DataFrame) -> set[frozenset]:
    return {frozenset(g["track"]) for _, g in df.groupby(["seq", "frame", "group"])}


def test_components_join_pairs_above_the_threshold_and_leave_the_rest_alone():
    pairs = _pairs([(1, 2, 0.9), (2, 3, 0.8), (3, 4, 0.2), (5, 6, 0.6), (6, 7, 0.5)])
    out = G.form_groups(pairs, 0.5, "components", people=_people(range(1, 9)))
    # 6-7 sits exactly at the threshold: not above it; 8 is in no pair at all
    assert _partition(out) == {frozenset({1, 2, 3}), frozenset({4}), frozenset({5, 6}), frozenset({7}), frozenset({8})}
    assert list(out.columns) == ["seq", "frame", "track", "group"] and len(out) == 8
    # without people, only those named in a pair are grouped
    assert set(G.form_groups(pairs, 0.5)["track"]) == set(range(1, 8))


def test_a_pair_listed_both_ways_counts_with_its_mean_probability():
    pairs = _pairs([(1, 2, 0.9), (2, 1, 0.3)])  # mean 0.6
    assert _partition(G.form_groups(pairs, 0.5)) == {frozenset({1, 2})}
    assert _partition(G.form_groups(pairs, 0.7)) == {frozenset({1}), frozenset({2})}


def test_agglomerative_does_not_chain_through_one_person():
    pairs = _pairs([(1, 2, 0.9), (2, 3, 0.9)])  # 1-3 not listed: probability 0
    comp = G.form_groups(pairs, 0.5, "components")
    avg = G.form_groups(pairs, 0.5, "agglomerative")
    assert _partition(comp) == {frozenset({1, 2, 3})}
    # {1,2} to 3: mean distance (0.1 + 1.0) / 2 = 0.55 > 1 - 0.5
    assert _partition(avg) == {frozenset({1, 2}), frozenset({3})}
    assert _partition(G.form_groups(pairs, 0.4, "agglomerative")) == {frozenset({1, 2, 3})}


def _random_frames(seed: int, n_frames: int = 12):
    rng = np.random.default_rng(seed)
    rows, people = [], []
    for f in range(n_frames):
        n = int(rng.integers(1, 9))
        true = rng.integers(0, max(1, n // 2), n)
        people.append(pd.DataFrame({"seq": f % 2, "frame": f, "track": np.arange(n) + 10, "group": true + 100 * f}))
        i, j = np.triu_indices(n, 1)
        keep = rng.random(len(i)) < 0.8              # some pairs unlisted (probability 0)
        p = np.clip(np.where(true[i] == true[j], 0.75, 0.25) + rng.normal(0, 0.2, len(i)), 0, 1)
        rows.append(pd.DataFrame({"seq": f % 2, "frame": f, "track_a": i[keep] + 10, "track_b": j[keep] + 10,
                                  "probability": p[keep]}))
    return pd.concat(rows, ignore_index=True), pd.concat(people, ignore_index=True)


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.65, 0.9])
def test_agglomerative_equals_scipy_on_each_whole_frame(threshold):
    pairs, people = _random_frames(0)
    ours = _partition(G.form_groups(pairs, threshold, "agglomerative", people=people))
    naive = set()
    for (s, f), d in people.groupby(["seq", "frame"]):
        t = d["track"].to_numpy()
        dist = np.ones((len(t), len(t)))
        np.fill_diagonal(dist, 0)
        e = pairs[(pairs["seq"] == s) & (pairs["frame"] == f)]
        a, b = np.searchsorted(t, e["track_a"]), np.searchsorted(t, e["track_b"])
        dist[a, b] = dist[b, a] = 1 - e["probability"].to_numpy()
        lab = fcluster(linkage(squareform(dist), "average"), 1 - threshold, "distance") if len(t) > 1 else [1]
        naive |= {frozenset(t[np.asarray(lab) == k]) for k in np.unique(lab)}
    assert ours == naive


def test_bad_pairs_are_refused():
    with pytest.raises(WorkbookError, match="not among that frame's people"):
        G.form_groups(_pairs([(1, 99, 0.9)]), 0.5, people=_people([1, 2]))
    with pytest.raises(WorkbookError, match="components|agglomerative"):
        G.form_groups(_pairs([(1, 2, 0.9)]), 0.5, method="spectral")
    with pytest.raises(WorkbookError, match="within"):
        G.form_groups(_pairs([(1, 2, 1.5)]), 0.5)
    with pytest.raises(WorkbookError, match="missing column"):
        G.form_groups(_pairs([(1, 2, 0.9)]).drop(columns="probability"), 0.5)
    # a pair in a frame without people is outside the evaluated frames, not an error
    assert len(G.form_groups(_pairs([(1, 2, 0.9)], frame=30), 0.5, people=_people([1, 2]))) == 2


def test_par_counts_groups_sharing_more_than_half():
    truth = pd.concat([_people([1, 2, 3, 4, 5, 6], frame=1).assign(group=[0, 0, 0, 1, 1, 2]),
                       _people([1, 2, 3, 4], frame=2).assign(group=[0, 0, 1, 1]),
                       _people([1, 2, 3, 4], frame=3).assign(group=[0, 0, 0, 0])])
    pred = pd.concat([_people([1, 2, 3, 4, 5, 6], frame=1).assign(group=[7, 7, 8, 8, 8, 9]),  # 2/3 and 2/3: hits
                      _people([1, 2, 3, 4], frame=2).assign(group=[7, 8, 7, 8]),            # 1/2: misses
                      _people([1, 2, 3, 4], frame=3).assign(group=[7, 7, 8, 9])])           # 2/4: a miss
    r = G.score_groups_par(pred, truth)
    assert (r["tp"], r["n_pred"], r["n_true"]) == (2, 5, 5)
    assert r["precision"] == pytest.approx(0.4) and r["recall"] == pytest.approx(0.4) and r["f1"] == pytest.approx(0.4)
    # the same groups under labels reused across frames, and a singleton true group ignored
    r2 = G.score_groups_par(pred.assign(group=pred["group"] % 8), truth)
    assert (r2["tp"], r2["n_pred"], r2["n_true"]) == (2, 5, 5)
    # a person the prediction leaves out is alone; everyone alone finds no group
    alone = G.score_groups_par(pred.iloc[:0], truth)
    assert (alone["tp"], alone["n_pred"], alone["f1"]) == (0, 0, 0.0)


def test_choose_threshold_keeps_the_best_validation_f1():
    pairs, people = _random_frames(1, n_frames=20)
    for method in G.METHODS:
        choice = G.choose_threshold(pairs, people, method, grid=[0.3, 0.5, 0.7])
        table = choice["table"]
        assert choice["f1"] == table["f1"].max() and list(table["threshold"]) == [0.3, 0.5, 0.7]
        for t, f1 in zip(table["threshold"], table["f1"]):  # the sweep equals forming groups one threshold at a time
            assert G.score_groups_par(G.form_groups(pairs, t, method, people=people), people)["f1"] == pytest.approx(f1)


@pytest.fixture(scope="module")
def fixture_truth() -> pd.DataFrame:
    return G.make_jrdb_act_truth(load_jrdb(FIXTURE))


def _fixture_pred() -> pd.DataFrame:
    rows = [(0, 15, [1, 2, 8], 100), (0, 15, [3, 4, 5, 7], 101), (0, 15, [6], 102), (0, 30, [1, 2, 3], 200),
            (0, 30, [4, 9], 201), (1, 15, [1, 2, 3, 4], 300), (1, 15, [5, 6], 301)]
    return pd.DataFrame([(s, f, t, g) for s, f, ts, g in rows for t in ts], columns=["seq", "frame", "track", "group"])


def test_jrdb_act_truth_is_built_as_the_toolkit_converts_it(fixture_truth, tmp_path):
    t = fixture_truth
    # keyframes 15 and 30 only; the seam box (7), the no_eval box (8) and the box below the image (9) are out
    assert sorted(t.groupby(["sequence", "frame"]).size().items()) == [(("seq_a", 15), 6), (("seq_a", 30), 4),
                                                                      (("seq_b", 15), 6)]
    assert not set(t["track"]) & {7, 8, 9}
    assert t.loc[t["difficult"] == 1, ["sequence", "track"]].values.tolist() == [["seq_a", 5]]  # cluster_stat 3 > 2
    files = G.write_jrdb_act_files(tmp_path, _fixture_pred(), t)
    assert files["gt"] == tmp_path / "groups" / "gt_group.txt"
    for name in ("gt", "det"):
        assert files[name].read_text() == (FIXTURE / "expected" / f"{name}_group.txt").read_text()


def test_jrdb_act_scores_equal_the_official_toolkit(fixture_truth):
    r = G.score_groups_jrdb_act(_fixture_pred(), fixture_truth)
    # JRDB_eval.py on expected/*.txt: task_2 0.8125; task_3 1.0, 1.0, 0.6667, 0.75, 0.8, mAP 0.8433
    assert r["ap"] == pytest.approx(13 / 16, abs=1e-12)
    expected = {"1": 1.0, "2": 1.0, "3": 2 / 3, "4": 0.75, "5plus": 0.8}
    assert {k: r[f"ap_size_{k}"] for k in expected} == pytest.approx(expected, abs=1e-12)
    assert r["map_size"] == pytest.approx(0.8433333333333334, abs=1e-12)
    assert (r["n_people"], r["n_correct"], r["n_keyframes"]) == (16, 13, 3)
    hard = G.score_groups_jrdb_act(_fixture_pred(), fixture_truth, ignore_difficult=True)
    assert hard["ap"] == pytest.approx(12 / 15) and hard["n_people"] == 15


def test_assignment_ties_break_as_in_the_toolkit(tmp_path):
    truth = pd.DataFrame({"seq": 0, "seq_id": 0, "frame": 15, "track": [1, 2, 3, 4],
                          "x1": [100.5, 200.5, 300.5, 400.5], "y1": 50.25, "x2": [140.5, 240.5, 340.5, 440.5],
                          "y2": 170.25, "group": [1, 1, 3, 1], "difficult": 0})
    pred = pd.DataFrame({"seq": 0, "frame": 15, "track": [1, 2, 3, 4], "group": [7, 5, 7, 7]})
    files = G.write_jrdb_act_files(tmp_path, pred, truth)
    for name in ("gt", "det"):
        assert files[name].read_text() == (FIXTURE / "ties" / f"{name}_group.txt").read_text()
    r = G.score_groups_jrdb_act(pred, truth)
    # JRDB_eval.py on ties/*.txt: task_2 0.5; task_3 size 1 0.0, size 3 0.6667, mAP 0.3333
    assert r["ap"] == 0.5 and r["ap_size_1"] == 0.0 and r["ap_size_3"] == pytest.approx(2 / 3)
    assert r["map_size"] == pytest.approx(1 / 3) and np.isnan(r["ap_size_2"])


def test_people_left_out_of_the_prediction_are_alone(fixture_truth):
    pred = _fixture_pred()
    r = G.score_groups_jrdb_act(pred[~((pred["seq"] == 0) & (pred["frame"] == 15) & (pred["track"] == 6))], fixture_truth)
    assert r["n_correct"] == 13  # pedestrian 6 was alone in both
    assert G.score_groups_jrdb_act(pred.iloc[:0], fixture_truth)["ap_size_1"] == 1.0


def test_voc_ap_ranks_by_score():
    # precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3: 1/3 * 1 + 1/3 * 2/3
    assert G._voc_ap(np.array([0.7, 0.9, 0.8]), np.array([True, True, False]), 3) == pytest.approx(5 / 9)
    assert np.isnan(G._voc_ap(np.zeros(0), np.zeros(0, bool), 0)) and G._voc_ap(np.zeros(0), np.zeros(0, bool), 2) == 0.0


def test_more_than_27_sequences_are_written_in_parts_the_toolkit_scores(tmp_path):
    # JRDB_eval.py skips sequence ids above 26: 28 sequences become two parts, ids from 0 in each.
    p = pd.DataFrame({"seq": np.arange(28), "frame": 15, "track": 1, "x": 10.0, "y": 10.0, "w": 5.0, "h": 5.0,
                      "group": np.arange(28), "no_eval": False})
    sc = Scenes(people=p, sequences=[f"s{i:02d}" for i in range(28)], generated=True, source="test")
    truth = G.make_jrdb_act_truth(sc)
    assert sorted(truth["seq_id"]) == list(range(28))
    pred = truth[["sequence", "frame", "track"]].assign(group=1)
    pred["seq"] = truth["seq"]
    files = G.write_jrdb_act_files(tmp_path, pred, truth)
    assert sorted(files) == ["det_1", "det_2", "gt_1", "gt_2"]
    ids = [[int(line.split()[0]) for line in files[k].read_text().splitlines()] for k in ("gt_1", "gt_2")]
    assert ids == [list(range(27)), [0]]
    assert sum(len(files[k].read_text().splitlines()) for k in ("det_1", "det_2")) == 28


def test_evaluate_groups_runs_both_methods_and_writes_the_best(tmp_path):
    p, _ = make_generated_people(n_sequences=3, frames_per_sequence=31, seed=4)
    p = p.assign(no_eval=False).sort_values(["seq", "frame", "track"]).reset_index(drop=True)
    scenes = Scenes(people=p, sequences=["s0", "s1", "s2"], generated=True, source="generated (test)")
    rng = np.random.default_rng(0)
    rows = []
    for (s, f), d in p.groupby(["seq", "frame"]):
        t, g = d["track"].to_numpy(), d["group"].to_numpy()
        i, j = np.triu_indices(len(t), 1)
        prob = np.clip(np.where(g[i] == g[j], 0.8, 0.2) + rng.normal(0, 0.15, len(i)), 0, 1)
        rows.append(pd.DataFrame({"seq": s, "frame": f, "track_a": t[i], "track_b": t[j], "probability": prob}))
    pairs = pd.concat(rows, ignore_index=True)
    res = G.evaluate_groups(scenes, pairs[pairs["seq"] == 1], pairs[pairs["seq"] == 2], folder=tmp_path,
                            grid=[0.3, 0.5, 0.7])
    assert list(res["table"]["method"]) == list(G.METHODS) and res["best"] in G.METHODS
    assert res["table"]["par_f1"].between(0, 1).all() and res["table"]["act_ap"].between(0, 1).all()
    truth = G.make_jrdb_act_truth(scenes, ["s2"])
    assert set(truth["frame"]) == {15, 30} and (truth["seq_id"] == 0).all()
    assert not ((truth["x1"] < 0) | (truth["x2"] > WIDTH)).any()
    det = res["files"]["det"].read_text().splitlines()
    assert len(det) == len(res["files"]["gt"].read_text().splitlines()) == len(truth)
    assert all(len(line.split(" ")) == 9 for line in det)
