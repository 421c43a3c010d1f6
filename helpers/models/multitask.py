"""timm backbones with one head per task (notebook 06), registered as ``timm_multitask``.

Weights load only from local files; without one a backbone is randomly initialised."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from helpers.core.errors import DataError, WorkbookError
from helpers.core.taskspec import TaskSpec
from helpers.models.registry import count_parameters, register_model


def _create_timm_backbone(name: str, pretrained_file: str | None, img_size: int | None):
    """timm backbone with pooled features (num_classes=0); weights only from a local file."""
    import timm

    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise DataError(f"pretrained_files[{name!r}] = {pretrained_file!r}: file not found "
                            "(weights are never downloaded; give a local .pth/.safetensors file)")
        kw: dict[str, Any] = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    else:
        kw = dict(pretrained=False)
    try:
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise WorkbookError(f"backbone {name!r} is not a timm model name (similar: {close})")
    except AttributeError:  # pragma: no cover - older timm
        pass
    try:
        # Fixed-size models (ViT, Swin) are built for the benchmark's resolution; timm resamples
        # position embeddings of a pretrained file to it.
        return timm.create_model(name, num_classes=0, img_size=img_size, **kw) if img_size else \
            timm.create_model(name, num_classes=0, **kw)
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        return timm.create_model(name, num_classes=0, **kw)  # size-agnostic CNNs take no img_size


class MultiTaskBackbone(nn.Module):
    """timm backbone -> pooled features [B, F] -> one linear head per task.

    forward(x [B, 3, H, W]) -> concatenated head outputs [B, Σ out_dim] (see `MultiTask`).
    """

    def __init__(self, backbone_name: str, tasks: Sequence[TaskSpec], pretrained_file: str | None = None,
                 freeze_backbone: bool = False, img_size: int | None = None, dropout: float = 0.0,
                 channels_last: bool = False):
        super().__init__()
        self.backbone_name = backbone_name
        self.tasks = list(tasks)
        self.pretrained_file = pretrained_file or None
        self.pretrained = bool(pretrained_file)
        self.channels_last = channels_last
        self.backbone = _create_timm_backbone(backbone_name, pretrained_file, img_size)
        nf = int(self.backbone.num_features)
        self.heads = nn.ModuleDict({t.name: nn.Sequential(nn.Dropout(dropout), nn.Linear(nf, t.out_dim))
                                    for t in self.tasks})
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = self.backbone(x)                                   # [B, F] pooled features
        return torch.cat([self.heads[t.name](f) for t in self.tasks], dim=1)  # [B, Σ out_dim]

    def param_groups(self, lr_backbone: float, lr_head: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer groups with separate backbone / head learning rates (M2: 2e-5 / 1e-4)."""
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        hd = [p for p in self.heads.parameters() if p.requires_grad]
        groups = [{"params": hd, "lr": lr_head, "weight_decay": weight_decay, "name": "heads"}]
        if bb:
            groups.insert(0, {"params": bb, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"})
        return groups

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()   # a frozen backbone keeps its normalisation statistics too
        return self


class EnsembleMultiTask(nn.Module):
    """Several `MultiTaskBackbone`s trained together; output = mean of their head outputs."""

    def __init__(self, members: Sequence[MultiTaskBackbone]):
        super().__init__()
        if len(members) < 2:
            raise WorkbookError("an ensemble needs at least two backbones, e.g. 'resnet18+convnext_atto'")
        self.members = nn.ModuleList(members)
        self.backbone_name = "+".join(m.backbone_name for m in members)
        self.tasks = members[0].tasks
        self.pretrained = all(m.pretrained for m in members)
        self.freeze_backbone = members[0].freeze_backbone

    def forward(self, x):
        return torch.stack([m(x) for m in self.members], dim=0).mean(0)   # [B, Σ out_dim]

    def param_groups(self, lr_backbone: float, lr_head: float, weight_decay: float = 0.0) -> list[dict]:
        groups: list[dict] = []
        for m in self.members:
            groups.extend(m.param_groups(lr_backbone, lr_head, weight_decay))
        return groups


def make_multitask_model(name: str, tasks: Sequence[TaskSpec], pretrained_files: dict | None = None,
                         freeze_backbone: bool = False, img_size: int | None = None, dropout: float = 0.0,
                         channels_last: bool = False):
    """Build a model by name: one timm backbone, or ``"a+b"`` for an ensemble of backbones.

    pretrained_files: ``{backbone_name: local file}``; a backbone not listed is randomly initialised.
    """
    files = pretrained_files or {}
    parts = [p.strip() for p in name.split("+") if p.strip()]
    if not parts:
        raise WorkbookError(f"backbone name {name!r} is empty")
    members = [MultiTaskBackbone(p, tasks, files.get(p), freeze_backbone, img_size, dropout, channels_last) for p in parts]
    return members[0] if len(members) == 1 else EnsembleMultiTask(members)


@register_model("timm_multitask")
def _timm_multitask(backbone: str, tasks: Sequence[TaskSpec | dict], pretrained_files: dict | None = None,
                    freeze_backbone: bool = False, img_size: int | None = None, dropout: float = 0.0,
                    channels_last: bool = False) -> nn.Module:
    """A timm backbone (or ``"a+b"`` ensemble) with one head per task; tasks as `TaskSpec` or its dict."""
    specs = [t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks]
    return make_multitask_model(backbone, specs, pretrained_files, freeze_backbone, img_size, dropout, channels_last)


def count_multitask_params(model) -> dict[str, float]:
    """Parameter counts in millions: total, backbone(s) (everything but the heads), trainable."""
    total = count_parameters(model)
    heads = sum(p.numel() for n, p in model.named_parameters() if ".heads." in f".{n}")
    nf = getattr(model, "num_features", None)   # None for an ensemble
    return {"params_m": total / 1e6, "backbone_params_m": (total - heads) / 1e6,
            "trainable_m": count_parameters(model, trainable_only=True) / 1e6,
            "num_features": int(nf) if nf is not None else None}
