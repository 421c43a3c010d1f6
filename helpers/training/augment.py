"""Pair augmentation on the device: one random affine warp per image, a whole batch in one call."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_images(x: torch.Tensor, generator: torch.Generator, rotation: float = 15.0,
                   translate: float = 0.1, crop_scale: tuple[float, float] = (0.9, 1.0)) -> torch.Tensor:
    """Random rotation, translation and resized crop of a batch [B, C, H, W], one affine warp per
    image, all in one ``grid_sample`` call. Parameters are drawn on CPU from ``generator``."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator)                         # [B, 4] in [0, 1)
    angle = (u[:, 0] * 2 - 1) * math.radians(rotation)
    # Resized crop keeping an area fraction s: zoom in by sqrt(s) (grid coordinates shrink).
    scale = torch.sqrt(crop_scale[0] + u[:, 1] * (crop_scale[1] - crop_scale[0]))
    t = (u[:, 2:] * 2 - 1) * translate * 2                            # grid spans [-1, 1] = 2 units
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1),
                         torch.stack([sin, cos, t[:, 1]], 1)], 1)     # [B, 2, 3]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
