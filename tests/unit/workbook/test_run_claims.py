"""Run folders are claimed atomically and held for the run's life; --resume claims them too and refuses
what it cannot honour; a profile is a name. Each test failed on f1e8d3d (issue 22, data loss)."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.core.errors import ParameterError, WorkbookError
from helpers.workbook import claim, runner
from tests.unit.workbook.test_run_contract import _nb

ROOT = Path(__file__).resolve().parents[3]
SLOW_ECHO = ("import json, pathlib, time\ntime.sleep(pause)\n"
             "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps({'s': s}))")
SLOW_PARAMS = 'out_dir = ""  # output folder\ns = "plain"  # a string\npause = 0.0  # seconds; range 0..30\n'


@pytest.fixture()
def wb(tmp_path, monkeypatch):
    """A throwaway workbook whose one notebook sleeps `pause` seconds and writes `s` to metrics.json."""
    for d in ("notebooks", "params/smoke", "reports", "cache"):
        (tmp_path / d).mkdir(parents=True)
    _nb(tmp_path / "notebooks" / "00_echo.ipynb", SLOW_ECHO, SLOW_PARAMS)
    monkeypatch.setattr(paths, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(paths, "PARAMS", tmp_path / "params")
    monkeypatch.setattr(paths, "REPORTS", tmp_path / "reports")
    monkeypatch.setattr(paths, "CACHE", tmp_path / "cache")
    return tmp_path


# A separate process running the workbook above (as `python -m helpers run` would, with its exit codes);
# argv: root, --out or "-", the --set value of s, and optionally a fixed start time.
DRIVER = """
import sys
from datetime import datetime
from pathlib import Path
from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.workbook import runner
root = Path(sys.argv[1])
paths.NOTEBOOKS, paths.PARAMS, paths.REPORTS = root / "notebooks", root / "params", root / "reports"
if len(sys.argv) > 4:
    class Fixed(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.fromisoformat(sys.argv[4])
    runner.datetime = Fixed
try:
    code = runner.run("smoke", ["00"], None if sys.argv[2] == "-" else sys.argv[2],
                      ["00.s=" + sys.argv[3], "00.pause=2"], use_cache=False)
except WorkbookError as e:
    print("error:", e, file=sys.stderr)
    code = 2
sys.exit(code)
"""


def _two_at_once(wb: Path, out: str, fixed: str | None = None) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PAIRWISE_CACHE": str(wb / "cache"), "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(wb), out, who, *([fixed] if fixed else [])],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("A", "B")]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=240), *p.communicate()) for p in procs]


def test_two_runs_into_one_out_folder_one_is_refused_naming_the_holder(wb):
    done = _two_at_once(wb, str(wb / "shared"))
    codes = sorted(p.returncode for p in done)
    assert codes == [0, 2], [p.stderr[-800:] for p in done]
    loser = next(p for p in done if p.returncode == 2)
    assert "Traceback" not in loser.stderr
    assert "shared" in loser.stderr and ("pid" in loser.stderr or "not an empty folder" in loser.stderr)
    winner = "A" if done[0].returncode == 0 else "B"
    metrics = json.loads((wb / "shared" / "00_echo" / "metrics.json").read_text())
    assert metrics == {"s": winner}
    assert json.loads((wb / "shared" / "run.json").read_text())["status"] == "ok"


def test_two_runs_into_reports_in_the_same_second_get_their_own_folders(wb):
    done = _two_at_once(wb, "-", fixed="2026-01-02T03:04:05")
    assert [p.returncode for p in done] == [0, 0], [p.stderr[-800:] for p in done]
    folders = sorted(p.name for p in (wb / "reports").iterdir() if p.is_dir() and not p.is_symlink())
    assert folders == ["20260102-030405-smoke", "20260102-030405-smoke-2"]
    written = sorted(json.loads((wb / "reports" / f / "00_echo" / "metrics.json").read_text())["s"] for f in folders)
    assert written == ["A", "B"]


def test_claims_race_in_threads_and_every_claim_gets_its_own_folder(tmp_path):
    barrier, got, errors = threading.Barrier(8), [], []

    def claim_one():
        barrier.wait()
        try:
            got.append(claim.claim_new(tmp_path / "reports" / "20260101-000000-smoke", exact=False))
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    threads = [threading.Thread(target=claim_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len({c.run_dir for c in got}) == 8
    for c in got:
        c.release()


def test_a_held_folder_is_refused_to_a_second_claim_with_pid_host_and_start(tmp_path):
    first = claim.claim_new(tmp_path / "run", exact=True)
    (tmp_path / "run" / "run.json").write_text("{}")
    with pytest.raises(WorkbookError, match=rf"pid {os.getpid()} on .*, started 20"):
        claim.claim_existing(tmp_path / "run")
    with pytest.raises(WorkbookError, match=rf"in use by pid {os.getpid()}|being written by pid {os.getpid()}"):
        claim.claim_new(tmp_path / "run", exact=True)
    first.release()
    claim.claim_existing(tmp_path / "run").release()        # free again once released (or its process died)


def test_resume_is_refused_while_the_run_is_still_going(wb):
    assert runner.run("smoke", only=["00"], out=wb / "run") == 0
    holder = claim.claim_existing(wb / "run")
    try:
        with pytest.raises(WorkbookError, match=f"in use by pid {os.getpid()}"):
            runner.resume(wb / "run")
    finally:
        holder.release()


# ---------------------------------------------------------------- --resume never writes through a link
def _interrupted_run(wb: Path) -> Path:
    assert runner.run("smoke", only=["00"], out=wb / "run") == 0
    record = json.loads((wb / "run" / "run.json").read_text())
    record["notebooks"]["00_echo"]["status"] = "interrupted"
    (wb / "run" / "run.json").write_text(json.dumps(record))
    return wb / "run"


def test_resume_refuses_a_linked_notebook_file_and_leaves_its_target_alone(wb):
    run_dir = _interrupted_run(wb)
    victim = wb / "victim.ipynb"
    victim.write_text("precious")
    (run_dir / "00_echo" / "00_echo.ipynb").unlink()
    (run_dir / "00_echo" / "00_echo.ipynb").symlink_to(victim)
    with pytest.raises(WorkbookError, match="is a symbolic link"):
        runner.resume(run_dir)
    assert victim.read_text() == "precious"


def test_resume_refuses_a_linked_notebook_folder_and_deletes_nothing_behind_it(wb):
    run_dir = _interrupted_run(wb)
    other = wb / "other_project"
    other.mkdir()
    for name in ("config.json", "metrics.json", "answer.json"):
        (other / name).write_text("{}")
    import shutil
    shutil.rmtree(run_dir / "00_echo")
    (run_dir / "00_echo").symlink_to(other, target_is_directory=True)
    with pytest.raises(WorkbookError, match="is a symbolic link"):
        runner.resume(run_dir)
    assert sorted(p.name for p in other.iterdir()) == ["answer.json", "config.json", "metrics.json"]


@pytest.mark.parametrize("tamper, match", [
    (lambda r: r.pop("profile"), "profile = 'None'"),
    (lambda r: r.update(threads="abc"), "threads = 'abc'"),
    (lambda r: r.update(profile="../../x"), "profile = '../../x'"),
    (lambda r: r.update(run_id="someone-else"), "run_id = 'someone-else'"),
    (lambda r: r["notebooks"].update({"99_ghost": {"status": "ran"}}), "notebooks key = '99_ghost'"),
    (lambda r: r["notebooks"]["00_echo"].update(status="pwned"), "status = 'pwned'"),
])
def test_resume_refuses_a_run_json_it_did_not_write(wb, tamper, match):
    run_dir = _interrupted_run(wb)
    record = json.loads((run_dir / "run.json").read_text())
    tamper(record)
    (run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(WorkbookError, match=match):
        runner.resume(run_dir)


def test_resume_refuses_threads_and_profile_it_cannot_honour(wb):
    run_dir = _interrupted_run(wb)
    with pytest.raises(WorkbookError, match=r"--threads 7 differs from the run's own \(2\)"):
        runner.resume(run_dir, threads=7)
    (wb / "params" / "other").mkdir()
    with pytest.raises(WorkbookError, match=r"--profile other differs from the run's own \(smoke\)"):
        runner.resume(run_dir, profile="other")
    assert runner.resume(run_dir, threads=2, profile="smoke") == 0     # the same values are no change


# ---------------------------------------------------------------- profiles are names
@pytest.mark.parametrize("profile", ["smoke/../../elsewhere/victim", "", "/tmp", "..", "../smoke", "smoke/", "nope"])
def test_a_profile_is_one_existing_name_under_params(wb, profile):
    (wb / "elsewhere" / "victim").mkdir(parents=True)
    with pytest.raises(ParameterError, match=r"unknown profile .*\(profiles: smoke\)"):
        runner.run(profile, only=["00"])
    with pytest.raises(ParameterError, match="unknown profile"):
        runner.check(profile, only=["00"])
    assert not any((wb / "elsewhere").rglob("*.json")) and not any((wb / "reports").iterdir())


def test_a_failed_plan_leaves_no_claimed_folder_behind(wb):
    with pytest.raises(ParameterError):
        runner.run("smoke", only=["00"], sets=["00.pause=99"])
    with pytest.raises(ParameterError):
        runner.run("smoke", only=["00"], out=wb / "new", sets=["00.pause=99"])
    assert not any((wb / "reports").iterdir()) and not (wb / "new").exists()


def test_a_running_notebook_is_shown_as_running(wb, monkeypatch):
    seen = {}
    original = runner.execute_notebook

    def spy(stem, overrides, nb_dir):
        seen["json"] = json.loads((nb_dir.parent / "run.json").read_text())["notebooks"][stem]["status"]
        seen["html"] = (nb_dir.parent / "index.html").read_text()
        return original(stem, overrides, nb_dir)

    monkeypatch.setattr(runner, "execute_notebook", spy)
    assert runner.run("smoke", only=["00"], out=wb / "run") == 0
    assert seen["json"] == "running" and ">running<" in seen["html"] and "not run" not in seen["html"]
    assert json.loads((wb / "run" / "run.json").read_text())["notebooks"]["00_echo"]["status"] == "ran"


def test_status_force_outside_the_selection_is_refused(wb):
    (wb / "notebooks" / "05_other.ipynb").write_bytes((wb / "notebooks" / "00_echo.ipynb").read_bytes())
    with pytest.raises(ParameterError, match=r"--force 05_other: not part of this run"):
        runner.status("smoke", only=["00"], force=["05"])


def test_a_lock_is_released_when_the_process_dies(tmp_path):
    code = ("import sys, os; from pathlib import Path; from helpers.workbook import claim; "
            "claim.claim_new(Path(sys.argv[1]), exact=True); os._exit(9)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], cwd=ROOT, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    (tmp_path / "run" / "run.json").write_text("{}")
    t0 = time.perf_counter()
    claim.claim_existing(tmp_path / "run").release()     # a SIGKILLed run stays resumable
    assert time.perf_counter() - t0 < 1
