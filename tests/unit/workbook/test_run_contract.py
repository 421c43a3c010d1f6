"""The run contract under hostile and careless input: no code runs from a parameter or a checkpoint,
every override is applied or refused, nothing is overwritten, every bad input gets a clear error.

One test group per finding; each failed on the code before the contract was tightened."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from helpers.core import io, paths
from helpers.core.errors import ParameterError, WorkbookError
from helpers.models.registry import create_model
from helpers.training.checkpoints import load_checkpoint
from helpers.training.config import TrainConfig
from helpers.training.loop import train_model
from helpers.training.tasks import BinaryTask
from helpers.workbook import params, runner
from helpers.workbook.notebook import check_injected, injected_names

ROOT = Path(__file__).resolve().parents[3]


def _nb(path, body: str, params_src: str):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}\n**Reads:** no other notebook's outputs."), p,
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, str(path))


ECHO = ("import json, pathlib\n"
        "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps({'s': s, 'd': d, 'n': n}))")
PARAMS = ('out_dir = ""  # output folder\ns = "plain"  # a string\nd = {}  # a mapping\n'
          'n = 1  # a number; range 0..10\n')


@pytest.fixture()
def workbook(tmp_path, monkeypatch):
    """A throwaway workbook: 00 echoes its parameters, 01 sleeps (for interrupts)."""
    nbs, prm, rep = tmp_path / "notebooks", tmp_path / "params", tmp_path / "reports"
    for d in (nbs, prm / "smoke", rep):
        d.mkdir(parents=True)
    _nb(nbs / "00_echo.ipynb", ECHO, PARAMS)
    _nb(nbs / "01_sleep.ipynb", "import pathlib, time\npathlib.Path(out_dir, 'started').write_text('1')\n"
                                "time.sleep(60)", 'out_dir = ""  # output folder\n')
    monkeypatch.setattr(paths, "NOTEBOOKS", nbs)
    monkeypatch.setattr(paths, "PARAMS", prm)
    monkeypatch.setattr(paths, "REPORTS", rep)
    return tmp_path


# ------------------------------------------------------------------ 1. parameter values never become code
def test_yaml_tags_and_anchors_are_refused_before_anything_runs(workbook):
    marker = workbook / "pwned"
    payload = f"!!pairs [{{a: '\"+__import__(\"os\").system(\"touch {marker}\")+\"'}}]"
    with pytest.raises(ParameterError, match=r"YAML tag '!!pairs'"):
        runner.resolve_parameters("smoke", ["00_echo"], [f"00.d={payload}"])
    (workbook / "params" / "smoke" / "00_echo.yaml").write_text(
        f"d: {{r: !!omap [{{k: '\"+__import__(\"os\").system(\"touch {marker}\")+\"'}}]}}\n")
    with pytest.raises(ParameterError, match=r"00_echo.yaml: YAML tag '!!omap'"):
        runner.resolve_parameters("smoke", ["00_echo"])
    for bad in ("!!binary aGVsbG8=", "!!python/object/apply:os.system ['touch x']", "&a [1]", "*a"):
        with pytest.raises(ParameterError, match="not allowed"):
            params.load_yaml(bad)
    assert not marker.exists()


def test_quotes_and_backslashes_in_values_reach_the_notebook_verbatim(workbook):
    marker = workbook / "pwned"
    evil = f'x\\"+__import__("os").system("touch {marker}")+\\"'      # ends papermill's own "..." literal early
    sets = [f"00.s={json.dumps(evil)}", f"00.d={json.dumps({'k': evil, 'nested': [evil, 1.5]})}"]
    assert runner.run("smoke", only=["00"], out=workbook / "run", sets=sets) == 0
    m = json.loads((workbook / "run" / "00_echo" / "metrics.json").read_text())
    assert m["s"] == evil and m["d"] == {"k": evil, "nested": [evil, 1.5]}
    assert not marker.exists()


def test_nested_values_are_checked_against_plain_data():
    spec = params.parse_parameters_source('d = {}  # a mapping\nl = []  # anything\nf = 1.0  # a number\n')
    with pytest.raises(ParameterError, match=r"d\['k'\]: .* is not a finite number"):
        params.validate(spec, {"d": {"k": float("nan")}}, "test")
    with pytest.raises(ParameterError, match="not plain data"):
        params.validate(spec, {"l": [("a", "b")]}, "test")
    with pytest.raises(ParameterError, match="key 1 is not a string"):
        params.validate(spec, {"d": {1: "x"}}, "test")


# ------------------------------------------------------------------ 2. checkpoints are never unpickled
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_holding_objects_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model_state_dict": {}, "x": _Evil(marker)}, evil)
    with pytest.raises(WorkbookError, match="weights-only checkpoint") as e:
        load_checkpoint(evil)
    assert "weights_only=False" not in str(e.value) and not marker.exists()
    # A poisoned last.pt in a reused output folder is refused the same way by the training loop.
    torch.save({"model_state_dict": {}, "fingerprint": _Evil(marker)}, tmp_path / "last.pt")
    x = torch.rand(8, 4)
    model = create_model("siamese_mlp", in_features=4, hidden=[4], feat_dim=4)
    with pytest.raises(WorkbookError, match="weights-only checkpoint"):
        train_model(model, BinaryTask(), (x, x, torch.ones(8)), (x, x, torch.ones(8)),
                    TrainConfig(epochs=1, batch_size=4, log_every=0), out_dir=tmp_path)
    assert not marker.exists()


# ------------------------------------------------------------------ 3. every override applied, or refused
def test_repeated_set_and_only_accumulate():
    proc = subprocess.run([sys.executable, "-m", "helpers", "check", "--profile", "smoke", "--only", "00",
                           "--only", "01", "--set", "00_data_audit.seed=7", "--set", "00_data_audit.n_show=2"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("01_pair_sampling: ok") for line in lines), "both --only values are kept"
    audit = next(line for line in lines if line.startswith("00_data_audit"))
    assert "seed=7" in audit and "n_show=2" in audit


def test_the_same_key_twice_is_an_error_naming_both(workbook):
    with pytest.raises(ParameterError, match=r"00_echo.n twice \('00.n=1' and '00_echo.n=2'\)"):
        runner.resolve_parameters("smoke", ["00_echo"], ["00.n=1", "00_echo.n=2"])


# ------------------------------------------------------------------ 4. a key twice in one profile file
def test_duplicate_keys_in_a_profile_file_are_refused(workbook):
    (workbook / "params" / "smoke" / "00_echo.yaml").write_text("n: 1\ns: a\nn: 2\n")
    with pytest.raises(ParameterError, match=r"00_echo.yaml: key 'n' is given twice \(line 1 and line 3\)"):
        runner.resolve_parameters("smoke", ["00_echo"])


# ------------------------------------------------------------------ 5. pre-flight holes
def test_preflight_refuses_nan_empty_lists_and_unselected_sets(workbook):
    with pytest.raises(ParameterError, match=r"--set .00.n=.nan.: value: nan is not a finite number"):
        runner.resolve_parameters("smoke", ["00_echo"], ["00.n=.nan"])
    with pytest.raises(ParameterError, match="notebook 00_echo is not part of this run"):
        runner.resolve_parameters("smoke", ["01_sleep"], ["00.n=3"])
    with pytest.raises(ParameterError, match=r"--set 00_echo.n: n = 11 is out of range"):
        runner.resolve_parameters("smoke", ["01_sleep"], ["00.n=11"])      # validated although not selected
    with pytest.raises(ParameterError, match=r"--set 00_echo.out_dir: out_dir is set by the runner"):
        runner.resolve_parameters("smoke", ["00_echo"], ["00.out_dir=x"])
    plan = runner.resolve_parameters("smoke", ["00_echo"], ["00.s="])   # an empty value is the empty string
    assert plan["00_echo"]["resolved"]["s"] == ""


def test_empty_list_and_bad_profile_encoding(workbook):
    spec = params.parse_parameters_source('datasets = ["a"]  # names\nlayers = [2, 2]  # blocks; range 1..16\n')
    with pytest.raises(ParameterError, match=r"datasets = \[\] is an empty list"):
        params.validate(spec, {"datasets": []}, "test")
    with pytest.raises(ParameterError, match=r"layers = \[\] is an empty list"):
        params.validate(spec, {"layers": []}, "test")
    (workbook / "params" / "smoke" / "00_echo.yaml").write_bytes(b"s: caf\xe9\n")
    with pytest.raises(ParameterError, match=r"00_echo.yaml: not UTF-8 text"):
        runner.resolve_parameters("smoke", ["00_echo"])


def test_threads_must_be_positive():
    proc = subprocess.run([sys.executable, "-m", "helpers", "run", "--profile", "smoke", "--threads", "-1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "--threads: -1 threads: expected 1 or more" in proc.stderr


# ------------------------------------------------------------------ 6. the notebook refuses undeclared names
def test_the_notebook_refuses_names_it_does_not_declare():
    spec = params.parse_parameters_source('out_dir = ""  # folder\nseed = 0  # seed\n', "00_x")
    ns = {"In": ["", "# Parameters\nseedd = 3\nout_dir = 'x'\n", "import helpers"]}
    assert injected_names(ns) == ["seedd", "out_dir"]
    with pytest.raises(ParameterError, match=r"papermill was given parameter 'seedd'.*did you mean 'seed'"):
        check_injected(spec, ns)
    check_injected(spec, {"In": ["", "seed = 3"]})            # no injected cell: JupyterLab, nothing to check


def test_papermill_run_directly_with_a_typo_fails(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "papermill", "notebooks/00_data_audit.ipynb",
                           str(tmp_path / "out.ipynb"), "-p", "seedd", "3", "-p", "out_dir", str(tmp_path / "o"),
                           "--log-level", "ERROR"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    assert "papermill was given parameter 'seedd'" in proc.stderr + proc.stdout


# ------------------------------------------------------------------ 7. nothing overwritten
def test_out_onto_an_existing_folder_is_refused_and_left_alone(workbook):
    mine = workbook / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    with pytest.raises(WorkbookError, match="already exists and is not an empty folder"):
        runner.run("smoke", only=["00"], out=mine)
    assert sorted(p.name for p in mine.iterdir()) == ["index.html"]
    assert (mine / "index.html").read_text() == "my own page"


# ------------------------------------------------------------------ 8. outputs stay inside the run folder
def test_output_names_are_safe_unique_slugs():
    assert paths.safe_slug("../../../../x") == "x" and paths.safe_slug("..") == "unnamed"
    assert paths.unique_slugs(["x", "../x", "x"]) == ["x", "x-2", "x-3"]
    assert not paths.inside("/a/b", "/a/b/../c") and paths.inside("/a/b", "/a/b/c/d")


def test_context_paths_cannot_leave_the_output_folder(tmp_path):
    from helpers.workbook.notebook import Context

    ctx = Context(stem="00_x", params={}, out_dir=tmp_path / "out", device="cpu", profile="test")
    (tmp_path / "out").mkdir()
    assert ctx.path("a", "b.png").parent.is_dir()
    with pytest.raises(WorkbookError, match="leaves the output folder"):
        ctx.path("..", "..", "x.png")


def test_grid_labels_cannot_escape_the_run_folder(tmp_path):
    from helpers.stages.multiseed import make_grid

    specs = make_grid({"../../../../x": [1]}, "digit_pairs", tmp_path, tmp_path / "04",
                      architectures={"../../../../x": {"model": "siamese_resnet", "threshold": 0.5}})
    for s in specs:
        assert paths.inside(tmp_path / "04", s.out_dir) and paths.inside(tmp_path / "04", s.predictions_path)


# ------------------------------------------------------------------ 9. files respect the umask
def test_written_files_and_folders_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = io.atomic_write_text(tmp_path / "a.txt", "x")
        with io.atomic_folder(tmp_path / "folder") as tmp:
            (tmp / "b").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE(f.stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


# ------------------------------------------------------------------ 10. clear errors (runner side)
def test_diff_of_a_malformed_run_record_is_a_clear_error(tmp_path):
    for name, text in (("a", "[1, 2]"), ("b", '{"notebooks": {"00": 1}}')):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "helpers", "diff", str(tmp_path / "a"), str(tmp_path / "b")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "not a run record" in proc.stderr and "Traceback" not in proc.stderr


def test_an_unwritable_out_is_a_clear_error(workbook):
    (workbook / "a_file").write_text("x")
    with pytest.raises(WorkbookError, match="cannot write the run folder"):
        runner.run("smoke", only=["00"], out=workbook / "a_file" / "run")


def test_a_notebook_folder_that_cannot_take_failure_json_still_gives_a_record(workbook, monkeypatch):
    _nb(workbook / "notebooks" / "00_echo.ipynb", "raise RuntimeError('planted')", PARAMS)
    original = io.atomic_write_json

    def refuse_failure_json(path, obj):   # as in a read-only notebook folder (root ignores chmod)
        if Path(path).name == "failure.json":
            raise PermissionError(13, "Permission denied")
        return original(path, obj)

    monkeypatch.setattr(io, "atomic_write_json", refuse_failure_json)
    assert runner.run("smoke", only=["00"], out=workbook / "run") == 1
    entry = json.loads((workbook / "run" / "run.json").read_text())["notebooks"]["00_echo"]
    assert entry["status"] == "failed" and "planted" in entry["error"]
    assert "Permission denied" in entry["failure_json_error"]


# ------------------------------------------------------------------ 13. interrupted runs say so
def test_sigterm_marks_the_running_notebook_interrupted(workbook):
    script = f"""
import sys
from pathlib import Path
from helpers.core import paths
paths.NOTEBOOKS, paths.PARAMS, paths.REPORTS = Path({str(workbook / 'notebooks')!r}), Path({str(workbook / 'params')!r}), Path({str(workbook / 'reports')!r})
from helpers.__main__ import main
sys.exit(main(["run", "--profile", "smoke", "--only", "01", "--out", {str(workbook / 'run')!r}]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    started = workbook / "run" / "01_sleep" / "started"
    t0 = time.time()
    while not started.exists() and time.time() - t0 < 120:
        time.sleep(0.2)
    assert started.exists(), "the notebook did not start"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run = json.loads((workbook / "run" / "run.json").read_text())
    entry = run["notebooks"]["01_sleep"]
    assert run["status"] == "interrupted" and entry["status"] == "interrupted"
    assert entry["interrupted_at"] and "SIGTERM" in entry["error"] and run["finished"]
