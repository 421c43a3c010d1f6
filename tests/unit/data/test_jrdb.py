"""JRDB loader on a hand-written fixture, malformed inputs, the generator and the stats table."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.data.jrdb import load_jrdb, load_scenes
from helpers.data.scenes import Scenes, select_keyframes


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


# ----------------------------------------------------------------------------- stitched images
def test_generated_scenes_get_panoramas_of_the_keyframes(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    sizes = dict(n_sequences=2, frames_per_sequence=9, seed=3)
    plain = load_scenes(None, **sizes)
    assert plain.n_images == 0 and plain.image_root is None
    drawn = load_scenes(None, **sizes, render_stride=4)
    assert drawn.people.equals(plain.people), "drawing adds images and never changes the labels"
    kept = select_keyframes(drawn, 4)
    assert drawn.n_images == kept.n_images == kept.people.groupby(["seq", "frame"]).ngroups > 0
    assert drawn.image_root == drawn.root / "images" / "image_stitched"
    marker = json.loads((drawn.root / "images" / "RENDERED.json").read_text())
    assert marker["generated"] is True and marker["stride"] == 4 and marker["n_images"] == drawn.n_images
    files = sorted(drawn.image_root.rglob("*.jpg"))
    stamp = [p.stat().st_mtime_ns for p in files]
    again = load_scenes(None, **sizes, render_stride=4)          # cached: nothing is drawn again
    assert [p.stat().st_mtime_ns for p in files] == stamp and again.n_images == drawn.n_images
    other = load_scenes(None, **sizes, render_stride=2)          # another stride: the keyframes of that one
    assert other.n_images == select_keyframes(other, 2).people.groupby(["seq", "frame"]).ngroups
    assert other.people.equals(plain.people)
    assert load_scenes(None, **sizes).n_images == 0, "without rendering: geometry only, whatever the cache holds"


def test_loader_counts_images_of_labelled_frames_only(tmp_path):
    root = _copy(tmp_path)
    folder = root / "images" / "image_stitched" / "seq_a"
    folder.mkdir(parents=True)
    for name in ("000000.jpg", "000001.png", "000099.jpg", "notes.txt", "0001.jpg"):
        (folder / name).write_bytes(b"x")  # only listed, never opened, by the loader
    sc = load_jrdb(root)
    assert sc.n_images == 2 and sc.image_root == root / "images" / "image_stitched"
    assert load_jrdb(FIXTURE).n_images == 0
