"""Tasks: focal loss against the formula on hand-computed values, metrics, class weights."""
import math

import pytest
import torch
from helpers.core.errors import WorkbookError
from helpers.stages.stage2 import make_balanced_indices
from helpers.training.tasks import BinaryTask, MulticlassTask, binary_focal_loss, make_class_weights, multiclass_focal_loss, with_label_smoothing



def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_binary_focal_matches_hand_computed():
    # logit 0 -> p = 0.5; y = 1: p_t = .5, α_t = .25, FL = .25 * .5^2 * ln 2
    # logit 2, y = 0: p = σ(2), p_t = 1 - p, α_t = .75, FL = .75 * p^2 * -ln(1 - p)
    logits = torch.tensor([0.0, 2.0])
    y = torch.tensor([1.0, 0.0])
    p = _sig(2.0)
    want = [0.25 * 0.25 * math.log(2), 0.75 * p ** 2 * -math.log(1 - p)]
    got = binary_focal_loss(logits, y, alpha=0.25, gamma=2.0, reduction="none")
    assert got.tolist() == pytest.approx(want, rel=1e-5)
    assert float(binary_focal_loss(logits, y, 0.25, 2.0)) == pytest.approx(sum(want) / 2, rel=1e-5)


def test_binary_focal_alpha_disabled_and_gamma0_is_bce():
    logits = torch.tensor([-1.0, 0.3, 3.0])
    y = torch.tensor([0.0, 1.0, 1.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert float(binary_focal_loss(logits, y, alpha=-1, gamma=0.0)) == pytest.approx(float(bce), rel=1e-6)
    # α = 1 in the exact formula ignores every negative row (α_t = 0 there)
    per = binary_focal_loss(logits, y, alpha=1.0, gamma=2.0, reduction="none")
    assert float(per[0]) == 0.0 and float(per[1]) > 0


def test_multiclass_focal_matches_hand_computed():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    e = math.exp(2)
    p0 = e / (e + 2)
    want = [(1 - p0) ** 2 * -math.log(p0), (2 / 3) ** 2 * -math.log(1 / 3)]
    got = multiclass_focal_loss(logits, y, gamma=2.0, reduction="none")
    assert got.tolist() == pytest.approx(want, rel=1e-5)
    alpha = torch.tensor([0.5, 1.0, 2.0])
    got_a = multiclass_focal_loss(logits, y, alpha=alpha, gamma=2.0, reduction="none")
    assert got_a.tolist() == pytest.approx([0.5 * want[0], 2.0 * want[1]], rel=1e-5)


def test_binary_task_metrics_and_shapes():
    t = BinaryTask()
    out = torch.tensor([[2.0], [-2.0], [1.0], [-1.0]])
    y = torch.tensor([1, 0, 0, 1])
    m = t.metrics(out, y)
    assert m["primary"] == "accuracy"
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert t.predict(out).shape == (4,)
    assert torch.isfinite(t.loss(out, y))
    with pytest.raises(WorkbookError):
        t.loss(torch.zeros(4, 3), y)


def test_binary_focal_task_and_label_smoothing():
    t = BinaryTask(loss_name="focal", alpha=-1, gamma=2.0)
    out, y = torch.tensor([0.0, 2.0]), torch.tensor([1, 0])
    assert float(t.loss(out, y)) == pytest.approx(float(binary_focal_loss(out, y.float(), -1, 2.0)))
    ls = with_label_smoothing(BinaryTask(), 0.1)
    assert ls.label_smoothing == 0.1
    # smoothing moves the optimum away from saturated logits: loss at a large correct logit grows
    big = torch.tensor([20.0])
    assert float(ls.loss(big, torch.tensor([1]))) > float(BinaryTask().loss(big, torch.tensor([1])))


def test_multiclass_task_ce_weights_ignore_and_metrics():
    t = MulticlassTask(3, class_weights=[1.0, 2.0, 0.5], label_smoothing=0.0)
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0], [0, 0, 0]])
    y = torch.tensor([0, 1, 0, 0, -1])  # last row ignored
    want = torch.nn.functional.cross_entropy(logits[:4], y[:4], weight=torch.tensor([1.0, 2.0, 0.5]))
    assert float(t.loss(logits, y)) == pytest.approx(float(want))
    m = t.metrics(logits, y)
    assert m["accuracy"] == pytest.approx(0.75)
    # class 0: P=1, R=2/3; class 1: P=R=1; class 2 absent from targets -> excluded from macro
    f0 = 2 * 1 * (2 / 3) / (1 + 2 / 3)
    assert m["f1"] == pytest.approx((f0 + 1) / 2)
    assert t.predict(logits).sum(1).tolist() == pytest.approx([1.0] * 5)
    tf = MulticlassTask(3, loss_name="focal")
    assert torch.isfinite(tf.loss(logits, y))


def test_class_weights_and_bad_args():
    w = make_class_weights(torch.tensor([0, 0, 0, 1, -1]), 3)
    assert w.tolist() == pytest.approx([4 / 9, 4 / 3, 0.0])
    with pytest.raises(WorkbookError):
        BinaryTask(loss_name="hinge")
    with pytest.raises(WorkbookError):
        MulticlassTask(3, class_weights=[1.0, 2.0])


def test_balanced_indices_for_type_classes():
    import numpy as np


    y = np.array([0] * 10 + [1] * 3 + [2] * 1)
    over = make_balanced_indices(y, "oversample", seed=0)
    assert np.bincount(y[over]).tolist() == [10, 10, 10]
    assert set(np.flatnonzero(y == 0)) <= set(over)          # no original row dropped
    under = make_balanced_indices(y, "undersample", seed=0)
    assert np.bincount(y[under]).tolist() == [1, 1, 1]
    assert make_balanced_indices(y, "none").tolist() == list(range(14))
    with pytest.raises(WorkbookError):
        make_balanced_indices(y, "smote")
