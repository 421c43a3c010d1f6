import numpy as np
import pytest

from helpers.evaluation import stats



def test_wilson_interval_known_value():
    lo, hi = stats.wilson_interval(81, 100)  # textbook value: 0.7222 .. 0.8749
    assert lo == pytest.approx(0.7222, abs=1e-3) and hi == pytest.approx(0.8749, abs=1e-3)
    assert stats.wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert stats.wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)


def test_mcnemar_counts_discordant_pairs():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 1], bool)
    b = np.array([1, 0, 0, 1, 0, 1, 1, 1], bool)
    r = stats.mcnemar_test(a, b)
    assert (r["b"], r["c"]) == (2, 1)
    assert r["p_value"] == pytest.approx(1.0)
    strong = stats.mcnemar_test(np.zeros(40, bool), np.ones(40, bool))
    assert strong["p_value"] < 1e-9
