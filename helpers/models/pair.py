"""Pair models: a shared (siamese) encoder on both inputs, a fusion of the two embeddings, optional
pair-level features, a binary or K-class head. Registered by name in `helpers.models.registry`.

``siamese_crops`` takes the two people of a scene pair as rows of a bank of person crops (uint8, attached
with ``set_crops``), so a batch is two index vectors and the crops are gathered on the device."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.models.encoders import MLPEncoder, ResNetEncoder, TimmEncoder
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


# Crops are normalised with the ImageNet statistics: what a pretrained timm backbone expects, and harmless
# for an encoder trained from scratch (its first BatchNorm rescales anyway).
CROP_MEAN = (0.485, 0.456, 0.406)
CROP_STD = (0.229, 0.224, 0.225)


class CropPairModel(SiamesePairModel):
    """A siamese pair model on person crops given by index: ``model(ia, ib)`` or ``model(ia, ib, pair)``
    with ``ia``, ``ib`` [B] int64 rows of the crop bank attached by ``set_crops(crops)`` ([U, 3, H, W]
    uint8). The distinct crops of a batch are gathered, scaled to [0, 1], normalised and encoded once
    each (a person in several pairs of a batch costs one encoder pass), with a random horizontal flip per
    crop in training (``flip``; drawn from torch's RNG, which the training loop seeds per epoch).

    The bank is a non-persistent buffer: it moves with ``.to(device)`` and is never in a checkpoint (a
    checkpoint holds the weights; the crops come from the crop cache), and DistributedDataParallel leaves
    it alone (every rank attaches the same bank; nothing to broadcast)."""

    def __init__(self, encoder: nn.Module, fusion: str = "adaptive", num_classes: int = 1, dropout: float = 0.2,
                 pair_dim: int = 0, crop_size: Sequence[int] = (), flip: bool = True):
        super().__init__(encoder, fusion, num_classes, dropout, pair_dim)
        self.crop_size = tuple(int(v) for v in crop_size)
        self.flip = bool(flip)
        self.register_buffer("crops", torch.zeros((0, 3, *(self.crop_size or (1, 1))), dtype=torch.uint8),
                             persistent=False)
        self.register_buffer("mean", torch.tensor(CROP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CROP_STD).view(1, 3, 1, 1), persistent=False)
        self._ddp_params_and_buffers_to_ignore = ["crops"]     # read by DistributedDataParallel

    def set_crops(self, crops) -> "CropPairModel":
        """Attach the crop bank [U, 3, H, W] uint8 (numpy or tensor) on the model's device; returns the model."""
        t = torch.as_tensor(crops)
        if t.dtype != torch.uint8 or t.dim() != 4 or t.shape[1] != 3:
            raise WorkbookError(f"crops: {t.dtype} {tuple(t.shape)}; expected uint8 [N, 3, H, W] (a crop bank)")
        if self.crop_size and tuple(t.shape[2:]) != self.crop_size:
            raise WorkbookError(f"crops are {tuple(t.shape[2:])} (H, W); this model was built for crop_size "
                                f"{list(self.crop_size)}")
        self.crops = t.to(self.mean.device)
        return self

    def embed(self, ia: torch.Tensor, ib: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.crops)
        if n == 0:
            raise WorkbookError("siamese_crops: no crops attached; call model.set_crops(bank) before training")
        if ia.is_floating_point() or ib.is_floating_point():
            raise WorkbookError("siamese_crops takes crop rows (integer index vectors), not images")
        idx = torch.cat([ia, ib]).long()
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise WorkbookError(f"crop rows {int(idx.min())}..{int(idx.max())}: the bank holds rows 0..{n - 1}")
        uniq, inv = torch.unique(idx, return_inverse=True)
        x = self.crops.index_select(0, uniq).float().div_(255.0)
        if self.training and self.flip:
            flip = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        e = self.encoder((x - self.mean) / self.std).index_select(0, inv)
        return e[: ia.shape[0]], e[ia.shape[0]:]


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


@register_model("siamese_crops")
def _siamese_crops(crop_size: Sequence[int] = (64, 32), backbone: str = "", weights_file: str = "",
                   layers: Sequence[int] = (1, 1, 1), width_mult: float = 0.25, base_width: int = 64,
                   attention: str = "none", feat_dim: int = 64, fusion: str = "adaptive", num_classes: int = 1,
                   dropout: float = 0.2, pair_dim: int = 0, flip: bool = True, stem_stride: int = 1) -> nn.Module:
    """Person-crop pairs by index (see `CropPairModel`): the small residual CNN of ``siamese_resnet`` on
    [3, H, W] crops, or the timm ``backbone`` (weights from the local ``weights_file`` only), with
    ``pair_dim`` > 0 fusing pair-geometry features [B, pair_dim] after the crop embeddings; ``stem_stride``
    2 makes the CNN's stem strided (a quarter of the positions: 64 x 32 crops at the cost of 32 x 16)."""
    if backbone:
        enc: nn.Module = TimmEncoder(backbone, weights_file, feat_dim)
    else:
        enc = ResNetEncoder(3, layers, width_mult, base_width, False, attention, feat_dim, False, stem_stride)
    return CropPairModel(enc, fusion, num_classes, dropout, pair_dim, crop_size, flip)


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
