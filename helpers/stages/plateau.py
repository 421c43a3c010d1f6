"""Notebook 07: the 3D plateau: the baseline run, the curve doctor's findings, the follow-up runs."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_json, atomic_write_text
from helpers.core.progress import progress
from helpers.data.multiview import evaluate_ceiling, load_multiview_data, MultiViewData, MultiViewSplit
from helpers.evaluation.doctor import (describe_learning_curve, describe_rules, diagnose_history, Diagnosis,
                                       evaluate_synthetic_set, load_history, load_run_config,
                                       make_findings_table, make_recommendations_table,
                                       make_synthetic_history)
from helpers.models.registry import create_model
from helpers.models.transformer3d import Transformer3D
from helpers.training.loop import evaluate_model, train_model
from helpers.training.recipes import make_note004_train_config as make_train_config
from helpers.evaluation.doctor.validation import GOAL_PRECISION, GOAL_RECALL
from helpers.training.tasks import RegressionTask
from helpers.stages.words import markdown, render, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 07 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["RUN_KEYS", "describe_answer", "describe_conclusion", "describe_followups", "describe_learning_curve", "describe_rules",
           "diagnose_histories", "diagnose_history", "evaluate_ceiling",
           "evaluate_synthetic_set", "find_histories", "learning_curve_points", "load_multiview_data",
           "make_answer_headline", "make_before_after_table", "make_doctor_metrics", "make_findings_table", "make_learning_curve_table",
           "make_note004_comparison", "make_recommendations_table", "make_train_config", "make_training_subset",
           "make_transformer3d", "plot_diagnosis", "plot_followups", "plot_learning_curve", "show_history_picker",
           "summarize_followups", "train_data_control", "train_followups", "train_learning_curve",
           "train_transformer3d", "write_foreign_histories"]



def make_transformer3d(data: MultiViewData, params: Mapping[str, Any]) -> Transformer3D:
    """The model for ``data`` from parameters d_model, nhead, num_layers, dim_feedforward, dropout."""
    return create_model("transformer3d", feat_dim=data.feat_dim, kp_dim=data.kp_dim,
                        out_dim=int(data.train.target.shape[1]), d_model=int(params["d_model"]),
                        nhead=int(params["nhead"]), num_layers=int(params["num_layers"]),
                        dim_feedforward=int(params["dim_feedforward"]), dropout=float(params["dropout"]),
                        max_frames=max(64, int(data.train.frames.shape[1])))


# The notebook's run parameters (M4's flags) that one 3D run reads.
RUN_KEYS = ("d_model", "nhead", "num_layers", "dim_feedforward", "dropout", "mse_weight", "cosine_weight",
            "lr", "warmup_epochs", "warmup_lr", "epochs", "cosine_eta_min", "batch_size", "weight_decay",
            "early_stopping_patience", "early_stopping_min_delta", "amp")


@dataclass
class Run3D:
    name: str
    params: dict[str, Any]
    history: pd.DataFrame
    best_val_cos: float
    best_epoch: int
    test_cos: float
    overfit_ratio: float
    epochs_run: int
    seconds: float
    n_params: int
    out_dir: Path | None
    role: str = "recommendation"     # baseline | recommendation | control | probe
    note: str = ""
    train_identities: int = 0        # identities in the training split this run saw


def train_transformer3d(data: MultiViewData, params: Mapping[str, Any], name: str = "baseline",
                        out_dir: str | Path | None = None, device: str = "cpu", seed: int = 42,
                        num_threads: int = 0, role: str = "recommendation", note: str = "") -> Run3D:
    """Train one 3D transformer through the shared loop; writes config.json and history.json into
    ``out_dir`` (when given) and scores the best-cosine weights on the test split."""

    p = {k: params[k] for k in RUN_KEYS}
    torch.manual_seed(seed)
    model = make_transformer3d(data, p)
    task = RegressionTask(float(p["mse_weight"]), float(p["cosine_weight"]))
    cfg = make_train_config(p, seed=seed, num_threads=num_threads)
    out = Path(out_dir) if out_dir is not None else None
    n_params = sum(q.numel() for q in model.parameters())
    if out is not None:
        atomic_write_json(out / "config.json", {
            "run": name, "role": role, "note": note, "description": f"M4 3D transformer, {name}", "params": p,
            "model": model.spec | {"parameters": n_params}, "training": cfg.to_dict(),
            "task": {"loss": "mse_weight*MSE + cosine_weight*(1-cos)", "mse_weight": p["mse_weight"],
                     "cosine_weight": p["cosine_weight"], "monitor": "cos"},
            "dataset": {"source": data.source, "generated": data.generated, "train": len(data.train),
                        "val": len(data.val), "test": len(data.test), "split_method": "by identity",
                        "ceiling_cos": data.ceiling_cos}})
    t0 = time.perf_counter()
    res = train_model(model, task, data.train.tensors(), data.val.tensors(), cfg, out_dir=out, device=device)
    seconds = time.perf_counter() - t0
    hist = load_history(res.history)
    test = evaluate_model(res.model, task, data.test.tensors(), device=device)
    tail = hist.tail(max(1, min(5, len(hist))))
    ratio = float((tail["val_loss"] / tail["train_loss"]).median())
    bi = int(hist["val_cos"].idxmax())
    return Run3D(name, p, hist, float(hist["val_cos"].max()), int(hist["epoch"][bi]), float(test["cos"]),
                 ratio, len(hist), seconds, n_params, out, role, note, int(len(np.unique(data.train.ids))))


def make_followup_params(base: Mapping[str, Any], rec_params: Mapping[str, Any],
                         max_epochs: int | None = None) -> dict[str, Any]:
    """Apply a recommendation's parameter changes to the baseline's flags (unknown keys ignored;
    ``max_epochs`` caps a longer schedule on small machines)."""
    p = dict(base)
    for k, v in rec_params.items():
        if k in p:
            p[k] = type(p[k])(v) if isinstance(p[k], (int, float)) and not isinstance(p[k], bool) else v
    if max_epochs is not None:
        p["epochs"] = min(int(p["epochs"]), int(max_epochs))
    nh = int(p["nhead"])
    p["d_model"] = max(nh, int(round(int(p["d_model"]) / nh)) * nh)
    return p


def train_followups(data: MultiViewData, base: Mapping[str, Any], diagnosis: Diagnosis, n: int,
                    out_dir: str | Path, device: str = "cpu", seed: int = 42, num_threads: int = 0,
                    max_epochs: int | None = None) -> list[Run3D]:
    """Run the top ``n`` recommendations that change a model/training flag, each in
    ``out_dir/<name>/`` with its config.json and history.json."""
    runs = []
    for rec in progress(diagnosis.recommendations, "follow-up runs"):
        if len(runs) >= n:
            break
        changes = {k: v for k, v in rec.params.items() if k in base}
        if not changes or all(base[k] == v for k, v in changes.items()):
            continue
        p = make_followup_params(base, changes, max_epochs)
        runs.append(train_transformer3d(data, p, rec.name, Path(out_dir) / rec.name, device, seed, num_threads,
                                        "recommendation", f"plan {rec.plan}: {rec.change}"))
    return runs


def train_data_control(data: MultiViewData, base: Mapping[str, Any], out_dir: str | Path, device: str = "cpu",
                       seed: int = 42, num_threads: int = 0) -> Run3D | None:
    """The control run (not a recommendation): the baseline's flags with the extra training
    identities joined in; None when no extra identities were generated. It tells a data-limited
    plateau from one the flags can fix."""
    if data.train_extra is None:
        return None
    more = data.with_extra_training()
    factor = len(more.train) / max(1, len(data.train))
    return train_transformer3d(more, base, "control_more_data", Path(out_dir) / "control_more_data", device, seed,
                               num_threads, "control", f"{factor:.2g}× the training sequences, same flags")


def make_training_subset(data: MultiViewData, fraction: float, seed: int = 0) -> MultiViewData:
    """The same data with only ``fraction`` of the training identities (all their sequences; a seeded
    choice), validation and test unchanged: one point of a learning curve."""
    if not 0 < fraction <= 1:
        raise WorkbookError(f"make_training_subset: fraction={fraction}; expected 0 < fraction <= 1")
    ids = np.unique(data.train.ids)
    keep = np.random.default_rng(seed).permutation(ids)[:max(1, int(round(fraction * len(ids))))]
    m = np.isin(data.train.ids, keep)
    t = data.train
    sub = MultiViewSplit(t.frames[m], t.keypoints[m], t.target[m], t.ids[m])
    return replace(data, train=sub, train_extra=None,
                   source=data.source + f" (training subset: {len(keep)} of {len(ids)} identities)")


def train_learning_curve(data: MultiViewData, base: Mapping[str, Any], out_dir: str | Path,
                         fractions: Sequence[float] = (0.25, 0.5), device: str = "cpu", seed: int = 42,
                         num_threads: int = 0) -> list[Run3D]:
    """The learning-curve probe: the baseline's flags on ``fractions`` of the training identities, each in
    ``out_dir/train_<fraction>/``. Evidence for or against "more data" before any follow-up runs."""
    runs = []
    for f in fractions:
        name = f"train_{f:g}"
        runs.append(train_transformer3d(make_training_subset(data, f, seed), base, name, Path(out_dir) / name,
                                        device, seed, num_threads, "probe", f"{f:g}× the training identities"))
    return runs


def make_learning_curve_table(baseline: Run3D, probes: Sequence[Run3D], control: Run3D | None = None) -> pd.DataFrame:
    """Best validation cosine by share of the training identities: the probes, the baseline (1×) and, when
    given, the data control (measured after the diagnosis, so not part of the doctor's evidence)."""
    rows = []
    for r in [*probes, baseline, *([control] if control is not None else [])]:
        rows.append({"fraction": r.train_identities / max(1, baseline.train_identities), "run": r.name,
                     "role": "baseline" if r is baseline else r.role, "identities": r.train_identities,
                     "best_val_cos": r.best_val_cos, "test_cos": r.test_cos, "epochs_run": r.epochs_run,
                     "seconds": r.seconds, "used_by_doctor": r is not control})
    return pd.DataFrame(rows).sort_values("fraction").reset_index(drop=True)


def learning_curve_points(table: pd.DataFrame) -> dict[float, float]:
    """{share of the training data: best validation cosine} of the runs the doctor may use."""
    t = table[table["used_by_doctor"]]
    return {float(f): float(s) for f, s in zip(t["fraction"], t["best_val_cos"])}


def diagnose_runs(runs: Sequence[Run3D], ceiling: float | None) -> dict[str, Diagnosis]:
    """The curve doctor on each 3D run (its own flags as the config)."""
    return {r.name: diagnose_history(r.history, metric="val_cos", ceiling=ceiling, config=r.params)
            for r in runs}


def make_before_after_table(baseline: Run3D, followups: Sequence[Run3D], ceiling: float | None,
                            diagnoses: Mapping[str, Diagnosis] | None = None) -> pd.DataFrame:
    """Best validation cosine, test cosine, val/train ratio and plateau per run, baseline first."""
    if diagnoses is None:
        diagnoses = diagnose_runs([baseline, *followups], ceiling)
    rows = []
    for r in [baseline, *followups]:
        d = (diagnoses or {}).get(r.name)
        changed = {k: v for k, v in r.params.items() if baseline.params.get(k) != v}
        role = "baseline" if r is baseline else r.role
        rows.append({"run": r.name, "role": role,
                     "changes": (", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in changed.items()) or r.note or "—"),
                     "best_val_cos": r.best_val_cos, "best_epoch": r.best_epoch, "test_cos": r.test_cos,
                     "delta_vs_baseline": r.best_val_cos - baseline.best_val_cos,
                     "gap_to_ceiling": (ceiling - r.best_val_cos) if ceiling is not None else np.nan,
                     "val_train_ratio": r.overfit_ratio,
                     "plateau_epoch": d.summary.get("plateau_epoch") if d else None,
                     "label": d.label if d else None,
                     "epochs_run": r.epochs_run, "seconds": r.seconds, "params_M": r.n_params / 1e6})
    return pd.DataFrame(rows)


def summarize_followups(table: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of the before/after table: the best follow-up and its change, the data control,
    and which of all the changes run (recommendations and the control) helped most."""
    base = table.iloc[0]
    out = {"baseline_best_cos": float(base["best_val_cos"]), "baseline_test_cos": float(base["test_cos"]),
           "best_remedy": "none", "remedy_best_cos": None, "remedy_test_cos": None, "remedy_delta": None,
           "remedy_beats_baseline": False}
    recs = table[table["role"] == "recommendation"]
    ctrl = table[table["role"] == "control"]
    out.update({"control_best_cos": float(ctrl["best_val_cos"].iloc[0]) if len(ctrl) else None,
                "control_delta": float(ctrl["delta_vs_baseline"].iloc[0]) if len(ctrl) else None})
    if len(recs):
        best = recs.sort_values("best_val_cos", ascending=False).iloc[0]
        out.update({"best_remedy": str(best["run"]), "remedy_best_cos": float(best["best_val_cos"]),
                    "remedy_test_cos": float(best["test_cos"]),
                    "remedy_delta": float(best["best_val_cos"] - base["best_val_cos"]),
                    "remedy_beats_baseline": bool(best["best_val_cos"] > base["best_val_cos"])})
    changes = table[table["role"] != "baseline"]
    if len(changes):
        top = changes.sort_values("best_val_cos", ascending=False).iloc[0]
        gap = base.get("gap_to_ceiling")
        out.update({"best_change": str(top["run"]), "best_change_role": str(top["role"]),
                    "best_change_delta": float(top["delta_vs_baseline"]),
                    "best_change_gap_closed": (float(top["delta_vs_baseline"] / gap)
                                               if gap is not None and np.isfinite(gap) and gap > 0 else None)})
    return out


def describe_followups(head: Mapping[str, Any]) -> str:
    """The best recommendation and the data control, from `summarize_followups` (template block ``followups``)."""
    return render("07_plateau_diagnosis", "followups", best_remedy=head["best_remedy"],
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
    return render("07_plateau_diagnosis", "conclusion", change=change, first_remedy=first_remedy, ceiling=ceiling,
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
    return render_answer("07_plateau_diagnosis", finding=first.kind if first else None,
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


def write_foreign_histories(folder: str | Path) -> dict[str, Path]:
    """Two histories in other loggers' formats, from generated curves (for checking the doctor on
    files this workbook did not write): a Keras CSVLogger file and a timm summary.csv."""

    folder = Path(folder)
    over = make_synthetic_history("overfitting", 60, seed=7)
    keras = pd.DataFrame({"epoch": over["epoch"] - 1, "acc": 1 - over["train_loss"] / 2,
                          "loss": over["train_loss"], "lr": over["lr"],
                          "val_acc": 1 - over["val_loss"] / 2, "val_loss": over["val_loss"]})
    early = make_synthetic_history("schedule_ended", 60, seed=7)
    timm = pd.DataFrame({"epoch": early["epoch"] - 1, "train_loss": early["train_loss"],
                         "eval_loss": early["val_loss"], "eval_top1": 100 * early["val_cos"],
                         "eval_top5": 100 * np.minimum(1, early["val_cos"] + 0.1), "lr": early["lr"]})
    out = {"keras_csvlogger.csv (generated overfitting curve)": folder / "keras_csvlogger.csv",
           "timm_summary.csv (generated schedule-ended curve)": folder / "timm_summary.csv"}
    atomic_write_text(out["keras_csvlogger.csv (generated overfitting curve)"], keras.to_csv(index=False))
    atomic_write_text(out["timm_summary.csv (generated schedule-ended curve)"], timm.to_csv(index=False))
    return out


def make_doctor_metrics(scores: pd.DataFrame, per_kind: pd.DataFrame, planted: pd.DataFrame) -> dict[str, Any]:
    """Pooled precision and recall with their intervals per split and method, the doctor's held-out
    precision / recall per kind (None where undefined) and the planted-fault counts."""
    slug = {"doctor": "doctor", **{m: "baseline_" + "_".join(m.split()[:2]).lower() for m in scores["method"].unique()
                                   if m != "doctor"}}
    out: dict[str, Any] = {}
    for _, r in scores.iterrows():
        for key in ("precision", "precision_low", "precision_high", "recall", "recall_low", "recall_high"):
            out[f"{slug[r['method']]}_{r['split']}_{key}"] = None if pd.isna(r[key]) else float(r[key])
        if r["method"] == "doctor":
            out[f"n_{r['split']}_logs"], out[f"n_{r['split']}_repositories"] = int(r["files"]), int(r["repositories"])
    # the README's doctor table (helpers.workbook.figures) counts the logs its per-kind rates come from: held out
    out["n_external_histories"] = out.get("n_heldout_logs")
    for _, r in per_kind.iterrows():
        for key in ("precision", "recall"):
            v = r[f"{key}_heldout"]
            out[f"doctor_{key}_{r['kind']}"] = None if pd.isna(v) else float(v)
    a = planted.attrs
    out.update(planted_faults=a["faults"], planted_seeds=a["seeds"], planted_named=a["named"],
               planted_helped=a["helped"], planted_random_named=a["random_named"],
               planted_random_helped=a["random_helped"])
    return out


HISTORY_NOTEBOOKS = ("02_stage1", "03_stage2", "04_multi_seed")


def find_histories(run_dir: str | Path, stems: Sequence[str] = HISTORY_NOTEBOOKS) -> dict[str, Path]:
    """history.json files of the notebooks ``stems`` in this run (in JupyterLab, of the latest completed
    run when they have not run interactively; the line printed then says which run); keys are
    ``<stem>/<path inside its folder>``."""
    out: dict[str, Path] = {}
    for stem in stems:
        folder = paths.upstream(run_dir, stem)
        for h in sorted(folder.rglob("history.json")) if folder.is_dir() else []:
            out[f"{stem}/{h.relative_to(folder)}"] = h
    return out


def diagnose_histories(histories: Mapping[str, str | Path]) -> tuple[pd.DataFrame, dict[str, Diagnosis]]:
    """Diagnose many history files; one summary row each (errors reported, not raised)."""
    rows, diags = [], {}
    cols = ["history", "metric", "epochs", "best", "label", "kinds", "plateau_epoch", "overfit_ratio",
            "reduce_lr_epoch", "early_stop_epoch", "top_recommendation"]
    for key, path in histories.items():
        try:
            d = diagnose_history(load_history(path), config=load_run_config(path))
        except WorkbookError as e:
            rows.append({"history": key, "metric": None, "label": "unreadable", "finding": str(e)})
            continue
        diags[key] = d
        top = d.recommendations[0].change if d.recommendations else "—"
        rows.append({"history": key, "metric": d.metric, "epochs": d.summary.get("rows"),
                     "best": d.summary.get("best"), "label": d.label, "kinds": ", ".join(d.kinds),
                     "plateau_epoch": d.summary.get("plateau_epoch"), "overfit_ratio": d.summary.get("overfit_ratio"),
                     "reduce_lr_epoch": _rule_epoch(d, "reduce_lr_on_plateau", "first_cut_epoch"),
                     "early_stop_epoch": _rule_epoch(d, "early_stopping", "stop_epoch"), "top_recommendation": top})
    return pd.DataFrame(rows, columns=cols + (["finding"] if any("finding" in r for r in rows) else [])), diags


def _rule_epoch(d: Diagnosis, rule: str, key: str) -> int | None:
    """Where a Keras rule would act, or None: an unjudged history (too short, no usable monitor) has no rules."""
    return (d.rules.get(rule) or {}).get(key)


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
    if ceiling is not None and math.isfinite(ceiling):
        ax.axhline(ceiling, color="k", lw=1.2, label=f"ceiling {ceiling:.3f}")
    cut = _rule_epoch(diagnosis, "reduce_lr_on_plateau", "first_cut_epoch")
    stop = _rule_epoch(diagnosis, "early_stopping", "stop_epoch")
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
        fig, ax = plt.subplots(figsize=(6, 3.8))
    fig = ax.figure
    used = table[table["used_by_doctor"]]
    ax.plot(used["identities"], used["best_val_cos"], "o-", color="C0", label="probes and baseline (doctor's evidence)")
    ctrl = table[~table["used_by_doctor"]]
    if len(ctrl):
        ax.plot(ctrl["identities"], ctrl["best_val_cos"], "s", color="C3", label="data control (measured afterwards)")
    if ceiling is not None and math.isfinite(ceiling):
        ax.axhline(ceiling, color="k", lw=1.2, label=f"ceiling {ceiling:.3f}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training identities (log scale)")
    ax.set_ylabel("best validation cosine")
    ax.set_title("learning curve")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_followups(runs: Sequence[Run3D], ceiling: float | None = None, ax=None):
    """Validation cosine of the baseline and the follow-up runs, overlaid, with the ceiling."""
    import matplotlib.pyplot as plt  # deferred: plotting is only needed when a notebook draws

    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4))
    fig = ax.figure
    for i, r in enumerate(runs):
        ax.plot(r.history["epoch"], r.history["val_cos"], color=f"C{i}", lw=2 if i == 0 else 1.3,
                label=f"{r.name} (best {r.best_val_cos:.3f})")
    if ceiling is not None and math.isfinite(ceiling):
        ax.axhline(ceiling, color="k", lw=1.2, label=f"ceiling {ceiling:.3f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation cosine similarity")
    ax.set_title("baseline and follow-up runs")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


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
