"""Notebook 06 under the smoke profile: the comparison's metrics, within tolerances."""
from __future__ import annotations

import json
import math

import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e

STEM = "06_backbones"
# Smoke profile: resnet18, convnext_atto and their ensemble at 32 px, benchmark batch 8.
MODELS = {"resnet18": 11.18, "convnext_atto": 3.37, "resnet18__convnext_atto": 11.18 + 3.37}
KEYS = ("params_m", "train_samples_per_s", "infer_samples_per_s", "peak_mem_mb", "val_loss", "combined", "batch")


@pytest.fixture(scope="module")
def metrics(smoke_run):
    return read_metrics(smoke_run, STEM)


def test_every_backbone_has_its_numbers(metrics):
    for model, params_m in MODELS.items():
        for k in KEYS:
            assert f"{model}.{k}" in metrics, f"{model}.{k} missing"
        # Backbone parameters as timm builds them plus three small heads (< 0.05 M).
        assert metrics[f"{model}.params_m"] == pytest.approx(params_m, abs=0.06)
        assert metrics[f"{model}.batch"] == 8, "no out-of-memory on CPU at batch 8"
        assert metrics[f"{model}.train_samples_per_s"] > 0 and metrics[f"{model}.infer_samples_per_s"] > 0
        assert 200 < metrics[f"{model}.peak_mem_mb"] < 16000, "peak RSS of the measuring process, MB"
        assert math.isfinite(metrics[f"{model}.val_loss"]) and metrics[f"{model}.val_loss"] > 0
        assert 0 <= metrics[f"{model}.combined"] <= 1


def test_ensemble_is_the_sum_of_its_members(metrics):
    assert metrics["resnet18__convnext_atto.params_m"] == pytest.approx(
        metrics["resnet18.params_m"] + metrics["convnext_atto.params_m"], abs=1e-6)


def test_winners_are_named_and_consistent(metrics):
    names = {"resnet18", "convnext_atto", "resnet18+convnext_atto"}
    for k in ("fastest", "best_combined", "lowest_loss", "best_combined_per_s"):
        assert metrics[k] in names, k
    key = lambda n: n.replace("+", "__")
    combined = {n: metrics[f"{key(n)}.combined"] for n in names}
    speed = {n: metrics[f"{key(n)}.train_samples_per_s"] for n in names}
    assert combined[metrics["best_combined"]] == max(combined.values())
    assert speed[metrics["fastest"]] == max(speed.values())


def test_the_best_backbone_beats_chance(metrics):
    # Chance on these tasks: digit macro-F1 ~0.1, loops macro-F1 ~0.25, parity F1 <= 0.67 -> combined ~0.3.
    # After one smoke epoch the best model (convnext_atto, which trains fast from scratch) is well above it.
    assert metrics[f"{metrics['best_combined'].replace('+', '__')}.combined"] > 0.4


def test_outputs_and_run_card(smoke_run):
    out = smoke_run / STEM
    for f in ("pareto.png", "peak_memory.png", "training_curves.png", "config.json", "metrics.json"):
        assert (out / f).is_file(), f
    card = json.loads((out / "config.json").read_text())
    ds = card["dataset"]
    assert ds["split_method"] == "by_subject_id" and ds["data_leakage_prevention"] is True
    assert ds["train_subjects"] + ds["val_subjects"] + ds["test_subjects"] == ds["total_subjects"] == 1797
    assert ds["train_samples_used"] == 160
