"""helpers.training.distill: M1's distillation loss (T² · KL of the softened probabilities, soft and hard
weights), rows without a teacher target, the targets, and a student trained by the one training loop."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.core.errors import WorkbookError
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.distill import binary_kl, DistillTask, make_distill_targets
from helpers.training.loop import predict, train_model
from helpers.training.tasks import BinaryTask


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_loss_is_m1s_formula_row_by_row():
    task = DistillTask(temperature=3.0, soft_weight=0.7, hard_weight=0.3)
    z = torch.tensor([2.0, -1.0, 0.5])
    pt = np.array([0.9, 0.2, 0.5])
    y = np.array([1, 0, 0])
    target = torch.from_numpy(make_distill_targets(y, pt))
    want = []
    for zi, pi, yi in zip(z.tolist(), pt, y):
        zt = math.log(pi / (1 - pi))
        p, q = _sig(zt / 3), _sig(zi / 3)
        kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
        ce = -(yi * math.log(_sig(zi)) + (1 - yi) * math.log(1 - _sig(zi)))
        want.append(0.7 * 9 * kl + 0.3 * ce)
    assert float(task.loss(z, target)) == pytest.approx(np.mean(want), rel=1e-5)
    terms = task.loss_terms(z, target)
    assert terms["has_teacher"].tolist() == [1, 1, 1] and float(terms["soft"][2]) == pytest.approx(9 * binary_kl(
        torch.tensor(0.0), torch.tensor(0.5 / 3)).item(), rel=1e-5)


def test_rows_without_a_teacher_target_and_the_undistilled_student():
    z = torch.tensor([1.5, -0.3, 0.2, -2.0])
    y = np.array([1, 1, 0, 0])
    target = torch.from_numpy(make_distill_targets(y, np.array([0.8, np.nan, np.nan, 0.1])))
    task = DistillTask()
    terms = task.loss_terms(z, target)
    assert terms["has_teacher"].tolist() == [1, 0, 0, 1] and terms["soft"][1] == 0
    per = terms["has_teacher"] * (0.7 * terms["soft"] + 0.3 * terms["hard"]) + (1 - terms["has_teacher"]) * terms["hard"]
    assert float(task.loss(z, target)) == pytest.approx(float(per.mean()))
    # soft weight 0: exactly the hard cross-entropy (the same student without the teacher)
    plain = DistillTask(soft_weight=0.0, hard_weight=1.0)
    assert float(plain.loss(z, target)) == pytest.approx(float(BinaryTask().loss(z, torch.tensor(y))), rel=1e-6)
    focal = DistillTask(soft_weight=0.0, hard_weight=1.0, hard_loss="focal", focal_gamma=2.0)
    assert float(focal.loss(z, target)) == pytest.approx(float(BinaryTask("focal").loss(z, torch.tensor(y))), rel=1e-6)
    # a one-column target (labels only, e.g. for validation) is the hard term alone
    assert float(task.loss(z, torch.tensor(y, dtype=torch.float32))) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(z, torch.tensor(y, dtype=torch.float32))), rel=1e-6)
    assert task.metrics(z, target)["accuracy"] == pytest.approx(0.5)      # scored on the labels
    assert task.predict(z).tolist() == pytest.approx(torch.sigmoid(z).tolist())


def test_the_soft_term_pulls_the_student_to_the_teacher_and_scales_with_t_squared():
    target = torch.from_numpy(make_distill_targets(np.array([1]), np.array([0.7])))
    soft_only = DistillTask(soft_weight=1.0, hard_weight=0.0)
    zt = math.log(0.7 / 0.3)
    z = torch.tensor([zt], requires_grad=True)
    loss = soft_only.loss(z, target)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0, abs=1e-7) and float(z.grad) == pytest.approx(0, abs=1e-6)
    # gradient of T²·KL w.r.t. the student logit is T·(σ(z/T) − σ(z_t/T)): it does not vanish as T grows
    for T in (1.0, 3.0, 10.0):
        z = torch.tensor([zt + 2.0], requires_grad=True)
        DistillTask(temperature=T, soft_weight=1.0, hard_weight=0.0).loss(z, target).backward()
        assert float(z.grad) == pytest.approx(T * (_sig((zt + 2) / T) - _sig(zt / T)), rel=1e-4)


def test_targets_and_settings_are_checked():
    t = make_distill_targets(np.array([0, 1]), None)
    assert t.shape == (2, 2) and np.isnan(t[:, 1]).all() and t.dtype == np.float32
    with pytest.raises(WorkbookError, match=r"\[0, 1\]"):
        make_distill_targets(np.array([0, 1]), np.array([0.5, 1.5]))
    with pytest.raises(WorkbookError, match="0 or 1"):
        make_distill_targets(np.array([0, 2]), np.array([0.5, 0.5]))
    with pytest.raises(WorkbookError, match="teacher probabilities for"):
        make_distill_targets(np.array([0, 1]), np.array([0.5]))
    for bad in ({"temperature": 0}, {"soft_weight": 0, "hard_weight": 0}, {"soft_weight": -1}, {"hard_loss": "mse"}):
        with pytest.raises(WorkbookError):
            DistillTask(**bad)


def test_a_student_trains_on_soft_targets_with_the_loop(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n = 96
    xa = rng.random((n, 1, 8, 8), dtype=np.float32)
    xb = rng.random((n, 1, 8, 8), dtype=np.float32)
    y = np.tile([0, 1], n // 2)
    teacher = np.where(np.arange(n) % 3 == 0, np.nan, np.clip(y * 0.8 + 0.1, 0, 1))
    target = make_distill_targets(y, teacher)
    model = create_model("siamese_resnet", in_channels=1, layers=[1, 1, 1], width_mult=0.125, feat_dim=8)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3, patience=0, monitor="accuracy", log_every=0, checkpoint=False)
    res = train_model(model, DistillTask(), (xa, xb, target), (xa[:32], xb[:32], target[:32]), cfg, out_dir=tmp_path)
    assert len(res.history) == 2 and "accuracy" in res.history[0] and (tmp_path / "history.json").is_file()
    assert list(tmp_path.glob("events.out.tfevents.*"))
    p = predict(model, DistillTask(), (xa, xb))
    assert p.shape == (n,) and ((p >= 0) & (p <= 1)).all()
