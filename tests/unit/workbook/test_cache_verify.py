"""Cached results are verified before reuse, keyed by content through links, copied to the current umask,
and recorded under a lock; a notebook's key survives an editor's re-serialisation. Each test failed on
f1e8d3d (issue 22, wrong reuse)."""
import json
import multiprocessing
import os
import stat
from pathlib import Path

import nbformat
import pytest

from helpers.core import paths
from helpers.core.errors import ParameterError
from helpers.workbook import cache, runner
from tests.unit.workbook.test_run_claims import wb  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[3]


def _entry(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["notebooks"]["00_echo"]


def test_a_damaged_result_is_not_reused_and_the_reason_is_given(wb):  # noqa: F811
    assert runner.run("smoke", only=["00"], out=wb / "a") == 0
    assert runner.run("smoke", only=["00"], out=wb / "b") == 0
    assert _entry(wb / "b")["status"] == "reused"
    metrics = wb / "a" / "00_echo" / "metrics.json"
    metrics.unlink()                                   # b's hard link keeps its bytes; a's copy is gone
    metrics.write_text(json.dumps({"s": "edited"}))
    (wb / "b" / "00_echo" / "metrics.json").write_text(json.dumps({"s": "edited too"}))
    assert runner.run("smoke", only=["00"], out=wb / "c") == 0
    entry = _entry(wb / "c")
    assert entry["status"] == "ran", entry
    assert "changed since it completed" in entry["note"] and "metrics.json changed" in entry["note"]
    assert json.loads((wb / "c" / "00_echo" / "metrics.json").read_text()) == {"s": "plain"}


def test_a_result_missing_a_file_is_not_reused(wb):  # noqa: F811
    assert runner.run("smoke", only=["00"], out=wb / "a") == 0
    (wb / "a" / "00_echo" / "metrics.json").unlink()
    plan = runner.make_plan("smoke", ["00"], None, 2, wb / "x")
    assert plan[0].action == "run" and "metrics.json is gone" in plan[0].reason


def test_the_data_key_looks_through_links(tmp_path):
    real = tmp_path / "real_labels"
    real.mkdir()
    (real / "seq.json").write_text('{"a": 1}')
    root = tmp_path / "jrdb"
    root.mkdir()
    (root / "labels").symlink_to(real, target_is_directory=True)
    before = cache.data_hash({"jrdb_root": str(root)}, tmp_path / "run")
    (real / "seq.json").write_text('{"a": 2}')
    assert cache.data_hash({"jrdb_root": str(root)}, tmp_path / "run") != before


def test_large_files_are_keyed_by_content_not_size_and_mtime(tmp_path):
    big = tmp_path / "data" / "train.npz"
    big.parent.mkdir()
    payload = bytearray(17 * 2**20)
    big.write_bytes(bytes(payload))
    st = big.stat()
    before = cache.data_hash({"pairs_dir": str(big.parent)}, tmp_path / "run")
    payload[5_000_000:5_000_300] = b"\x01" * 300        # 300 labels flipped, same size ...
    with open(big, "r+b") as fh:                          # ... written in place (same inode) ...
        fh.write(bytes(payload))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))   # ... and the modification time set back (touch -r)
    assert big.stat().st_size == st.st_size and big.stat().st_mtime_ns == st.st_mtime_ns
    assert cache.data_hash({"pairs_dir": str(big.parent)}, tmp_path / "run") != before


def test_the_images_a_task_table_names_are_in_its_key(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "img" / name).write_bytes(b"png " + name.encode())
    table = tmp_path / "table.csv"
    table.write_text("image,subject,y\nimg/a.png,s1,1\nimg/b.png,s2,0\n")
    p = {"table": str(table), "image_col": "image", "image_root": ""}
    before = cache.data_hash(p, tmp_path / "run")
    (tmp_path / "img" / "b.png").write_bytes(b"another image")
    assert cache.data_hash(p, tmp_path / "run") != before


def test_the_file_system_root_is_refused_not_hashed(tmp_path):
    with pytest.raises(ParameterError, match="file-system root"):
        cache.data_hash({"pairs_dir": "/"}, tmp_path / "run")


def test_a_folder_with_too_many_files_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "MAX_DATA_FILES", 5)
    for i in range(8):
        (tmp_path / f"f{i}").write_text("x")
    with pytest.raises(ParameterError, match="more than 5 files"):
        cache.data_hash({"pairs_dir": str(tmp_path)}, tmp_path / "run")


def test_reused_files_follow_the_current_umask(wb):  # noqa: F811
    old = os.umask(0o022)
    try:
        assert runner.run("smoke", only=["00"], out=wb / "a") == 0
        os.umask(0o077)
        assert runner.run("smoke", only=["00"], out=wb / "b") == 0
    finally:
        os.umask(old)
    assert _entry(wb / "b")["status"] == "reused"
    for f in (wb / "b" / "00_echo").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f
    assert stat.S_IMODE((wb / "a" / "00_echo" / "metrics.json").stat().st_mode) == 0o644   # a is untouched


def test_copied_pair_folders_follow_the_current_umask(tmp_path):
    from helpers.data.pairs import copy_pair_folder

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.npz").write_bytes(b"x")
    os.chmod(tmp_path / "src" / "train.npz", 0o644)
    old = os.umask(0o077)
    try:
        copy_pair_folder(tmp_path / "src", tmp_path / "dst")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "dst" / "train.npz").stat().st_mode) == 0o600


def _record_many(args) -> None:
    cache_dir, worker, n = args
    paths.CACHE = Path(cache_dir)
    folder = Path(cache_dir) / f"w{worker}"
    for i in range(n):
        (folder / str(i)).mkdir(parents=True, exist_ok=True)
        (folder / str(i) / "m.json").write_text(str(i))
        cache.record_result("00_echo", cache.ResultKey(f"{worker}-{i}"), folder / str(i))


def test_concurrent_writers_of_the_index_lose_nothing(tmp_path):
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_record_many, [(str(tmp_path), w, 60) for w in range(2)])
    paths_before = paths.CACHE
    try:
        paths.CACHE = tmp_path
        assert len(cache.load_index()["results"]) == 120
    finally:
        paths.CACHE = paths_before


def test_a_notebook_saved_by_jupyterlab_without_edits_keeps_its_key(tmp_path):
    src = ROOT / "notebooks" / "00_data_audit.ipynb"
    nb = nbformat.read(str(src), as_version=4)
    nb.metadata["kernelspec"] = {"name": "pairwise-venv", "display_name": "Python (pairwise)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7", "mimetype": "text/x-python",
                                    "codemirror_mode": {"name": "ipython", "version": 3}}
    nb.metadata = dict(reversed(list(nb.metadata.items())))        # another key order
    saved = tmp_path / "00_data_audit.ipynb"
    nbformat.write(nb, str(saved))                                  # JupyterLab's own serialiser
    assert saved.read_bytes() != src.read_bytes()
    assert cache.notebook_hash(saved) == cache.notebook_hash(src)
    nb.cells[2].source += "\nprint('an edit')"
    nbformat.write(nb, str(saved))
    assert cache.notebook_hash(saved) != cache.notebook_hash(src)


def test_a_notebook_result_is_still_reused_after_a_save_without_edits(wb):  # noqa: F811
    assert runner.run("smoke", only=["00"], out=wb / "a") == 0
    path = wb / "notebooks" / "00_echo.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata["kernelspec"]["name"] = "python3-lab"
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}
    nbformat.write(nb, str(path))
    plan = runner.make_plan("smoke", ["00"], None, 2, wb / "x")
    assert plan[0].action == "reuse", plan[0].reason


def test_resuming_a_reused_notebook_leaves_the_earlier_run_untouched(wb):  # noqa: F811
    assert runner.run("smoke", only=["00"], out=wb / "a") == 0
    assert runner.run("smoke", only=["00"], out=wb / "b") == 0
    assert _entry(wb / "b")["status"] == "reused"
    before = {p.name: p.read_bytes() for p in (wb / "a" / "00_echo").iterdir()}
    record = json.loads((wb / "b" / "run.json").read_text())
    record["notebooks"]["00_echo"]["status"] = "interrupted"
    (wb / "b" / "run.json").write_text(json.dumps(record))
    assert runner.resume(wb / "b") == 0
    assert {p.name: p.read_bytes() for p in (wb / "a" / "00_echo").iterdir()} == before
    assert runner.make_plan("smoke", ["00"], None, 2, wb / "x")[0].action == "reuse"
