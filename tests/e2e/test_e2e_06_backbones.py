"""Notebook 06 under the smoke profile: the comparison's metrics, within tolerances."""
from __future__ import annotations

import json
import math

import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e

STEM = "06_backbones"
# Smoke profile: resnet18, convnext_atto and their ensemble at 32 px, benchmark batch 8; the top two
# by validation score trained again with a second seed.
MODELS = {"resnet18": 11.18, "convnext_atto": 3.37, "resnet18__convnext_atto": 11.18 + 3.37}
NAMES = {"resnet18", "convnext_atto", "resnet18+convnext_atto"}
KEYS = ("params_m", "train_samples_per_s", "infer_samples_per_s", "peak_mem_mb", "val_loss", "combined",
        "combined_chance_normalised", "combined_ci_low", "combined_ci_high", "n_seeds", "combined_mean",
        "above_chance", "pareto_front", "train_s_per_1k", "test_combined", "batch", "resolution_handicap",
        "n_tasks_at_chance", "digit_macro_f1", "ink_r2", "slant_r2", "digit_norm", "ink_norm", "slant_norm")


def key(name: str) -> str:
    return name.replace("+", "__")


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
        # Chance-normalised: 1 is perfect, 0 is chance, below 0 is worse than ignoring the image.
        assert metrics[f"{model}.combined"] <= 1
        assert metrics[f"{model}.combined"] == metrics[f"{model}.combined_chance_normalised"]
        assert metrics[f"{model}.combined_ci_low"] <= metrics[f"{model}.combined_ci_high"]
        assert metrics[f"{model}.resolution_handicap"] is False, "CNNs run at any size"
        # combined is the mean of the chance-normalised task scores; R² is its own normalised score.
        norms = [metrics[f"{model}.{t}_norm"] for t in ("digit", "ink", "slant")]
        assert metrics[f"{model}.combined"] == pytest.approx(sum(norms) / 3, abs=1e-9)
        assert metrics[f"{model}.ink_norm"] == pytest.approx(metrics[f"{model}.ink_r2"])
        chance = metrics["chance.digit_macro_f1"]
        assert metrics[f"{model}.digit_norm"] == pytest.approx(
            (metrics[f"{model}.digit_macro_f1"] - chance) / (1 - chance), abs=1e-9)


def test_ensemble_is_the_sum_of_its_members(metrics):
    assert metrics["resnet18__convnext_atto.params_m"] == pytest.approx(
        metrics["resnet18.params_m"] + metrics["convnext_atto.params_m"], abs=1e-6)


def test_chance_levels_are_computed(metrics):
    # Macro-F1 over the ten digits: shuffled labels expect 1/10, better than any constant answer.
    assert metrics["chance.digit_macro_f1"] == pytest.approx(0.1, abs=1e-9)
    assert metrics["chance.ink_r2"] == 0.0 and metrics["chance.slant_r2"] == 0.0


def test_winners_are_named_and_consistent(metrics):
    for k in ("fastest", "best_combined", "lowest_loss"):
        assert metrics[k] in NAMES, k
    combined = {n: metrics[f"{key(n)}.combined"] for n in NAMES}
    speed = {n: metrics[f"{key(n)}.train_samples_per_s"] for n in NAMES}
    assert combined[metrics["best_combined"]] == max(combined.values())
    assert speed[metrics["fastest"]] == max(speed.values())


def test_only_above_chance_models_are_ranked_on_the_pareto_front(metrics):
    above = {n for n in NAMES if metrics[f"{key(n)}.above_chance"]}
    assert metrics["n_above_chance"] == len(above)
    ranked = set()
    for n in NAMES:
        if metrics[f"{key(n)}.pareto_front"] is not None:
            ranked.add(n)
            assert n in above and metrics[f"{key(n)}.n_tasks_at_chance"] == 0 and metrics[f"{key(n)}.combined_ci_low"] > 0
    assert ranked == {n for n in above if metrics[f"{key(n)}.n_tasks_at_chance"] == 0}
    front = set(metrics["pareto_front"])
    assert front == {n for n in ranked if metrics[f"{key(n)}.pareto_front"]} and (front or not ranked)
    score = {n: metrics[f"{key(n)}.combined_mean"] for n in ranked}
    time_ = {n: metrics[f"{key(n)}.train_s_per_1k"] for n in ranked}
    for n in ranked:       # on the front iff no other ranked model is at least as good and as fast, one strictly
        dominated = any(score[m] >= score[n] and time_[m] <= time_[n] and (score[m] > score[n] or time_[m] < time_[n])
                        for m in ranked if m != n)
        assert (n in front) == (not dominated), n


def test_top_two_are_retrained_over_two_seeds(metrics):
    seeds = {n: metrics[f"{key(n)}.n_seeds"] for n in NAMES}
    assert sorted(seeds.values()) == [1, 2, 2]
    assert metrics["best_model"] in {n for n, k in seeds.items() if k == 2}
    assert metrics["best_model_seeds"] == 2
    # the test headline is over the seeds that did not select the model: its screening seed is left out
    assert len(metrics["best_model_test_fresh_seeds"]) == 1
    assert metrics["best_model_screening_seed"] not in metrics["best_model_test_fresh_seeds"]
    assert math.isfinite(metrics["best_model_test_fresh_mean"])
    assert metrics["best_model_ci_low"] <= metrics["best_model_mean"] <= metrics["best_model_ci_high"]
    assert metrics["best_model_mean"] == pytest.approx(metrics[f"{key(metrics['best_model'])}.combined_mean"])
    assert metrics["best_model_mean"] >= metrics["runner_up_mean"]
    # The best single-seed model is among the re-trained ones, and (one smoke epoch) well above chance.
    assert seeds[metrics["best_combined"]] == 2
    assert metrics[f"{key(metrics['best_combined'])}.combined_ci_low"] > 0


def test_outputs_and_run_card(smoke_run):
    out = smoke_run / STEM
    for f in ("pareto.png", "peak_memory.png", "training_curves.png", "seed_scores.png", "config.json",
              "metrics.json", "answer.json"):
        assert (out / f).is_file(), f
    card = json.loads((out / "config.json").read_text())
    ds = card["dataset"]
    # the leakage field is the check's result: no subject shared, which the per-split subject counts confirm
    leak = ds["data_leakage_prevention"]
    assert ds["split_method"] == "by_subject_id" and leak["shared_subject_entries"] == 0
    assert leak["verdict"] == "no subject in two splits"
    assert ds["train_subjects"] + ds["val_subjects"] + ds["test_subjects"] == ds["total_subjects"] == 1797
    assert ds["train_samples_used"] == 160
    assert card["benchmark"]["train_step"] == "forward + loss + backward + AdamW step"
    assert "chance" in card["scoring"]["combined"]
    answer = json.loads((out / "answer.json").read_text())
    best = answer["headline"]["best backbone (over seeds)"]
    assert best and f"best backbone on validation is {best}" in answer["answer"]
    assert f"{answer['headline']['its mean validation combined (chance-normalised)']:.3f}" in answer["answer"]
