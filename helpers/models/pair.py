"""Pair models: a shared (siamese) encoder on both inputs, a fusion of the two embeddings, optional
pair-level features, a binary or K-class head. Registered by name in `helpers.models.registry`."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.models.encoders import MLPEncoder, ResNetEncoder
from helpers.models.fusion import _fusion, AdaptiveFusion, FUSION_BRANCHES
from helpers.models.registry import register_model


def _head(din: int, num_classes: int, dropout: float) -> nn.Module:
    hid = max(16, din // 2)
    return nn.Sequential(nn.Linear(din, hid), nn.ReLU(inplace=True), nn.Dropout(dropout),
                         nn.Linear(hid, 1 if num_classes <= 2 else num_classes))


class SiamesePairModel(nn.Module):
    """Shared encoder on both inputs -> fusion -> (+ pair features) -> head.

    Outputs [B] logits when ``num_classes`` is 1 or 2 (binary), else [B, num_classes].
    """

    def __init__(self, encoder: nn.Module, fusion: str = "adaptive", num_classes: int = 1,
                 dropout: float = 0.2, pair_dim: int = 0, pair_hidden: int = 64):
        super().__init__()
        self.encoder = encoder
        self.fusion = _fusion(fusion, encoder.out_dim)
        self.pair_dim = int(pair_dim)
        din = self.fusion.out_dim
        if self.pair_dim:
            self.pair_net = nn.Sequential(nn.BatchNorm1d(self.pair_dim), nn.Linear(self.pair_dim, pair_hidden),
                                          nn.ReLU(inplace=True))
            din += pair_hidden
        self.num_classes = int(num_classes)
        self.head = _head(din, num_classes, dropout)

    def embed(self, xa: torch.Tensor, xb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One encoder pass over both halves: (2B, ...) -> (2B, D), shared BN statistics.
        e = self.encoder(torch.cat([xa, xb], 0))
        return e[: xa.shape[0]], e[xa.shape[0]:]

    def forward(self, xa: torch.Tensor, xb: torch.Tensor, pair: torch.Tensor | None = None) -> torch.Tensor:
        ea, eb = self.embed(xa, xb)
        z = self.fusion(ea, eb)
        if self.pair_dim:
            if pair is None:
                raise WorkbookError(f"model built with pair_dim={self.pair_dim}: call model(xa, xb, pair)")
            z = torch.cat([z, self.pair_net(pair.flatten(1))], 1)
        out = self.head(z)
        return out[:, 0] if out.shape[1] == 1 else out

    def fusion_weights(self) -> dict[str, float] | None:
        if isinstance(self.fusion, AdaptiveFusion):
            return dict(zip(FUSION_BRANCHES, self.fusion.weights().detach().cpu().tolist()))
        return None


class SingleInputModel(nn.Module):
    """Encoder -> head for one input (``model(x)``), e.g. to check an encoder on single images."""

    def __init__(self, encoder: nn.Module, num_classes: int = 1, dropout: float = 0.2):
        super().__init__()
        self.encoder = encoder
        self.head = _head(encoder.out_dim, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.encoder(x))
        return out[:, 0] if out.shape[1] == 1 else out


def _resnet(in_channels, layers, width_mult, base_width, bottleneck, attention, feat_dim, fpn):
    return ResNetEncoder(in_channels, layers, width_mult, base_width, bottleneck, attention, feat_dim, fpn)


@register_model("siamese_resnet")
def _siamese_resnet(in_channels: int = 1, layers: Sequence[int] = (2, 2, 2), width_mult: float = 1.0,
                    base_width: int = 64, bottleneck: bool = False, attention: str = "none",
                    feat_dim: int = 256, fusion: str = "adaptive", num_classes: int = 1,
                    dropout: float = 0.2, pair_dim: int = 0) -> nn.Module:
    """Image pairs [B, C, H, W]: shared residual CNN, fusion, head."""
    enc = _resnet(in_channels, layers, width_mult, base_width, bottleneck, attention, feat_dim, False)
    return SiamesePairModel(enc, fusion, num_classes, dropout, pair_dim)


@register_model("siamese_fpn")
def _siamese_fpn(in_channels: int = 1, layers: Sequence[int] = (2, 2, 2), width_mult: float = 1.0,
                 base_width: int = 64, bottleneck: bool = False, attention: str = "none",
                 feat_dim: int = 256, fusion: str = "adaptive", num_classes: int = 1,
                 dropout: float = 0.2, pair_dim: int = 0) -> nn.Module:
    """Image pairs with the multi-scale (FPN) encoder."""
    enc = _resnet(in_channels, layers, width_mult, base_width, bottleneck, attention, feat_dim, True)
    return SiamesePairModel(enc, fusion, num_classes, dropout, pair_dim)


@register_model("stage1_fusion_cbam")
def _stage1(in_channels: int = 1, width_mult: float = 1.0, feat_dim: int = 256, num_classes: int = 1,
            **kw) -> nn.Module:
    """M1 stage 1: ResNet [2,2,2] + CBAM + 6-way adaptive fusion, feat_dim 256."""
    kw.setdefault("layers", (2, 2, 2))
    return _siamese_resnet(in_channels=in_channels, width_mult=width_mult, feat_dim=feat_dim,
                           attention="cbam", fusion="adaptive", num_classes=num_classes, **kw)


@register_model("stage2_se_resnet")
def _stage2(in_channels: int = 1, width_mult: float = 1.0, feat_dim: int = 256, num_classes: int = 1,
            **kw) -> nn.Module:
    """M1 stage 2: SE-ResNet [3,3,3] (fusion adaptive unless given)."""
    kw.setdefault("layers", (3, 3, 3))
    kw.setdefault("fusion", "adaptive")
    return _siamese_resnet(in_channels=in_channels, width_mult=width_mult, feat_dim=feat_dim,
                           attention="se", num_classes=num_classes, **kw)


@register_model("siamese_mlp")
def _siamese_mlp(in_features: int = 16, hidden: Sequence[int] = (128, 128), feat_dim: int = 256,
                 fusion: str = "adaptive", num_classes: int = 1, dropout: float = 0.1,
                 pair_dim: int = 0) -> nn.Module:
    """Feature-vector pairs [B, F] (+ optional pair features [B, G]): MLP encoder, fusion, head."""
    return SiamesePairModel(MLPEncoder(in_features, hidden, feat_dim, dropout), fusion, num_classes,
                            dropout, pair_dim)


@register_model("resnet")
def _resnet_single(in_channels: int = 1, layers: Sequence[int] = (2, 2, 2), width_mult: float = 1.0,
                   base_width: int = 64, bottleneck: bool = False, attention: str = "none",
                   feat_dim: int = 256, num_classes: int = 1, dropout: float = 0.2) -> nn.Module:
    """One image -> logits (not a pair model)."""
    enc = _resnet(in_channels, layers, width_mult, base_width, bottleneck, attention, feat_dim, False)
    return SingleInputModel(enc, num_classes, dropout)


def transfer_weights(target: nn.Module, state_dict: dict[str, torch.Tensor],
                     prefixes: Sequence[str] = ("",)) -> dict[str, int]:
    """Copy every tensor of ``state_dict`` whose name (under ``prefixes``) and shape match ``target``.

    Returns counts: ``copied``, ``shape_mismatch``, ``missing`` (in target only), and ``total``
    (tensors in target) — "starting from the stage-1 encoder where shapes allow".
    """
    own = target.state_dict()
    copied, mismatch = 0, 0
    new = {}
    for k, v in state_dict.items():
        if not any(k.startswith(p) for p in prefixes) or k not in own:
            continue
        if own[k].shape == v.shape:
            new[k] = v
            copied += 1
        else:
            mismatch += 1
    own.update(new)
    target.load_state_dict(own)
    return {"copied": copied, "shape_mismatch": mismatch, "missing": len(own) - copied, "total": len(own)}
