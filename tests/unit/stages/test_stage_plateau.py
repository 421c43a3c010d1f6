"""Notebook 07's stage module (helpers.stages.plateau): runs through the shared loop, the learning-curve
probe fed to the doctor, the follow-ups and the control, the computed conclusion, the external scores."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers.data.multiview import make_multiview_data
from helpers.evaluation.doctor import diagnose_history, LABELLED_KINDS, load_history, make_synthetic_history, NOTE004_BASELINE
from helpers.stages.words import sentences
from helpers.reports.plateau import (describe_answer, describe_conclusion, make_answer_headline,
                                     make_note004_comparison, plot_diagnosis, plot_learning_curve)
from helpers.stages import plateau
from helpers.stages.plateau import (diagnose_histories, learning_curve_points, make_before_after_table,
                                    make_doctor_metrics, make_followup_params, make_learning_curve_table,
                                    make_training_subset, RUN_KEYS, runnable_followups, summarize_followups,
                                    train_data_control, train_followups, train_learning_curve,
                                    train_transformer3d, write_foreign_histories)


BASE = {"d_model": 16, "nhead": 2, "num_layers": 1, "dim_feedforward": 32, "dropout": 0.1, "mse_weight": 0.2,
        "cosine_weight": 0.8, "lr": 3e-3, "warmup_epochs": 1, "warmup_lr": 1e-6, "epochs": 9,
        "cosine_eta_min": 1e-5, "batch_size": 8, "weight_decay": 1e-4, "early_stopping_patience": 20,
        "early_stopping_min_delta": 1e-4, "amp": False}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return make_multiview_data(n_identities=40, seqs_per_identity=1, frames=4, feat_dim=8, n_keypoints=4,
                               seed=0, control_data_factor=1.5)


# --------------------------------------------------------------------- other loggers, the CLI
def test_keras_and_timm_spellings(tmp_path):
    paths = write_foreign_histories(tmp_path)
    table, diags = diagnose_histories(paths)
    assert list(table["label"]) == ["overfitting", "schedule_ended"]
    assert list(table["metric"]) == ["val_accuracy", "val_top1"]
    keras = load_history(next(iter(paths.values())))
    assert {"train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"} <= set(keras.columns)


def test_diagnose_histories_reports_unreadable_files(tmp_path):
    (tmp_path / "bad.csv").write_text("")
    table, diags = diagnose_histories({"bad": tmp_path / "bad.csv"})
    assert table["label"].tolist() == ["unreadable"] and "the file is empty" in table["finding"].iloc[0]


def test_followup_params_apply_and_round():
    base = {k: v for k, v in NOTE004_BASELINE.items() if k in RUN_KEYS} | {"amp": False}
    p = make_followup_params(base, {"d_model": 100, "num_layers": 6, "unknown": 1}, max_epochs=50)
    assert p["d_model"] % base["nhead"] == 0 and p["num_layers"] == 6 and "unknown" not in p
    assert p["epochs"] == 50 and base["d_model"] == 512


# ------------------------------------------------------------------------- the learning curve
def test_training_subset_keeps_whole_identities_and_the_held_out_splits(data):
    half = make_training_subset(data, 0.5, seed=3)
    ids, all_ids = np.unique(half.train.ids), np.unique(data.train.ids)
    assert len(ids) == round(0.5 * len(all_ids)) and set(ids) <= set(all_ids)
    assert half.val is data.val and half.test is data.test and half.train_extra is None
    assert np.array_equal(np.unique(make_training_subset(data, 0.5, seed=3).train.ids), ids)   # seeded
    with pytest.raises(ValueError, match="fraction"):
        make_training_subset(data, 1.5)


def test_learning_curve_table_and_points():
    run = lambda name, ids, best, role="probe": type("R", (), dict(  # noqa: E731
        name=name, train_identities=ids, best_val_cos=best, test_cos=best - 0.01, epochs_run=5, seconds=1.0,
        role=role))()
    base = run("baseline", 40, 0.75, "baseline")
    t = make_learning_curve_table(base, [run("train_0.5", 20, 0.70), run("train_0.25", 10, 0.62)],
                                  run("control_more_data", 80, 0.78, "control"))
    assert list(t["fraction"]) == [0.25, 0.5, 1.0, 2.0] and list(t["used_by_doctor"]) == [True, True, True, False]
    assert learning_curve_points(t) == {0.25: 0.62, 0.5: 0.70, 1.0: 0.75}


def test_train_probe_diagnose_follow_up_and_conclude(tmp_path, data):
    run = train_transformer3d(data, BASE, "baseline", tmp_path / "baseline", seed=0)
    assert (tmp_path / "baseline" / "history.json").is_file() and (tmp_path / "baseline" / "config.json").is_file()
    assert run.epochs_run == 9 and -1 <= run.best_val_cos <= 1 and math.isfinite(run.overfit_ratio)
    assert run.train_identities == len(np.unique(data.train.ids))
    assert run.history["lr"].iloc[-1] == pytest.approx(1e-5, rel=1e-3)
    probes = train_learning_curve(data, {**BASE, "epochs": 3}, tmp_path / "lc", (0.5,), seed=0)
    assert [p.role for p in probes] == ["probe"] and (tmp_path / "lc" / "train_0.5" / "history.json").is_file()
    lc = make_learning_curve_table(run, probes)
    diag = diagnose_history(run.history, metric="val_cos", ceiling=data.ceiling_cos, config=BASE,
                            learning_curve=learning_curve_points(lc))
    assert diag.summary["learning_curve"]["fractions"] == [0.5, 1.0]
    runs = train_followups(data, BASE, diag, 1, tmp_path / "followups", seed=0, max_epochs=3)
    assert all(r.name != "more_data" for r in runs)            # not a flag change: the control measures it
    control = train_data_control(data, {**BASE, "epochs": 3}, tmp_path / "followups", seed=0)
    table = make_before_after_table(run, runs + [control], data.ceiling_cos)
    assert list(table["role"])[0] == "baseline" and list(table["role"])[-1] == "control"
    head = summarize_followups(table)
    assert head["control_best_cos"] == pytest.approx(control.best_val_cos)
    changes = table[table["role"] != "baseline"]
    assert head["best_change_delta"] == pytest.approx(changes["delta_vs_baseline"].max())
    text = describe_conclusion(head, table, data.ceiling_cos, diag)
    assert text.startswith(f"Conclusion: the change that helped most was {head['best_change'].replace('_', ' ')}")
    assert f"{head['best_change_delta']:+.4f}" in text and "gap to the ceiling" in text
    for r in runs:
        cfg = json.loads((tmp_path / "followups" / r.name / "config.json").read_text())
        assert cfg["role"] == "recommendation" and cfg["params"] == r.params


def test_the_follow_up_bar_counts_the_runs_that_run_and_ends_full(monkeypatch, tmp_path):
    """Of four recommendations two change a flag (one changes nothing, one names no flag): the bar's total is 2
    and it is advanced twice, so it ends at 2/2 (100%), not at 3/4."""
    from types import SimpleNamespace

    recs = [SimpleNamespace(name="lower_lr", plan="C", change="lr / 3", params={"lr": 1e-3}),
            SimpleNamespace(name="same_lr", plan="C", change="none", params={"lr": BASE["lr"]}),
            SimpleNamespace(name="more_data", plan="-", change="more data", params={"train_data_factor": 2.0}),
            SimpleNamespace(name="regularise", plan="B", change="dropout 0.2", params={"dropout": 0.2}),
            SimpleNamespace(name="longer", plan="C", change="epochs x1.5", params={"epochs": 14})]
    diag = SimpleNamespace(recommendations=recs)
    bars = []

    def fake_progress(items, desc, total=None):
        bar = {"total": total, "done": 0}
        bars.append(bar)
        for item in items:
            bar["done"] += 1
            yield item

    monkeypatch.setattr(plateau, "progress", fake_progress)
    monkeypatch.setattr(plateau, "train_transformer3d", lambda data, p, name, *a, **k: SimpleNamespace(name=name, params=p))
    runs = train_followups(None, BASE, diag, 2, tmp_path)
    assert [r.name for r in runs] == ["lower_lr", "regularise"] and runs[1].params["dropout"] == 0.2
    assert bars == [{"total": 2, "done": 2}]
    assert [r.name for r in runnable_followups(diag, BASE, 6)] == ["lower_lr", "regularise", "longer"]
    assert runnable_followups(diag, BASE, 0) == []


def test_summary_and_conclusion_pick_the_largest_gain():
    table = pd.DataFrame({"run": ["baseline", "longer_schedule", "loss_weights", "control_more_data"],
                          "role": ["baseline", "recommendation", "recommendation", "control"],
                          "best_val_cos": [0.80, 0.81, 0.8002, 0.84], "test_cos": [0.79, 0.80, 0.79, 0.83],
                          "delta_vs_baseline": [0.0, 0.01, 0.0002, 0.04], "gap_to_ceiling": [0.12, 0.11, 0.12, 0.08]})
    head = summarize_followups(table)
    assert head["best_remedy"] == "longer_schedule" and head["best_change"] == "control_more_data"
    assert head["best_change_gap_closed"] == pytest.approx(0.04 / 0.12)
    diag = diagnose_history(make_synthetic_history("schedule_ended"))
    text = describe_conclusion(head, table, 0.92, diag)
    assert "control more data (control), validation cosine +0.0400 (0.8000 to 0.8400), closing 33%" in text
    assert "first runnable remedy, longer schedule: +0.0100" in text


def test_answer_and_headline_come_from_the_results():
    table = pd.DataFrame({"run": ["baseline", "longer_schedule", "control_more_data"],
                          "role": ["baseline", "recommendation", "control"], "best_val_cos": [0.80, 0.81, 0.84],
                          "test_cos": [0.79, 0.80, 0.83], "delta_vs_baseline": [0.0, 0.01, 0.04],
                          "gap_to_ceiling": [0.12, 0.11, 0.08]})
    head = summarize_followups(table)
    diag = diagnose_history(make_synthetic_history("schedule_ended"))
    scores = pd.DataFrame([{"split": sp, "method": "doctor", "precision": p, "recall": r, "files": 30,
                            "repositories": 12, "precision_low": p - 0.1, "precision_high": p + 0.1,
                            "recall_low": r - 0.1, "recall_high": r + 0.1}
                           for sp, p, r in (("heldout", 0.75, 0.6), ("dev", 0.8, 0.7))])
    planted = pd.DataFrame()
    planted.attrs.update(faults=8, seeds=3, named=6, helped=4, random_named=1, random_helped=1)
    text = describe_answer(diag, head, table, scores, planted)
    assert "as schedule ended." in text and "control more data" in text and "+0.040 (0.800 to 0.840)" in text
    assert "precision is 0.75 (95% interval 0.65 to 0.85) and recall 0.60" in text and "is not met" in text
    assert "in 6 (a random guess: 1)" in text and "helped in 4 (a random remedy: 1)" in text
    assert len(sentences(text)) <= 4 and len(text.split()) <= 90
    h = make_answer_headline(diag, head, scores, planted)
    assert h == {"first finding": "schedule_ended", "val cos gain of control_more_data": 0.04,
                 "doctor precision / recall held out (dev)": "0.75 / 0.60 (0.80 / 0.70)",
                 "planted faults: cause named / remedy helped": "6 / 4 of 8"}


def test_baseline_and_synthetic_words_state_their_numbers():
    from helpers.reports.plateau import describe_baseline, describe_synthetic
    from helpers.stages.plateau import Run3D

    run = Run3D("baseline", {}, pd.DataFrame(), 0.8123, 17, 0.8011, 1.1, 25, 12.34, 18_000, None)
    text = describe_baseline(run, 0.9252)
    assert "0.8123, at epoch 17 of 25 (test cosine 0.8011)" in text and "ceiling is 0.9252" in text
    assert "0.018 M parameters" in text and "12.3 s" in text
    assert "ceiling of this data is unknown" in describe_baseline(run, None)
    assert "labels 20 of 21 generated curves" in describe_synthetic(pd.DataFrame({"correct": [True] * 20 + [False]}))


def test_note004_comparison_says_when_the_schedule_ran_out():
    h = make_synthetic_history("schedule_ended")
    diag = diagnose_history(h)
    run = type("R", (), dict(best_val_cos=float(h["val_cos"].max()), epochs_run=len(h), overfit_ratio=1.3))()
    t = make_note004_comparison(diag, run, 0.92)
    assert t["verdict"].iloc[0].startswith("does not stall: still rising when the learning rate ran out")


# ------------------------------------------------------------------------- the public logs
def test_doctor_metrics_from_the_validation_and_planted_tables():
    scores = pd.DataFrame([{"split": sp, "method": m, "files": 10, "repositories": 7, "precision": 0.5, "precision_low": 0.3,
                            "precision_high": 0.7, "recall": float("nan"), "recall_low": 0.1, "recall_high": 0.9}
                           for sp in ("heldout", "dev") for m in ("doctor", "Keras EarlyStopping")])
    per_kind = pd.DataFrame([{"kind": k, "precision_heldout": 0.5, "recall_heldout": float("nan")} for k in LABELLED_KINDS])
    planted = pd.DataFrame()
    planted.attrs.update(faults=8, seeds=3, named=6, helped=4, random_named=1, random_helped=1)
    m = make_doctor_metrics(scores, per_kind, planted)
    assert m["doctor_heldout_precision"] == 0.5 and m["doctor_heldout_recall"] is None
    assert m["baseline_keras_earlystopping_dev_precision_low"] == 0.3 and m["n_heldout_logs"] == m["n_external_histories"] == 10
    assert m["planted_named"] == 6 and m["doctor_recall_healthy"] is None
    assert json.dumps(m)        # no NaN: None where a rate is undefined


def test_plots_return_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    h = make_synthetic_history("schedule_ended")
    d = diagnose_history(h, ceiling=0.9)
    fig = plot_diagnosis(h, d, 0.9)
    assert len(fig.axes) >= 3
    plt.close(fig)
    t = pd.DataFrame({"identities": [10, 20, 40, 80], "best_val_cos": [0.6, 0.7, 0.75, 0.78],
                      "used_by_doctor": [True, True, True, False]})
    fig = plot_learning_curve(t, 0.9)
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


def test_histories_of_02_to_04_and_the_lab_fallback_to_the_latest_run(tmp_path, monkeypatch, capsys):
    import json as _json

    from helpers.core import paths as _paths
    from helpers.stages.plateau import find_histories

    monkeypatch.setattr(_paths, "REPORTS", tmp_path / "reports")
    run = tmp_path / "reports" / "r1"
    (run / "02_stage1" / "digit_pairs").mkdir(parents=True)
    (run / "02_stage1" / "digit_pairs" / "history.json").write_text(_json.dumps([{"epoch": 1, "val_loss": 1.0}]))
    assert list(find_histories(run)) == ["02_stage1/digit_pairs/history.json"]
    (tmp_path / "reports" / "latest").symlink_to("r1")
    interactive = tmp_path / "reports" / "interactive"
    interactive.mkdir()
    found = find_histories(interactive)           # 07 alone in JupyterLab: 02 never ran interactively
    assert list(found) == ["02_stage1/digit_pairs/history.json"] and found[list(found)[0]].is_file()
    assert "reading its outputs from the latest completed run" in capsys.readouterr().out


def test_diagnose_histories_keeps_a_history_too_short_to_judge(tmp_path):
    (tmp_path / "short.csv").write_text("epoch,train_loss,val_loss\n1,0.9,1.0\n2,0.8,0.95\n")
    table, diags = diagnose_histories({"short": tmp_path / "short.csv"})
    assert len(table) == 1 and table["reduce_lr_epoch"].isna().all() and table["early_stop_epoch"].isna().all()
    assert not diags["short"].rules                    # no rule replay on two epochs: said as empty, no KeyError
