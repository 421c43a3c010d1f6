"""Notebook 02's report (stage 1): the tables, figures and words of stage 1 against the baselines, the scene
input kinds and the groups, from the typed results of `helpers.stages.stage1`; metrics.json's content and
the run card's record of the scene kinds."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from helpers.evaluation.groups import SIZE_CLASSES
from helpers.evaluation.plots import (plot_confusion_matrix, plot_fusion_weights, plot_probability_distributions,
                                      plot_training_curves)
from helpers.evaluation.scene_kinds import KindRun, SceneKinds
from helpers.evaluation.stats import format_p, MIN_SEQUENCES
from helpers.stages.stage1 import ALPHA, baseline_label, best_on_val, Stage1Run
from helpers.stages.words import markdown, render, render_answer

# What notebook 02 shows.
__all__ = ["describe_answer", "describe_groups", "describe_kinds", "describe_recall", "describe_summary",
           "make_data_table", "make_display_table", "make_groups_table", "make_kinds_card", "make_kinds_table",
           "make_metrics", "make_recall_table", "make_summary_table", "markdown", "plot_comparison", "plot_fusion",
           "plot_test_errors", "plot_training"]


# M1, stage 1 (6-way fusion + CBAM, 50 epochs, their 28×28 data): claimed val accuracy.
STAGE1_CLAIM_VAL_ACC = 0.8528


CLASSIFY_COMPARE = ("svm_compare", "cnn_compare")


KIND_LABELS = {"geometry": "geometry: person cues + pair geometry (MLP)",
               "appearance": "appearance: the two people's crops (siamese CNN)",
               "both": "both: crops + pair geometry"}


# SPDP-Net (ECCV 2024) on real JRDB: group detection at IoU 0.5, and its ablation's single cues. On
# generated scenes these are context, never a target: the data differ.
SPDP_NET = {"group_iou50": 56.4, "distance_over_time_only": 55.8, "appearance_only": 37.6}


def make_data_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """Pairs and positive rate per dataset and split, with where the data comes from."""
    rows = [{"dataset": name, "split": split, "pairs": n, "positive rate": r.pos_rates[split],
             "data": "; ".join(r.data_notes) if split == "train" else ""}
            for name, r in runs.items() for split, n in r.sizes.items()]
    return pd.DataFrame(rows).set_index(["dataset", "split"])


def _settings_text(name: str, b: dict) -> str:
    """The settings a baseline ended with (chosen on validation where it has any)."""
    i = b["info"]
    if name == "svm_compare":
        return f"C {i['C']:g}, gamma {i['gamma_x_scale']:g} x scale, temperature {i['temperature']:.2f}; chosen on val"
    if name == "cnn_compare":
        return (f"{i['epochs_run']} of {i['max_epochs']} epochs (early stopping on the val images), "
                f"temperature {i['temperature']:.2f}; chosen on val")
    if name == "logreg":
        return f"C {i['C']:g}; chosen on val"
    if name == "lgbm":
        return f"{i['num_leaves']} leaves, lr {i['learning_rate']:g}, {i['best_iteration']} rounds; chosen on val"
    return str(i.get("mode", ""))


def _method_row(run: Stage1Run, name: str) -> dict:
    b, c = run.baselines[name], run.comparisons[name]
    t = c["test"]
    return {"method": f"baseline: {baseline_label(name)}", "test acc": b["test"]["accuracy"],
            "95% CI low": c["ci"]["ci_low"], "95% CI high": c["ci"]["ci_high"], "stage 1 - method": t["diff"],
            "diff CI low": t["ci_low_adjusted"], "diff CI high": t["ci_high_adjusted"], "p (Holm)": c["p_holm"],
            "p (unadjusted)": t["p_value"], "verdict": c["verdict"], "val acc": b["val"]["accuracy"],
            "best on val": name == run.best_baseline, "settings": _settings_text(name, b),
            "test F1": b["test"]["f1"], "test ROC-AUC": b["test"]["roc_auc"], "fit s": b["fit_s"]}


def make_results_table(run: Stage1Run) -> pd.DataFrame:
    """Stage 1 and every baseline on the test split: accuracy with its unit-aware interval, stage 1
    minus the baseline with its paired interval, the Holm-adjusted p and verdict, val accuracy, settings."""
    t, v = run.eval_test, run.eval_val
    rows = [{"method": "stage 1 model", "test acc": t["accuracy"], "95% CI low": t["acc_ci_low"],
             "95% CI high": t["acc_ci_high"], "val acc": v["accuracy"], "best on val": False,
             "settings": f"best val {run.config.get('monitor', '')}: epoch "
                         f"{run.best.get('monitor', {}).get('epoch', '?')} of {run.epochs_run}",
             "test F1": t["f1"], "test ROC-AUC": t["roc_auc"], "fit s": run.fit_s}]
    rows += [_method_row(run, name) for name in run.baselines]
    return pd.DataFrame(rows).set_index("method")


def make_summary_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """All datasets and methods in one table (the full one: the notebook writes it as CSV). The
    reference figure of the method notes is in `describe_summary`, not a row: it was measured on other data."""
    frames = []
    for name, run in runs.items():
        t = make_results_table(run).reset_index()
        t.insert(0, "dataset", name + (" (generated)" if run.generated else ""))
        frames.append(t)
    return pd.concat(frames, ignore_index=True).set_index(["dataset", "method"])


def make_display_table(table: pd.DataFrame) -> pd.DataFrame:
    """What answers the question, from `make_summary_table`: test accuracy with its interval, stage 1
    minus each baseline with its paired interval and the verdict (Holm-adjusted), the settings chosen on val."""
    def span(lo, hi, fmt):
        return [f"{a:{fmt}} to {b:{fmt}}" if pd.notna(a) else "" for a, b in zip(lo, hi)]

    out = pd.DataFrame(index=table.index)
    out["test acc"] = table["test acc"].map(lambda v: f"{v:.4f}")
    out["95% CI"] = span(table["95% CI low"], table["95% CI high"], ".4f")
    diff_ci = span(table["diff CI low"], table["diff CI high"], "+.4f")
    out["stage 1 - method"] = [f"{d:+.4f} ({s})" if pd.notna(d) else ""
                               for d, s in zip(table["stage 1 - method"], diff_ci)]
    # the verdict without the method (the column header says it): "stage 1 worse (p = 0.01, alpha 0.05)"
    out["verdict (paired test, Holm)"] = [v.split("; ")[0] + ")" if v else "" for v in table["verdict"].fillna("")]
    out["best on val"] = table["best on val"].map(lambda b: "yes" if b else "")
    out["settings"] = table["settings"]
    return out


def _classify_compare_choice(run: Stage1Run) -> str:
    """The better of the SVM and CNN classify-then-compare baselines on validation ('' without classes)."""
    return best_on_val(run.baselines, run.val_y, run.eval_test["threshold"], CLASSIFY_COMPARE)


def _recall_metrics(run: Stage1Run) -> dict[str, Any]:
    if not run.recall:
        return {}
    r = run.recall["stage 1 model"]
    return {"test_recall_sampled": r["sampled"]["mean"], "test_recall_sampled_ci_low": r["sampled"]["ci_low"],
            "test_recall_sampled_ci_high": r["sampled"]["ci_high"],
            "test_recall_all_pairs": r["all"]["mean"] if r["all"] else None,
            "test_recall_all_pairs_ci_low": r["all"]["ci_low"] if r["all"] else None,
            "test_recall_all_pairs_ci_high": r["all"]["ci_high"] if r["all"] else None,
            "test_all_interacting_pairs": r["n_all"], "test_sampled_interacting_pairs": r["n_sampled"]}


def _baseline_metrics(r: Stage1Run) -> dict[str, Any]:
    out: dict[str, Any] = {f"baseline_{k}_acc": v["test"]["accuracy"] for k, v in r.baselines.items()}
    choice = _classify_compare_choice(r)
    if choice:
        out.update(baseline_classify_compare_acc=r.baselines[choice]["test"]["accuracy"],
                   baseline_classify_compare_choice=choice)
    if r.best_baseline:
        c = r.comparisons[r.best_baseline]
        out.update(best_baseline=r.best_baseline, best_baseline_acc=r.baselines[r.best_baseline]["test"]["accuracy"],
                   vs_best_baseline_diff=c["test"]["diff"], vs_best_baseline_diff_ci_low=c["test"]["ci_low_adjusted"],
                   vs_best_baseline_diff_ci_high=c["test"]["ci_high_adjusted"], vs_best_baseline_p=c["p_holm"],
                   vs_best_baseline_p_unadjusted=c["test"]["p_value"])
    return out


def _kind_metrics(kr: KindRun) -> dict[str, Any]:
    t = kr.eval_test
    return {"test_acc": t["accuracy"], "test_acc_ci_low": kr.test_ci["ci_low"], "test_acc_ci_high": kr.test_ci["ci_high"],
            "test_f1": t["f1"], "test_auc": t["roc_auc"], "val_acc": kr.eval_val["accuracy"], "epochs_run": kr.epochs_run,
            "train_samples_per_s": kr.train_samples_per_s, "fit_s": kr.fit_s, "n_params": kr.n_params}


GROUP_KEYS = {"group_f1": "par_f1", "group_precision": "par_precision", "group_recall": "par_recall",
              "group_ap": "act_ap", **{f"group_ap_size_{c}": f"act_ap_size_{c}" for c in SIZE_CLASSES},
              "group_map_size": "act_map_size", "group_threshold": "threshold", "group_n_keyframes": "act_n_keyframes",
              "group_n_people": "act_n_people"}


def _scene_metrics(sk: SceneKinds) -> dict[str, Any]:
    """The kinds (``<kind>.test_acc`` ...), their paired differences, and the groups (PAR F1, JRDB-Act AP
    and AP per true group size); group keys are None where no groups were formed."""
    out: dict[str, Any] = {k: _kind_metrics(kr) for k, kr in sk.kinds.items()}
    for c in sk.comparisons.values():
        key = f"{c['b']}_minus_{c['a']}"
        # Holm-adjusted; a bootstrap p below its floor (1 / resamples) is written as the floor, never 0
        p = float(max(c["p_holm"], c["test"].get("p_floor") or 0.0))
        if c["a"] == "lgbm":
            out[c["b"]].update(minus_lgbm=c["test"]["diff"], minus_lgbm_p=p)
        else:
            out.update({key: c["test"]["diff"], f"{key}_ci_low": c["test"]["ci_low_adjusted"],
                        f"{key}_ci_high": c["test"]["ci_high_adjusted"], f"{key}_p": p})
    out.update(kinds_trained=",".join(sk.kinds), best_kind=sk.best_kind, n_images=sk.n_images,
               scene_kinds_s=float(sum(sk.seconds.values())))
    g = sk.groups
    out.update({k: (g["row"][v] if g is not None else None) for k, v in GROUP_KEYS.items()})
    out.update(group_method=g["best"] if g else None, group_kind=g["kind"] if g else None,
               group_candidate_pairs_test=g["n_candidates"]["candidates_test"] if g else None,
               group_candidate_pairs_val=g["n_candidates"]["candidates_val"] if g else None)
    return out


def make_metrics(runs: Mapping[str, Stage1Run]) -> dict[str, dict]:
    """metrics.json content, one block per dataset (flattened to ``<dataset>.<key>``). Accuracy
    intervals and p-values respect the test split's independent unit; ``vs_best_baseline_p`` is the
    Holm-adjusted p of stage 1 against the baseline with the best validation accuracy. Scene pairs add
    ``<kind>.test_acc`` ... per input kind trained, ``both_minus_geometry`` (and the other kind
    differences, Holm-adjusted ``_p``), ``best_kind``, and ``group_f1`` (PAR), ``group_ap`` (JRDB-Act task 2),
    ``group_ap_size_1`` ... ``group_ap_size_5plus`` (task 3)."""
    out = {}
    for r in runs.values():  # keyed by the dataset name (a folder's name, not its path)
        out[r.name] = {
            "test_acc": r.eval_test["accuracy"], "test_acc_ci_low": r.eval_test["acc_ci_low"],
            "test_acc_ci_high": r.eval_test["acc_ci_high"], "test_acc_ci_method": r.test_ci["method"],
            "test_acc_unit": r.unit.name, "test_acc_n_units": r.test_ci["n_units"], "test_f1": r.eval_test["f1"],
            # the unit every interval and paired test of this dataset resampled (scene data: the sequence)
            "ci_unit": r.unit.name, "ci_conditional_on": r.unit.conditional or None,
            **({"n_test_sequences": r.n_test_sequences} if r.n_test_sequences is not None else {}),
            "test_auc": r.eval_test["roc_auc"], "val_acc": r.eval_val["accuracy"],
            "threshold": r.eval_test["threshold"],
            **_baseline_metrics(r),
            "epochs_run": r.epochs_run, "train_samples_per_s": r.train_samples_per_s, "fit_s": r.fit_s,
            "n_train": r.sizes["train"], "n_test": r.sizes["test"], "n_params": r.n_params,
            "generated": r.generated, "has_classes": r.has_classes, **_recall_metrics(r),
            **(_scene_metrics(r.scene) if r.scene is not None else {}),
        }
    return out


def _comparison_facts(run: Stage1Run, name: str) -> dict[str, Any]:
    c = run.comparisons[name]
    return {"label": baseline_label(name), "test": c["test"], "p": format_p(c["p_holm"], c["test"].get("p_floor"))}


def _summary_facts(run: Stage1Run) -> dict[str, Any]:
    """What the summary says of one dataset: stage 1 with its interval, the best baseline on validation with
    its paired difference, and the verdict on every other baseline."""
    t, b = run.eval_test, run.best_baseline
    ci = run.comparisons[b]["ci"]
    best = {**_comparison_facts(run, b), "settings": _settings_text(b, run.baselines[b]),
            "acc": run.baselines[b]["test"]["accuracy"], "ci_low": ci["ci_low"], "ci_high": ci["ci_high"]}
    return {"name": run.name, "claim": STAGE1_CLAIM_VAL_ACC if run.kind == "image" else None,
            "val_acc": run.eval_val["accuracy"], "acc": t["accuracy"], "ci_low": t["acc_ci_low"],
            "ci_high": t["acc_ci_high"], "ci_method": run.test_ci["method"], "best": best,
            "others": [_comparison_facts(run, n) for n in run.comparisons], "has_classes": run.has_classes}


def describe_run(run: Stage1Run) -> str:
    """Takeaway for one dataset (template block ``summary``): stage 1 with its interval, the best baseline on
    validation and the paired verdict, then which baselines stage 1 beats, ties and loses to."""
    return describe_summary({run.name: run})


def describe_summary(runs: Mapping[str, Stage1Run]) -> str:
    """Stage 1 against the baselines on every dataset, from the paired tests (template block ``summary``)."""
    return render("02_stage1", "summary", runs=[_summary_facts(r) for r in runs.values()], alpha=f"{ALPHA:g}")


def make_recall_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """Scene data: recall of the interacting test pairs for stage 1 and the best baseline on validation,
    over the sampled pairs and over all interacting pairs of the test frames (NaN where meta.json does
    not count them). Empty when no dataset is scene data."""
    rows = []
    for name, run in runs.items():
        for method, r in (run.recall or {}).items():
            rows.append({"dataset": name, "method": method, "sampled interacting pairs": r["n_sampled"],
                         "recall, sampled pairs": r["sampled"]["mean"], "95% CI low": r["sampled"]["ci_low"],
                         "95% CI high": r["sampled"]["ci_high"],
                         "all interacting pairs": r["n_all"] if r["n_all"] is not None else np.nan,
                         "recall, all interacting pairs": r["all"]["mean"] if r["all"] else np.nan,
                         "all: 95% CI low": r["all"]["ci_low"] if r["all"] else np.nan,
                         "all: 95% CI high": r["all"]["ci_high"] if r["all"] else np.nan})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def _recall_facts(run: Stage1Run) -> dict[str, Any]:
    """Stage 1's recall of the interacting test pairs, and on every candidate pair where the groups were formed."""
    g = run.scene.groups if run.scene is not None else None
    cand = None if g is None else {"n": g["n_candidates"]["candidates_test"], "kind": g["kind"],
                                   **{k: g["candidate_pairs_test"][k] for k in ("recall", "f1", "accuracy")}}
    return {"name": run.name, **run.recall["stage 1 model"], "candidates": cand}


def describe_recall(runs: Mapping[str, Stage1Run]) -> str:
    """What the recall figures mean, or why the all-pairs one cannot be computed (template block ``recall``)."""
    return render("02_stage1", "recall", runs=[_recall_facts(r) for r in runs.values() if r.recall])


def _scene_runs(runs: Mapping[str, Stage1Run]) -> dict[str, Stage1Run]:
    return {n: r for n, r in runs.items() if r.scene is not None}


def _span(lo: float, hi: float, fmt: str = ".4f") -> str:
    return f"{lo:{fmt}} to {hi:{fmt}}"


def make_kinds_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """Scene pairs: the input kinds side by side on the test split: accuracy with its interval over person
    pairs, minus geometry and minus the tuned LightGBM baseline with the paired interval and verdict
    (Holm-adjusted over all of them), validation accuracy (the choice), training throughput. Empty
    when no dataset is scene data."""
    rows = []
    for name, run in _scene_runs(runs).items():
        sk = run.scene
        for k, kr in sk.kinds.items():
            row = {"dataset": name, "input kind": KIND_LABELS[k], "test acc": kr.eval_test["accuracy"],
                   "95% CI": _span(kr.test_ci["ci_low"], kr.test_ci["ci_high"]), "val acc": kr.eval_val["accuracy"],
                   "chosen on val": "yes" if k == sk.best_kind else "", "test ROC-AUC": kr.eval_test["roc_auc"]}
            for other, col in (("geometry", "minus geometry"), ("lgbm", "minus LightGBM")):
                c = sk.comparisons.get(f"{k} - {other}")
                row[col] = (f"{c['test']['diff']:+.4f} ({_span(c['test']['ci_low_adjusted'], c['test']['ci_high_adjusted'], '+.4f')}); "
                            f"{c['verdict'].split('; ')[0]})" if c else "")
            row.update({"train samples/s": kr.train_samples_per_s, "epochs": kr.epochs_run, "parameters": kr.n_params,
                        "fit s": kr.fit_s})
            rows.append(row)
    return pd.DataFrame(rows).set_index(["dataset", "input kind"]) if rows else pd.DataFrame()


def _kind_test(sk: SceneKinds, key: str) -> dict[str, Any] | None:
    c = sk.comparisons.get(key)
    return None if c is None else {**c, "p": format_p(c["p_holm"], c["test"].get("p_floor"))}


def _kinds_facts(run: Stage1Run) -> dict[str, Any]:
    """What the kinds section says of one scene dataset: each kind's accuracy, the paired tests, budgets,
    crops and wall time, and why a kind did not run."""
    sk = run.scene
    kinds = [{"name": k, "acc": kr.eval_test["accuracy"], "ci_low": kr.test_ci["ci_low"], "ci_high": kr.test_ci["ci_high"],
              "samples_per_s": kr.train_samples_per_s} for k, kr in sk.kinds.items()]
    lgbm = [_kind_test(sk, f"{k} - lgbm") for k in sk.kinds] if "lgbm" in run.baselines else []
    return {"name": run.name, "kinds": kinds, "unit": run.unit.describe(run.test_ci["n"]), "best_kind": sk.best_kind,
            "both": _kind_test(sk, "both - geometry") if "both" in sk.kinds else None,
            "appearance": _kind_test(sk, "appearance - geometry") if "appearance" in sk.kinds else None,
            "epochs": {k: kr.epochs_run for k, kr in sk.kinds.items()}, "lgbm": lgbm,
            "budgets": {k: kr.budget for k, kr in sk.kinds.items()},
            "lgbm_acc": run.baselines["lgbm"]["test"]["accuracy"] if lgbm else None, "crops": sk.crops,
            "crop_size": sk.crop_size, "seconds": sk.seconds, "notes": sk.notes,
            "not_run": [k for k in sk.requested if k not in sk.kinds]}


def describe_kinds(runs: Mapping[str, Stage1Run]) -> str:
    """What the kinds comparison says (from the paired tests), why a kind did not run, and where the scenes
    came from; the published ablation as context only (template block ``kinds``)."""
    scene = _scene_runs(runs)
    return render("02_stage1", "kinds", runs=[_kinds_facts(r) for r in scene.values()], alpha=f"{ALPHA:g}",
                  min_sequences=MIN_SEQUENCES, spdp=SPDP_NET, generated=all(r.generated for r in scene.values()))


def make_groups_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """Scene pairs: groups from the chosen kind's probabilities over all candidate pairs of the test frames,
    per grouping method (threshold chosen on validation): PAR precision/recall/F1, JRDB-Act AP (task 2) and
    AP per true group size (task 3). Empty without groups."""
    rows = []
    for name, run in _scene_runs(runs).items():
        g = run.scene.groups
        if g is None:
            continue
        for _, r in g["table"].iterrows():
            rows.append({"dataset": name, "grouping": r["method"], "from kind": g["kind"],
                         "chosen on val": "yes" if r["method"] == g["best"] else "",
                         "threshold (val)": r["threshold"], "val F1": r["val_f1"],
                         "PAR precision": r["par_precision"], "PAR recall": r["par_recall"], "PAR F1": r["par_f1"],
                         "AP (task 2)": r["act_ap"],
                         **{f"AP size {c.replace('plus', '+')}": r[f"act_ap_size_{c}"] for c in SIZE_CLASSES},
                         "keyframes": r["act_n_keyframes"], "people": r["act_n_people"]})
    return pd.DataFrame(rows).set_index(["dataset", "grouping"]) if rows else pd.DataFrame()


def describe_groups(runs: Mapping[str, Stage1Run]) -> str:
    """The group figures next to the pair figures, with how they were made and what they can be compared to
    (template block ``groups``)."""
    facts = []
    for name, run in _scene_runs(runs).items():
        g = run.scene.groups
        sizes = [(c.replace("plus", "+"), g["row"][f"act_ap_size_{c}"]) for c in SIZE_CLASSES] if g else []
        why = "; ".join(n for n in run.scene.notes if "group" in n or "scene" in n)
        facts.append({"name": name, "groups": g, "sizes": sizes, "why": why, "generated": run.generated})
    return render("02_stage1", "groups", runs=facts, spdp=SPDP_NET)


def make_kinds_card(run: Stage1Run) -> dict[str, Any]:
    """The run card's record of the scene input kinds (models, crops, the choice, the groups' settings)."""
    sk = run.scene
    if sk is None:
        return {}
    return {"requested": sk.requested, "trained": list(sk.kinds), "best_kind_on_val": sk.best_kind,
            "models": {k: kr.model_spec for k, kr in sk.kinds.items()}, "crop_size": sk.crop_size,
            "crops": sk.crops, "n_images": sk.n_images, "notes": sk.notes, "union_crop": "not used",
            "seconds": sk.seconds,
            "statistics": {"unit": "person pair", "alpha": ALPHA,
                           "multiple_comparisons": f"Holm over {len(sk.comparisons)} comparisons"},
            "groups": None if sk.groups is None else {
                "kind": sk.groups["kind"], "method": sk.groups["best"], "threshold": sk.groups["row"]["threshold"],
                "chosen_on": "val PAR F1", "candidate_pairs": sk.groups["n_candidates"],
                "files": {k: str(v) for k, v in sk.groups["files"].items()}}}


def _answer_facts(run: Stage1Run) -> dict[str, Any]:
    """One dataset's numbers the answer states: stage 1's test accuracy and its difference to the best baseline."""
    t, c = run.eval_test, run.comparisons[run.best_baseline]
    return {"name": run.name, "generated": run.generated, "accuracy": t["accuracy"], "ci_low": t["acc_ci_low"],
            "ci_high": t["acc_ci_high"], "baseline": baseline_label(run.best_baseline), "diff": c["test"]["diff"],
            "diff_low": c["test"]["ci_low_adjusted"], "diff_high": c["test"]["ci_high_adjusted"],
            "comparison": c["test"]}


def _scene_facts(runs: Mapping[str, Stage1Run]) -> dict[str, Any] | None:
    """The first scene dataset's input kinds verdict (appearance added to geometry) and its group F1."""
    for run in runs.values():
        sk = run.scene
        if sk is not None:
            both = sk.comparisons.get("both - geometry") if "both" in sk.kinds else None
            return {"name": run.name, "appearance": None if both is None else both["test"],
                    "group_f1": None if sk.groups is None else sk.groups["row"]["par_f1"]}
    return None


def describe_answer(runs: Mapping[str, Stage1Run]) -> tuple[str, dict[str, Any]]:
    """The notebook's answer (template block ``answer``: a sentence per dataset, one on the scene input kinds
    and groups) and its two or three headline numbers."""
    text = render_answer("02_stage1", runs=[_answer_facts(r) for r in runs.values()], scene=_scene_facts(runs))
    headline: dict[str, Any] = {}
    for i, r in enumerate(list(runs.values())[:2]):
        if i == 0:
            headline[f"{r.name}: stage 1 test acc"] = round(r.eval_test["accuracy"], 4)
            headline[f"{r.name}: best baseline ({r.best_baseline}) test acc"] = \
                round(r.baselines[r.best_baseline]["test"]["accuracy"], 4)
        else:
            diff = r.comparisons[r.best_baseline]["test"]["diff"]
            headline[f"{r.name}: stage 1 - {r.best_baseline}"] = round(diff, 4)
    return text, headline


def plot_comparison(runs: Mapping[str, Stage1Run]):
    """Stage 1 minus each baseline in test accuracy with its paired 95% interval, one panel per dataset;
    right of zero is stage 1 better, the star marks the baseline chosen on validation."""
    import matplotlib.pyplot as plt  # deferred: plotting only

    rows = max(len(r.comparisons) for r in runs.values())
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 0.5 + 0.45 * rows), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        names = list(run.comparisons)
        d = np.array([run.comparisons[n]["test"]["diff"] for n in names])
        lo = np.array([run.comparisons[n]["test"]["ci_low"] for n in names])
        hi = np.array([run.comparisons[n]["test"]["ci_high"] for n in names])
        ypos = np.arange(len(names))
        ax.errorbar(d, ypos, xerr=[d - lo, hi - d], fmt="o", color="C0", capsize=3)
        best = [i for i, n in enumerate(names) if n == run.best_baseline]
        ax.plot(d[best], ypos[best], "*", color="C3", ms=12)
        ax.axvline(0, color="k", lw=1, ls=":")
        ax.set_yticks(ypos, [baseline_label(n) + (" (* best on val)" if n == run.best_baseline else "") for n in names],
                      fontsize=8)
        ax.invert_yaxis()                                   # the table's order, top to bottom
        ax.set_xlabel("stage 1 minus baseline, test accuracy")
        ax.set_title(f"{name}: test split, paired 95% CI over {run.unit.name}s", fontsize=9)
    fig.tight_layout()
    return fig


def plot_training(run: Stage1Run):
    """Loss, val accuracy, learning rate and gradient norm per epoch of one dataset's stage-1 run."""
    fig = plot_training_curves(run.history, ("loss", "accuracy", "lr", "grad_norm"))
    fig.suptitle(f"{run.name}: stage 1 training (val = validation split)", fontsize=10, y=1.02)
    return fig


def plot_test_errors(run: Stage1Run) -> dict[str, Any]:
    """The test confusion matrix and the predicted probabilities by true class, as two figures."""
    labels = ["different (0)", "same (1)"] if run.name == "digit_pairs" else ["0", "1"]
    thr = run.eval_test["threshold"]
    return {"confusion_matrix.png": plot_confusion_matrix(run.eval_test["confusion"], labels,
                                                          title=f"{run.name}: test, threshold {thr:.2f}"),
            "probability_distributions.png": plot_probability_distributions(
                run.test_y, run.test_prob, thr, title=f"{run.name}: test P(y = 1) by true class")}


def plot_fusion(runs: Mapping[str, Stage1Run]):
    """The learned fusion-branch weights of every stage-1 model (learned on the train split)."""
    fig = plot_fusion_weights({name: r.fusion_weights for name, r in runs.items() if r.fusion_weights})
    fig.axes[0].set_title("learned fusion weights (sum to 1), fitted on the train split", fontsize=10)
    return fig
