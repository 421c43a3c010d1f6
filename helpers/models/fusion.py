"""Fusing two embeddings: the six-way adaptive fusion with learned weights, and plain concatenation."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from helpers.core.errors import WorkbookError


FUSION_BRANCHES = ("difference", "concatenation", "product", "cosine", "l2", "residual")


class AdaptiveFusion(nn.Module):
    """Six-way fusion of two embeddings (M1) with learned softmax weights.

    Branches, each mapped to ``dim`` and layer-normalised so their scales are comparable:
    difference |a−b|, concatenation W[a;b], product a⊙b, cosine similarity (scalar -> dim),
    L2 distance (scalar -> dim), residual (a+b) + W|a−b|. Output Σ_i w_i·branch_i with
    w = softmax(logits) (the weights sum to 1; ``weights()`` returns them).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.concat = nn.Linear(2 * dim, dim)
        self.cos = nn.Linear(1, dim)
        self.l2 = nn.Linear(1, dim)
        self.res = nn.Linear(dim, dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in FUSION_BRANCHES)
        self.logits = nn.Parameter(torch.zeros(len(FUSION_BRANCHES)))
        self.out_dim = dim

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:   # (B, D), (B, D) -> (B, D)
        diff = (a - b).abs()
        branches = [
            diff,
            self.concat(torch.cat([a, b], 1)),
            a * b,
            self.cos(F.cosine_similarity(a, b, dim=1, eps=1e-6)[:, None]),
            self.l2(torch.sqrt(((a - b) ** 2).sum(1, keepdim=True) + 1e-8)),
            a + b + self.res(diff),
        ]
        stacked = torch.stack([n(x) for n, x in zip(self.norms, branches)], 1)  # (B, 6, D)
        return (stacked * self.weights()[None, :, None]).sum(1)


class ConcatFusion(nn.Module):
    """Plain concatenation [a; b] (order-sensitive, the simplest baseline fusion)."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_dim = 2 * dim

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b], 1)


def _fusion(kind: str, dim: int) -> nn.Module:
    if kind == "adaptive":
        return AdaptiveFusion(dim)
    if kind == "concat":
        return ConcatFusion(dim)
    raise WorkbookError(f"fusion={kind!r}; expected one of adaptive|concat")
