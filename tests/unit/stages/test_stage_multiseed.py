"""helpers.multiseed: recipes read from 02/03, the grid, the source holdout and leakage check, the spread
statistics (sd interval, SE, the architecture comparison), the worker pool (crash isolation), tiny member runs."""
import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st
import torch

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_savez, atomic_write_json
from helpers.data.pairs import load_pair_folder, PairSet
from helpers.data.predictions import load_base_predictions, write_predictions
from helpers.evaluation.leakage import check_no_leakage, make_split_keys
from helpers.evaluation.stats import ROWS, Unit
from helpers.models.registry import create_model
from helpers.stages.words import sentences
from helpers.reports.multiseed import (describe_answer, describe_comparison, describe_failures, describe_search,
                                       describe_spread, describe_tuning, make_answer_headline, make_claims_table,
                                       make_comparison_view, make_metrics_view, make_plan_table, make_summary_view,
                                       make_trials_view, make_tuning_view, plot_member_curves, plot_search,
                                       plot_seed_strip)
from helpers.stages.multiseed import (best_is_handset, _Rows, _split_rows, evaluate_member_leakage, evaluate_tuning_gain,
                                      load_recipes, make_arch_summary, make_comparison_table, make_grid, make_headline,
                                      make_importance_table, make_leakage_summary, make_search_card, make_search_spec,
                                      make_source_holdout, make_tuned_grid, MemberSpec, run_search, sd_interval,
                                      train_member, train_members)
from helpers.training.config import TrainConfig


# ------------------------------------------------------------------------------- fixtures
def _tiny_pairs(folder, rng, n_src=48):
    """8x8 image pairs split by source image (train 0..n_src-1, val and test from their own images)."""
    offset = 0
    for fname, n in (("train.npz", 96), ("val.npz", 40), ("test_public.npz", 40)):
        ids = rng.integers(offset, offset + n_src, (2, n))
        atomic_savez(folder / fname, xa=rng.random((n, 1, 8, 8), dtype=np.float32),
                     xb=rng.random((n, 1, 8, 8), dtype=np.float32), y=np.tile([0, 1], n // 2), ida=ids[0], idb=ids[1])
        offset += n_src


def _write_recipe(run, stem, label, spec, train, card_training, start=None, threshold=0.5):
    """A fake scored checkpoint, run card and prediction file (with its threshold) of notebook `stem`, as 02/03
    write them."""
    folder = run / stem / label
    folder.mkdir(parents=True, exist_ok=True)
    model = create_model(spec["name"], **spec["kwargs"])
    torch.save({"model_state_dict": model.state_dict(), "model_spec": model.spec,
                "config": TrainConfig(**train).to_dict(), "epoch": 1}, folder / "best_accuracy.pt")
    atomic_write_json(folder / "config.json", {"training": {"monitor": "accuracy", **card_training}})
    write_predictions(folder / "predictions" / f"{stem[3:]}.npz", [0.2, 0.8], [0.3, 0.7], [0, 1], [0, 1],
                      threshold=threshold)
    if start is not None:
        atomic_write_json(run / stem / "config.json", {"stage1_checkpoints": {label: str(start)}})
    return folder / "best_accuracy.pt"


def _fake_run(tmp_path, label="pairs", threshold=0.5):
    run = tmp_path / "run"
    s1 = _write_recipe(run, "02_stage1", label, {"name": "stage1_fusion_cbam", "kwargs": {
        "in_channels": 1, "width_mult": 0.125, "feat_dim": 16, "layers": [1, 1, 1]}},
        {"epochs": 2, "batch_size": 32, "lr": 3e-3, "augment": True, "patience": 0, "monitor": "accuracy"},
        {"loss_function": "BCEWithLogits"}, threshold=threshold)
    _write_recipe(run, "03_stage2", label, {"name": "siamese_resnet", "kwargs": {
        "in_channels": 1, "width_mult": 0.125, "feat_dim": 16, "layers": [1, 1, 1], "fusion": "adaptive",
        "attention": "se"}}, {"epochs": 1, "batch_size": 32, "lr": 2e-3, "patience": 0, "monitor": "accuracy"},
        {"loss_function": "focal", "focal_alpha": -1.0, "focal_gamma": 2.0}, start=s1, threshold=threshold)
    return run, s1


def _members() -> pd.DataFrame:
    return pd.DataFrame({
        "member": ["r_s1", "r_s2", "r_s3", "f_s1", "x_s1"], "arch": ["r", "r", "r", "f", "x"],
        "seed": [1, 2, 3, 1, 1], "status": ["ok", "ok", "ok", "ok", "failed"],
        "val_acc": [0.8, 0.82, 0.84, 0.9, np.nan], "test_acc": [0.80, 0.85, 0.90, 0.88, np.nan],
        "test_ci_low": [0.78, 0.83, 0.88, 0.86, np.nan], "test_ci_high": [0.82, 0.87, 0.92, 0.90, np.nan],
        "unit": ["source image"] * 4 + [None], "unit_se": [0.01] * 4 + [np.nan], "n_test": [400] * 4 + [np.nan],
        "error": ["", "", "", "", "boom"], "folder": [""] * 5})


# ------------------------------------------------------------------------------------ recipes
def test_recipes_are_read_from_the_scored_checkpoints_of_02_and_03(tmp_path):
    run, s1 = _fake_run(tmp_path)
    r = load_recipes(run, "pairs", {"a": {"recipe": "02_stage1"}, "b": {"recipe": "03_stage2"}})
    assert r["02_stage1"]["model"] == "stage1_fusion_cbam" and r["02_stage1"]["kwargs"]["width_mult"] == 0.125
    assert r["02_stage1"]["train"]["augment"] is True and r["02_stage1"]["loss"] == "bce"
    assert r["02_stage1"]["start"] == ""
    assert r["03_stage2"]["loss"] == "focal" and r["03_stage2"]["focal_alpha"] == -1.0
    assert r["03_stage2"]["start"] == str(s1)                   # the stage-1 weights 03 started from
    with pytest.raises(WorkbookError, match="run it first"):
        load_recipes(run, "other_dataset", {"a": {"recipe": "02_stage1"}})
    with pytest.raises(WorkbookError, match="expected one of"):
        load_recipes(run, "pairs", {"a": {"recipe": "06_backbones"}})


def test_make_grid_takes_model_training_and_start_from_the_recipe(tmp_path):
    run, s1 = _fake_run(tmp_path)
    arch = {"stage 1": {"recipe": "02_stage1"}, "stage2": {"recipe": "03_stage2"},
            "fpn": {"recipe": "02_stage1", "model": "siamese_fpn", "attention": "cbam"},
            "scratch": {"recipe": "03_stage2", "start": ""}}
    grid = {"stage 1": [1, 2], "stage2": [1], "fpn": [3], "scratch": [4]}
    specs = make_grid(grid, "pairs", run, run / "04", arch, label="pairs", train={"epochs": 1})
    by = {s.name: s for s in specs}
    assert list(by) == ["stage_1_s1", "stage_1_s2", "stage2_s1", "fpn_s3", "scratch_s4"]   # safe slugs
    s = by["stage_1_s1"]
    assert s.model == "stage1_fusion_cbam" and s.recipe == "02_stage1" and s.loss == "bce"
    assert s.train["augment"] is True and s.train["epochs"] == 1 and s.train["lr"] == 3e-3
    assert s.out_dir.endswith("04/pairs/members/stage_1_s1") and s.start_checkpoint == ""
    assert by["stage2_s1"].loss == "focal" and by["stage2_s1"].start_checkpoint == str(s1)
    assert by["fpn_s3"].model == "siamese_fpn" and by["fpn_s3"].model_kwargs["attention"] == "cbam"
    assert by["fpn_s3"].model_kwargs["width_mult"] == 0.125
    assert by["scratch_s4"].start_checkpoint == ""
    plan = make_plan_table(specs)
    assert plan.loc[0, "recipe"] == "02_stage1" and plan.loc[2, "starts_from"] == "best_accuracy.pt"


def test_make_grid_expands_registry_labels_and_checks_input(tmp_path):
    arch = {"resnet": {"model": "siamese_resnet", "fusion": "concat", "width_mult": 0.125}}
    specs = make_grid({"resnet": [42, 2023], "siamese_fpn": [7]}, "digit_pairs", tmp_path, tmp_path / "out",
                      arch, train={"epochs": 1}, threshold=0.4)
    assert [s.name for s in specs] == ["resnet_s42", "resnet_s2023", "siamese_fpn_s7"]
    assert specs[0].model == "siamese_resnet" and specs[0].model_kwargs == {"fusion": "concat", "width_mult": 0.125}
    assert specs[2].predictions_path.endswith("out/digit_pairs/predictions/siamese_fpn_s7.npz")
    assert [s.threshold for s in specs] == [0.4] * 3
    with pytest.raises(WorkbookError, match="no notebook declared its decision threshold"):
        make_grid({"siamese_fpn": [7]}, "d", tmp_path, tmp_path)
    with pytest.raises(WorkbookError, match="not in the registry"):
        make_grid({"no_such_model": [1]}, "d", tmp_path, tmp_path)
    with pytest.raises(WorkbookError, match="seeds"):
        make_grid({"siamese_resnet": ["a"]}, "d", tmp_path, tmp_path, threshold=0.5)
    with pytest.raises(WorkbookError, match="twice"):
        make_grid({"siamese_resnet": [1, 1]}, "d", tmp_path, tmp_path, threshold=0.5)
    with pytest.raises(WorkbookError, match="was not loaded"):
        make_grid({"a": [1]}, "d", tmp_path, tmp_path, {"a": {"recipe": "02_stage1"}}, recipes={})


# ---------------------------------------------------------------- early stopping and leakage
def test_source_holdout_keeps_the_stopping_images_out_of_fitting():
    rng = np.random.default_rng(0)
    n = 400
    ida, idb = rng.integers(0, 40, n), rng.integers(0, 40, n)
    tr = PairSet(np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32), np.tile([0, 1], n // 2), ida, idb)
    fit, stop = make_source_holdout(tr, np.arange(n), 0.3)
    fit_src = set(ida[fit]) | set(idb[fit])
    stop_src = set(ida[stop]) | set(idb[stop])
    assert fit_src.isdisjoint(stop_src) and len(stop) > 10 and len(fit) > 100
    mixed = n - len(fit) - len(stop)
    assert mixed > 0                                                  # pairs with one held-out image are dropped
    again, _ = make_source_holdout(tr, np.arange(n), 0.3)
    assert np.array_equal(fit, again)                                 # the same holdout for every seed
    # scene pairs: the sequence is the unit held out
    seq = rng.integers(0, 8, n)
    tr.extras = {"seq": seq}
    fit, stop = make_source_holdout(tr, np.arange(n), 0.25)
    assert set(seq[fit]).isdisjoint(seq[stop]) and len(fit) + len(stop) == n
    with pytest.raises(WorkbookError, match="needs source ids"):
        make_source_holdout(PairSet(tr.xa, tr.xb, tr.y), np.arange(n), 0.3)


def test_member_leakage_check_counts_what_it_compared(tmp_path):
    rng = np.random.default_rng(0)
    _tiny_pairs(tmp_path, rng)
    splits = load_pair_folder(tmp_path)
    spec = MemberSpec(name="m", arch="m", seed=1, early_stop_split="source_holdout", holdout_frac=0.3)
    rows = _split_rows(spec, splits)
    ok = evaluate_member_leakage(splits, rows)
    assert ok["verdict"].startswith("passed") and ok["stop_sources_shared"] == 0 and ok["val_pairs_shared"] == 0
    assert f"{rows.fit.size} fitted pairs" in ok["compared"]
    # plant a test pair (content and source ids) among the training rows it fits on
    splits.train.xa[rows.fit[0]], splits.train.xb[rows.fit[0]] = splits.test.xa[3], splits.test.xb[3]
    splits.train.ida[rows.fit[0]] = splits.test.ida[3]
    bad = evaluate_member_leakage(splits, _Rows(rows.rows, rows.fit, None, rows.stop_data, "val"))
    assert bad["test_pairs_shared"] == 1 and bad["test_sources_shared"] >= 1 and bad["verdict"].startswith("FAILED")


# ---------------------------------------------------------------------------- spread statistics
def test_sd_interval_is_the_chi_square_interval_and_covers():
    lo, hi = sd_interval(1.0, 5)
    assert lo == pytest.approx(0.5991, abs=1e-3) and hi == pytest.approx(2.8735, abs=1e-3)
    assert all(np.isnan(sd_interval(1.0, 1)))
    rng = np.random.default_rng(0)
    sds = rng.normal(0, 0.02, (2000, 5)).std(axis=1, ddof=1)
    cover = np.mean([lo <= 0.02 <= hi for lo, hi in (sd_interval(s, 5) for s in sds)])
    assert 0.93 <= cover <= 0.97


def test_arch_summary_headline_and_describe():
    m = _members()
    s = make_arch_summary(m).set_index("arch")
    assert s.loc["r", "mean_test_acc"] == pytest.approx(0.85)
    assert s.loc["r", "std_test_acc"] == pytest.approx(0.05)                # ddof = 1
    assert (s.loc["r", "sd_ci_low"], s.loc["r", "sd_ci_high"]) == pytest.approx(sd_interval(0.05, 3))
    assert s.loc["r", "binomial_se"] == pytest.approx(np.sqrt(0.85 * 0.15 / 400))
    assert s.loc["r", "sd_over_unit_se"] == pytest.approx(5.0)
    assert (s.loc["r", "min_test_acc"], s.loc["r", "max_test_acc"]) == (0.80, 0.90)
    assert np.isnan(s.loc["f", "std_test_acc"])                             # one seed: no sd
    assert s.loc["x", "n_ok"] == 0 and s.loc["x", "n_failed"] == 1
    h = make_headline(m, make_arch_summary(m))
    assert h["n_members"] == 5 and h["n_failed"] == 1 and h["r"]["mean_test_acc"] == pytest.approx(0.85)
    assert h["best_member"] == "f_s1"                                       # chosen on validation
    assert h["binomial_se"] == pytest.approx(np.sqrt(0.8575 * 0.1425 / 400))
    text = describe_spread(make_arch_summary(m))
    assert "more than the test split" in text and "chi-square" in text      # sd interval above the SE
    assert "seed sd 5.00 percentage points" in text and "one seed" in text and "x: no member finished" in text
    s2 = make_arch_summary(m).assign(sd_ci_low=0.005)                       # an interval that contains the SE
    assert "cannot tell" in describe_spread(s2) and not re.search(r"[a-z]\.[A-Z]", describe_spread(s2))
    assert "x_s1: boom" in describe_failures(m)
    assert list(make_summary_view(make_arch_summary(m)).columns)[:3] == ["seeds", "mean test acc", "seed sd"]
    assert set(make_claims_table(make_arch_summary(m))["architecture"]) >= {"resnet", "fusion", "r"}


def _members_on_disk(tmp_path, accs: dict[str, list[float]], n=600, seed=0) -> pd.DataFrame:
    """Members whose predictions.npz get each seed's accuracy on n test rows (errors at random rows)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    rows = []
    for arch, values in accs.items():
        for i, a in enumerate(values):
            folder = tmp_path / f"{arch}_{i}"
            folder.mkdir()
            wrong = rng.choice(n, int(round((1 - a) * n)), replace=False)
            prob = y.astype(float)
            prob[wrong] = 1 - prob[wrong]
            atomic_savez(folder / "predictions.npz", test_prob=prob, test_y=y, val_prob=prob, val_y=y, threshold=0.5)
            rows.append({"member": f"{arch}_{i}", "arch": arch, "seed": i, "status": "ok", "test_acc": a,
                         "val_acc": a, "folder": str(folder), "unit": "row", "unit_se": 0.01, "n_test": n})
    return pd.DataFrame(rows)


def test_comparison_adds_seed_and_test_noise_and_gives_a_verdict(tmp_path):
    m = _members_on_disk(tmp_path, {"base": [0.80, 0.82, 0.81], "big": [0.90, 0.91, 0.92], "same": [0.80, 0.83, 0.81]})
    c = make_comparison_table(m, ROWS, n_boot=500).set_index("arch")
    assert c.loc["big", "diff"] == pytest.approx(0.91 - 0.81, abs=1e-9) and c.loc["big", "baseline"] == "base"
    assert c.loc["big", "se"] >= max(c.loc["big", "se_seed"], c.loc["big", "se_test"])
    assert c.loc["big", "se_seed"] == pytest.approx(np.sqrt(0.01 ** 2 / 3 + 0.01 ** 2 / 3), rel=1e-6)
    assert c.loc["big", "verdict"].startswith("better") and c.loc["same", "verdict"].startswith("not distinguishable")
    assert (c["p_holm"] >= c["p_value"]).all()                           # Holm over the two comparisons
    assert "Holm" in describe_comparison(make_comparison_table(m, ROWS, n_boot=500))
    view = make_comparison_view(make_comparison_table(m, ROWS, n_boot=500))
    assert all(str(p).startswith("p ") for p in view["p_holm"])           # text, never a rounded 0
    shown = make_metrics_view(pd.DataFrame({"value": [1e-30, 0.5]}, index=["big.p_vs_baseline", "big.diff"]))
    assert shown.loc["big.p_vs_baseline", "value"] == "p < 1e-16" and shown.loc["big.diff", "value"] == 0.5
    s = make_arch_summary(m)
    comp = make_comparison_table(m, ROWS, n_boot=500)
    text = describe_answer({"tiny": (s, comp, None, None)})
    big = comp.set_index("arch").loc[comp["arch"].iloc[0]]
    assert f"{100 * big['diff']:+.1f} percentage points" in text and "big better" in text    # number and verdict
    assert f"{100 * s['std_test_acc'].max():.1f} percentage points" in text and "p = 0" not in text
    assert len(sentences(text)) <= 4 and len(text.split()) <= 90
    head = make_answer_headline(s, make_comparison_table(m, ROWS, n_boot=500))
    assert 2 <= len(head) <= 3
    # one seed: no seed variance, so no test (and no p printed as 0)
    (tmp_path / "one").mkdir()
    c1 = make_comparison_table(_members_on_disk(tmp_path / "one", {"a": [0.8], "b": [0.9]}), ROWS)
    assert np.isnan(c1.loc[0, "p_value"]) and c1.loc[0, "verdict"].startswith("not testable")


def test_comparison_over_source_images_is_wider_than_over_rows(tmp_path):
    m = _members_on_disk(tmp_path, {"a": [0.80, 0.82], "b": [0.85, 0.86]}, n=600)
    rng = np.random.default_rng(3)
    unit = Unit("source image", (rng.integers(0, 60, 600), rng.integers(0, 60, 600)))
    assert make_comparison_table(m, unit).loc[0, "se_test"] > 0
    assert make_comparison_table(m, unit).loc[0, "diff"] == make_comparison_table(m, ROWS).loc[0, "diff"]


# --------------------------------------------------------------------------------- real runs
def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    m = _members()
    fig = plot_seed_strip(m)
    assert "test split" in fig.axes[0].get_title() and "source image" in fig.axes[0].get_ylabel()
    hist = {"r_s1": [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "accuracy": 0.6},
                     {"epoch": 2, "train_loss": 0.5, "val_loss": 0.5, "accuracy": 0.7}]}
    fig = plot_member_curves(hist, m, stop_split="source_holdout")
    assert len(fig.axes) == 3 and "held-out training source images" in fig.axes[1].get_title()


def test_members_train_in_workers_write_their_folders_and_survive_a_crash(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    data.mkdir()
    _tiny_pairs(data, rng)
    arch = {"r": {"model": "siamese_resnet", "fusion": "concat", "width_mult": 0.125, "feat_dim": 16}}
    run = tmp_path / "run"
    specs = make_grid({"r": [1, 2]}, str(data), run, run / "04_multi_seed", arch,
                      train={"epochs": 1, "batch_size": 32, "patience": 0}, threshold=0.5)
    specs[1].crash = "exit"
    table = train_members(specs, workers=2, verbose=False)
    assert table["status"].tolist() == ["ok", "failed"]
    ok = run / "04_multi_seed" / "pairs" / "members" / "r_s1"
    for f in ("config.json", "history.json", "metrics.json", "predictions.npz", "model.pt"):
        assert (ok / f).is_file(), f
    assert list(ok.glob("events.out.tfevents.*"))                      # TensorBoard beside history.json
    kept = torch.load(ok / "model.pt", weights_only=True)
    assert kept["model_spec"]["name"] == "siamese_resnet" and "model_state_dict" in kept
    metrics = json.loads((ok / "metrics.json").read_text())
    assert metrics["test_ci_low"] <= metrics["test_acc"] <= metrics["test_ci_high"] and metrics["n_test"] == 40
    assert metrics["unit"] == "source image" and metrics["early_stop_split"] == "val"
    card = json.loads((ok / "config.json").read_text())
    assert card["dataset"]["data_leakage_prevention"]["verdict"].startswith("passed")   # a check, not True
    assert json.loads((ok.parent / "r_s2" / "failed.json").read_text())["exitcode"] == 3
    assert make_leakage_summary(table)["verdict"] == "passed"
    # the stacking file records what the member trained on, and passes the leakage check
    assert not (run / "04_multi_seed" / "pairs" / "predictions" / "r_s2.npz").exists()
    base = load_base_predictions(run, str(data))
    assert base.trained_on == [["train"]] and base.selected_on == ["val"]
    assert base.train_keys[0].shape == (96,)
    table = check_no_leakage(base, make_split_keys(load_pair_folder(data)))
    assert table.loc[0, "checked_with"] == "train_keys"


def test_a_stage2_member_follows_its_recipe_and_starts_from_stage1(tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    data = tmp_path / "pairs"
    data.mkdir()
    _tiny_pairs(data, rng)
    run, s1 = _fake_run(tmp_path)
    spec = make_grid({"stage2": [5]}, str(data), run, run / "04", {"stage2": {"recipe": "03_stage2"}},
                     label="pairs", early_stop_split="source_holdout")[0]
    met = train_member(spec)
    assert met["model"] == "siamese_resnet" and met["early_stop_split"] == "source_holdout" and met["n_stop"] > 0
    card = json.loads((run / "04" / "pairs" / "members" / "stage2_s5" / "config.json").read_text())
    assert card["model"]["pretrained"].startswith(str(s1)) and "tensors" in card["model"]["pretrained"]
    assert card["training"]["seed"] == 5 and card["training"]["lr"] == 2e-3 and card["task"]["loss"] == "focal"
    assert card["dataset"]["data_leakage_prevention"]["stop_sources_shared"] == 0
    with np.load(run / "04" / "pairs" / "predictions" / "stage2_s5.npz") as z:
        assert str(z["selected_on"]) == "source_holdout"


def test_a_member_on_vector_pairs_with_pair_features_runs_inline(tmp_path):
    """Scene-like data: cue vectors [N, F] plus pair features [N, G]; the image label maps to its vector model."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    data = tmp_path / "scenes"
    for fname, n in (("train.npz", 64), ("val.npz", 32), ("test_public.npz", 32)):
        atomic_savez(data / fname, xa=rng.random((n, 6), dtype=np.float32), xb=rng.random((n, 6), dtype=np.float32),
                     y=np.tile([0, 1], n // 2), pair=rng.random((n, 3), dtype=np.float32),
                     ida=np.arange(n) + 10_000 * len(fname), idb=np.arange(n) + 1000 + 10_000 * len(fname))
    arch = {"r": {"model": "siamese_resnet", "width_mult": 0.125, "fusion": "concat", "vector_model": "siamese_mlp"}}
    spec = make_grid({"r": [3]}, str(data), tmp_path, tmp_path / "out", arch,
                     train={"epochs": 1, "batch_size": 16, "patience": 0}, threshold=0.5)[0]
    met = train_member(spec)
    assert met["model"] == "siamese_mlp" and met["n_test"] == 32
    card = json.loads((tmp_path / "out" / "scenes" / "members" / "r_s3" / "config.json").read_text())
    assert card["model"]["kwargs"] == {"in_features": 6, "fusion": "concat", "pair_dim": 3}
    with np.load(tmp_path / "out" / "scenes" / "predictions" / "r_s3.npz") as z:
        assert z["train_keys"].shape == (64,)


# ------------------------------------------------------------------------------- the search
def _study_result(spec, values=(0.7, 0.8, 0.75, 0.6), states=("COMPLETE", "COMPLETE", "PRUNED", "COMPLETE")):
    from helpers.training.search import StudyResult

    trials = pd.DataFrame({"number": range(len(values)), "state": list(states), "value": [
        v if s == "COMPLETE" else None for v, s in zip(values, states)],
        "lr": [1e-3, 3e-3, 1e-4, 5e-3], "weight_decay": [1e-4, 2e-5, 1e-3, 1e-5], "width": [1.0, 2.0, 0.5, 1.0],
        "width_value": [0.125, 0.25, 0.0625, 0.125], "epochs_run": [2, 2, 1, 2], "pruned_at": [None, None, 1, None],
        "seconds": [1.0] * 4, "last_value": list(values), "handset": [True, False, False, False],
        "worker": ["h:1", "h:2", "h:1", "h:2"], "folder": [""] * 4})
    curves = pd.DataFrame({"number": [0, 0, 1, 1, 2, 3, 3], "state": ["COMPLETE"] * 4 + ["PRUNED"] + ["COMPLETE"] * 2,
                           "epoch": [1, 2, 1, 2, 1, 1, 2], "value": [0.6, 0.7, 0.7, 0.8, 0.75, 0.5, 0.6]})
    return StudyResult("pairs_stage1", "sqlite:////x/study.db", "/x/study.db", spec, trials, curves,
                       {"lr": 3e-3, "weight_decay": 2e-5, "width": 2.0}, 0.8, 1, 0, 4, 2, 1)


def test_search_spec_follows_the_recipe_and_the_tuned_members_take_the_best_configuration(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    data.mkdir()
    _tiny_pairs(data, rng)
    run, _ = _fake_run(tmp_path)
    arch = {"stage1": {"recipe": "02_stage1"}, "stage2": {"recipe": "03_stage2"}}
    recipes = load_recipes(run, "pairs", arch)
    grid = {"stage1": [1, 2], "stage2": [1]}
    spec = make_search_spec("stage1", grid, arch, recipes, str(data), "pairs", run, run / "04", n_trials=12,
                            space={"width": [0.5, 2.0]}, seed=7, max_epochs=1)
    assert spec["model"] == "stage1_fusion_cbam" and spec["kwargs"]["width_mult"] == 0.125 and spec["loss"] == "bce"
    assert spec["train"]["epochs"] == 1 and spec["train"]["lr"] == 3e-3 and spec["seed"] == 7
    assert spec["space"] == {"lr": [1e-4, 1e-2], "weight_decay": [1e-5, 1e-3], "width": [0.5, 2.0]}
    assert spec["n_startup_trials"] == 3 and spec["trials_dir"].endswith("04/pairs/search/trials") and spec["data"]
    with pytest.raises(WorkbookError, match="not an architecture of the grid"):
        make_search_spec("nope", grid, arch, recipes, str(data), "pairs", run, run / "04", 4)
    res = _study_result(spec)
    tuned = make_tuned_grid(res, "stage1", grid, str(data), run, run / "04", arch, recipes, "pairs",
                            early_stop_split="val", train={"epochs": 1})
    assert [s.name for s in tuned] == ["stage1_tuned_s1", "stage1_tuned_s2"] and tuned[0].arch == "stage1_tuned"
    assert tuned[0].model_kwargs["width_mult"] == 0.25 and tuned[0].train["lr"] == 3e-3
    assert tuned[0].train["weight_decay"] == 2e-5 and tuned[0].train["epochs"] == 1 and tuned[0].recipe == "02_stage1"
    assert tuned[0].predictions_path.endswith("04/pairs/predictions/stage1_tuned_s1.npz")
    card = make_search_card(res)
    assert card["best_params"]["width"] == 2.0 and "--study pairs_stage1" in card["join_from_another_machine"]
    view = make_trials_view(res)
    assert list(view.index) == [1, 0, 3] and view.iloc[0]["val_acc"] == 0.8      # completed trials, best first


def test_a_real_search_runs_in_a_worker_and_writes_its_study_file(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    data.mkdir()
    _tiny_pairs(data, rng)
    run, _ = _fake_run(tmp_path)
    arch = {"stage1": {"recipe": "02_stage1"}}
    spec = make_search_spec("stage1", {"stage1": [1]}, arch, load_recipes(run, "pairs", arch), str(data), "pairs",
                            run, run / "04", n_trials=2, max_epochs=1)
    res = run_search(spec, 2, run / "04", "stage1", workers=1, verbose=False)
    folder = run / "04" / "pairs" / "search"
    assert (folder / "study.db").is_file() and (folder / "trials.csv").is_file() and res.n_trials == 2
    assert json.loads((folder / "study.json").read_text())["best_trial"] == res.best_trial
    assert len(list((folder / "trials").glob("trial_*/events.out.tfevents.*"))) == 2
    imp = make_importance_table(res)
    assert imp.empty                                  # fewer than three completed trials: no importance


def test_tuning_gain_is_paired_per_seed_then_combined_across_seeds(tmp_path):
    m = _members_on_disk(tmp_path, {"s1": [0.80, 0.82, 0.81], "s1_tuned": [0.86, 0.87, 0.88]})
    hand, tuned = m[m["arch"] == "s1"], m[m["arch"] == "s1_tuned"]
    g = evaluate_tuning_gain(m, tuned, "s1", ROWS, n_boot=300)
    per = g["per_seed"]
    assert per["seed"].tolist() == [0, 1, 2] and per["diff"].tolist() == pytest.approx([0.06, 0.05, 0.07], abs=1e-9)
    assert g["diff"] == pytest.approx(0.06, abs=1e-9) and g["ci_low"] < 0.06 < g["ci_high"]
    assert g["se_seed"] == pytest.approx(np.std([0.06, 0.05, 0.07], ddof=1) / np.sqrt(3), rel=1e-6)
    # t with Welch-Satterthwaite df: the seed term has 2 df, the test-split term (nearly) infinitely many
    se = np.hypot(g["se_seed"], g["se_test"])
    df = se ** 4 / (g["se_seed"] ** 4 / 2)
    assert g["ci_high"] - g["ci_low"] == pytest.approx(2 * st.t.ppf(0.975, df) * se, rel=1e-4)
    assert g["handset_sd"] == pytest.approx(0.01) and g["verdict"].startswith("tuned better")
    text = describe_tuning(g, "s1")
    assert "+6.0 percentage points (95% interval" in text and g["verdict"] in text     # the number, its unit, verdict
    assert "6.0× the hand-set recipe's seed sd" in text                                # gain / seed sd = 0.06 / 0.01
    view = make_tuning_view(g)
    assert view.index[-1] == "across seeds" and view.loc["across seeds", "diff"] == pytest.approx(0.06, abs=1e-9)
    # no paired seed: nothing to test; one seed: no seed variance, so no p across seeds
    assert evaluate_tuning_gain(m, tuned.assign(seed=tuned["seed"] + 10), "s1", ROWS)["n_seeds"] == 0
    one = evaluate_tuning_gain(m, tuned[tuned["seed"] == 0], "s1", ROWS)
    assert one["n_seeds"] == 1 and np.isnan(one["p_value"]) and one["verdict"].startswith("not testable")
    head = make_headline(hand, make_arch_summary(hand), search=_study_result({"pruner": "median", "kwargs": {
        "width_mult": 0.125}, "train": {"lr": 1e-3, "weight_decay": 5e-4}, "seed": 42}), tuning=g)
    assert head["tuned_vs_handset_diff"] == pytest.approx(0.06, abs=1e-9) and head["search_n_trials"] == 4
    assert head["search_n_pruned"] == 1 and head["search_best_val_acc"] == 0.8
    shown = make_metrics_view(pd.DataFrame({"value": [1e-30]}, index=["tuned_vs_handset_p"]))
    assert shown.loc["tuned_vs_handset_p", "value"] == "p < 1e-16"
    s = make_arch_summary(hand)
    ans = describe_answer({"tiny": (s, make_comparison_table(hand, ROWS), g, _study_result({}))}, "s1")
    assert "Tuning s1 (4 trials)" in ans and f"{100 * g['diff']:+.1f} points" in ans and "tuned better" in ans
    assert len(make_answer_headline(s, make_comparison_table(hand, ROWS), g, "s1")) <= 3
    # The study's best is the enqueued hand-set trial: the re-run repeats it, and the text says so.
    from dataclasses import replace

    handset_best = replace(_study_result({}), best_trial=0)
    assert best_is_handset(handset_best) and not best_is_handset(_study_result({}))
    assert "hand-set recipe itself (trial 0)" in describe_tuning(g, "s1", handset_best)
    ans = describe_answer({"tiny": (s, make_comparison_table(hand, ROWS), g, handset_best)}, "s1")
    assert "Tuning s1 bought nothing" in ans and "changed test accuracy" not in ans


def test_search_figure_and_description():
    import matplotlib

    matplotlib.use("Agg")
    spec = {"pruner": "median", "kwargs": {"width_mult": 0.125}, "train": {"lr": 1e-3, "weight_decay": 5e-4}, "seed": 1}
    res = _study_result(spec)
    fig = plot_search(res, pd.DataFrame({"parameter": ["lr", "width", "weight_decay"], "importance": [0.6, 0.3, 0.1]}),
                      reference=0.72, label="tiny")
    assert len(fig.axes) == 4 and "tiny" in fig._suptitle.get_text()
    assert "Optimisation history" in fig.axes[0].get_title() and "importance" in fig.axes[1].get_title().lower()
    fig = plot_search(res, pd.DataFrame(columns=["parameter", "importance"]))
    assert "no importance" in fig.axes[1].texts[0].get_text()
    members = pd.DataFrame({"arch": ["stage1"], "seed": [1], "status": ["ok"], "val_acc": [0.72]})
    text = describe_search(res, members, "stage1")
    assert "4 finished trials (3 completed, 1 pruned by the median rule" in text and "flatters" in text
    assert "trial 0, enqueued: validation accuracy 70.00%" in text and "width ×2" in text
    res.trials["handset"] = False
    assert "validation accuracy 72.00% with the search's seed" in describe_search(res, members, "stage1")
