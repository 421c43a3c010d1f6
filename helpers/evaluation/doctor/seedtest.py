"""Did a change help beyond seed noise? A one-sided paired t-test over seeds (the planted-fault benchmark's
independent unit is the seed: the same seed draws the same data and initial weights for both runs).

`helpers.evaluation.stats.paired_test` resamples rows of 0/1 correctness; with 3-5 seeds a bootstrap has too
few distinct resamples to give a p-value, so the t-test (exact under normal seed-to-seed differences) is used.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats as _st


def paired_seed_test(before: Sequence[float], after: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """after - before per seed: the mean gain, its standard error, the one-sided p-value for "no gain", and
    ``helped`` (p < alpha and the mean gain positive)."""
    b, a = np.asarray(before, dtype=float), np.asarray(after, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"paired_seed_test: need two equal 1-D vectors of >= 2 seeds, got {b.shape} and {a.shape}")
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(len(d))
    if se == 0:
        p = 0.0 if mean > 0 else 1.0
    else:
        p = float(_st.t.sf(mean / se, df=len(d) - 1))
    return {"gain": mean, "gain_se": se, "p_value": p, "seeds": int(len(d)), "helped": bool(p < alpha and mean > 0)}
