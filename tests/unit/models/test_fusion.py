"""Pair models: every registered model's forward/backward shapes, fusion weights, attention blocks."""
import pytest
import torch

from helpers.models.fusion import AdaptiveFusion, FUSION_BRANCHES
from helpers.models.registry import create_model


# Small kwargs per registered model, and the inputs it takes.
IMAGE = dict(in_channels=1, width_mult=0.125, feat_dim=16)

torch.set_num_threads(1)


def test_fusion_weights_sum_to_one_and_are_learned():
    f = AdaptiveFusion(8)
    with torch.no_grad():
        f.logits.copy_(torch.randn(6))
    w = f.weights().detach()
    assert w.shape == (len(FUSION_BRANCHES),) and float(w.sum()) == pytest.approx(1.0, abs=1e-6)
    assert (w > 0).all()
    out = f(torch.randn(5, 8), torch.randn(5, 8))
    out.sum().backward()
    assert f.logits.grad is not None and f.logits.grad.abs().sum() > 0
    m = create_model("stage1_fusion_cbam", **IMAGE)
    assert sum(m.fusion_weights().values()) == pytest.approx(1.0, abs=1e-6)
