"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets.

JRDB loader on a hand-written fixture, malformed inputs, the generator and the stats table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.jrdb import load_jrdb
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.scene_generator import make_generated_people
from helpers.data.scene_stats import make_scene_stats_table
from helpers.data.scenes import JRDB_REFERENCE, Scenes, select_keyframes, type_of_label, type_of_labels, WIDTH


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

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"

@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)

def _row(sc: Scenes, seq: str, frame: int, track: int):
    p = sc.people
    s = sc.sequences.index(seq)
    r = p[(p["seq"] == s) & (p["frame"] == frame) & (p["track"] == track)]
    assert len(r) == 1, (seq, frame, track)
    return r.iloc[0]


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


def test_loader_reads_both_sequences(tiny):
    assert tiny.sequences == ["seq_a", "seq_b"]
    assert not tiny.generated
    assert len(tiny.people) == 8 + 5
    assert tiny.grouping == {"seq_a": "cluster_ID", "seq_b": "H-interaction"}
    assert tiny.n_frames == 3
    # Sorted by frame uid, one uid per (sequence, frame).
    assert np.all(np.diff(tiny.people["fid"].to_numpy()) >= 0)


def test_seam_box_kept_and_centre_wrapped(tiny):
    r = _row(tiny, "seq_a", 0, 1)
    assert r["x"] == 3740 and r["w"] == 60  # raw box kept as stored
    assert r["cx"] == pytest.approx(10.0)   # (3740 + 30) mod 3760
    assert bool(r["truncated"]) is True      # "true" is a string in JRDB
    assert r["occlusion"] == 1               # Mostly_visible
    assert bool(_row(tiny, "seq_a", 0, 3)["no_eval"]) is True


def test_groups_from_cluster_ids(tiny):
    g = {t: _row(tiny, "seq_a", 0, t)["group"] for t in range(1, 6)}
    assert g[1] == g[2] and g[4] == g[5]
    assert len({g[1], g[3], g[4]}) == 3
    assert _row(tiny, "seq_a", 0, 1)["type"] == 0    # walking together (from action labels)
    assert _row(tiny, "seq_a", 0, 4)["type"] == 3    # sitting together
    assert _row(tiny, "seq_a", 0, 3)["type"] == -1   # alone


def test_groups_from_h_interaction_closure(tiny):
    g = {t: _row(tiny, "seq_b", 10, t)["group"] for t in range(1, 6)}
    assert g[1] == g[2] == g[3]            # 1-2 and 3-2 -> {1, 2, 3} (transitive closure)
    assert g[4] == g[5] and g[4] != g[1]   # from the H-interaction entry on the 2D record
    assert _row(tiny, "seq_b", 10, 1)["type"] == 0   # walking together beats "looking at sth together"
    assert _row(tiny, "seq_b", 10, 4)["type"] == 2   # conversation
    # Groups are global: no id shared between sequences.
    ga = set(tiny.people.loc[tiny.people["seq"] == 0, "group"])
    gb = set(tiny.people.loc[tiny.people["seq"] == 1, "group"])
    assert not ga & gb


def test_3d_join_and_velocity(tiny):
    r = _row(tiny, "seq_a", 0, 2)
    assert r["x3d"] == pytest.approx(-4.1) and r["rot_z"] == pytest.approx(1.3)
    assert np.isnan(_row(tiny, "seq_a", 1, 2)["x3d"])   # no 3D record for that frame
    assert np.isnan(_row(tiny, "seq_b", 10, 1)["x3d"])  # no 3D file for seq_b
    assert _row(tiny, "seq_a", 0, 3)["vx"] == pytest.approx(5.0)
    assert _row(tiny, "seq_a", 1, 1)["vx"] == pytest.approx(5.0)  # across the seam: 10 -> 15
    assert _row(tiny, "seq_a", 0, 4)["vx"] == 0.0                 # one frame only


@pytest.mark.parametrize("name, expected", [("walking together", 0), ("standing together", 1), ("conversation", 2),
                                            ("sitting together", 3), ("cycling together", 4), ("hugging", 4),
                                            ("walking", 0), ("talking to someone", 2)])
def test_type_mapping(name, expected):
    assert type_of_label(name) == expected


def test_type_priority():
    assert type_of_labels({"walking together": 1, "conversation": 2}) == 2
    assert type_of_labels({}) == 4


def test_scene_stats_table(tiny):
    t = make_scene_stats_table(tiny)
    assert list(t.columns) == ["this data", "JRDB reference"]
    assert t.loc["people per frame, max", "this data"] == 5
    assert t.loc["people per frame, max", "JRDB reference"] == 80
    # seq_a frame 0: pairs (1,2) seam, (4,5); frame 1: (1,2) seam; seq_b: 3 + 1 -> 2 of 4 seam pairs... share > 0
    assert 0 < t.loc["same-group pairs closer across the seam", "this data"] < 1
    assert set(JRDB_REFERENCE) == set(t.index)


def test_select_keyframes(tiny):
    k = select_keyframes(tiny, 2)
    assert set(k.people["frame"]) == {0, 10}
    assert k.n_frames == 2
    with pytest.raises(WorkbookError):
        select_keyframes(tiny, 0)
