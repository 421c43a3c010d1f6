"""Tasks: focal loss against the formula on hand-computed values, metrics, class weights."""
import pytest

from helpers.core.errors import WorkbookError
from helpers.stages.stage2 import make_balanced_indices



def test_balanced_indices_for_type_classes():
    import numpy as np


    y = np.array([0] * 10 + [1] * 3 + [2] * 1)
    over = make_balanced_indices(y, "oversample", seed=0)
    assert np.bincount(y[over]).tolist() == [10, 10, 10]
    assert set(np.flatnonzero(y == 0)) <= set(over)          # no original row dropped
    under = make_balanced_indices(y, "undersample", seed=0)
    assert np.bincount(y[under]).tolist() == [1, 1, 1]
    assert make_balanced_indices(y, "none").tolist() == list(range(14))
    with pytest.raises(WorkbookError):
        make_balanced_indices(y, "smote")
