"""Notebook 05 in the smoke run: headline numbers recomputed from the base models' prediction files."""
import json

import numpy as np
import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e
STEM = "05_stacking"


def _base_files(run, ds):
    return sorted(f for f in run.glob(f"*/{ds}/predictions/*.npz") if not f.is_relative_to(run / STEM))


def test_headline_metrics_match_the_prediction_files(smoke_run):
    m = read_metrics(smoke_run, STEM)
    params = json.loads((smoke_run / "run.json").read_text())["notebooks"][STEM]["parameters"]
    ds = params["datasets"][0]
    files = _base_files(smoke_run, ds)
    n_members = read_metrics(smoke_run, "04_multi_seed")["n_members"]
    assert m["n_base_models"] == len(files) >= n_members
    probs = {f"{f.parent.parent.parent.name}/{f.stem}": np.load(f) for f in files}
    # the best single model is the one with the highest *validation* accuracy
    val_acc = {k: ((z["val_prob"] >= 0.5) == z["val_y"]).mean() for k, z in probs.items()}
    assert val_acc[m["best_single_name"]] == pytest.approx(max(val_acc.values()))
    best = probs[m["best_single_name"]]
    assert m["best_single_test_acc"] == pytest.approx(((best["test_prob"] >= 0.5) == best["test_y"]).mean())
    mean_prob = np.mean([z["test_prob"] for z in probs.values()], axis=0)
    assert m["mean_prob_test_acc"] == pytest.approx(((mean_prob >= 0.5) == best["test_y"]).mean())


def test_stacking_numbers_are_sane(smoke_run):
    m = read_metrics(smoke_run, STEM)
    assert m["stacking_ci_low"] <= m["stacking_test_acc"] <= m["stacking_ci_high"]
    assert 0 <= m["stacking_vs_best_p_value"] <= 1
    assert 0.6 <= m["stacking_test_acc"] <= 1 and 0.6 <= m["logreg_meta_test_acc"] <= 1
    # a meta-learner over these base models must not fall far below the best of them
    assert m["stacking_test_acc"] >= m["best_single_test_acc"] - 0.05
    ratio = (1 - m["stacking_test_acc"]) / (1 - m["best_single_test_acc"])
    assert m["error_ratio"] == pytest.approx(ratio) and m["goal_met"] == (ratio <= 0.8)


def test_report_figures_and_run_card(smoke_run):
    ds = json.loads((smoke_run / "run.json").read_text())["notebooks"][STEM]["parameters"]["datasets"][0]
    for f in (f"error_correlation_{ds}.png", f"comparison_{ds}.png", f"meta_importance_{ds}.png", f"{STEM}.html"):
        assert (smoke_run / STEM / f).is_file(), f
    card = json.loads((smoke_run / STEM / "config.json").read_text())
    assert card["dataset"]["meta_training_split"] == "val" and card["dataset"]["data_leakage_prevention"] is True
