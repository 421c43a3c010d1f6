"""helpers.stages.stacking: the goal table and its verdict, the paired view, the answer, the leakage record; the
distillation (the teacher's out-of-fold targets, both students, their paired tests, the share of the gain kept)
and the ensemble's inference rebuilt and timed against the student's."""
import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_savez, atomic_write_json
from helpers.data.pairs import load_pair_folder
from helpers.data.predictions import BasePredictions, load_base_predictions, write_predictions
from helpers.evaluation.distillation import evaluate_gain_kept
from helpers.evaluation.ensemble_inference import make_baseline_predictor, make_checkpoint_predictor
from helpers.evaluation.leakage import check_no_leakage
from helpers.evaluation.stacking import evaluate_stacking, make_error_correlation, STACK
from helpers.evaluation.stats import ROWS, Unit
from helpers.models.registry import create_model
from helpers.reports.stacking import (describe_answer, describe_bases, describe_distillation, describe_goal,
                                      describe_paired, describe_speed, describe_topk, make_answer_headline,
                                      make_distill_paired_view, make_metrics_view, make_paired_view, make_speed_table,
                                      plot_distillation, top_by_validation)
from helpers.stages.stacking import (evaluate_distillation, make_base_predictors, make_distill_card,
                                     make_distill_headline, make_goal_table, make_leakage_record, make_student_specs,
                                     make_teacher_targets, make_val_holdout, measure_speed, train_students)
from helpers.stages.words import sentences
from helpers.training.config import TrainConfig


# ------------------------------------------------------------------------------- fixtures
def _synthetic(n: int, m: int, rng: np.random.Generator, noise: float = 1.5):
    """m base models that each see the label through independent noise: P(y=1) per model [n, m]."""
    y = rng.integers(0, 2, n)
    z = (2 * y - 1)[:, None] * 1.0 + rng.normal(0, noise, (n, m))
    return 1 / (1 + np.exp(-z)), y


def _base(m: int = 6, n: int = 400, seed: int = 0, trained_on=("train",)) -> BasePredictions:
    rng = np.random.default_rng(seed)
    vp, vy = _synthetic(n, m, rng)
    tp, ty = _synthetic(n, m, rng)
    names = [f"nb/m{i}" for i in range(m)]
    return BasePredictions("syn", names, [Path(f"m{i}.npz") for i in range(m)], vp, tp, vy, ty,
                           [list(trained_on)] * m, ["train_holdout"] * m, [None] * m, np.full(m, 0.5))


def _keys(n_train=300, n_val=400, n_test=400, seed=1):
    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
            for s, n in (("train", n_train), ("val", n_val), ("test", n_test))}


def test_goal_table_verdict_answer_and_error_correlation():
    base = _base(m=4, n=300)
    res = evaluate_stacking(base, _keys(n_val=300, n_test=300), grid="tiny", seed=0, n_boot=300, max_rounds=100)
    goal = make_goal_table(res, goal_ratio=0.8)["value"]
    h = res.headline()
    assert goal["error ratio stacking / best single"] == pytest.approx(h["error_ratio"])
    assert goal["error ratio, 95% interval low"] <= h["error_ratio"] <= goal["error ratio, 95% interval high"]
    assert goal["goal verdict (from the interval)"] == h["goal_verdict"] and h["goal_met"] == (h["goal_verdict"] == "met")
    assert (h["error_ratio_ci_low"], h["error_ratio_ci_high"]) == (goal["error ratio, 95% interval low"],
                                                                    goal["error ratio, 95% interval high"])
    # the verdict follows the interval, not the point estimate: a goal inside the interval is undecided
    mid = (h["error_ratio_ci_low"] + h["error_ratio_ci_high"]) / 2
    assert make_goal_table(res, goal_ratio=mid)["value"]["goal verdict (from the interval)"] == "undecided"
    assert describe_goal(make_goal_table(res, goal_ratio=mid)).startswith("Goal UNDECIDED")
    assert make_goal_table(res, goal_ratio=h["error_ratio_ci_high"] + 0.01)["value"].iloc[7] == "met"
    text = describe_answer({"d": res})
    assert f"{h['stacking_test_acc']:.1%}" in text and f"{h['error_ratio']:.2f} (95% interval" in text   # numbers, verdict
    assert f"is {h['goal_verdict']}" in text and len(sentences(text)) <= 4 and len(text.split()) <= 90
    assert len(make_answer_headline(res)) == 3
    shown = make_metrics_view(pd.DataFrame({"value": list(h.values())}, index=list(h)))
    assert str(shown.loc["stacking_vs_topk_p", "value"]).startswith("p ") and shown.loc["n_base_models", "value"] == 4
    view = make_paired_view(res)
    assert list(view.index) == list(res.paired["reference"]) and "p (Holm)" in view.columns
    assert "4 tests" in describe_paired(res) and "best base models by validation" in describe_topk(res)
    assert top_by_validation(base, 2)[0] == res.best_single and len(top_by_validation(base, 2)) == 2
    base.duplicates = {"nb/m9": "nb/m0"}
    text = describe_bases(base, SimpleNamespace(source="generated pairs"), ROWS)
    assert "4 base models, 300 validation rows" in text and "300 rows" in text and "(0.50)" in text
    assert "generated pairs" in text and "nb/m9 = nb/m0" in text             # the copy stacked once, named
    corr = make_error_correlation(base)
    assert corr.shape == (4, 4) and np.allclose(np.diag(corr), 1)
    base.val_prob[:, 1] = base.val_prob[:, 0]                       # identical models: correlated errors
    assert make_error_correlation(base).iloc[0, 1] == pytest.approx(1.0)


def test_leakage_record_holds_the_counts_of_the_check_that_ran():
    table = check_no_leakage(_base(), _keys())
    rec = make_leakage_record(table)
    assert rec["verdict"] == "passed" and rec["base_models"] == 6 and rec["val_rows_seen"] == 0
    assert rec["assumed_train_split"] == 0 and "content keys" in rec["checked"]
    table.loc[0, "test_rows_seen"] = 2
    assert make_leakage_record(table)["verdict"] == "FAILED"


# --------------------------------------------------------------------------- distillation
def _digit_like(folder: Path, seed: int = 0):
    """Image pairs of 4 classes (templates + noise), y = same class; source ids disjoint across splits."""
    rng = np.random.default_rng(seed)
    templates = rng.random((4, 1, 8, 8)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0
    for fname, n, n_src in (("train.npz", 80, 24), ("val.npz", 160, 20), ("test_public.npz", 80, 24)):
        src_class = rng.integers(0, 4, n_src)
        src_img = templates[src_class] + rng.normal(0, 0.35, (n_src, 1, 8, 8)).astype(np.float32)
        y = np.tile([0, 1], n // 2)
        ia = rng.integers(0, n_src, n)
        ib = np.array([rng.choice(np.flatnonzero((src_class == src_class[a]) if t else (src_class != src_class[a])))
                       for a, t in zip(ia, y)])
        atomic_savez(folder / fname, xa=src_img[ia], xb=src_img[ib], y=y, ida=ia + offset, idb=ib + offset,
                     ca=src_class[ia], cb=src_class[ib])
        offset += n_src
    return folder


def _checkpoint(path: Path, name: str, kwargs: dict, train: dict | None = None):
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": model.state_dict(), "model_spec": model.spec,
                "config": TrainConfig(**(train or {"epochs": 1})).to_dict()}, path)
    return path


def _ensemble_run(tmp_path):
    """A run folder as 02-04 leave it: 02's scored stage-1 checkpoint and run card with its baselines' settings,
    03's stage-2 recipe, a 04 member with its model.pt, and a prediction file for each (test probabilities
    from the very models, validation probabilities noisy)."""
    data = _digit_like(tmp_path / "pairs")
    splits = load_pair_folder(data, name="pairs")
    run = tmp_path / "run"
    tiny = {"in_channels": 1, "width_mult": 0.125, "feat_dim": 8, "layers": [1, 1, 1]}
    recipe = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "patience": 0, "monitor": "accuracy", "warmup_epochs": 0}
    s1 = _checkpoint(run / "02_stage1" / "pairs" / "best_accuracy.pt", "stage1_fusion_cbam", tiny, recipe)
    _checkpoint(run / "03_stage2" / "pairs" / "best_accuracy.pt", "siamese_resnet",
                {**tiny, "fusion": "adaptive", "attention": "se"}, recipe)
    atomic_write_json(run / "03_stage2" / "pairs" / "config.json",
                      {"training": {"monitor": "accuracy", "loss_function": "focal", "focal_alpha": -1.0}})
    _checkpoint(run / "04_multi_seed" / "pairs" / "members" / "m_s1" / "model.pt", "siamese_resnet",
                {**tiny, "fusion": "concat"})
    baselines = {"logreg": {"C": 1.0}, "lgbm": {"num_leaves": 4, "learning_rate": 0.1, "best_iteration": 15},
                 "1nn": {"mode": "class of the nearest training image", "standardized": False},
                 "svm_compare": {"C": 10.0, "gamma": 0.02, "temperature": 0.5},
                 "cnn_compare": {"layers": [1, 1], "width_mult": 0.25, "temperature": 1.0}}
    atomic_write_json(run / "02_stage1" / "pairs" / "config.json",
                      {"training": {"monitor": "accuracy", "seed": 3}, "baselines": baselines})
    models = {("02_stage1", "stage1"): make_checkpoint_predictor("s1", s1, splits),
              ("03_stage2", "stage2"): make_checkpoint_predictor("s2", run / "03_stage2" / "pairs" / "best_accuracy.pt", splits),
              ("04_multi_seed", "m_s1"): make_checkpoint_predictor(
                  "m", run / "04_multi_seed" / "pairs" / "members" / "m_s1" / "model.pt", splits)}
    for k, info in baselines.items():
        models[("02_stage1", f"baseline_{k}")] = make_baseline_predictor(f"baseline_{k}", info, splits, seed=3)
    rng = np.random.default_rng(1)
    va, te = splits.val, splits.test
    for (stem, name), p in models.items():
        noisy = np.clip(va.y * 0.6 + 0.2 + rng.normal(0, 0.25, len(va.y)), 0.01, 0.99)
        write_predictions(run / stem / "pairs" / "predictions" / f"{name}.npz", noisy, p.predict(), va.y, te.y,
                          threshold=0.5)
    return run, data, splits


def test_teacher_targets_students_and_the_inference_comparison(tmp_path):
    matplotlib.use("Agg")
    torch.set_num_threads(1)
    run, data, splits = _ensemble_run(tmp_path)
    base = load_base_predictions(run, str(data), label="pairs")
    res = evaluate_stacking(base, grid="tiny", seed=0, n_boot=200, max_rounds=50, splits=splits, sklearn_stacking=False)
    teacher = make_teacher_targets(res)
    assert np.array_equal(teacher, res.meta.oof.oof) and teacher.shape == splits.val.y.shape   # out-of-fold, val only
    # the student's early stopping sees no validation image it fits on
    fit, stop = make_val_holdout(splits.val, 0.5, 0)
    fit_src = set(splits.val.ida[fit]) | set(splits.val.idb[fit])
    assert fit_src.isdisjoint(set(splits.val.ida[stop]) | set(splits.val.idb[stop])) and len(stop) > 4
    specs = make_student_specs(run, str(data), "pairs", run / "05", teacher, holdout_frac=0.5, seed=0, max_epochs=1,
                               n_seeds=2)
    assert [(s.name, s.seed) for s in specs] == [("distilled", 0), ("undistilled", 0), ("distilled", 1),
                                                 ("undistilled", 1)] and specs[0].model == "siamese_resnet"
    assert (specs[0].soft_weight, specs[0].hard_weight, specs[0].temperature) == (0.7, 0.3, 3.0)
    assert (specs[1].soft_weight, specs[1].hard_weight) == (0.0, 1.0) and specs[0].hard_loss == "bce"
    assert specs[0].start.endswith("02_stage1/pairs/best_accuracy.pt")               # the stage-2 recipe's start
    assert make_student_specs(run, str(data), "pairs", run / "05", teacher, hard_loss="recipe")[0].hard_loss == "focal"
    with pytest.raises(WorkbookError, match="student_rows"):
        make_student_specs(run, str(data), "pairs", run / "05", teacher, rows="test")
    students = train_students(specs, workers=1, verbose=False)
    assert students["student"].tolist() == ["distilled", "undistilled"] * 2 and students["seed"].tolist() == [0, 0, 1, 1]
    assert (students["leakage"].str.startswith("passed")).all()
    d_row = students.iloc[0]
    assert d_row["n_fit"] == 80 + len(fit) and d_row["n_with_teacher"] == len(fit) and d_row["n_stop"] == len(stop)
    for name in ("distilled", "undistilled"):
        folder = run / "05" / "pairs" / "students" / name / "seed_1"
        for f in ("history.json", "model.pt", "predictions.npz", "metrics.json", "config.json"):
            assert (folder / f).is_file(), f
        assert list(folder.glob("events.out.tfevents.*"))
    card = json.loads((run / "05" / "pairs" / "students" / "distilled" / "seed_0" / "config.json").read_text())
    assert card["task"]["temperature"] == 3.0 and "tensors" in card["model"]["pretrained"]
    d = evaluate_distillation(res, students, ROWS, n_boot=200)
    assert d.paired["reference"].tolist() == ["teacher (LightGBM stacking)", "best single (chosen on val)",
                                              "undistilled student"]
    assert (d.paired["p_holm"] >= d.paired["p_value"]).all()
    assert d.paired["method"].str.contains("spread of 2 seeds").all()            # seed noise counted
    assert d.accuracy.set_index("model").loc["distilled student", "n_seeds"] == 2
    acc = d.accuracy.set_index("model")["test_acc"]
    assert acc["teacher (LightGBM stacking)"] == pytest.approx(((res.test_pred[STACK] >= 0.5) == base.test_y).mean())
    preds = make_base_predictors(base, run, splits, "pairs", seed=3)
    kinds = {p.name: p.kind for p in preds}
    assert kinds["02_stage1/baseline_cnn_compare"] == "architecture only" and kinds["04_multi_seed/m_s1"] == "checkpoint"
    assert kinds["02_stage1/baseline_lgbm"] == "refit" and kinds["02_stage1/stage1"] == "checkpoint"
    assert all(p.agreement == 1.0 for p in preds)          # every rebuilt model reproduces its prediction file
    speed = measure_speed(res, preds, students, splits, repeats=1)
    assert speed.n_timed == speed.n_models == 8 and speed.n_exact == 8 and speed.pipeline_agreement == 1.0
    assert len(speed.steps) == 9 and speed.steps["step"].iloc[-1] == "LightGBM meta-learner"
    assert speed.ensemble_seconds == pytest.approx(speed.steps["seconds"].sum())
    assert speed.student_samples_per_s > 0 and speed.speedup == pytest.approx(speed.ensemble_seconds / speed.student_seconds)
    table = make_speed_table(speed)
    assert table.iloc[0]["samples_per_s"] == pytest.approx(speed.ensemble_samples_per_s)
    text = describe_speed(speed) + describe_distillation(d, 0.01)
    assert f"{speed.speedup:.1f} times faster" in text and "Holm" in text
    assert "seed sd of 1.00 percentage points" in text                  # 04's sd of 0.01, in points
    for r in d.paired.itertuples():                                     # each comparison's number and verdict
        assert f"{100 * r.student_minus_reference:+.1f} percentage points" in text and r.verdict in text
    head = make_distill_headline(d, speed)
    for k in ("student_test_acc", "student_vs_teacher_p", "student_vs_undistilled_p", "student_samples_per_s",
              "ensemble_samples_per_s", "gain_kept"):
        assert k in head
    assert 0 < head["student_vs_teacher_p"] <= 1 and "p (Holm)" in make_distill_paired_view(d).columns
    assert len(plot_distillation(d, speed).axes) == 2
    assert make_distill_card(d, speed)["inference"]["base_models_exact"] == 8
    ans = describe_answer({"d": res}, 0.8, {"d": d}, {"d": speed})
    student = float(d.accuracy.set_index("model").loc["distilled student", "test_acc"])
    assert f"student scores {student:.1%}" in ans and f"{speed.speedup:.1f} times" in ans and "faster" in ans and len(make_answer_headline(res, 0.8, d, speed)) == 3


def test_gain_kept_is_the_share_of_the_teachers_gain_with_an_interval():
    rng = np.random.default_rng(0)
    n = 2000
    best = (rng.random(n) < 0.80).astype(float)
    teacher = np.where(rng.random(n) < 0.5, 1.0, best)            # fixes half of best's errors: +0.10
    student = np.where(rng.random(n) < 0.5, teacher, best)         # about half of that
    k = evaluate_gain_kept(best, teacher, student, ROWS, n_boot=500)
    assert k["kept"] == pytest.approx((student.mean() - best.mean()) / (teacher.mean() - best.mean()))
    assert k["ci_low"] < k["kept"] < k["ci_high"] and 0.3 < k["kept"] < 0.7
    ids = Unit("source image", (rng.integers(0, 300, n), rng.integers(0, 300, n)))
    kd = evaluate_gain_kept(best, teacher, student, ids)
    assert kd["kept"] == pytest.approx(k["kept"]) and "dyadic" in kd["method"]
    none = evaluate_gain_kept(teacher, best, student, ROWS)          # the "teacher" is worse: nothing to keep
    assert np.isnan(none["kept"]) and "does not beat" in none["method"]
