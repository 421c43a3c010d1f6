"""Unit tests of helpers/stages/backbones.py and helpers/reports/backbones.py (notebook 06): fine-tuning, seed repeats, the comparison with
chance, the per-second ranking, the claims table and the plots."""
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
from helpers.stages import backbones as bb
from helpers.stages.words import sentences
from helpers.reports.backbones import (describe_answer, describe_chance, describe_pareto_ranking, describe_resolution,
                                       describe_seeds, describe_weights, make_answer_headline, make_claims_table,
                                       plot_memory, plot_pareto, plot_seed_scores)
from helpers.stages.backbones import (check_pretrained_files, choose_lrs, make_comparison_table, make_dataset_card,
                                      make_lr_groups, make_metrics, make_resolution_info, make_seed_table,
                                      mean_sd_interval, pareto_front, pick_top_models, retrain_top_models,
                                      summarize_comparison, summarize_seeds, train_backbone)
from helpers.evaluation.stats import compare_seed_scores
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

def _run(model: str, seed: int, val: float, ci=(None, None), test: float | None = None, **kw) -> dict:
    lo, hi = ci
    return {"model": model, "seed": seed, "val_combined": val, "test_combined": val if test is None else test,
            "val_combined_ci_low": val - 0.05 if lo is None else lo,
            "val_combined_ci_high": val + 0.05 if hi is None else hi,
            "history": [], **kw}


def _rows():
    bench = [{"model": "convnext_tiny", "params_m": 27.82, "train_samples_per_s": 20.0, "infer_samples_per_s": 80.0,
              "train_step_ms": 400.0, "peak_mem_mb": 1500.0, "mem_kind": "cpu_peak_rss", "batch": 8, "gmacs": None,
              "oom_batches": []},
             {"model": "resnet18", "params_m": 11.18, "train_samples_per_s": 90.0, "infer_samples_per_s": 300.0,
              "train_step_ms": 90.0, "peak_mem_mb": 1200.0, "mem_kind": "cpu_peak_rss", "batch": 8, "gmacs": None,
              "oom_batches": [16], "threads": 1, "load_avg_1m": 3.5, "cpu_count": 2},
             {"model": "vit_tiny_patch16_224", "params_m": 5.5, "train_samples_per_s": 170.0,
              "infer_samples_per_s": 800.0, "train_step_ms": 40.0, "peak_mem_mb": 1000.0, "mem_kind": "cpu_peak_rss",
              "batch": 8, "gmacs": None, "oom_batches": []}]
    common = {"pretrained": False, "native_px": 224}
    def norm(v, lo, hi):
        return {"val_digit_norm": v, "val_digit_norm_ci_low": lo, "val_digit_norm_ci_high": hi}

    ft = [_run("convnext_tiny", 0, 0.7, params_m=27.83, backbone_params_m=27.82, num_features=768, val_loss=1.0,
               val_digit_macro_f1=0.8, resolution_handicap=False, **norm(0.78, 0.7, 0.85), **common),
          # Above chance overall, but still at chance on the digit task: flagged, though ranked.
          _run("resnet18", 0, 0.5, params_m=11.19, backbone_params_m=11.18, num_features=512, val_loss=1.5,
               val_digit_macro_f1=0.11, resolution_handicap=False, **norm(0.01, -0.02, 0.04), **common),
          # At chance: its interval includes 0, so it must not be ranked however fast it is.
          _run("vit_tiny_patch16_224", 0, 0.02, ci=(-0.03, 0.07), params_m=5.5, backbone_params_m=5.49,
               num_features=192, val_loss=3.9, val_digit_macro_f1=0.08, resolution_handicap=True, **common),
          _run("convnext_tiny", 1, 0.66), _run("convnext_tiny", 2, 0.68),
          _run("resnet18", 1, 0.52), _run("resnet18", 2, 0.54)]
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
    sources, unknown = check_pretrained_files(["resnet18"], {"vit_x": ""})
    assert sources == {"resnet18": None} and unknown == ["vit_x"]
    assert "resnet18: RANDOMLY INITIALISED" in describe_weights(sources, unknown)
    sources, _ = check_pretrained_files(["convnext_atto+resnet18"], {"convnext_atto": str(tmp_path / "atto.pth")})
    assert sources == {"convnext_atto": str(tmp_path / "atto.pth"), "resnet18": None}, "an ensemble's members each"
    assert "local file" in describe_weights(sources, [])
    with pytest.raises(DataError, match="not found"):
        check_pretrained_files(["resnet18"], {"resnet18": str(tmp_path / "missing.pth")})


# ---------------------------------------------------------------------------------- fine-tune, report
def test_train_backbone_through_the_shared_loop(tmp_path):

    csv = _write_table(tmp_path, ROWS * 2)
    t = load_task_table(csv, SPECS)
    split = make_subject_split(t, 0.34, 0.33, seed=0)
    data = load_table_tensors(t, split, 32)
    cfg = TrainConfig(epochs=2, batch_size=4, grad_accum_steps=2, checkpoint=False, log_every=0, patience=0)
    r = train_backbone("convnext_atto", data, cfg, img_size=32, out_dir=tmp_path / "run", seed=5, n_boot=50)
    assert r["lr_backbone"] == r["lr_head"] == 1e-3 and r["pretrained"] is False and r["seed"] == 5
    assert r["effective_batch"] == 8 and r["epochs_run"] == 2
    # Chance-normalised: at most 1, and below 0 when worse than a predictor that ignores the image.
    assert math.isfinite(r["val_loss"]) and math.isfinite(r["val_combined"]) and r["val_combined"] <= 1
    assert r["val_combined_ci_low"] <= r["val_combined_ci_high"]
    assert {"val_grade_macro_f1", "val_spots_f1", "val_age_r2", "val_grade_chance", "val_grade_norm",
            "test_combined", "test_combined_ci_low"} <= set(r)
    assert r["resolution_handicap"] is False and "convolutional" in r["resolution_note"]
    assert (tmp_path / "run" / "history.json").is_file()
    # the run card's leakage field is the result of the subject check, and a planted leak shows in it
    card = make_dataset_card(t, split, data, seed=0)["data_leakage_prevention"]
    assert card["shared_subject_entries"] == 0 and card["verdict"] == "no subject in two splits"
    subjects = t.frame["subject"].to_numpy()
    rows = np.flatnonzero(subjects == pd.Series(subjects).value_counts().index[0])   # a subject with 2+ images
    assert len(rows) >= 2
    leaky = split.copy()
    leaky[rows[0]] = next(s for s in ("train", "val", "test") if s != split[rows[0]])
    assert make_dataset_card(t, leaky, data, seed=0)["data_leakage_prevention"]["verdict"].endswith("LEAK")


def test_resolution_info_flags_fixed_size_transformers_below_their_size():
    with torch.device("meta"):
        vit = make_multitask_model("vit_tiny_patch16_224", TASKS, img_size=64)
        cnn = make_multitask_model("resnet18", TASKS, img_size=64)
        big = make_multitask_model("vit_tiny_patch16_224", TASKS, img_size=224)
    v = make_resolution_info(vit, 64)
    assert v["resolution_handicap"] is True and v["native_px"] == 224
    assert "4x4 instead of 14x14" in v["resolution_note"] and "HANDICAPPED" in v["resolution"]
    c = make_resolution_info(cnn, 64)
    assert c["resolution_handicap"] is False and "2x2 at 64 px instead of 7x7" in c["resolution_note"]
    assert make_resolution_info(big, 224)["resolution_handicap"] is False
    text = describe_resolution([{"model": "vit", **v}, {"model": "cnn", **c}])
    assert "Handicapped at this size: vit" in text


def test_seed_statistics_and_the_ranking_statement():
    st = mean_sd_interval([1.0, 2.0, 3.0])
    assert (st["n"], st["mean"], st["sd"]) == (3, 2.0, 1.0)
    assert st["ci_high"] - st["mean"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)   # t(0.975, 2)
    assert math.isnan(mean_sd_interval([1.0])["ci_low"])
    d = compare_seed_scores({5: 0.50, 6: 0.52, 7: 0.54}, {0: 0.70, 1: 0.66, 2: 0.68})     # no shared seed: Welch
    assert d.estimate == pytest.approx(0.16) and 0 < d.ci_low < 0.16 < d.ci_high and d.method.startswith("Welch")
    from scipy import stats

    assert d.p == pytest.approx(stats.ttest_ind([0.70, 0.66, 0.68], [0.50, 0.52, 0.54], equal_var=False).pvalue)
    _, ft = _rows()
    seeds = make_seed_table(ft)
    assert list(seeds["model"][:2]) == ["convnext_tiny", "resnet18"] and list(seeds["n_seeds"]) == [3, 3, 1]
    s = summarize_seeds(seeds, ft)
    assert s["best_model"] == "convnext_tiny" and s["best_model_seeds"] == 3
    assert s["best_model_mean"] == pytest.approx(0.68) and s["best_model_sd"] == pytest.approx(0.02)
    assert s["best_model_ci_low"] < 0.68 < s["best_model_ci_high"] and s["best_model_separated"] is True
    # the test headline leaves out the screening run that selected the model
    runs = [r for r in ft if r["model"] == "convnext_tiny"]
    assert s["best_model_test_fresh_seeds"] == [r["seed"] for r in runs[1:]]
    assert s["best_model_test_fresh_mean"] == pytest.approx(np.mean([r["test_combined"] for r in runs[1:]]))
    text = describe_seeds(s, n_val=270, epochs=3)
    assert f"convnext_tiny: 0.680 (95% interval {s['best_model_ci_low']:.3f} to" in text and "sd 0.020" in text
    assert "ahead at 3 seeds" in text and "270 validation images" in text
    # chosen on validation, compared on test paired by seed: the same as scipy's paired t-test
    assert s["best_minus_runner_up_p"] == pytest.approx(stats.ttest_rel([0.7, 0.66, 0.68], [0.5, 0.52, 0.54]).pvalue)
    assert "paired t-test over 3 shared seeds; the test split is fixed" in text and f"p = {s['best_minus_runner_up_p']:.2g}" in text
    assert "On the test split (0.680 against 0.520)" in text
    one = compare_seed_scores({0: 0.7}, {5: 0.5, 6: 0.52})
    assert one.verdict == "not testable"
    close = ft[:3] + [_run("convnext_tiny", 1, 0.50), _run("resnet18", 1, 0.6)]
    s2 = summarize_seeds(make_seed_table(close), close)
    assert s2["best_model_separated"] is False
    assert "not distinguishable at 2 seeds" in describe_seeds(s2, 270, 3)
    assert summarize_seeds(make_seed_table(ft[:3]), ft[:3]) == {"best_model": None}


def test_top_models_are_retrained_with_more_seeds(monkeypatch):
    calls = []
    monkeypatch.setattr(bb, "train_backbone", lambda name, data, config, out_dir=None, seed=0, **kw:
                        calls.append((name, seed)) or _run(name, seed, 0.1))
    first = [_run("a", 7, 0.3), _run("b", 7, 0.6), _run("c", 7, 0.5)]
    assert pick_top_models(first, 2) == ["b", "c"]
    out = retrain_top_models(first, None, None, n_top=2, n_seeds=3, seed=7)
    assert calls == [("b", 8), ("b", 9), ("c", 8), ("c", 9)] and out[:3] == first and len(out) == 7
    assert bb.make_seeds(4294967295, 2) == [4294967295, 0], "seeds stay in the declared range"


def test_comparison_ranks_per_second_only_above_chance():
    bench, ft = _rows()
    comp = make_comparison_table(bench, ft, make_seed_table(ft))
    assert list(comp["model"]) == ["convnext_tiny", "resnet18", "vit_tiny_patch16_224"], "sorted by validation loss"
    by = comp.set_index("model")
    assert by.loc["convnext_tiny", "combined"] == pytest.approx(0.7), "the screening run (first seed)"
    assert by.loc["convnext_tiny", "combined_mean"] == pytest.approx(0.68)
    assert list(comp["above_chance"]) == [True, True, False]
    assert pd.isna(by.loc["vit_tiny_patch16_224", "pareto_front"]), "fastest, but at chance: not ranked"
    # resnet18 is above chance overall but at chance on the digit task: not ranked either.
    assert pd.isna(by.loc["resnet18", "pareto_front"])
    assert by.loc["convnext_tiny", "pareto_front"] == True  # noqa: E712 (a pandas object cell)
    s = summarize_comparison(comp)
    assert s == {"lowest_loss": "convnext_tiny", "fastest": "vit_tiny_patch16_224", "best_combined": "convnext_tiny",
                 "pareto_front": ["convnext_tiny"], "n_above_chance": 2}
    assert list(comp["tasks_at_chance"]) == ["", "digit", ""]
    text = describe_chance(comp)
    assert "At chance (the interval includes 0), so not ranked: vit_tiny_patch16_224 0.020 (95% interval -0.030 to " \
           "0.070)" in text
    assert "Still at chance on a task" in text and "resnet18 (digit 0.010 (95% interval -0.020 to 0.040))" in text
    ranking = describe_pareto_ranking(comp)
    assert "no other model is both better and faster: convnext_tiny (" in ranking and "Not ranked (at chance on a task): resnet18 (digit)" in ranking
    assert "Not ranked (interval includes or lies below chance): vit_tiny_patch16_224" in ranking
    seeds = summarize_seeds(make_seed_table(ft), ft)
    answer = describe_answer(seeds, comp)
    assert "3 seeds, the best backbone on validation is convnext_tiny" in answer and "0.680" in answer
    assert f"over the 2 seeds that did not select it, it scores {seeds['best_model_test_fresh_mean']:.3f}" in answer
    assert "ahead of resnet18" in answer and f"{seeds['best_minus_runner_up']:+.3f} in combined score" in answer
    assert "training time, among models above chance on every task: convnext_tiny." in answer
    assert "At chance on a task: resnet18 (digit)" in answer and "size: vit_tiny_patch16_224." in answer
    assert len(sentences(answer)) <= 4 and len(answer.split()) <= 90
    head = make_answer_headline(seeds, s)
    assert head["best backbone (over seeds)"] == "convnext_tiny"
    assert head["Pareto front, score vs training time (above chance only)"] == "convnext_tiny"
    assert head["its test combined over the seeds that did not select it"] == pytest.approx(
        seeds["best_model_test_fresh_mean"], abs=1e-4)
    # A seed interval that reaches 0 also keeps a model out of the ranking.
    wobbly = ft + [_run("vit_tiny_patch16_224", 1, 0.3), _run("vit_tiny_patch16_224", 2, -0.2)]
    wob = make_comparison_table(bench, [dict(r, val_combined_ci_low=0.01) if r["model"].startswith("vit") else r
                                        for r in wobbly], make_seed_table(wobbly))
    assert not wob.set_index("model").loc["vit_tiny_patch16_224", "above_chance"]


def test_metrics_keys_and_plots():
    bench, ft = _rows()
    comp = make_comparison_table(bench, ft, make_seed_table(ft))
    seeds = summarize_seeds(make_seed_table(ft), ft)
    m = make_metrics(comp, summarize_comparison(comp), seeds, make_task_specs(["digit:multiclass:10"]),
                     {"digit_macro_f1": 0.1})
    c = m["convnext_tiny"]
    assert c["batch"] == 8 and c["combined"] == pytest.approx(0.7) == c["combined_chance_normalised"]
    assert c["n_seeds"] == 3 and c["above_chance"] is True and c["digit_macro_f1"] == pytest.approx(0.8)
    assert c["digit_norm"] == pytest.approx(0.78) and c["n_tasks_at_chance"] == 0
    assert m["resnet18"]["n_tasks_at_chance"] == 1
    assert m["vit_tiny_patch16_224"]["pareto_front"] is None and m["convnext_tiny"]["pareto_front"] is True
    assert m["vit_tiny_patch16_224"]["resolution_handicap"] is True
    assert m["best_model"] == "convnext_tiny" and m["best_model_seeds"] == 3 and m["chance"] == {"digit_macro_f1": 0.1}
    assert m["fastest"] == "vit_tiny_patch16_224" and m["n_models"] == 3
    assert metric_key("a.b+c") == "a_b__c"
    assert list(pareto_front([0.7, 0.5, 0.4], [20, 90, 50])) == [True, True, False]
    fig = plot_pareto(comp)
    ax = fig.axes[0]
    assert any(list(l.get_ydata()) == [0.0, 0.0] for l in ax.get_lines()), "a chance line at 0"
    assert "validation" in ax.get_ylabel() and "chance" in ax.get_ylabel()
    assert any("handicapped" in str(t) for t in ax.get_legend().get_texts()), "diamonds say which are handicapped"
    assert any("not ranked" in str(t) for t in ax.get_legend().get_texts()), "hollow = at chance"
    seed_ax = plot_seed_scores(ft).axes[0]
    assert "validation" in seed_ax.get_title() and "validation" in seed_ax.get_ylabel()
    assert "no data split" in plot_memory(comp).axes[0].get_title()


def test_claims_table_computes_verdicts_and_labels_unlike_steps():
    bench, ft = _rows()
    comp = make_comparison_table(bench, ft, make_seed_table(ft))
    c = make_claims_table(comp, 64, "cpu")
    params_row = c[(c.model == "convnext_tiny") & c.what.str.startswith("params")].iloc[0]
    assert params_row["claimed"] == 28.59
    assert params_row["measured"] == pytest.approx(27.82 + 0.769, abs=1e-6)
    assert params_row["verdict"] == "matches"
    speed = c[(c.model == "resnet18") & c.what.str.startswith("train img/s")].iloc[0]
    assert speed["claimed"] == 81.0 and speed["verdict"].startswith("ratio 1.11x of unlike steps")
    assert "forward + loss + backward + AdamW step" in speed["what"] and "forward + backward only" in speed["what"]
    assert "1 thread(s)" in speed["verdict"] and "load average 3.5 on 2 CPUs" in speed["verdict"]
    none = make_claims_table(comp, 32, "cpu")
    assert (none.model == "resnet18").any()
    assert none[none.model == "resnet18"].verdict.str.contains("no reference").all()
