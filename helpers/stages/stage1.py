"""Notebook 02 (stage 1): the stage-1 pair model per dataset, next to simple baselines on the same split.

For each dataset: train with the one training loop (checkpoints, ``history.json`` in
``<out>/<dataset>/``), score val and test at a stated threshold with a 95% interval, train the
logistic-regression and LightGBM baselines on the same split, write ``evaluation_report.txt``,
``config.json`` and the prediction files notebook 05 stacks."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from helpers.core.env import ENV_PROFILE
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_json, atomic_write_text
from helpers.core.progress import progress
from helpers.core.runcard import make_config
from helpers.data.audit import evaluate_leakage, make_dataset_card
from helpers.data.pairs import _uses_pair, dataset_labels, describe_renamed, make_inputs, open_dataset
from helpers.data.predictions import write_prediction_file
from helpers.evaluation.baselines import make_pair_features, train_lgbm_baseline, train_logreg_baseline
from helpers.evaluation.metrics import evaluate_binary, make_evaluation_report
from helpers.evaluation.plots import (plot_confusion_matrix, plot_fusion_weights,
                                      plot_probability_distributions, plot_training_curves)
from helpers.models.registry import count_parameters, create_model
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask

# What notebook 02 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_summary", "make_data_table", "make_metrics", "make_summary_table", "plot_fusion_weights",
           "plot_test_errors", "plot_training", "run_stage1_datasets"]



# M1, stage 1 (6-way fusion + CBAM, 50 epochs, their 28×28 data): claimed val accuracy.
STAGE1_CLAIM_VAL_ACC = 0.8528


@dataclass
class Stage1Run:
    """Everything notebook 02 shows and writes for one dataset."""
    name: str
    kind: str                       # image | vector
    generated: bool
    source: str
    out_dir: Path
    sizes: dict[str, int]
    pos_rates: dict[str, float]
    data_notes: list[str]
    model_spec: dict
    n_params: int
    config: dict
    history: list[dict]
    best: dict
    epochs_run: int
    fit_s: float
    val_y: np.ndarray
    test_y: np.ndarray
    val_prob: np.ndarray
    test_prob: np.ndarray
    eval_val: dict
    eval_test: dict
    baselines: dict[str, dict] = field(default_factory=dict)   # name -> {"val": ..., "test": ..., "fit_s", ...}
    fusion_weights: dict[str, float] | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)

    @property
    def train_samples_per_s(self) -> float:
        return train_samples_per_s(self.history)


def make_stage1_model_spec(splits, params: Mapping[str, Any]) -> dict:
    """M1 stage 1 for image pairs (ResNet ``layers`` + CBAM + adaptive 6-way fusion); for
    vector pairs the MLP encoder with the same fusion (and pair features when present)."""
    if splits.kind == "image":
        return {"name": "stage1_fusion_cbam",
                "kwargs": {"in_channels": int(splits.train.xa.shape[1]), "layers": list(params["layers"]),
                           "width_mult": float(params["width_mult"]), "feat_dim": int(params["feat_dim"])}}
    kw = {"in_features": int(np.prod(splits.train.xa.shape[1:])), "hidden": list(params["mlp_hidden"]),
          "feat_dim": int(params["feat_dim"]), "fusion": "adaptive"}
    if _uses_pair(splits):
        kw["pair_dim"] = int(splits.train.extras["pair"].shape[1])
    return {"name": "siamese_mlp", "kwargs": kw}


def _data_notes(splits) -> list[str]:
    notes = [f"{'GENERATED data' if splits.generated else 'data'}: {splits.source}"]
    spp = splits.meta.get("sources_per_split") if isinstance(splits.meta, dict) else None
    if spp:
        notes.append("source images per split: " + ", ".join(f"{k} {v}" for k, v in spp.items())
                     + " (fewer training images make the task harder; set by notebook 00's train_sources)")
    return notes


def _sizes(splits) -> dict[str, int]:
    return {k: len(s) for k, s in splits.items()}


def _check_both_labels(splits) -> None:
    for split, s in splits.items():
        if len(np.unique(s.y)) < 2:
            raise WorkbookError(f"dataset {splits.name!r}: the {split} split has only label {int(s.y[0])}; "
                                "a binary pair task needs both 0 and 1")


def _train_stage1(splits, use_pair: bool, params: Mapping[str, Any], out: Path, device: str) -> dict:
    """Train the stage-1 model; score val and test with the weights of its best validation epoch."""
    tr, va, te = splits.train, splits.val, splits.test
    thr = float(params["threshold"])
    spec = make_stage1_model_spec(splits, params)
    torch.manual_seed(int(params["seed"]))
    model = create_model(spec["name"], **spec["kwargs"])
    task = BinaryTask(loss_name="bce", threshold=thr)
    cfg = make_train_config(params, splits.kind)
    t0 = time.perf_counter()
    res = train_model(model, task, (*make_inputs(tr, use_pair), tr.y), (*make_inputs(va, use_pair), va.y),
                      cfg, out_dir=out, device=device)
    fit_s = time.perf_counter() - t0
    # The model now holds the best-`monitor` weights (the best_<monitor>.pt checkpoint).
    val_prob = predict(model, task, make_inputs(va, use_pair), device=device).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, use_pair), device=device).astype(np.float64)
    write_prediction_file(out, "stage1", val_prob, test_prob, va.y, te.y)
    return {"spec": spec, "model": model, "cfg": cfg, "result": res, "fit_s": fit_s, "val_prob": val_prob,
            "test_prob": test_prob, "eval_val": evaluate_binary(va.y, val_prob, thr),
            "eval_test": evaluate_binary(te.y, test_prob, thr)}


def _fit_baselines(splits, use_pair: bool, params: Mapping[str, Any], out: Path) -> dict[str, dict]:
    """Logistic regression and LightGBM on hand-made symmetric pair features, on the same split."""
    tr, va, te = splits.train, splits.val, splits.test
    thr, seed = float(params["threshold"]), int(params["seed"])
    feats = [make_pair_features(s.xa, s.xb, s.extras.get("pair") if use_pair else None) for s in (tr, va, te)]
    threads = max(1, int(params.get("num_threads", 0)) or 1)
    baselines: dict[str, dict] = {}
    for b in (train_logreg_baseline(feats[0], tr.y, feats[1], feats[2], seed=seed),
              train_lgbm_baseline(feats[0], tr.y, feats[1], va.y, feats[2], n_estimators=int(params["lgbm_estimators"]),
                                  seed=seed, num_threads=threads)):
        baselines[b.name] = {"val": evaluate_binary(va.y, b.val_prob, thr), "test": evaluate_binary(te.y, b.test_prob, thr),
                             "fit_s": b.fit_s, "n_features": b.n_features, "info": b.info,
                             "val_prob": b.val_prob, "test_prob": b.test_prob}
        write_prediction_file(out, f"baseline_{b.name}", b.val_prob, b.test_prob, va.y, te.y)
    return baselines


def _write_stage1_files(run: Stage1Run, splits, cfg, params: Mapping[str, Any], device: str) -> None:
    """evaluation_report.txt and config.json (the run card) in the dataset's folder."""
    monitor = run.best.get("monitor", {})
    report = make_evaluation_report(
        f"Stage 1 evaluation: {run.name} ({run.model_spec['name']})",
        {"stage 1 model, val": run.eval_val, "stage 1 model, test": run.eval_test,
         **{f"baseline {k}, test": v["test"] for k, v in run.baselines.items()}},
        notes=[f"model weights: best val {monitor.get('name', cfg.monitor)} epoch {monitor.get('epoch')} of "
               f"{run.epochs_run} (file best_{_ckpt_key(cfg.monitor)}.pt)",
               f"threshold {run.eval_test['threshold']:.2f} stated in advance (not tuned on test)", *run.data_notes])
    atomic_write_text(run.out_dir / "evaluation_report.txt", report)
    atomic_write_json(run.out_dir / "config.json", make_config(
        notebook="02_stage1", description=f"Stage 1 pair model on {run.name} (stage 1 of docs/method.md)",
        params=dict(params), out_dir=str(run.out_dir), profile=os.environ.get(ENV_PROFILE, "interactive"),
        device=str(device), dataset=make_dataset_card(splits, evaluate_leakage(splits)),
        model={"architecture": run.model_spec["name"], "kwargs": run.model_spec["kwargs"], "parameters": run.n_params,
               "pretrained": False, "task": "binary", "output_dim": 1},
        training={"loss_function": "BCEWithLogits", "optimizer": "AdamW",
                  "optimizer_params": {"lr": cfg.lr, "weight_decay": cfg.weight_decay},
                  "scheduler": cfg.scheduler, "scheduler_params": {"warmup_lr": cfg.warmup_lr, "eta_min": cfg.eta_min},
                  "effective_batch_size": cfg.batch_size * cfg.grad_accum_steps, "workers": 0,
                  **cfg.to_dict()}))


def run_stage1(dataset: str, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
               device: str = "cpu", label: str | None = None) -> Stage1Run:
    """Train and evaluate stage 1 and the baselines on one dataset; files go to ``out_dir/<name>/``."""
    splits, out, use_pair = open_dataset(dataset, run_dir, out_dir, label)
    _check_both_labels(splits)
    fit = _train_stage1(splits, use_pair, params, out, device)
    baselines = _fit_baselines(splits, use_pair, params, out)
    model, res = fit["model"], fit["result"]
    run = Stage1Run(name=splits.name, kind=splits.kind, generated=splits.generated, source=splits.source,
                    out_dir=out, sizes=_sizes(splits), pos_rates={k: float(np.mean(s.y)) for k, s in splits.items()},
                    data_notes=_data_notes(splits), model_spec=fit["spec"], n_params=count_parameters(model),
                    config=fit["cfg"].to_dict(), history=res.history, best=res.best, epochs_run=res.epochs_run,
                    fit_s=fit["fit_s"], val_y=splits.val.y, test_y=splits.test.y, val_prob=fit["val_prob"],
                    test_prob=fit["test_prob"], eval_val=fit["eval_val"], eval_test=fit["eval_test"],
                    baselines=baselines, checkpoints=res.checkpoints,
                    fusion_weights=model.fusion_weights() if hasattr(model, "fusion_weights") else None)
    _write_stage1_files(run, splits, fit["cfg"], params, device)
    return run


def run_stage1_datasets(datasets, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
                        device: str = "cpu") -> dict[str, Stage1Run]:
    """`run_stage1` for every dataset, keyed by the dataset's name (a folder's name, not its path)."""
    labels = dataset_labels(list(datasets))     # safe, unique folder names: two folders called x stay apart
    for line in describe_renamed(list(datasets), labels):
        print(line)
    pairs = list(zip(datasets, labels))
    runs = [run_stage1(d, run_dir, out_dir, params, device, label) for d, label in progress(pairs, "stage 1 datasets")]
    return {r.name: r for r in runs}


def _ckpt_key(monitor: str) -> str:
    return monitor.removeprefix("val_")


def make_data_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """Pairs and positive rate per dataset and split, with where the data comes from."""
    rows = [{"dataset": name, "split": split, "pairs": n, "positive rate": r.pos_rates[split],
             "data": "; ".join(r.data_notes) if split == "train" else ""}
            for name, r in runs.items() for split, n in r.sizes.items()]
    return pd.DataFrame(rows).set_index(["dataset", "split"])


def make_results_table(run: Stage1Run) -> pd.DataFrame:
    """Test accuracy with its 95% interval, F1, ROC-AUC and val accuracy per method."""
    rows = [("stage 1 model", run.eval_val, run.eval_test, run.fit_s)]
    rows += [(f"baseline: {k}", v["val"], v["test"], v["fit_s"]) for k, v in run.baselines.items()]
    return pd.DataFrame([{"method": m, "test acc": t["accuracy"], "95% CI low": t["acc_ci_low"],
                          "95% CI high": t["acc_ci_high"], "test F1": t["f1"], "test ROC-AUC": t["roc_auc"],
                          "val acc": v["accuracy"], "fit s": s} for m, v, t, s in rows]).set_index("method")


def make_summary_table(runs: Mapping[str, Stage1Run]) -> pd.DataFrame:
    """All datasets and methods in one table (the reference figure of the method notes is in
    `describe_summary`, not a row: it was measured on other data)."""
    frames = []
    for name, run in runs.items():
        t = make_results_table(run).reset_index()
        t.insert(0, "dataset", name + (" (generated)" if run.generated else ""))
        frames.append(t)
    return pd.concat(frames, ignore_index=True).set_index(["dataset", "method"])


def make_metrics(runs: Mapping[str, Stage1Run]) -> dict[str, dict]:
    """metrics.json content, one block per dataset (flattened to ``<dataset>.<key>``)."""
    out = {}
    for r in runs.values():  # keyed by the dataset name (a folder's name, not its path)
        out[r.name] = {
            "test_acc": r.eval_test["accuracy"], "test_acc_ci_low": r.eval_test["acc_ci_low"],
            "test_acc_ci_high": r.eval_test["acc_ci_high"], "test_f1": r.eval_test["f1"],
            "test_auc": r.eval_test["roc_auc"], "val_acc": r.eval_val["accuracy"], "threshold": r.eval_test["threshold"],
            "baseline_logreg_acc": r.baselines["logreg"]["test"]["accuracy"],
            "baseline_lgbm_acc": r.baselines["lgbm"]["test"]["accuracy"],
            "epochs_run": r.epochs_run, "train_samples_per_s": r.train_samples_per_s, "fit_s": r.fit_s,
            "n_train": r.sizes["train"], "n_test": r.sizes["test"], "n_params": r.n_params,
            "generated": r.generated,
        }
    return out


def describe_run(run: Stage1Run) -> str:
    """One-line takeaway computed from the results."""
    t = run.eval_test
    best_b = max(run.baselines.items(), key=lambda kv: kv[1]["test"]["accuracy"])
    bt = best_b[1]["test"]
    overlap = not (t["acc_ci_low"] > bt["acc_ci_high"] or bt["acc_ci_low"] > t["acc_ci_high"])
    diff = t["accuracy"] - bt["accuracy"]
    verdict = ("the intervals overlap: not clearly different" if overlap else
               ("clearly better" if diff > 0 else "clearly WORSE"))
    return (f"{run.name}: stage-1 test accuracy {t['accuracy']:.3f} (95% CI {t['acc_ci_low']:.3f}–"
            f"{t['acc_ci_high']:.3f}) vs best baseline {best_b[0]} {bt['accuracy']:.3f} "
            f"({diff:+.3f}; {verdict}); {run.epochs_run} epochs, {run.train_samples_per_s:.0f} samples/s.")


def describe_summary(runs: Mapping[str, Stage1Run]) -> str:
    lines = []
    for name, r in runs.items():
        if r.kind == "image":
            gap = r.eval_val["accuracy"] - STAGE1_CLAIM_VAL_ACC
            lines.append(f"{name}: val accuracy {r.eval_val['accuracy']:.4f} vs M1's claimed "
                         f"{STAGE1_CLAIM_VAL_ACC:.4f} on its own data ({gap:+.4f}; different data, so a "
                         "reference, not a replication).")
        lines.append(describe_run(r))
    return "\n".join(lines)


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
