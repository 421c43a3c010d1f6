"""The one content hash: 64-bit keys of array rows and of pair examples, for leakage checks.

Equal content gives equal keys whatever split or file it sits in; (a, b) and (b, a) are the same pair."""
from __future__ import annotations

import numpy as np

from helpers.core.errors import WorkbookError


_HASH_SEED = 0x5EED_5AC4


def _row_hash(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact bytes, vectorised: x [N, ...] -> [N] uint64.

    The row's 32-bit words are combined with fixed random odd multipliers (wrapping uint64
    arithmetic), so equal rows hash equally and different rows collide with negligible odds.
    """
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    n = x.shape[0]
    words = x.reshape(n, -1).view(np.uint32).astype(np.uint64)          # [N, W]
    rng = np.random.default_rng(_HASH_SEED + words.shape[1])
    mult = rng.integers(1, 2**63, size=words.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    mixed = words * mult[None, :]                                        # wraps mod 2**64
    h = mixed.sum(axis=1, dtype=np.uint64)
    # A final avalanche step (splitmix64) so similar rows do not give nearby hashes.
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def make_example_keys(xa: np.ndarray, xb: np.ndarray, pair: np.ndarray | None = None) -> np.ndarray:
    """One uint64 key per pair example, from its content: the two inputs (order-free) and the
    pair features when present. Equal keys = the same example, whatever split it sits in.
    """
    xa = np.asarray(xa)
    xb = np.asarray(xb)
    if xa.shape[0] != xb.shape[0]:
        raise WorkbookError(f"make_example_keys: xa has {xa.shape[0]} rows, xb {xb.shape[0]}")
    with np.errstate(over="ignore"):
        ha, hb = _row_hash(xa), _row_hash(xb)
        lo, hi = np.minimum(ha, hb), np.maximum(ha, hb)   # (A, B) and (B, A) are the same example
        key = lo * np.uint64(0x9E3779B97F4A7C15) + (hi ^ (hi >> np.uint64(29)))
        if pair is not None:
            key = key ^ (_row_hash(pair) * np.uint64(0xD6E8FEB86659FD93))
    return key
