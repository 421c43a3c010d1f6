"""Notebook 04 in the smoke run: every member's folder and prediction file, and the seed summary."""
import json

import numpy as np
import pytest

from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e
STEM = "04_multi_seed"


def _params(run):
    return json.loads((run / "run.json").read_text())["notebooks"][STEM]["parameters"]


def test_members_and_headline_metrics(smoke_run):
    m, p = read_metrics(smoke_run, STEM), _params(smoke_run)
    grid = p["grid"]
    assert m["n_members"] == sum(len(s) for s in grid.values()) and m["n_failed"] == 0
    assert m["workers"] >= 1 and m["threads_per_worker"] >= 1
    ds = p["datasets"][0]
    for arch, seeds in grid.items():
        accs = [json.loads((smoke_run / STEM / ds / "members" / f"{arch}_s{s}" / "metrics.json").read_text())["test_acc"]
                for s in seeds]
        # well above chance even after the smoke profile's few epochs (chance is 0.5)
        assert 0.6 <= m[f"{arch}.mean_test_acc"] <= 1.0
        assert m[f"{arch}.mean_test_acc"] == pytest.approx(np.mean(accs))
        assert m[f"{arch}.min_test_acc"] == pytest.approx(min(accs)) and m[f"{arch}.max_test_acc"] == pytest.approx(max(accs))
        if len(seeds) > 1:
            assert m[f"{arch}.std_test_acc"] == pytest.approx(np.std(accs, ddof=1))
            assert 0 <= m[f"{arch}.std_test_acc"] < 0.15
        else:
            assert m[f"{arch}.std_test_acc"] is None            # one seed: no spread to report


def test_every_member_writes_its_folder_and_a_leak_free_prediction_file(smoke_run):
    p = _params(smoke_run)
    ds = p["datasets"][0]
    val_y = np.load(smoke_run / "00_data_audit" / "digit_pairs" / "val.npz")["y"]
    for arch, seeds in p["grid"].items():
        for s in seeds:
            folder = smoke_run / STEM / ds / "members" / f"{arch}_s{s}"
            for f in ("config.json", "history.json", "metrics.json", "predictions.npz"):
                assert (folder / f).is_file(), folder / f
            hist = json.loads((folder / "history.json").read_text())
            assert 1 <= len(hist) <= p["epochs"] and "val_loss" in hist[0]
            card = json.loads((folder / "config.json").read_text())
            assert card["member"]["seed"] == s and card["training"]["seed"] == s
            met = json.loads((folder / "metrics.json").read_text())
            assert met["test_ci_low"] <= met["test_acc"] <= met["test_ci_high"]
            with np.load(smoke_run / STEM / ds / "predictions" / f"{arch}_s{s}.npz") as z:
                assert z["trained_on"].tolist() == ["train"] and str(z["selected_on"]) == "train_holdout"
                assert np.array_equal(z["val_y"], val_y) and z["val_prob"].shape == val_y.shape
                assert ((z["val_prob"] >= 0) & (z["val_prob"] <= 1)).all()
                assert (((z["test_prob"] >= 0.5) == z["test_y"]).mean()) == pytest.approx(met["test_acc"])


def test_report_figures(smoke_run):
    ds = _params(smoke_run)["datasets"][0]
    for f in (f"seed_strip_{ds}.png", f"curves_{ds}.png", "config.json", f"{STEM}.html"):
        assert (smoke_run / STEM / f).is_file(), f
