"""`python -m helpers crops JRDB_ROOT --out DIR`: one PNG per person and frame, named
<sequence>_<frame>_<track>.png; bad input (no images, a missing or unreadable image, an unknown sequence)
is one line and exit status 2."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.__main__ import main
from helpers.core import paths
from helpers.core.paths import PROJ_ROOT

FIXTURE = PROJ_ROOT / "tests" / "fixtures" / "jrdb_tiny"


def _with_images(tmp_path: Path, frames=(("seq_a", 0), ("seq_a", 1), ("seq_b", 10))) -> Path:
    """The tiny fixture with stitched images (3760 x 480 PNG, a colour ramp) for the given frames."""
    root = tmp_path / "jrdb"
    shutil.copytree(FIXTURE, root)
    ramp = np.broadcast_to((np.arange(3760) % 256).astype(np.uint8)[None, :, None], (480, 3760, 3))
    for name, f in frames:
        path = root / "images" / "image_stitched" / name / f"{f:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(ramp)).save(path)
    return root


def test_crops_cli_writes_one_named_png_per_person(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    root, out = _with_images(tmp_path), tmp_path / "crops"
    assert main(["crops", str(root), "--out", str(out), "--size", "20", "10"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [*(f"seq_a_000000_{t}.png" for t in range(1, 6)), *(f"seq_a_000001_{t}.png" for t in range(1, 4)),
                     *(f"seq_b_000010_{t}.png" for t in range(1, 6))]
    with Image.open(out / "seq_a_000000_1.png") as im:
        assert im.size == (10, 20) and im.mode == "RGB"
    assert "wrote 13 crops (20 x 10 px, from 3 stitched images)" in capsys.readouterr().out
    only = tmp_path / "only_b"
    assert main(["crops", str(root), "--out", str(only), "--sequence", "seq_b"]) == 0
    assert sorted(p.name for p in only.glob("*.png")) == [f"seq_b_000010_{t}.png" for t in range(1, 6)]
    with Image.open(only / "seq_b_000010_1.png") as im:
        assert im.size == (32, 64), "the default size is 64 x 32 (H x W)"
    (root / "images" / "image_stitched" / "seq_a" / "000001.png").unlink()    # a frame without its image
    assert main(["crops", str(root), "--out", str(tmp_path / "partial"), "--sequence", "seq_a"]) == 0
    assert len(list((tmp_path / "partial").glob("*.png"))) == 5
    said = capsys.readouterr().out
    assert "1 labelled frames have no image and were skipped" in said and "seq_a/000001.jpg" in said


def test_crops_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    out = str(tmp_path / "out")
    assert main(["crops", str(FIXTURE), "--out", out]) == 2
    assert "geometry only (n_images = 0)" in capsys.readouterr().err
    root = _with_images(tmp_path, frames=(("seq_a", 0), ("seq_b", 10)))
    assert main(["crops", str(root), "--out", out, "--sequence", "seq_c"]) == 2
    assert "sequence 'seq_c' is not in" in capsys.readouterr().err
    assert main(["crops", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "no JRDB layout here" in capsys.readouterr().err
    (root / "images" / "image_stitched" / "seq_b" / "000010.png").write_bytes(b"\xff\xd8 broken")
    assert main(["crops", str(root), "--out", out, "--sequence", "seq_b"]) == 2
    err = capsys.readouterr().err
    assert "seq_b/000010.png: cannot read the image" in err and err.count("\n") == 1


def test_crops_is_a_command_of_the_package(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "helpers", "crops", "--help"], cwd=PROJ_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "--sequence" in proc.stdout and "--size" in proc.stdout
