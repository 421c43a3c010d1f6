"""helpers.stacking: prediction files, the leakage check, out-of-fold predictions, the comparison."""
from pathlib import Path

import numpy as np
import pytest

from helpers.core.errors import WorkbookError
from helpers.data.predictions import BasePredictions, load_base_predictions, write_predictions
from helpers.evaluation.leakage import check_no_leakage, LeakageError
from helpers.evaluation.stacking import (BEST, choose_topk, evaluate_error_ratio, evaluate_stacking,
                                         goal_verdict, make_oof_predictions, make_paired_table,
                                         rank_by_validation, REFERENCES, STACK, TOPK, train_lgbm_meta)
from helpers.evaluation.stats import ROWS, Unit


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


# ------------------------------------------------------------------------------- leakage check
def test_leakage_check_passes_on_clean_models():
    table = check_no_leakage(_base(), _keys())
    assert len(table) == 6 and (table["val_rows_seen"] == 0).all() and (table["test_rows_seen"] == 0).all()


def test_leakage_check_trips_on_a_model_trained_on_val():
    base = _base()
    base.trained_on[2] = ["train", "val"]
    with pytest.raises(LeakageError, match="nb/m2"):
        check_no_leakage(base, _keys())


def test_leakage_check_trips_on_planted_examples():
    keys = _keys()
    base = _base()
    # m4 says it trained on "train" only, but its recorded training examples include 3 validation rows
    base.train_keys[4] = np.concatenate([keys["train"], keys["val"][[5, 17, 99]]])
    with pytest.raises(LeakageError, match=r"nb/m4.*3 of 400 val rows"):
        check_no_leakage(base, keys)
    # and a validation example duplicated into the training split is caught without train_keys
    base = _base()
    keys["train"] = np.concatenate([keys["train"], keys["test"][:2]])
    with pytest.raises(LeakageError, match="2 of 400 test rows"):
        check_no_leakage(base, keys)


def test_leakage_check_refuses_predictions_of_other_splits():
    with pytest.raises(LeakageError, match="not of this dataset"):
        check_no_leakage(_base(n=400), _keys(n_val=399))


# --------------------------------------------------------------------------- out-of-fold logic
def test_oof_predictions_never_include_their_own_fold():
    rng = np.random.default_rng(0)
    X, y = rng.random((200, 4)), rng.integers(0, 2, 200)
    res = make_oof_predictions(X, y, {"num_leaves": 4, "min_data_in_leaf": 5}, n_folds=5, seed=3, max_rounds=50)
    assert np.isfinite(res.oof).all()
    covered = np.concatenate([f.oof_idx for f in res.folds])
    assert np.array_equal(np.sort(covered), np.arange(200))                  # every row predicted once
    for f in res.folds:
        assert not np.intersect1d(f.oof_idx, f.fit_idx).size                 # not fitted on its fold
        assert not np.intersect1d(f.oof_idx, f.stop_idx).size                # nor early-stopped on it
        assert not np.intersect1d(f.fit_idx, f.stop_idx).size
        assert len(f.fit_idx) + len(f.stop_idx) + len(f.oof_idx) == 200


def test_oof_accuracy_on_pure_noise_is_chance():
    """A model that memorised its own fold would score far above chance on noise labels."""
    rng = np.random.default_rng(1)
    X, y = rng.random((400, 8)), rng.integers(0, 2, 400)
    params = {"num_leaves": 31, "min_data_in_leaf": 2, "learning_rate": 0.3}
    res = make_oof_predictions(X, y, params, n_folds=5, seed=0, max_rounds=200, early_stopping_rounds=200)
    assert abs(((res.oof >= 0.5) == y).mean() - 0.5) < 0.1


# ------------------------------------------------------------------------------- comparison
def test_stacking_beats_single_models_on_independent_errors_and_is_reproducible():
    base = _base(m=8, n=500)
    keys = _keys(n_val=500, n_test=500)
    a = evaluate_stacking(base, keys, grid="tiny", n_folds=5, seed=7, n_boot=1000, max_rounds=200)
    b = evaluate_stacking(base, keys, grid="tiny", n_folds=5, seed=7, n_boot=1000, max_rounds=200)
    ha, hb = a.headline(), b.headline()
    assert ha == hb                                                            # same seed, same result
    np.testing.assert_array_equal(a.test_pred["LightGBM stacking"], b.test_pred["LightGBM stacking"])
    assert ha["n_base_models"] == 8
    assert ha["stacking_test_acc"] > ha["best_single_test_acc"] + 0.05
    assert ha["stacking_ci_low"] <= ha["stacking_test_acc"] <= ha["stacking_ci_high"]
    assert ha["stacking_vs_best_p_value"] < 0.01 and ha["goal_met"] and ha["goal_verdict"] == "met"
    assert ha["error_ratio_ci_high"] < 0.8 and ha["error_ratio_ci_low"] <= ha["error_ratio"]
    methods = set(a.comparison["method"])
    assert {"best single (chosen on val)", "top-k average (k chosen on val)", "mean of probabilities",
            "majority vote", "logistic-regression meta", "LightGBM stacking"} <= methods
    assert list(a.paired["reference"]) == list(REFERENCES) and (a.paired["p_holm"] >= a.paired["p_value"]).all()
    assert 1 <= ha["topk_k"] <= 8 and 0 < ha["stacking_vs_topk_p"] <= 1 and 0 < ha["stacking_vs_logreg_meta_p"] <= 1
    imp = a.meta.importance()
    assert abs(imp["gain_share"].sum() - 1) < 1e-9 and set(imp["model"]) == set(base.names)


def test_test_labels_are_only_used_for_scoring():
    """Shuffling the test labels must not change what any method predicts on test."""
    base = _base(m=5, n=300)
    keys = _keys(n_val=300, n_test=300)
    a = evaluate_stacking(base, keys, grid="tiny", seed=1, n_boot=200, max_rounds=100)
    base.test_y = np.random.default_rng(9).permutation(base.test_y)
    b = evaluate_stacking(base, keys, grid="tiny", seed=1, n_boot=200, max_rounds=100)
    for k in a.test_pred:
        np.testing.assert_array_equal(a.test_pred[k], b.test_pred[k])
    assert a.best_single == b.best_single                                     # chosen on validation


def test_best_single_is_chosen_on_validation_not_test():
    base = _base(m=3, n=300)
    # model 0: best on validation, worst on test; model 2: the reverse
    base.val_prob[:, 0] = np.where(base.val_y == 1, 0.9, 0.1)
    base.test_prob[:, 0] = np.where(base.test_y == 1, 0.4, 0.6)
    base.test_prob[:, 2] = np.where(base.test_y == 1, 0.9, 0.1)
    res = evaluate_stacking(base, _keys(n_val=300, n_test=300), grid="tiny", seed=0, n_boot=200, max_rounds=50)
    assert res.best_single == "nb/m0"
    assert res.headline()["best_single_test_acc"] == 0.0


def test_bad_meta_grid_and_labels_are_refused():
    base = _base(m=2, n=100)
    with pytest.raises(WorkbookError, match="meta_grid"):
        train_lgbm_meta(base.val_prob, base.val_y, base.names, grid="huge", threshold=0.5)
    with pytest.raises(WorkbookError, match="both 0 and 1"):
        make_oof_predictions(base.val_prob, np.zeros(100, int), {}, n_folds=5)


# --------------------------------------------------------------------- references and the goal
def test_topk_average_is_chosen_on_validation():
    base = _base(m=6, n=400)
    # two useless models: the top-k average must leave them out
    base.val_prob[:, [1, 4]] = np.random.default_rng(0).random((400, 2))
    order = rank_by_validation(base)
    assert set(order[-2:]) == {1, 4}
    t = choose_topk(base)
    assert t["chosen"].sum() == 1 and list(t["k"]) == list(range(1, 7))
    k = int(t.loc[t["chosen"], "k"].iloc[0])
    assert k <= 4 and t.loc[t["chosen"], "val_acc"].iloc[0] == t["val_acc"].max()
    res = evaluate_stacking(base, _keys(n_val=400, n_test=400), grid="tiny", seed=0, n_boot=200, max_rounds=50)
    top = order[:k]
    np.testing.assert_allclose(res.test_pred[TOPK], base.test_prob[:, top].mean(axis=1))
    assert res.topk_k == k and res.headline()["topk_average_test_acc"] == pytest.approx(
        ((base.test_prob[:, top].mean(axis=1) >= 0.5) == base.test_y).mean())


def test_goal_verdict_comes_from_the_interval():
    assert goal_verdict(0.60, 0.79, 0.8) == "met"
    assert goal_verdict(0.81, 0.95, 0.8) == "missed"
    assert goal_verdict(0.64, 0.80, 0.8) == "undecided"        # the reviewer's case: the upper end touches 0.8
    assert goal_verdict(float("nan"), 0.5, 0.8) == "undecided"


def test_error_ratio_interval_respects_the_unit():
    rng = np.random.default_rng(0)
    n = 3000
    ida, idb = rng.integers(0, 150, n), rng.integers(0, 150, n)
    hard = rng.random(150) < 0.15                  # errors cluster on hard source images: pairs are not independent
    p_err = 0.03 + 0.3 * (hard[ida] | hard[idb])
    err_ref = rng.random(n) < p_err
    # the new model keeps the hard images' errors and fixes most others: the ratio depends on the images drawn
    err_new = err_ref & (rng.random(n) < np.where(hard[ida] | hard[idb], 0.9, 0.2))
    rows = evaluate_error_ratio(err_ref, err_new, ROWS, n_boot=1000, seed=0)
    dyad = evaluate_error_ratio(err_ref, err_new, Unit("source image", (ida, idb)))
    assert rows["ratio"] == dyad["ratio"] == pytest.approx(err_new.mean() / err_ref.mean())
    assert rows["ci_low"] < rows["ratio"] < rows["ci_high"] and dyad["ci_low"] < dyad["ratio"] < dyad["ci_high"]
    assert (dyad["ci_high"] - dyad["ci_low"]) > (rows["ci_high"] - rows["ci_low"])     # wider: shared images
    assert "dyadic" in dyad["method"] and "row bootstrap" in rows["method"]
    clusters = evaluate_error_ratio(err_ref, err_new, Unit("person pair", (ida,)), n_boot=500)
    assert "cluster bootstrap" in clusters["method"]
    assert np.isnan(evaluate_error_ratio(np.zeros(10), np.zeros(10))["ratio"])


def test_paired_table_never_reports_p_zero_and_adjusts_with_holm():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    right = y.astype(float)
    preds = {BEST: 1 - right, TOPK: right.copy(), "majority vote": right.copy(),
             "logistic-regression meta": np.where(rng.random(500) < 0.5, right, 1 - right), STACK: right}
    t = make_paired_table(preds, y, 0.5, ROWS, n_boot=200, seed=0).set_index("reference")
    assert t.loc[BEST, "p_is_bound"] and t.loc[BEST, "p_value"] == pytest.approx(1 / 200)   # p < 1/B, never 0
    assert t.loc[BEST, "verdict"] == "better" and t.loc[TOPK, "verdict"] == "not distinguishable"
    assert (t["p_value"] > 0).all() and (t["p_holm"] >= t["p_value"]).all()


def test_base_predictions_are_found_under_the_dataset_label(tmp_path):
    rng = np.random.default_rng(0)
    vy, ty = rng.integers(0, 2, 20), rng.integers(0, 2, 30)
    write_predictions(tmp_path / "02_stage1" / "pairs-2" / "predictions" / "m.npz", rng.random(20), rng.random(30),
                      vy, ty, threshold=0.5)
    base = load_base_predictions(tmp_path, "/some/where/pairs", label="pairs-2")
    assert base.dataset == "pairs-2" and base.names == ["02_stage1/m"]
