"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.pairs import load_pair_folder
from helpers.data.scene_generator import make_generated_people
from helpers.data.scene_pairs import (evaluate_split_leakage, make_dataset_meta, make_frame_block_split,
                                      make_scene_pair_dataset, make_sequence_split, make_split_method,
                                      make_track_groups, make_type_group_counts, PAIR_FEATURES, PERSON_FEATURES,
                                      write_pair_dataset)
from helpers.data.scenes import Scenes, select_keyframes, WIDTH
from helpers.reports import sampling as sampling_report
from helpers.stages import sampling


W = WIDTH

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


def test_meta_counts_all_interacting_pairs_per_split(gen):
    s = make_pair_sample(gen, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(gen, s, 0.2, 0.2, seed=0)
    meta = make_dataset_meta(gen, s, ds)
    n_all = meta["all_interacting_pairs"]
    assert set(n_all) == {"train", "val", "test"} and all(type(v) is int for v in n_all.values())
    # Every sequence with a same-group pair has sampled pairs, so the splits share out all interacting pairs.
    assert sum(n_all.values()) == s.counts["all_positives"]
    for k, a in ds.items():
        assert n_all[k] >= int(a["y"].sum())
        # Recomputed by hand from the people table: n(n-1)/2 per (frame, group) in the split's sequences.
        p = gen.people[gen.people["seq"].isin(np.unique(a["seq"]))]
        sizes = p.groupby(["fid", "group"]).size().to_numpy()
        assert n_all[k] == int((sizes * (sizes - 1) // 2).sum())
    assert {"name", "kind", "generated", "feature_names", "split_method", "sequences_per_split", "settings",
            "counts"} <= set(meta)


def test_leakage_check_runs_and_catches_a_shared_sequence(gen):
    s = make_pair_sample(gen, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(gen, s, 0.2, 0.2, seed=0)
    leak = evaluate_split_leakage(ds)
    assert leak["passed"] is True and make_dataset_meta(gen, s, ds)["data_leakage_prevention"] is True
    assert sum(leak["sequences_shared"].values()) == 0 and sum(leak["person_ids_shared"].values()) == 0
    assert leak["sequences_per_split"] == {k: len(np.unique(a["seq"])) for k, a in ds.items()}
    # Plant one test pair in train: the check must see the shared sequence and the shared people.
    bad = {k: dict(a) for k, a in ds.items()}
    bad["train"] = {k: np.concatenate([v, ds["test"][k][:1]]) for k, v in ds["train"].items()}
    leak = evaluate_split_leakage(bad)
    assert leak["passed"] is False
    assert leak["sequences_shared"]["train-test"] == 1 and leak["person_ids_shared"]["train-test"] == 2


def test_split_prefers_enough_groups_per_type():
    # Six sequences, one interaction type held by three of them (10 groups each): only a split that gives
    # each of train, val and test one of those three has 10 groups everywhere.
    types = np.ones((6, 2), np.int64)
    groups = np.array([[10], [10], [10], [0], [0], [0]])
    split = make_sequence_split(6, 1 / 6, 1 / 6, seed=0, type_counts=types, group_counts=groups, min_groups=10)
    per = [int(groups[split == s].sum()) for s in range(3)]
    assert per == [10, 10, 10], "each split gets one of the three sequences with groups"
    # Without the group counts any split is as good, and some seed puts two of them together.
    assert any(sorted(int(groups[make_sequence_split(6, 1 / 6, 1 / 6, seed=k, type_counts=types) == s].sum())
                      for s in range(3)) != [10, 10, 10] for k in range(20))


def test_track_groups_follow_a_group_over_frames():
    import pandas as pd

    # Per-frame group ids (as from JRDB-Social pairs): tracks 1-2 in frame 0, 2-3 in frame 1 -> one group.
    people = pd.DataFrame({"seq": [0, 0, 0, 0, 0, 1, 1], "fid": [0, 0, 1, 1, 1, 2, 2], "track": [1, 2, 2, 3, 4, 1, 2],
                           "group": [0, 0, 5, 5, 6, 9, 9]})
    g = make_track_groups(people)
    assert g[0] == g[1] == g[2] == g[3] and g[4] != g[0]
    assert g[5] == g[6] and g[5] != g[0], "the same track ids in another sequence are other people"


def test_type_group_counts_count_groups_not_pairs(gen):
    s = make_pair_sample(gen, 6.0, True, False, 1.0, 5, 0.0, seed=0)
    counts = make_type_group_counts(gen, s)
    p = gen.people
    pos = s.i[s.y == 1]
    by_hand = p.iloc[pos].groupby(["seq", "type"])["group"].nunique()   # the generator's groups hold over time
    for (q, t), n in by_hand.items():
        assert counts[q, t] == n
    assert counts.sum() == by_hand.sum() < int(s.y.sum())


# ----------------------------------------------------------------------------- small folders: frame blocks
def _small(n_sequences: int, frames: int, stride: int = 1) -> Scenes:
    p, _ = make_generated_people(n_sequences=n_sequences, frames_per_sequence=frames, seed=3)
    p = p.assign(cx=np.mod(p["x"] + p["w"] / 2, W), y_bottom=p["y"] + p["h"], no_eval=False, vx=0.0, vy=0.0)
    p = p.sort_values(["seq", "frame", "track"]).reset_index(drop=True)
    p["fid"] = pd.factorize(pd.MultiIndex.from_arrays([p["seq"], p["frame"]]), sort=True)[0]
    sc = Scenes(people=p, sequences=[f"s{i}" for i in range(n_sequences)], generated=True, source="generated (test)")
    return select_keyframes(sc, stride)


def test_frame_blocks_in_time_order_with_a_keyframe_left_out():
    seq = np.r_[np.zeros(10, np.int64), np.ones(3, np.int64)]
    frame = np.r_[np.arange(10) * 4, np.arange(3) * 4]               # keyframes 4 frames apart
    split = make_frame_block_split(seq, frame, 0.2, 0.2)
    assert split[:10].tolist() == [0, 0, 0, 0, -1, 1, 1, -1, 2, 2]
    assert split[10:].tolist() == [0, 0, 0], "a sequence too short for three blocks goes to train whole"
    twice = make_frame_block_split(np.repeat(seq, 2), np.repeat(frame, 2), 0.2, 0.2)   # two people per frame
    assert twice.tolist() == np.repeat(split, 2).tolist(), "the blocks count frames, not people"


def test_two_sequences_split_by_frame_blocks_with_the_gap(tmp_path):
    sc = _small(2, 48, stride=2)
    assert make_split_method(sc) == "by_frame_block" and make_split_method(_small(3, 4)) == "by_sequence"
    s = make_pair_sample(sc, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(sc, s, 0.2, 0.2, seed=0)
    for q in (0, 1):
        fr = {k: a["frame"][a["seq"] == q] for k, a in ds.items()}
        assert all(len(v) for v in fr.values()), "every split holds frames of every sequence"
        # Blocks follow in time, and at least one keyframe (2 frames apart here) is left out between two.
        assert fr["val"].min() - fr["train"].max() >= 2 * 2 and fr["test"].min() - fr["val"].max() >= 2 * 2
    meta = make_dataset_meta(sc, s, ds)
    leak = meta["leakage_check"]
    # Frames are disjoint, but the same people are in several splits: the check does not pass, and says why.
    assert meta["split_method"] == "by_frame_block" and leak["frames_disjoint"] is True
    assert leak["passed"] is False and meta["data_leakage_prevention"] is False
    assert set(leak["frames_shared"].values()) == {0} and min(leak["closest_frames_apart"].values()) >= 4
    assert sum(leak["person_ids_shared"].values()) > 0, "people are shared by design, and the check says so"
    n_all = meta["all_interacting_pairs"]
    assert all(n_all[k] >= int(a["y"].sum()) > 0 for k, a in ds.items())
    assert sum(n_all.values()) < s.counts["all_positives"], "the frames left out belong to no split"
    write_pair_dataset(ds, tmp_path / "scene_pairs", meta)
    assert load_pair_folder(tmp_path / "scene_pairs", name="scene_pairs").meta["split_method"] == "by_frame_block"


def test_notebook_01_reports_a_two_sequence_folder_in_full():
    sc = _small(2, 48, stride=2)
    s = make_pair_sample(sc, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    ds = make_scene_pair_dataset(sc, s, 0.2, 0.2, seed=0)
    pairs = sampling.make_scene_pairs(sc)
    at = sampling.evaluate_at_multiplier(pairs, 3.0)
    groups = sampling.make_type_groups_table(sc, s, ds)
    recall = sampling.make_recall_table(sc, s, ds)
    m = sampling_report.make_metrics(sc, at, s, ds, recall, groups)
    assert m["split_method"] == "by_frame_block" and m["n_images"] == 0
    assert groups["sequences"].tolist() == [2, 2, 2] and groups.drop(columns="sequences").to_numpy().sum() > 0
    assert recall.loc["all", "interacting pairs"] == s.counts["all_positives"]
    assert recall.drop("all")["interacting pairs"].sum() < recall.loc["all", "interacting pairs"]
    card = sampling.make_dataset_card(sc, s, ds, 0)
    assert card["split_method"] == "by_frame_block" and card["data_leakage_prevention"] is False
    said = sampling_report.describe_written(sc, "scene_pairs", sampling.evaluate_split_leakage(ds, "by_frame_block"), "")
    assert "split by frame blocks" in said and "0 frames are shared between splits" in said
    assert "reach training" in sampling_report.describe_answer(at, s, recall, groups, 3.0)


def test_one_sequence_with_one_frame_is_a_clear_error():
    sc = _small(1, 2)
    sc.people = sc.people[sc.people["frame"] == sc.people["frame"].min()].reset_index(drop=True)
    s = make_pair_sample(sc, 3.0, True, True, 1.0, 5, 1.0, seed=0)
    with pytest.raises(WorkbookError, match=r"1 sequence\(s\) with at most 1 frame\(s\): a split by frame blocks "
                                            r"needs a sequence with at least 5 frames .* needs 3 sequences"):
        make_scene_pair_dataset(sc, s, 0.2, 0.2, seed=0)
