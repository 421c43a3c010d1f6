"""Notebook 03's report (stage 2): the tables, figures and words of the binary upgrade over seeds, its
references, the interaction types and the ablation, from the typed results of `helpers.stages.stage2`;
metrics.json's content."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.data.scene_pairs import MIN_GROUPS_PER_CLASS as MIN_GROUPS
from helpers.evaluation.metrics import correct_at
from helpers.evaluation.plots import plot_confusion_matrix, plot_probability_distributions, plot_training_curves
from helpers.evaluation.stats import format_p
from helpers.evaluation.type_head import LGBM_GRID, TypeData
from helpers.stages.stage2 import ALPHA, make_seeds, Stage2Run, variant_key
from helpers.stages.words import markdown, render, render_answer

# What notebook 03 shows.
__all__ = ["describe_ablation_all", "describe_answer", "describe_budget", "describe_recipe", "describe_runs",
           "describe_types_all", "make_ablation_tables", "make_comparison_tables", "make_metrics", "make_type_tables",
           "markdown", "plot_ablation_curves", "plot_seed_accuracies", "plot_test_errors", "plot_training",
           "plot_type_confusion"]


# M1 stage 2 (their data): claimed val accuracy of the full stage-2 model and effects.
STAGE2_CLAIMS = {"val_acc": 0.8875, "val_f1": 0.8872, "resnet_fusion_222_val_acc": 0.8792,
                 "resnet_222_val_acc": 0.8780, "focal_gain": 0.008, "amp_speedup": 2.0}


# ------------------------------------------------------------------------------ tables
def _sd(values: np.ndarray) -> float:
    """Sample standard deviation over seeds (0 for a single seed)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _seed_text(values: Sequence[float], fmt: str = "{:+.3f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def _label(run: Stage2Run, key: str) -> str:
    if key == "matched_stage1":
        return "stage 1 trained on, same epochs (matched budget)"
    if key == "stage1_checkpoint":
        return "stage 1 checkpoint of 02 (fewer epochs)"
    return f"strongest baseline of 02: {run.baseline['name']} (best val acc)"


def make_comparison_table(run: Stage2Run) -> pd.DataFrame:
    """Stage 2 over seeds, and each reference on the same test rows with stage 2's paired difference to it."""
    y, thr = run.test_y, run.threshold
    acc = run.stage2.accuracies(y, thr)
    rows = [{"model": f"stage 2 ({len(acc)} seeds)", "test acc": acc.mean(), "sd over seeds": _sd(acc),
             "epochs in 03 per seed": ", ".join(map(str, run.stage2.epochs_run))}]
    refs = {"matched_stage1": run.matched.accuracies(y, thr),
            "stage1_checkpoint": np.array([run.stage1_test["accuracy"]])}
    if run.baseline is not None:
        refs["best_baseline"] = np.array([correct_at(run.baseline["test_prob"], y, thr).mean()])
    for key, a in refs.items():
        t = run.comparisons[key]
        epochs = ", ".join(map(str, run.matched.epochs_run)) if key == "matched_stage1" else "0"
        rows.append({"model": _label(run, key), "test acc": a.mean(), "sd over seeds": _sd(a) if len(a) > 1 else np.nan,
                     "epochs in 03 per seed": epochs,
                     "stage 2 minus this": t["diff"], "CI low (Holm)": t["ci_low"], "CI high (Holm)": t["ci_high"],
                     "per seed": _seed_text(t["per_seed"]), "p (Holm)": format_p(t["p_holm"], t.get("p_floor")),
                     "verdict": t["verdict"].split(" (")[0]})
    return pd.DataFrame(rows).set_index("model")


def make_comparison_tables(runs: Mapping[str, Stage2Run]) -> dict[str, pd.DataFrame]:
    return {name: make_comparison_table(r) for name, r in runs.items()}


def make_ablation_full(run: Stage2Run) -> pd.DataFrame:
    """Every variant with its per-seed numbers (the CSV beside the report)."""
    y, thr = run.test_y, run.threshold
    rows = []
    for a in run.ablation:
        r, acc, t = a["runs"], a["runs"].accuracies(y, thr), run.ablation_tests.get(a["variant"])
        rows.append({"variant": a["variant"], "change": a["change"], "seeds": len(acc), "test acc mean": acc.mean(),
                     "test acc sd": _sd(acc), "test acc per seed": _seed_text(acc, "{:.4f}"),
                     "Δ vs reference": t["diff"] if t else 0.0, "Δ CI low (Holm)": t["ci_low"] if t else np.nan,
                     "Δ CI high (Holm)": t["ci_high"] if t else np.nan,
                     "Δ per seed": _seed_text(t["per_seed"]) if t else "",
                     "seeds agreeing in sign": t["same_sign"] if t else np.nan,
                     "p (test rows only)": t["p_test_only"] if t else np.nan, "p": t["p_value"] if t else np.nan,
                     "p (Holm)": t["p_holm"] if t else np.nan, "verdict": t["verdict"] if t else "reference",
                     "epochs run per seed": ", ".join(map(str, r.epochs_run)),
                     "best epoch per seed": ", ".join(map(str, r.best_epoch)),
                     "stopped early": sum(r.stopped_early), "samples_per_s": float(np.mean(r.samples_per_s)),
                     "fit_s": float(np.sum(r.fit_s)), "n_params": r.n_params})
    return pd.DataFrame(rows).set_index("variant")


def make_ablation_table(run: Stage2Run) -> pd.DataFrame:
    """The trimmed ablation table: mean ± sd over seeds, the paired Δ with its interval, Holm p, verdict;
    the mixed-precision speed probe as a last row."""
    full = make_ablation_full(run)
    df = full[["change", "seeds", "test acc mean", "test acc sd", "Δ vs reference", "Δ CI low (Holm)", "Δ CI high (Holm)",
               "Δ per seed", "p (Holm)", "verdict", "epochs run per seed"]].copy()
    df["p (Holm)"] = [format_p(t["p_holm"], t.get("p_floor")) if (t := run.ablation_tests.get(v)) else ""
                      for v in df.index]
    df["verdict"] = [v.split(" (")[0] for v in df["verdict"]]
    df["speed vs reference"] = full["samples_per_s"] / full["samples_per_s"].iloc[0]
    if run.amp_probe:
        p, amp_on = run.amp_probe, bool(run.config.get("amp"))
        sps = p["fp32"] if amp_on else p["amp"]
        df.loc[f"{'no ' if amp_on else ''}mixed precision (speed probe)"] = pd.Series({
            "change": f"{'float32' if amp_on else 'autocast'} instead of {'autocast' if amp_on else 'float32'}; "
                      f"speed only: 1 epoch on {p['pairs']} pairs each way", "verdict": "speed only",
            "speed vs reference": sps / (p["amp"] if amp_on else p["fp32"])})
    return df


def make_ablation_tables(runs: Mapping[str, Stage2Run]) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per dataset with an ablation: (the trimmed table, the full table for the CSV)."""
    return {name: (make_ablation_table(r), make_ablation_full(r)) for name, r in runs.items() if r.ablation}


def make_type_model_table(run: Stage2Run) -> pd.DataFrame:
    """JRDB-Social-style summary: accuracy and macro-F1 with intervals per model, and the head's paired
    macro-F1 difference to each other model (Holm-adjusted)."""
    t, ev = run.types, run.types["eval"]
    labels = {"type head": f"type head (type_balance {t['head']['balance']})",
              "LightGBM": "LightGBM, balanced weights (" + ", ".join(
                  f"{k} {v}" for k, v in (t["lgbm"]["chosen"] if t["lgbm"] else {}).items()
                  if k in LGBM_GRID) + ", chosen on val)",
              "majority class": f"majority class ('{ev['majority_class']}')"}
    rows = []
    for name, s in ev["scores"].items():
        test = ev["tests"].get(name)
        rows.append({"model": labels[name], "accuracy": s["point"]["accuracy"], "acc 95% CI": _ci(s, "accuracy"),
                     "macro-F1": s["point"]["macro_f1"], "macro-F1 95% CI": _ci(s, "macro_f1"),
                     "head minus this (macro-F1)": test["diff"] if test else np.nan,
                     "CI (Holm)": f"{test['ci_low']:+.3f} to {test['ci_high']:+.3f}" if test else "",
                     "p (Holm)": format_p(test["p_holm"], test["p_floor"]) if test else "",
                     "verdict": test["verdict"].split(" (")[0] if test else ""})
    return pd.DataFrame(rows).set_index("model")


def _ci(s: dict, metric: str, k: int | None = None) -> str:
    lo, hi = (s["low"][metric], s["high"][metric]) if k is None else (s["low"][metric][k], s["high"][metric][k])
    return f"{float(lo):.3f}–{float(hi):.3f}"


def make_type_class_table(run: Stage2Run) -> pd.DataFrame:
    """Per class: groups per split, test pairs, the head's precision / recall / F1 with the F1 interval, and
    LightGBM's F1 (full: every split's pair count too)."""
    t = run.types
    td, scores = t["data"], t["eval"]["scores"]
    h = scores["type head"]
    scored = td.pairs[2] > 0                     # a class with no test pair has no recall or F1 to report

    def shown(v: np.ndarray) -> np.ndarray:
        return np.where(scored, v, np.nan)
    df = pd.DataFrame({"groups train": td.groups[0], "groups val": td.groups[1], "groups test": td.groups[2],
                       "pairs train": td.pairs[0], "pairs val": td.pairs[1], "test pairs": td.pairs[2],
                       "precision": shown(h["point"]["precision"]), "recall": shown(h["point"]["recall"]),
                       "F1": shown(h["point"]["f1"]),
                       "F1 95% CI": [_ci(h, "f1", k) if scored[k] else "no test pairs" for k in range(td.k)]},
                      index=pd.Index(td.names, name="class"))
    if "LightGBM" in scores:
        df["LightGBM F1"] = shown(scores["LightGBM"]["point"]["f1"])
    return df


def make_type_tables(runs: Mapping[str, Stage2Run]) -> dict[str, dict[str, pd.DataFrame]]:
    """Per dataset with type labels: the model table, the per-class table (trimmed and full) and the
    LightGBM grid."""
    out = {}
    for name, r in runs.items():
        if r.types is not None:
            full = make_type_class_table(r)
            out[name] = {"models": make_type_model_table(r), "classes": full.drop(columns=["pairs train", "pairs val"]),
                         "classes_full": full,
                         "lgbm_grid": r.types["lgbm"]["grid"] if r.types["lgbm"] else pd.DataFrame()}
    return out


# ------------------------------------------------------------------------------ metrics
def _p_metric(t: dict) -> float:
    """The Holm-adjusted p for metrics.json, never 0: where the test saw no resample on the other side of
    zero its floor is stored, read as "p below this" (as the reports print it)."""
    return float(max(t["p_holm"], t.get("p_floor") or 0.0))


def _comparison_metrics(run: Stage2Run) -> dict[str, Any]:
    y, thr = run.test_y, run.threshold
    acc, m1 = run.stage2.accuracies(y, thr), run.matched.accuracies(y, thr)
    out = {"n_seeds": len(acc), "test_acc_mean": float(acc.mean()), "test_acc_sd": _sd(acc),
           "matched_stage1_test_acc_mean": float(m1.mean()), "epochs_run_mean": float(np.mean(run.stage2.epochs_run)),
           "runs_stopped_early": int(sum(run.stage2.stopped_early))}
    for key, name in (("matched_stage1", "stage2_vs_matched_stage1"), ("stage1_checkpoint", "stage2_vs_stage1"),
                      ("best_baseline", "stage2_vs_best_baseline")):
        if key in run.comparisons:
            t = run.comparisons[key]
            out.update({f"{name}_diff": t["diff"], f"{name}_ci_low": t["ci_low"], f"{name}_ci_high": t["ci_high"],
                        f"{name}_p": _p_metric(t)})
    if run.baseline is not None:
        out.update(best_baseline=run.baseline["name"],
                   best_baseline_test_acc=float(correct_at(run.baseline["test_prob"], y, thr).mean()))
    return out


def _ablation_metrics(run: Stage2Run) -> dict[str, dict]:
    y, thr = run.test_y, run.threshold
    ref = run.ablation[0]["runs"].accuracies(y, thr).mean()
    out = {}
    for a in run.ablation:
        acc, t = a["runs"].accuracies(y, thr), run.ablation_tests.get(a["variant"])
        m = {"test_acc": float(acc.mean()), "delta": float(acc.mean() - ref), "mean": float(acc.mean()),
             "sd": _sd(acc), "n_seeds": int(len(acc))}
        if t:
            m.update(delta_ci_low=t["ci_low"], delta_ci_high=t["ci_high"], p=_p_metric(t))
        out[variant_key(a["variant"])] = m
    return out


def _recall_metrics(r: dict) -> dict[str, Any]:
    a, s = r["all"], r["sampled"]
    return {"test_recall_sampled": s["mean"], "test_recall_sampled_ci_low": s["ci_low"],
            "test_recall_sampled_ci_high": s["ci_high"], "test_sampled_interacting_pairs": r["n_sampled"],
            "test_all_interacting_pairs": r["n_all"], "test_recall_all_pairs": a["mean"] if a else None,
            "test_recall_all_pairs_ci_low": a["ci_low"] if a else None,
            "test_recall_all_pairs_ci_high": a["ci_high"] if a else None}


def _type_metrics(run: Stage2Run) -> dict[str, Any]:
    t = run.types
    sc, tests = t["eval"]["scores"], t["eval"]["tests"]
    h = sc["type head"]
    m = {"type_macro_f1": float(h["point"]["macro_f1"]), "type_acc": float(h["point"]["accuracy"]),
         "type_macro_f1_ci_low": float(h["low"]["macro_f1"]), "type_macro_f1_ci_high": float(h["high"]["macro_f1"]),
         "type_majority_macro_f1": float(sc["majority class"]["point"]["macro_f1"]),
         "type_majority_acc": float(sc["majority class"]["point"]["accuracy"]), "type_n_test": t["summary"]["n"],
         "type_min_groups_per_class": t["data"].min_groups, "type_balance": t["head"]["balance"],
         "type_epochs_run": t["head"]["epochs_run"], "type_best_epoch": t["head"]["best_epoch"],
         # the unit the type head's intervals and paired tests resampled (02's scene_pairs.ci_unit)
         "type_ci_unit": t["data"].units["test"].name, "type_n_test_units": t["data"].units["test"].n_units}
    if "LightGBM" in sc:
        m.update(type_baseline_lgbm_macro_f1=float(sc["LightGBM"]["point"]["macro_f1"]),
                 type_baseline_lgbm_acc=float(sc["LightGBM"]["point"]["accuracy"]),
                 type_head_minus_lgbm_macro_f1=tests["LightGBM"]["diff"],
                 type_head_vs_lgbm_p=_p_metric(tests["LightGBM"]))
    return m


def make_metrics(runs: Mapping[str, Stage2Run]) -> dict[str, dict]:
    out = {}
    for r in runs.values():  # keyed by the dataset name (a folder's name, not its path)
        m = {"test_acc": r.eval_test["accuracy"], "test_acc_ci_low": r.eval_test["acc_ci_low"],
             "test_acc_ci_high": r.eval_test["acc_ci_high"], "test_f1": r.eval_test["f1"],
             "test_auc": r.eval_test["roc_auc"], "val_acc": r.eval_val["accuracy"],
             "stage1_test_acc": r.stage1_test["accuracy"], "stage1_val_acc": r.stage1_val["accuracy"],
             "epochs_run": r.epochs_run, "train_samples_per_s": r.train_samples_per_s,
             "transferred_tensors": r.transfer["copied"], "amp_speedup": r.amp_speedup, "generated": r.generated,
             **_comparison_metrics(r)}
        if r.amp_probe:
            m.update(amp_samples_per_s=r.amp_probe["amp"], fp32_samples_per_s=r.amp_probe["fp32"])
        if r.recall is not None:
            m.update(_recall_metrics(r.recall))
        if r.types is not None:
            m.update(_type_metrics(r))
        if r.ablation:
            m["ablation"] = _ablation_metrics(r)
        out[r.name] = m
    return out


# ------------------------------------------------------------------------------ takeaways
def describe_recipe(params: Mapping[str, Any]) -> str:
    """What ran, from the parameters (template block ``recipe``): the stage-2 recipe (mixed precision only when
    amp is on), seeds, stopping rule and cap, and the type head's balancing and stopping."""
    keys = ("focal_gamma", "amp", "monitor", "patience", "epochs", "type_balance", "type_patience", "type_epochs")
    return render("03_stage2", "recipe", layers=list(params["layers"]), mlp_hidden=list(params["mlp_hidden"]),
                  seeds=make_seeds(params), **{k: params[k] for k in keys})


def describe_budget(runs: Mapping[str, Stage2Run]) -> str:
    """The training budget that ran: binary runs, their epochs and fitting time, per dataset (block ``budget``)."""
    facts = []
    for r in runs.values():
        recipes = [r.stage2, r.matched] + [a["runs"] for a in r.ablation[1:]]
        facts.append({"name": r.name, "n_runs": sum(len(x.seeds) for x in recipes), "n_recipes": len(recipes),
                      "n_seeds": len(r.stage2.seeds), "epochs": sum(sum(x.epochs_run) for x in recipes),
                      "fit_s": sum(sum(x.fit_s) for x in recipes),
                      "type_epochs": r.types["head"]["epochs_run"] if r.types is not None else None})
    return render("03_stage2", "budget", runs=facts)


def _with_p(t: dict) -> dict:
    """A comparison's record with its Holm-adjusted p as the reports print it."""
    return {**t, "p": format_p(t["p_holm"], t.get("p_floor"))}


def _comparison_facts(run: Stage2Run) -> dict[str, Any]:
    """Stage 2 over seeds, how its runs ended, and its paired differences to the matched stage 1 and 02's baseline."""
    acc = run.stage2.accuracies(run.test_y, run.threshold)
    runs = [run.stage2] + [a["runs"] for a in run.ablation[1:]]
    base = run.comparisons.get("best_baseline")
    return {"name": run.name, "acc_mean": float(acc.mean()), "acc_sd": _sd(acc), "n_seeds": len(acc),
            "n_runs": sum(len(r.seeds) for r in runs), "stopped": sum(sum(r.stopped_early) for r in runs),
            "cap": run.config["epochs"], "matched": _with_p(run.comparisons["matched_stage1"]),
            "baseline": _with_p(base) if base else None, "baseline_name": run.baseline["name"] if base else None,
            "recall": run.recall}


def describe_runs(runs: Mapping[str, Stage2Run]) -> str:
    """Per dataset, stage 2 against its references, and the method notes' own figure (template block ``runs``)."""
    return render("03_stage2", "runs", runs=[_comparison_facts(r) for r in runs.values()],
                  claim=STAGE2_CLAIMS["val_acc"])


def _count_helped(tests: Mapping[str, dict]) -> tuple[int, int]:
    """How many of the stage-2 additions helped (the variant that takes one away is worse, Holm) and hurt."""
    return (sum(t["p_holm"] < ALPHA and t["diff"] < 0 for t in tests.values()),
            sum(t["p_holm"] < ALPHA and t["diff"] > 0 for t in tests.values()))


def _focal_facts(focal: dict | None) -> dict | None:
    """Focal's gain over BCE from the Holm-adjusted paired test: the variant is BCE, so focal's gain is minus its
    difference and the interval flips."""
    if focal is None:
        return None
    gain = -focal["diff"]
    word = ("better" if gain > 0 else "worse") if focal["p_holm"] < ALPHA else "not distinguishable"
    return {"gain": gain, "low": -focal["ci_high"], "high": -focal["ci_low"], "claim": STAGE2_CLAIMS["focal_gain"],
            "word": word, "p": format_p(focal["p_holm"])}


def _ablation_facts(run: Stage2Run) -> dict[str, Any]:
    variants = [{"name": a["variant"], **_with_p(run.ablation_tests[a["variant"]])} for a in run.ablation[1:]]
    helped, hurt = _count_helped(run.ablation_tests)
    amp = None if not run.amp_probe else {"speedup": run.amp_speedup, "repeats": run.amp_probe["repeats"],
                                          "claim": STAGE2_CLAIMS["amp_speedup"]}
    return {"name": run.name, "variants": variants if run.ablation else [], "n_seeds": len(run.stage2.seeds),
            "focal": _focal_facts(run.ablation_tests.get("BCE instead of focal")), "n_tests": len(run.ablation_tests),
            "helped": helped, "hurt": hurt, "amp": amp}


def describe_ablation_all(runs: Mapping[str, Stage2Run]) -> str:
    """Each variant minus the stage-2 reference, per dataset (template block ``ablation``)."""
    return render("03_stage2", "ablation", runs=[_ablation_facts(r) for r in runs.values()], alpha=f"{ALPHA:g}")


def _class_facts(td: TypeData, k: int, f1: float) -> dict[str, Any]:
    return {"cls": td.names[k], "f1": f1, "pairs": int(td.pairs[2][k]), "groups": int(td.groups[2][k])}


def _type_gap_facts(run: Stage2Run) -> dict[str, Any]:
    """Measured evidence of why the head falls short of LightGBM: validation macro-F1 of both (what each was
    chosen on), the class with the largest F1 gap and its groups, and the head's loss gap."""
    t, td = run.types, run.types["data"]
    sc, head = t["eval"]["scores"], t["head"]
    gap = np.where(td.pairs[2] > 0, sc["LightGBM"]["point"]["f1"] - sc["type head"]["point"]["f1"], -np.inf)
    c = int(np.argmax(gap))
    return {**_class_facts(td, c, sc["type head"]["point"]["f1"][c]), "head_f1": sc["type head"]["point"]["f1"][c],
            "lgbm_f1": sc["LightGBM"]["point"]["f1"][c], "head_val": head["val_macro_f1"],
            "lgbm_val": t["lgbm"]["chosen"]["val_macro_f1"], "epoch": head["best_epoch"], "epochs": head["epochs_run"],
            "val_loss": head["kept_val_loss"], "train_loss": head["kept_train_loss"]}


def _types_facts(run: Stage2Run) -> dict[str, Any]:
    if run.types is None:
        return {"note": run.type_note}
    t, td = run.types, run.types["data"]
    sc, tests = t["eval"]["scores"], t["eval"]["tests"]
    h, n = sc["type head"], t["summary"]["n"]
    present = td.pairs[2] > 0
    worst = int(np.flatnonzero(present)[np.argmin(h["point"]["f1"][present])])
    split, cls = np.unravel_index(int(td.groups.argmin()), td.groups.shape)
    lgbm = _with_p(tests["LightGBM"]) if "LightGBM" in sc else None
    return {"note": "", "name": run.name, "f1": h["point"]["macro_f1"], "f1_low": h["low"]["macro_f1"],
            "f1_high": h["high"]["macro_f1"], "accuracy": h["point"]["accuracy"], "n": n,
            "unit": td.units["test"].describe(n), "majority_f1": sc["majority class"]["point"]["macro_f1"],
            "vs_majority": _with_p(tests["majority class"]), "lgbm": lgbm,
            "lgbm_f1": sc["LightGBM"]["point"]["macro_f1"] if lgbm else None,
            "gap": _type_gap_facts(run) if lgbm and lgbm["diff"] < 0 else None,
            "worst": _class_facts(td, worst, h["point"]["f1"][worst]), "fewest": td.min_groups,
            "fewest_cls": td.names[cls], "fewest_split": ("train", "val", "test")[split]}


def describe_types_all(runs: Mapping[str, Stage2Run]) -> str:
    """The type head against LightGBM and the majority class, per dataset (template block ``types``)."""
    return render("03_stage2", "types", runs=[_types_facts(r) for r in runs.values()], min_groups=MIN_GROUPS)


def _answer_facts(r: Stage2Run) -> dict[str, Any]:
    return {"name": r.name, "generated": r.generated, "n_seeds": len(r.stage2.seeds),
            "accuracy": float(r.stage2.accuracies(r.test_y, r.threshold).mean()),
            "matched": r.comparisons["matched_stage1"]}


def _type_facts(r: Stage2Run) -> dict[str, Any]:
    sc, tests = r.types["eval"]["scores"], r.types["eval"]["tests"]
    head = sc["type head"]
    return {"name": r.name, "f1": float(head["point"]["macro_f1"]), "f1_low": float(head["low"]["macro_f1"]),
            "f1_high": float(head["high"]["macro_f1"]),
            "lgbm": float(sc["LightGBM"]["point"]["macro_f1"]) if "LightGBM" in sc else None,
            "lgbm_test": tests.get("LightGBM"), "fewest_groups": int(r.types["data"].min_groups),
            "min_groups": MIN_GROUPS}


def describe_answer(runs: Mapping[str, Stage2Run]) -> tuple[str, dict[str, Any]]:
    """(03's answer, template block ``answer``; the headline numbers) from the results."""
    typed = [r for r in runs.values() if r.types is not None]
    tests = [t for r in runs.values() for t in r.ablation_tests.values()]
    helped, hurt = _count_helped(dict(enumerate(tests)))
    ablation = {"n": len(tests), "helped": helped, "hurt": hurt} if tests else None
    text = render_answer("03_stage2", runs=[_answer_facts(r) for r in runs.values()],
                        types=_type_facts(typed[0]) if typed else None, ablation=ablation)
    headline = {f"{r.name}: stage 2 minus matched stage 1": round(r.comparisons["matched_stage1"]["diff"], 4)
                for r in runs.values()}
    for r in typed[:1]:
        headline[f"{r.name}: type macro-F1"] = round(float(r.types["eval"]["scores"]["type head"]["point"]["macro_f1"]), 4)
    return text, headline


# ------------------------------------------------------------------------------ figures
def plot_training(run: Stage2Run):
    """Loss, val accuracy, learning rate and gradient norm per epoch of one dataset's first-seed stage-2 run."""
    fig = plot_training_curves(run.history, ("loss", "accuracy", "lr", "grad_norm"))
    fig.suptitle(f"{run.name}: stage 2 training, seed {run.stage2.seeds[0]} (val = validation split)",
                 fontsize=10, y=1.02)
    return fig


def plot_test_errors(run: Stage2Run) -> dict[str, Any]:
    """The stage-2 test confusion matrix (counts) and predicted probabilities by true class (first seed)."""
    thr = run.eval_test["threshold"]
    return {"confusion_matrix.png": plot_confusion_matrix(
                run.eval_test["confusion"], ["0", "1"],
                title=f"{run.name}: stage 2 (seed {run.stage2.seeds[0]}), test split, threshold {thr:.2f}"),
            "probability_distributions.png": plot_probability_distributions(
                run.test_y, run.test_prob, thr, title=f"{run.name}: stage 2 P(y = 1), test split")}


def plot_type_confusion(run: Stage2Run):
    """The type head's test confusion matrix, in counts."""
    return plot_confusion_matrix(run.types["summary"]["confusion"], run.types["names"], normalize=False,
                                 title=f"{run.name}: interaction type head, test split (counts)")


def plot_ablation_curves(run: Stage2Run):
    """Validation curves of every ablation variant's first-seed run, overlaid."""
    fig = plot_training_curves({a["variant"]: a["runs"].histories[0] for a in run.ablation},
                               ("loss", "accuracy", "samples_per_s"))
    fig.suptitle(f"{run.name}: ablation variants, seed {run.stage2.seeds[0]} (val = validation split)",
                 fontsize=10, y=1.02)
    return fig


def plot_seed_accuracies(run: Stage2Run, ax=None):
    """Test accuracy of every seed of every recipe (dots), with the stage-1 checkpoint and 02's strongest
    baseline as lines."""
    import matplotlib.pyplot as plt

    y, thr = run.test_y, run.threshold
    recipes = [("stage 2", run.stage2), ("stage 1, matched budget", run.matched)]
    recipes += [(a["variant"], a["runs"]) for a in run.ablation[1:]]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 1.3 + 0.45 * len(recipes)))
    for i, (name, r) in enumerate(recipes):
        acc = r.accuracies(y, thr)
        ax.plot(acc, np.full(len(acc), i), "o", alpha=0.8)
        ax.plot([acc.mean()], [i], "k|", markersize=14)
    ax.axvline(run.stage1_test["accuracy"], color="grey", ls="--", label="stage 1 checkpoint (02)")
    if run.baseline is not None:
        ax.axvline(correct_at(run.baseline["test_prob"], y, thr).mean(), color="tab:red", ls=":",
                   label=f"02's strongest baseline ({run.baseline['name']})")
    ax.set_yticks(range(len(recipes)), [n for n, _ in recipes])
    ax.set_xlabel("accuracy on the test split (dots: seeds; bar: mean)")
    ax.set_title(f"{run.name}: test accuracy per seed", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax.figure.tight_layout()
    return ax.figure
