"""helpers.stages.stacking: the goal table and its verdict, the paired view, the answer, the leakage record."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers.data.predictions import BasePredictions
from helpers.evaluation.stacking import check_no_leakage, evaluate_stacking, make_error_correlation
from helpers.stages.stacking import (describe_answer, describe_goal, describe_paired, describe_topk,
                                     make_answer_headline, make_goal_table, make_leakage_record, make_metrics_view,
                                     make_paired_view,
                                     top_by_validation)


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
                           [list(trained_on)] * m, ["train_holdout"] * m, [None] * m)


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
    text = describe_answer(res)
    assert text.count("Holm") >= 4 and "top-" in text and "p = 0 " not in text and "p = 0.0 " not in text
    assert len(make_answer_headline(res)) == 3
    shown = make_metrics_view(pd.DataFrame({"value": list(h.values())}, index=list(h)))
    assert str(shown.loc["stacking_vs_topk_p", "value"]).startswith("p ") and shown.loc["n_base_models", "value"] == 4
    view = make_paired_view(res)
    assert list(view.index) == list(res.paired["reference"]) and "p (Holm)" in view.columns
    assert "4 tests" in describe_paired(res) and "best base models by validation" in describe_topk(res)
    assert top_by_validation(base, 2)[0] == res.best_single and len(top_by_validation(base, 2)) == 2
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
