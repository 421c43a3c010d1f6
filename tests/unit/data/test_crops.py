"""Person crops: the wrap at the seam (pixel-exact), the cache (reuse, invalidation), missing and
unreadable images, geometry-only folders, and the generated panoramas."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers.core.errors import DataError, WorkbookError
from helpers.data import crops
from helpers.data.crops import check_crop_size, load_crop_bank, load_crops, load_sequence_crops, make_person_crops
from helpers.data.jrdb import generated_sequence_name, load_jrdb
from helpers.data.panorama import GENERATED_COMMENT, make_background, make_keyframes, write_panoramas
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import HEIGHT, WIDTH
from helpers.reports import sampling as sampling_report
from helpers.stages import sampling


FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "jrdb_tiny"


def coded_image(salt: int = 0) -> np.ndarray:
    """[480, 3760, 3] uint8 whose pixels say where they are: R = x % 256, G = x // 256 * 16 + salt, B = y."""
    x = np.arange(WIDTH)[None, :].repeat(HEIGHT, 0)
    y = np.arange(HEIGHT)[:, None].repeat(WIDTH, 1)
    return np.stack([x % 256, (x // 256 * 16 + salt) % 256, y % 256], axis=-1).astype(np.uint8)


def with_images(tmp_path: Path, frames=(("seq_a", 0), ("seq_a", 1), ("seq_b", 10))) -> Path:
    """The tiny fixture with lossless (PNG) stitched images for the given frames."""
    root = tmp_path / "jrdb"
    shutil.copytree(FIXTURE, root)
    for name, f in frames:
        path = root / "images" / "image_stitched" / name / f"{f:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(coded_image()).save(path)
    return root


def both_edges(img: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The box cut by hand in panorama order: columns x .. x + w - 1 modulo the width, as [3, h, w]."""
    cols = np.r_[np.arange(x, WIDTH), np.arange(0, x + w - WIDTH)] if x + w > WIDTH else np.arange(x, x + w) % WIDTH
    return img[y:y + h][:, cols].transpose(2, 0, 1)


def test_wrap_crop_joins_both_edges_pixel_exact():
    img = coded_image()
    right = make_person_crops(img, np.array([[3740, 100, 60, 150]]), (150, 60))[0]
    left = make_person_crops(img, np.array([[-20, 100, 60, 150]]), (150, 60))[0]
    expect = np.concatenate([img[100:250, 3740:], img[100:250, :40]], axis=1).transpose(2, 0, 1)
    assert np.array_equal(right, expect), "right edge first, then the part past it from x = 0"
    assert np.array_equal(left, expect), "x < 0 is the same box"
    inside = make_person_crops(img, np.array([[500, 30, 20, 40]]), (40, 20))[0]
    assert np.array_equal(inside, img[30:70, 500:520].transpose(2, 0, 1))


def test_crops_resize_and_layout():
    img = coded_image()
    out = make_person_crops(img, np.array([[10, 10, 40, 80], [3750, 0, 30, 480]]), (16, 8))
    assert out.shape == (2, 3, 16, 8) and out.dtype == np.uint8 and out.flags["C_CONTIGUOUS"]
    assert check_crop_size([64, 32]) == (64, 32)
    for bad in ([64], [0, 32], [64.0, 32], "64x32", [True, 2]):
        with pytest.raises(WorkbookError, match="crop size"):
            check_crop_size(bad)


def test_loader_finds_images_and_crops_across_the_seam(tmp_path, monkeypatch):
    monkeypatch.setattr(crops.paths, "CACHE", tmp_path / "cache")
    sc = load_jrdb(with_images(tmp_path))
    assert sc.n_images == 3 and sc.image_root == sc.root / "images" / "image_stitched"
    # pedestrian:1 of seq_a, frame 0, is the seam box [3740, 100, 60, 150]
    got = load_crops(sc, [0, 0, 0], [0, 1, 0], [1, 1, 3], size=(150, 60))
    img = coded_image()
    assert np.array_equal(got[0], both_edges(img, 3740, 100, 60, 150))
    assert np.array_equal(got[1], both_edges(img, 3745, 100, 60, 150)), "frame 1: the box moved 5 px"
    assert got[2].shape == (3, 150, 60) and got[2][0, 0, 0] == 1800 % 256  # 55 x 130 resized from x = 1800


def test_second_call_reads_the_memmap_without_decoding(tmp_path, monkeypatch):
    sc = load_jrdb(with_images(tmp_path))
    first = load_sequence_crops(sc, "seq_a", (20, 10), cache_dir=tmp_path / "c")
    assert first.n_decoded == 2 and len(first.frame) == 8
    monkeypatch.setattr(crops, "load_image", lambda p: pytest.fail(f"decoded {p} again"))
    again = load_sequence_crops(sc, "seq_a", (20, 10), cache_dir=tmp_path / "c")
    assert again.n_decoded == 0 and again.folder == first.folder
    assert isinstance(again.crops, np.memmap) and np.array_equal(np.asarray(again.crops), np.asarray(first.crops))
    monkeypatch.undo()
    bank = load_crop_bank(sc, (20, 10), cache_dir=tmp_path / "c")      # seq_a read, seq_b built
    assert (bank.parts[0].n_decoded, bank.parts[1].n_decoded, len(bank)) == (0, 1, 13)
    batch = bank.take(bank.index([1, 0], [10, 1], [4, 3]))
    assert tuple(batch.shape) == (2, 3, 20, 10) and str(batch.dtype) == "torch.uint8"


def test_cache_is_rebuilt_when_an_image_changes(tmp_path):
    root = with_images(tmp_path)
    sc = load_jrdb(root)
    a = load_sequence_crops(sc, "seq_a", (20, 10), cache_dir=tmp_path / "c")
    before = np.array(a.crops)
    Image.fromarray(coded_image(salt=7)).save(root / "images" / "image_stitched" / "seq_a" / "000001.png")
    b = load_sequence_crops(sc, "seq_a", (20, 10), cache_dir=tmp_path / "c")
    assert b.n_decoded == 2 and b.folder != a.folder
    changed = b.frame == 1
    assert not np.array_equal(np.asarray(b.crops)[changed], before[changed])
    assert np.array_equal(np.asarray(b.crops)[~changed], before[~changed])
    c = load_sequence_crops(sc, "seq_a", (24, 12), cache_dir=tmp_path / "c")  # another size: another cache
    assert c.n_decoded == 2 and c.crops.shape[2:] == (24, 12)


def test_missing_and_unreadable_images_name_the_file(tmp_path):
    root = with_images(tmp_path, frames=(("seq_a", 0), ("seq_b", 10)))
    sc = load_jrdb(root)
    assert sc.n_images == 2
    with pytest.raises(DataError, match=r"seq_a/000001\.jpg: image not found .*pedestrian:2"):
        load_crops(sc, [0], [1], [2], cache_dir=tmp_path / "c")
    with pytest.raises(DataError, match=r"frame 000000 has no box of pedestrian:9"):
        load_crops(sc, [0], [0], [9], cache_dir=tmp_path / "c")
    bad = root / "images" / "image_stitched" / "seq_b" / "000010.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"seq_b/000010\.png: cannot read the image"):
        load_sequence_crops(sc, "seq_b", cache_dir=tmp_path / "c")
    Image.fromarray(coded_image()[:, :1000]).save(bad)
    with pytest.raises(DataError, match=r"000010\.png: image is 1000 x 480 px; expected a stitched panorama 3760"):
        load_sequence_crops(sc, "seq_b", cache_dir=tmp_path / "c")


def test_geometry_only_folder_still_loads(tmp_path):
    sc = load_jrdb(FIXTURE)
    assert sc.n_images == 0 and sc.image_root is None and len(sc.people) == 13
    with pytest.raises(DataError, match="geometry only"):
        load_crops(sc, [0], [0], [1], cache_dir=tmp_path / "c")


def test_generated_panoramas_show_the_labels(tmp_path):
    people, _ = make_generated_people(n_sequences=2, frames_per_sequence=12, seed=4)
    kept = people.copy()
    names = {0: generated_sequence_name(0), 1: generated_sequence_name(1)}
    n = write_panoramas(people, tmp_path / "img", names, stride=3)
    assert people.equals(kept), "drawing never touches the labels"
    keys = make_keyframes(people, 3)[["seq", "frame"]].drop_duplicates()
    files = sorted((tmp_path / "img").rglob("*.jpg"))
    assert n == len(keys) == len(files)
    assert {f"{names[s]}/{f:06d}.jpg" for s, f in keys.itertuples(index=False)} == \
        {p.relative_to(tmp_path / "img").as_posix() for p in files}
    with Image.open(files[0]) as im:
        assert im.size == (WIDTH, HEIGHT) and GENERATED_COMMENT.encode() in im.info.get("comment", b"")
    # Everyone is drawn: inside each box the picture differs from the empty room (a seam box at both edges).
    frame = make_keyframes(people, 3).query("seq == 0").query(f"frame == {int(keys.iloc[0]['frame'])}")
    img = np.asarray(Image.open(tmp_path / "img" / names[0] / f"{int(keys.iloc[0]['frame']):06d}.jpg")).astype(int)
    bg = make_background(0).astype(int)  # write_panoramas: seed 0, sequence 0
    diff = np.abs(img - bg).sum(-1) > 60
    for x, y, w, h in frame[["x", "y", "w", "h"]].to_numpy():
        cols = np.arange(int(x), int(x + w)) % WIDTH
        assert diff[int(y):int(y + h)][:, cols].any()


def test_seam_person_is_drawn_on_both_edges(tmp_path):
    row = {"seq": 0, "frame": 0, "track": 1, "x": 3730.0, "y": 150.0, "w": 60.0, "h": 160.0, "activity": 0,
           "rot_z": 0.0}
    write_panoramas(pd.DataFrame([row]), tmp_path / "img", {0: "s"}, stride=1)
    img = np.asarray(Image.open(tmp_path / "img" / "s" / "000000.jpg")).astype(int)
    diff = np.abs(img - make_background(0).astype(int)).sum(-1) > 60
    assert diff[150:310, 3730:].any() and diff[150:310, :30].any()


def test_seated_and_walking_people_look_different(tmp_path):
    base = {"seq": 0, "frame": 0, "y": 265.0, "w": 60.0, "rot_z": 0.0}  # on the floor: no wall panels behind
    rows = [{**base, "track": 1, "x": 500.0, "h": 160.0, "activity": 0},   # walking
            {**base, "track": 2, "x": 900.0, "h": 160.0, "activity": 1},   # standing
            {**base, "track": 3, "x": 1300.0, "h": 115.0, "activity": 3}]  # sitting: shorter
    write_panoramas(pd.DataFrame(rows), tmp_path / "img", {0: "s"}, stride=1)
    img = np.asarray(Image.open(tmp_path / "img" / "s" / "000000.jpg")).astype(int)
    diff = np.abs(img - make_background(0).astype(int)).sum(-1) > 60

    def feet_spread(x0: int, foot: int) -> int:
        cols = np.flatnonzero(diff[foot - 4:foot, x0:x0 + 60].any(0))
        return int(cols.max() - cols.min()) if len(cols) else 0

    def width_at(x0: int, row: int) -> int:
        cols = np.flatnonzero(diff[row, x0 - 20:x0 + 80])
        return int(cols.max() - cols.min()) if len(cols) else 0

    assert feet_spread(500, 425) > feet_spread(900, 425) + 15, "walking legs apart"
    # Bent at the hip: below a seated person's torso the thighs (on a bench) reach out level, wider than the
    # legs of a standing person of the same width at the same height in the box.
    assert width_at(1300, int(265 + 0.68 * 115)) > width_at(900, int(265 + 0.68 * 160)) + 15


def test_notebook_example_crops_use_frames_with_images(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setattr(crops.paths, "CACHE", tmp_path / "cache")
    sc = load_jrdb(with_images(tmp_path, frames=(("seq_a", 0),)))
    ds = {"train": {"seq": np.array([0, 0, 0]), "frame": np.array([1, 0, 0]), "track_a": np.array([1, 4, 1]),
                    "track_b": np.array([2, 5, 3]), "type": np.array([0, 3, -1]), "y": np.array([1, 1, 0])}}
    ex = sampling.load_example_crops(sc, ds, [20, 10])
    assert ex["titles"][0].startswith("sitting together") and len(ex["titles"]) == 2, "frame 1 has no image"
    assert ex["a"].shape == ex["b"].shape == (2, 3, 20, 10)
    assert len(sampling_report.plot_example_crops(ex).axes) == 4
    none = sampling.load_example_crops(load_jrdb(FIXTURE), ds, [20, 10])
    assert none["titles"] == [] and sampling_report.plot_example_crops(none).axes
    assert "geometry only" in sampling_report.describe_crops(load_jrdb(FIXTURE), [20, 10])
    assert "1 stitched images" in sampling_report.describe_crops(sc, [20, 10])
