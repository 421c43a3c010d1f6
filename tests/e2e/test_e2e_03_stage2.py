"""Notebook 03 in the smoke run: stage-2 metrics, consistency with notebook 02, checkpoint errors."""
import math

import pytest

from helpers.core.errors import WorkbookError
from helpers.data.pairs import load_pair_dataset
from helpers.stages.stage2 import find_stage1_checkpoint, load_stage1_model
from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e
STEM = "03_stage2"
DATASETS = ("digit_pairs", "scene_pairs")


@pytest.mark.parametrize("ds", DATASETS)
def test_metrics_keys_and_values(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    for k in ("test_acc", "test_acc_ci_low", "test_acc_ci_high", "test_f1", "stage1_test_acc", "amp_speedup"):
        assert f"{ds}.{k}" in m, k
    assert 0 <= m[f"{ds}.test_acc_ci_low"] <= m[f"{ds}.test_acc"] <= m[f"{ds}.test_acc_ci_high"] <= 1
    assert math.isfinite(m[f"{ds}.amp_speedup"]) and 0.02 < m[f"{ds}.amp_speedup"] < 50
    assert m[f"{ds}.transferred_tensors"] > 0          # stage 2 started from the stage-1 weights
    ref = m[f"{ds}.ablation.reference.test_acc"]
    variants = [k[:-len(".delta")] for k in m if k.startswith(f"{ds}.ablation.") and k.endswith(".delta")
                and ".reference." not in k]
    assert variants, "the ablation ran at least one variant"
    for v in variants:  # each delta is that variant's accuracy minus the reference's, on the same split
        assert m[f"{v}.delta"] == pytest.approx(m[f"{v}.test_acc"] - ref, abs=1e-12)
        assert 0 <= m[f"{v}.test_acc"] <= 1


@pytest.mark.parametrize("ds", DATASETS)
def test_stage1_accuracy_matches_notebook_02(smoke_run, ds):
    # 03 re-scores the checkpoint 02 scored (best_<monitor>.pt): same weights, same test split
    m2, m3 = read_metrics(smoke_run, "02_stage1"), read_metrics(smoke_run, STEM)
    assert m3[f"{ds}.stage1_test_acc"] == pytest.approx(m2[f"{ds}.test_acc"], abs=1e-9)


def test_type_classification_only_where_labelled(smoke_run):
    m = read_metrics(smoke_run, STEM)
    assert "digit_pairs.type_macro_f1" not in m
    assert 0 <= m["scene_pairs.type_macro_f1"] <= 1 and m["scene_pairs.type_n_test"] > 0
    folder = smoke_run / STEM / "scene_pairs" / "type"
    assert (folder / "evaluation_report.txt").is_file() and (folder / "history.json").is_file()
    assert (smoke_run / STEM / "scene_pairs" / "type_confusion_matrix.png").is_file()


@pytest.mark.parametrize("ds", DATASETS)
def test_outputs(smoke_run, ds):
    folder = smoke_run / STEM / ds
    for f in ("best_accuracy.pt", "best_loss.pt", "best_f1.pt", "final.pt", "history.json", "config.json",
              "evaluation_report.txt", "training_curves.png", "confusion_matrix.png", "probability_distributions.png",
              "ablation_curves.png", "predictions/stage2.npz"):
        assert (folder / f).is_file(), f


def test_missing_and_mismatched_checkpoint(smoke_run, tmp_path):

    with pytest.raises(WorkbookError, match="not found.*notebook 02"):
        find_stage1_checkpoint("digit_pairs", tmp_path)
    with pytest.raises(WorkbookError, match="not found"):
        find_stage1_checkpoint("digit_pairs", smoke_run, str(tmp_path / "nope.pt"))
    scene_ckpt = find_stage1_checkpoint("scene_pairs", smoke_run)
    digits = load_pair_dataset("digit_pairs", smoke_run)
    with pytest.raises(WorkbookError, match="does not match"):
        load_stage1_model(scene_ckpt, digits)
