"""Training recipes: a notebook's parameters turned into a `TrainConfig`."""
from __future__ import annotations

from typing import Any, Mapping

from helpers.training.config import TrainConfig


def make_train_config(params: Mapping[str, Any], kind: str, **overrides):
    """TrainConfig from a notebook's parameters (augmentation only applies to images)."""

    cfg = dict(epochs=int(params["epochs"]), batch_size=int(params["batch_size"]), lr=float(params["lr"]),
               weight_decay=float(params["weight_decay"]), scheduler="cosine",
               warmup_epochs=float(params["warmup_epochs"]), eta_min=1e-6,
               max_grad_norm=float(params["max_grad_norm"]), patience=int(params["patience"]),
               min_delta=1e-4, monitor=str(params.get("monitor", "accuracy")),
               label_smoothing=float(params.get("label_smoothing", 0.0)),
               augment=bool(params.get("augment", False)) and kind == "image", seed=int(params["seed"]),
               num_threads=int(params.get("num_threads", 0)), log_every=int(params.get("log_every", 5)))
    cfg.update(overrides)
    return TrainConfig(**cfg)
