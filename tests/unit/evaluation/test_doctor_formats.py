"""The doctor reads each training-log format as its tool writes it (real files in tests/fixtures/histories/
formats/), states the monitor rule, refuses what it cannot read naming row and column, and reports no
finding where nothing can be judged (issues 21 and 22)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpers.core.errors import DataError
from helpers.core.paths import PROJ_ROOT
from helpers.evaluation.doctor import diagnose_history, load_history
from helpers.evaluation.doctor.rules import estimate_noise, expanding_noise, find_plateau
from helpers.workbook.diagnose_cli import diagnose_main

HIST = PROJ_ROOT / "tests" / "fixtures" / "histories"
FORMATS = HIST / "formats"
TB = next(FORMATS.glob("tensorboard.*tfevents*"))


@pytest.mark.parametrize("name, fmt, monitor", [
    ("yolov8_results.csv", "YOLOv8", "val_map50_95"),
    ("yolov5_results.csv", "YOLOv5", "val_map50_95"),
    ("keras_csvlogger.csv", "Keras CSVLogger", "val_accuracy"),
    ("lightning_metrics.csv", "Lightning", "val_loss"),
    ("hf_trainer_state.json", "trainer_state", "val_accuracy"),
    (TB.name, "TensorBoard", "val_map50_95"),
    ("timm_summary.csv", "timm", "val_top1"),
])
def test_each_format_is_read_from_a_real_file_with_its_monitor_named(name, fmt, monitor):
    d = diagnose_history(FORMATS / name)
    assert d.judged and fmt in d.summary["format"] and d.metric == monitor
    assert d.summary["monitor_rule"] and d.summary["columns_read"]
    assert d.findings


def test_real_timm_summary_reads_top1_in_percent_and_its_six_epochs():
    raw = pd.read_csv(FORMATS / "timm_summary.csv")
    h = load_history(FORMATS / "timm_summary.csv")
    assert len(h) == 6 and np.allclose(h["val_top1"], raw["eval_top1"]) and np.allclose(h["val_loss"], raw["eval_loss"])
    d = diagnose_history(FORMATS / "timm_summary.csv")
    assert d.summary["columns_read"] == list(raw.columns) and d.kinds == ["healthy"]


def test_yolov5_reads_its_map_and_learning_rate_columns():
    h = load_history(FORMATS / "yolov5_results.csv")
    raw = pd.read_csv(FORMATS / "yolov5_results.csv", skipinitialspace=True)
    raw.columns = [c.strip() for c in raw.columns]
    assert np.allclose(h["val_map50_95"], raw["metrics/mAP_0.5:0.95"])
    assert np.allclose(h["lr"], raw["x/lr1"])          # the weights' group, not the biases' warm-up
    assert np.allclose(h["train_loss"], raw[["train/box_loss", "train/obj_loss", "train/cls_loss"]].sum(axis=1))
    d = diagnose_history(FORMATS / "yolov5_results.csv")
    assert d.summary["lr_logged_peak"] == pytest.approx(raw["x/lr1"].max(), rel=1e-3)


def test_lightning_step_rows_are_merged_per_epoch_and_step_is_never_the_epoch():
    raw = pd.read_csv(FORMATS / "lightning_metrics.csv")
    h = load_history(FORMATS / "lightning_metrics.csv")
    assert len(h) == raw["epoch"].nunique() and h["epoch"].max() == raw["epoch"].max()
    assert h["val_loss"].notna().all() and h["train_loss"].notna().all()
    assert any("not used" in n for n in h.attrs["notes"])


def test_hf_trainer_state_judges_evaluation_rows_with_the_last_training_loss():
    h = load_history(FORMATS / "hf_trainer_state.json")
    assert h["val_accuracy"].notna().all() and h["epoch"].is_monotonic_increasing
    assert h["train_loss"].iloc[-1] > 0 and "divergence" not in diagnose_history(h).kinds


def test_the_workbook_history_and_tensorboard_files_it_writes_are_read(tmp_path):
    from helpers.training.callbacks import TensorBoardWriter
    t = np.arange(20)
    rows = [{"epoch": int(e), "train_loss": float(1 / (1 + e)), "val_loss": float(1.2 / (1 + e)), "cos": float(e / 20)}
            for e in t]
    w = TensorBoardWriter(tmp_path / "tb", True)
    for r in rows:
        w.write(r)
    w.close()
    tb = load_history(tmp_path / "tb")
    assert "TensorBoard" in tb.attrs["format"] and len(tb) == 20
    assert np.allclose(tb["val_cos"], [r["cos"] for r in rows], atol=1e-6)
    smoke = load_history(HIST / "cases" / "workbook_smoke_history.json")
    assert smoke.attrs["format"] == "workbook history.json"


def test_a_real_keras_file_with_appended_runs_names_their_rows():
    d = diagnose_history(FORMATS / "keras_csvlogger_appended_runs.csv")
    assert d.judged and "Keras" in d.summary["format"]
    assert d.summary["reading_notes"] == ["2 runs appended in one file (the epoch restarts at 0): rows 1-2, rows 3-50; "
                                          "judging the last run (rows 3-50)"]


def test_keras_appended_runs_judge_the_last_and_say_so(tmp_path):
    lines = [x for x in (FORMATS / "keras_csvlogger.csv").read_text().splitlines() if x.strip()]   # \r\r\n endings
    head, rows = lines[0], lines[1:]
    p = tmp_path / "training_log.csv"
    p.write_text("\n".join([head, *rows, *rows]) + "\n")   # the logger appended twice (`append=True`)
    n = len(rows)
    h = load_history(p)
    assert len(h) == n and any(f"2 runs appended" in x and f"rows {n + 1}-{2 * n}" in x for x in h.attrs["notes"])
    d = diagnose_history(p)
    assert any("judging the last run" in x for x in d.summary["reading_notes"])


def test_timm_summary_percent_scale_and_list_valued_lr(tmp_path):
    # timm writes eval_top1 in percent and, with several parameter groups, lr as a list
    e = np.arange(30)
    top1 = np.minimum(30.0, 1 + 3 * e).astype(float)
    top1[15:] = 0.5                              # 200 classes: chance is 0.5 %
    loss = np.log(200) - 0.1 * np.minimum(e, 15) + np.where(e >= 15, 1.5, 0.0)
    df = pd.DataFrame({"epoch": e, "train_loss": loss, "eval_loss": loss + 0.1, "eval_top1": top1,
                       "eval_top5": np.minimum(99, top1 * 2), "lr": [f"[{0.01}, {0.01}]"] * 30})
    p = tmp_path / "summary.csv"
    df.to_csv(p, index=False)
    d = diagnose_history(p)
    assert "timm" in d.summary["format"] and d.metric == "val_top1" and d.summary["lr_logged_peak"] == 0.01
    f = d.finding("divergence")
    assert d.label == "divergence" and f.evidence["collapsed_value"] == 0.5
    assert f.evidence["chance_if_cross_entropy"] == pytest.approx(0.5, rel=0.02)
    assert d.recommendations[0].change.startswith("lr 0.01 → 0.001")


def test_yolo_validation_losses_never_computed_are_not_a_divergence(tmp_path):
    h = pd.read_csv(FORMATS / "yolov8_results.csv", skipinitialspace=True)
    h.columns = [c.strip() for c in h.columns]
    for c in ("val/box_loss", "val/cls_loss", "val/dfl_loss"):
        h[c] = np.where(np.arange(len(h)) % 2, np.inf, 0.0)
    p = tmp_path / "results.csv"
    h.to_csv(p, index=False)
    d = diagnose_history(p)
    assert "divergence" not in d.kinds and d.metric == "val_map50_95"
    assert any("never computed" in n for n in d.summary["reading_notes"])


def test_unjudgeable_log_gets_no_finding_and_the_cli_refuses_it_naming_what_it_read(tmp_path, capsys):
    p = tmp_path / "metrics.csv"
    p.write_text("epoch,step,train_loss,val_loss\n0,10,0.5,\n0,10,,0.6\n1,20,0.4,\n1,20,,0.5\n")
    d = diagnose_history(p)
    assert not d.judged and d.findings == [] and d.recommendations == []
    assert diagnose_main([str(p)]) == 2
    err = capsys.readouterr().err
    assert "not judged" in err and "Lightning" in err and "train_loss" in err and "val_loss" in err


def test_a_text_cell_in_a_numeric_column_is_refused_naming_row_and_column(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("epoch,loss,val_loss\n0,1.0,1.1\n1,0.9,oops\n2,0.8,0.9\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\), column 'val_loss': 'oops' is not a number"):
        load_history(p)


def test_a_merge_conflict_in_a_log_is_refused_naming_the_line(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("epoch,loss\n0,1\n<<<<<<< HEAD\n1,0.9\n=======\n1,0.8\n>>>>>>> abc\n")
    with pytest.raises(DataError, match="line 3 is a git merge-conflict marker"):
        load_history(p)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_ceiling_must_be_finite(value, capsys):
    assert diagnose_main([str(FORMATS / "keras_csvlogger.csv"), f"--ceiling={value}"]) == 2
    assert "ceiling" in capsys.readouterr().err


def test_a_monitor_that_does_not_move_is_saturated_and_float_swings_are_not_noise():
    e = np.arange(40)
    acc = np.full(40, 0.9866071343421936)
    acc[:5] = [0.5, 0.7, 0.9, 0.95, 0.98]
    acc[5::2] += 6e-8                            # float32 rounding, not noise
    tr = 0.6 * np.exp(-e / 8) + 0.01
    d = diagnose_history(pd.DataFrame({"epoch": e, "loss": tr, "val_loss": tr * 1.1, "accuracy": 1 - tr,
                                       "val_accuracy": acc}))
    assert "saturated_monitor" in d.kinds and "noise" not in d.kinds


def test_divergence_message_cites_the_value_of_the_epoch_it_names():
    e = np.arange(30)
    tr = 2.0 * np.exp(-e / 5) + 0.2
    tr[18:] = [3.0, 3.5, 4.5, 6.0, 8.0, 9.0, 9.5, 9.0, 9.8, 9.9, 10.0, 10.1]
    d = diagnose_history(pd.DataFrame({"epoch": e + 1, "train_loss": tr, "val_loss": tr * 1.2}))
    f = d.finding("divergence")
    j = f.evidence["exploded_epoch"]
    assert f"{tr[j - 1]:.4g} at epoch {j}" in f.message
    assert f.evidence["min_loss"] == pytest.approx(tr[:18].min(), rel=1e-3)


def test_loss_returning_to_its_start_is_a_divergence():
    e = np.arange(40)
    tr = np.log(10) - 1.5 * (1 - np.exp(-e / 4))
    tr[20:] = np.log(10) + 0.01 * np.sin(e[20:])       # back at ln(10 classes): predicting chance
    d = diagnose_history(pd.DataFrame({"epoch": e, "train_loss": tr, "val_loss": tr + 0.05}))
    assert d.label == "divergence" and d.finding("divergence").metric == "train_loss"


def test_expanding_noise_matches_the_prefix_estimate():
    rng = np.random.default_rng(0)
    a = np.cumsum(rng.normal(size=3000)) * 0.01 + rng.normal(size=3000) * 0.1
    fast = expanding_noise(a)
    for j in (3, 10, 60, 500, 2999):
        exact = estimate_noise(a[:j])
        assert fast[j] == pytest.approx(exact, rel=0.1 if j > 66 else 1e-9)


def test_vectorised_plateau_scan_finds_the_stall():
    y = np.concatenate([np.linspace(0, 1, 30), np.full(30, 1.0)]) + np.random.default_rng(1).normal(0, 0.01, 60)
    pl = find_plateau(y, True, window=8)
    assert pl is not None and 25 <= pl["start"] <= 34 and math.isfinite(pl["slope_se"])
