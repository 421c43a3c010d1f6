"""Re-running only what changed: the notebook graph, cached results, status, --jobs, --resume, threads."""
import json
import os
from pathlib import Path

import nbformat
import pytest

from helpers.core import paths
from helpers.core.errors import ParameterError, WorkbookError
from helpers.workbook import cache, graph, runner
from helpers.workbook.plan import list_notebooks


def _nb(path, body: str, reads: str = "no other notebook's outputs.", params_src='out_dir = ""  # folder\nx = 1  # a number; range 0..10\n'):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}\n**Reads:** {reads}"), p, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


WRITE = ("import json, os, pathlib\n"
         "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps({'x': x, 'threads': os.environ.get('OMP_NUM_THREADS'),"
         " 'torch_threads_env': os.environ.get('PAIRWISE_THREADS')}))\n")
READ_00 = WRITE + "assert (pathlib.Path(out_dir).parent / '00_a' / 'metrics.json').is_file()\n"


@pytest.fixture()
def workbook(tmp_path, monkeypatch):
    """00_a <- 01_b <- 02_c (a chain) and 03_d (independent)."""
    nbs, prm, rep = tmp_path / "notebooks", tmp_path / "params", tmp_path / "reports"
    for d in (nbs, prm / "smoke", rep):
        d.mkdir(parents=True)
    _nb(nbs / "00_a.ipynb", WRITE)
    _nb(nbs / "01_b.ipynb", READ_00, reads="the outputs of 00_a.")
    _nb(nbs / "02_c.ipynb", WRITE, reads="the outputs of 01_b.")
    _nb(nbs / "03_d.ipynb", WRITE)
    monkeypatch.setattr(paths, "NOTEBOOKS", nbs)
    monkeypatch.setattr(paths, "PARAMS", prm)
    monkeypatch.setattr(paths, "REPORTS", rep)
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    # The key hashes the helpers package; pin it so that edits elsewhere during the test cannot matter.
    monkeypatch.setattr(cache, "helpers_hash", lambda: "pinned")
    return tmp_path


def _statuses(run_dir: Path) -> dict[str, str]:
    return {k: v["status"] for k, v in json.loads((run_dir / "run.json").read_text())["notebooks"].items()}


def test_the_real_notebooks_declare_what_they_read():
    g = graph.make_graph(list_notebooks())
    assert g["00_data_audit"].required == () and g["06_backbones"].required == ()
    assert set(g["03_stage2"].required) == {"00_data_audit", "01_pair_sampling", "02_stage1"}
    assert graph.with_needs(["05_stacking"], g) == ["00_data_audit", "01_pair_sampling", "02_stage1", "03_stage2",
                                                     "04_multi_seed", "05_stacking"]
    assert graph.with_needs(["07_plateau_diagnosis"], g) == ["07_plateau_diagnosis"]   # its reads are optional


def test_only_means_with_what_it_needs_and_order_follows_reads(workbook):
    assert [j.stem for j in runner.make_plan("smoke", ["02"], None, 2, workbook / "r")] == ["00_a", "01_b", "02_c"]
    _nb(workbook / "notebooks" / "00_a.ipynb", WRITE, reads="the outputs of 02_c.")
    with pytest.raises(ParameterError, match="form a circle"):
        runner.make_plan("smoke", ["02"], None, 2, workbook / "r")


def test_a_notebook_without_a_reads_line_is_an_error(workbook):
    nb = nbformat.read(str(workbook / "notebooks" / "03_d.ipynb"), as_version=4)
    nb.cells[0].source = "# 03_d"
    nbformat.write(nb, str(workbook / "notebooks" / "03_d.ipynb"))
    with pytest.raises(WorkbookError, match=r"no '\*\*Reads:\*\*' line"):
        runner.make_plan("smoke", None, None, 2, workbook / "r")


def test_an_undeclared_read_fails_the_notebook(workbook, tmp_path):
    out = tmp_path / "nb"
    out.mkdir()
    (out / "reads.json").write_text('["00_a", "01_b"]')
    msg = graph.check_reads("02_c", out, graph.Reads(("01_b",), ()))
    assert "read the outputs of 00_a but its '**Reads:**' line does not declare" in msg
    assert graph.check_reads("02_c", out, graph.Reads(("01_b",), ("00_a",))) is None


def test_a_second_run_reuses_everything_and_leaves_the_first_run_whole(workbook):
    first, second = workbook / "reports" / "one", workbook / "reports" / "two"
    assert runner.run("smoke", out=first) == 0
    before = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file() and p.name != "run.json"}
    assert runner.run("smoke", out=second) == 0
    assert set(_statuses(second).values()) == {"reused"}
    assert all(p.stat().st_mtime_ns == t for p, t in before.items()), "the earlier run is not touched"
    m1, m2 = (json.loads((d / "00_a" / "metrics.json").read_text()) for d in (first, second))
    assert m1 == m2 and os.path.samefile(first / "00_a" / "metrics.json", second / "00_a" / "metrics.json")
    index = (second / "index.html").read_text()
    assert "reused" in index and "one" in index


def test_changing_a_parameter_reruns_that_notebook_and_what_reads_it(workbook, capsys):
    assert runner.run("smoke", out=workbook / "reports" / "one") == 0
    capsys.readouterr()
    runner.status("smoke", sets=["01.x=4"])
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert " reuse " in lines["00_a"] and " reuse " in lines["03_d"]
    assert "its parameters changed" in lines["01_b"] and "an upstream result changed" in lines["02_c"]
    assert runner.run("smoke", out=workbook / "reports" / "two", sets=["01.x=4"]) == 0
    st = _statuses(workbook / "reports" / "two")
    assert st == {"00_a": "reused", "01_b": "ran", "02_c": "ran", "03_d": "reused"}
    entry = json.loads((workbook / "reports" / "two" / "run.json").read_text())["notebooks"]["01_b"]
    assert entry["note"] == "ran: its parameters changed"


def test_force_and_no_cache(workbook):
    assert runner.run("smoke", out=workbook / "reports" / "one") == 0
    assert runner.run("smoke", out=workbook / "reports" / "two", force=["03"]) == 0
    assert _statuses(workbook / "reports" / "two")["03_d"] == "ran"
    assert runner.run("smoke", out=workbook / "reports" / "three", use_cache=False) == 0
    assert set(_statuses(workbook / "reports" / "three").values()) == {"ran"}


def test_a_result_whose_folder_is_gone_is_not_reused(workbook):
    import shutil

    assert runner.run("smoke", only=["00"], out=workbook / "reports" / "one") == 0
    shutil.rmtree(workbook / "reports" / "one")
    assert runner.run("smoke", only=["00"], out=workbook / "reports" / "two") == 0
    assert _statuses(workbook / "reports" / "two") == {"00_a": "ran"}


def test_resume_keeps_finished_notebooks_and_reruns_the_rest_in_place(workbook):
    flag = workbook / "allow"
    _nb(workbook / "notebooks" / "02_c.ipynb", WRITE + f"assert pathlib.Path({str(flag)!r}).exists(), 'not yet'\n",
        reads="the outputs of 01_b.")
    run_dir = workbook / "reports" / "one"
    assert runner.run("smoke", out=run_dir) == 1
    assert _statuses(run_dir) == {"00_a": "ran", "01_b": "ran", "02_c": "failed", "03_d": "not run"}
    flag.write_text("ok")
    assert runner.resume(run_dir) == 0
    record = json.loads((run_dir / "run.json").read_text())
    assert {k: v["status"] for k, v in record["notebooks"].items()} == {"00_a": "ran", "01_b": "ran", "02_c": "ran",
                                                                          "03_d": "ran"}
    assert record["status"] == "ok" and record["resumed"] and not (run_dir / "02_c" / "failure.json").exists()


def test_jobs_run_independent_notebooks_and_every_kernel_gets_the_same_threads(workbook, capfd):
    assert runner.run("smoke", out=workbook / "reports" / "one", jobs=2, threads=3) == 0
    for stem in ("00_a", "01_b", "02_c", "03_d"):
        m = json.loads((workbook / "reports" / "one" / stem / "metrics.json").read_text())
        assert m["threads"] == "3" and m["torch_threads_env"] == "3"
    err = capfd.readouterr().err
    assert sum(line.startswith(("00_a", "01_b", "02_c", "03_d")) for line in err.splitlines()) == 4
    assert json.loads((workbook / "reports" / "one" / "run.json").read_text())["threads"] == 3


def test_the_default_thread_count_does_not_depend_on_the_machine(workbook):
    assert runner.run("smoke", only=["00"], out=workbook / "reports" / "one") == 0
    assert json.loads((workbook / "reports" / "one" / "00_a" / "metrics.json").read_text())["threads"] == "2"
