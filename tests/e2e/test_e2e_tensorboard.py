"""Every training notebook of the smoke run leaves TensorBoard event files beside each history.json, holding
the same numbers per epoch (issue: training runs a researcher can watch in TensorBoard)."""
import pytest

from tests.unit.training.test_tensorboard import _assert_matches_history

pytestmark = pytest.mark.e2e
TRAINING_NOTEBOOKS = ("02_stage1", "03_stage2", "04_multi_seed", "05_stacking", "06_backbones",
                      "07_plateau_diagnosis")


@pytest.mark.parametrize("stem", TRAINING_NOTEBOOKS)
def test_event_files_match_every_history(smoke_run, stem):
    histories = sorted((smoke_run / stem).rglob("history.json"))
    assert histories, f"{stem} trained nothing that wrote a history.json"
    for h in histories:
        assert list(h.parent.glob("events.out.tfevents.*")), f"no TensorBoard event file beside {h.relative_to(smoke_run)}"
        _assert_matches_history(h.parent)
