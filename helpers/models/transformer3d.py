"""The 3D transformer of notebook 07 (per-frame tokens of feature and keypoints), registered as ``transformer3d``."""
from __future__ import annotations

import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.models.registry import register_model


class Transformer3D(nn.Module):
    """M4's 3D transformer: per-frame tokens (feature ⊕ flattened keypoints) -> encoder ->
    mean over frames -> predicted frontal feature.

    forward(frames [B, T, D], keypoints [B, T, P, C]) -> [B, out_dim].
    """

    def __init__(self, feat_dim: int, kp_dim: int, out_dim: int, d_model: int = 512, nhead: int = 8,
                 num_layers: int = 4, dim_feedforward: int = 2048, dropout: float = 0.15,
                 max_frames: int = 64):
        super().__init__()
        if d_model % nhead:
            raise WorkbookError(f"d_model={d_model} is not divisible by nhead={nhead}")
        self.embed = nn.Linear(feat_dim + kp_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_frames, d_model))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)

    def forward(self, frames: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        tok = torch.cat([frames, keypoints.reshape(b, t, -1)], dim=-1)          # [B, T, D + P·C]
        h = self.embed(tok) + self.pos[:, :t]                                    # [B, T, d_model]
        h = self.encoder(h)                                                      # [B, T, d_model]
        return self.head(self.norm(h.mean(1)))                                   # [B, out_dim]


@register_model("transformer3d")
def _transformer3d(feat_dim: int, kp_dim: int, out_dim: int, d_model: int = 512, nhead: int = 8,
                   num_layers: int = 4, dim_feedforward: int = 2048, dropout: float = 0.15,
                   max_frames: int = 64) -> nn.Module:
    return Transformer3D(feat_dim, kp_dim, out_dim, d_model, nhead, num_layers, dim_feedforward, dropout, max_frames)
