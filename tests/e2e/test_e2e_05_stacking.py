"""Notebook 05 in the smoke run: headline numbers recomputed from the base models' prediction files, the fair
references, the paired tests and the goal verdict from the interval of the error ratio; the distilled
student (teacher targets on validation pairs only, its folder and TensorBoard files, its paired tests and the
share of the gain it keeps) and the ensemble's inference timed against the student's."""
import json

import numpy as np
import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e
STEM = "05_stacking"


def _params(run):
    return json.loads((run / "run.json").read_text())["notebooks"][STEM]["parameters"]


def _base_files(run, ds):
    return sorted(f for f in run.glob(f"*/{ds}/predictions/*.npz") if not f.is_relative_to(run / STEM))


def _logloss(p, y):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def test_headline_metrics_match_the_prediction_files(smoke_run):
    m = read_metrics(smoke_run, STEM)
    ds = _params(smoke_run)["datasets"][0]
    files = _base_files(smoke_run, ds)
    n_members = read_metrics(smoke_run, "04_multi_seed")["n_members"]
    probs = {}
    for f in files:           # a file bit-identical to an earlier one is stacked once (04's tuned re-run of a
        z = dict(np.load(f))  # hand-set best repeats its members exactly)
        if not any(np.array_equal(z["val_prob"], o["val_prob"]) and np.array_equal(z["test_prob"], o["test_prob"])
                   for o in probs.values()):
            probs[f"{f.parent.parent.parent.name}/{f.stem}"] = z
    assert m["n_base_models"] == len(probs) and len(files) >= n_members
    # the best single model is the one with the highest *validation* accuracy
    val_acc = {k: ((z["val_prob"] >= 0.5) == z["val_y"]).mean() for k, z in probs.items()}
    assert val_acc[m["best_single_name"]] == pytest.approx(max(val_acc.values()))
    best = probs[m["best_single_name"]]
    assert m["best_single_test_acc"] == pytest.approx(((best["test_prob"] >= 0.5) == best["test_y"]).mean())
    mean_prob = np.mean([z["test_prob"] for z in probs.values()], axis=0)
    assert m["mean_prob_test_acc"] == pytest.approx(((mean_prob >= 0.5) == best["test_y"]).mean())
    # the top-k average: the k best by validation (accuracy, then log-loss), k chosen on validation
    names = sorted(probs, key=lambda k: (-val_acc[k], _logloss(probs[k]["val_prob"], probs[k]["val_y"])))
    vy = best["val_y"]
    k_acc = [((np.mean([probs[n]["val_prob"] for n in names[:k]], axis=0) >= 0.5) == vy).mean()
             for k in range(1, len(names) + 1)]
    assert k_acc[m["topk_k"] - 1] == pytest.approx(max(k_acc))
    top = np.mean([probs[n]["test_prob"] for n in names[:m["topk_k"]]], axis=0)
    assert m["topk_average_test_acc"] == pytest.approx(((top >= 0.5) == best["test_y"]).mean())


def test_stacking_numbers_tests_and_goal_verdict(smoke_run):
    m = read_metrics(smoke_run, STEM)
    goal = _params(smoke_run)["goal_ratio"]
    assert m["stacking_ci_low"] <= m["stacking_test_acc"] <= m["stacking_ci_high"]
    assert 0.6 <= m["stacking_test_acc"] <= 1 and 0.6 <= m["logreg_meta_test_acc"] <= 1   # chance is 0.5
    # a meta-learner over these base models must not fall far below the references
    for ref in ("best_single_test_acc", "topk_average_test_acc", "logreg_meta_test_acc"):
        assert m["stacking_test_acc"] >= m[ref] - 0.05, ref
    for key in ("stacking_vs_best_p_value", "stacking_vs_topk_p", "stacking_vs_majority_p", "stacking_vs_logreg_meta_p",
                "stacking_vs_best_bootstrap_p_value"):
        assert 0 < m[key] <= 1, key                                      # never 0: a bootstrap zero is 1/B
    assert m["stacking_vs_best_p_value"] >= m["stacking_vs_best_bootstrap_p_value"]   # Holm-adjusted
    ratio = (1 - m["stacking_test_acc"]) / (1 - m["best_single_test_acc"])
    assert m["error_ratio"] == pytest.approx(ratio)
    assert m["error_ratio_ci_low"] <= ratio <= m["error_ratio_ci_high"] and m["error_ratio_ci_high"] > m["error_ratio_ci_low"]
    verdict = ("met" if m["error_ratio_ci_high"] < goal else "missed" if m["error_ratio_ci_low"] > goal else "undecided")
    assert m["goal_verdict"] == verdict and m["goal_met"] == (verdict == "met")


def test_report_answer_figures_and_run_card(smoke_run):
    ds = _params(smoke_run)["datasets"][0]
    m = read_metrics(smoke_run, STEM)
    for f in (f"error_correlation_{ds}.png", f"error_correlation_{ds}.csv", f"comparison_{ds}.png",
              f"meta_importance_{ds}.png", f"base_models_{ds}.csv", f"leakage_{ds}.csv", f"{STEM}.html"):
        assert (smoke_run / STEM / f).is_file(), f
    card = json.loads((smoke_run / STEM / "config.json").read_text())
    leak = card["dataset"]["data_leakage_prevention"][ds]
    assert card["dataset"]["meta_training_split"] == "val" and leak["verdict"] == "passed"
    assert leak["base_models"] == m["n_base_models"] and leak["val_rows_seen"] == leak["test_rows_seen"] == 0
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())
    assert f"is {m['goal_verdict']}" in answer["answer"] and f"{m['stacking_test_acc']:.1%}" in answer["answer"]
    assert f"{m['error_ratio']:.2f} (95% interval {m['error_ratio_ci_low']:.2f}" in answer["answer"]
    assert "p = 0 " not in answer["answer"] and "p = 0.0 " not in answer["answer"] and 2 <= len(answer["headline"]) <= 3


def test_distilled_student_against_the_teacher_and_the_inference_cost(smoke_run):
    m, p = read_metrics(smoke_run, STEM), _params(smoke_run)
    if not p["distill"]:
        pytest.skip("distill = False in this profile")
    ds = p["datasets"][0]
    folder = smoke_run / STEM / ds / "students"
    val_y = np.load(smoke_run / "00_data_audit" / "digit_pairs" / "val.npz")["y"]
    with np.load(folder / "soft_targets.npz") as z:                   # teacher targets: validation pairs only
        soft = z["val_teacher_prob"]
    assert soft.shape == val_y.shape and ((soft >= 0) & (soft <= 1)).all()
    acc = {}
    for name, seed in [(n, k) for n in ("distilled", "undistilled") for k in range(p["student_seeds"])]:
        f = folder / name / f"seed_{p['seed'] + seed}"
        for g in ("history.json", "model.pt", "predictions.npz", "config.json", "metrics.json"):
            assert (f / g).is_file(), f / g
        assert list(f.glob("events.out.tfevents.*"))                  # TensorBoard beside history.json
        card = json.loads((f / "config.json").read_text())
        assert card["dataset"]["data_leakage_prevention"]["verdict"].startswith("passed")
        assert card["model"]["recipe"] == "03_stage2" and card["model"]["pretrained"]
        with np.load(f / "predictions.npz") as z:
            acc.setdefault(name, []).append(((z["test_prob"] >= 0.5) == z["test_y"]).mean())
            assert set(z["stop_rows"]).isdisjoint(z["fit_val_rows"])
        assert card["task"]["soft_weight"] == (p["distill_soft_weight"] if name == "distilled" else 0.0)
    acc = {k: float(np.mean(v)) for k, v in acc.items()}                 # over the seeds
    assert m["student_seeds"] == p["student_seeds"] >= 2                  # seed noise is counted
    assert m["student_test_acc"] == pytest.approx(acc["distilled"]) and m["undistilled_test_acc"] == pytest.approx(acc["undistilled"])
    assert m["teacher_test_acc"] == pytest.approx(m["stacking_test_acc"])
    assert m["student_vs_undistilled_diff"] == pytest.approx(acc["distilled"] - acc["undistilled"])
    for k in ("student_vs_teacher_p", "student_vs_best_single_p", "student_vs_undistilled_p"):
        assert 0 < m[k] <= 1, k
    gain = m["stacking_test_acc"] - m["best_single_test_acc"]
    if gain > 0:
        assert m["gain_kept"] == pytest.approx((m["student_test_acc"] - m["best_single_test_acc"]) / gain)
    else:
        assert m["gain_kept"] is None                                  # nothing to keep: reported as missing
    assert m["student_samples_per_s"] > 0 and m["ensemble_samples_per_s"] > 0
    assert m["student_speedup"] == pytest.approx(m["student_samples_per_s"] / m["ensemble_samples_per_s"])
    assert m["ensemble_models_timed"] == m["n_base_models"]              # every base model was rebuilt and timed
    steps = (smoke_run / STEM / f"inference_steps_{ds}.csv").read_text().splitlines()
    assert len(steps) == 1 + m["n_base_models"] + 1                      # header, base models, the meta-learner
    assert (smoke_run / STEM / f"distillation_{ds}.png").is_file()
    card = json.loads((smoke_run / STEM / "config.json").read_text())["distillation"][ds]
    assert "out-of-fold" in card["teacher"] and card["inference"]["base_models"] == m["n_base_models"]
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())["answer"]
    assert "student" in answer and "faster" in answer
