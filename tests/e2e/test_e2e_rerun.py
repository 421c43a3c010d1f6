"""Re-running the real workbook: reuse, what a changed parameter re-runs, resume, the same numbers under
another CPU affinity."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import ROOT, read_metrics, run_helpers

pytestmark = pytest.mark.e2e
TIMING = ("_s", "seconds", "speedup", "_mb", "duration")


def _statuses(run_dir):
    return {k: v["status"] for k, v in json.loads((run_dir / "run.json").read_text())["notebooks"].items()}


def _numbers(metrics: dict) -> dict:
    """Everything but timings, which move between runs on a shared machine."""
    return {k: v for k, v in metrics.items() if not k.endswith(TIMING)}


def test_a_second_run_reuses_every_notebook_in_seconds(smoke_run, smoke_cache, tmp_path):
    t0 = time.perf_counter()
    proc = run_helpers(["run", "--profile", "smoke", "--out", str(tmp_path / "again")], smoke_cache)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert set(_statuses(tmp_path / "again").values()) == {"reused"}
    assert seconds < 60, f"a fully cached run took {seconds:.0f} s"
    for stem in _statuses(smoke_run):
        assert read_metrics(tmp_path / "again", stem) == read_metrics(smoke_run, stem)
    assert "reused from" in (tmp_path / "again" / "index.html").read_text()


def test_touching_03_reruns_03_and_what_reads_it(smoke_run, smoke_cache, tmp_path):
    status = run_helpers(["status", "--profile", "smoke", "--set", "03_stage2.log_every=2"], smoke_cache)
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line[:2].isdigit()}
    assert "its parameters changed" in lines["03_stage2"], status.stdout
    proc = run_helpers(["run", "--profile", "smoke", "--set", "03_stage2.log_every=2", "--out", str(tmp_path / "r")],
                       smoke_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = _statuses(tmp_path / "r")
    # 04 (it reruns 03's recipe over seeds), 05 (it stacks 03's predictions) and 07 (it diagnoses 03's
    # histories when present) read 03; nothing else does.
    assert {k for k, v in st.items() if v == "ran"} == {"03_stage2", "04_multi_seed", "05_stacking",
                                                        "07_plateau_diagnosis"}, st
    assert {k for k, v in st.items() if v == "reused"} == {"00_data_audit", "01_pair_sampling", "02_stage1",
                                                           "06_backbones"}
    index = (tmp_path / "r" / "index.html").read_text()
    assert "ran: its parameters changed" in index and "ran: an upstream result changed" in index


def test_resume_after_a_kill_during_02_gives_the_uninterrupted_numbers(smoke_run, smoke_cache, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PAIRWISE_CACHE": str(smoke_cache)}
    proc = subprocess.Popen([sys.executable, "-m", "helpers", "run", "--profile", "smoke", "--only", "02",
                             "--force", "02", "--out", str(out)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = out / "02_stage1" / "digit_pairs" / "last.pt"
    t0 = time.time()
    while not last.exists() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.1)
    assert last.exists(), "02 never wrote a checkpoint"
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=300)
    assert _statuses(out)["02_stage1"] == "interrupted"
    resumed = run_helpers(["run", "--resume", str(out)], smoke_cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _statuses(out)["02_stage1"] == "ran"
    assert _numbers(read_metrics(out, "02_stage1")) == _numbers(read_metrics(smoke_run, "02_stage1"))


def test_the_same_numbers_under_another_cpu_affinity(smoke_run, smoke_cache, tmp_path):
    one_core = run_helpers(["run", "--profile", "smoke", "--only", "02", "--force", "02", "--out",
                            str(tmp_path / "one")], smoke_cache, prefix=("taskset", "-c", "0"))
    assert one_core.returncode == 0, one_core.stderr[-3000:]
    assert _numbers(read_metrics(tmp_path / "one", "02_stage1")) == _numbers(read_metrics(smoke_run, "02_stage1"))
