"""Encoders that embed one input: a small-image residual CNN (optionally with a feature pyramid), an MLP
for feature vectors, and a timm backbone with a projection (weights from a local file only)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.models.layers import BasicBlock, BottleneckBlock
from helpers.models.multitask import _create_timm_backbone


class ResNetEncoder(nn.Module):
    """Small-image residual CNN: 3×3 stem (no pooling, inputs are 8–64 px), stages of blocks with
    widths base·width_mult·2^i (stride 2 from the second stage), global average pooling, linear
    projection to ``feat_dim``. ``fpn=True`` adds a top-down feature pyramid over the stage outputs
    and pools every level (multi-scale). ``stem_stride`` 2 halves the stem's output in each direction
    (4x fewer positions in every stage: for larger inputs such as 64 x 32 person crops on a CPU)."""

    def __init__(self, in_channels: int = 1, layers: Sequence[int] = (2, 2, 2), width_mult: float = 1.0,
                 base_width: int = 64, bottleneck: bool = False, attention: str = "none",
                 feat_dim: int = 256, fpn: bool = False, stem_stride: int = 1):
        super().__init__()
        layers = [int(v) for v in layers]
        if not layers or min(layers) < 1:
            raise WorkbookError(f"layers={layers}; expected a non-empty list of block counts >= 1 (e.g. 2,2,2)")
        if width_mult <= 0:
            raise WorkbookError(f"width_mult={width_mult}; expected > 0")
        if stem_stride not in (1, 2):
            raise WorkbookError(f"stem_stride={stem_stride}; expected 1 or 2")
        widths = [max(8, int(round(base_width * width_mult * 2 ** i))) for i in range(len(layers))]
        block = BottleneckBlock if bottleneck else BasicBlock
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, int(stem_stride), 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(layers, widths)):
            blocks = [block(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1, attention) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fpn = fpn
        if fpn:
            d = widths[-1] // 2
            self.lateral = nn.ModuleList(nn.Conv2d(w, d, 1) for w in widths)
            self.smooth = nn.ModuleList(nn.Conv2d(d, d, 3, 1, 1) for _ in widths)
            pooled = d * len(widths)
        else:
            pooled = widths[-1]
        self.proj = nn.Sequential(nn.Linear(pooled, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True))
        self.out_dim = feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # x: (B, C, H, W) -> (B, feat_dim)
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        if not self.fpn:
            return self.proj(x.mean(dim=(2, 3)))
        top = self.lateral[-1](feats[-1])
        levels = [self.smooth[-1](top)]
        for i in range(len(feats) - 2, -1, -1):                      # top-down: upsample and add
            top = self.lateral[i](feats[i]) + F.interpolate(top, size=feats[i].shape[-2:], mode="nearest")
            levels.append(self.smooth[i](top))
        return self.proj(torch.cat([lv.mean(dim=(2, 3)) for lv in levels], 1))


class MLPEncoder(nn.Module):
    """Feature-vector encoder: BatchNorm on the raw inputs (standardises mixed units), then
    Linear-ReLU-Dropout layers, then a projection to ``feat_dim``."""

    def __init__(self, in_features: int, hidden: Sequence[int] = (128, 128), feat_dim: int = 256,
                 dropout: float = 0.1):
        super().__init__()
        if in_features < 1:
            raise WorkbookError(f"in_features={in_features}; expected >= 1")
        layers: list[nn.Module] = [nn.BatchNorm1d(in_features)]
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, int(h)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = int(h)
        layers += [nn.Linear(d, feat_dim), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)
        self.out_dim = feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # (B, F) -> (B, feat_dim)
        return self.net(x.flatten(1))


class TimmEncoder(nn.Module):
    """A timm backbone (pooled features, weights only from a local file; random without one) with a
    linear projection to ``feat_dim``: the crop encoder of `helpers.models.pair`'s ``siamese_crops``
    when a backbone name is given."""

    def __init__(self, name: str, weights_file: str = "", feat_dim: int = 128):
        super().__init__()
        self.backbone = _create_timm_backbone(name, weights_file or None, None)
        n = int(getattr(self.backbone, "num_features", 0))
        if n < 1:
            raise WorkbookError(f"timm backbone {name!r} reports no num_features; pick a classification backbone")
        self.proj = nn.Sequential(nn.Linear(n, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True))
        self.out_dim = feat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # (B, 3, H, W) -> (B, feat_dim)
        return self.proj(self.backbone(x))
