"""Stage 2 on tiny fixtures: one balancing mechanism at a time, groups per class, seed-paired comparisons,
per-class bootstrap intervals, the baseline chosen on validation, what the text says ran, the answer."""
from types import SimpleNamespace

import numpy as np
import pytest

from helpers.core.errors import DataError, WorkbookError
from helpers.data.predictions import write_predictions
from helpers.evaluation.stats import adjust, compare_over_seeds, make_comparison, Spread, Unit
from helpers.evaluation import type_head
from helpers.evaluation.type_head import (count_type_groups, evaluate_type_predictions, make_balanced_indices,
                                          make_type_training)
from helpers.reports.stage2 import describe_recipe
from helpers.stages import stage2
from helpers.stages.stage2 import make_seeds, SeedRuns


def test_balanced_indices_for_type_classes():
    y = np.array([0] * 10 + [1] * 3 + [2] * 1)
    over = make_balanced_indices(y, "oversample", seed=0)
    assert np.bincount(y[over]).tolist() == [10, 10, 10]
    assert set(np.flatnonzero(y == 0)) <= set(over)          # no original row dropped
    under = make_balanced_indices(y, "undersample", seed=0)
    assert np.bincount(y[under]).tolist() == [1, 1, 1]
    assert make_balanced_indices(y, "none").tolist() == list(range(14))
    with pytest.raises(WorkbookError):
        make_balanced_indices(y, "smote")


def test_type_training_uses_one_balancing_mechanism_at_a_time():
    y = np.array([0] * 8 + [1] * 2)
    rows, w = make_type_training(y, "oversample", 3, seed=0)
    assert w is None and np.bincount(y[rows]).tolist() == [8, 8]        # oversampled, no weights on top
    rows, w = make_type_training(y, "class_weights", 3)
    assert rows.tolist() == list(range(10)) and w == pytest.approx([10 / 24, 10 / 6, 0.0])  # absent class: 0
    rows, w = make_type_training(y, "none", 3)
    assert rows.tolist() == list(range(10)) and w is None
    with pytest.raises(WorkbookError, match="type_balance = 'both'.*oversample\\|class_weights\\|none"):
        make_type_training(y, "both", 3)


def test_groups_are_connected_people_per_class():
    # seq 0: people 1-2-3 linked (one walking group, 3 pairs), 4-5 (sitting); seq 1: 1-2 walking again
    seq = np.array([0, 0, 0, 0, 1])
    a, b = np.array([1, 2, 1, 4, 1]), np.array([2, 3, 3, 5, 2])
    typ = np.array([0, 0, 0, 3, 0])
    assert count_type_groups(seq, a, b, typ, 5).tolist() == [2, 0, 0, 1, 0]
    assert count_type_groups(seq[:0], a[:0], b[:0], typ[:0], 5).tolist() == [0] * 5


def test_seed_comparison_pairs_rows_per_seed_then_across_seeds():
    rng = np.random.default_rng(0)
    ref = (rng.random((3, 400)) < 0.7).astype(float)
    better = ref.copy()
    better[:, :80] = 1.0                       # the variant fixes the same 80 rows under every seed
    unit = Unit("person pair", (np.repeat(np.arange(100), 4),))
    t = compare_over_seeds(ref, better, unit, n_boot=500)
    assert t.extra["n_seeds"] == 3 and len(t.extra["per_seed"]) == 3
    assert t.estimate == pytest.approx(np.mean(t.extra["per_seed"])) and t.estimate > 0
    assert t.extra["same_sign"] == 3 and t.p < 0.05 and t.ci_low > 0
    # A single model is paired with every seed of the other.
    single = compare_over_seeds(ref[0], better, unit, n_boot=200)
    assert len(single.extra["per_seed"]) == 3
    with pytest.raises(ValueError, match="same test rows"):
        compare_over_seeds(ref[:2, :10], better, unit)


def test_a_difference_that_flips_between_seeds_is_not_called():
    rng = np.random.default_rng(1)
    ref = (rng.random((3, 20000)) < 0.7).astype(float)
    other = ref.copy()
    other[0, :3000] = 1.0                       # seed 0: better (+0.045)
    other[1, :1500] = 0.0                       # seed 1: worse (-0.0525)
    other[2, :3000] = 1.0                       # seed 2: better (+0.045)
    unit = Unit("row")
    t = compare_over_seeds(ref, other, unit, n_boot=500)
    assert t.extra["p_test_only"] < 0.01        # the test rows alone would call it ...
    assert t.p > 0.05 and t.ci_low < 0 < t.ci_high and t.verdict == "not distinguishable"   # ... the seeds do not
    assert t.extra["same_sign"] == 2 and "spread of 3 seeds" in t.method
    one = compare_over_seeds(ref[:1], other[:1], unit, n_boot=200)
    assert one.verdict == "not testable"        # one seed: the seed noise cannot be counted, so no verdict


def test_holm_verdicts_never_print_p_zero():
    tests = adjust({"big": make_comparison(Spread(0.1, se=1e-9), "row", 400, "dyadic"),
                    "small": make_comparison(Spread(-0.01, draws=np.linspace(-0.05, 0.03, 2000)), "row", 400, "boot")})
    assert tests["big"].text().startswith("better (p < 2e-16") and "Holm over 2" in tests["big"].text()
    assert tests["small"].verdict == "not distinguishable" and tests["small"].p_adjusted >= tests["small"].p


def test_per_class_scores_and_paired_macro_f1_difference():
    y = np.repeat(np.arange(3), 20)
    good = y.copy()
    bad = np.where(y == 2, 0, y)               # never predicts class 2
    unit = Unit("person pair", (np.arange(60) // 3,))
    ev = evaluate_type_predictions(y, {"good": good, "bad": bad}, 3, unit, n_boot=300)
    assert ev["good"]["point"]["macro_f1"] == pytest.approx(1.0)
    assert ev["bad"]["point"]["f1"][2] == 0.0 and ev["bad"]["point"]["recall"][0] == 1.0
    assert ev["bad"]["point"]["precision"][0] == pytest.approx(0.5)
    lo, hi = ev["bad"]["low"]["macro_f1"], ev["bad"]["high"]["macro_f1"]
    assert lo <= ev["bad"]["point"]["macro_f1"] <= hi
    d = make_comparison(Spread(ev["good"]["point"]["macro_f1"] - ev["bad"]["point"]["macro_f1"],
                               draws=ev["good"]["boot"]["macro_f1"] - ev["bad"]["boot"]["macro_f1"]), "person pair", 20,
                        "test")
    assert d.estimate > 0 and d.ci_low > 0 and d.p < 0.01 and d.p_floor == pytest.approx(1 / 300)


def test_seeds_and_recipe_text_say_what_ran():
    params = {"seed": 7, "seeds": 3, "layers": [3, 3, 3], "mlp_hidden": [8], "focal_gamma": 2.0, "amp": False,
              "monitor": "accuracy", "patience": 3, "epochs": 20, "type_balance": "oversample",
              "type_patience": 5, "type_epochs": 30}
    assert make_seeds(params) == [7, 8, 9]
    off = describe_recipe(params)
    assert "mixed precision (autocast)" not in off and "amp off: no mixed precision" in off and "7, 8, 9" in off
    assert "mixed precision (autocast)" in describe_recipe({**params, "amp": True})
    with pytest.raises(WorkbookError, match="seeds = 0"):
        make_seeds({**params, "seeds": 0})
    variants = stage2.make_ablation_variants("vector", [3, 3, 3], amp=False)
    assert "float32" in variants[0][1] and "mixed precision," not in variants[0][1]


def _runs(acc_rows: list[list[int]]) -> SeedRuns:
    p = np.asarray(acc_rows, dtype=float)
    return SeedRuns("r", list(range(len(p))), p, p, [5] * len(p), [3] * len(p), [True] * len(p), [1.0] * len(p),
                    [100.0] * len(p), [[]] * len(p), 10)


def test_best_baseline_is_chosen_on_validation_and_checked_against_the_split(tmp_path):
    folder = tmp_path / "02_stage1" / "toy" / "predictions"
    val_y, test_y = np.array([0, 1, 0, 1]), np.array([1, 0, 1])
    write_predictions(folder / "stage1.npz", [0.1, 0.9, 0.1, 0.9], [0.9, 0.1, 0.9], val_y, test_y, threshold=0.5)
    write_predictions(folder / "baseline_a.npz", [0.9, 0.9, 0.1, 0.9], [0.9, 0.1, 0.9], val_y, test_y,
                      threshold=0.5)   # val 3/4
    write_predictions(folder / "baseline_b.npz", [0.1, 0.9, 0.1, 0.9], [0.1, 0.9, 0.1], val_y, test_y,
                      threshold=0.5)   # val 4/4, test 0/3
    splits = SimpleNamespace(name="toy", val=SimpleNamespace(y=val_y), test=SimpleNamespace(y=test_y))
    best = stage2.load_best_baseline(tmp_path, splits, 0.5)
    assert best["name"] == "b" and best["val_acc"] == 1.0 and best["candidates"] == {"a": 0.75, "b": 1.0}
    other = SimpleNamespace(name="toy", val=SimpleNamespace(y=val_y), test=SimpleNamespace(y=np.array([0, 0, 1])))
    with pytest.raises(DataError, match="val_y/test_y differ"):
        stage2.load_best_baseline(tmp_path, other, 0.5)
    assert stage2.load_best_baseline(tmp_path / "elsewhere", splits, 0.5) is None


def test_seed_runs_correctness_and_accuracy():
    r = _runs([[1, 0, 1], [0, 0, 1]])
    y = np.array([1, 0, 0])
    assert r.correct(y, 0.5).tolist() == [[1, 1, 0], [0, 1, 0]]
    assert r.accuracies(y, 0.5) == pytest.approx([2 / 3, 1 / 3])


# ------------------------------------------------------------------ a tiny labelled scene-like dataset
def _tiny_splits(seed: int = 0):
    """Vector pairs whose type is readable from one cue (the first feature), with sequences and tracks."""
    from helpers.data.pairs import PairSet, PairSplits

    rng = np.random.default_rng(seed)
    sets = {}
    for split, n in (("train", 240), ("val", 90), ("test", 90)):
        typ = rng.integers(0, 3, n)
        y = (rng.random(n) < 0.8).astype(np.int64)
        xa = rng.normal(size=(n, 4)).astype(np.float32)
        xa[:, 0] += 4.0 * typ                                   # the cue
        xb = (xa + 0.1 * rng.normal(size=(n, 4))).astype(np.float32)
        xa[:, 1] += 2.0 * y                                     # interacting or not
        seq = rng.integers(0, 4, n)
        extras = {"type": np.where(y == 1, typ, -1), "seq": seq, "track_a": rng.integers(0, 6, n),
                  "track_b": rng.integers(6, 12, n), "pair": rng.normal(size=(n, 2)).astype(np.float32)}
        sets[split] = PairSet(xa, xb, y, extras=extras)
    return PairSplits("tiny", "vector", True, "test fixture", sets["train"], sets["val"], sets["test"],
                      {"type_names": ["a", "b", "c"]})


def _tiny_params(**over):
    p = {"seed": 0, "seeds": 2, "epochs": 3, "batch_size": 32, "lr": 3e-3, "weight_decay": 0.0, "warmup_epochs": 0,
         "patience": 1, "monitor": "accuracy", "max_grad_norm": 1.0, "threshold": 0.5, "focal_alpha": -1.0,
         "focal_gamma": 2.0, "amp": False, "label_smoothing": 0.0, "num_threads": 1, "log_every": 0,
         "layers": [1], "mlp_hidden": [16, 16], "type_balance": "class_weights", "type_epochs": 6,
         "type_patience": 2, "type_lr": 1e-2, "type_weight_decay": 0.0, "type_dropout": 0.1,
         "freeze_backbone": False, "lgbm_estimators": 30}
    p.update(over)
    return p


def _tiny_stage1(splits):
    from helpers.models.registry import create_model_from_spec

    spec = {"name": "siamese_mlp", "kwargs": {"in_features": 4, "hidden": [16], "feat_dim": 8, "pair_dim": 2}}
    model = create_model_from_spec(spec)
    return model, spec


def test_binary_runs_differ_by_seed_and_repeat_for_the_same_seed():
    splits = _tiny_splits()
    model, spec = _tiny_stage1(splits)
    params = _tiny_params()
    fits = [stage2._fit_binary(stage2.make_stage2_model_spec(spec, params), model.state_dict(), splits, params,
                               "focal", seed=s, epochs=2, amp=False, device="cpu") for s in (0, 1, 0)]
    assert not np.allclose(fits[0]["test_prob"], fits[1]["test_prob"])
    assert np.allclose(fits[0]["test_prob"], fits[2]["test_prob"])


def test_matched_stage1_trains_exactly_the_epochs_stage2_trained(tmp_path):
    splits = _tiny_splits()
    model, spec = _tiny_stage1(splits)
    s2 = _runs([[0.4] * 90, [0.6] * 90])
    s2.epochs_run = [2, 1]                                   # seed 0 trained 2 epochs, seed 1 one
    matched = stage2.train_matched_stage1(spec, model.state_dict(), splits, _tiny_params(patience=1), s2,
                                          tmp_path, "cpu")
    assert matched.seeds == s2.seeds and matched.epochs_run == [2, 1] and not any(matched.stopped_early)
    assert (tmp_path / "matched_stage1" / "history.json").is_file()


def test_type_head_lgbm_and_majority_on_a_tiny_fixture(tmp_path):
    splits = _tiny_splits()
    model, spec = _tiny_stage1(splits)
    model.spec = spec
    types = type_head.run_types(splits, model, _tiny_params(), tmp_path / "type", "cpu")
    td, ev = types["data"], types["eval"]
    assert td.names == ["a", "b", "c"] and td.pairs.sum(1).tolist() == [len(v) for v in td.y.values()]
    assert td.units["test"].name == "person pair"
    assert types["head"]["balance"] == "class_weights" and types["head"]["class_weights"] is not None
    assert set(ev["scores"]) == {"type head", "LightGBM", "majority class"}
    # The cue makes the classes easy: the tuned LightGBM and the head both beat the majority class.
    assert ev["scores"]["LightGBM"]["point"]["macro_f1"] > 0.8
    assert ev["scores"]["type head"]["point"]["macro_f1"] > ev["scores"]["majority class"]["point"]["macro_f1"] + 0.2
    assert ev["tests"]["majority class"]["verdict"].startswith("type head better")
    assert sum(map(sum, types["summary"]["confusion"])) == len(td.y["test"])       # counts, not rates
    assert (tmp_path / "type" / "evaluation_report.txt").is_file()
    assert set(types["lgbm"]["grid"].columns) >= {"num_leaves", "min_child_samples", "val_macro_f1"}
    over = type_head.run_types(splits, model, _tiny_params(type_balance="oversample"), tmp_path / "t2", "cpu")
    assert over["head"]["class_weights"] is None and over["head"]["train_rows"] > len(td.y["train"])


def test_amp_probe_warms_up_then_alternates_and_compares_medians():
    splits = _tiny_splits()
    model, spec = _tiny_stage1(splits)
    params = _tiny_params(amp_probe_pairs=64)
    probe = stage2.measure_amp_speed(splits, stage2.make_stage2_model_spec(spec, params), model.state_dict(), params,
                                     "cpu")
    assert probe["repeats"] == 3 and len(probe["fp32_runs"]) == len(probe["amp_runs"]) == 3
    assert probe["fp32"] == np.median(probe["fp32_runs"]) and probe["amp"] == np.median(probe["amp_runs"])
    assert probe["speedup"] == probe["amp"] / probe["fp32"] and probe["pairs"] == 64
    assert list(stage2.AMP_ORDER).count(True) == list(stage2.AMP_ORDER).count(False) == 3
