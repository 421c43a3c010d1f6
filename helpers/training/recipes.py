"""Training recipes: a notebook's parameters turned into a `TrainConfig`.

One function reads the parameters (`make_train_config_from`); each notebook family names which
parameter fills which TrainConfig field: notebooks 02/03 (`make_train_config`) and notebook 07,
M4's flags (`make_note004_train_config`).
"""
from __future__ import annotations

import typing
from typing import Any, Mapping

from helpers.training.config import TrainConfig

# The type of each TrainConfig field (int, float, bool, str...): a parameter is cast to it.
_FIELD_TYPES = typing.get_type_hints(TrainConfig)

# Notebooks 02/03: TrainConfig field -> parameter (the same names), and the values of optional parameters.
PAIR_PARAMS = {f: f for f in ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "max_grad_norm",
                              "patience", "monitor", "label_smoothing", "seed", "num_threads", "log_every")}
PAIR_DEFAULTS = {"monitor": "accuracy", "label_smoothing": 0.0, "num_threads": 0, "log_every": 5}

# Notebook 07: TrainConfig field -> M4's flag.
NOTE004_PARAMS = {"epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                  "warmup_epochs": "warmup_epochs", "warmup_lr": "warmup_lr", "eta_min": "cosine_eta_min",
                  "amp": "amp", "patience": "early_stopping_patience",
                  "min_delta": "early_stopping_min_delta"}


def make_train_config_from(params: Mapping[str, Any], names: Mapping[str, str],
                           defaults: Mapping[str, Any] | None = None, **fixed: Any) -> TrainConfig:
    """TrainConfig with each field of `names` read from the parameter ``names[field]`` and cast to the
    field's type (a parameter absent from `params` takes ``defaults[field]`` when given, else KeyError),
    then the `fixed` field values on top."""
    defaults = defaults or {}
    cfg = {}
    for fld, key in names.items():
        value = params.get(key, defaults[fld]) if fld in defaults else params[key]
        cfg[fld] = _FIELD_TYPES[fld](value)
    cfg.update(fixed)
    return TrainConfig(**cfg)


def make_train_config(params: Mapping[str, Any], kind: str, **overrides):
    """TrainConfig from a notebook's parameters (augmentation only applies to images)."""
    fixed = dict(scheduler="cosine", eta_min=1e-6, min_delta=1e-4,
                 augment=bool(params.get("augment", False)) and kind == "image")
    return make_train_config_from(params, PAIR_PARAMS, PAIR_DEFAULTS, **{**fixed, **overrides})


def make_note004_train_config(params: Mapping[str, Any], seed: int = 42, num_threads: int = 0):
    """TrainConfig from M4's flags: linear warm-up from warmup_lr, cosine to cosine_eta_min,
    AdamW, early stopping on the validation cosine (patience, min_delta), mixed precision."""
    return make_train_config_from(params, NOTE004_PARAMS, scheduler="cosine", max_grad_norm=1.0, monitor="cos",
                                  restore_best=True, seed=int(seed), num_threads=int(num_threads), log_every=0,
                                  checkpoint=False, resume=False)
