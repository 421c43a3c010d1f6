"""Recall of interacting scene pairs, over the sampled test pairs and over all interacting pairs of the
test frames (notebook 01's count), the pairs the sampling dropped counted as misses (docs/method.md, M0).

Notebooks 02 and 03 both report it, so it lives here rather than in either stage."""
from __future__ import annotations

import numpy as np

from helpers.core.errors import DataError
from helpers.evaluation.stats import Unit, interval


def is_scene(splits) -> bool:
    """Whether a pair dataset is made of scene pairs (notebook 01's meta.json says so)."""
    return "all_interacting_pairs" in splits.meta or splits.meta.get("split_method") == "by_sequence"


def count_all_interacting_test(splits, n_sampled: int) -> int | None:
    """meta.json's count of interacting pairs in the test frames before sampling (notebook 01), checked."""
    counts = splits.meta.get("all_interacting_pairs")
    if counts is None:
        return None
    n = counts.get("test") if isinstance(counts, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"dataset {splits.name!r}: meta.json 'all_interacting_pairs' = {counts!r}; expected "
                        "{\"train\": n, \"val\": n, \"test\": n} with whole counts >= 0")
    if n < n_sampled:
        raise DataError(f"dataset {splits.name!r}: meta.json 'all_interacting_pairs.test' = {n} is below the "
                        f"{n_sampled} interacting pairs sampled into test_public.npz; expected the count "
                        "before sampling")
    return n


def evaluate_scene_recall(splits, prob: np.ndarray, thr: float, unit: Unit) -> dict | None:
    """Recall of interacting test pairs: over the sampled pairs (unit-aware interval), and over all
    interacting pairs of the test frames when meta.json counts them, the pairs the sampling dropped
    counted as misses. That recall is the sampled one times the share sampled, a fixed number for the
    test frames, so its interval is the sampled interval scaled by it. None for data that is not scenes."""
    if not is_scene(splits):
        return None
    pos = splits.test.y == 1
    hit = (np.asarray(prob)[pos] >= thr).astype(np.float64)
    sampled = interval(hit, Unit(unit.name, tuple(np.asarray(a)[pos] for a in unit.ids)))
    n_all = count_all_interacting_test(splits, int(pos.sum()))
    out = {"n_sampled": int(pos.sum()), "sampled": sampled, "n_all": n_all, "all": None, "share_sampled": None}
    if n_all:
        share = pos.sum() / n_all
        out.update(share_sampled=float(share), all={k: sampled[k] * share for k in ("mean", "ci_low", "ci_high")})
    return out
