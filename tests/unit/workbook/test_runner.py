"""The runner: validation before any kernel, the failure path, run.json/index.html, diff."""
import json
import subprocess
import sys

import nbformat
import pytest

from helpers.core import paths
from helpers.core.errors import ParameterError
from helpers.workbook import runner


def _nb(path, body: str, params_src='out_dir = ""  # output folder\nx = 1  # a number; range 0..10\n'):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}\n**Reads:** no other notebook's outputs.\n## Section"), p,
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))

@pytest.fixture()
def workbook(tmp_path, monkeypatch):
    """A throwaway workbook: notebooks 00 (ok), 01 (fails), 02 (would run after)."""
    nbs, prm, rep = tmp_path / "notebooks", tmp_path / "params", tmp_path / "reports"
    for d in (nbs, prm / "smoke", rep):
        d.mkdir(parents=True)
    ok = ("import json, pathlib\nprint('hello')\n"
          "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps({'x': x, 'twice': 2 * x}))")
    _nb(nbs / "00_first.ipynb", ok)
    _nb(nbs / "01_broken.ipynb", "print('before the error')\nraise RuntimeError('planted failure')")
    _nb(nbs / "02_after.ipynb", ok)
    (prm / "smoke" / "00_first.yaml").write_text("x: 3\n")
    monkeypatch.setattr(paths, "NOTEBOOKS", nbs)
    monkeypatch.setattr(paths, "PARAMS", prm)
    monkeypatch.setattr(paths, "REPORTS", rep)
    return tmp_path


def test_typo_in_params_file_stops_before_any_kernel(workbook):
    (workbook / "params" / "smoke" / "00_first.yaml").write_text("xx: 3\n")
    with pytest.raises(ParameterError, match=r"00_first.yaml: unknown parameter 'xx'.*did you mean 'x'"):
        runner.run("smoke", only=["00"], out=workbook / "run")
    assert not (workbook / "run").exists(), "nothing is written when validation fails"


def test_out_of_range_set_is_rejected(workbook):
    with pytest.raises(ParameterError, match=r"x = 11 is out of range: expected 0..10"):
        runner.resolve_parameters("smoke", ["00_first"], ["00.x=11"])
    with pytest.raises(ParameterError, match="unknown profile 'smok'.*did you mean 'smoke'"):
        runner.resolve_parameters("smok", ["00_first"])


def test_failure_is_reported_and_later_notebooks_not_run(workbook):
    earlier = workbook / "reports" / "earlier-run"
    earlier.mkdir()
    (earlier / "marker.txt").write_text("untouched")
    code = runner.run("smoke", out=workbook / "run", sets=["02.x=5"])
    assert code == 1
    run = json.loads((workbook / "run" / "run.json").read_text())
    status = {k: v["status"] for k, v in run["notebooks"].items()}
    assert status == {"00_first": "ran", "01_broken": "failed", "02_after": "not run"}
    assert run["notebooks"]["00_first"]["parameters"]["x"] == 3
    assert run["notebooks"]["02_after"]["overrides"] == {"x": 5}
    assert json.loads((workbook / "run" / "00_first" / "metrics.json").read_text()) == {"x": 3, "twice": 6}
    failure = json.loads((workbook / "run" / "01_broken" / "failure.json").read_text())
    assert failure["ename"] == "RuntimeError" and "planted failure" in failure["evalue"]
    assert failure["cell_index"] >= 2 and any("before the error" in line for line in failure["last_output_lines"])
    html = (workbook / "run" / "01_broken" / "01_broken.html").read_text()
    assert "planted failure" in html and "The cell that failed" in html
    index = (workbook / "run" / "index.html").read_text()
    assert "failed" in index and "not run" in index and "twice = 6" in index
    assert (earlier / "marker.txt").read_text() == "untouched" and sorted(p.name for p in earlier.iterdir()) == ["marker.txt"]
    assert not (workbook / "reports" / "latest").exists(), "latest points only at completed runs"


def test_successful_run_renders_self_contained_html_and_points_latest(workbook):
    assert runner.run("smoke", only=["00"]) == 0
    latest = workbook / "reports" / "latest"
    assert latest.is_symlink()
    html = (latest / "00_first" / "00_first.html").read_text()
    assert "wb-card" in html and 'class="wb-toc"' in html and "hello" in html
    assert "x = 1  # a number" not in html, "parameter cells are replaced by the card"
    for bad in ('<script src="http', "<script src=\"//", '<link href="http', "cdnjs", "unpkg.com"):
        assert bad not in html


def test_diff_lists_changed_parameters_and_metrics(workbook, capsys):
    assert runner.run("smoke", only=["00"], out=workbook / "a") == 0
    assert runner.run("smoke", only=["00"], out=workbook / "b", sets=["00.x=4"]) == 0
    rows = {k: (a, b) for k, a, b in runner.diff_runs(workbook / "a", workbook / "b")}
    assert rows["00_first.params.x"] == (3, 4)
    assert rows["00_first.metrics.twice"] == (6, 8)

def test_cli_check_reports_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "helpers", "check", "--profile", "smoke", "--only", "00",
                           "--set", "00_data_audit.pos_rat=0.3"], capture_output=True, text=True,
                          cwd=paths.PROJ_ROOT)
    assert proc.returncode == 2
    assert "unknown parameter 'pos_rat'" in proc.stderr and "did you mean 'pos_rate'" in proc.stderr


def test_a_report_opens_with_its_answer_and_the_index_shows_it(workbook):
    nb = nbformat.read(str(workbook / "notebooks" / "00_first.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("## A later section"))
    answer = nbformat.v4.new_code_cell(
        "import json, pathlib\n"
        "pathlib.Path(out_dir, 'answer.json').write_text(json.dumps({'answer': 'x is three.', 'headline': {'x': x}}))\n"
        "from IPython.display import Markdown\nMarkdown('## Answer\\n\\nx is three.')")
    answer.metadata["tags"] = ["answer"]
    nb.cells.append(answer)
    nbformat.write(nb, str(workbook / "notebooks" / "00_first.ipynb"))
    assert runner.run("smoke", only=["00"], out=workbook / "run") == 0
    html = (workbook / "run" / "00_first" / "00_first.html").read_text()
    body = html[html.index("</nav>"):] if "</nav>" in html else html
    assert body.index("x is three.") < body.index("A later section")
    executed = nbformat.read(str(workbook / "run" / "00_first" / "00_first.ipynb"), as_version=4)
    assert "answer" in executed.cells[1].metadata.get("tags", [])
    index = (workbook / "run" / "index.html").read_text()
    assert "x is three." in index and "<b>3</b>" in index


def test_parallel_notebooks_that_ask_for_more_threads_than_cores_get_a_warning():
    from helpers.workbook.runner import describe_oversubscription

    assert describe_oversubscription(1, 2, 2) == "" and describe_oversubscription(2, 1, 2) == ""
    text = describe_oversubscription(2, 2, 2)
    assert "asks for 4 threads on 2 core(s)" in text and "results do not change" in text
