"""Unit tests of helpers/backbones.py (notebook 06): tasks, models, table loader, benchmark, reports."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from helpers.core import paths
from helpers.workbook import params
from helpers.bench.backbones import bench_main
from helpers.core.errors import DataError, WorkbookError
from helpers.core.taskspec import make_task_specs
from helpers.data.tables import DEFAULT_TASKS, DIGIT_LOOPS, evaluate_split, load_table_tensors, load_task_table, make_digit_task_table, make_subject_split
from helpers.evaluation.speed import OOMAtEveryBatch, _peak_rss_mb, decay_batch, evaluate_backbone_speed, run_with_batch_decay
from helpers.models.multitask import count_multitask_params, make_multitask_model
from helpers.stages.backbones import TIMM_REFERENCE, choose_lrs, make_claims_table, make_comparison_table, make_lr_groups, make_metrics, pareto_front, plot_memory, plot_pareto, pretrained_note, summarize_comparison, train_backbone
from helpers.training.config import TrainConfig
from helpers.training.multitask import MultiTask, metric_key


torch.set_num_threads(1)
TASKS = make_task_specs(DEFAULT_TASKS)


def _configured(profile: str) -> tuple[list[str], int, bool]:
    """Backbones, image size and channels_last of notebook 06 under a profile."""
    spec = params.load_notebook_spec("06_backbones")
    p = spec.defaults()
    path = paths.params_path(profile, "06_backbones")
    if profile != "notebook":
        p.update(yaml.safe_load(path.read_text()) or {})
    return list(p["backbones"]), int(p["img_size"]), bool(p["channels_last"])


CPU_CASES = sorted({(n, s) for prof in ("notebook", "smoke", "default") for n, s in
                    [(n, _configured(prof)[1]) for n in _configured(prof)[0]]})
GPU_BACKBONES, GPU_SIZE, GPU_CL = _configured("gpu")


# ------------------------------------------------------------------------------------------ tasks
def test_task_specs_parse_and_reject():
    assert [(t.name, t.kind, t.out_dim) for t in TASKS] == [("digit", "multiclass", 10), ("parity", "binary", 1),
                                                             ("loops", "multiclass", 3)]
    w = make_task_specs(["a:binary", "b:regression"], [2.0, 0.5])
    assert [t.weight for t in w] == [2.0, 0.5] and w[1].out_dim == 1
    for bad in (["a:ternary"], ["a"], ["a:binary:3"], ["a:binary", "a:regression"], []):
        with pytest.raises(WorkbookError):
            make_task_specs(bad)
    with pytest.raises(WorkbookError, match="one weight per task"):
        make_task_specs(["a:binary", "b:binary"], [1.0])


def test_multitask_loss_metrics_and_missing_labels():
    specs = make_task_specs(["d:multiclass:3", "p:binary", "r:regression"], [1.0, 2.0, 0.5])
    task = MultiTask(specs, {"r": 10.0}, {"r": 2.0})
    y = torch.tensor([[0, 1, 12.0], [2, 0, 8.0], [1, 1, 10.0], [float("nan"), 0, float("nan")]])
    # Perfect logits: class one-hot, binary ±5, regression = standardised target.
    out = torch.zeros(4, 5)
    out[torch.arange(3), y[:3, 0].long()] = 20.0
    out[:, 3] = torch.where(y[:, 1] > 0, 20.0, -20.0)
    out[:3, 4] = (y[:3, 2] - 10.0) / 2.0
    m = task.metrics(out, y)
    assert m["primary"] == "combined"
    assert m["d_macro_f1"] == pytest.approx(1.0) and m["p_f1"] == pytest.approx(1.0)
    assert m["r_r2"] == pytest.approx(1.0) and m["combined"] == pytest.approx(1.0)
    assert float(task.loss(out, y)) < 1e-6
    # The weighted sum: each task's loss times its weight; NaN rows are skipped, not zero-filled.
    parts = task.task_losses(torch.zeros(4, 5), y)
    assert float(parts["d"]) == pytest.approx(math.log(3), rel=1e-5)
    assert float(parts["p"]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(parts["r"]) == pytest.approx(float(((y[:3, 2] - 10) / 2).pow(2).mean()), rel=1e-5)
    total = float(task.loss(torch.zeros(4, 5), y))
    assert total == pytest.approx(float(parts["d"] + 2 * parts["p"] + 0.5 * parts["r"]), rel=1e-5)
    p = task.predict(out)
    assert p.shape == (4, 5) and torch.allclose(p[:, :3].sum(1), torch.ones(4))
    assert torch.allclose(p[:3, 4], y[:3, 2])
    with pytest.raises(WorkbookError, match="expected \\[N, 5\\]"):
        task.loss(torch.zeros(4, 4), y)


# ----------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name,size", CPU_CASES, ids=lambda v: str(v))
def test_configured_cpu_backbone_builds_and_trains_one_step(name, size):
    torch.manual_seed(0)
    model = make_multitask_model(name, TASKS, img_size=size)
    parts = name.split("+")
    members = model.members if len(parts) > 1 else [model]
    assert all(len(m.heads) == len(TASKS) for m in members), "one head per task"
    assert model.pretrained is False
    opt = torch.optim.AdamW(model.param_groups(1e-3, 1e-3))
    x = torch.randn(2, 3, size, size)
    y = torch.tensor([[1.0, 1, 0], [8.0, 0, 2]])
    before = [p.detach().clone() for p in model.parameters()]
    out = model(x)
    assert out.shape == (2, sum(t.out_dim for t in TASKS))
    MultiTask(TASKS).loss(out, y).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "the step changed weights"


@pytest.mark.parametrize("name", GPU_BACKBONES)
def test_gpu_profile_backbone_builds_and_backprops_on_meta(name):
    """The gpu profile's large backbones at full size, shape-checked on the meta device (no memory)."""
    with torch.device("meta"):
        model = make_multitask_model(name, TASKS, img_size=GPU_SIZE, channels_last=GPU_CL)
        x = torch.randn(2, 3, GPU_SIZE, GPU_SIZE)
        y = torch.tensor([[1.0, 1, 0], [8.0, 0, 2]])
    members = model.members if "+" in name else [model]
    assert all(len(m.heads) == len(TASKS) for m in members), "one head per task"
    out = model(x)
    assert out.shape == (2, 14)
    MultiTask(TASKS).loss(out, y).backward()
    ref = TIMM_REFERENCE.get(name)
    if ref:  # timm's published parameter count (1000-class head) matches what is built here
        c = count_multitask_params(model)
        assert c["backbone_params_m"] + (c["num_features"] * 1000 + 1000) / 1e6 == pytest.approx(ref[0], rel=0.01)


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


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_user_table_csv_and_excel(tmp_path, fmt):
    rows = [dict(r) for r in ROWS]
    rows[3]["grade"] = None          # a missing label stays missing (NaN), not a class
    path = _write_table(tmp_path, rows, name=f"t.{fmt}")
    t = load_task_table(path, SPECS)
    assert t.n_images == 12 and t.n_subjects == 6
    assert t.classes["grade"] == ["high", "low", "mid"] and t.tasks[0].num_classes == 3
    assert t.classes["spots"] == ["no", "yes"]
    assert np.isnan(t.frame["grade"].iloc[3]) and t.frame["age"].iloc[5] == 25.0
    split = make_subject_split(t, 0.2, 0.2, seed=1)
    by_subject = pd.Series(split).groupby(t.frame["subject"]).nunique()
    assert (by_subject == 1).all(), "a subject never spans two splits"
    assert evaluate_split(t, split)["subjects_in_other_splits"].sum() == 0
    data = load_table_tensors(t, split, 16)
    assert data.x["train"].shape[1:] == (3, 16, 16) and data.y["train"].shape[1] == 3
    assert "age" in data.reg_mean and data.reg_std["age"] > 0


def test_bad_tables_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_task_table(tmp_path / "nope.csv", SPECS)
    path = _write_table(tmp_path, ROWS)
    with pytest.raises(DataError, match=r"missing column\(s\) \['shape'\]"):
        load_task_table(path, make_task_specs(["shape:binary"]))
    with pytest.raises(DataError, match="missing column"):
        load_task_table(path, SPECS, subject_col="patient")
    bad = [dict(r, spots=["a", "b", "c"][i % 3]) for i, r in enumerate(ROWS)]
    with pytest.raises(DataError, match="binary column 'spots' has 3 values"):
        load_task_table(_write_table(tmp_path, bad, name="b.csv"), SPECS)
    bad = [dict(r, age="old") for r in ROWS]
    with pytest.raises(DataError, match="'age' \\(regression\\) holds non-numbers"):
        load_task_table(_write_table(tmp_path, bad, name="c.csv"), SPECS)
    with pytest.raises(DataError, match="declares 2"):
        load_task_table(path, make_task_specs(["grade:multiclass:2"]))
    missing = [dict(r, image=f"img/missing{i}.png") for i, r in enumerate(ROWS)]
    with pytest.raises(DataError, match="12 image file\\(s\\) not found"):
        load_task_table(_write_table(tmp_path, missing, images=False, name="d.csv"), SPECS)
    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported extension"):
        load_task_table(tmp_path / "t.json", SPECS)


def test_digit_table_is_real_digits_with_derived_tasks(tmp_path):
    from sklearn.datasets import load_digits

    csv = make_digit_task_table(tmp_path / "digits")
    assert make_digit_task_table(tmp_path / "digits") == csv, "built once, then reused"
    t = load_task_table(csv, TASKS)
    d = load_digits()
    assert t.n_images == len(d.target) == t.n_subjects, "each image is its own subject"
    f = t.frame
    assert (f["digit"].to_numpy() == d.target).all()
    assert (f["parity"].to_numpy() == d.target % 2).all()
    assert (f["loops"].to_numpy() == DIGIT_LOOPS[d.target]).all()
    assert dict(zip(range(10), DIGIT_LOOPS)) == {0: 1, 1: 0, 2: 0, 3: 0, 4: 1, 5: 0, 6: 1, 7: 0, 8: 2, 9: 1}
    img = np.asarray(Image.open(f["path"].iloc[7]))
    assert img.shape == (8, 8) and np.allclose(img, np.rint(d.images[7] * 255 / 16))


# -------------------------------------------------------------------------------------- benchmark
def test_batch_decay_follows_timm():
    seq, b = [256], 256
    while b > 64:
        b = decay_batch(b)
        seq.append(b)
    assert seq == [256, 192, 128, 96, 64]


def test_oom_retry_lands_on_a_smaller_batch():
    calls = []

    def measure(b):
        calls.append(b)
        if b > 100:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {b}")
        return {"ok": True}

    r = run_with_batch_decay(measure, 256)
    assert r["batch"] == 96 and r["oom_batches"] == [256, 192, 128] and calls == [256, 192, 128, 96]
    with pytest.raises(OOMAtEveryBatch):
        run_with_batch_decay(lambda b: (_ for _ in ()).throw(MemoryError("no")), 4)
    with pytest.raises(ValueError, match="not memory"):   # other errors are not retried
        run_with_batch_decay(lambda b: (_ for _ in ()).throw(ValueError("not memory")), 8)


def test_simulated_oom_in_the_real_measurement():
    r = evaluate_backbone_speed("convnext_atto", 32, 8, TASKS, warmup=0, steps=1, fresh_process=False,
                                   simulate_oom_above=4)
    assert r["batch"] == 4 and r["oom_batches"] == [8, 6]
    for k in ("train_samples_per_s", "infer_samples_per_s", "train_step_ms", "peak_mem_mb", "params_m"):
        assert r[k] > 0, k
    assert r["mem_kind"] == "cpu_peak_rss" and r["peak_mem_mb"] >= r["infer_peak_mem_mb"]
    assert r["gmacs"] is None or r["gmacs"] > 0


def test_fresh_process_measurement_reports_its_own_memory():
    big = torch.ones(400 * 2**20 // 4)   # 400 MB held here must not show up in the child's peak
    big += 1
    r = evaluate_backbone_speed("convnext_atto", 32, 2, TASKS, warmup=0, steps=1, fresh_process=True,
                                   threads=1)
    assert r["batch"] == 2 and r["model"] == "convnext_atto"
    assert 0 < r["rss_before_model_mb"] < r["peak_mem_mb"]
    # Linux's ru_maxrss would hand the child this process's peak (which holds the 400 MB); VmHWM does not.
    assert r["peak_mem_mb"] < _peak_rss_mb() - 200
    del big


def test_bench_cli_prints_the_table(capsys):
    rc = bench_main(["--models", "convnext_atto", "--img-size", "32", "--batch", "4", "--warmup", "0",
                        "--steps", "1", "--same-process", "--simulate-oom-above", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "convnext_atto" in out and "OOM at [4]" in out and "peak MB" in out


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
