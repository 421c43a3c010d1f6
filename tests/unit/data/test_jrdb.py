"""JRDB loader on a hand-written fixture, malformed inputs, the generator and the stats table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.data.jrdb import load_jrdb, load_scenes
from helpers.data.scenes import Scenes


FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"

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

@pytest.fixture(scope="module")
def tiny() -> Scenes:
    return load_jrdb(FIXTURE)


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
