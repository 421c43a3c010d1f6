"""Unit tests of helpers/training/multitask.py: summed losses, per-task scores, chance levels and the
chance-normalised combined score (notebook 06)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.core.taskspec import make_task_specs
from helpers.training.multitask import chance_normalise, MultiTask
from helpers.training.tasks import binary_counts, MulticlassTask


torch.set_num_threads(1)


def _perfect(y: torch.Tensor, n_classes: int = 3) -> torch.Tensor:
    """Logits that get every labelled row of ``d:multiclass:3, p:binary, r:regression`` right."""
    out = torch.zeros(len(y), n_classes + 2)
    lab = ~torch.isnan(y[:, 0])
    out[torch.arange(len(y))[lab], y[lab, 0].long()] = 20.0
    out[:, n_classes] = torch.where(y[:, 1] > 0, 20.0, -20.0)
    out[:, n_classes + 1] = torch.nan_to_num(y[:, 2])
    return out


def test_multitask_loss_metrics_and_missing_labels():
    specs = make_task_specs(["d:multiclass:3", "p:binary", "r:regression"], [1.0, 2.0, 0.5])
    task = MultiTask(specs, {"r": 10.0}, {"r": 2.0})
    y = torch.tensor([[0, 1, 12.0], [2, 0, 8.0], [1, 1, 10.0], [float("nan"), 0, float("nan")]])
    # Perfect logits: class one-hot, binary ±20, regression = standardised target.
    out = torch.zeros(4, 5)
    out[torch.arange(3), y[:3, 0].long()] = 20.0
    out[:, 3] = torch.where(y[:, 1] > 0, 20.0, -20.0)
    out[:3, 4] = (y[:3, 2] - 10.0) / 2.0
    m = task.metrics(out, y)
    assert m["primary"] == "combined"
    assert m["d_macro_f1"] == pytest.approx(1.0) and m["p_f1"] == pytest.approx(1.0)
    assert m["r_r2"] == pytest.approx(1.0) and m["combined"] == pytest.approx(1.0)
    assert float(task.loss(out, y)) < 1e-6
    # The weighted sum: each task's loss times its weight; NaN rows are skipped, not zero-filled.
    parts = task.task_losses(torch.zeros(4, 5), y)
    assert float(parts["d"]) == pytest.approx(math.log(3), rel=1e-5)
    assert float(parts["p"]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(parts["r"]) == pytest.approx(float(((y[:3, 2] - 10) / 2).pow(2).mean()), rel=1e-5)
    total = float(task.loss(torch.zeros(4, 5), y))
    assert total == pytest.approx(float(parts["d"] + 2 * parts["p"] + 0.5 * parts["r"]), rel=1e-5)
    p = task.predict(out)
    assert p.shape == (4, 5) and torch.allclose(p[:, :3].sum(1), torch.ones(4))
    assert torch.allclose(p[:3, 4], y[:3, 2])
    with pytest.raises(WorkbookError, match="expected \\[N, 5\\]"):
        task.loss(torch.zeros(4, 4), y)


def test_chance_levels_are_computed_from_the_labels_of_the_split():
    task = MultiTask(make_task_specs(["d:multiclass:3", "p:binary", "r:regression"]))
    # d: classes 0,0,1,2 (3 present, majority share 1/2); p: 1 of 4 positive; r: any values.
    y = torch.tensor([[0, 1, 1.0], [0, 0, 2.0], [1, 0, 3.0], [2, 0, 5.0]])
    m = task.metrics(_perfect(y), y)
    # Macro-F1: shuffled labels expect 1/K = 1/3; the best constant (class 0) gets 2p/(1+p)/K = 2/9.
    assert m["d_chance"] == pytest.approx(1 / 3)
    # Binary F1: always answering positive gets 2p/(1+p) with p = 1/4.
    assert m["p_chance"] == pytest.approx(0.4)
    assert m["r_chance"] == 0.0
    assert all(m[f"{t}_norm"] == pytest.approx(1.0) for t in "dpr") and m["combined"] == pytest.approx(1.0)


def test_information_free_predictors_score_at_or_below_zero():
    torch.manual_seed(0)
    task = MultiTask(make_task_specs(["d:multiclass:4", "p:binary", "r:regression"]))
    n = 400
    y = torch.stack([torch.randint(0, 4, (n,)).float(), (torch.rand(n) < 0.3).float(), torch.randn(n)], 1)
    const = torch.zeros(n, 6)
    const[:, 0], const[:, 4], const[:, 5] = 10.0, 10.0, float(y[:, 2].mean())   # one class, "positive", the mean
    m = task.metrics(const, y)
    assert m["d_norm"] < 0
    assert m["p_norm"] == pytest.approx(0.0, abs=1e-9) and m["r_norm"] == pytest.approx(0.0, abs=1e-9)
    shuffled = []
    for s in range(30):   # shuffled labels: no information, so about 0 on average
        perm = y[torch.from_numpy(np.random.default_rng(s).permutation(n))]
        o = torch.zeros(n, 6)
        o[torch.arange(n), perm[:, 0].long()] = 10.0
        o[:, 4] = torch.where(perm[:, 1] > 0, 10.0, -10.0)
        o[:, 5] = perm[:, 2]
        shuffled.append([task.metrics(o, y)[k] for k in ("d_norm", "p_norm", "r_norm")])
    mean = np.mean(shuffled, axis=0)
    assert abs(mean[0]) < 0.03 and mean[1] < 0 and mean[2] < -0.5, "shuffled regression values: R² ≈ -1"


def test_scores_match_the_single_task_metrics_and_r2_is_not_clipped():
    torch.manual_seed(1)
    task = MultiTask(make_task_specs(["d:multiclass:5", "p:binary", "r:regression"]))
    n = 200
    y = torch.stack([torch.randint(0, 5, (n,)).float(), (torch.rand(n) < 0.4).float(), torch.randn(n)], 1)
    out = torch.randn(n, 7) * 3
    m = task.metrics(out, y)
    assert m["d_macro_f1"] == pytest.approx(MulticlassTask(5).metrics(out[:, :5], y[:, 0].long())["f1"])
    assert m["d_accuracy"] == pytest.approx(MulticlassTask(5).metrics(out[:, :5], y[:, 0].long())["accuracy"])
    assert m["p_f1"] == pytest.approx(binary_counts((out[:, 5] >= 0).long(), y[:, 1].long())["f1"])
    r2 = 1 - float(((out[:, 6] - y[:, 2]) ** 2).sum() / ((y[:, 2] - y[:, 2].mean()) ** 2).sum())
    assert m["r_r2"] == pytest.approx(r2, rel=1e-6) and m["r_r2"] < -1, "a bad regressor goes below 0"
    assert m["combined"] == pytest.approx(np.mean([m["d_norm"], m["p_norm"], m["r_norm"]]))
    assert m["d_norm"] == pytest.approx((m["d_macro_f1"] - m["d_chance"]) / (1 - m["d_chance"]))
    # One class only: chance is perfect, nothing can be learnt, the normalised score is 0 (not a division by 0).
    assert float(chance_normalise(torch.tensor([1.0]), torch.tensor([1.0]))[0]) == 0.0


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    torch.manual_seed(2)
    task = MultiTask(make_task_specs(["d:multiclass:3", "r:regression"]))
    n = 300
    y = torch.stack([torch.randint(0, 3, (n,)).float(), torch.randn(n)], 1)
    y[::7, 0] = float("nan")                  # missing labels are skipped in every resample
    out = torch.zeros(n, 4)
    good = torch.rand(n) < 0.7               # right 70% of the time
    label = torch.nan_to_num(y[:, 0]).long()
    out[torch.arange(n), torch.where(good, label, (label + 1) % 3)] = 5.0
    out[:, 3] = y[:, 1] + 0.5 * torch.randn(n)
    pred = task.predict(out)
    point = task.evaluate_predictions(pred, y)["combined"]
    assert point == pytest.approx(task.metrics(out, y)["combined"])
    boot = task.bootstrap_scores(pred, y, n_boot=500, seed=3)
    b1, b2 = boot["combined"], task.bootstrap_scores(pred, y, n_boot=500, seed=3)["combined"]
    assert set(boot) == {"d_norm", "r_norm", "combined"} and b1.shape == (500,) and np.array_equal(b1, b2)
    assert np.allclose(b1, (boot["d_norm"] + boot["r_norm"]) / 2)
    lo, hi = np.quantile(b1, [0.025, 0.975])
    assert lo < point < hi and hi - lo < 0.2
    assert abs(b1.mean() - point) < 0.02
