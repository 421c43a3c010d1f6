"""JRDB loader on a hand-written fixture, malformed inputs, the generator and the stats table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.data.jrdb import load_jrdb, load_scenes
from helpers.data.scene_generator import make_generated_people
from helpers.data.scene_stats import make_scene_stats_table
from helpers.data.scenes import JRDB_REFERENCE, Scenes, select_keyframes, type_of_label, type_of_labels


FIXTURE = Path(__file__).parent / "fixtures" / "jrdb_tiny"


@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)


def _row(sc: Scenes, seq: str, frame: int, track: int):
    p = sc.people
    s = sc.sequences.index(seq)
    r = p[(p["seq"] == s) & (p["frame"] == frame) & (p["track"] == track)]
    assert len(r) == 1, (seq, frame, track)
    return r.iloc[0]


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


# ----------------------------------------------------------------------------- malformed input
def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "jrdb"
    shutil.copytree(FIXTURE, root)
    return root


def _edit(root: Path, fn) -> Path:
    path = root / "labels" / "labels_2d_stitched" / "seq_a.json"
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))
    return path


def test_invalid_json(tmp_path):
    root = _copy(tmp_path)
    path = root / "labels" / "labels_2d_stitched" / "seq_b.json"
    path.write_text('{"labels": {"000010.jpg": [ {"label_id": ')
    with pytest.raises(DataError, match=r"seq_b\.json: invalid JSON"):
        load_jrdb(root)


def test_record_without_box(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda o: o["labels"]["000001.jpg"][2].pop("box"))
    with pytest.raises(DataError, match=r"seq_a\.json: frame '000001\.jpg', record 2 has no 'box'"):
        load_jrdb(root)


def test_box_of_wrong_length(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda o: o["labels"]["000000.jpg"][3].__setitem__("box", [1, 2, 3]))
    with pytest.raises(DataError, match=r"frame '000000\.jpg', record 3 has a box of length 3"):
        load_jrdb(root)


def test_negative_width(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda o: o["labels"]["000000.jpg"][1].__setitem__("box", [10, 20, -5, 30]))
    with pytest.raises(DataError, match=r"frame '000000\.jpg', record 1: box .* negative"):
        load_jrdb(root)


def test_not_a_labels_object(tmp_path):
    root = _copy(tmp_path)
    (root / "labels" / "labels_2d_stitched" / "seq_a.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="seq_a.json: expected an object with a 'labels' mapping"):
        load_jrdb(root)


def test_missing_layout(tmp_path):
    with pytest.raises(DataError, match="no JRDB layout"):
        load_jrdb(tmp_path)
    assert issubclass(DataError, WorkbookError) and issubclass(DataError, ValueError)


def test_unknown_fields_ignored(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda o: o["labels"]["000000.jpg"][0].update({"HOI": [1, 2], "attributes": {"odd": 1}}))
    sc = load_jrdb(root)
    assert len(sc.people) == 13


# ----------------------------------------------------------------------------- generator
def test_generator_writes_jrdb_layout_and_is_deterministic(tmp_path, monkeypatch):

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    sizes = dict(n_sequences=3, frames_per_sequence=20, seed=5)
    a = load_scenes(None, **sizes)
    b = load_scenes("", **sizes)  # second call reads the cache
    assert a.generated and "generated" in a.source
    assert (a.root / "labels" / "labels_2d_stitched").is_dir()
    assert (a.root / "labels" / "labels_2d_activity_social_stitched").is_dir()
    assert (a.root / "labels" / "labels_3d").is_dir()
    assert a.people.equals(b.people)
    # The last sequence relies on H-interaction pairs only; their closure must give the same groups
    # the generator used, so same-group pairs exist in every sequence mode.
    assert set(a.grouping.values()) == {"cluster_ID", "H-interaction"}
    # Fresh generation with the same seed, elsewhere, is identical.
    p1, _ = make_generated_people(**sizes)
    p2, _ = make_generated_people(**sizes)
    assert p1.equals(p2)
    # Real-format loading of the generated folder matches the in-memory simulation.
    assert len(a.people) == len(p1)
    per_frame = a.people.groupby("fid").size()
    assert per_frame.max() <= 80


def test_generator_closure_recovers_groups():
    people, _ = make_generated_people(n_sequences=3, frames_per_sequence=10, seed=1)
    assert (people.groupby(["seq", "frame", "group"]).size() >= 2).any()


def test_generator_rejects_bad_sizes():
    with pytest.raises(WorkbookError, match="n_sequences"):
        make_generated_people(n_sequences=0)


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


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):

    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    a = load_scenes(None, n_sequences=3, frames_per_sequence=8, seed=2)
    next((a.root / "labels" / "labels_2d_stitched").glob("*.json")).unlink()
    b = load_scenes(None, n_sequences=3, frames_per_sequence=8, seed=2)
    assert len(b.sequences) == 3 and a.people.equals(b.people)


def test_relative_jrdb_root_resolves_against_the_project(tiny):
    sc = load_scenes("tests/fixtures/jrdb_tiny")
    assert sc.sequences == tiny.sequences and not sc.generated


def test_bad_pair_id_in_social_file(tmp_path):
    root = _copy(tmp_path)
    path = root / "labels" / "labels_2d_activity_social_stitched" / "seq_b.json"
    obj = json.loads(path.read_text())
    obj["labels"]["000010.jpg"][0]["H-interaction"][0]["pair"] = "pedestrian:x"
    path.write_text(json.dumps(obj))
    with pytest.raises(DataError, match=r"seq_b\.json: frame 000010: label id 'pedestrian:x'"):
        load_jrdb(root)
