"""Notebook 07: the 3D plateau: the baseline run, the curve doctor's findings, the follow-up runs (the tables,
figures and words are made from these results in `helpers.reports.plateau`)."""
from __future__ import annotations

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
from helpers.evaluation.doctor import (diagnose_history, Diagnosis, evaluate_synthetic_set, load_history,
                                       load_run_config, make_synthetic_history, Recommendation)
from helpers.models.registry import create_model
from helpers.models.transformer3d import Transformer3D
from helpers.training.loop import evaluate_model, train_model
from helpers.training.recipes import make_note004_train_config as make_train_config
from helpers.training.tasks import RegressionTask

# What notebook 07 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["RUN_KEYS", "diagnose_histories", "diagnose_history", "evaluate_ceiling", "evaluate_synthetic_set",
           "find_histories", "learning_curve_points", "load_multiview_data", "make_before_after_table",
           "make_doctor_metrics", "make_learning_curve_table", "make_train_config", "make_training_subset",
           "make_transformer3d", "runnable_followups", "summarize_followups", "train_data_control",
           "train_followups", "train_learning_curve", "train_transformer3d", "write_foreign_histories"]


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


def runnable_followups(diagnosis: Diagnosis, base: Mapping[str, Any], n: int) -> list[Recommendation]:
    """The first ``n`` recommendations that change a model or training flag of ``base`` (the others advise
    on judging or on data, which a follow-up run with other flags cannot test)."""
    recs = []
    for rec in diagnosis.recommendations:
        changes = {k: v for k, v in rec.params.items() if k in base}
        if changes and any(base[k] != v for k, v in changes.items()):
            recs.append(rec)
    return recs[:max(0, int(n))]


def train_followups(data: MultiViewData, base: Mapping[str, Any], diagnosis: Diagnosis, n: int,
                    out_dir: str | Path, device: str = "cpu", seed: int = 42, num_threads: int = 0,
                    max_epochs: int | None = None) -> list[Run3D]:
    """Run `runnable_followups` (the top ``n`` recommendations that change a flag), each in ``out_dir/<name>/``
    with its config.json and history.json; the progress bar counts those runs, so it ends at 100%."""
    recs = runnable_followups(diagnosis, base, n)
    runs = []
    for rec in progress(recs, "follow-up runs", total=len(recs)):
        p = make_followup_params(base, {k: v for k, v in rec.params.items() if k in base}, max_epochs)
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
                     "reduce_lr_epoch": rule_epoch(d, "reduce_lr_on_plateau", "first_cut_epoch"),
                     "early_stop_epoch": rule_epoch(d, "early_stopping", "stop_epoch"), "top_recommendation": top})
    return pd.DataFrame(rows, columns=cols + (["finding"] if any("finding" in r for r in rows) else [])), diags


def rule_epoch(d: Diagnosis, rule: str, key: str) -> int | None:
    """Where a Keras rule would act, or None: an unjudged history (too short, no usable monitor) has no rules."""
    return (d.rules.get(rule) or {}).get(key)


