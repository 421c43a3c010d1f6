"""Did a change help beyond seed noise? A one-sided paired t-test over seeds (the planted-fault benchmark's
independent unit is the seed: the same seed draws the same data and initial weights for both runs).

With 3-5 seeds a bootstrap has too few distinct resamples to give a p-value, so this is the t-test over
seeds of the statistics vocabulary (`helpers.evaluation.stats.compare_seed_scores`), read one-sided.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from helpers.evaluation.stats import compare_seed_scores


def paired_seed_test(before: Sequence[float], after: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """after - before per seed: the mean gain, its standard error, the one-sided p-value for "no gain", and
    ``helped`` (p < alpha and the mean gain positive)."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired_seed_test: need two equal 1-D vectors of >= 2 seeds, got {b.shape} and {a.shape}")
    c = compare_seed_scores(dict(enumerate(b)), dict(enumerate(a)))
    # the two-sided p halves on the side of the estimate ("helped" is a one-sided question)
    p = c.p / 2 if c.estimate > 0 else 1 - c.p / 2
    return {"gain": c.estimate, "gain_se": c.spread.se, "p_value": float(p), "seeds": int(len(a)),
            "helped": bool(p < alpha and c.estimate > 0)}
