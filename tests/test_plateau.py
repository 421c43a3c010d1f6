"""The curve doctor (helpers.diagnose) and notebook 07's data, model and task (helpers.plateau)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.core.errors import WorkbookError
from helpers.data.multiview import evaluate_ceiling, load_multiview_data, make_multiview_data
from helpers.evaluation.doctor import KINDS, NOTE004_BASELINE, SYNTHETIC_KINDS, diagnose_history, evaluate_early_stopping, evaluate_reduce_lr_on_plateau, load_history, load_run_config, make_synthetic_history, pick_metric
from helpers.models.transformer3d import Transformer3D
from helpers.stages.plateau import RUN_KEYS, diagnose_histories, make_before_after_table, make_followup_params, plot_diagnosis, summarize_followups, train_data_control, train_followups, train_transformer3d, write_foreign_histories
from helpers.training.tasks import RegressionTask
from helpers.workbook.diagnose_cli import diagnose_main



# ----------------------------------------------------------------------- labelled synthetic curves
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kind", SYNTHETIC_KINDS)
def test_labelled_curves_get_their_label(kind, seed):
    d = diagnose_history(make_synthetic_history(kind, seed=seed))
    assert d.label == kind, (kind, d.kinds)
    assert set(d.kinds) <= set(KINDS)


@pytest.mark.parametrize("seed", range(5))
def test_healthy_curve_raises_no_plateau(seed):
    d = diagnose_history(make_synthetic_history("healthy", seed=seed))
    assert "plateau" not in d.kinds and d.kinds == ["healthy"]
    assert d.summary["plateau_epoch"] is None


@pytest.mark.parametrize("kind", ["plateau", "lr_decayed_early", "overfitting"])
@pytest.mark.parametrize("seed", range(5))
def test_plateau_flagged_no_later_than_reduce_lr_on_plateau(kind, seed):
    h = make_synthetic_history(kind, seed=seed)
    d = diagnose_history(h)
    pl = d.finding("plateau")
    assert pl is not None
    cuts = evaluate_reduce_lr_on_plateau(h["val_cos"], greater_is_better=True, patience=10)
    cut_epoch = int(h["epoch"][cuts[0]]) if cuts else int(h["epoch"].iloc[-1])
    assert pl.evidence["flagged_epoch"] <= cut_epoch
    assert pl.epoch <= pl.evidence["flagged_epoch"]


def test_plateau_start_is_near_the_true_knee():
    # cos = 0.75 - 0.65 exp(-t/5): 95 % of the rise is done by t ≈ 15
    d = diagnose_history(make_synthetic_history("plateau", seed=0), ceiling=0.9)
    pl = d.finding("plateau")
    assert 10 <= pl.epoch <= 22
    assert abs(pl.evidence["level"] - 0.75) < 0.01
    assert abs(pl.evidence["gap_to_ceiling"] - (0.9 - pl.evidence["best"])) < 1e-3


def test_single_noisy_epoch_is_not_a_plateau():
    # A steadily improving curve with one bad epoch must not be called a plateau.
    h = make_synthetic_history("healthy", seed=0)
    h.loc[20, "val_cos"] -= 0.1
    h.loc[21, "val_cos"] += 0.05
    assert "plateau" not in diagnose_history(h).kinds


# ---------------------------------------------------------------------- the rules users know
def test_reduce_lr_on_plateau_matches_torch():
    rng = np.random.default_rng(0)
    vals = np.concatenate([np.linspace(1, 0.5, 10), 0.5 + 0.01 * rng.random(30), np.linspace(0.5, 0.3, 5)])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=10, threshold=1e-4)
    torch_cuts = []
    for i, v in enumerate(vals):
        before = opt.param_groups[0]["lr"]
        sched.step(float(v))
        if opt.param_groups[0]["lr"] < before:
            torch_cuts.append(i)
    assert evaluate_reduce_lr_on_plateau(vals, greater_is_better=False, patience=10) == torch_cuts
    assert torch_cuts  # the flat stretch does trigger a cut


def test_reduce_lr_max_mode_matches_torch():
    vals = [0.1, 0.2, 0.3] + [0.3] * 15
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", patience=10, threshold=1e-4)
    cuts = []
    for i, v in enumerate(vals):
        before = opt.param_groups[0]["lr"]
        sched.step(v)
        if opt.param_groups[0]["lr"] < before:
            cuts.append(i)
    assert evaluate_reduce_lr_on_plateau(vals, greater_is_better=True, patience=10) == cuts == [13]


def test_early_stopping_rule():
    vals = [1.0, 0.9, 0.8] + [0.79995] * 25      # improvements smaller than min_delta do not count
    assert evaluate_early_stopping(vals, greater_is_better=False, patience=20, min_delta=1e-4) == 22
    assert evaluate_early_stopping([0.5, 0.6, float("nan")], greater_is_better=True) == 2
    assert evaluate_early_stopping(np.linspace(0, 1, 50), greater_is_better=True) is None


# ---------------------------------------------------------------------------- other findings
def test_warmup_not_linear_and_linear_warmup():
    h = make_synthetic_history("plateau", seed=0)
    d = diagnose_history(h)
    assert "warmup_not_linear" not in d.kinds and d.summary["warmup_epochs"] == 5
    h2 = h.copy()
    h2.loc[:5, "lr"] = 1e-6 * 100 ** (np.arange(6) / 5)       # exponential warm-up 1e-6 -> 1e-4
    d2 = diagnose_history(h2)
    assert "warmup_not_linear" in d2.kinds
    assert any(r.name == "linear_warmup" for r in d2.recommendations)


def test_too_short_history_says_so():
    h = make_synthetic_history("healthy").head(5)
    d = diagnose_history(h)
    assert d.kinds == ["too_short"] and d.label == "too_short"
    assert d.finding("too_short").evidence["rows"] == 5


def test_nan_history_is_a_divergence_message_not_a_crash():
    h = make_synthetic_history("plateau")
    h.loc[40:, ["train_loss", "val_loss", "val_cos"]] = np.nan
    d = diagnose_history(h)
    assert d.label == "divergence"
    f = d.finding("divergence")
    assert f.epoch == 41 and "NaN" in f.message
    assert d.recommendations[0].name == "lower_lr"


@pytest.mark.parametrize("frame, needle", [
    (pd.DataFrame({"train_loss": [1, 0.9], "val_loss": [1, 1]}), "no epoch column"),
    (pd.DataFrame({"epoch": [1, 2, 3], "lr": [1, 1, 1]}), "no loss or metric column"),
    (pd.DataFrame({"epoch": [1, None, 3], "loss": [1, 0.9, 0.8]}), "epoch column has missing"),
    (pd.DataFrame(), "empty"),
])
def test_missing_columns_give_a_clear_message(frame, needle):
    with pytest.raises(WorkbookError, match=needle):
        diagnose_history(frame)


def test_unknown_metric_names_the_columns():
    with pytest.raises(WorkbookError, match="not a column.*val_cos"):
        diagnose_history(make_synthetic_history("plateau"), metric="top5")


def test_overfitting_recommends_regularisation_with_reason():
    d = diagnose_history(make_synthetic_history("overfitting"))
    r = d.recommendations[0]
    assert r.name == "regularise" and r.params == {"dropout": 0.2, "weight_decay": 2e-4}
    assert "1.5" in r.reason and d.summary["overfit_ratio"] > 1.5


def test_plateau_recommendations_follow_note_004_and_the_config():
    d = diagnose_history(make_synthetic_history("plateau"), ceiling=0.9)
    names = [r.name for r in d.recommendations]
    assert names[:3] == ["loss_weights", "capacity", "longer_cosine"]
    a, b, c = d.recommendations[:3]
    assert a.params == {"mse_weight": 0.1, "cosine_weight": 0.9}
    assert b.params == {"d_model": 768, "num_layers": 6, "dim_feedforward": 3072, "dropout": 0.2}
    assert c.params == {"warmup_epochs": 10, "epochs": 150, "cosine_eta_min": 1e-5}
    # with a run's own (scaled-down) config the values are relative to it
    cfg = dict(NOTE004_BASELINE, d_model=64, nhead=4, num_layers=2, dim_feedforward=256, epochs=30,
               warmup_epochs=2, lr=1e-3, cosine_eta_min=1e-5)
    d2 = diagnose_history(make_synthetic_history("plateau"), config=cfg)
    b2 = next(r for r in d2.recommendations if r.name == "capacity")
    assert b2.params == {"d_model": 96, "num_layers": 3, "dim_feedforward": 384, "dropout": 0.2}
    c2 = next(r for r in d2.recommendations if r.name == "longer_cosine")
    assert c2.params == {"warmup_epochs": 4, "epochs": 45, "cosine_eta_min": 1e-4}


def test_lr_decayed_early_recommends_plan_c_first():
    d = diagnose_history(make_synthetic_history("lr_decayed_early"))
    assert d.recommendations[0].name == "longer_cosine"
    assert d.finding("lr_decayed_early").evidence["fraction_of_peak"] <= 0.2


# --------------------------------------------------------------------- other loggers, the CLI
def test_keras_and_timm_spellings(tmp_path):
    paths = write_foreign_histories(tmp_path)
    table, diags = diagnose_histories(paths)
    assert list(table["label"]) == ["overfitting", "lr_decayed_early"]
    assert list(table["metric"]) == ["val_accuracy", "val_top1"]
    keras = load_history(next(iter(paths.values())))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(keras.columns)


def test_workbook_history_spelling_and_dict_of_lists():
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "accuracy": 0.5 + e / 100, "f1": 0.5,
             "lr": 1e-3, "grad_norm": 1.0, "epoch_time_s": 0.1, "samples_per_s": 100} for e in range(1, 11)]
    h = load_history(rows)
    assert "val_accuracy" in h.columns and pick_metric(h) == "val_accuracy"
    keras_hist = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85]}     # Keras History.history
    assert list(load_history(keras_hist)["epoch"]) == [0, 1, 2]


def test_cli_json_and_text(tmp_path, capsys):
    h = make_synthetic_history("plateau")
    p = tmp_path / "history.json"
    p.write_text(h.to_json(orient="records"))
    assert diagnose_main([str(p), "--json", "--ceiling", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"findings", "recommendations"}
    assert out["findings"][0]["kind"] == "plateau"
    assert set(out["findings"][0]) >= {"kind", "metric", "epoch", "evidence"}
    assert set(out["recommendations"][0]) >= {"change", "reason"}
    assert diagnose_main([str(tmp_path), "--metric", "val_loss"]) == 0      # a run folder
    text = capsys.readouterr().out
    assert "ReduceLROnPlateau" in text and "EarlyStopping" in text


def test_cli_bad_input_is_a_message(tmp_path, capsys):
    bad = tmp_path / "h.csv"
    bad.write_text("step_count,foo\n1,2\n")
    assert diagnose_main([str(bad)]) == 2
    assert "no epoch column" in capsys.readouterr().err
    assert diagnose_main([str(tmp_path / "missing.json")]) == 2


def test_cli_via_python_m_helpers(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    p = tmp_path / "h.csv"
    make_synthetic_history("oscillation").to_csv(p, index=False)
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "helpers", "diagnose", str(p), "--json"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["findings"][0]["kind"] == "oscillation"


# -------------------------------------------------------------------------- data with a ceiling
def test_generated_data_ceiling_and_splits():
    d = make_multiview_data(n_identities=60, seqs_per_identity=2, frames=6, feat_dim=16, n_keypoints=5, seed=1)
    assert d.train.frames.shape[1:] == (6, 16) and d.train.keypoints.shape[1:] == (6, 5, 2)
    assert d.train.target.shape[1] == 16
    np.testing.assert_allclose(np.linalg.norm(d.val.target, axis=1), 1, atol=1e-5)
    assert not (set(d.train.ids) & set(d.val.ids)) and not (set(d.val.ids) & set(d.test.ids))
    # Monte Carlo ceiling agrees with the high-dimensional approximation 1/sqrt(1 + σ²/T)
    assert abs(d.ceiling_cos - d.info["analytic_ceiling_approx"]) < 0.05
    tab = evaluate_ceiling(d)
    assert tab["val_cos"].iloc[0] > tab["val_cos"].iloc[2]      # de-rotation beats ignoring the pose


def test_ceiling_falls_with_noise_and_is_one_without():
    clean = make_multiview_data(n_identities=30, obs_noise=0.0, feat_dim=8, seed=0)
    noisy = make_multiview_data(n_identities=30, obs_noise=3.0, feat_dim=8, seed=0)
    assert clean.ceiling_cos > 0.9999 and noisy.ceiling_cos < clean.ceiling_cos


def test_control_data_adds_training_identities_only():
    d = make_multiview_data(n_identities=100, seqs_per_identity=1, feat_dim=8, seed=0, control_data_factor=2)
    more = d.with_extra_training()
    assert len(more.train) == 2 * len(d.train)
    assert more.val is d.val and more.test is d.test
    assert not (set(more.train.ids) & set(d.val.ids))
    with pytest.raises(WorkbookError, match="no extra training"):
        make_multiview_data(n_identities=20, feat_dim=8).with_extra_training()


def test_user_npz_loads_and_bad_npz_is_clear(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    p = tmp_path / "mine.npz"
    np.savez(p, frames=rng.normal(size=(n, 4, 6)), keypoints=rng.normal(size=(n, 4, 3, 3)),
             target=rng.normal(size=(n, 6)), ids=np.arange(n) // 2)
    d = load_multiview_data(str(p), run_seed=0)
    assert not d.generated and d.ceiling_cos is None
    assert len(d.train) + len(d.val) + len(d.test) == n
    assert not (set(d.train.ids) & set(d.test.ids))
    np.savez(tmp_path / "bad.npz", frames=np.zeros((3, 2, 2)))
    with pytest.raises(WorkbookError, match="missing array 'keypoints'"):
        load_multiview_data(str(tmp_path / "bad.npz"))
    with pytest.raises(WorkbookError, match="no such file"):
        load_multiview_data(str(tmp_path / "nothere.npz"))


# ------------------------------------------------------------------------------ model and task
def test_transformer_shapes_and_task():
    m = Transformer3D(feat_dim=8, kp_dim=10, out_dim=8, d_model=16, nhead=2, num_layers=1,
                         dim_feedforward=32, dropout=0.0)
    out = m(torch.randn(3, 5, 8), torch.randn(3, 5, 5, 2))
    assert out.shape == (3, 8)
    task = RegressionTask(mse_weight=0.2, cosine_weight=0.8)
    tgt = torch.randn(3, 8)
    assert float(task.loss(tgt, tgt)) == pytest.approx(0.0, abs=1e-6)
    assert float(task.loss(-tgt, tgt)) == pytest.approx(0.2 * float((4 * tgt ** 2).mean()) + 0.8 * 2, rel=1e-5)
    met = task.metrics(tgt, tgt)
    assert met["primary"] == "cos" and met["cos"] == pytest.approx(1.0) and met["mse"] == pytest.approx(0.0)
    with pytest.raises(WorkbookError):
        RegressionTask(mse_weight=0, cosine_weight=0)
    with pytest.raises(WorkbookError, match="divisible"):
        Transformer3D(8, 10, 8, d_model=10, nhead=4)


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


def test_accuracy_at_its_maximum_is_converged_not_underfit():
    t = np.arange(30)
    h = pd.DataFrame({"epoch": t, "train_loss": 0.3 * np.exp(-t / 3) + 0.05, "val_loss": 0.2 * np.exp(-t / 3) + 0.02,
                      "val_accuracy": np.minimum(1.0, 0.6 + 0.1 * t)})
    d = diagnose_history(h)
    pl = d.finding("plateau")
    assert pl is not None and pl.evidence["at_ceiling"] and pl.evidence["ceiling_is_implicit"]
    assert "underfitting" not in d.kinds
    assert not any(r.name in ("capacity", "less_regularisation") for r in d.recommendations)


def test_capacity_advice_for_a_non_transformer_config_is_stated_as_factors():
    h = make_synthetic_history("plateau").rename(columns={"val_cos": "val_accuracy"})
    h["val_accuracy"] *= 0.8
    d = diagnose_history(h, config={"lr": 1e-3, "epochs": 60, "batch_size": 64})
    cap = next(r for r in d.recommendations if r.name == "capacity")
    assert cap.change.startswith("more capacity: width ×1.5")
    assert not any(r.name == "loss_weights" for r in d.recommendations)   # no cosine loss here


def test_run_config_aliases(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"training": {"eta_min": 1e-6, "patience": 5, "lr": 1e-3},
                                                      "model": {"dropout": 0.3}}))
    cfg = load_run_config(tmp_path / "history.json")
    assert cfg == {"cosine_eta_min": 1e-6, "early_stopping_patience": 5, "lr": 1e-3, "dropout": 0.3}
