"""The scale path: stage-1 training under torchrun with two CPU processes (gloo)."""
import json
import os
import subprocess
import sys

from helpers.core import paths
from helpers.data.digits import make_digit_pairs



def test_two_processes_train_one_model_and_only_rank0_writes(tmp_path):
    folder = make_digit_pairs(seed=0, train_sources=60, val_sources=60, n_pairs=(256, 128, 128),
                                     cache=tmp_path / "cache")
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "helpers.distributed", "--pairs", str(folder), "--out", str(out),
                           "--set", "epochs=2", "width_mult=0.1", "feat_dim=16", "log_every=0", "patience=0"],
                          cwd=paths.PROJ_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["backend"] == "gloo" and m["epochs_run"] == 2
    assert 0.0 <= m["test_acc_ci_low"] <= m["test_acc"] <= m["test_acc_ci_high"] <= 1.0
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 2
    assert proc.stdout.count("test accuracy") == 1, "only rank 0 reports"
    assert not list(out.glob("*.tmp")), "no half-written files"


def test_bad_override_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "helpers.distributed", "--pairs", str(tmp_path), "--out",
                           str(tmp_path / "o"), "--set", "epoch=2"], cwd=paths.PROJ_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "did you mean 'epochs'" in proc.stderr
