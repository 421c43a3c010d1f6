"""Notebook 03 in the smoke run: stage-2 metrics over seeds, the matched-budget control, 02's strongest
baseline, the type head next to LightGBM, the ablation over seeds, consistency with notebook 02, checkpoint
errors, and text that says what ran."""
import json
import math

import numpy as np
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.pairs import load_pair_dataset
from helpers.evaluation.type_head import count_type_groups
from helpers.stages.stage2 import find_stage1_checkpoint, load_stage1_model
from tests.e2e.conftest import check_recall_over_all_pairs, read_metrics

pytestmark = pytest.mark.e2e
STEM = "03_stage2"
DATASETS = ("digit_pairs", "scene_pairs")
SMOKE_SEEDS = 2          # params/smoke/03_stage2.yaml


@pytest.mark.parametrize("ds", DATASETS)
def test_metrics_keys_and_values(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    for k in ("test_acc", "test_acc_ci_low", "test_acc_ci_high", "test_f1", "stage1_test_acc", "amp_speedup",
              "n_seeds", "test_acc_mean", "test_acc_sd", "stage2_vs_matched_stage1_p"):
        assert f"{ds}.{k}" in m, k
    assert 0 <= m[f"{ds}.test_acc_ci_low"] <= m[f"{ds}.test_acc"] <= m[f"{ds}.test_acc_ci_high"] <= 1
    assert math.isfinite(m[f"{ds}.amp_speedup"]) and 0.02 < m[f"{ds}.amp_speedup"] < 50
    assert m[f"{ds}.transferred_tensors"] > 0          # stage 2 started from the stage-1 weights
    assert m[f"{ds}.test_auc"] > 0.7                    # a model that learnt nothing sits near 0.5


@pytest.mark.parametrize("ds", DATASETS)
def test_stage2_is_trained_over_seeds(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    assert m[f"{ds}.n_seeds"] == SMOKE_SEEDS
    # With two seeds, the first seed's accuracy lies sd/sqrt(2) from their mean (sample sd): the mean and
    # sd really are over two runs, one of them the checkpointed run whose test_acc is reported.
    assert abs(m[f"{ds}.test_acc"] - m[f"{ds}.test_acc_mean"]) == pytest.approx(m[f"{ds}.test_acc_sd"] / math.sqrt(2),
                                                                                abs=1e-9)
    assert 1 <= m[f"{ds}.epochs_run_mean"] <= 3                     # the smoke cap


@pytest.mark.parametrize("ds", DATASETS)
def test_matched_budget_comparison(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    d = m[f"{ds}.stage2_vs_matched_stage1_diff"]
    assert d == pytest.approx(m[f"{ds}.test_acc_mean"] - m[f"{ds}.matched_stage1_test_acc_mean"], abs=1e-9)
    assert m[f"{ds}.stage2_vs_matched_stage1_ci_low"] <= d <= m[f"{ds}.stage2_vs_matched_stage1_ci_high"]
    assert 0 < m[f"{ds}.stage2_vs_matched_stage1_p"] <= 1              # Holm-adjusted, never 0
    # The continued stage 1 trained on: it is no worse than the checkpoint it started from by much.
    assert m[f"{ds}.matched_stage1_test_acc_mean"] > m[f"{ds}.stage1_test_acc"] - 0.1
    matched = json.loads((smoke_run / STEM / ds / "matched_stage1" / "history.json").read_text())
    first = json.loads((smoke_run / STEM / ds / "history.json").read_text())
    assert len(matched) == len(first)                                 # the same epochs as stage 2, first seed


def test_scene_recall_over_all_interacting_pairs(smoke_run):
    """Like 02, 03 counts the interacting test pairs the sampling dropped as misses (first seed)."""
    m = read_metrics(smoke_run, STEM)
    z = np.load(smoke_run / STEM / "scene_pairs" / "predictions" / "stage2.npz")
    pos = z["test_y"] == 1
    assert m["scene_pairs.test_recall_sampled"] == pytest.approx(float((z["test_prob"][pos] >= 0.5).mean()), abs=1e-9)
    assert "digit_pairs.test_recall_sampled" not in m                  # not scene data
    check_recall_over_all_pairs(smoke_run, m)


def _val_acc(z, thr=0.5):
    return float(((z["val_prob"] >= thr) == (z["val_y"] == 1)).mean())


@pytest.mark.parametrize("ds", DATASETS)
def test_strongest_baseline_is_chosen_on_validation(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    files = sorted((smoke_run / "02_stage1" / ds / "predictions").glob("baseline_*.npz"))
    assert files, "notebook 02 wrote baseline prediction files"
    loaded = {f.stem.removeprefix("baseline_"): dict(np.load(f)) for f in files}
    best = max(loaded, key=lambda n: _val_acc(loaded[n]))
    assert m[f"{ds}.best_baseline"] == best
    z = loaded[best]
    assert m[f"{ds}.best_baseline_test_acc"] == pytest.approx(float(((z["test_prob"] >= 0.5) == (z["test_y"] == 1)).mean()))
    assert m[f"{ds}.stage2_vs_best_baseline_diff"] == pytest.approx(m[f"{ds}.test_acc_mean"] - m[f"{ds}.best_baseline_test_acc"])
    assert 0 < m[f"{ds}.stage2_vs_best_baseline_p"] <= 1


@pytest.mark.parametrize("ds", DATASETS)
def test_ablation_over_seeds(smoke_run, ds):
    m = read_metrics(smoke_run, STEM)
    ref = m[f"{ds}.ablation.reference.test_acc"]
    assert m[f"{ds}.ablation.reference.mean"] == pytest.approx(m[f"{ds}.test_acc_mean"], abs=1e-12)  # the stage-2 runs
    variants = [k[:-len(".delta")] for k in m if k.startswith(f"{ds}.ablation.") and k.endswith(".delta")
                and ".reference." not in k]
    assert variants, "the ablation ran at least one variant"
    for v in variants:  # each delta is that variant's mean accuracy minus the reference's, on the same split
        assert m[f"{v}.delta"] == pytest.approx(m[f"{v}.test_acc"] - ref, abs=1e-12)
        assert m[f"{v}.mean"] == pytest.approx(m[f"{v}.test_acc"]) and 0 <= m[f"{v}.test_acc"] <= 1
        assert m[f"{v}.n_seeds"] == SMOKE_SEEDS and 0 <= m[f"{v}.sd"] < 0.2
        assert m[f"{v}.delta_ci_low"] <= m[f"{v}.delta"] <= m[f"{v}.delta_ci_high"] and 0 < m[f"{v}.p"] <= 1
    full = (smoke_run / STEM / ds / "ablation_full.csv").read_text()
    assert "per seed" in full and "Holm" in full


@pytest.mark.parametrize("ds", DATASETS)
def test_stage1_accuracy_matches_notebook_02(smoke_run, ds):
    # 03 re-scores the checkpoint 02 scored (best_<monitor>.pt): same weights, same test split
    m2, m3 = read_metrics(smoke_run, "02_stage1"), read_metrics(smoke_run, STEM)
    assert m3[f"{ds}.stage1_test_acc"] == pytest.approx(m2[f"{ds}.test_acc"], abs=1e-9)


def _min_groups(run) -> int:
    folder = run / "01_pair_sampling" / "scene_pairs"
    counts = []
    for f in ("train.npz", "val.npz", "test_public.npz"):
        z = np.load(folder / f)
        keep = (z["y"] == 1) & (z["type"] >= 0)
        counts.append(count_type_groups(z["seq"][keep], z["track_a"][keep], z["track_b"][keep], z["type"][keep], 5))
    return int(np.min(counts))


def test_type_head_next_to_lightgbm_and_majority(smoke_run):
    m = read_metrics(smoke_run, STEM)
    assert "digit_pairs.type_macro_f1" not in m
    for k in ("type_macro_f1", "type_baseline_lgbm_macro_f1", "type_majority_macro_f1"):
        assert 0 <= m[f"scene_pairs.{k}"] <= 1, k
    assert m["scene_pairs.type_macro_f1_ci_low"] <= m["scene_pairs.type_macro_f1"] <= m["scene_pairs.type_macro_f1_ci_high"]
    assert m["scene_pairs.type_n_test"] > 0 and m["scene_pairs.type_balance"] in ("oversample", "class_weights", "none")
    # The tuned LightGBM learns the generator's cues even from the smoke data; the majority class cannot.
    assert m["scene_pairs.type_baseline_lgbm_macro_f1"] > m["scene_pairs.type_majority_macro_f1"] + 0.1
    assert m["scene_pairs.type_head_minus_lgbm_macro_f1"] == pytest.approx(
        m["scene_pairs.type_macro_f1"] - m["scene_pairs.type_baseline_lgbm_macro_f1"], abs=1e-6)
    assert m["scene_pairs.type_min_groups_per_class"] == _min_groups(smoke_run)       # computed from the data
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())["answer"]
    assert (f"only {m['scene_pairs.type_min_groups_per_class']} group" in answer) == \
        (m["scene_pairs.type_min_groups_per_class"] < 10)
    assert f"macro-F1 {m['scene_pairs.type_macro_f1']:.3f}" in answer
    folder = smoke_run / STEM / "scene_pairs"
    assert (folder / "type" / "evaluation_report.txt").is_file() and (folder / "type" / "history.json").is_file()
    for f in ("type_confusion_matrix.png", "type_per_class.csv", "type_lgbm_grid.csv"):
        assert (folder / f).is_file(), f
    report = (folder / "type" / "evaluation_report.txt").read_text()
    assert "type_balance" in report and "one mechanism" in report and "cluster bootstrap" in report


def test_answer_and_headings_say_what_ran(smoke_run):
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())
    assert 2 <= len(answer["headline"]) <= 3 and "same epochs" in answer["answer"]
    m = read_metrics(smoke_run, STEM)
    diff = m["digit_pairs.stage2_vs_matched_stage1_diff"]
    assert f"{m['digit_pairs.test_acc_mean']:.1%}" in answer["answer"] and f"{100 * diff:+.1f} percentage points" in answer["answer"]
    html = (smoke_run / STEM / f"{STEM}.html").read_text()
    assert "amp off: no mixed precision" in html and "mixed precision (autocast)" not in html   # smoke: amp false
    card = json.loads((smoke_run / STEM / "config.json").read_text())
    assert card["dataset"]["digit_pairs"]["test_unit"] == "source image"
    assert card["dataset"]["scene_pairs"]["test_unit"] == "person pair"


@pytest.mark.parametrize("ds", DATASETS)
def test_outputs(smoke_run, ds):
    folder = smoke_run / STEM / ds
    for f in ("best_accuracy.pt", "best_loss.pt", "best_f1.pt", "final.pt", "history.json", "config.json",
              "evaluation_report.txt", "training_curves.png", "confusion_matrix.png", "probability_distributions.png",
              "ablation_curves.png", "seed_accuracies.png", "comparisons.csv", "ablation_full.csv",
              "predictions/stage2.npz"):
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
