"""Pair models, picked by name from a registry.

A pair model embeds both inputs with one shared (siamese) encoder, fuses the two embeddings and
classifies the pair: ``model(xa, xb)`` or ``model(xa, xb, pair)`` when pair-level features
(e.g. relative geometry of two people) are given. Outputs: [B] logits (binary head) or [B, K].

```python
model = create_model("siamese_resnet", in_channels=1, layers=(2, 2, 2), attention="cbam")
list_models()          # names in the registry
```
Every model carries ``model.spec = {"name": ..., "kwargs": ...}`` so a checkpoint can rebuild it
(`create_model_from_spec`). CBAM and SE follow ``reference/methods.md`` exactly (r = 16; CBAM's
spatial branch is a 7×7 conv on [mean_c; max_c] followed by BatchNorm, as in the authors' code).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from helpers.errors import WorkbookError

__all__ = ["MODELS", "create_model", "create_model_from_spec", "list_models", "register_model",
           "SEBlock", "CBAM", "BasicBlock", "BottleneckBlock", "ResNetEncoder", "MLPEncoder",
           "AdaptiveFusion", "ConcatFusion", "SiamesePairModel", "SingleInputModel",
           "transfer_weights", "count_parameters", "FUSION_BRANCHES"]

FUSION_BRANCHES = ("difference", "concatenation", "product", "cosine", "l2", "residual")


# ------------------------------------------------------------------------------------ attention
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


# -------------------------------------------------------------------------------------- blocks
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


# ------------------------------------------------------------------------------------ encoders
class ResNetEncoder(nn.Module):
    """Small-image residual CNN: 3×3 stem (no pooling, inputs are 8–64 px), stages of blocks with
    widths base·width_mult·2^i (stride 2 from the second stage), global average pooling, linear
    projection to ``feat_dim``. ``fpn=True`` adds a top-down feature pyramid over the stage outputs
    and pools every level (multi-scale)."""

    def __init__(self, in_channels: int = 1, layers: Sequence[int] = (2, 2, 2), width_mult: float = 1.0,
                 base_width: int = 64, bottleneck: bool = False, attention: str = "none",
                 feat_dim: int = 256, fpn: bool = False):
        super().__init__()
        layers = [int(v) for v in layers]
        if not layers or min(layers) < 1:
            raise WorkbookError(f"layers={layers}; expected a non-empty list of block counts >= 1 (e.g. 2,2,2)")
        if width_mult <= 0:
            raise WorkbookError(f"width_mult={width_mult}; expected > 0")
        widths = [max(8, int(round(base_width * width_mult * 2 ** i))) for i in range(len(layers))]
        block = BottleneckBlock if bottleneck else BasicBlock
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
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


# -------------------------------------------------------------------------------------- fusion
class AdaptiveFusion(nn.Module):
    """Six-way fusion of two embeddings (note 001) with learned softmax weights.

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


# -------------------------------------------------------------------------------------- models
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


# ------------------------------------------------------------------------------------ registry
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable:
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = fn
        return fn
    return deco


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
    """Note 001 stage 1: ResNet [2,2,2] + CBAM + 6-way adaptive fusion, feat_dim 256."""
    kw.setdefault("layers", (2, 2, 2))
    return _siamese_resnet(in_channels=in_channels, width_mult=width_mult, feat_dim=feat_dim,
                           attention="cbam", fusion="adaptive", num_classes=num_classes, **kw)


@register_model("stage2_se_resnet")
def _stage2(in_channels: int = 1, width_mult: float = 1.0, feat_dim: int = 256, num_classes: int = 1,
            **kw) -> nn.Module:
    """Note 001 stage 2: SE-ResNet [3,3,3] (fusion adaptive unless given)."""
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


def list_models() -> list[str]:
    return sorted(MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; ``model.spec`` records name and kwargs for checkpoints."""
    if name not in MODELS:
        raise WorkbookError(f"model {name!r} is not registered; expected one of {list_models()}")
    try:
        model = MODELS[name](**kwargs)
    except TypeError as e:
        raise WorkbookError(f"model {name!r}: bad arguments {sorted(kwargs)} ({e})") from None
    model.spec = {"name": name, "kwargs": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}}
    return model


def create_model_from_spec(spec: dict | None) -> nn.Module:
    if not isinstance(spec, dict) or "name" not in spec:
        raise WorkbookError(f"model spec {spec!r}; expected {{'name': ..., 'kwargs': {{...}}}} from a checkpoint")
    return create_model(spec["name"], **spec.get("kwargs", {}))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


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
