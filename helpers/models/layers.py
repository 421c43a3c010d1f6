"""Attention and residual blocks: SE, CBAM (see docs/method.md for the exact definitions), basic and
bottleneck blocks."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helpers.core.errors import WorkbookError


class SEBlock(nn.Module):
    """Squeeze-and-excitation: z = mean_HW(u), s = σ(W2·ReLU(W1·z)), out = s_c · u_c."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, u: torch.Tensor) -> torch.Tensor:          # u: (B, C, H, W)
        z = u.mean(dim=(2, 3))                                     # (B, C)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(z))))           # (B, C)
        return u * s[:, :, None, None]


class CBAM(nn.Module):
    """Convolutional block attention: channel attention (shared MLP on avg- and max-pooled
    features), then spatial attention (7×7 conv + BN on [mean_c; max_c])."""

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, channels, 1))   # W1·ReLU(W0·x), shared
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:           # f: (B, C, H, W)
        avg = self.mlp(f.mean(dim=(2, 3), keepdim=True))           # (B, C, 1, 1)
        mx = self.mlp(f.amax(dim=(2, 3), keepdim=True))
        f = f * torch.sigmoid(avg + mx)                            # F' = M_c(F) ⊗ F
        s = torch.cat([f.mean(dim=1, keepdim=True), f.amax(dim=1, keepdim=True)], 1)  # (B, 2, H, W)
        return f * torch.sigmoid(self.spatial_bn(self.spatial(s)))  # F'' = M_s(F') ⊗ F'


def _attention(kind: str, channels: int) -> nn.Module:
    if kind == "se":
        return SEBlock(channels)
    if kind == "cbam":
        return CBAM(channels)
    if kind == "none":
        return nn.Identity()
    raise WorkbookError(f"attention={kind!r}; expected one of none|se|cbam")


class BasicBlock(nn.Module):
    """3×3-3×3 residual block; attention on the residual branch before the addition."""

    def __init__(self, cin: int, cout: int, stride: int = 1, attention: str = "none"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.att = _attention(attention, cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.att(self.bn2(self.conv2(y)))
        return F.relu(y + self.short(x))


class BottleneckBlock(nn.Module):
    """1×1 reduce (cout/4) - 3×3 - 1×1 expand residual block; attention before the addition."""

    def __init__(self, cin: int, cout: int, stride: int = 1, attention: str = "none"):
        super().__init__()
        mid = max(8, cout // 4)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.att = _attention(attention, cout)
        self.short = (nn.Identity() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.att(self.bn3(self.conv3(y)))
        return F.relu(y + self.short(x))
