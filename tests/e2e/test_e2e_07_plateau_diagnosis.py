"""Notebook 07 in the smoke run: the diagnosis report, the learning-curve probe, the follow-up runs, the
doctor's held-out and dev scores on the hand-labelled public logs with the baselines, the planted faults and
the headline metrics."""
import json

import pytest

from helpers.evaluation.doctor import KINDS, LABELLED_KINDS
from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e

STEM = "07_plateau_diagnosis"


def test_plateau_metrics(smoke_run):
    m = read_metrics(smoke_run, STEM)
    for key in ("baseline_best_cos", "ceiling_cos", "plateau_epoch", "overfit_ratio", "best_remedy",
                "remedy_best_cos", "diagnosis_label", "diagnosis_kinds", "schedule_ended_epoch"):
        assert key in m
    # The ceiling is the oracle's cosine with σ = obs_noise over T frames: ≈ 1/sqrt(1 + σ²/T).
    params = json.loads((smoke_run / "run.json").read_text())["notebooks"][STEM]["parameters"]
    approx = (1 + params["obs_noise"] ** 2 / params["frames"]) ** -0.5
    assert abs(m["ceiling_cos"] - approx) < 0.04
    # No model beats the oracle that knows the true poses (small tolerance for a finite split).
    assert -1 <= m["baseline_best_cos"] <= m["ceiling_cos"] + 0.02
    assert m["overfit_ratio"] > 0
    kinds = m["diagnosis_kinds"].split(",")
    assert m["diagnosis_label"] == kinds[0] and set(kinds) <= set(KINDS)
    # a divergence comes first; a schedule that ran out is not also called a plateau
    assert "divergence" not in kinds[1:]
    assert not ({"schedule_ended", "plateau"} <= set(kinds))
    if m["plateau_epoch"] is not None:
        assert 1 <= m["plateau_epoch"] <= m["plateau_flagged_epoch"] <= m["baseline_epochs"]
        if m["reduce_lr_epoch"] is not None:
            assert m["plateau_flagged_epoch"] <= m["reduce_lr_epoch"]


def test_learning_curve_probe_fed_the_doctor(smoke_run):
    m = read_metrics(smoke_run, STEM)
    out = smoke_run / STEM
    for f in (0.25, 0.5):
        assert (out / "learning_curve" / f"train_{f:g}" / "history.json").is_file()
    assert isinstance(m["learning_curve_gain_half_to_full"], float)
    assert isinstance(m["learning_curve_rises"], bool)
    if m["learning_curve_rises"]:
        assert m["learning_curve_gain_half_to_full"] > 0


def test_followups_ran_and_are_measured(smoke_run):
    m = read_metrics(smoke_run, STEM)
    out = smoke_run / STEM
    assert m["n_followups"] >= 1
    assert m["best_remedy"] != "none"
    assert (out / "followups" / m["best_remedy"] / "history.json").is_file()
    assert (out / "followups" / m["best_remedy"] / "config.json").is_file()
    hist = json.loads((out / "followups" / m["best_remedy"] / "history.json").read_text())
    assert max(r["cos"] for r in hist) == pytest.approx(m["remedy_best_cos"], abs=1e-6)
    assert m["remedy_delta"] == pytest.approx(m["remedy_best_cos"] - m["baseline_best_cos"], abs=1e-6)
    assert -1 <= m["remedy_best_cos"] <= m["ceiling_cos"] + 0.02
    base_hist = json.loads((out / "baseline" / "history.json").read_text())
    assert max(r["cos"] for r in base_hist) == pytest.approx(m["baseline_best_cos"], abs=1e-6)
    if m.get("control_best_cos") is not None:
        assert (out / "followups" / "control_more_data" / "history.json").is_file()
    # the conclusion's "helped most" is the largest gain over the recommendations and the control
    gains = [m["remedy_delta"]] + ([m["control_delta"]] if m.get("control_delta") is not None else [])
    assert m["best_change_delta"] == pytest.approx(max(gains), abs=1e-9)


def test_doctor_checks_in_the_notebook(smoke_run):
    m = read_metrics(smoke_run, STEM)
    assert m["synthetic_correct"] == 1.0
    assert m["foreign_labels"] == "overfitting,schedule_ended"
    # held-out logs scored after the freeze, dev beside, baselines on the same files
    assert m["n_heldout_logs"] >= 80 and m["n_dev_logs"] >= 80 and m["n_heldout_repositories"] >= 40
    for split in ("heldout", "dev"):
        for key in ("precision", "recall"):
            lo, v, hi = (m[f"doctor_{split}_{key}{s}"] for s in ("_low", "", "_high"))
            assert 0 <= lo <= v <= hi <= 1
    assert any(k.startswith("baseline_") and k.endswith("_heldout_precision") for k in m)
    assert m["rules_frozen_commit"] and m["rules_unchanged_since_freeze"] in (True, None)
    # the planted faults of the smoke profile ran, with the random remedy beside
    assert m["planted_faults"] >= 1 and m["planted_seeds"] >= 2
    assert 0 <= m["planted_named"] <= m["planted_faults"] and 0 <= m["planted_helped"] <= m["planted_faults"]
    for kind in LABELLED_KINDS:
        for key in ("precision", "recall"):
            v = m[f"doctor_{key}_{kind}"]
            assert v is None or 0 <= v <= 1
    out = smoke_run / STEM
    for name in ("baseline_diagnosis.png", "followups.png", "learning_curve.png", "config.json", f"{STEM}.html"):
        assert (out / name).is_file()
    html = (out / f"{STEM}.html").read_text(encoding="utf-8")
    assert "Does the doctor hold on real logs it was not tuned on?" in html and "Conclusion:" in html
    assert "Does the doctor name a planted cause" in html and "Held out (" in html
