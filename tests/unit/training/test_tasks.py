"""The curve doctor (helpers.diagnose) and notebook 07's data, model and task (helpers.plateau).

Tasks: focal loss against the formula on hand-computed values, metrics, class weights.

The training loop: resume, checkpoints, schedules, tasks of any kind, inputs of any shape."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from helpers.core.errors import WorkbookError
from helpers.data.pairs import load_npz_pairs
from helpers.models.registry import create_model
from helpers.models.transformer3d import Transformer3D
from helpers.training.config import TrainConfig
from helpers.training.loop import train_model
from helpers.training.tasks import (binary_focal_loss, BinaryTask, make_class_weights, multiclass_focal_loss,
                                    MulticlassTask, RegressionTask, with_label_smoothing)


def _sig(x):
    return 1 / (1 + math.exp(-x))

def _small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return create_model("siamese_resnet", in_channels=1, layers=(1, 1), width_mult=0.125, feat_dim=16, **kw)

def _cfg(**kw):
    base = dict(epochs=4, batch_size=16, lr=3e-3, patience=0, log_every=0, seed=3, warmup_epochs=1)
    base.update(kw)
    return TrainConfig(**base)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------ model and task
def test_transformer_shapes_and_task():
    m = Transformer3D(feat_dim=8, kp_dim=10, out_dim=8, d_model=16, nhead=2, num_layers=1,
                         dim_feedforward=32, dropout=0.0)
    out = m(torch.randn(3, 5, 8), torch.randn(3, 5, 5, 2))
    assert out.shape == (3, 8)
    task = RegressionTask(mse_weight=0.2, cosine_weight=0.8)
    tgt = torch.randn(3, 8)
    assert float(task.loss(tgt, tgt)) == pytest.approx(0.0, abs=1e-6)
    assert float(task.loss(-tgt, tgt)) == pytest.approx(0.2 * float((4 * tgt ** 2).mean()) + 0.8 * 2, rel=1e-5)
    met = task.metrics(tgt, tgt)
    assert met["primary"] == "cos" and met["cos"] == pytest.approx(1.0) and met["mse"] == pytest.approx(0.0)
    with pytest.raises(WorkbookError):
        RegressionTask(mse_weight=0, cosine_weight=0)
    with pytest.raises(WorkbookError, match="divisible"):
        Transformer3D(8, 10, 8, d_model=10, nhead=4)


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


def test_uint8_npz_without_ids_trains(tmp_path):
    rng = np.random.default_rng(0)
    xa = rng.integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
    xb = rng.integers(0, 256, size=(40, 1, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 2, size=40)
    np.savez(tmp_path / "train.npz", xa=xa, xb=xb, y=y)

    s = load_npz_pairs(tmp_path / "train.npz")   # the loader every notebook uses
    assert s.ida is None and s.xa.dtype == np.float32 and float(s.xa.max()) <= 1.0
    res = train_model(_small_model(), BinaryTask(), (s.xa, s.xb, s.y), (s.xa, s.xb, s.y), _cfg(epochs=1))
    assert math.isfinite(res.history[0]["train_loss"])
