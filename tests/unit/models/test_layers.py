"""Pair models: every registered model's forward/backward shapes, fusion weights, attention blocks."""
import torch

from helpers.models.layers import CBAM, SEBlock


torch.set_num_threads(1)


def test_se_matches_formula():
    se = SEBlock(32)
    u = torch.randn(2, 32, 4, 4)
    z = u.mean(dim=(2, 3))
    s = torch.sigmoid(se.fc2(torch.relu(se.fc1(z))))
    torch.testing.assert_close(se(u), u * s[:, :, None, None])
    assert se.fc1.out_features == 2  # r = 16


def test_cbam_matches_formula():
    cb = CBAM(32).eval()
    f = torch.randn(2, 32, 5, 5)
    mlp = cb.mlp
    mc = torch.sigmoid(mlp(f.mean((2, 3), keepdim=True)) + mlp(f.amax((2, 3), keepdim=True)))
    f1 = mc * f
    ms = torch.sigmoid(cb.spatial_bn(cb.spatial(torch.cat([f1.mean(1, keepdim=True), f1.amax(1, keepdim=True)], 1))))
    torch.testing.assert_close(cb(f), ms * f1)
    assert cb.spatial.kernel_size == (7, 7)
