"""helpers.stacking: prediction files, the leakage check, out-of-fold predictions, the comparison."""
from pathlib import Path

import numpy as np
import pytest

from helpers.data.predictions import BasePredictions
from helpers.evaluation.stacking import evaluate_stacking, make_error_correlation
from helpers.stages.stacking import describe_goal, make_goal_table


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


def test_goal_table_and_error_correlation():
    base = _base(m=4, n=300)
    res = evaluate_stacking(base, _keys(n_val=300, n_test=300), grid="tiny", seed=0, n_boot=200, max_rounds=100)
    goal = make_goal_table(res, goal_ratio=0.8, n_boot=200, seed=0)["value"]
    h = res.headline()
    assert goal["error ratio stacking / best single"] == pytest.approx(h["error_ratio"])
    assert goal["error ratio, 95% bootstrap interval low"] <= h["error_ratio"] <= goal["error ratio, 95% bootstrap interval high"]
    assert bool(goal["goal met"]) == h["goal_met"]
    assert "Goal" in describe_goal(make_goal_table(res))
    corr = make_error_correlation(base)
    assert corr.shape == (4, 4) and np.allclose(np.diag(corr), 1)
    # identical models have perfectly correlated errors
    base.val_prob[:, 1] = base.val_prob[:, 0]
    assert make_error_correlation(base).iloc[0, 1] == pytest.approx(1.0)
