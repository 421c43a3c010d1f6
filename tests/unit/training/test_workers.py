"""helpers.multiseed: the worker pool (crash isolation), the grid, the summaries, one tiny member run."""
import pytest

from helpers.core.errors import WorkbookError
from helpers.training.workers import available_cores, resolve_workers, run_in_workers



def test_run_in_workers_needs_an_importable_function():
    with pytest.raises(WorkbookError, match="module-level"):
        run_in_workers(lambda t: t, [1])


def test_resolve_workers(monkeypatch):
    monkeypatch.setenv("PAIRWISE_THREADS", "2")
    assert available_cores() <= 2
    n, t = resolve_workers(8)
    assert 1 <= n <= 2 and n * t <= max(2, n)
    assert resolve_workers(1) == (1, available_cores())             # one task: one worker, all cores
    assert resolve_workers(8, workers=3)[0] == 3
