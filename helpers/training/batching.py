"""Batches by index: a (seed, epoch) permutation per epoch, sharded per rank like a distributed
sampler, batch bounds that never leave one row alone, and the data's fingerprint for resuming."""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from helpers.core.errors import WorkbookError


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _as_tensors(data: Sequence, name: str) -> tuple[torch.Tensor, ...]:
    """Tuple of tensors with equal first dimension; uint8 inputs -> float32 in [0, 1]."""
    if not isinstance(data, (tuple, list)) or len(data) < 1:
        raise WorkbookError(f"{name}: expected a tuple (inputs..., target) of arrays, got {type(data).__name__}")
    out = []
    for i, a in enumerate(data):
        t = torch.as_tensor(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)
        if t.dtype == torch.uint8:
            t = t.float().div_(255.0)
        elif t.dtype == torch.float64:
            t = t.float()
        out.append(t)
    n = out[0].shape[0]
    for i, t in enumerate(out):
        if t.dim() == 0 or t.shape[0] != n:
            raise WorkbookError(f"{name}[{i}]: shape {tuple(t.shape)}; expected {n} rows like {name}[0]")
    if n == 0:
        raise WorkbookError(f"{name}: no rows")
    return tuple(out)


def _fingerprint(tensors: Sequence[torch.Tensor]) -> str:
    """Cheap identity of the data: shapes, dtypes and a hash of the bytes."""
    h = hashlib.blake2b(digest_size=12)
    for t in tensors:
        c = t.detach().cpu().contiguous()
        h.update(f"{tuple(c.shape)}{c.dtype}".encode())
        h.update((c.float() if c.dtype == torch.bfloat16 else c).numpy().tobytes())
    return h.hexdigest()


def _model_signature(model: nn.Module) -> str:
    sd = _unwrap(model).state_dict()
    return hashlib.blake2b("|".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items()).encode(),
                           digest_size=12).hexdigest()


def _epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    return (int(seed) * 1_000_003 + epoch * 7919 + salt) % (2**63 - 1)


def make_rank_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                      shuffle: bool = True) -> torch.Tensor:
    """This rank's row indices for one epoch: a (seed, epoch) permutation padded to a multiple of
    ``world_size`` and strided by rank, like ``DistributedSampler`` but as one tensor."""
    if shuffle:
        g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        perm = torch.randperm(n, generator=g)
    else:
        perm = torch.arange(n)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            perm = torch.cat([perm, perm[: total - n]])
        perm = perm[rank::world_size]
    return perm


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch; a trailing batch of one row joins the previous one, because
    BatchNorm cannot train on a single row."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _move(tensors: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in tensors)
