"""Notebook 04's report: the tables, figures and words made from what `helpers.stages.multiseed` computed
(members, the spread summary, the architecture comparison, the search and the tuning gain)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.core.display import make_dataset_table  # noqa: F401 (the notebook shows tables with it)
from helpers.evaluation.stats import format_p, seed_prediction_bound
from helpers.stages.multiseed import best_is_handset, handset_val_acc, MemberSpec, StudyResult
from helpers.stages.words import markdown, render, render_answer  # noqa: F401 (markdown: the notebook shows words with it)
from helpers.training.search import width_value


# M1 stage 3, validation accuracy per (family, seed), on the note's own 28x28 pair data.
NOTE_001_CLAIMS: dict[tuple[str, int], float] = {
    ("resnet", 42): 0.8538, ("resnet", 2023): 0.8702, ("resnet", 2024): 0.8671, ("resnet", 2025): 0.8739,
    ("fpn", 42): 0.8730,
    ("fusion", 42): 0.8538, ("fusion", 123): 0.8436, ("fusion", 456): 0.8439,
}


def make_plan_table(specs: Sequence[MemberSpec]) -> pd.DataFrame:
    """The grid as planned: one row per member with the recipe it follows and what that recipe sets."""
    rows = []
    for s in specs:
        t = s.train
        epochs = min(t.get("epochs", 0), s.max_epochs) if s.max_epochs else t.get("epochs")
        rows.append({"member": s.name, "arch": s.arch, "seed": s.seed, "recipe": s.recipe or "(given here)",
                     "model": s.model or s.arch, "model_kwargs": json.dumps(s.model_kwargs), "epochs": epochs,
                     "lr": t.get("lr"), "batch_size": t.get("batch_size"), "augment": t.get("augment", False),
                     "loss": s.loss, "starts_from": Path(s.start_checkpoint).name if s.start_checkpoint else "scratch",
                     "early_stop_split": s.early_stop_split, "crash_planted": s.crash or ""})
    return pd.DataFrame(rows)


def make_summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary trimmed to what answers the spread question, one row per architecture."""
    cols = {"n_ok": "seeds", "mean_test_acc": "mean test acc", "std_test_acc": "seed sd",
            "sd_ci_low": "sd 95% low", "sd_ci_high": "sd 95% high", "binomial_se": "binomial SE",
            "unit_se": "SE over unit", "sd_over_unit_se": "sd / SE", "min_test_acc": "min", "max_test_acc": "max"}
    return summary.set_index("arch")[list(cols)].rename(columns=cols)


def make_comparison_view(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison as shown: p-values as text (a tiny p is never displayed as a rounded 0)."""
    out = comparison.copy()
    for col in ("p_value", "p_holm"):
        out[col] = [format_p(p) if np.isfinite(p) else "n/a" for p in out[col]]
    return out.set_index("arch")


def make_metrics_view(table: pd.DataFrame) -> pd.DataFrame:
    """metrics.json as shown: p-values as text (never a rounded 0); the file keeps the numbers."""
    out = table.astype(object)
    for key in out.index[out.index.str.endswith(("p_vs_baseline", "tuned_vs_handset_p"))]:
        v = out.loc[key, "value"]
        out.loc[key, "value"] = format_p(float(v)) if isinstance(v, (int, float)) and np.isfinite(v) else v
    return out


def describe_failures(members: pd.DataFrame) -> str:
    """Which members failed and why (the others are used); template block ``failures``."""
    bad = members[members["status"] != "ok"]
    return render("04_multi_seed", "failures", n=len(members),
                  failed=[{"member": r.member, "error": r.error} for r in bad.itertuples()])


def describe_spread(summary: pd.DataFrame) -> str:
    """Per architecture: the seed sd with its chi-square interval against one model's standard error, and how
    far apart two single-seed runs of the same recipe can land from the seed alone (template block ``spread``)."""
    rows = []
    for r in summary.itertuples():
        row = {"arch": r.arch, "n": r.n_ok, "mean": r.mean_test_acc, "unit_se": r.unit_se, "unit": r.unit}
        if r.n_ok >= 2:
            reading = "more" if r.sd_ci_low > r.unit_se else "less" if r.sd_ci_high < r.unit_se else "undecided"
            row.update(sd=r.std_test_acc, sd_low=r.sd_ci_low, sd_high=r.sd_ci_high, binomial_se=r.binomial_se,
                       reading=reading, bound=seed_prediction_bound(r.std_test_acc, r.n_ok), low=r.min_test_acc,
                       high=r.max_test_acc)
        rows.append(row)
    return render("04_multi_seed", "spread", rows=rows)


def describe_comparison(comparison: pd.DataFrame) -> str:
    """Each architecture against the baseline, with the test that decided it (template block ``comparison``)."""
    rows = [{"arch": r.arch, "baseline": r.baseline, "diff": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high,
             "se_seed": r.se_seed, "se_test": r.se_test, "verdict": r.verdict} for r in comparison.itertuples()]
    return render("04_multi_seed", "comparison", rows=rows, unit=comparison.attrs.get("unit", "row"),
                  adjusted=comparison.attrs.get("n_tests", 0) > 1)


def _answer_facts(label: str, summary: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, Any]:
    """One dataset's numbers the answer states: the largest seed sd against one model's SE, and the first
    architecture comparison (its interval Holm-adjusted when the table holds several)."""
    ok = summary[(summary["n_ok"] > 1) & summary["std_test_acc"].notna()]
    if ok.empty:
        return {"name": label, "sd": None}
    top = ok.loc[ok["std_test_acc"].idxmax()]
    first = comparison.iloc[0] if len(comparison) else None
    return {"name": label, "sd": float(top["std_test_acc"]), "sd_arch": top["arch"], "n_seeds": int(top["n_ok"]),
            "se": float(ok["unit_se"].mean()),
            "comparison": None if first is None else {**first.to_dict(), "adjusted": len(comparison) > 1}}


def describe_answer(results: Mapping[str, tuple], arch: str = "") -> str:
    """The notebook's answer (template block ``answer``) from ``{label: (summary, comparison, tuning gain or
    None, search or None)}``: per dataset the architecture verdict and the seed sd against one model's SE,
    then what tuning bought on the first dataset with a search."""
    facts = [_answer_facts(label, s, c) for label, (s, c, _, _) in results.items()]
    tuning = None
    for gain, search in ((g, r) for _, _, g, r in results.values()):
        if gain is not None and search is not None and gain["n_seeds"]:
            tuning = {"arch": arch or "the recipe", "trials": search.n_trials, "handset_best": best_is_handset(search),
                      **{k: gain[k] for k in ("diff", "ci_low", "ci_high", "verdict")}}
            break
    return render_answer("04_multi_seed", datasets=facts, tuning=tuning)


def make_answer_headline(summary: pd.DataFrame, comparison: pd.DataFrame,
                         tuning: dict[str, Any] | None = None, arch: str = "") -> dict[str, float]:
    """The two or three numbers the answer rests on (with a search: the seed sd, the architecture difference
    and what tuning bought)."""
    ok = summary[summary["n_ok"] > 1]
    out: dict[str, float] = {}
    if len(ok):
        r = ok.loc[ok["std_test_acc"].idxmax()]
        out[f"largest seed sd ({r['arch']})"] = round(float(r["std_test_acc"]), 4)
    if len(summary) and not (tuning and tuning["n_seeds"]):
        out["one model's SE over the unit"] = round(float(summary["unit_se"].mean()), 4)
    if len(comparison):
        r = comparison.iloc[0]
        out[f"{r['arch']} − {r['baseline']}"] = round(float(r["diff"]), 4)
    if tuning and tuning["n_seeds"]:
        out[f"{arch}_tuned − {arch} (test)"] = round(float(tuning["diff"]), 4)
    return out


def make_claims_table(summary: pd.DataFrame) -> pd.DataFrame:
    """M1's seed spreads (validation accuracy on its own 28x28 pairs) next to this run's (test accuracy)."""
    rows = []
    for fam in ("resnet", "fusion"):
        v = np.array([a for (f, _), a in NOTE_001_CLAIMS.items() if f == fam])
        rows.append({"source": "M1 (their data, val)", "architecture": fam, "seeds": len(v),
                     "seed sd": float(v.std(ddof=1)), "min–max range": float(v.max() - v.min())})
    for r in summary.itertuples():
        rows.append({"source": "this run (test)", "architecture": r.arch, "seeds": r.n_ok,
                     "seed sd": r.std_test_acc, "min–max range": r.spread})
    return pd.DataFrame(rows)


def plot_seed_strip(members: pd.DataFrame, ax=None):
    """Seed variance on the test split: one dot per member (test accuracy with its 95% interval over the
    data's independent unit), per architecture, with the architecture's mean as a bar."""
    import matplotlib.pyplot as plt

    ok = members[members["status"] == "ok"]
    archs = list(dict.fromkeys(members["arch"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 1.6 * len(archs), 3.8))
    for i, arch in enumerate(archs):
        g = ok[ok["arch"] == arch].reset_index(drop=True)
        if not len(g):
            continue
        # Spread the dots sideways so overlapping seeds stay visible.
        x = i + (np.linspace(-0.18, 0.18, len(g)) if len(g) > 1 else np.zeros(1))
        y = g["test_acc"].astype(float).to_numpy()
        err = np.vstack([y - g["test_ci_low"].astype(float), g["test_ci_high"].astype(float) - y])
        ax.errorbar(x, y, yerr=err, fmt="o", ms=6, capsize=3, color=f"C{i}", alpha=0.9)
        for xi, yi, s in zip(x, y, g["seed"]):
            ax.annotate(str(s), (xi, yi), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.hlines(y.mean(), i - 0.3, i + 0.3, color=f"C{i}", lw=2)
    ax.set_xticks(range(len(archs)), archs)
    unit = ok["unit"].iloc[0] if len(ok) else "row"
    ax.set_ylabel(f"test-split accuracy (95% interval over {unit}s)")
    failed = members.loc[members["status"] != "ok", "member"].tolist()
    ax.set_title("Seed spread per architecture, test split" + (f" — failed: {', '.join(failed)}" if failed else ""))
    return ax.figure


def plot_member_curves(histories: dict[str, list[dict]], members: pd.DataFrame,
                       metrics: Sequence[str] = ("train_loss", "val_loss", "accuracy"), stop_split: str = "val",
                       axes=None):
    """Training curves of every member overlaid, one colour per architecture, one panel per metric.
    ``val_loss`` and ``accuracy`` are on the early-stopping split, which the titles name."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    where = {"val": "validation split", "source_holdout": "held-out training source images"}.get(stop_split, stop_split)
    archs = list(dict.fromkeys(members["arch"]))
    colour = {a: f"C{i}" for i, a in enumerate(archs)}
    arch_of = dict(zip(members["member"], members["arch"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    for ax, m in zip(axes, metrics):
        for name, hist in histories.items():
            ep = [r["epoch"] for r in hist if m in r]
            if ep:
                ax.plot(ep, [r[m] for r in hist if m in r], color=colour[arch_of[name]], alpha=0.75, lw=1.3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{m} (training pairs)" if m.startswith("train") else f"{m} ({where})", fontsize=9)
    axes[-1].legend(handles=[plt.Line2D([], [], color=colour[a], label=a) for a in archs], fontsize=8)
    fig.tight_layout()
    return fig


def make_trials_view(result: StudyResult, n: int = 10) -> pd.DataFrame:
    """The best ``n`` completed trials (validation accuracy, the parameters and what the width means)."""
    t = result.trials
    cols = ["number", "value", "lr", "weight_decay", "width", "width_value", "epochs_run", "seconds", "handset",
            "worker"]
    return (t[t["state"] == "COMPLETE"].sort_values(["value", "number"], ascending=[False, True])[cols].head(n)
            .rename(columns={"value": "val_acc", "width": "width ×"}).set_index("number"))


def make_handset_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The recipe's own (hand-set) values of the searched parameters."""
    return {"lr": float(spec["train"].get("lr", float("nan"))),
            "weight_decay": float(spec["train"].get("weight_decay", float("nan"))), "width": 1.0,
            "width_value": width_value(spec["kwargs"])}


def describe_search(result: StudyResult, members: pd.DataFrame | None = None, arch: str = "") -> str:
    """The study: trials (complete, pruned, failed), workers, time, the best configuration next to the hand-set
    one, and why the best validation accuracy is optimistic (template block ``search``)."""
    t = result.trials
    enq = t[t["handset"].fillna(False).astype(bool) & (t["state"] == "COMPLETE")] if "handset" in t else t.iloc[:0]
    handset_val = handset_val_acc(members, arch, result.spec["seed"]) if members is not None else None
    return render("04_multi_seed", "search", r=result, best=result.best_params, best_width=width_value(result.best_kwargs),
                  handset=make_handset_config(result.spec), workers=max(result.workers, 1),
                  pruner={"median": "the median rule", "halving": "successive halving", "none": "no pruner"}[
                      result.spec["pruner"]],
                  enqueued=None if not len(enq) else {"trial": int(enq["number"].iloc[0]),
                                                      "value": float(enq["value"].iloc[0])},
                  handset_val=handset_val)


def describe_tuning(gain: dict[str, Any], arch: str, result: StudyResult | None = None) -> str:
    """Tuned minus hand-set, across seeds with its interval, set against the seed sd (template block ``tuning``)."""
    sd = gain["handset_sd"]
    return render("04_multi_seed", "tuning", g=gain, arch=arch,
                  handset_best=result is not None and best_is_handset(result),
                  best_trial=None if result is None else result.best_trial,
                  trials=None if result is None else result.n_trials,
                  ratio=abs(gain["diff"]) / sd if np.isfinite(sd) and sd > 0 else None)


def make_tuned_strip(members: pd.DataFrame, tuned: pd.DataFrame, arch: str) -> pd.DataFrame:
    """The hand-set members of ``arch`` and the tuned ones in one table, for `plot_seed_strip`."""
    return pd.concat([members[members["arch"] == arch], tuned], ignore_index=True)


def make_tuning_view(gain: dict[str, Any]) -> pd.DataFrame:
    """Per seed and across seeds: hand-set and tuned test accuracy, the paired difference, its interval and p."""
    df = gain["per_seed"].copy()
    df["p"] = [format_p(p) for p in df["p_value"]]
    across = {"seed": "across seeds", "handset_test_acc": gain["handset_mean"], "tuned_test_acc": gain["tuned_mean"],
              "diff": gain["diff"], "ci_low": gain["ci_low"], "ci_high": gain["ci_high"], "p_value": gain["p_value"],
              "p": format_p(gain["p_value"]) if np.isfinite(gain["p_value"]) else "n/a (one seed)",
              "handset_val_acc": df["handset_val_acc"].mean(), "tuned_val_acc": df["tuned_val_acc"].mean()}
    df = pd.concat([df.astype({"seed": object}), pd.DataFrame([across])], ignore_index=True)
    return df.drop(columns=["p_value"]).set_index("seed")


def plot_optimization_history(trials: pd.DataFrame, reference: float | None = None, ax=None):
    """Validation accuracy of every trial in trial order (pruned trials at the last value they reported), the
    best so far as a step line, and the hand-set recipe's value as a dashed line when given."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    t = trials.sort_values("number")
    done, pruned = t[t["state"] == "COMPLETE"], t[t["state"] == "PRUNED"]
    ax.scatter(done["number"], done["value"], s=22, color="tab:blue", label="completed", zorder=3)
    if len(pruned):
        ax.scatter(pruned["number"], pruned["last_value"], s=22, marker="x", color="tab:gray",
                   label="pruned (last reported)", zorder=3)
    hand = t[t["handset"].fillna(False).astype(bool)] if "handset" in t else t.iloc[:0]
    if len(hand):
        ax.scatter(hand["number"], hand["value"].fillna(hand["last_value"]), s=90, marker="*", color="tab:orange",
                   label="hand-set recipe (enqueued)", zorder=4)
    if len(done):
        best = done.set_index("number")["value"].reindex(t["number"]).ffill().cummax()
        ax.step(best.index, best.to_numpy(), where="post", color="tab:red", lw=1.5, label="best so far")
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, ls="--", color="black", lw=1, label="hand-set member, same seed")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("Optimisation history", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


def plot_param_importances(importance: pd.DataFrame, ax=None):
    """Horizontal bars: each searched parameter's importance (fANOVA share, completed trials)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.4))
    if importance.empty:
        ax.text(0.5, 0.5, "fewer than three completed trials:\nno importance", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    else:
        df = importance.sort_values("importance")
        ax.barh(df["parameter"], df["importance"], color="tab:blue")
        for y, v in enumerate(df["importance"]):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(1.0, float(df["importance"].max()) * 1.15))
    ax.set_xlabel("importance (fANOVA share of the variance)")
    ax.set_title("Parameter importance", fontsize=10)
    return ax.figure


def plot_trial_curves(curves: pd.DataFrame, ax=None):
    """Each trial's validation accuracy per epoch, as reported to the pruner: completed trials in blue, pruned
    ones in grey ending where they were stopped."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for (_, state), g in curves.groupby(["number", "state"]):
        c = "tab:gray" if state == "PRUNED" else "tab:blue"
        ax.plot(g["epoch"], g["value"], color=c, alpha=0.55 if state == "PRUNED" else 0.8, lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Trials per epoch (grey: pruned)", fontsize=10)
    return ax.figure


def plot_lr_slice(trials: pd.DataFrame, ax=None):
    """Validation accuracy of the completed trials against the learning rate (log axis), coloured by width."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    done = trials[trials["state"] == "COMPLETE"]
    lw = np.log10(done["weight_decay"].astype(float))
    size = 12 + 60 * (lw - lw.min()) / max(float(lw.max() - lw.min()), 1e-12)     # larger = more weight decay
    for i, (w, g) in enumerate(done.groupby("width")):
        ax.scatter(g["lr"], g["value"], s=size[g.index], color=f"C{i}", label=f"width ×{w:g}", alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (marker size: weight decay, log)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("Completed trials by learning rate", fontsize=10)
    if len(done):
        ax.legend(fontsize=7)
    return ax.figure


def plot_search(result: StudyResult, importance: pd.DataFrame, reference: float | None = None, label: str = ""):
    """The study on one figure: optimisation history, parameter importance, per-epoch curves, lr slice."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    plot_optimization_history(result.trials, reference, axes[0, 0])
    plot_param_importances(importance, axes[0, 1])
    plot_trial_curves(result.curves, axes[1, 0])
    plot_lr_slice(result.trials, axes[1, 1])
    fig.suptitle((f"{label}: " if label else "") + f"study {result.name}, {result.n_trials} trials "
                 f"({result.n_pruned} pruned)", fontsize=11)
    fig.tight_layout()
    return fig
