"""The training-curve doctor (helpers.evaluation.doctor): reading any history without crashing, the
findings an expert would draw (divergence first, schedule_ended vs plateau, saturated monitor, noise),
the ranked remedies, the standard rules, and its score on hand-labelled public histories."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

import helpers.evaluation.doctor as doctor
from helpers.core.errors import DataError, WorkbookError
from helpers.core.paths import PROJ_ROOT
from helpers.evaluation.doctor import (describe_rules, diagnose_history, diagnose_labelled_histories,
                                       estimate_noise, evaluate_early_stopping, evaluate_labelled_histories,
                                       evaluate_learning_curve, evaluate_reduce_lr_on_plateau, KINDS, LABELLED_KINDS,
                                       load_history, load_labels, load_run_config, make_findings_table,
                                       make_recommendations_table, make_synthetic_history, NOTE004_BASELINE,
                                       pick_metric, SYNTHETIC_KINDS)

HISTORIES = PROJ_ROOT / "tests" / "fixtures" / "histories"
CASES = HISTORIES / "cases"


def _cosine(t: np.ndarray, lr0: float, total: int, floor: float = 1e-6, warmup: int = 5) -> np.ndarray:
    return np.where(t < warmup, floor + (lr0 - floor) * t / warmup,
                    floor + 0.5 * (lr0 - floor) * (1 + np.cos(np.pi * np.clip(t - warmup, 0, None) / (total - warmup))))


# ----------------------------------------------------------- part A: every input gets an answer
@pytest.mark.parametrize("name", ["nan_inf_losses.json", "duplicate_epochs.csv"])
def test_awkward_histories_get_a_diagnosis(name):
    d = diagnose_history(CASES / name)
    assert d.findings and set(d.kinds) <= set(KINDS)
    assert "verdict" in d.rules["early_stopping"]      # describe_rules needs it, short or not
    assert "would stop" in describe_rules(d)


def test_short_workbook_history_gets_only_the_divergence_check():
    d = diagnose_history(CASES / "workbook_smoke_history.json")
    assert d.judged and d.kinds == ["healthy"] and d.metric == "val_accuracy"
    assert d.findings[0].message.startswith("only 4 epochs: too few for the trend rules")
    assert d.rules["early_stopping"]["verdict"] == "not judged"


def test_two_points_are_not_judged_and_say_what_was_read():
    d = diagnose_history(pd.read_json(CASES / "workbook_smoke_history.json").head(2))
    assert not d.judged and d.findings == [] and d.recommendations == [] and d.label == "unjudgeable"
    reason = d.summary["reason"]
    assert "2 finite values" in reason and "val_accuracy" in reason and "train_loss" in reason


def test_nan_and_inf_are_a_divergence_at_the_first_bad_epoch():
    d = diagnose_history(CASES / "nan_inf_losses.json")
    assert d.label == "divergence" and d.findings[0].epoch == 12     # train_loss is inf at epoch 12
    assert d.summary["rows_judged"] == 11


def test_duplicate_epochs_keep_the_last_row_and_say_so():
    h = load_history(CASES / "duplicate_epochs.csv")
    assert list(h["epoch"]) == list(range(1, 16)) and h.attrs["duplicate_epochs"] == 3
    assert h.loc[h["epoch"] == 9, "train_loss"].item() == pytest.approx(0.95 / 9, abs=1e-4)   # the resumed row
    assert diagnose_history(h).summary["duplicate_epochs"] == 3


@pytest.mark.parametrize("content, needle", [
    (b"", "the file is empty"),
    (b"epoch,loss\n", "the history is empty"),
    (bytes(range(256)), "not a text file"),
])
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_unreadable_files_are_a_data_error_naming_the_file(tmp_path, content, needle, suffix):
    if suffix == ".json" and content.startswith(b"epoch"):
        needle = "invalid JSON"
    p = tmp_path / f"h{suffix}"
    p.write_bytes(content)
    with pytest.raises(DataError, match=needle) as e:
        load_history(p)
    assert str(p) in str(e.value)


def test_all_nan_losses_are_a_divergence_not_a_crash():
    rows = [{"epoch": e, "train_loss": math.nan, "val_loss": math.nan, "lr": 20.0 / 4 ** e} for e in range(1, 7)]
    d = diagnose_history(rows)
    assert d.kinds == ["divergence"] and d.findings[0].epoch == 1
    assert d.recommendations[0].name == "lower_lr"


@pytest.mark.parametrize("frame, needle", [
    (pd.DataFrame({"train_loss": [1, 0.9], "val_loss": [1, 1]}), "no epoch column"),
    (pd.DataFrame({"epoch": [1, 2, 3], "lr": [1, 1, 1]}), "no loss or metric column"),
    (pd.DataFrame({"epoch": [1, None, 3], "loss": [1, 0.9, 0.8]}), "epoch column has missing"),
    (pd.DataFrame(), "empty"),
])
def test_missing_columns_give_a_clear_message(frame, needle):
    with pytest.raises(DataError, match=needle):
        diagnose_history(frame)


def test_unknown_metric_names_the_columns():
    with pytest.raises(WorkbookError, match="not a column.*val_cos"):
        diagnose_history(make_synthetic_history("plateau"), metric="top5")


# ------------------------------------------------------------- part B: the acceptance cases
def test_cosine_schedule_that_runs_out_while_rising_is_schedule_ended_not_plateau():
    t = np.arange(25.0)
    lr = _cosine(t, 1e-3, 24, floor=1e-5, warmup=2)
    prog = np.cumsum(lr / lr.max()) / 6.0
    rng = np.random.default_rng(0)
    h = pd.DataFrame({"epoch": t + 1, "train_loss": 0.11 + 0.7 * np.exp(-prog), "val_loss": 0.14 + 0.6 * np.exp(-prog),
                      "val_cos": 0.83 - 0.7 * np.exp(-prog) + rng.normal(0, 3e-4, 25), "lr": lr})
    cfg = dict(NOTE004_BASELINE, d_model=64, nhead=4, num_layers=2, dim_feedforward=256, lr=1e-3, epochs=25,
               warmup_epochs=2, cosine_eta_min=1e-5)
    d = diagnose_history(h, metric="val_cos", ceiling=0.92, config=cfg)
    assert d.label == "schedule_ended" and "plateau" not in d.kinds
    names = [r.name for r in d.recommendations]
    assert names[0] == "longer_schedule" and names[0] != "capacity"
    assert d.recommendations[0].params["epochs"] > 25


def test_schedule_that_decays_early_and_freezes_is_schedule_ended():
    # the former lr_decayed_early: lr x0.8 per epoch, progress follows the lr, the curve freezes
    t = np.arange(60.0)
    lr = 1e-4 * 0.8 ** t
    prog = np.cumsum(lr / 1e-4) / 5.0
    rng = np.random.default_rng(1)
    h = pd.DataFrame({"epoch": t + 1, "train_loss": 0.1 + 0.5 * np.exp(-prog / 2) + rng.normal(0, 0.002, 60),
                      "val_cos": 0.9 - 0.8 * np.exp(-prog / 2) + rng.normal(0, 0.002, 60), "lr": lr})
    d = diagnose_history(h)
    assert d.label == "schedule_ended" and "plateau" not in d.kinds
    assert d.recommendations[0].name == "longer_schedule"


def test_divergence_comes_first_and_nothing_is_drawn_after_it():
    # improving for 30 epochs at a high lr, then the loss explodes and everything goes flat (NaN later)
    t = np.arange(60.0)
    train = 0.2 + 0.5 * np.exp(-t / 10)
    train[30:] = train[29] * np.exp(0.6 * (t[30:] - 29))
    cos = 0.3 + 0.5 * (1 - np.exp(-t / 10))
    cos[30:] = 0.05
    h = pd.DataFrame({"epoch": t + 1, "train_loss": train, "val_loss": train * 1.1, "val_cos": cos, "lr": 1e-3})
    h.loc[40:, ["train_loss", "val_loss"]] = np.nan
    d = diagnose_history(h)
    assert d.kinds[0] == "divergence"
    assert not {"plateau", "underfitting", "saturated_monitor"} & set(d.kinds)
    cut = d.findings[0].evidence["findings_use_epochs_up_to"]
    assert cut <= 30 and all(f.epoch is None or f.epoch <= 30 for f in d.findings)
    assert d.recommendations[0].name == "lower_lr"


def test_note_004_case_stays_a_plateau():
    # M4: cosine similarity stalls at ~0.745 from about epoch 20 with the lr still high, 65 epochs, val/train ~1.4
    h = make_synthetic_history("plateau", epochs=65, seed=0)
    d = diagnose_history(h, config=NOTE004_BASELINE)
    assert d.label == "plateau"
    pl = d.finding("plateau")
    # noise-relative: the start is where the remaining rise drops below two noise standard errors
    assert abs(pl.evidence["level"] - 0.745) < 0.01 and 15 <= pl.epoch <= 40
    assert pl.evidence["lr_fraction_of_peak_at_start"] > 0.5
    assert 1.3 < d.summary["overfit_ratio"] < 1.5


def test_holdout_accuracy_at_one_from_epoch_3_is_a_saturated_monitor():
    t = np.arange(30.0)
    h = pd.DataFrame({"epoch": t + 1, "train_loss": 0.3 * np.exp(-t / 3) + 0.05, "val_loss": 0.2 * np.exp(-t / 3) + 0.02,
                      "val_accuracy": np.minimum(1.0, 0.8 + 0.1 * t)})
    d = diagnose_history(h)
    f = d.finding("saturated_monitor")
    assert d.label == "saturated_monitor" and f.epoch == 3 and f.evidence["epochs_at_maximum"] == 28
    assert not {"plateau", "underfitting"} & set(d.kinds)
    assert d.recommendations[0].name == "monitor_loss"
    assert not any(r.name in ("capacity", "less_regularisation") for r in d.recommendations)


def test_noise_is_found_when_the_swings_are_a_material_share_of_the_range():
    rng = np.random.default_rng(3)
    t = np.arange(40.0)
    h = pd.DataFrame({"epoch": t + 1, "val_accuracy": 0.7 + 0.002 * t + rng.normal(0, 0.04, 40)})
    d = diagnose_history(h)
    f = d.finding("noise")
    assert f is not None and f.evidence["noise"] == pytest.approx(0.04, rel=0.5)
    assert any(r.name == "judge_against_noise" for r in d.recommendations)
    # the same trend with little noise is not "noise"
    quiet = diagnose_history(h.assign(val_accuracy=0.7 + 0.002 * t + rng.normal(0, 0.0005, 40)))
    assert "noise" not in quiet.kinds


def test_thresholds_scale_with_the_curves_own_noise():
    # one slowly rising curve, noiseless-ish and noisy: improving in the first, not beyond noise in the second
    t = np.arange(50.0)
    rng = np.random.default_rng(0)
    base = 0.8 + 0.0005 * t
    quiet = diagnose_history(pd.DataFrame({"epoch": t, "val_cos": base + rng.normal(0, 1e-5, 50)}))
    noisy = diagnose_history(pd.DataFrame({"epoch": t, "val_cos": base + rng.normal(0, 0.01, 50)}))
    assert quiet.summary["still_improving"] and "plateau" not in quiet.kinds
    assert not noisy.summary["still_improving"] and "plateau" in noisy.kinds
    assert noisy.summary["noise"] > 100 * quiet.summary["noise"]


def test_noise_estimate_ignores_trend_and_single_spikes():
    rng = np.random.default_rng(0)
    y = np.linspace(0, 10, 200) + rng.normal(0, 0.1, 200)
    assert estimate_noise(y) == pytest.approx(0.1, rel=0.2)
    y[100] += 50
    assert estimate_noise(y) == pytest.approx(0.1, rel=0.25)


# ----------------------------------------------------------------- more data as a ranked remedy
def test_learning_curve_that_still_rises_ranks_more_data_high():
    h = make_synthetic_history("plateau", seed=0)
    d = diagnose_history(h, learning_curve={0.25: 0.62, 0.5: 0.70, 1.0: 0.75})
    lc = d.summary["learning_curve"]
    assert lc["rises"] and lc["gain_last_step"] == pytest.approx(0.05)
    names = [r.name for r in d.recommendations]
    more = d.recommendations[names.index("more_data")]
    assert names.index("more_data") < names.index("capacity") and more.confidence == "evidence"


def test_flat_learning_curve_drops_more_data_and_no_probe_keeps_it_a_candidate():
    h = make_synthetic_history("plateau", seed=0)
    flat = diagnose_history(h, learning_curve={0.25: 0.744, 0.5: 0.745, 1.0: 0.745})
    assert not flat.summary["learning_curve"]["rises"]
    assert "more_data" not in [r.name for r in flat.recommendations]
    plain = diagnose_history(h)
    cand = next(r for r in plain.recommendations if r.name == "more_data")
    assert cand.confidence == "candidate" and plain.recommendations.index(cand) > 1


def test_learning_curve_projection_and_bad_input():
    lc = evaluate_learning_curve({0.25: 0.5, 0.5: 0.6, 1.0: 0.65}, True, noise=0.001)
    assert lc["rises"] and lc["projected_gain_of_doubling"] == pytest.approx(0.025)
    lc_loss = evaluate_learning_curve([(0.5, 0.30), (1.0, 0.25)], greater_is_better=False, noise=0.001)
    assert lc_loss["rises"] and lc_loss["gain_last_step"] == pytest.approx(-0.05)
    with pytest.raises(WorkbookError, match="at least two"):
        evaluate_learning_curve({1.0: 0.5})


# -------------------------------------------------------------------- labelled generated curves
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


@pytest.mark.parametrize("kind", ["plateau"])        # with overfitting, the stall is reported as its cause
@pytest.mark.parametrize("seed", range(5))
def test_plateau_flagged_no_later_than_reduce_lr_on_plateau(kind, seed):
    h = make_synthetic_history(kind, seed=seed)
    pl = diagnose_history(h).finding("plateau")
    assert pl is not None
    cuts = evaluate_reduce_lr_on_plateau(h["val_cos"], greater_is_better=True, patience=10)
    cut_epoch = int(h["epoch"][cuts[0]]) if cuts else int(h["epoch"].iloc[-1])
    assert pl.epoch <= pl.evidence["flagged_epoch"] <= cut_epoch


def test_single_noisy_epoch_is_not_a_plateau():
    h = make_synthetic_history("healthy", seed=0)
    h.loc[20, "val_cos"] -= 0.1
    h.loc[21, "val_cos"] += 0.05
    assert "plateau" not in diagnose_history(h).kinds


@pytest.mark.parametrize("kind, first", [("healthy", "more_epochs"), ("plateau", "loss_weights"),
                                         ("overfitting", "regularise"), ("divergence", "lower_lr"),
                                         ("oscillation", "calmer_steps"), ("schedule_ended", "longer_schedule"),
                                         ("saturated_monitor", "monitor_loss")])
def test_each_labelled_curve_gets_its_remedy_first(kind, first):
    for seed in range(3):
        d = diagnose_history(make_synthetic_history(kind, seed=seed))
        assert d.recommendations[0].name == first, (kind, seed, [r.name for r in d.recommendations])
        assert d.summary["label"] == d.label == kind


def test_synthetic_set_table():
    t = doctor.evaluate_synthetic_set(seeds=(0,))
    assert set(t["curve"]) == set(SYNTHETIC_KINDS) and t["correct"].all()


# ----------------------------------------------------------------------- the rules users know
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
    assert torch_cuts


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
    vals = [1.0, 0.9, 0.8] + [0.79995] * 25
    assert evaluate_early_stopping(vals, greater_is_better=False, patience=20, min_delta=1e-4) == 22
    assert evaluate_early_stopping([0.5, 0.6, float("nan")], greater_is_better=True) == 2
    assert evaluate_early_stopping(np.linspace(0, 1, 50), greater_is_better=True) is None


def test_early_stopping_verdicts_and_their_remedies():
    lax = diagnose_history(make_synthetic_history("plateau", epochs=100, seed=0))
    es = lax.rules["early_stopping"]
    assert es["verdict"] == "too lax" and es["stop_epoch"] == 57 and "43 more epochs" in es["note"]
    rec = next(r for r in lax.recommendations if r.name == "early_stopping")
    assert rec.params == {"early_stopping_patience": 20, "early_stopping_min_delta": 1e-4}
    eager = diagnose_history(make_synthetic_history("healthy", seed=0))
    assert eager.rules["early_stopping"]["verdict"] == "too eager"
    # scaled from the run's own epochs (the history logs them), not M4's 100
    n = eager.summary["epochs_logged"]
    assert [(r.name, r.params) for r in eager.recommendations] == [("more_epochs", {"epochs": math.ceil(1.5 * n)})]
    assert "[too eager: the run ended" in describe_rules(eager)


# ------------------------------------------------------------------------- other findings
def test_warmup_not_linear_and_linear_warmup():
    h = make_synthetic_history("plateau", seed=0)
    d = diagnose_history(h)
    assert "warmup_not_linear" not in d.kinds and d.summary["warmup_epochs"] == 5
    h2 = h.copy()
    h2.loc[:5, "lr"] = 1e-6 * 100 ** (np.arange(6) / 5)
    d2 = diagnose_history(h2)
    assert "warmup_not_linear" in d2.kinds
    assert any(r.name == "linear_warmup" for r in d2.recommendations)


def test_too_short_history_is_judged_for_divergence_only():
    d = diagnose_history(make_synthetic_history("healthy").head(5))
    assert d.kinds == ["healthy"] and "only 5 epochs" in d.findings[0].message


def test_nan_tail_is_a_divergence_message():
    h = make_synthetic_history("plateau")
    h.loc[40:, ["train_loss", "val_loss", "val_cos"]] = np.nan
    d = diagnose_history(h)
    f = d.finding("divergence")
    assert d.label == "divergence" and f.epoch == 41 and "NaN" in f.message
    assert d.recommendations[0].name == "lower_lr"
    assert d.finding("plateau") is None or d.finding("plateau").epoch < 41


def test_a_metric_logged_from_a_later_epoch_is_not_a_divergence():
    h = make_synthetic_history("healthy", seed=0)
    h.loc[:2, "val_cos"] = np.nan
    assert "divergence" not in diagnose_history(h).kinds


def test_divergence_from_a_climbing_training_loss_without_nan():
    t = np.arange(30)
    tr = 0.5 * np.exp(-t / 4) + 0.1
    tr[15:] = tr[15] * np.exp(0.2 * (t[15:] - 15))
    d = diagnose_history(pd.DataFrame({"epoch": t + 1, "train_loss": tr, "val_loss": tr * 1.3}))
    f = d.finding("divergence")
    assert d.label == "divergence" and f.metric == "train_loss" and f.epoch == 16
    assert f.evidence["end_loss"] > f.evidence["first_loss"] > f.evidence["min_loss"]
    assert d.recommendations[0].name == "lower_lr"


def test_overfitting_recommends_regularisation_with_reason():
    d = diagnose_history(make_synthetic_history("overfitting"))
    r = d.recommendations[0]
    assert r.name == "regularise" and r.params == {"dropout": 0.2, "weight_decay": 2e-4}
    assert "noise tolerance" in r.reason and d.finding("overfitting").evidence["val_loss_rise"] > 0


def test_plateau_recommendations_follow_note_004_and_the_config():
    d = diagnose_history(make_synthetic_history("plateau"), ceiling=0.9)
    names = [r.name for r in d.recommendations]
    assert names[:3] == ["loss_weights", "capacity", "longer_cosine"]
    a, b, c = d.recommendations[:3]
    assert a.params == {"mse_weight": 0.1, "cosine_weight": 0.9}
    assert b.params == {"d_model": 768, "num_layers": 6, "dim_feedforward": 3072, "dropout": 0.2}
    assert c.params == {"warmup_epochs": 10, "epochs": math.ceil(1.5 * d.summary["epochs_logged"]), "cosine_eta_min": 1e-5}
    cfg = dict(NOTE004_BASELINE, d_model=64, nhead=4, num_layers=2, dim_feedforward=256, epochs=30,
               warmup_epochs=2, lr=1e-3, cosine_eta_min=1e-5)
    d2 = diagnose_history(make_synthetic_history("plateau"), config=cfg)
    b2 = next(r for r in d2.recommendations if r.name == "capacity")
    assert b2.params == {"d_model": 96, "num_layers": 3, "dim_feedforward": 384, "dropout": 0.2}
    c2 = next(r for r in d2.recommendations if r.name == "longer_cosine")
    assert c2.params == {"warmup_epochs": 4, "epochs": 45, "cosine_eta_min": 1e-4}


def test_underfitting_ranks_capacity_first_and_lowers_regularisation():
    h = make_synthetic_history("plateau", seed=0)
    d = diagnose_history(h.assign(val_loss=h["train_loss"] * 1.1), ceiling=0.9)
    assert d.kinds[:1] == ["underfitting"] and "plateau" not in d.kinds     # the cause, not also its symptom
    assert d.finding("underfitting").evidence["level"] > 0
    names = [r.name for r in d.recommendations]
    assert names[:3] == ["capacity", "loss_weights", "longer_cosine"]
    less = d.recommendations[names.index("less_regularisation")]
    assert less.params == {"dropout": 0.1, "weight_decay": 5e-5} and "1.2" in less.reason
    assert d.recommendations[0].reason.startswith("underfitting: ")


def test_capacity_advice_for_a_non_transformer_config_is_stated_as_factors():
    h = make_synthetic_history("plateau").rename(columns={"val_cos": "val_accuracy"})
    h["val_accuracy"] *= 0.8
    d = diagnose_history(h, config={"lr": 1e-3, "epochs": 60, "batch_size": 64})
    cap = next(r for r in d.recommendations if r.name == "capacity")
    assert cap.change.startswith("more capacity: width ×1.5")
    assert not any(r.name == "loss_weights" for r in d.recommendations)


# ----------------------------------------------------------------------- reading other loggers
def test_workbook_history_spelling_and_dict_of_lists():
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "accuracy": 0.5 + e / 100, "f1": 0.5,
             "lr": 1e-3, "grad_norm": 1.0, "epoch_time_s": 0.1, "samples_per_s": 100} for e in range(1, 11)]
    h = load_history(rows)
    assert "val_accuracy" in h.columns and pick_metric(h) == "val_accuracy"
    keras_hist = {"loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.85]}
    assert list(load_history(keras_hist)["epoch"]) == [0, 1, 2]


def test_yolo_results_csv_sums_the_loss_terms_and_judges_map50_95(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("                  epoch,         train/box_loss,         train/cls_loss,   metrics/mAP50(B),"
                 "    metrics/mAP50-95(B),           val/box_loss,           val/cls_loss,   lr/pg0,   lr/pg1\n"
                 + "".join(f"{e}, 1.0, 0.5, {0.5 + e / 100}, {0.3 + e / 100}, 1.2, 0.6, 0.07, 0.003\n" for e in range(12)))
    h = load_history(p)
    assert pick_metric(h) == "val_map50_95" and h["train_loss"].iloc[0] == pytest.approx(1.5)
    assert h["val_loss"].iloc[0] == pytest.approx(1.8) and h["lr"].iloc[0] == pytest.approx(0.003)


def test_pytorch_test_columns_are_the_held_out_signal():
    h = load_history(pd.DataFrame({"epoch": [1, 2], "train_loss": [1, 0.9], "test_loss": [1.1, 1.0],
                                   "test_acc": [50, 60], "test_top5": [80, 85]}))
    assert {"val_loss", "val_accuracy", "val_top5"} <= set(h.columns) and pick_metric(h) == "val_accuracy"


def test_run_config_aliases(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"training": {"eta_min": 1e-6, "patience": 5, "lr": 1e-3},
                                                      "model": {"dropout": 0.3}}))
    cfg = load_run_config(tmp_path / "history.json")
    assert cfg == {"cosine_eta_min": 1e-6, "early_stopping_patience": 5, "lr": 1e-3, "dropout": 0.3}
    (tmp_path / "config.json").write_bytes(bytes(range(256)))
    assert load_run_config(tmp_path / "history.json") == {}


def test_tables_have_one_row_per_finding_and_recommendation():
    d = diagnose_history(make_synthetic_history("plateau", seed=0), ceiling=0.9)
    ft, rt = make_findings_table(d), make_recommendations_table(d)
    assert list(ft["kind"]) == d.kinds and "level=" in ft["evidence"].iloc[0]
    assert list(rt["rank"]) == list(range(1, len(d.recommendations) + 1))
    assert list(rt["name"]) == [r.name for r in d.recommendations] and "confidence" in rt.columns


# ------------------------------------------------------------ part C: the hand-labelled histories
def test_every_external_history_is_labelled_sourced_and_readable():
    labels = load_labels(HISTORIES)
    files = {p.stem for p in (HISTORIES / "external").iterdir()}
    assert files == set(labels) and len(files) >= 20
    readme = (HISTORIES / "README.md").read_text()
    for stem, lab in labels.items():
        assert f"{stem}." in readme, f"{stem} has no source in the README"
        assert lab["reason"] and set(lab.get("ambiguous", [])) <= set(LABELLED_KINDS)
        load_history(next((HISTORIES / "external").glob(stem + ".*")))


def test_precision_and_recall_against_the_labels():
    per_file = diagnose_labelled_histories(HISTORIES)
    assert (per_file["doctor"] != "unreadable").all()
    scores = evaluate_labelled_histories(HISTORIES, per_file)
    assert list(scores["kind"]) == [*LABELLED_KINDS, "all kinds"]
    ok = scores.dropna(subset=["precision"])
    assert ((ok["precision"] - ok["tp"] / ok["doctor_found"]).abs() < 1e-12).all()
    pooled = scores.iloc[-1]
    assert pooled["tp"] == scores["tp"].iloc[:-1].sum() and pooled["labelled"] == scores["labelled"].iloc[:-1].sum()
    # the doctor agrees with the hand labels more often than not, pooled over kinds
    assert pooled["precision"] > 0.5 and pooled["recall"] > 0.5


def test_precision_recall_counts_on_a_tiny_labelled_folder(tmp_path):
    (tmp_path / "external").mkdir()
    make_synthetic_history("plateau", seed=0).to_csv(tmp_path / "external" / "a.csv", index=False)
    make_synthetic_history("saturated_monitor", seed=0).to_csv(tmp_path / "external" / "b.csv", index=False)
    (tmp_path / "labels.json").write_text(json.dumps({
        "a": {"kinds": ["plateau"], "reason": "flat"}, "b": {"kinds": ["plateau"], "reason": "wrong on purpose"}}))
    s = evaluate_labelled_histories(tmp_path).set_index("kind")
    assert (s.loc["plateau", "tp"], s.loc["plateau", "fn"]) == (1, 1) and s.loc["plateau", "recall"] == 0.5
    assert s.loc["saturated_monitor", "fp"] == 1 and math.isnan(s.loc["saturated_monitor", "recall"])
    (tmp_path / "labels.json").write_text(json.dumps({"a": {"kinds": ["stalled"]}}))
    with pytest.raises(DataError, match="kinds"):
        load_labels(tmp_path)


@pytest.mark.parametrize("name", ["Diagnosis", "Finding", "Recommendation", "KINDS", "NOTE004_BASELINE",
                                  "SYNTHETIC_KINDS", "LABELLED_KINDS", "describe_rules", "diagnose_history",
                                  "evaluate_early_stopping", "evaluate_reduce_lr_on_plateau",
                                  "evaluate_synthetic_set", "evaluate_labelled_histories", "evaluate_learning_curve",
                                  "estimate_noise", "find_plateau", "load_history", "load_run_config",
                                  "make_findings_table", "make_recommendations", "make_recommendations_table",
                                  "make_synthetic_history", "metric_direction", "normalise_columns", "pick_metric"])
def test_public_names_are_importable_from_the_package(name):
    assert name in doctor.__all__ and getattr(doctor, name) is not None
