"""The optimiser (AdamW with per-prefix learning rates) and the schedulers (warm-up + cosine per step,
or ReduceLROnPlateau per epoch)."""
from __future__ import annotations

import math

import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.training.batching import _unwrap
from helpers.training.config import TrainConfig


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; parameters whose name starts with a key of ``cfg.lr_groups`` get that group's lr."""
    return make_named_optimizer(_unwrap(model).named_parameters(), cfg)


def make_named_optimizer(named_params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`_make_optimizer` over (name, tensor) pairs: also the stacked tensors of seed replicas
    (`helpers.training.replicas`), where AdamW's elementwise update is the same per replica."""
    groups: dict[float, list] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        lr = next((v for k, v in cfg.lr_groups.items() if name.startswith(k)), cfg.lr)
        groups.setdefault(float(lr), []).append(p)
    if not groups:
        raise WorkbookError("train_model: the model has no trainable parameters (all frozen?)")
    return torch.optim.AdamW([{"params": ps, "lr": lr, "initial_lr": lr} for lr, ps in groups.items()],
                             lr=cfg.lr, weight_decay=cfg.weight_decay)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step LambdaLR (cosine with linear warm-up) or a per-epoch ReduceLROnPlateau."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=cfg.eta_min)
    if cfg.scheduler == "none":
        return None
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    lrs = [g["initial_lr"] for g in opt.param_groups]

    def factor_for(base: float):
        start, end = min(cfg.warmup_lr, base) / base, min(cfg.eta_min, base) / base

        def f(step: int) -> float:
            if step < warm:  # linear warm-up from warmup_lr to the base lr
                return start + (1 - start) * step / warm
            prog = min(1.0, (step - warm) / max(1, total - warm))
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * prog))
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, [factor_for(b) for b in lrs])
