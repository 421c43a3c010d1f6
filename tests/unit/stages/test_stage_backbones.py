"""Unit tests of helpers/backbones.py (notebook 06): tasks, models, table loader, benchmark, reports."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.core.errors import DataError, WorkbookError
from helpers.core.taskspec import make_task_specs
from helpers.data.tables import DEFAULT_TASKS, load_table_tensors, load_task_table, make_subject_split
from helpers.models.multitask import make_multitask_model
from helpers.stages.backbones import (choose_lrs, make_claims_table, make_comparison_table, make_lr_groups,
                                      make_metrics, pareto_front, plot_memory, plot_pareto, pretrained_note,
                                      summarize_comparison, train_backbone)
from helpers.training.config import TrainConfig
from helpers.training.multitask import metric_key


TASKS = make_task_specs(DEFAULT_TASKS)

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------ table
def _write_table(tmp_path, rows: list[dict], images: bool = True, name: str = "t.csv"):
    (tmp_path / "img").mkdir(exist_ok=True)
    if images:
        for r in rows:
            Image.fromarray(np.full((6, 6), 200, np.uint8)).save(tmp_path / r["image"])
    df = pd.DataFrame(rows)
    path = tmp_path / name
    (df.to_excel if name.endswith(".xlsx") else df.to_csv)(path, index=False)
    return path

ROWS = [{"image": f"img/{i}.png", "subject": f"s{i // 2}", "grade": ["low", "mid", "high"][i % 3],
         "spots": ["no", "yes"][i % 2], "age": 20.0 + i} for i in range(12)]

SPECS = make_task_specs(["grade:multiclass", "spots:binary", "age:regression"])

def _rows():
    bench = [{"model": "convnext_tiny", "params_m": 27.82, "train_samples_per_s": 20.0, "infer_samples_per_s": 80.0,
              "train_step_ms": 400.0, "peak_mem_mb": 1500.0, "mem_kind": "cpu_peak_rss", "batch": 8, "gmacs": None,
              "oom_batches": []},
             {"model": "resnet18", "params_m": 11.18, "train_samples_per_s": 90.0, "infer_samples_per_s": 300.0,
              "train_step_ms": 90.0, "peak_mem_mb": 1200.0, "mem_kind": "cpu_peak_rss", "batch": 8, "gmacs": None,
              "oom_batches": [16], "threads": 1, "load_avg_1m": 3.5, "cpu_count": 2}]
    ft = [{"model": "convnext_tiny", "params_m": 27.83, "backbone_params_m": 27.82, "num_features": 768,
           "val_loss": 1.0, "val_combined": 0.7, "test_combined": 0.68, "pretrained": False},
          {"model": "resnet18", "params_m": 11.19, "backbone_params_m": 11.18, "num_features": 512,
           "val_loss": 1.5, "val_combined": 0.5, "test_combined": 0.52, "pretrained": False}]
    return bench, ft


def test_freeze_backbone_and_lr_groups():
    m = make_multitask_model("convnext_atto", TASKS, freeze_backbone=True)
    assert not any(p.requires_grad for p in m.backbone.parameters())
    assert [g["name"] for g in m.param_groups(2e-5, 1e-4)] == ["heads"]
    m.train()
    assert m.training and not m.backbone.training, "a frozen backbone stays in eval mode"
    e = make_multitask_model("convnext_atto+resnet18", TASKS)
    assert make_lr_groups(e, 2e-5) == {"members.0.backbone.": 2e-5, "members.1.backbone.": 2e-5}
    assert [g["lr"] for g in e.param_groups(2e-5, 1e-4)] == [2e-5, 1e-4, 2e-5, 1e-4]
    assert choose_lrs(True, 2e-5, 1e-4, 1e-3) == (2e-5, 1e-4)
    assert choose_lrs(False, 2e-5, 1e-4, 1e-3) == (1e-3, 1e-3)


def test_pretrained_weights_only_from_a_local_file(tmp_path):
    import timm

    src = timm.create_model("convnext_atto", pretrained=False)      # a 1000-class checkpoint, as published
    torch.save(src.state_dict(), tmp_path / "atto.pth")
    m = make_multitask_model("convnext_atto", TASKS, {"convnext_atto": str(tmp_path / "atto.pth")})
    assert m.pretrained is True
    assert torch.equal(m.backbone.stem[0].weight, src.stem[0].weight), "weights came from the file"
    with pytest.raises(DataError, match="file not found"):
        make_multitask_model("convnext_atto", TASKS, {"convnext_atto": str(tmp_path / "missing.pth")})
    with pytest.raises(WorkbookError, match="not a timm model"):
        make_multitask_model("convnext_nonexistent", TASKS)
    assert "RANDOMLY INITIALISED" in pretrained_note(["resnet18"], {})
    assert "local file" in pretrained_note(["convnext_atto"], {"convnext_atto": str(tmp_path / "atto.pth")})
    with pytest.raises(DataError, match="not found"):
        pretrained_note(["resnet18"], {"resnet18": str(tmp_path / "missing.pth")})


# ---------------------------------------------------------------------------------- fine-tune, report
def test_train_backbone_through_the_shared_loop(tmp_path):

    csv = _write_table(tmp_path, ROWS * 2)
    t = load_task_table(csv, SPECS)
    split = make_subject_split(t, 0.34, 0.33, seed=0)
    data = load_table_tensors(t, split, 32)
    cfg = TrainConfig(epochs=2, batch_size=4, grad_accum_steps=2, checkpoint=False, log_every=0, patience=0)
    r = train_backbone("convnext_atto", data, cfg, img_size=32, out_dir=tmp_path / "run")
    assert r["lr_backbone"] == r["lr_head"] == 1e-3 and r["pretrained"] is False
    assert r["effective_batch"] == 8 and r["epochs_run"] == 2
    assert math.isfinite(r["val_loss"]) and 0 <= r["val_combined"] <= 1
    assert {"val_grade_macro_f1", "val_spots_f1", "val_age_r2"} <= set(r)
    assert (tmp_path / "run" / "history.json").is_file()


def test_comparison_table_names_winners_and_metrics_keys():
    comp = make_comparison_table(*_rows())
    assert list(comp["model"]) == ["convnext_tiny", "resnet18"], "sorted by validation loss"
    s = summarize_comparison(comp)
    assert s == {"lowest_loss": "convnext_tiny", "fastest": "resnet18", "best_combined": "convnext_tiny",
                 "best_combined_per_s": "resnet18"}   # 0.5 * 90 > 0.7 * 20
    m = make_metrics(comp, s)
    assert m["resnet18"]["batch"] == 8 and m["convnext_tiny"]["combined"] == pytest.approx(0.7)
    assert m["fastest"] == "resnet18"
    assert metric_key("a.b+c") == "a_b__c"
    assert list(pareto_front([0.7, 0.5, 0.4], [20, 90, 50])) == [True, True, False]
    fig = plot_pareto(comp)
    fig2 = plot_memory(comp)
    assert fig.axes and fig2.axes


def test_claims_table_computes_verdicts():
    comp = make_comparison_table(*_rows())
    c = make_claims_table(comp, 64, "cpu", TASKS)
    params_row = c[(c.model == "convnext_tiny") & c.what.str.startswith("params")].iloc[0]
    assert params_row["claimed"] == 28.59
    assert params_row["measured"] == pytest.approx(27.82 + 0.769, abs=1e-6)
    assert params_row["verdict"] == "matches"
    speed = c[(c.model == "resnet18") & c.what.str.startswith("train img/s")].iloc[0]
    assert speed["claimed"] == 81.0 and speed["verdict"].startswith("1.11x")
    assert "1 thread(s)" in speed["verdict"] and "load average 3.5 on 2 CPUs" in speed["verdict"]
    none = make_claims_table(comp, 32, "cpu", TASKS)
    assert (none.model == "resnet18").any() and none[none.model == "resnet18"].verdict.str.contains("no reference").all()
