"""The training-curve doctor (helpers.evaluation.doctor): findings, recommendations, the standard rules."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import helpers.evaluation.doctor as doctor
from helpers.core.errors import WorkbookError
from helpers.evaluation.doctor import (describe_rules, diagnose_history, evaluate_early_stopping,
                                       evaluate_reduce_lr_on_plateau, KINDS, load_history, load_run_config,
                                       make_findings_table, make_recommendations_table, make_synthetic_history,
                                       NOTE004_BASELINE, pick_metric, SYNTHETIC_KINDS)


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


def test_workbook_history_spelling_and_dict_of_lists():
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "accuracy": 0.5 + e / 100, "f1": 0.5,
             "lr": 1e-3, "grad_norm": 1.0, "epoch_time_s": 0.1, "samples_per_s": 100} for e in range(1, 11)]
    h = load_history(rows)
    assert "val_accuracy" in h.columns and pick_metric(h) == "val_accuracy"
    keras_hist = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85]}     # Keras History.history
    assert list(load_history(keras_hist)["epoch"]) == [0, 1, 2]


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


# ------------------------------------------------------------- each finding and its remedy
@pytest.mark.parametrize("kind, first", [("healthy", "more_epochs"), ("plateau", "loss_weights"),
                                         ("overfitting", "regularise"), ("divergence", "lower_lr"),
                                         ("oscillation", "calmer_steps"), ("lr_decayed_early", "longer_cosine")])
def test_each_labelled_curve_gets_its_remedy_first(kind, first):
    for seed in range(3):
        d = diagnose_history(make_synthetic_history(kind, seed=seed))
        assert d.recommendations[0].name == first, (kind, seed, [r.name for r in d.recommendations])
        assert d.summary["label"] == d.label == kind


def test_divergence_from_a_climbing_training_loss_without_nan():
    t = np.arange(30)
    tr = 0.5 * np.exp(-t / 4) + 0.1
    tr[15:] = tr[15] * np.exp(0.2 * (t[15:] - 15))
    d = diagnose_history(pd.DataFrame({"epoch": t + 1, "train_loss": tr, "val_loss": tr * 1.3}))
    f = d.finding("divergence")
    assert d.label == "divergence" and f.metric == "train_loss" and f.epoch == 16
    assert f.evidence["end_train_loss"] > f.evidence["first_train_loss"] > f.evidence["min_train_loss"]
    assert d.recommendations[0].name == "lower_lr"


def test_underfitting_ranks_capacity_first_and_lowers_regularisation():
    # Training and validation loss almost equal (ratio 1.1 < 1.2) on a plateau well below the ceiling.
    h = make_synthetic_history("plateau", seed=0)
    d = diagnose_history(h.assign(val_loss=h["train_loss"] * 1.1), ceiling=0.9)
    assert d.kinds[:2] == ["plateau", "underfitting"]
    assert d.finding("underfitting").epoch == d.finding("plateau").epoch
    names = [r.name for r in d.recommendations]
    assert names[:3] == ["capacity", "loss_weights", "longer_cosine"]
    less = d.recommendations[names.index("less_regularisation")]
    assert less.params == {"dropout": 0.1, "weight_decay": 5e-5} and "1.2" in less.reason
    assert d.recommendations[0].reason.startswith("underfitting: ")


def test_early_stopping_verdicts_and_their_remedies():
    lax = diagnose_history(make_synthetic_history("plateau", epochs=100, seed=0))
    es = lax.rules["early_stopping"]
    assert es["verdict"] == "too lax" and es["stop_epoch"] == 57 and "43 more epochs" in es["note"]
    rec = next(r for r in lax.recommendations if r.name == "early_stopping")
    assert rec.params == {"early_stopping_patience": 20, "early_stopping_min_delta": 1e-4}
    eager = diagnose_history(make_synthetic_history("healthy", seed=0))
    assert eager.rules["early_stopping"]["verdict"] == "too eager"
    assert [(r.name, r.params) for r in eager.recommendations] == [("more_epochs", {"epochs": 150})]
    assert "[too eager: the run ended" in describe_rules(eager)


def test_tables_have_one_row_per_finding_and_recommendation():
    d = diagnose_history(make_synthetic_history("plateau", seed=0), ceiling=0.9)
    ft, rt = make_findings_table(d), make_recommendations_table(d)
    assert list(ft["kind"]) == d.kinds and "level=" in ft["evidence"].iloc[0]
    assert list(rt["rank"]) == list(range(1, len(d.recommendations) + 1))
    assert list(rt["name"]) == [r.name for r in d.recommendations]


@pytest.mark.parametrize("name", ["Diagnosis", "Finding", "Recommendation", "KINDS", "NOTE004_BASELINE",
                                  "SYNTHETIC_KINDS", "describe_rules", "diagnose_history",
                                  "evaluate_early_stopping", "evaluate_reduce_lr_on_plateau",
                                  "evaluate_synthetic_set", "find_plateau", "load_history", "load_run_config",
                                  "make_findings_table", "make_recommendations", "make_recommendations_table",
                                  "make_synthetic_history", "metric_direction", "normalise_columns",
                                  "pick_metric"])
def test_public_names_are_importable_from_the_package(name):
    assert name in doctor.__all__ and getattr(doctor, name) is not None
