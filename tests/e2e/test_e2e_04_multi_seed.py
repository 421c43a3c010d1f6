"""Notebook 04 in the smoke run: members retrain the models 02/03 report (their recipes), every member's
folder and prediction file, the seed spread with its interval, and the comparison; the Optuna study (its
file, trials from every worker, each trial's history and TensorBoard files) and the tuned re-run against
the hand-set recipe."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from helpers.core.paths import unique_slugs
from tests.e2e.conftest import read_metrics

pytestmark = pytest.mark.e2e
STEM = "04_multi_seed"


def _params(run):
    return json.loads((run / "run.json").read_text())["notebooks"][STEM]["parameters"]


def _member_dirs(run, p):
    ds = p["datasets"][0]
    slugs = dict(zip(p["grid"], unique_slugs(list(p["grid"]))))
    return {arch: [run / STEM / ds / "members" / f"{slugs[arch]}_s{s}" for s in seeds] for arch, seeds in p["grid"].items()}


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


def test_members_and_the_seed_spread(smoke_run):
    m, p = read_metrics(smoke_run, STEM), _params(smoke_run)
    assert m["n_members"] == sum(len(s) for s in p["grid"].values()) and m["n_failed"] == 0
    assert m["workers"] >= 1 and m["threads_per_worker"] >= 1
    all_accs = []
    for arch, folders in _member_dirs(smoke_run, p).items():
        accs = [_metrics(f)["test_acc"] for f in folders]
        all_accs += accs
        assert m[f"{arch}.mean_test_acc"] == pytest.approx(np.mean(accs))
        assert m[f"{arch}.min_test_acc"] == pytest.approx(min(accs)) and m[f"{arch}.max_test_acc"] == pytest.approx(max(accs))
        if len(accs) > 1:
            sd, n = np.std(accs, ddof=1), len(accs)
            assert m[f"{arch}.std_test_acc"] == pytest.approx(sd) and 0 <= sd < 0.15
            lo, hi = sd * math.sqrt((n - 1) / stats.chi2.ppf(0.975, n - 1)), sd * math.sqrt((n - 1) / stats.chi2.ppf(0.025, n - 1))
            assert (m[f"{arch}.sd_ci_low"], m[f"{arch}.sd_ci_high"]) == pytest.approx((lo, hi))
        else:
            assert m[f"{arch}.std_test_acc"] is None and m[f"{arch}.sd_ci_low"] is None   # one seed: no spread
        n_test = _metrics(folders[0])["n_test"]
        assert m[f"{arch}.binomial_se"] == pytest.approx(math.sqrt(m[f"{arch}.mean_test_acc"] * (1 - m[f"{arch}.mean_test_acc"]) / n_test))
        # over source images the SE is at least the binomial one (one image sits in many test pairs)
        assert m[f"{arch}.unit_se"] >= 0.9 * m[f"{arch}.binomial_se"]
    p_all = np.mean(all_accs)
    assert m["binomial_se"] == pytest.approx(math.sqrt(p_all * (1 - p_all) / n_test))


def test_members_retrain_the_models_02_and_03_report(smoke_run):
    """Same model spec and training recipe as the reporting notebook's scored checkpoint; accuracy close to it."""
    p = _params(smoke_run)
    ds = p["datasets"][0]
    dirs = _member_dirs(smoke_run, p)
    for arch, stem in (("stage1", "02_stage1"), ("stage2", "03_stage2")):
        ck = torch.load(smoke_run / stem / ds / "best_accuracy.pt", map_location="cpu", weights_only=True)
        reported = read_metrics(smoke_run, stem)[f"{ds}.test_acc"]
        for folder in dirs[arch]:
            card = json.loads((folder / "config.json").read_text())
            assert card["model"]["spec"] == ck["model_spec"]
            for k in ("lr", "batch_size", "augment", "epochs", "weight_decay", "monitor"):
                assert card["training"][k] == ck["config"][k], (arch, k)
            assert card["training"]["seed"] == card["member"]["seed"]
        # each seed lands near the single-seed model the notebook reports (a model off its recipe would not)
        accs = [_metrics(f)["test_acc"] for f in dirs[arch]]
        assert abs(np.mean(accs) - reported) < 0.1, (arch, accs, reported)
    stage2 = json.loads((dirs["stage2"][0] / "config.json").read_text())
    assert stage2["task"]["loss"] == "focal" and "02_stage1" in stage2["model"]["pretrained"]
    assert np.mean([_metrics(f)["test_acc"] for f in dirs["stage2"]]) >= 0.65           # chance is 0.5


def test_every_member_writes_its_folder_and_a_leak_free_prediction_file(smoke_run):
    p = _params(smoke_run)
    ds = p["datasets"][0]
    val_y = np.load(smoke_run / "00_data_audit" / "digit_pairs" / "val.npz")["y"]
    for arch, folders in _member_dirs(smoke_run, p).items():
        for folder in folders:
            for f in ("config.json", "history.json", "metrics.json", "predictions.npz"):
                assert (folder / f).is_file(), folder / f
            card = json.loads((folder / "config.json").read_text())
            hist = json.loads((folder / "history.json").read_text())
            assert 1 <= len(hist) <= card["training"]["epochs"] and "val_loss" in hist[0]
            leak = card["dataset"]["data_leakage_prevention"]
            assert leak["verdict"].startswith("passed") and leak["val_pairs_shared"] == leak["test_sources_shared"] == 0
            met = _metrics(folder)
            assert met["test_ci_low"] <= met["test_acc"] <= met["test_ci_high"] and met["unit"] == "source image"
            with np.load(smoke_run / STEM / ds / "predictions" / f"{folder.name}.npz") as z:
                assert z["trained_on"].tolist() == ["train"] and str(z["selected_on"]) == p["early_stop_split"]
                assert np.array_equal(z["val_y"], val_y) and z["val_prob"].shape == val_y.shape
                assert ((z["val_prob"] >= 0) & (z["val_prob"] <= 1)).all()
                assert (((z["test_prob"] >= 0.5) == z["test_y"]).mean()) == pytest.approx(met["test_acc"])


def test_comparison_answer_figures_and_run_card(smoke_run):
    m, p = read_metrics(smoke_run, STEM), _params(smoke_run)
    ds = p["datasets"][0]
    first, *others = list(p["grid"])
    assert m["baseline_arch"] == first
    for arch in others:
        assert m[f"{arch}.diff_vs_baseline"] == pytest.approx(m[f"{arch}.mean_test_acc"] - m[f"{first}.mean_test_acc"])
        assert 0 < m[f"{arch}.p_vs_baseline"] <= 1
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())
    assert 2 <= len(answer["headline"]) <= 3
    for arch in others[:1]:             # the first difference in percentage points, and the largest seed sd
        assert f"{100 * m[f'{arch}.diff_vs_baseline']:+.1f} percentage points" in answer["answer"]
    sd = max(m[f"{a}.std_test_acc"] for a in p["grid"] if m.get(f"{a}.std_test_acc") is not None)
    assert f"seed sd of test accuracy reaches {100 * sd:.1f} percentage points" in answer["answer"]
    for f in (f"seed_strip_{ds}.png", f"curves_{ds}.png", f"arch_summary_{ds}.csv", "config.json", f"{STEM}.html"):
        assert (smoke_run / STEM / f).is_file(), f
    card = json.loads((smoke_run / STEM / "config.json").read_text())
    leak = card["dataset"]["data_leakage_prevention"][ds]
    assert leak["verdict"] == "passed" and leak["members_checked"] == m["n_members"]
    assert not any(leak["shared_totals"].values())


def test_every_member_leaves_tensorboard_files_and_its_weights(smoke_run):
    p = _params(smoke_run)
    for folders in _member_dirs(smoke_run, p).values():
        for folder in folders:
            assert list(folder.glob("events.out.tfevents.*")) and (folder / "model.pt").is_file(), folder


def test_search_study_trials_and_the_tuned_rerun(smoke_run):
    m, p = read_metrics(smoke_run, STEM), _params(smoke_run)
    if not p["search_trials"]:
        pytest.skip("search_trials = 0 in this profile")
    ds, arch = p["datasets"][0], p["search_arch"]
    folder = smoke_run / STEM / ds / "search"
    for f in ("study.db", "trials.csv", "study.json"):
        assert (folder / f).is_file(), f                               # kept: the search can be continued
    trials = pd.read_csv(folder / "trials.csv")
    assert m["search_n_trials"] == p["search_trials"] == (trials["state"].isin(["COMPLETE", "PRUNED"])).sum()
    assert m["search_n_complete"] + m["search_n_pruned"] == m["search_n_trials"]
    # the hand-set trial runs first in a process of its own, then every parallel worker process ran trials
    assert trials[trials["number"] > 0]["worker"].nunique() == m["search_workers"] >= 1
    assert (trials["worker"] == trials.loc[trials["number"] == 0, "worker"].item()).sum() == 1 or m["search_workers"] == 1
    done = trials[trials["state"] == "COMPLETE"]
    assert m["search_best_val_acc"] == pytest.approx(done["value"].max())
    assert trials.loc[trials["number"] == 0, "handset"].item()          # the study starts from the hand-set recipe
    assert m["search_best_val_acc"] >= trials.loc[trials["number"] == 0, "value"].item()
    lo, hi = p["search_lr"]
    assert trials["lr"].between(lo, hi).all() and set(trials["width"]) <= set(p["search_widths"])
    for r in trials.itertuples():                                     # each trial: history and TensorBoard files
        t = folder / "trials" / f"trial_{r.number:04d}"
        assert (t / "history.json").is_file() and list(t.glob("events.out.tfevents.*")), t
        assert len(json.loads((t / "history.json").read_text())) == r.epochs_run
    # the best configuration re-run over the searched architecture's seeds, scored on the same test pairs
    seeds = p["grid"][arch]
    tuned = [smoke_run / STEM / ds / "members" / f"{arch}_tuned_s{s}" for s in seeds]
    hand = [smoke_run / STEM / ds / "members" / f"{arch}_s{s}" for s in seeds]
    assert m["tuned_n_seeds"] == len(seeds)
    for t in tuned:
        card = json.loads((t / "config.json").read_text())
        assert card["training"]["lr"] == pytest.approx(m["search_best_lr"])
        assert card["training"]["weight_decay"] == pytest.approx(m["search_best_weight_decay"])
        assert list(t.glob("events.out.tfevents.*")) and (smoke_run / STEM / ds / "predictions" / f"{t.name}.npz").is_file()
    diffs = [_metrics(t)["test_acc"] - _metrics(h)["test_acc"] for t, h in zip(tuned, hand)]
    assert m["tuned_vs_handset_diff"] == pytest.approx(np.mean(diffs))
    assert m["tuned_vs_handset_ci_low"] <= m["tuned_vs_handset_diff"] <= m["tuned_vs_handset_ci_high"]
    assert m["handset_seed_sd"] == pytest.approx(np.std([_metrics(h)["test_acc"] for h in hand], ddof=1))
    if len(seeds) > 1:
        assert 0 < m["tuned_vs_handset_p"] <= 1
    for f in (f"search_{ds}.png", f"tuned_strip_{ds}.png"):
        assert (smoke_run / STEM / f).is_file(), f
    card = json.loads((smoke_run / STEM / "config.json").read_text())["search"][ds]
    assert card["study_file"] == str((folder / "study.db").resolve()) and "--study" in card["join_from_another_machine"]
    assert card["n_trials"] == m["search_n_trials"] and len(card["tuned_members"]) == len(seeds)
    answer = json.loads((smoke_run / STEM / "answer.json").read_text())["answer"]
    assert "Tuning" in answer and (f"{100 * m['tuned_vs_handset_diff']:+.1f} points" in answer or "bought nothing" in answer)
