"""The curve doctor (helpers.diagnose) and notebook 07's data, model and task (helpers.plateau)."""
from __future__ import annotations

import json
import math

import pytest
import torch

from helpers.data.multiview import make_multiview_data
from helpers.evaluation.doctor import diagnose_history, load_history, make_synthetic_history, NOTE004_BASELINE
from helpers.stages.plateau import (diagnose_histories, make_before_after_table, make_followup_params,
                                    plot_diagnosis, RUN_KEYS, summarize_followups, train_data_control,
                                    train_followups, train_transformer3d, write_foreign_histories)



# --------------------------------------------------------------------- other loggers, the CLI
def test_keras_and_timm_spellings(tmp_path):
    paths = write_foreign_histories(tmp_path)
    table, diags = diagnose_histories(paths)
    assert list(table["label"]) == ["overfitting", "lr_decayed_early"]
    assert list(table["metric"]) == ["val_accuracy", "val_top1"]
    keras = load_history(next(iter(paths.values())))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(keras.columns)


def test_followup_params_apply_and_round():
    base = {k: v for k, v in NOTE004_BASELINE.items() if k in RUN_KEYS} | {"amp": False}
    p = make_followup_params(base, {"d_model": 100, "num_layers": 6, "unknown": 1}, max_epochs=50)
    assert p["d_model"] % base["nhead"] == 0 and p["num_layers"] == 6 and "unknown" not in p
    assert p["epochs"] == 50 and base["d_model"] == 512


def test_train_and_follow_up_through_the_shared_loop(tmp_path):
    torch.set_num_threads(1)
    data = make_multiview_data(n_identities=40, seqs_per_identity=1, frames=4, feat_dim=8, n_keypoints=4,
                                  seed=0, control_data_factor=1.5)
    base = {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32, "dropout": 0.1, "mse_weight": 0.2,
            "cosine_weight": 0.8, "lr": 3e-3, "warmup_epochs": 1, "warmup_lr": 1e-6, "epochs": 9,
            "cosine_eta_min": 1e-5, "batch_size": 8, "weight_decay": 1e-4, "early_stopping_patience": 20,
            "early_stopping_min_delta": 1e-4, "amp": False}
    run = train_transformer3d(data, base, "baseline", tmp_path / "baseline", seed=0)
    assert (tmp_path / "baseline" / "history.json").is_file() and (tmp_path / "baseline" / "config.json").is_file()
    assert run.epochs_run == 9 and -1 <= run.best_val_cos <= 1 and math.isfinite(run.overfit_ratio)
    # warm-up from warmup_lr is linear, then cosine down to eta_min
    assert run.history["lr"].iloc[-1] == pytest.approx(1e-5, rel=1e-3)
    diag = diagnose_history(run.history, metric="val_cos", ceiling=data.ceiling_cos, config=base)
    runs = train_followups(data, base, diag, 1, tmp_path / "followups", seed=0, max_epochs=9) \
        if diag.recommendations else []
    control = train_data_control(data, base, tmp_path / "followups", seed=0)
    table = make_before_after_table(run, runs + [control], data.ceiling_cos)
    assert list(table["role"])[0] == "baseline" and list(table["role"])[-1] == "control"
    assert (tmp_path / "followups" / "control_more_data" / "config.json").is_file()
    head = summarize_followups(table)
    assert head["control_best_cos"] == pytest.approx(control.best_val_cos)
    for r in runs:
        cfg = json.loads((tmp_path / "followups" / r.name / "config.json").read_text())
        assert cfg["role"] == "recommendation" and cfg["params"] == r.params


def test_plots_return_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h = make_synthetic_history("plateau")
    d = diagnose_history(h, ceiling=0.9)
    fig = plot_diagnosis(h, d, 0.9)
    assert len(fig.axes) >= 3
    plt.close(fig)
