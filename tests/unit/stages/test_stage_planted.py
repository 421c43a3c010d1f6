"""The planted-fault benchmark's parts on tiny runs: a remedy changes the configuration as stated, a run
writes the history the doctor reads, and the monitor's checkpoint is scored."""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from helpers.stages.planted import apply_remedy, BASE, FAULTS, remedy_catalogue, selected_score, train_run


def test_there_are_at_least_eight_faults_with_a_cause_each():
    assert len(FAULTS) >= 8 and len({f.name for f in FAULTS}) == len(FAULTS)
    assert all(f.expected and f.cause for f in FAULTS)


def test_remedies_change_the_run_as_the_doctor_states():
    cfg = replace(BASE, hidden=(2,), feat_dim=2, lr=0.01, epochs=10, weight_decay=0.0)
    assert apply_remedy(cfg, "lower_lr", {"lr": 0.001}).lr == 0.001
    cap = apply_remedy(cfg, "capacity", {})
    assert cap.hidden == (3, 3) and cap.feat_dim == 3               # width and depth x1.5, rounded up
    assert apply_remedy(cfg, "monitor_loss", {}).monitor == "val_loss"
    assert apply_remedy(cfg, "regularise", remedy_catalogue(cfg)["regularise"]).weight_decay == 1e-4
    assert apply_remedy(cfg, "judge_against_noise", {"validation_size_factor": 4.0}).val_pairs == 4 * cfg.val_pairs
    assert apply_remedy(cfg, "early_stopping", {"early_stopping_patience": 20}) is None   # nothing to run here


def test_a_tiny_run_logs_what_the_doctor_reads_and_scores_the_monitors_checkpoint():
    cfg = replace(BASE, epochs=3, train_pairs=200, val_pairs=100, hidden=(8,), feat_dim=4)
    h = train_run(cfg, seed=0)
    assert list(h.columns) == ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "test_accuracy"] and len(h) == 3
    assert h.equals(train_run(cfg, seed=0))                           # same seed, same run
    t = pd.DataFrame({"val_accuracy": [0.5, 0.9, 0.9], "val_loss": [0.7, 0.3, 0.2], "test_accuracy": [0.1, 0.2, 0.3]})
    assert selected_score(t, "val_accuracy") == 0.2 and selected_score(t, "val_loss") == 0.3


def test_unknown_fault_names_are_refused():
    import pytest
    from helpers.core.errors import WorkbookError
    from helpers.stages.planted import select_faults
    assert [f.name for f in select_faults(["label_noise"])] == ["label_noise"] and len(select_faults([])) == len(FAULTS)
    with pytest.raises(WorkbookError, match="unknown"):
        select_faults(["lr_too_hgih"])
