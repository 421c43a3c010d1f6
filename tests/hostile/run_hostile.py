"""Hostile-case harness for the run contract (issue 22): runs each case and prints counts by verdict.

    python tests/hostile/run_hostile.py [-v]

Verdicts: "clear refusal" (a WorkbookError naming what is wrong, nothing written or lost), "handled
correctly" (accepted and read as a person means it, or the right thing done), "traceback" (any other
exception), "silent accept" (accepted although it should have been refused, or read wrongly), "data loss"
(a file outside the run changed or vanished, or two runs shared a folder). Cases that need a workbook run
use a throwaway one (an echo notebook, a temporary params/, reports/ and cache), never the project's own.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from helpers.core import paths  # noqa: E402
from helpers.core.errors import WorkbookError  # noqa: E402

REFUSED, HANDLED, TRACEBACK, SILENT, LOST = ("clear refusal", "handled correctly", "traceback", "silent accept",
                                             "data loss")
CASES: list[tuple[str, str, Callable[[], str]]] = []


def case(category: str, name: str):
    def deco(fn):
        CASES.append((category, name, fn))
        return fn
    return deco


def refused(thunk: Callable[[], Any], intact: Callable[[], bool] = lambda: True) -> str:
    """A case that must be refused with a WorkbookError, leaving everything `intact` says."""
    try:
        thunk()
    except WorkbookError:
        return REFUSED if intact() else LOST
    except Exception:  # noqa: BLE001 - any other exception is the traceback verdict
        traceback.print_exc(limit=2, file=LOG)
        return TRACEBACK if intact() else LOST
    return SILENT if intact() else LOST


def handled(thunk: Callable[[], Any], ok: Callable[[Any], bool]) -> str:
    """A case that must be accepted and give a result `ok` approves of."""
    try:
        value = thunk()
    except WorkbookError as e:
        print(f"refused but should be accepted: {e}", file=LOG)
        return SILENT      # a refusal of valid input is not counted as a success
    except Exception:  # noqa: BLE001
        traceback.print_exc(limit=2, file=LOG)
        return TRACEBACK
    return HANDLED if ok(value) else SILENT


# ------------------------------------------------------------------ a throwaway workbook
ECHO = ("import json, pathlib, time\ntime.sleep(pause)\n"
        "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps({'s': s, 'n': n}))")
ECHO_PARAMS = ('out_dir = ""  # output folder\ns = "plain"  # a string\nn = 1  # a number; range 0..10\n'
               'd = {}  # a mapping\npause = 0.0  # seconds; range 0..30\n')
REAL = {"NOTEBOOKS": paths.NOTEBOOKS, "PARAMS": paths.PARAMS, "REPORTS": paths.REPORTS, "CACHE": paths.CACHE}


def fresh_workbook() -> Path:
    """A new temporary workbook with one notebook, 00_echo, made current for `paths`."""
    import nbformat

    root = Path(tempfile.mkdtemp(prefix="hostile-"))
    for d in ("notebooks", "params/smoke", "reports", "cache"):
        (root / d).mkdir(parents=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(ECHO_PARAMS)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# echo\n**Reads:** no other notebook's outputs."), p,
                nbformat.v4.new_code_cell(ECHO)]
    nbformat.write(nb, str(root / "notebooks" / "00_echo.ipynb"))
    paths.NOTEBOOKS, paths.PARAMS, paths.REPORTS, paths.CACHE = (root / "notebooks", root / "params",
                                                                 root / "reports", root / "cache")
    return root


def real_workbook() -> None:
    for k, v in REAL.items():
        setattr(paths, k, v)


def resolve(stem: str, item: str) -> dict[str, Any]:
    from helpers.workbook import runner

    real_workbook()
    from helpers.workbook.plan import stem_of

    return runner.resolve_parameters("smoke", runner.select_notebooks([stem]), [item])[stem_of(stem)]["resolved"]


# ------------------------------------------------------------------ 1. scalars as a person means them
SCALAR_REFUSED = [("00", "seed", v) for v in (
    "1:00", "0x10", "0o10", "0b1", "1_000", "9" * 5000, "1e3", "~", "null", "", "yes", "true", "-1", "4294967296",
    ".inf", ".nan", "[1]", "{a: 1}", "!!python/object/apply:os.system ['true']", "&a 1", "*a", "'5'", "5 #c",
    "[" * 3000 + "]" * 3000, "{[1]: 2}")] + [("00", "pairs_dir", v) for v in (
    "~", "null", "/x/my data #2", "[" * 3000, "{[1]: 2}", "x" * (2 << 20), "0x10", "!!binary aGVsbG8=")] + [
    ("00", "pos_rate", v) for v in ("1:00", "0x1", ".inf", "NaN", "1e999", "~", "2")] + [
    ("01", "use_wrap", v) for v in ("yes", "on", "1", "~", "'true'")]
SCALAR_HANDLED = [("00", "seed", "010", 10), ("00", "seed", "+7", 7), ("00", "pairs_dir", "'/x/my data #2'",
                                                                        "/x/my data #2"),
                  ("00", "pairs_dir", "a#b", "a#b"), ("00", "pairs_dir", "", ""), ("00", "pairs_dir", "yes", "yes"),
                  ("00", "pairs_dir", "1:00", "1:00"), ("00", "pairs_dir", "on", "on"),
                  ("00", "pos_rate", "1e-1", 0.1), ("00", "pos_rate", ".5", 0.5), ("00", "pos_rate", "1", 1.0),
                  ("01", "use_wrap", "True", True), ("01", "use_wrap", "false", False)]
for _nb, _key, _v in SCALAR_REFUSED:
    case("scalars", f"{_nb}.{_key}={_v[:24]!r}")(lambda nb=_nb, key=_key, v=_v: refused(
        lambda: resolve(nb, f"{nb}.{key}={v}")))
for _nb, _key, _v, _want in SCALAR_HANDLED:
    case("scalars", f"{_nb}.{_key}={_v!r} -> {_want!r}")(lambda nb=_nb, key=_key, v=_v, want=_want: handled(
        lambda: resolve(nb, f"{nb}.{key}={v}")[key], lambda got: got == want and type(got) is type(want)))

# ------------------------------------------------------------------ 2. nested values against the schema
NESTED_REFUSED = [
    '04.architectures={"stage1": {"recipie": "02_stage1"}, "stage2": {"recipe": "03_stage2"}}',
    '04.architectures={"stage1": {"recipe": "05_stacking"}}', '04.architectures={"stage1": "02_stage1"}',
    '04.architectures={"stage1": {"model": "no_such_model"}}', '04.architectures={"x": {}}',
    '04.architectures={"stage1": {"recipe": "02_stage1", "lerning_rate": 1}}',
    '04.grid={"stage1": "abc"}', '04.grid={"stage1": [1, 1]}', '04.grid={"stage1": []}', '04.grid={}',
    '04.grid={"stage1": [-1]}', '04.grid={"stage3": [1]}', '04.grid={"stage1": [true]}',
    "04.search_lr=[0.1]", "04.search_lr=[0.01, 0.001]", "04.search_weight_decay=[1e-4, 1e-4, 1e-3]",
    "04.search_lr=[]", "05.sources=[1, 2]", '05.sources=["02_stage1", "nope"]', '05.sources=[""]',
    '05.sources=["02_stage1", "02_stage1"]', '06.pretrained_files={"resnet18": 5}',
    '06.pretrained_files={"resnet18": "/no/such/weights.safetensors"}', '06.pretrained_files={"resnet18": ""}',
    "06.device=gpu0", "06.device=CPU", "06.device=cuda:x", "07.device=tpu", '06.tasks=["digit:classify:10"]',
    '06.tasks=["digit"]', '06.tasks=["a:binary:3"]', '06.tasks=["a:binary", "a:regression"]',
    "06.task_weights=[1.0]", '02.datasets=[""]', '02.datasets=["digit_pairs", "digit_pairs"]',
    '03.datasets=["  "]', '05.datasets=[1]', '07.learning_curve_fractions=[0.0, 0.5]',
    '07.learning_curve_fractions=[1.5]', '02.device=gpu']
NESTED_HANDLED = ['04.grid={"stage1": [1, 2]}', '04.search_lr=[0.0001, 0.1]', '05.sources=["02_stage1"]',
                  '06.device=cuda:0', '06.tasks=["digit:multiclass:10", "ink:regression", "slant:regression"]',
                  '04.architectures={"stage1": {"recipe": "02_stage1", "start": ""}, "stage2": {"recipe": "03_stage2"}}']
for _item in NESTED_REFUSED:
    case("nested", _item)(lambda item=_item: refused(lambda: resolve(item[:2], item)))
for _item in NESTED_HANDLED:
    case("nested", _item + " (valid)")(lambda item=_item: handled(lambda: resolve(item[:2], item), lambda r: True))


# ------------------------------------------------------------------ 3. profile files and names
PROFILE_FILES = {"5000-digit int": "n: " + "9" * 5000 + "\n", "3000-deep list": "d: " + "[" * 3000 + "]" * 3000,
                 "list as key": "d: {[1]: 2}\n", "hex": "n: 0x10\n", "base 60": "n: 1:00\n", "tag": "d: !!set {a}\n",
                 "anchor": "n: &a 1\n", "duplicate key": "n: 1\nn: 2\n", "top-level list": "- 1\n",
                 "null string": "s: ~\n", "unknown key": "nn: 1\n", "out_dir": "out_dir: /tmp/x\n",
                 "not utf-8": b"s: caf\xe9\n", "folder named like the file": None}
for _name, _body in PROFILE_FILES.items():
    def _profile_case(body=_body):
        from helpers.workbook import runner

        root = fresh_workbook()
        target = root / "params" / "smoke" / "00_echo.yaml"
        if body is None:
            target.mkdir()
        elif isinstance(body, bytes):
            target.write_bytes(body)
        else:
            target.write_text(body)
        return refused(lambda: runner.resolve_parameters("smoke", ["00_echo"]))
    case("profile files", _name)(_profile_case)

for _profile in ("smoke/../../../elsewhere/victim", "", "/tmp", "..", "../smoke", "smoke/", "nope", ".hidden",
                 "smoke\x00x", "a" * 300):
    def _name_case(profile=_profile):
        from helpers.workbook import runner

        root = fresh_workbook()
        victim = root / "elsewhere" / "victim"
        victim.mkdir(parents=True)
        (victim / "run.json").write_text("precious")
        intact = lambda: (victim / "run.json").read_text() == "precious" and not any((root / "reports").iterdir())  # noqa: E731
        return refused(lambda: runner.run(profile, only=["00"], use_cache=False), intact)
    case("profile names", repr(_profile[:40]))(_name_case)


# ------------------------------------------------------------------ 4. run folders and --resume
def _run(root: Path, out: str | None = "run", **kw) -> int:
    from helpers.workbook import runner

    return runner.run("smoke", only=["00"], out=(root / out) if out else None, **kw)


@case("run folders", "two claims of one --out at once")
def _two_outs():
    from helpers.workbook import claim

    root = fresh_workbook()
    results, barrier = [], threading.Barrier(2)

    def one():
        barrier.wait()
        try:
            results.append(claim.claim_new(root / "shared", exact=True))
        except WorkbookError as e:
            results.append(e)
    threads = [threading.Thread(target=one) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    won = [r for r in results if not isinstance(r, Exception)]
    [c.release() for c in won]
    return LOST if len(won) != 1 else (REFUSED if "pid" in str(next(r for r in results if isinstance(r, Exception)))
                                        else SILENT)


@case("run folders", "eight runs into reports/ in the same second")
def _same_second():
    from helpers.workbook import claim

    root = fresh_workbook()
    got, barrier = [], threading.Barrier(8)

    def one():
        barrier.wait()
        got.append(claim.claim_new(root / "reports" / "20260101-000000-smoke", exact=False))
    threads = [threading.Thread(target=one) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    [c.release() for c in got]
    return HANDLED if len({c.run_dir for c in got}) == 8 else LOST


@case("run folders", "--out onto a folder holding a file of one's own")
def _out_nonempty():
    root = fresh_workbook()
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("mine")
    return refused(lambda: _run(root, "mine"), lambda: [p.name for p in (root / "mine").iterdir()] == ["notes.txt"])


@case("run folders", "--out below a file")
def _out_file():
    root = fresh_workbook()
    (root / "f").write_text("x")
    return refused(lambda: _run(root, "f/run"), lambda: (root / "f").read_text() == "x")


@case("run folders", "a failed plan leaves no folder")
def _failed_plan():
    root = fresh_workbook()
    return refused(lambda: _run(root, None, sets=["00.n=99"]), lambda: not any((root / "reports").iterdir()))


def _interrupted(root: Path) -> Path:
    assert _run(root, use_cache=False) == 0
    record = json.loads((root / "run" / "run.json").read_text())
    record["notebooks"]["00_echo"]["status"] = "interrupted"
    (root / "run" / "run.json").write_text(json.dumps(record))
    return root / "run"


@case("resume", "a linked .ipynb")
def _resume_linked_file():
    from helpers.workbook import runner

    root = fresh_workbook()
    run_dir = _interrupted(root)
    victim = root / "victim.ipynb"
    victim.write_text("precious")
    (run_dir / "00_echo" / "00_echo.ipynb").unlink()
    (run_dir / "00_echo" / "00_echo.ipynb").symlink_to(victim)
    return refused(lambda: runner.resume(run_dir), lambda: victim.read_text() == "precious")


@case("resume", "a linked notebook folder")
def _resume_linked_folder():
    from helpers.workbook import runner

    root = fresh_workbook()
    run_dir = _interrupted(root)
    other = root / "other"
    other.mkdir()
    for n in ("config.json", "metrics.json", "answer.json"):
        (other / n).write_text("{}")
    shutil.rmtree(run_dir / "00_echo")
    (run_dir / "00_echo").symlink_to(other, target_is_directory=True)
    return refused(lambda: runner.resume(run_dir), lambda: len(list(other.iterdir())) == 3)


TAMPER = {"no profile": lambda r: r.pop("profile"), "threads text": lambda r: r.update(threads="abc"),
          "threads 0": lambda r: r.update(threads=0), "profile path": lambda r: r.update(profile="../../x"),
          "foreign run_id": lambda r: r.update(run_id="other"), "unknown notebook":
              lambda r: r["notebooks"].update({"99_x": {"status": "ran"}}),
          "bad status": lambda r: r["notebooks"]["00_echo"].update(status="pwned"),
          "overrides list": lambda r: r["notebooks"]["00_echo"].update(overrides=[1]),
          "overrides bad value": lambda r: r["notebooks"]["00_echo"].update(overrides={"n": 99}),
          "notebooks list": lambda r: r.update(notebooks=[])}
for _name, _fn in TAMPER.items():
    def _tamper_case(fn=_fn):
        from helpers.workbook import runner

        root = fresh_workbook()
        run_dir = _interrupted(root)
        record = json.loads((run_dir / "run.json").read_text())
        fn(record)
        (run_dir / "run.json").write_text(json.dumps(record))
        return refused(lambda: runner.resume(run_dir))
    case("resume", f"tampered run.json: {_name}")(_tamper_case)


@case("resume", "--threads it cannot honour")
def _resume_threads():
    from helpers.workbook import runner

    root = fresh_workbook()
    return refused(lambda: runner.resume(_interrupted(root), threads=7))


@case("resume", "--profile it cannot honour")
def _resume_profile():
    from helpers.workbook import runner

    root = fresh_workbook()
    (root / "params" / "other").mkdir()
    return refused(lambda: runner.resume(_interrupted(root), profile="other"))


@case("resume", "a folder held by a running process")
def _resume_held():
    from helpers.workbook import claim, runner

    root = fresh_workbook()
    run_dir = _interrupted(root)
    holder = claim.claim_existing(run_dir)
    try:
        return refused(lambda: runner.resume(run_dir))
    finally:
        holder.release()


@case("resume", "a folder that is no run")
def _resume_stranger():
    from helpers.workbook import runner

    root = fresh_workbook()
    (root / "stranger").mkdir()
    return refused(lambda: runner.resume(root / "stranger"), lambda: not any((root / "stranger").iterdir()))


@case("resume", "an interrupted run finishes")
def _resume_ok():
    from helpers.workbook import runner

    root = fresh_workbook()
    run_dir = _interrupted(root)
    return handled(lambda: runner.resume(run_dir), lambda code: code == 0 and json.loads(
        (run_dir / "run.json").read_text())["notebooks"]["00_echo"]["status"] == "ran")


# ------------------------------------------------------------------ 5. cached results
def _entry(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())["notebooks"]["00_echo"]


@case("cache", "edited metrics.json of an earlier result")
def _cache_edited():
    root = fresh_workbook()
    _run(root, "a")
    (root / "a" / "00_echo" / "metrics.json").write_text('{"s": "edited"}')
    _run(root, "b")
    return HANDLED if _entry(root / "b")["status"] == "ran" and "changed" in _entry(root / "b")["note"] else SILENT


@case("cache", "a deleted file of an earlier result")
def _cache_deleted():
    root = fresh_workbook()
    _run(root, "a")
    (root / "a" / "00_echo" / "00_echo.html").unlink()
    _run(root, "b")
    return HANDLED if _entry(root / "b")["status"] == "ran" else SILENT


@case("cache", "resuming a reused notebook leaves the run it came from alone")
def _cache_resume_reused():
    from helpers.workbook import runner

    root = fresh_workbook()
    _run(root, "a")
    _run(root, "b")
    before = {p.name: p.read_bytes() for p in (root / "a" / "00_echo").iterdir()}
    record = json.loads((root / "b" / "run.json").read_text())
    record["notebooks"]["00_echo"]["status"] = "interrupted"
    (root / "b" / "run.json").write_text(json.dumps(record))
    runner.resume(root / "b")
    return HANDLED if {p.name: p.read_bytes() for p in (root / "a" / "00_echo").iterdir()} == before else LOST


@case("cache", "an intact earlier result is reused")
def _cache_intact():
    root = fresh_workbook()
    _run(root, "a")
    _run(root, "b")
    return HANDLED if _entry(root / "b")["status"] == "reused" else SILENT


def _data_key_changes(setup: Callable[[Path], dict], change: Callable[[Path], None]) -> str:
    from helpers.workbook import cache

    root = fresh_workbook()
    p = setup(root)
    before = cache.data_hash(p, root / "run")
    change(root)
    return HANDLED if cache.data_hash(p, root / "run") != before else SILENT


def _linked_labels(root: Path) -> dict:
    (root / "real").mkdir()
    (root / "real" / "seq.json").write_text("1")
    (root / "jrdb").mkdir()
    (root / "jrdb" / "labels").symlink_to(root / "real", target_is_directory=True)
    return {"jrdb_root": str(root / "jrdb")}


def _big_file(root: Path) -> dict:
    (root / "data").mkdir()
    (root / "data" / "train.npz").write_bytes(bytes(17 * 2**20))
    return {"pairs_dir": str(root / "data")}


def _rewrite_same_size(root: Path) -> None:
    f = root / "data" / "train.npz"
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.seek(5_000_000)
        fh.write(b"\x01" * 300)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def _table(root: Path) -> dict:
    (root / "img").mkdir()
    for n in ("a.png", "b.png"):
        (root / "img" / n).write_bytes(n.encode())
    (root / "t.csv").write_text("image,subject,y\nimg/a.png,s1,1\nimg/b.png,s2,0\n")
    return {"table": str(root / "t.csv"), "image_col": "image", "image_root": ""}


case("cache", "labels/ behind a link edited")(lambda: _data_key_changes(
    _linked_labels, lambda r: (r / "real" / "seq.json").write_text("2")))
case("cache", "17 MB file rewritten, same size, mtime set back")(lambda: _data_key_changes(_big_file, _rewrite_same_size))
case("cache", "an image named by 06's table replaced")(lambda: _data_key_changes(
    _table, lambda r: (r / "img" / "b.png").write_bytes(b"new")))


@case("cache", "pairs_dir=/ is refused, not hashed")
def _cache_root():
    from helpers.workbook import cache

    return refused(lambda: cache.data_hash({"pairs_dir": "/"}, Path("/nonexistent-run")))


@case("cache", "reuse under umask 077")
def _cache_umask():
    root = fresh_workbook()
    old = os.umask(0o022)
    try:
        _run(root, "a")
        os.umask(0o077)
        _run(root, "b")
    finally:
        os.umask(old)
    modes = [f.stat().st_mode & 0o077 for f in (root / "b" / "00_echo").iterdir()]
    return HANDLED if _entry(root / "b")["status"] == "reused" and not any(modes) else SILENT


@case("cache", "notebook re-saved by nbformat (kernel name, language_info, key order)")
def _cache_resave():
    import nbformat
    from helpers.workbook import cache

    root = fresh_workbook()
    path = root / "notebooks" / "00_echo.ipynb"
    before = cache.notebook_hash(path)
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata["kernelspec"]["name"] = "lab-kernel"
    nb.metadata["language_info"] = {"name": "python", "version": "3.11"}
    nb.metadata = dict(reversed(list(nb.metadata.items())))
    nbformat.write(nb, str(path))
    return HANDLED if cache.notebook_hash(path) == before else SILENT


def _record_many(args) -> None:
    from helpers.workbook import cache

    cache_dir, worker = args
    paths.CACHE = Path(cache_dir)
    for i in range(50):
        folder = Path(cache_dir) / f"w{worker}" / str(i)
        folder.mkdir(parents=True)
        (folder / "m.json").write_text(str(i))
        cache.record_result("00_echo", cache.ResultKey(f"{worker}-{i}"), folder)


@case("cache", "two processes writing the index at once (2 x 50 entries)")
def _cache_index():
    import multiprocessing

    from helpers.workbook import cache

    root = fresh_workbook()
    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_record_many, [(str(root / "cache"), w) for w in range(2)])
    return HANDLED if len(cache.load_index()["results"]) == 100 else LOST


# ------------------------------------------------------------------ 6. data that cannot be numbers or boxes
def _jrdb_box(box: list) -> str:
    from helpers.data.jrdb import load_jrdb

    root = fresh_workbook() / "jrdb"
    shutil.copytree(ROOT / "tests" / "fixtures" / "jrdb_tiny", root)
    f = root / "labels" / "labels_2d_stitched" / "seq_a.json"
    obj = json.loads(f.read_text())
    obj["labels"]["000001.jpg"][1]["box"] = box
    f.write_text(json.dumps(obj))
    return refused(lambda: load_jrdb(root))


for _box in ([10, 20, 1e308, 30], [1e308, 20, 5, 30], [10, -1e300, 5, 30], [10, 20, 5, 2e6], [10, 20, 5, "30"],
             [10, 20, -5, 30], [10, 20, 5]):
    case("data", f"JRDB box {_box}")(lambda box=_box: _jrdb_box(box))


def _table_case(column: str, value: Any, tasks: list[str]) -> str:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from helpers.core.taskspec import make_task_specs
    from helpers.data.tables import load_task_table

    root = fresh_workbook()
    (root / "img").mkdir()
    rows = [{"image": f"img/{i}.png", "subject": f"s{i // 2}", "grade": i % 3, "age": 20.0 + i} for i in range(12)]
    rows[2][column] = value
    for r in rows:
        Image.fromarray(np.full((6, 6), 200, np.uint8)).save(root / r["image"])
    pd.DataFrame(rows).to_csv(root / "t.csv", index=False)
    return refused(lambda: load_task_table(root / "t.csv", make_task_specs(tasks)))


for _col, _val, _tasks in (("age", float("inf"), ["age:regression"]), ("age", "-inf", ["age:regression"]),
                           ("age", "1e999", ["age:regression"]), ("age", "old", ["age:regression"]),
                           ("grade", 10**12, ["grade:multiclass:10"]), ("grade", 10**12, ["grade:multiclass"]),
                           ("grade", 10, ["grade:multiclass:10"]), ("grade", "inf", ["grade:multiclass"])):
    case("data", f"06 table {_col}={_val!r} ({_tasks[0]})")(lambda c=_col, v=_val, t=_tasks: _table_case(c, v, t))


# ------------------------------------------------------------------ 7. commands on wrong input
def _cli(*argv: str) -> str:
    real_workbook()
    proc = subprocess.run([sys.executable, "-m", "helpers", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env={**os.environ, "PAIRWISE_CACHE": str(Path(tempfile.mkdtemp()))})
    if "Traceback" in proc.stderr:
        print(proc.stderr[-600:], file=LOG)
        return TRACEBACK
    return REFUSED if proc.returncode == 2 and "error:" in proc.stderr else SILENT


_LIST = Path(tempfile.mkdtemp()) / "list.ipynb"
_LIST.write_text("[1, 2]")
for _argv in (("strip", "README.md"), ("strip", str(_LIST)), ("strip", "/nonexistent.ipynb"), ("strip", "params"),
              ("figures", "params"), ("figures", "/nonexistent"), ("figures", "README.md"),
              ("status", "--profile", "smoke", "--only", "00", "--force", "05"),
              ("status", "--profile", "smoke", "--only", "00", "--set", "00_data_audit.pairs_dir=/"),
              ("run", "--resume", "params"), ("run", "--resume", "/nonexistent"), ("check", "--profile", ""),
              ("check", "--profile", "/tmp"), ("check", "--profile", "smoke", "--set", "00.seed=" + "9" * 5000),
              ("check", "--profile", "smoke", "--set", "00.n_show=" + "[" * 3000 + "]" * 3000),
              ("check", "--profile", "smoke", "--set", "00.pairs_dir={[1]: 2}")):
    case("commands", " ".join(a[:30] for a in _argv))(lambda argv=_argv: _cli(*argv))


# ------------------------------------------------------------------ the run
LOG = open(os.devnull, "w")


def main(argv: list[str]) -> int:
    global LOG
    if "-v" in argv:
        LOG = sys.stderr
    os.environ.setdefault("PAIRWISE_CACHE", tempfile.mkdtemp())
    counts: Counter = Counter()
    by_category: dict[str, Counter] = {}
    for category, name, fn in CASES:
        with open(os.devnull, "w") as null:
            old = sys.stdout, sys.stderr
            sys.stdout, sys.stderr = null, (LOG if LOG is not sys.stderr else old[1])
            try:
                verdict = fn()
            except Exception:  # noqa: BLE001 - a case whose own setup failed counts as a traceback
                sys.stdout, sys.stderr = old
                traceback.print_exc(limit=3)
                verdict = TRACEBACK
            finally:
                sys.stdout, sys.stderr = old
        counts[verdict] += 1
        by_category.setdefault(category, Counter())[verdict] += 1
        if verdict in (TRACEBACK, SILENT, LOST) or "-v" in argv:
            print(f"{verdict:<18} {category:<14} {name[:100]}")
    print(f"\n{len(CASES)} hostile cases")
    for category, c in by_category.items():
        print(f"  {category:<14} " + ", ".join(f"{v}: {n}" for v, n in sorted(c.items())))
    print("by verdict: " + ", ".join(f"{v}: {counts[v]}" for v in (REFUSED, HANDLED, TRACEBACK, SILENT, LOST)))
    return 0 if counts[TRACEBACK] + counts[SILENT] + counts[LOST] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
