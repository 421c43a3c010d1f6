"""The report words: each notebook's answer template rendered from small facts states the numbers and the
verdicts it is given, within four sentences and 90 words; the sandbox and StrictUndefined hold."""
from __future__ import annotations

import math

import jinja2
import pytest

from helpers.stages import words
from helpers.stages.words import check_answer, render, sentences

CMP = {"diff": 0.031, "ci_low": 0.010, "ci_high": 0.052, "verdict_word": "better"}


def _limits(text: str) -> str:
    assert len(sentences(text)) <= words.MAX_SENTENCES and len(text.split()) <= words.MAX_WORDS, text
    assert "None" not in text and "nan" not in text.lower().split() and "_" not in text, text
    return check_answer(text)


def test_00_states_counts_rate_and_the_leakage_verdict():
    facts = dict(n_train=3000, n_val=500, n_test=1000, source="UCI digits", rate_low=0.48, rate_high=0.52,
                 shared=4, duplicates=0, writers=None, scenes_generated=False, stats_within=5, stats_n=7,
                 tolerance=0.25)
    text = _limits(render("00_data_audit", **facts))
    assert "3,000 pairs" in text and "1,000 pairs" in text and "52.0%" in text and "48.0" in text
    assert "4 source images are in two splits" in text and "0 identical pairs" in text and "5 of their 7" in text
    assert "No source image" in render("00_data_audit", **{**facts, "shared": 0})
    assert "could not be checked" in render("00_data_audit", **{**facts, "shared": None})


def test_01_states_recall_and_the_balance():
    facts = dict(multiplier="3", candidates_kept=0.214, positive_recall=0.987, per_negative_before=0.1,
                 per_negative_after=0.5, balance_ratio=1.0, trimmed_positives=0, trimmed_negatives=120,
                 end_to_end=0.654, with_inferred=0.71, unsplittable="", min_groups=10, fewest_groups=3)
    text = _limits(render("01_pair_sampling", **facts))
    assert "21.4%" in text and "98.7%" in text and "65.4%" in text and "120 negatives" in text
    assert "fewest groups of a type in a split is 3, under the 10" in text


def test_02_states_accuracy_difference_and_verdict_per_dataset():
    run = dict(name="digit_pairs", generated=False, accuracy=0.912, ci_low=0.89, ci_high=0.931, baseline="an SVM",
               diff=0.031, diff_low=0.01, diff_high=0.052, comparison=CMP)
    scene = dict(name="scene_pairs", appearance={"diff": -0.004, "verdict_word": "not distinguishable"},
                 group_f1=0.412)
    text = _limits(render("02_stage1", runs=[run, {**run, "name": "scene_pairs", "generated": True}], scene=scene))
    assert "91.2% (95% interval 89.0% to 93.1%)" in text and "+3.1 percentage points" in text
    assert "stage 1 better" in text and "the digit pairs" in text and "not distinguishable" in text
    assert "F1 0.412" in text and "-0.4 points" in text


def test_03_states_stage2_against_matched_stage1_types_and_ablation():
    run = dict(name="digit_pairs", generated=False, n_seeds=3, accuracy=0.9,
               matched={**CMP, "verdict_word": "worse", "diff": -0.02, "ci_low": -0.03, "ci_high": -0.01})
    types = dict(name="scene_pairs", f1=0.41, f1_low=0.3, f1_high=0.52, lgbm=0.38,
                 lgbm_test={"verdict_word": "not distinguishable"}, fewest_groups=2, min_groups=10)
    text = _limits(render("03_stage2", runs=[run, run], types=types, ablation={"n": 8, "helped": 1, "hurt": 2}))
    assert "90.0%" in text and "-2.0 percentage points" in text and "stage 2 worse" in text and "3 seeds" in text
    assert "0.410 (95% interval 0.300 to 0.520)" in text and "LightGBM 0.380" in text and "1 of 8 additions helped and 2 hurt" in text


def test_04_states_the_architecture_verdict_seed_sd_and_tuning():
    d = dict(name="digit_pairs", sd=0.008, sd_arch="stage2", n_seeds=5, se=0.005,
             comparison={**CMP, "arch": "stage2", "baseline": "stage1", "adjusted": False, "verdict": "better (p = 0.01)"})
    tuning = dict(arch="stage1", trials=20, handset_best=False, diff=0.004, ci_low=-0.002, ci_high=0.01,
                  verdict="not distinguishable (p = 0.3)")
    text = _limits(render("04_multi_seed", datasets=[d, {**d, "name": "scene_pairs"}], tuning=tuning))
    assert "stage 2 minus stage 1 is +3.1 percentage points" in text and "stage 2 better" in text
    assert "0.8 percentage points" in text and "1.6×" in text and "+0.4 points" in text
    assert "not distinguishable" in text
    assert "could not be measured" in render("04_multi_seed", datasets=[{"name": "x", "sd": None}], tuning=None)


def test_05_states_accuracy_goal_verdict_and_the_student():
    d = dict(name="digit_pairs", n_models=12, accuracy=0.93, ci_low=0.91, ci_high=0.95, ratio=0.85,
             ratio_low=0.7, ratio_high=1.02, goal="undecided")
    student = dict(name="digit_pairs", accuracy=0.92, diff=-0.01, ci_low=-0.02, ci_high=0.0,
                   verdict="not distinguishable", speedup=11.5)
    text = _limits(render("05_stacking", datasets=[d, d], goal_ratio="0.8", student=student))
    assert "93.0% test accuracy" in text and "0.85 (95% interval 0.70 to 1.02)" in text
    assert "is undecided" in text and "92.0%" in text and "-1.0 points" in text and "11.5 times" in text


def test_06_states_the_best_backbone_its_test_score_and_the_missing_one_in_words():
    best = dict(model="resnet18", seeds=3, val_mean=0.68, test_seeds=2, test_mean=0.61, test_low=0.5, test_high=0.72,
                runner_up="vit_tiny", verdict="not distinguishable", diff=0.02, diff_low=-0.05, diff_high=0.09)
    text = _limits(render("06_backbones", best=best, front=["resnet18"], at_chance=["vit_tiny (digit)"],
                          handicapped=[]).replace("vit_tiny", "vit-tiny"))
    assert "0.680" in text and "0.610 (95% interval 0.500 to 0.720)" in text and "+0.020 in combined score" in text
    assert "not distinguishable from" in text and "At chance on a task: vit-tiny (digit)." in text
    no_test = render("06_backbones", best={**best, "test_mean": None}, front=[], at_chance=[], handicapped=[])
    assert "was not measured (no re-trained seed" in no_test and "None" not in no_test


def test_07_states_the_finding_the_measured_change_and_the_goal():
    held = dict(files=30, repositories=12, precision=0.9, precision_low=0.8, precision_high=0.95, recall=0.82,
                recall_low=0.7, recall_high=0.9)
    text = _limits(render("07_plateau_diagnosis", finding="schedule_ended", reason="", heldout=held,
                          change={"name": "longer_schedule", "delta": 0.021, "before": 0.8, "after": 0.821},
                          goal=(0.85, 0.8), goal_met=True,
                          planted={"faults": 8, "named": 5, "random_named": 0, "helped": 2, "random_helped": 0}))
    assert "schedule ended" in text and "+0.021" in text and "0.90 (95% interval 0.80 to 0.95)" in text
    assert "is met" in text and "in 5 (a random guess: 0)" in text


def test_a_missing_fact_fails_loudly_and_templates_are_sandboxed():
    with pytest.raises(jinja2.UndefinedError):
        render("02_stage1", runs=[{"name": "x"}], scene=None)
    with pytest.raises(KeyError, match="no block"):
        render("02_stage1", block="nothing", runs=[], scene=None)
    assert isinstance(words.environment(), jinja2.sandbox.SandboxedEnvironment)
    env = words.environment()
    with pytest.raises(jinja2.exceptions.SecurityError):
        env.from_string("{{ x.__class__.__mro__ }}").render(x=1)
    # a missing number is said in words, never printed as nan
    assert env.from_string("{{ x|pct }}").render(x=math.nan) == "not measured"


def test_the_limits_are_checked():
    long = " ".join(["word"] * 91) + "."
    with pytest.raises(ValueError, match="91 words"):
        check_answer(long)
    assert len(sentences("One is 91.2% and 0.8× here. Two. Three? Four!")) == 4
    with pytest.warns(UserWarning, match="sentences"):
        words.render_answer("06_backbones", best=None, front=["a b " * 50], at_chance=[], handicapped=[])


def test_03_facts_come_from_the_stage2_results():
    """stage2.describe_answer reads a run's seeds, matched comparison, type scores and ablation tests."""
    from types import SimpleNamespace

    import numpy as np

    from helpers.reports.stage2 import describe_answer

    seeds = SimpleNamespace(seeds=[1, 2, 3], accuracies=lambda y, thr: np.array([0.8, 0.9, 1.0]))
    matched = {**CMP, "diff": 0.05, "ci_low": 0.02, "ci_high": 0.08, "p_holm": 0.01}
    types = {"eval": {"scores": {"type head": {"point": {"macro_f1": 0.5}, "low": {"macro_f1": 0.4},
                                               "high": {"macro_f1": 0.6}}}, "tests": {}},
             "data": SimpleNamespace(min_groups=12)}
    run = SimpleNamespace(name="digit_pairs", generated=False, stage2=seeds, test_y=None, threshold=0.5,
                          comparisons={"matched_stage1": matched}, types=types,
                          ablation_tests={"no_x": {"p_holm": 0.01, "diff": -0.02}, "no_y": {"p_holm": 0.5, "diff": 0.01}})
    text, headline = describe_answer({"digit_pairs": run})
    _limits(text)
    assert "90.0% test accuracy over 3 seeds" in text and "+5.0 percentage points" in text and "stage 2 better" in text
    assert "0.500 (95% interval 0.400 to 0.600)" in text and "1 of 2 additions helped and 0 hurt" in text
    assert headline == {"digit_pairs: stage 2 minus matched stage 1": 0.05, "digit_pairs: type macro-F1": 0.5}


def test_00_and_01_section_words_state_their_numbers():
    import pandas as pd

    from helpers.reports.audit import describe_balance
    from helpers.reports.sampling import describe_at_multiplier, describe_recall

    text = describe_balance(pd.DataFrame({"pairs": [1200, 600, 800], "positive rate": [0.5, 0.42, 0.5]}))
    assert "2,600 pairs" in text and "42.0% to 50.0%" in text and "NOT balanced alike" in text
    at = {"candidate_frac_kept": 0.227, "positive_recall": 0.789, "seam_positives_lost_without_wrap": 12,
          "seam_positives_lost_frac": 0.031}
    text = describe_at_multiplier(at, 3.0)
    assert "At 3×" in text and "22.7%" in text and "77.3% removed" in text and "78.9%" in text and "12" in text
    recall = pd.DataFrame({"interacting pairs": [80, 20, 100], "after distance rule": [70, 15, 85],
                           "after group sampling": [50, 10, 60], "reach training": [40, 8, 48],
                           "end-to-end recall": [0.5, float("nan"), 0.48], "recall incl. inferred": [0.6, 0.5, 0.58]},
                          index=pd.Index(["train", "test", "all"], name="split"))
    text = describe_recall(recall)
    assert "48 of 100 interacting pairs" in text and "48.0%" in text and "train 50.0%" in text
    assert "test not measured (no pairs)" in text and "the distance rule 15.0%" in text and "58.0%" in text


def test_07_section_words_state_the_held_out_scores_and_the_planted_counts():
    import pandas as pd

    from helpers.evaluation.doctor.validation import BASELINES
    from helpers.reports.plateau import describe_planted, describe_validation

    rows = [{"split": sp, "method": m, "files": 40, "repositories": 15, "precision": 0.9, "precision_low": 0.8,
             "precision_high": 0.95, "recall": 0.7, "recall_low": 0.6, "recall_high": 0.8}
            for sp in ("heldout", "dev") for m in ("doctor", *BASELINES)]
    text = describe_validation({"scores": pd.DataFrame(rows)}, {"commit": "0123456789abcdef", "utc": "2026-12-01",
                                                               "unchanged": True})
    assert "Held out (40 logs, 15 repositories; rules frozen at commit 0123456789" in text
    assert "precision 0.90 (95% interval 0.80 to 0.95), recall 0.70 (95% interval 0.60 to 0.80)" in text
    assert "NOT met" in text and "rule files unchanged since" in text and text.count("precision") == 3 + len(BASELINES)   # held out, dev, goal, baselines
    planted = pd.DataFrame()
    planted.attrs.update(faults=8, seeds=5, named=5, random_named=0, helped=2, random_helped=0, seconds=41.6)
    text = describe_planted(planted)
    assert "On 8 planted faults (5 seeds each)" in text and "cause in 5 (goal 7; a random kind: 0)" in text
    assert "in 2 (goal 6; a random remedy: 0)" in text and "(42 s)" in text


def test_05_goal_words_state_the_errors_the_ratio_and_the_verdict():
    import pandas as pd

    from helpers.reports.stacking import describe_goal

    v = {"goal verdict (from the interval)": "missed", "stacking: test error": 0.12, "best single model: test error": 0.1,
         "error ratio stacking / best single": 1.2, "error ratio, 95% interval low": 1.05,
         "error ratio, 95% interval high": 1.4, "interval method": "bootstrap over source images",
         "goal: ratio at most": 0.8, "best single recalibrated on val: test error": 0.11,
         "error ratio stacking / recalibrated best single": 1.09,
         "limit: share of test examples every base model gets wrong": 0.04,
         "limit: mean pairwise error correlation (val)": 0.61}
    text = describe_goal(pd.DataFrame({"value": pd.Series(v, dtype=object)}))
    assert text.startswith("Goal MISSED") and "12.0%" in text and "10.0%" in text and "1.200 (95% interval 1.050 to 1.400" in text
    assert "lies above 0.8" in text and "1.090" in text and "4.0% of test examples" in text and "0.610" in text


def test_06_a_test_score_from_one_seed_says_why_it_has_no_interval():
    best = dict(model="m", seeds=2, val_mean=0.3, test_seeds=1, test_mean=0.304, test_low=math.nan, test_high=math.nan,
                runner_up=None, verdict="", diff=None, diff_low=None, diff_high=None)
    text = _limits(render("06_backbones", best=best, front=[], at_chance=[], handicapped=[]))
    assert "it scores 0.304 (no interval from one seed)." in text and "nan" not in text
