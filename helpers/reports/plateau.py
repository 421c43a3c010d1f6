"""Notebook 07's report (plateau diagnosis): the tables, figures and words made from the runs and the
diagnoses `helpers.stages.plateau` computed, the doctor's validation (`helpers.stages.doctorcheck`) and the
planted-fault benchmark (`helpers.stages.planted`)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from helpers.evaluation.doctor import (describe_learning_curve, diagnose_history, Diagnosis, load_history,
                                       load_run_config, make_findings_table, make_recommendations_table)
from helpers.evaluation.doctor.validation import BASELINES, GOAL_PRECISION, GOAL_RECALL
from helpers.stages.plateau import rule_epoch, Run3D
from helpers.stages.words import markdown, render, render_answer

# What notebook 07 shows; the doctor's own tables and words are imported above so the notebook needs this module.
__all__ = ["describe_answer", "describe_baseline", "describe_conclusion", "describe_followups",
           "describe_learning_curve", "describe_planted", "describe_rules", "describe_synthetic",
           "describe_validation", "make_answer_headline", "make_findings_table", "make_note004_comparison",
           "make_recommendations_table", "make_versus_table", "markdown", "plot_diagnosis", "plot_followups",
           "plot_learning_curve", "show_history_picker"]

NOTEBOOK = "07_plateau_diagnosis"


def describe_baseline(run: Run3D, ceiling: float | None) -> str:
    """The baseline run's best validation cosine, where it was reached, the test cosine and the ceiling."""
    return render(NOTEBOOK, "baseline", run=run, ceiling=ceiling)


def describe_synthetic(table: pd.DataFrame) -> str:
    """How many of the labelled generated curves (`evaluate_synthetic_set`) the doctor labels correctly."""
    return render(NOTEBOOK, "synthetic", correct=int(table["correct"].sum()), total=len(table))


def describe_rules(diagnosis: Diagnosis) -> str:
    """When Keras' ReduceLROnPlateau and EarlyStopping would have acted on the diagnosed curve (template block
    ``rules``; the doctor's own `describe_rules` gives the same as two plain lines for the command line)."""
    return render(NOTEBOOK, "rules", rl=diagnosis.rules["reduce_lr_on_plateau"], es=diagnosis.rules["early_stopping"],
                  n=diagnosis.rules.get("n_epochs", "recorded"))


def describe_followups(head: Mapping[str, Any]) -> str:
    """The best recommendation and the data control, from `summarize_followups` (template block ``followups``)."""
    return render(NOTEBOOK, "followups", best_remedy=head["best_remedy"],
                  remedy_cos=head["remedy_best_cos"], remedy_delta=head["remedy_delta"],
                  baseline_cos=head["baseline_best_cos"], control_cos=head.get("control_best_cos"),
                  control_delta=head.get("control_delta"))


def describe_conclusion(head: Mapping[str, Any], table: pd.DataFrame, ceiling: float | None,
                        diagnosis: Diagnosis) -> str:
    """The notebook's conclusion from the measured runs: which change helped most, by how much, next to
    the ceiling, and where the doctor's first remedy and the data control landed (template block ``conclusion``)."""
    change = first_remedy = None
    if head.get("best_change") is not None:
        runs = table.set_index("run")
        change = {"name": head["best_change"], "role": head["best_change_role"], "delta": head["best_change_delta"],
                  "before": head["baseline_best_cos"], "after": float(runs.loc[head["best_change"], "best_val_cos"]),
                  "gap_closed": head.get("best_change_gap_closed")}
        first = next((r.name for r in diagnosis.recommendations if r.name in set(table["run"])), None)
        if first is not None and first != head["best_change"]:
            first_remedy = {"name": first, "delta": float(runs.loc[first, "delta_vs_baseline"])}
    control = head.get("control_delta") if change and head["best_change"] != "control_more_data" else None
    return render(NOTEBOOK, "conclusion", change=change, first_remedy=first_remedy, ceiling=ceiling,
                  control_delta=control)


def describe_answer(diagnosis: Diagnosis, head: Mapping[str, Any], table: pd.DataFrame, scores: pd.DataFrame,
                    planted: pd.DataFrame) -> str:
    """The notebook's answer (template block ``answer``): what the doctor reads in the baseline, which change
    moved the validation cosine most when run, the held-out precision and recall on public logs against the
    goal, and the planted-fault counts beside a random guess."""
    first = diagnosis.findings[0] if diagnosis.findings else None
    change = None
    if head.get("best_change") is not None:
        row = table.set_index("run").loc[head["best_change"]]
        change = {"name": head["best_change"], "delta": float(head["best_change_delta"]),
                  "before": float(head["baseline_best_cos"]), "after": float(row["best_val_cos"])}
    h = scores.set_index(["split", "method"]).loc[("heldout", "doctor")].to_dict()
    return render_answer(NOTEBOOK, finding=first.kind if first else None,
                        reason=diagnosis.summary.get("reason", "no finding"), change=change, heldout=h,
                        goal=(GOAL_PRECISION, GOAL_RECALL), planted=dict(planted.attrs),
                        goal_met=bool(h["precision"] >= GOAL_PRECISION and h["recall"] >= GOAL_RECALL))


def make_answer_headline(diagnosis: Diagnosis, head: Mapping[str, Any], scores: pd.DataFrame,
                         planted: pd.DataFrame) -> dict[str, Any]:
    """The numbers the answer rests on: the first finding, the best change's gain, the held-out precision and
    recall (dev beside), the planted-fault counts."""
    out: dict[str, Any] = {"first finding": diagnosis.label}
    if head.get("best_change") is not None:
        out[f"val cos gain of {head['best_change']}"] = float(head["best_change_delta"])
    s = scores.set_index(["split", "method"])
    h, d = s.loc[("heldout", "doctor")], s.loc[("dev", "doctor")]
    out["doctor precision / recall held out (dev)"] = (f"{h['precision']:.2f} / {h['recall']:.2f} "
                                                      f"({d['precision']:.2f} / {d['recall']:.2f})")
    a = planted.attrs
    out["planted faults: cause named / remedy helped"] = f"{a['named']} / {a['helped']} of {a['faults']}"
    return out


def make_note004_comparison(diagnosis: Diagnosis, baseline: Run3D, ceiling: float | None) -> pd.DataFrame:
    """M4's observations next to what this baseline shows (the verdict is computed)."""
    pl, se = diagnosis.finding("plateau"), diagnosis.finding("schedule_ended")
    ratio = baseline.overfit_ratio
    rows = [
        {"quantity": "cosine similarity stalls at", "note_004": "0.74–0.75",
         "here": f"{pl.evidence['level']:.3f}" if pl else f"no plateau (best {baseline.best_val_cos:.3f})",
         "verdict": ("stalls, at a different level (other data)" if pl else
                     f"does not stall: still rising when the learning rate ran out (below a quarter of its peak "
                     f"from epoch {se.evidence['low_lr_epoch']})" if se else "does not stall")},
        {"quantity": "stall begins after", "note_004": "~20 of 65 epochs",
         "here": f"epoch {pl.epoch} of {baseline.epochs_run}" if pl else "—",
         "verdict": "—" if not pl else f"{100 * (pl.epoch or 0) / max(1, baseline.epochs_run):.0f}% of the run "
                                      f"(note: {100 * 20 / 65:.0f}%)"},
        {"quantity": "val/train loss ratio", "note_004": "≈ 1.4 (mild, acceptable)", "here": f"{ratio:.2f}",
         "verdict": ("> 1.5: overfitting by M4's rule" if ratio > 1.5 else
                     "< 1.2: room to regularise less" if ratio < 1.2 else "1.2–1.5: acceptable by M4's rule")},
        {"quantity": "best achievable (ceiling)", "note_004": "unknown",
         "here": f"{ceiling:.3f}" if ceiling is not None else "unknown",
         "verdict": (f"baseline reaches {baseline.best_val_cos / ceiling:.0%} of it" if ceiling else "—")},
    ]
    for goal in (0.80, 0.85, 0.90):
        rows.append({"quantity": f"M4 success step cos ≥ {goal:.2f}", "note_004": "goal",
                     "here": f"{baseline.best_val_cos:.3f}",
                     "verdict": ("met" if baseline.best_val_cos >= goal else
                                 f"missed by {goal - baseline.best_val_cos:.3f}") +
                                (" (above the ceiling: unreachable on this data)" if ceiling and goal > ceiling else "")})
    return pd.DataFrame(rows)


def _ceiling_line(ax, ceiling: float | None) -> None:
    """The best achievable score as a black line, where it is known."""
    if ceiling is not None and math.isfinite(ceiling):
        ax.axhline(ceiling, color="k", lw=1.2, label=f"ceiling {ceiling:.3f}")


def _finish(ax, xlabel: str, ylabel: str, title: str):
    """Axis labels, title and legend of a one-panel figure; returns the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.figure.tight_layout()
    return ax.figure


def _plot_metric_panel(ax, h: pd.DataFrame, diagnosis: Diagnosis, ceiling: float | None, title: str) -> None:
    """The judged metric with the plateau (start, level), the ceiling, and where ReduceLROnPlateau and
    EarlyStopping would act."""
    m = diagnosis.metric
    ep = h["epoch"]
    ax.plot(ep, h[m], color="C0", label=m)
    pl = diagnosis.finding("plateau")
    if pl is not None:
        ax.axvline(pl.epoch, color="C3", ls="--", lw=1, label=f"plateau from epoch {pl.epoch}")
        ax.axhline(pl.evidence["level"], color="C3", ls=":", lw=1, label=f"plateau level {pl.evidence['level']:.3f}")
    _ceiling_line(ax, ceiling)
    cut = rule_epoch(diagnosis, "reduce_lr_on_plateau", "first_cut_epoch")
    stop = rule_epoch(diagnosis, "early_stopping", "stop_epoch")
    if cut is not None:
        ax.axvline(cut, color="C1", ls="-.", lw=1, label=f"ReduceLROnPlateau(10) cut: {cut}")
    if stop is not None:
        ax.axvline(stop, color="C2", ls="-.", lw=1, label=f"EarlyStopping(20) stop: {stop}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(m)
    ax.set_title(title or f"{m}: {diagnosis.label}")
    ax.legend(fontsize=7, loc="best")


def _plot_loss_panel(ax, h: pd.DataFrame) -> None:
    """Train and validation loss, with their ratio on a second axis (1.2 and 1.5 dotted)."""
    ep = h["epoch"]
    for col, c in (("train_loss", "C0"), ("val_loss", "C1")):
        if col in h:
            ax.plot(ep, h[col], color=c, label=col)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if "train_loss" in h and "val_loss" in h:
        r = ax.twinx()
        r.plot(ep, h["val_loss"] / h["train_loss"], color="C4", ls="--", label="val/train ratio")
        for lvl, c in ((1.2, "0.6"), (1.5, "C3")):
            r.axhline(lvl, color=c, ls=":", lw=1)
        r.set_ylabel("val/train loss ratio (1.2, 1.5 dotted)")
        r.legend(fontsize=7, loc="center right")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title("losses and their ratio")


def _plot_lr_panel(ax, h: pd.DataFrame, diagnosis: Diagnosis) -> None:
    """The learning rate (log scale) with the plateau start and the end of the warm-up."""
    ep = h["epoch"]
    if "lr" in h and h["lr"].notna().any():
        ax.plot(ep, h["lr"], color="C2")
        ax.set_yscale("log")
        pl = diagnosis.finding("plateau")
        if pl is not None:
            ax.axvline(pl.epoch, color="C3", ls="--", lw=1)
        se = diagnosis.finding("schedule_ended")
        if se is not None:
            ax.axvline(se.evidence["low_lr_epoch"], color="C1", ls="--", lw=1,
                       label=f"below 25% of peak from epoch {se.evidence['low_lr_epoch']}")
            ax.legend(fontsize=7)
        wu = diagnosis.summary.get("warmup_epochs")
        if wu:
            ax.axvline(ep.iloc[min(int(wu), len(ep) - 1)], color="0.5", ls=":", lw=1, label="end of warm-up")
            ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no learning-rate column", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate (plateau start red, schedule running out orange)")


def plot_diagnosis(history: pd.DataFrame, diagnosis: Diagnosis, ceiling: float | None = None,
                   ax: Sequence[Any] | None = None, title: str = ""):
    """Three panels: the judged metric (plateau start and level, ceiling, where ReduceLROnPlateau
    and EarlyStopping would act), train/val loss with their ratio, and the learning rate."""
    import matplotlib.pyplot as plt  # deferred: plotting is only needed when a notebook draws

    h = load_history(history)
    if ax is None:
        fig, ax = plt.subplots(1, 3, figsize=(15, 3.8))
    fig = ax[0].figure
    _plot_metric_panel(ax[0], h, diagnosis, ceiling, title)
    _plot_loss_panel(ax[1], h)
    _plot_lr_panel(ax[2], h, diagnosis)
    fig.tight_layout()
    return fig


def plot_learning_curve(table: pd.DataFrame, ceiling: float | None = None, ax=None):
    """Best validation cosine against training identities (log scale): the probes and the baseline the
    doctor used, and the data control measured afterwards."""
    import matplotlib.pyplot as plt  # deferred: plotting is only needed when a notebook draws

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.8))
    used = table[table["used_by_doctor"]]
    ax.plot(used["identities"], used["best_val_cos"], "o-", color="C0", label="probes and baseline (doctor's evidence)")
    ctrl = table[~table["used_by_doctor"]]
    if len(ctrl):
        ax.plot(ctrl["identities"], ctrl["best_val_cos"], "s", color="C3", label="data control (measured afterwards)")
    _ceiling_line(ax, ceiling)
    ax.set_xscale("log", base=2)
    return _finish(ax, "training identities (log scale)", "best validation cosine", "learning curve")


def plot_followups(runs: Sequence[Run3D], ceiling: float | None = None, ax=None):
    """Validation cosine of the baseline and the follow-up runs, overlaid, with the ceiling."""
    import matplotlib.pyplot as plt  # deferred: plotting is only needed when a notebook draws

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4))
    for i, r in enumerate(runs):
        ax.plot(r.history["epoch"], r.history["val_cos"], color=f"C{i}", lw=2 if i == 0 else 1.3,
                label=f"{r.name} (best {r.best_val_cos:.3f})")
    _ceiling_line(ax, ceiling)
    return _finish(ax, "epoch", "validation cosine similarity", "baseline and follow-up runs")


def show_history_picker(histories: Mapping[str, str | Path | pd.DataFrame], static: bool,
                        ceilings: Mapping[str, float] | None = None):
    """In JupyterLab: a dropdown picking which history to diagnose (table + annotated curves).
    Under papermill (``static``) or without ipywidgets: the first history's diagnosis, displayed
    once. Returns the widget (or None)."""
    # deferred: matplotlib and IPython are only needed inside a notebook
    import matplotlib.pyplot as plt
    from IPython.display import display

    ceilings = dict(ceilings or {})
    keys = list(histories)
    if not keys:
        print("no histories to pick from")
        return None

    def render(key: str) -> None:
        d = diagnose_history(load_history(histories[key]), ceiling=ceilings.get(key),
                             config=load_run_config(histories[key]) if not isinstance(histories[key], pd.DataFrame) else None)
        with pd.option_context("display.max_colwidth", None):   # a finding is a sentence: never cut it
            display(make_findings_table(d)[["kind", "epoch", "finding"]])
        fig = plot_diagnosis(histories[key], d, ceilings.get(key), title=key)
        display(fig)
        plt.close(fig)

    try:
        import ipywidgets as widgets  # optional: only JupyterLab has it
    except ImportError:
        widgets = None
    if static or widgets is None:
        print(f"history shown: {keys[0]} (static; in JupyterLab a dropdown picks among {len(keys)})")
        render(keys[0])
        return None
    pick = widgets.Dropdown(options=keys, description="history", layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def on_change(change: dict) -> None:
        out.clear_output(wait=True)
        with out:
            render(change["new"])

    pick.observe(on_change, names="value")
    with out:
        render(keys[0])
    return widgets.VBox([pick, out])   # shown once, as the cell's value


def make_versus_table(validation: dict[str, Any], split: str = "heldout") -> pd.DataFrame:
    """The doctor minus each baseline on one split: differences in pooled precision and recall, their 95 %
    intervals and p-values (paired bootstrap over repositories)."""
    rows = []
    for name, v in validation["results"][split]["versus"].items():
        rows.append({"baseline": name, **{k: v[k] for k in ("precision_diff", "precision_diff_low", "precision_diff_high",
                                                             "precision_p", "recall_diff", "recall_diff_low",
                                                             "recall_diff_high", "recall_p")}})
    return pd.DataFrame(rows)


def describe_validation(validation: dict[str, Any], frozen: dict[str, Any]) -> str:
    """Held-out pooled precision and recall with their intervals, the dev figure beside, each baseline, and
    whether the goal is met held out -- said plainly (template block ``validation`` of notebook 07)."""
    s = validation["scores"].set_index(["split", "method"])
    h = s.loc[("heldout", "doctor")]
    return render(NOTEBOOK, "validation", heldout=h.to_dict(), dev=s.loc[("dev", "doctor")].to_dict(),
                  frozen=frozen, goal=(GOAL_PRECISION, GOAL_RECALL),
                  goal_met=bool(h["precision"] >= GOAL_PRECISION and h["recall"] >= GOAL_RECALL),
                  baselines=[(m, s.loc[("heldout", m)].to_dict()) for m in BASELINES])


def describe_planted(table: pd.DataFrame) -> str:
    """One sentence on the planted-fault benchmark, with the random baselines beside and its time (template
    block ``planted``)."""
    return render(NOTEBOOK, "planted", **table.attrs)
