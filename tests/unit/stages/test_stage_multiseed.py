"""helpers.multiseed: the worker pool (crash isolation), the grid, the summaries, one tiny member run."""
import json

import numpy as np
import pandas as pd
import pytest

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_savez
from helpers.data.pairs import load_pair_folder
from helpers.data.predictions import load_base_predictions
from helpers.evaluation.stacking import check_no_leakage, make_split_keys
from helpers.stages.multiseed import (describe_failures, describe_spread, make_arch_summary, make_grid,
                                      make_headline, plot_member_curves, plot_seed_strip, train_member,
                                      train_members)


# ------------------------------------------------------------------------------- summaries
def _members() -> pd.DataFrame:
    return pd.DataFrame({
        "member": ["r_s1", "r_s2", "r_s3", "f_s1", "x_s1"], "arch": ["r", "r", "r", "f", "x"],
        "seed": [1, 2, 3, 1, 1], "status": ["ok", "ok", "ok", "ok", "failed"],
        "val_acc": [0.8, 0.82, 0.84, 0.9, np.nan], "test_acc": [0.80, 0.85, 0.90, 0.88, np.nan],
        "test_ci_low": [0.78, 0.83, 0.88, 0.86, np.nan], "test_ci_high": [0.82, 0.87, 0.92, 0.90, np.nan],
        "error": ["", "", "", "", "boom"]})

# ---------------------------------------------------------------------- one tiny real run
def _tiny_pairs(folder, rng):

    for fname, n in (("train.npz", 96), ("val.npz", 40), ("test_public.npz", 40)):
        xa = rng.random((n, 1, 8, 8), dtype=np.float32)
        atomic_savez(folder / fname, xa=xa, xb=rng.random((n, 1, 8, 8), dtype=np.float32),
                     y=np.tile([0, 1], n // 2))


# ------------------------------------------------------------------------------------- grid
def test_make_grid_expands_labels_and_checks_input(tmp_path):
    arch = {"resnet": {"model": "siamese_resnet", "fusion": "concat", "width_mult": 0.125}}
    specs = make_grid({"resnet": [42, 2023], "siamese_fpn": [7]}, "digit_pairs", tmp_path, tmp_path / "out",
                         arch, train={"epochs": 1})
    assert [s.name for s in specs] == ["resnet_s42", "resnet_s2023", "siamese_fpn_s7"]
    assert specs[0].model == "siamese_resnet" and specs[0].model_kwargs == {"fusion": "concat", "width_mult": 0.125}
    assert specs[2].model == "siamese_fpn" and specs[2].predictions_path.endswith("out/digit_pairs/predictions/siamese_fpn_s7.npz")
    assert specs[0].out_dir.endswith("out/digit_pairs/members/resnet_s42")
    with pytest.raises(WorkbookError, match="not in the registry"):
        make_grid({"no_such_model": [1]}, "d", tmp_path, tmp_path)
    with pytest.raises(WorkbookError, match="seeds"):
        make_grid({"siamese_resnet": ["a"]}, "d", tmp_path, tmp_path)
    with pytest.raises(WorkbookError, match="twice"):
        make_grid({"siamese_resnet": [1, 1]}, "d", tmp_path, tmp_path)


def test_arch_summary_and_headline():
    m = _members()
    s = make_arch_summary(m).set_index("arch")
    assert s.loc["r", "mean_test_acc"] == pytest.approx(0.85)
    assert s.loc["r", "std_test_acc"] == pytest.approx(0.05)                # ddof = 1
    assert (s.loc["r", "min_test_acc"], s.loc["r", "max_test_acc"]) == (0.80, 0.90)
    assert np.isnan(s.loc["f", "std_test_acc"])                             # one seed: no std
    assert s.loc["x", "n_ok"] == 0 and s.loc["x", "n_failed"] == 1
    h = make_headline(m, make_arch_summary(m))
    assert h["n_members"] == 5 and h["n_failed"] == 1 and h["r"]["mean_test_acc"] == pytest.approx(0.85)
    assert h["best_member"] == "f_s1"                                       # chosen on validation
    assert "WIDER" in describe_spread(make_arch_summary(m))
    assert "x_s1: boom" in describe_failures(m)


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    m = _members()
    assert plot_seed_strip(m) is not None
    hist = {"r_s1": [{"epoch": 1, "train_loss": 0.7, "val_loss": 0.6, "accuracy": 0.6},
                     {"epoch": 2, "train_loss": 0.5, "val_loss": 0.5, "accuracy": 0.7}]}
    assert len(plot_member_curves(hist, m).axes) == 3


def test_members_train_in_workers_write_their_folders_and_survive_a_crash(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "pairs"
    data.mkdir()
    _tiny_pairs(data, rng)
    arch = {"r": {"model": "siamese_resnet", "fusion": "concat", "width_mult": 0.125, "feat_dim": 16}}
    run = tmp_path / "run"
    specs = make_grid({"r": [1, 2]}, str(data), run, run / "04_multi_seed", arch,
                         train={"epochs": 1, "batch_size": 32, "patience": 0})
    specs[1].crash = "exit"
    table = train_members(specs, workers=2, verbose=False)
    assert table["status"].tolist() == ["ok", "failed"]
    ok = run / "04_multi_seed" / "pairs" / "members" / "r_s1"
    for f in ("config.json", "history.json", "metrics.json", "predictions.npz"):
        assert (ok / f).is_file(), f
    metrics = json.loads((ok / "metrics.json").read_text())
    assert metrics["test_ci_low"] <= metrics["test_acc"] <= metrics["test_ci_high"] and metrics["n_test"] == 40
    assert json.loads((ok.parent / "r_s2" / "failed.json").read_text())["exitcode"] == 3
    # the stacking file records what the member trained on, and passes the leakage check

    assert not (run / "04_multi_seed" / "pairs" / "predictions" / "r_s2.npz").exists()
    base = load_base_predictions(run, str(data))
    assert base.trained_on == [["train"]] and base.selected_on == ["train_holdout"]
    assert base.train_keys[0].shape == (96,)
    table = check_no_leakage(base, make_split_keys(load_pair_folder(data)))
    assert table.loc[0, "checked_with"] == "train_keys"


def test_a_member_on_vector_pairs_with_pair_features_runs_inline(tmp_path):
    """Scene-like data: cue vectors [N, F] plus pair features [N, G]; the image label maps to its vector model."""
    import torch


    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    data = tmp_path / "scenes"
    for fname, n in (("train.npz", 64), ("val.npz", 32), ("test_public.npz", 32)):
        atomic_savez(data / fname, xa=rng.random((n, 6), dtype=np.float32), xb=rng.random((n, 6), dtype=np.float32),
                     y=np.tile([0, 1], n // 2), pair=rng.random((n, 3), dtype=np.float32),
                     ida=np.arange(n), idb=np.arange(n) + 1000)
    arch = {"r": {"model": "siamese_resnet", "width_mult": 0.125, "fusion": "concat", "vector_model": "siamese_mlp"}}
    spec = make_grid({"r": [3]}, str(data), tmp_path, tmp_path / "out", arch,
                        train={"epochs": 1, "batch_size": 16, "patience": 0})[0]
    met = train_member(spec)
    assert met["model"] == "siamese_mlp" and met["n_test"] == 32
    card = json.loads((tmp_path / "out" / "scenes" / "members" / "r_s3" / "config.json").read_text())
    assert card["model"]["kwargs"] == {"in_features": 6, "fusion": "concat", "pair_dim": 3}
    with np.load(tmp_path / "out" / "scenes" / "predictions" / "r_s3.npz") as z:
        assert z["train_keys"].shape == (64,)
