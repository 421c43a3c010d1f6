"""Notebook 02 in the smoke run: files per dataset, metrics within tolerances, internal consistency."""
import json
import math

import numpy as np
import pytest

from helpers.core import paths
from helpers.data.digits import make_digit_pairs
from helpers.data.pairs import load_pair_folder, SPLIT_FILES
from tests.e2e.conftest import check_recall_over_all_pairs, read_metrics

pytestmark = pytest.mark.e2e
STEM = "02_stage1"
DATASETS = ("digit_pairs", "scene_pairs")
KEYS = ("test_acc", "test_acc_ci_low", "test_acc_ci_high", "test_acc_ci_method", "test_f1", "val_acc",
        "baseline_logreg_acc", "baseline_lgbm_acc", "baseline_1nn_acc", "best_baseline", "vs_best_baseline_p",
        "epochs_run", "train_samples_per_s")
BASELINES = {"digit_pairs": ("svm_compare", "cnn_compare", "1nn", "logreg", "lgbm"),
             "scene_pairs": ("1nn", "logreg", "lgbm")}


def _params(run):
    return json.loads((run / "run.json").read_text())["notebooks"][STEM]["parameters"]


@pytest.mark.parametrize("ds", DATASETS)
def test_metrics_keys_and_unit_aware_intervals(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    for k in KEYS:
        assert f"{ds}.{k}" in m, k
    acc, lo, hi, n = m[f"{ds}.test_acc"], m[f"{ds}.test_acc_ci_low"], m[f"{ds}.test_acc_ci_high"], m[f"{ds}.n_test"]
    assert 0 <= lo <= acc <= hi <= 1
    # pairs share images (digits) or people (scenes): the interval over the independent unit is wider than a
    # Wilson interval that takes every pair as independent, and names its unit and method
    wilson_half = 1.96 * math.sqrt(max(acc * (1 - acc), 0.05) / n)
    assert (hi - lo) / 2 > (1.0 if ds == "digit_pairs" else 0.8) * wilson_half
    assert (hi - lo) / 2 < 6 * wilson_half
    method = m[f"{ds}.test_acc_ci_method"]
    # scenes resample sequences when the test split holds 10 or more (the default profile: 30), else person
    # pairs, conditional on those few sequences (the smoke profile: one test sequence); digits the two images
    if ds == "digit_pairs":
        assert "dyadic" in method and "source images" in method and m[f"{ds}.ci_unit"] == "source image"
    else:
        n_seq = m[f"{ds}.n_test_sequences"]
        assert n_seq >= 1 and "cluster bootstrap" in method
        assert m[f"{ds}.ci_unit"] == ("sequence" if n_seq >= 10 else "person pair")
        assert (m[f"{ds}.ci_conditional_on"] is None) == (n_seq >= 10)
        assert ("sequences" in method) and (n_seq >= 10 or "conditional on these" in method)
    assert m[f"{ds}.train_samples_per_s"] > 10
    p = _params(smoke_run)
    assert m[f"{ds}.epochs_run"] == p["epochs"]  # smoke: no early stopping
    for k in ("baseline_logreg_acc", "baseline_lgbm_acc", "baseline_1nn_acc", "val_acc", "test_f1",
              "best_baseline_acc"):
        assert 0 <= m[f"{ds}.{k}"] <= 1
    p_holm, p_raw = m[f"{ds}.vs_best_baseline_p"], m[f"{ds}.vs_best_baseline_p_unadjusted"]
    assert 0 <= p_raw <= p_holm <= 1
    assert m[f"{ds}.best_baseline"] in BASELINES[ds]
    diff = m[f"{ds}.test_acc"] - m[f"{ds}.best_baseline_acc"]
    assert m[f"{ds}.vs_best_baseline_diff"] == pytest.approx(diff, abs=1e-9)


def test_digit_baselines_learn(smoke_run):
    m = read_metrics(smoke_run, STEM)
    # hand-made pair features separate same/different digits well above chance even on the smoke slice
    assert m["digit_pairs.baseline_logreg_acc"] > 0.7
    assert m["digit_pairs.baseline_lgbm_acc"] > 0.7
    assert m["digit_pairs.test_acc"] > 0.45
    # a digit classifier applied to both images is the strong baseline: the SVM and 1-NN reach ~0.9 even here
    assert m["digit_pairs.baseline_svm_compare_acc"] > 0.85 and m["digit_pairs.baseline_1nn_acc"] > 0.8
    choice = m["digit_pairs.baseline_classify_compare_choice"]
    assert choice in ("svm_compare", "cnn_compare")
    assert m["digit_pairs.baseline_classify_compare_acc"] == m[f"digit_pairs.baseline_{choice}_acc"]
    assert m["digit_pairs.has_classes"] is True and m["scene_pairs.has_classes"] is False
    assert "scene_pairs.baseline_classify_compare_acc" not in m


def test_scene_recall_over_all_interacting_pairs(smoke_run):
    m = read_metrics(smoke_run, STEM)
    rec = m["scene_pairs.test_recall_sampled"]
    assert 0 <= m["scene_pairs.test_recall_sampled_ci_low"] <= rec <= m["scene_pairs.test_recall_sampled_ci_high"] <= 1
    check_recall_over_all_pairs(smoke_run, m)


def test_answer_and_full_table(smoke_run):
    folder = smoke_run / STEM
    answer = json.loads((folder / "answer.json").read_text())
    m = read_metrics(smoke_run, STEM)
    # the numbers and the verdict of the paired test, not the phrasing
    diff, p = m["digit_pairs.vs_best_baseline_diff"], m["digit_pairs.vs_best_baseline_p"]
    verdict = "not distinguishable" if p >= 0.05 else "stage 1 better" if diff > 0 else "stage 1 worse"
    assert f"{m['digit_pairs.test_acc']:.1%}" in answer["answer"] and f"{100 * diff:+.1f} percentage points" in answer["answer"]
    assert verdict in answer["answer"]
    assert 2 <= len(answer["headline"]) <= 3
    assert answer["headline"]["digit_pairs: stage 1 test acc"] == pytest.approx(m["digit_pairs.test_acc"], abs=1e-4)
    table = (folder / "stage1_vs_baselines.csv").read_text()
    assert "p (Holm)" in table and "verdict" in table
    assert (folder / "stage1_vs_baselines.png").is_file()
    html = (folder / f"{STEM}.html").read_text()
    assert html.index("Answer") < html.index("What does each dataset hold?")


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
    for name, key in [("stage1", "test_acc")] + [(f"baseline_{b}", f"baseline_{b}_acc") for b in BASELINES[ds]]:
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
    pred = out / "02_stage1" / "mypairs" / "predictions"
    for name in ("stage1", "baseline_1nn", "baseline_logreg", "baseline_lgbm"):
        assert (pred / f"{name}.npz").is_file(), name
    assert not (pred / "baseline_svm_compare.npz").exists()          # no ca/cb: no classify-then-compare
    assert m["mypairs.test_acc_ci_method"].startswith("row bootstrap") and m["mypairs.has_classes"] is False
    assert "need them and did not run" in (out / "02_stage1" / "02_stage1.html").read_text()


KINDS = ("geometry", "appearance", "both")


def test_scene_input_kinds_side_by_side(smoke_run):
    """Geometry, appearance and both trained on the same scene split, each with its interval over person pairs,
    compared by paired tests; the chosen kind is the best on validation; prediction files for notebook 05."""
    m = read_metrics(smoke_run, STEM)
    p = _params(smoke_run)
    assert m["scene_pairs.kinds_trained"] == ",".join(KINDS) and m["scene_pairs.n_images"] > 0
    assert m["scene_pairs.geometry.test_acc"] == m["scene_pairs.test_acc"]      # geometry is the stage-1 model
    for kind in KINDS:
        acc = m[f"scene_pairs.{kind}.test_acc"]
        assert 0 <= m[f"scene_pairs.{kind}.test_acc_ci_low"] <= acc <= m[f"scene_pairs.{kind}.test_acc_ci_high"] <= 1
        assert 0 <= m[f"scene_pairs.{kind}.minus_lgbm_p"] <= 1 and m[f"scene_pairs.{kind}.train_samples_per_s"] > 10
    for kind in ("appearance", "both"):
        assert m[f"scene_pairs.{kind}.epochs_run"] == p["crop_epochs"]          # smoke: no early stopping
        z = np.load(smoke_run / STEM / "scene_pairs" / "predictions" / f"stage1_{kind}.npz")
        assert ((z["test_prob"] >= 0.5) == (z["test_y"] == 1)).mean() == pytest.approx(
            m[f"scene_pairs.{kind}.test_acc"], abs=1e-12)
        hist = json.loads((smoke_run / STEM / "scene_pairs" / kind / "history.json").read_text())
        assert len(hist) == p["crop_epochs"]
    assert m["scene_pairs.both_minus_geometry"] == pytest.approx(
        m["scene_pairs.both.test_acc"] - m["scene_pairs.geometry.test_acc"], abs=1e-9)
    val = {k: m[f"scene_pairs.{k}.val_acc"] for k in KINDS}
    assert val[m["scene_pairs.best_kind"]] == max(val.values())
    table = (smoke_run / STEM / "scene_kinds.csv").read_text()
    assert "minus geometry" in table and "minus LightGBM" in table


def test_groups_from_all_candidate_pairs_scored_officially(smoke_run):
    m = read_metrics(smoke_run, STEM)
    assert m["scene_pairs.group_kind"] == m["scene_pairs.best_kind"]
    assert m["scene_pairs.group_method"] in ("components", "agglomerative")
    for k in ("group_f1", "group_precision", "group_recall", "group_ap", "group_threshold"):
        assert 0 <= m[f"scene_pairs.{k}"] <= 1, k
    for c in ("1", "2", "3", "4", "5plus"):
        v = m[f"scene_pairs.group_ap_size_{c}"]
        assert v is None or 0 <= v <= 1, c
    # every candidate pair of the test frames, not only the sampled ones
    assert m["scene_pairs.group_candidate_pairs_test"] > m["scene_pairs.n_test"]
    groups = smoke_run / STEM / "scene_pairs" / "groups"
    det, gt = (groups / "det_group.txt").read_text().splitlines(), (groups / "gt_group.txt").read_text().splitlines()
    assert det and len(det) == len(gt) == m["scene_pairs.group_n_people"]
    assert all(len(line.split(" ")) == 9 for line in det + gt)
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())["answer"]
    assert f"F1 {m['scene_pairs.group_f1']:.3f}" in answer
    html = (smoke_run / STEM / f"{STEM}.html").read_text()
    assert "Does appearance help?" in html and "56.4" in html and "not comparable" in html
