"""JRDB loader on a hand-written fixture, malformed inputs, the generator and the stats table."""
from __future__ import annotations

import pytest

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.data.jrdb import load_scenes
from helpers.data.scene_generator import make_generated_people, type_quota



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


@pytest.mark.parametrize("frames, quota", [(40, 1), (150, 2), (240, 3), (1035, 3)])
def test_type_quota_by_sequence_length(frames, quota):
    assert type_quota(frames) == quota


def test_every_sequence_holds_groups_of_every_type():
    """Each sequence shows at least type_quota groups of each interaction type with two or more people
    together in a frame, and the pairs added for it keep the crowd near JRDB's size."""
    people, groups = make_generated_people(n_sequences=3, frames_per_sequence=150, seed=2)
    q = type_quota(150)
    together = people.groupby(["seq", "frame", "group"])["track"].transform("size") >= 2
    seen = people[together & (people["type"] >= 0)].groupby(["seq", "type"])["group"].nunique()
    assert seen.unstack(fill_value=0).reindex(columns=range(5), fill_value=0).to_numpy().min() >= q
    assert set(groups.loc[groups["size"] >= 2, "type"]) == set(range(5))
    per_frame = people.groupby(["seq", "frame"]).size()
    assert 10 < per_frame.mean() < 45 and per_frame.max() <= 80
    assert groups["group"].tolist() == list(range(len(groups))), "group ids stay the row numbers"
