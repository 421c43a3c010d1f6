"""Notebook 02 in the smoke run: files per dataset, metrics within tolerances, internal consistency."""
import json
import math

import numpy as np
import pytest

from helpers.core import paths
from helpers.data.digits import make_digit_pairs
from helpers.data.pairs import load_pair_folder, SPLIT_FILES
from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e
STEM = "02_stage1"
DATASETS = ("digit_pairs", "scene_pairs")
KEYS = ("test_acc", "test_acc_ci_low", "test_acc_ci_high", "test_f1", "val_acc", "baseline_logreg_acc",
        "baseline_lgbm_acc", "epochs_run", "train_samples_per_s")


def _params(run):
    return json.loads((run / "run.json").read_text())["notebooks"][STEM]["parameters"]


@pytest.mark.parametrize("ds", DATASETS)
def test_metrics_keys_and_intervals(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    for k in KEYS:
        assert f"{ds}.{k}" in m, k
    acc, lo, hi, n = m[f"{ds}.test_acc"], m[f"{ds}.test_acc_ci_low"], m[f"{ds}.test_acc_ci_high"], m[f"{ds}.n_test"]
    assert 0 <= lo <= acc <= hi <= 1
    # a Wilson 95% interval is about ±1.96·sqrt(p(1-p)/n) wide
    half = 1.96 * math.sqrt(max(acc * (1 - acc), 0.05) / n)
    assert 0.5 * half < (hi - lo) / 2 < 1.6 * half
    assert m[f"{ds}.train_samples_per_s"] > 10
    p = _params(smoke_run)
    assert m[f"{ds}.epochs_run"] == p["epochs"]  # smoke: no early stopping
    for k in ("baseline_logreg_acc", "baseline_lgbm_acc", "val_acc", "test_f1"):
        assert 0 <= m[f"{ds}.{k}"] <= 1


def test_digit_baselines_learn(smoke_run):
    m = read_metrics(smoke_run, STEM)
    # hand-made pair features separate same/different digits well above chance even on the smoke slice
    assert m["digit_pairs.baseline_logreg_acc"] > 0.7
    assert m["digit_pairs.baseline_lgbm_acc"] > 0.7
    assert m["digit_pairs.test_acc"] > 0.45


@pytest.mark.parametrize("ds", DATASETS)
def test_outputs_per_dataset(smoke_run, ds):
    folder = smoke_run / STEM / ds
    for f in ("best_accuracy.pt", "best_loss.pt", "best_f1.pt", "final.pt", "config.json", "history.json",
              "evaluation_report.txt", "training_curves.png", "confusion_matrix.png", "probability_distributions.png"):
        assert (folder / f).is_file(), f
    hist = json.loads((folder / "history.json").read_text())
    m = read_metrics(smoke_run, STEM)
    assert len(hist) == m[f"{ds}.epochs_run"]
    for k in ("epoch", "train_loss", "val_loss", "accuracy", "f1", "precision", "recall", "lr", "grad_norm",
              "epoch_time_s", "samples_per_s"):
        assert k in hist[0]
    report = (folder / "evaluation_report.txt").read_text()
    assert "ROC-AUC" in report and "threshold" in report and f"{m[f'{ds}.test_acc']:.4f}" in report
    card = json.loads((folder / "config.json").read_text())
    assert card["notebook"] == STEM and card["dataset"]["name"] == ds and "optimizer" in card["training"]


@pytest.mark.parametrize("ds", DATASETS)
def test_prediction_files_match_metrics(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    pred = smoke_run / STEM / ds / "predictions"
    for name, key in (("stage1", "test_acc"), ("baseline_logreg", "baseline_logreg_acc"),
                      ("baseline_lgbm", "baseline_lgbm_acc")):
        z = np.load(pred / f"{name}.npz")
        assert z["test_prob"].dtype == np.float64 and len(z["test_prob"]) == len(z["test_y"]) == m[f"{ds}.n_test"]
        assert ((z["test_prob"] >= 0.5) == (z["test_y"] == 1)).mean() == pytest.approx(m[f"{ds}.{key}"], abs=1e-12)
        assert len(z["val_prob"]) == len(z["val_y"])


def test_users_own_pair_folder_runs_through_audit_and_stage1(tmp_path):
    """The README's own-data path: a uint8 pair folder without ids, audited by 00 and trained by 02."""
    import subprocess
    import sys

    import numpy as np


    src = load_pair_folder(make_digit_pairs(seed=5, train_sources=150, val_sources=300,
                                                           n_pairs=(400, 200, 200), cache=tmp_path / "cache"))
    folder = tmp_path / "mypairs"
    folder.mkdir()
    for split, s in src.items():
        np.savez(folder / SPLIT_FILES[split], xa=(s.xa[:, 0] * 255).astype(np.uint8),
                 xb=(s.xb[:, 0] * 255).astype(np.uint8), y=s.y)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "helpers", "run", "--profile", "smoke", "--only", "00", "02",
                           "--out", str(out), "--set", f"00_data_audit.pairs_dir={folder}",
                           f"02_stage1.datasets=[{folder}]", "02_stage1.epochs=1"],
                          cwd=paths.PROJ_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    audit = json.loads((out / "00_data_audit" / "metrics.json").read_text())
    assert audit["leaked_sources"] is None and audit["n_train"] == 400  # no ids: the check says it cannot run
    m = json.loads((out / "02_stage1" / "metrics.json").read_text())
    assert 0.0 <= m["mypairs.test_acc"] <= 1.0 and m["mypairs.epochs_run"] == 1
    assert (out / "02_stage1" / "mypairs" / "predictions" / "stage1.npz").is_file()
