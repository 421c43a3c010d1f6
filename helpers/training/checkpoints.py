"""Checkpoints of the training loop: what a ``.pt`` holds and how it is read back."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.training.batching import _unwrap


def read_checkpoint_file(path: str | Path) -> dict:
    """The dict a checkpoint file holds, read with ``weights_only=True``: tensors and plain Python
    types only, so a file that smuggles in other objects is refused instead of unpickled (which
    could run code). The training loop writes nothing else."""
    path = Path(path)
    if not path.is_file():
        raise WorkbookError(f"checkpoint {path}: file not found (expected a .pt written by train_model)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch's own message advises turning the weights-only guard off: never repeat that
        raise WorkbookError(f"checkpoint {path}: cannot be read as a weights-only checkpoint: it is not a torch "
                            "file, or it holds objects other than tensors and plain types. The workbook never "
                            "unpickles other objects, because that can run code; write checkpoints with "
                            "train_model") from None
    if not isinstance(ckpt, dict):
        raise WorkbookError(f"checkpoint {path}: holds a {type(ckpt).__name__}; expected a train_model checkpoint")
    return ckpt


def load_checkpoint(path: str | Path, model: nn.Module | None = None, strict: bool = True) -> dict:
    """Read a checkpoint written by `train_model`; with ``model``, load its weights.

    Raises WorkbookError naming the path when the file is missing, unreadable or does not fit.
    """
    path = Path(path)
    ckpt = read_checkpoint_file(path)
    if "model_state_dict" not in ckpt:
        raise WorkbookError(f"checkpoint {path}: no 'model_state_dict'; expected a train_model checkpoint")
    if model is not None:
        try:
            _unwrap(model).load_state_dict(ckpt["model_state_dict"], strict=strict)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise WorkbookError(f"checkpoint {path}: does not fit the model "
                                f"({first[0] if first else e}...); expected model_spec "
                                f"{ckpt.get('model_spec')}") from None
    return ckpt


def _state(model, opt, sched, scaler, epoch, best, cfg, extra=None) -> dict:
    d = {
        "epoch": epoch,
        "model_state_dict": _unwrap(model).state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "scheduler_state_dict": sched.state_dict() if sched is not None else None,
        "scaler_state_dict": scaler.state_dict() if scaler is not None else None,
        "best": copy.deepcopy(best),
        "config": cfg.to_dict(),
        "model_spec": getattr(_unwrap(model), "spec", None),
    }
    if extra:
        d.update(extra)
    return d
