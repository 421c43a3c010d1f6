"""The loaders' contract on inputs that used to slip through or fail obscurely: each case builds a tiny
bad input in tmp_path and expects a DataError naming the file and what was expected (or, for 3D labels
that match nothing and a stray GENERATED.json, a load that states what it found)."""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.data import jrdb, pairs
from helpers.data.scenes import select_keyframes


FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"


# ----------------------------------------------------------------------------- pair NPZ files
def _arrays(n=4, shape=(1, 4, 4), dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return dict(xa=rng.random((n, *shape)).astype(dtype), xb=rng.random((n, *shape)).astype(dtype),
                y=np.array([0, 1] * (n // 2)))


def _pair_folder(folder: Path, meta=None, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in pairs.SPLIT_FILES.values():
        np.savez(folder / name, **{**_arrays(), **overrides})
    if meta is not None:
        (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_a_zero_rows_is_a_data_error(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, xa=np.zeros((0, 1, 4, 4), np.float32), xb=np.zeros((0, 1, 4, 4), np.float32), y=np.zeros(0, int))
    with pytest.raises(DataError, match=r"train\.npz: has 0 rows"):
        pairs.load_npz_pairs(path)


def test_a_rows_without_values_is_a_data_error(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, xa=np.zeros((4, 0), np.float32), xb=np.zeros((4, 0), np.float32), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match=r"train\.npz: key 'xa' has no values per row"):
        pairs.load_npz_pairs(path)


@pytest.mark.parametrize("write", [
    lambda p: p.write_text("xa,xb,y\n1,2,0\n"),                                  # text under an .npz name
    lambda p: np.save(open(p, "wb"), np.zeros((3, 3))),                          # a single .npy array
])
def test_b_not_an_npz_archive_never_suggests_pickle(tmp_path, write):
    path = tmp_path / "train.npz"
    write(path)
    with pytest.raises(DataError, match="not an .npz archive of arrays") as err:
        pairs.load_npz_pairs(path)
    assert str(path) in str(err.value) and "pickle" not in str(err.value).lower()


def test_b_object_arrays_are_refused_without_suggesting_pickle(tmp_path):
    path = tmp_path / "train.npz"
    np.savez(path, xa=np.array([{"a": 1}, 2], dtype=object), xb=np.zeros((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"train\.npz: key 'xa' holds Python objects") as err:
        pairs.load_npz_pairs(path)
    assert "allow_pickle" not in str(err.value)


def test_b_a_zip_of_other_files_or_a_truncated_archive(tmp_path):
    path = tmp_path / "train.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(DataError, match=r"train\.npz: member 'notes\.txt' is not a numpy array"):
        pairs.load_npz_pairs(path)
    np.savez(path, **_arrays())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train\.npz: (not a readable \.npz archive|key '\w+' could not be read)") as err:
        pairs.load_npz_pairs(path)
    assert "allow_pickle" not in str(err.value)


@pytest.mark.parametrize("meta", [[1, 2], "digits", 3, None])
def test_c_meta_json_must_be_an_object(tmp_path, meta):
    folder = _pair_folder(tmp_path / "pairs")
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"meta\.json: expected a JSON object"):
        pairs.load_pair_folder(folder)


@pytest.mark.parametrize("meta,message", [({"generated": "no"}, "'generated' must be true or false"),
                                          ({"source": 3}, "'source' must be a string")])
def test_c_meta_json_fields_have_their_types(tmp_path, meta, message):
    with pytest.raises(DataError, match=message):
        pairs.load_pair_folder(_pair_folder(tmp_path / "pairs", meta=meta))


def test_c_meta_json_not_text(tmp_path):
    folder = _pair_folder(tmp_path / "pairs")
    (folder / "meta.json").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(DataError, match=r"meta\.json: not UTF-8"):
        pairs.load_pair_folder(folder)


@pytest.mark.parametrize("key", ["xa", "xb", "y"])
def test_d_complex_values_are_refused(tmp_path, key):
    d = _arrays()
    d[key] = d[key] + 1j * (key != "y")  # y stays 0/1 but becomes complex
    path = tmp_path / "train.npz"
    np.savez(path, **d)
    with pytest.raises(DataError, match=rf"train\.npz: key '{key}' has complex dtype .* not supported"):
        pairs.load_npz_pairs(path)


def test_e_a_path_ending_in_dotdot_is_named_by_the_resolved_folder(tmp_path):
    data = _pair_folder(tmp_path / "my data")
    (data / "sub").mkdir()
    splits = pairs.load_pair_dataset(str(data / "sub" / ".."), tmp_path / "run")
    assert splits.name == "my_data"
    out_dir = tmp_path / "run" / "02_stage1"
    splits, out, _ = pairs.open_dataset(str(data / "sub" / ".."), tmp_path / "run", out_dir)
    assert out == out_dir / "my_data" and out.is_dir()
    assert pairs.load_pair_folder(data / "sub" / "..").name == "my_data"


def test_e_label_parameter_names_the_splits_and_their_folder(tmp_path):
    data = _pair_folder(tmp_path / "x")
    assert pairs.load_pair_dataset(str(data), tmp_path, label="x-2").name == "x-2"
    splits, out, _ = pairs.open_dataset(str(data), tmp_path, tmp_path / "out", label="x-2")
    assert splits.name == "x-2" and out == tmp_path / "out" / "x-2"
    for bad in ("../x", ".hidden", "", "a/b"):
        with pytest.raises(WorkbookError, match="label"):
            pairs.open_dataset(str(data), tmp_path, tmp_path / "out", label=bad)


def test_e_dataset_labels_are_safe_unique_and_deterministic(tmp_path):
    for sub in ("a/x", "b/x", "c/x", "d/.hidden", "e/x-2", "f/t\u00e9st set"):
        (tmp_path / sub).mkdir(parents=True)
    ds = ["digit_pairs", str(tmp_path / "a/x"), str(tmp_path / "b/x"), str(tmp_path / "a/x/.."),
          str(tmp_path / "d/.hidden"), str(tmp_path / "c/x"), str(tmp_path / "e/x-2"), str(tmp_path / "f/t\u00e9st set"),
          "digit_pairs", "/"]
    labels = pairs.dataset_labels(ds)
    assert labels == ["digit_pairs", "x", "x-3", "a", "hidden", "x-4", "x-2", "t_st_set", "digit_pairs-2", "unnamed"]
    assert labels == pairs.dataset_labels(list(ds))  # the same list gives the same labels in every notebook
    assert len(set(labels)) == len(labels)
    assert all(lab and not lab.startswith(".") and set(lab) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for lab in labels)
    notes = pairs.describe_renamed(ds, labels)
    assert len(notes) == 6  # b/x, c/x, d/.hidden, the accented name, the second digit_pairs, "/"
    assert f"{tmp_path / 'a/x'} and {tmp_path / 'b/x'} have the same folder name: the second is reported as x-3" in notes
    assert pairs.describe_renamed(["digit_pairs", str(tmp_path / "a/x")], ["digit_pairs", "x"]) == []


def test_e_relative_dataset_labels_resolve_against_the_project():
    assert pairs.dataset_labels(["tests/fixtures/jrdb_tiny/labels/.."]) == ["jrdb_tiny"]


def test_e_valid_folder_keeps_its_name(tmp_path):
    assert pairs.load_pair_dataset(str(_pair_folder(tmp_path / "pairs_v1")), tmp_path).name == "pairs_v1"


# ----------------------------------------------------------------------------- JRDB layout
def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "jrdb"
    shutil.copytree(FIXTURE, root)
    return root


def _edit(root: Path, fn, kind: str = "labels_2d_stitched", seq: str = "seq_a") -> Path:
    path = root / "labels" / kind / f"{seq}.json"
    obj = json.loads(path.read_text())
    fn(obj["labels"])
    path.write_text(json.dumps(obj))
    return path


def _rename_key(labels: dict, old: str, new: str) -> None:
    labels[new] = labels.pop(old)


def test_f_a_bad_frame_key_is_quoted_with_its_file(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: _rename_key(lab, "000001.jpg", "frame_three.jpg"))
    with pytest.raises(DataError, match=r"seq_a\.json: frame key 'frame_three\.jpg'.*six-digit image name like "
                                        r"'000003\.jpg'"):
        jrdb.load_jrdb(root)


@pytest.mark.parametrize("key", ["3.png", "1.jpg", "0000001.jpg", "000001.jpeg", "000001", "00000a.jpg"])
def test_g_only_six_digit_jpg_or_png_keys(tmp_path, key):
    root = _copy(tmp_path)
    _edit(root, lambda lab: _rename_key(lab, "000001.jpg", key))
    with pytest.raises(DataError, match=rf"seq_a\.json: frame key '{key}'.*exactly six digits"):
        jrdb.load_jrdb(root)


def test_g_png_keys_and_social_keys_are_checked_too(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: _rename_key(lab, "000001.jpg", "000001.png"))
    assert len(jrdb.load_jrdb(root).people) == 13
    _edit(root, lambda lab: _rename_key(lab, "000010.jpg", "10.jpg"), kind="labels_2d_activity_social_stitched",
          seq="seq_b")
    with pytest.raises(DataError, match=r"labels_2d_activity_social_stitched/seq_b\.json: frame key '10\.jpg'"):
        jrdb.load_jrdb(root)


def test_g_the_same_frame_twice_is_refused(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: lab.__setitem__("000001.png", lab["000001.jpg"]))
    with pytest.raises(DataError, match=r"seq_a\.json: frame 1 appears twice \('000001\.jpg' and '000001\.png'\)"):
        jrdb.load_jrdb(root)


def test_g_3d_keys_are_point_cloud_names(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: _rename_key(lab, "000000.pcd", "0.pcd"), kind="labels_3d")
    with pytest.raises(DataError, match=r"labels_3d/seq_a\.json: frame key '0\.pcd'.*'000003\.pcd'"):
        jrdb.load_jrdb(root)


@pytest.mark.parametrize("value", ["abc", "1.5", None, True, float("nan")])
def test_h_3d_values_must_be_numbers_and_name_file_frame_key(tmp_path, value):
    root = _copy(tmp_path)
    _edit(root, lambda lab: lab["000000.pcd"][1]["box"].__setitem__("cx", value), kind="labels_3d")
    with pytest.raises(DataError, match=r"labels_3d/seq_a\.json: frame '000000\.pcd', record 1 \(pedestrian:2\): "
                                        r"box key 'cx' is .*; expected a finite number"):
        jrdb.load_jrdb(root)


def test_h_3d_box_without_a_key(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: lab["000000.pcd"][0]["box"].pop("rot_z"), kind="labels_3d")
    with pytest.raises(DataError, match=r"labels_3d/seq_a\.json: frame '000000\.pcd', record 0 \(pedestrian:1\): "
                                        r"box has no 'rot_z'"):
        jrdb.load_jrdb(root)


@pytest.mark.parametrize("box", [["10", "20", "30", "60"], [10, 20, True, 60], [10, None, 30, 60], [10, 20, [30], 60]])
def test_i_box_values_must_be_numbers(tmp_path, box):
    root = _copy(tmp_path)
    _edit(root, lambda lab: lab["000001.jpg"][2].__setitem__("box", box))
    with pytest.raises(DataError, match=r"seq_a\.json: frame '000001\.jpg', record 2 \(pedestrian:\d+\): box values "
                                        r"must be numbers.*expected box = \[x, y, w, h\]"):
        jrdb.load_jrdb(root)


@pytest.mark.parametrize("lid", ["car:7", "7", "pedestrian:", "pedestrian: 7", "pedestrian:-1", 7])
def test_j_label_id_must_be_a_pedestrian_track(tmp_path, lid):
    root = _copy(tmp_path)
    _edit(root, lambda lab: lab["000001.jpg"][0].__setitem__("label_id", lid))
    with pytest.raises(DataError, match=r"seq_a\.json: frame '000001\.jpg', record 0: label_id .* is not "
                                        r"'pedestrian:<int>'"):
        jrdb.load_jrdb(root)


def test_j_3d_label_id_is_checked_too(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: lab["000000.pcd"][0].__setitem__("label_id", "car:1"), kind="labels_3d")
    with pytest.raises(DataError, match=r"labels_3d/seq_a\.json: frame 000000: label id 'car:1' is not"):
        jrdb.load_jrdb(root)


@pytest.mark.parametrize("empty", [{}, {"000000.jpg": [], "000001.jpg": []}])
def test_k_no_boxes_anywhere_is_a_data_error(tmp_path, empty):
    root = _copy(tmp_path)
    for seq in ("seq_a", "seq_b"):
        (root / "labels" / "labels_2d_stitched" / f"{seq}.json").write_text(json.dumps({"labels": empty}))
    with pytest.raises(DataError, match=re.escape(f"{root}: no sequence holds a box")):
        jrdb.load_jrdb(root)


def test_k_one_empty_sequence_is_fine(tmp_path):
    root = _copy(tmp_path)
    (root / "labels" / "labels_2d_stitched" / "seq_b.json").write_text(json.dumps({"labels": {}}))
    assert jrdb.load_jrdb(root).sequences == ["seq_a", "seq_b"]


def test_l_3d_labels_that_match_nothing_are_counted(tmp_path):
    root = _copy(tmp_path)
    _edit(root, lambda lab: [r.__setitem__("label_id", f"pedestrian:{90 + i}") for i, r in enumerate(lab["000000.pcd"])],
          kind="labels_3d")
    sc = jrdb.load_jrdb(root)
    n_a = int((sc.people["seq"] == 0).sum())
    assert sc.people["x3d"].isna().all()
    assert (sc.n_boxes_with_3d, sc.n_3d_unmatched, sc.n_3d_records) == (0, 3, 3)
    assert f"labels_3d/seq_a.json: 0 of {n_a} boxes matched a 3D label (tracks differ?)" in sc.notes
    assert select_keyframes(sc, 1).notes == sc.notes


def test_l_fixture_counts_partial_3d(tmp_path):
    sc = jrdb.load_jrdb(FIXTURE)
    with_3d = int(sc.people["x3d"].notna().sum())
    assert (sc.n_boxes_with_3d, sc.n_3d_unmatched, sc.n_3d_records) == (with_3d, 0, 3) and with_3d == 3
    assert any(f"3 of {len(sc.people)} boxes" in n for n in sc.notes)


def test_l_generated_scenes_match_every_3d_label(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    sc = jrdb.load_scenes(None, n_sequences=2, frames_per_sequence=6, seed=1)
    assert sc.generated and sc.notes == [] and sc.n_3d_unmatched == 0
    assert sc.n_boxes_with_3d == len(sc.people) == sc.n_3d_records


def test_m_a_stray_marker_does_not_make_real_data_generated(tmp_path):
    root = _copy(tmp_path)
    (root / "GENERATED.json").write_text(json.dumps({"generated": True, "source": "made up"}))
    sc = jrdb.load_jrdb(root)
    assert not sc.generated and sc.source == f"JRDB annotations at {root}"
    assert any("GENERATED.json" in n and "ignored" in n for n in sc.notes)


@pytest.mark.parametrize("marker", [[1], "x", {"files": {"../../etc/passwd": "0" * 64}}, {"files": []}])
def test_m_a_malformed_marker_is_ignored(tmp_path, marker):
    root = _copy(tmp_path)
    (root / "GENERATED.json").write_text(json.dumps(marker))
    sc = jrdb.load_jrdb(root)
    assert not sc.generated and any("GENERATED.json" in n for n in sc.notes)


@pytest.fixture()
def generated_copy(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    src = jrdb.load_scenes(None, n_sequences=2, frames_per_sequence=6, seed=1).root
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    return root


def test_m_workbook_written_scenes_verify(generated_copy):
    marker = json.loads((generated_copy / "GENERATED.json").read_text())
    assert len(marker["files"]) == 6 and all(len(h) == 64 for h in marker["files"].values())
    sc = jrdb.load_jrdb(generated_copy)
    assert sc.generated and sc.source.startswith("generated JRDB-like scenes") and sc.notes == []


def test_m_an_edited_label_file_breaks_the_marker(generated_copy):
    path = next((generated_copy / "labels" / "labels_3d").glob("*.json"))
    path.write_text(path.read_text().replace('"h":1.7', '"h":1.8', 1))
    sc = jrdb.load_jrdb(generated_copy)
    assert not sc.generated and any(path.name in n and "ignored" in n for n in sc.notes)


def test_m_an_extra_label_file_breaks_the_marker(generated_copy):
    d2 = generated_copy / "labels" / "labels_2d_stitched"
    shutil.copy(next(d2.glob("*.json")), d2 / "my_real_seq.json")
    sc = jrdb.load_jrdb(generated_copy)
    assert not sc.generated and any("my_real_seq.json" in n for n in sc.notes)


def test_m_an_old_cache_without_hashes_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    a = jrdb.load_scenes(None, n_sequences=2, frames_per_sequence=6, seed=1)
    marker = a.root / "GENERATED.json"
    old = json.loads(marker.read_text())
    old.pop("files")
    marker.write_text(json.dumps(old))
    b = jrdb.load_scenes(None, n_sequences=2, frames_per_sequence=6, seed=1)
    assert "files" in json.loads(marker.read_text()) and b.people.equals(a.people) and b.generated
