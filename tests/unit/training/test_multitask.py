"""Unit tests of helpers/backbones.py (notebook 06): tasks, models, table loader, benchmark, reports."""
from __future__ import annotations

import math

import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.core.taskspec import make_task_specs
from helpers.training.multitask import MultiTask


torch.set_num_threads(1)


def test_multitask_loss_metrics_and_missing_labels():
    specs = make_task_specs(["d:multiclass:3", "p:binary", "r:regression"], [1.0, 2.0, 0.5])
    task = MultiTask(specs, {"r": 10.0}, {"r": 2.0})
    y = torch.tensor([[0, 1, 12.0], [2, 0, 8.0], [1, 1, 10.0], [float("nan"), 0, float("nan")]])
    # Perfect logits: class one-hot, binary ±5, regression = standardised target.
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
