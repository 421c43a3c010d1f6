"""Notebook 02 (stage 1): the stage-1 pair model per dataset, against the baselines a reviewer expects on
the same split.

For each dataset: train with the one training loop (checkpoints, ``history.json`` in
``<out>/<dataset>/``) and score val and test at a stated threshold; fit the baselines of
`helpers.evaluation.baselines`, each tuned on the validation split only (classify-then-compare with an
RBF-SVM and a small CNN where the pairs carry per-image classes ``ca``/``cb``; 1-NN on the raw inputs;
logistic regression and LightGBM on pair features); compare stage 1 with each baseline on the test split
by a paired test over the data's independent unit (`unit_of`), Holm-adjusted across the baselines; write
``evaluation_report.txt``, ``config.json`` and one prediction file per model (notebook 05 stacks them,
notebook 03 compares with them). Scene pairs also get recall over all interacting pairs of the test
frames when notebook 01's meta.json counts them (``all_interacting_pairs``)."""
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
from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_write_json, atomic_write_text
from helpers.core.progress import progress
from helpers.core.runcard import make_config
from helpers.data.audit import evaluate_leakage, make_dataset_card
from helpers.data.pairs import _uses_pair, dataset_labels, describe_renamed, make_inputs, open_dataset
from helpers.data.predictions import write_prediction_file
from helpers.evaluation.baselines import (BaselineResult, CNNSettings, make_class_images, make_pair_features,
                                          pick_on_val, train_1nn_compare_baseline, train_1nn_pair_baseline,
                                          train_cnn_compare_baseline, train_lgbm_baseline, train_logreg_baseline,
                                          train_svm_compare_baseline)
from helpers.evaluation.metrics import evaluate_binary, make_evaluation_report
from helpers.evaluation.plots import (plot_confusion_matrix, plot_fusion_weights,
                                      plot_probability_distributions, plot_training_curves)
from helpers.evaluation.stats import Unit, format_p, holm, interval, paired_test, unit_of, verdict
from helpers.models.registry import count_parameters, create_model
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask

# What notebook 02 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_answer", "describe_recall", "describe_summary", "make_baseline_card", "make_data_table",
           "make_display_table", "make_metrics", "make_recall_table", "make_summary_table", "plot_comparison",
           "plot_fusion", "plot_fusion_weights", "plot_test_errors", "plot_training", "run_stage1_datasets"]


# M1, stage 1 (6-way fusion + CBAM, 50 epochs, their 28×28 data): claimed val accuracy.
STAGE1_CLAIM_VAL_ACC = 0.8528

# Level of every paired test in this notebook.
ALPHA = 0.05

BASELINE_LABELS = {
    "svm_compare": "RBF-SVM classifier, then compare",
    "cnn_compare": "small CNN classifier, then compare",
    "1nn": "1-nearest neighbour, raw inputs",
    "logreg": "logistic regression, pair features",
    "lgbm": "LightGBM, pair features",
}
CLASSIFY_COMPARE = ("svm_compare", "cnn_compare")

# Baseline settings a caller may leave out (the notebook declares them all; these are its defaults).
BASELINE_DEFAULTS = {"svm_c_grid": [1.0, 10.0, 100.0], "svm_gamma_grid": [0.25, 0.5, 1.0, 2.0, 4.0],
                     "cnn_epochs": 60, "cnn_layers": [2, 2], "cnn_width_mult": 0.5,
                     "logreg_c_grid": [0.001, 0.01, 0.1, 1.0, 10.0], "lgbm_leaves_grid": [7, 31, 63],
                     "lgbm_lr_grid": [0.03, 0.1], "lgbm_estimators": 400}


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
    eval_test: dict                 # its acc_ci_* are the unit-aware interval (`test_ci`)
    baselines: dict[str, dict] = field(default_factory=dict)   # name -> {"val", "test", "fit_s", "info", ...}
    fusion_weights: dict[str, float] | None = None
    checkpoints: dict[str, str] = field(default_factory=dict)
    has_classes: bool = False       # every split has ca/cb: the classify-then-compare baselines ran
    unit: Unit | None = None        # the test split's independent unit
    test_ci: dict = field(default_factory=dict)               # `interval` of stage 1's test correctness
    comparisons: dict[str, dict] = field(default_factory=dict)  # baseline -> {"ci", "test", "p_holm", "verdict"}
    best_baseline: str = ""         # chosen on validation accuracy
    recall: dict | None = None      # scene data: recall on sampled and on all interacting test pairs

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
    if splits.meta.get("split_method") == "by_source_image":
        writers = (" The 1,797 UCI digits were written by 13 people, so test digits are new images, often in a "
                   "handwriting the training images already show." if splits.meta.get("name") == "digit_pairs" else "")
        notes.append("split by source image: no image is in two splits, but what the images share (their writer, "
                     "their scene) is not kept apart." + writers)
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


def _has_classes(splits) -> bool:
    return all(s.ca is not None and s.cb is not None for _, s in splits.items())


def _setting(params: Mapping[str, Any], key: str) -> Any:
    return params.get(key, BASELINE_DEFAULTS[key])


def _class_images(s):
    return make_class_images(s.xa, s.xb, s.ca, s.cb, s.ida, s.idb)


def _classify_compare_baselines(splits, params: Mapping[str, Any], device: str) -> list[BaselineResult]:
    """RBF-SVM (any input) and small CNN (images only) class classifiers, then compare the two members."""
    tr, va, te = splits.train, splits.val, splits.test
    train_img, val_img = _class_images(tr), _class_images(va)
    vp, tp = (va.xa, va.xb), (te.xa, te.xb)
    out = [train_svm_compare_baseline(train_img, val_img, vp, tp, va.y, _setting(params, "svm_c_grid"),
                                      _setting(params, "svm_gamma_grid"), float(params["threshold"]),
                                      standardize=splits.kind == "vector")]
    if splits.kind == "image":
        cnn = CNNSettings(epochs=int(_setting(params, "cnn_epochs")), layers=list(_setting(params, "cnn_layers")),
                          width_mult=float(_setting(params, "cnn_width_mult")), seed=int(params["seed"]),
                          num_threads=int(params.get("num_threads", 0)))
        out.append(train_cnn_compare_baseline(train_img, val_img, vp, tp, cnn, device))
    return out


def _nn_baseline(splits, use_pair: bool, classes: bool) -> BaselineResult:
    """1-NN on raw inputs: the neighbours' classes where the data has them, else the nearest training pair."""
    tr, va, te = splits.train, splits.val, splits.test
    vector = splits.kind == "vector"                  # vectors mix units: z-scored first
    if classes:
        return train_1nn_compare_baseline(_class_images(tr), (va.xa, va.xb), (te.xa, te.xb), standardize=vector)
    trip = [(s.xa, s.xb, s.extras["pair"] if use_pair else None) for s in (tr, va, te)]
    return train_1nn_pair_baseline(trip[0], tr.y, trip[1], trip[2], standardize=vector)


def _pair_feature_baselines(splits, use_pair: bool, params: Mapping[str, Any]) -> list[BaselineResult]:
    tr, va, te = splits.train, splits.val, splits.test
    thr, seed = float(params["threshold"]), int(params["seed"])
    feats = [make_pair_features(s.xa, s.xb, s.extras.get("pair") if use_pair else None) for s in (tr, va, te)]
    threads = max(1, int(params.get("num_threads", 0)) or 1)
    return [train_logreg_baseline(feats[0], tr.y, feats[1], va.y, feats[2], _setting(params, "logreg_c_grid"),
                                  thr, seed),
            train_lgbm_baseline(feats[0], tr.y, feats[1], va.y, feats[2], int(_setting(params, "lgbm_estimators")),
                                _setting(params, "lgbm_leaves_grid"), _setting(params, "lgbm_lr_grid"), thr, seed,
                                threads)]


def _fit_baselines(splits, use_pair: bool, params: Mapping[str, Any], out: Path, device: str) -> dict[str, dict]:
    """Every baseline on the same split, each tuned on validation only; one prediction file each."""
    va, te = splits.val, splits.test
    thr = float(params["threshold"])
    classes = _has_classes(splits)
    results = (_classify_compare_baselines(splits, params, device) if classes else []) + \
        [_nn_baseline(splits, use_pair, classes)] + _pair_feature_baselines(splits, use_pair, params)
    baselines: dict[str, dict] = {}
    for b in results:
        baselines[b.name] = {"val": evaluate_binary(va.y, b.val_prob, thr),
                             "test": evaluate_binary(te.y, b.test_prob, thr), "fit_s": b.fit_s,
                             "n_features": b.n_features, "info": b.info, "selected_on": b.selected_on,
                             "val_prob": b.val_prob, "test_prob": b.test_prob}
        write_prediction_file(out, f"baseline_{b.name}", b.val_prob, b.test_prob, va.y, te.y,
                              selected_on=b.selected_on)
    return baselines


def _correct(prob: np.ndarray, y: np.ndarray, thr: float) -> np.ndarray:
    return ((np.asarray(prob) >= thr) == (np.asarray(y) == 1)).astype(np.float64)


def evaluate_against_baselines(y_test: np.ndarray, stage1_prob: np.ndarray, baselines: Mapping[str, dict],
                               thr: float, unit: Unit) -> dict[str, dict]:
    """Per baseline: its test accuracy with the unit-aware interval and the paired test of stage 1 minus
    it over ``unit``, p-values Holm-adjusted across the baselines, verdict words from that test."""
    s_correct = _correct(stage1_prob, y_test, thr)
    rows = {}
    for name, b in baselines.items():
        b_correct = _correct(b["test_prob"], y_test, thr)
        test = paired_test(b_correct, s_correct, unit)
        if test["p_value"] == 0 and test.get("p_floor") is None:   # a normal tail below float range: not 0
            test["p_floor"] = 1e-300
        rows[name] = {"ci": interval(b_correct, unit), "test": test}
    for r, p in zip(rows.values(), holm([r["test"]["p_value"] for r in rows.values()])):
        r["p_holm"] = p
        r["verdict"] = verdict({**r["test"], "p_holm": p, "method": f"Holm-adjusted over {len(rows)} baselines"},
                               better="stage 1 better", worse="stage 1 worse", alpha=ALPHA, p_key="p_holm")
    return rows


def best_on_val(baselines: Mapping[str, dict], y_val: np.ndarray, thr: float, names=None) -> str:
    """The baseline (among ``names``, default all) with the best validation accuracy; never a test figure."""
    names = [n for n in (names or baselines) if n in baselines]
    return names[pick_on_val([baselines[n] for n in names], y_val, thr)] if names else ""


def _is_scene(splits) -> bool:
    return "all_interacting_pairs" in splits.meta or splits.meta.get("split_method") == "by_sequence"


def _all_interacting_test(splits, n_sampled: int) -> int | None:
    """meta.json's count of interacting pairs in the test frames before sampling (notebook 01), checked."""
    counts = splits.meta.get("all_interacting_pairs")
    if counts is None:
        return None
    n = counts.get("test") if isinstance(counts, dict) else None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"dataset {splits.name!r}: meta.json 'all_interacting_pairs' = {counts!r}; expected "
                        "{\"train\": n, \"val\": n, \"test\": n} with whole counts >= 0")
    if n < n_sampled:
        raise DataError(f"dataset {splits.name!r}: meta.json 'all_interacting_pairs.test' = {n} is below the "
                        f"{n_sampled} interacting pairs sampled into test_public.npz; expected the count "
                        "before sampling")
    return n


def evaluate_scene_recall(splits, prob: np.ndarray, thr: float, unit: Unit) -> dict | None:
    """Recall of interacting test pairs: over the sampled pairs (unit-aware interval), and over all
    interacting pairs of the test frames when meta.json counts them, the pairs the sampling dropped
    counted as misses. That recall is the sampled one times the share sampled, a fixed number for the
    test frames, so its interval is the sampled interval scaled by it. None for data that is not scenes."""
    if not _is_scene(splits):
        return None
    pos = splits.test.y == 1
    hit = (np.asarray(prob)[pos] >= thr).astype(np.float64)
    sampled = interval(hit, Unit(unit.name, tuple(np.asarray(a)[pos] for a in unit.ids)))
    n_all = _all_interacting_test(splits, int(pos.sum()))
    out = {"n_sampled": int(pos.sum()), "sampled": sampled, "n_all": n_all, "all": None, "share_sampled": None}
    if n_all:
        share = pos.sum() / n_all
        out.update(share_sampled=float(share), all={k: sampled[k] * share for k in ("mean", "ci_low", "ci_high")})
    return out


def _recalls(splits, stage1_prob: np.ndarray, baselines: Mapping[str, dict], best: str, thr: float,
             unit: Unit) -> dict | None:
    if not _is_scene(splits):
        return None
    out = {"stage 1 model": evaluate_scene_recall(splits, stage1_prob, thr, unit)}
    if best:
        out[f"baseline: {_label(best)}"] = evaluate_scene_recall(splits, baselines[best]["test_prob"], thr, unit)
    return out


def _with_ci(ev: dict, ci: dict) -> dict:
    """An `evaluate_binary` result whose accuracy interval is the unit-aware one."""
    return {**ev, "acc_ci_low": ci["ci_low"], "acc_ci_high": ci["ci_high"], "acc_ci_method": ci["method"]}


def _report_notes(run: Stage1Run, cfg) -> list[str]:
    monitor = run.best.get("monitor", {})
    notes = [f"model weights: best val {monitor.get('name', cfg.monitor)} epoch {monitor.get('epoch')} of "
             f"{run.epochs_run} (file best_{_ckpt_key(cfg.monitor)}.pt)",
             f"threshold {run.eval_test['threshold']:.2f} stated in advance (not tuned on test)",
             f"accuracy intervals: test {run.test_ci['method']}; val {run.eval_val['acc_ci_method']}",
             "stage 1 minus each baseline on test (paired over the same unit, Holm-adjusted):"]
    notes += [f"  {k}: {c['test']['diff']:+.4f} (95% CI {c['test']['ci_low']:+.4f} to {c['test']['ci_high']:+.4f}); "
              f"{c['verdict']}" for k, c in run.comparisons.items()]
    notes.append(f"best baseline on validation: {run.best_baseline}")
    return notes + run.data_notes


def _write_stage1_files(run: Stage1Run, splits, cfg, params: Mapping[str, Any], device: str) -> None:
    """evaluation_report.txt and config.json (the run card) in the dataset's folder."""
    results = {"stage 1 model, val": run.eval_val, "stage 1 model, test": run.eval_test,
               **{f"baseline {k}, test": _with_ci(v["test"], run.comparisons[k]["ci"])
                  for k, v in run.baselines.items()}}
    report = make_evaluation_report(f"Stage 1 evaluation: {run.name} ({run.model_spec['name']})", results,
                                    notes=_report_notes(run, cfg))
    # make_evaluation_report labels every accuracy interval "Wilson"; those given to it here are unit-aware.
    atomic_write_text(run.out_dir / "evaluation_report.txt", report.replace(", Wilson)", f", by {run.unit.name})"))
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
                  **cfg.to_dict()},
        **make_baseline_card(run)))


def make_baseline_card(run: Stage1Run) -> dict[str, Any]:
    """The run card's record of one dataset's baselines (settings and the split they were chosen on)
    and of the statistics that ran (unit, interval and test methods, multiple-comparison adjustment)."""
    tests = [c["test"]["method"] for c in run.comparisons.values()]
    return {"baselines": {k: {"selected_on": v["selected_on"], **v["info"]} for k, v in run.baselines.items()},
            "best_baseline_on_val": run.best_baseline,
            "classify_then_compare": "ran" if run.has_classes else "not run: the pair files have no ca/cb classes",
            "statistics": {"unit": run.unit.name, "n_units": run.test_ci["n_units"], "interval": run.test_ci["method"],
                           "paired_test": tests[0] if tests else None, "alpha": ALPHA,
                           "multiple_comparisons": f"Holm over {len(tests)} baselines",
                           "best_baseline_chosen_on": "val accuracy"}}


def _make_run(splits, out: Path, fit: dict, baselines: dict[str, dict], unit: Unit, test_ci: dict,
              thr: float) -> Stage1Run:
    model, res = fit["model"], fit["result"]
    val_ci = interval(_correct(fit["val_prob"], splits.val.y, thr), unit_of(splits.val))
    return Stage1Run(name=splits.name, kind=splits.kind, generated=splits.generated, source=splits.source,
                     out_dir=out, sizes=_sizes(splits), pos_rates={k: float(np.mean(s.y)) for k, s in splits.items()},
                     data_notes=_data_notes(splits), model_spec=fit["spec"], n_params=count_parameters(model),
                     config=fit["cfg"].to_dict(), history=res.history, best=res.best, epochs_run=res.epochs_run,
                     fit_s=fit["fit_s"], val_y=splits.val.y, test_y=splits.test.y, val_prob=fit["val_prob"],
                     test_prob=fit["test_prob"], eval_val=_with_ci(fit["eval_val"], val_ci),
                     eval_test=_with_ci(fit["eval_test"], test_ci), baselines=baselines, checkpoints=res.checkpoints,
                     has_classes=_has_classes(splits), unit=unit, test_ci=test_ci,
                     fusion_weights=model.fusion_weights() if hasattr(model, "fusion_weights") else None)


def run_stage1(dataset: str, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
               device: str = "cpu", label: str | None = None) -> Stage1Run:
    """Train and evaluate stage 1 and the baselines on one dataset; files go to ``out_dir/<name>/``."""
    splits, out, use_pair = open_dataset(dataset, run_dir, out_dir, label)
    _check_both_labels(splits)
    thr = float(params["threshold"])
    fit = _train_stage1(splits, use_pair, params, out, device)
    baselines = _fit_baselines(splits, use_pair, params, out, device)
    unit = unit_of(splits.test)
    test_ci = interval(_correct(fit["test_prob"], splits.test.y, thr), unit)
    run = _make_run(splits, out, fit, baselines, unit, test_ci, thr)
    run.comparisons = evaluate_against_baselines(splits.test.y, fit["test_prob"], baselines, thr, unit)
    run.best_baseline = best_on_val(baselines, splits.val.y, thr)
    run.recall = _recalls(splits, fit["test_prob"], baselines, run.best_baseline, thr, unit)
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
    return {"method": f"baseline: {BASELINE_LABELS.get(name, name)}", "test acc": b["test"]["accuracy"],
            "95% CI low": c["ci"]["ci_low"], "95% CI high": c["ci"]["ci_high"], "stage 1 - method": t["diff"],
            "diff CI low": t["ci_low"], "diff CI high": t["ci_high"], "p (Holm)": c["p_holm"],
            "p (unadjusted)": t["p_value"], "verdict": c["verdict"], "val acc": b["val"]["accuracy"],
            "best on val": name == run.best_baseline, "settings": _settings_text(name, b),
            "test F1": b["test"]["f1"], "test ROC-AUC": b["test"]["roc_auc"], "fit s": b["fit_s"]}


def make_results_table(run: Stage1Run) -> pd.DataFrame:
    """Stage 1 and every baseline on the test split: accuracy with its unit-aware interval, stage 1
    minus the baseline with its paired interval, the Holm-adjusted p and verdict, val accuracy, settings."""
    t, v = run.eval_test, run.eval_val
    rows = [{"method": "stage 1 model", "test acc": t["accuracy"], "95% CI low": t["acc_ci_low"],
             "95% CI high": t["acc_ci_high"], "val acc": v["accuracy"], "best on val": False,
             "settings": f"best val {run.config.get('monitor', '')} epoch of {run.epochs_run}",
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
                   vs_best_baseline_diff=c["test"]["diff"], vs_best_baseline_diff_ci_low=c["test"]["ci_low"],
                   vs_best_baseline_diff_ci_high=c["test"]["ci_high"], vs_best_baseline_p=c["p_holm"],
                   vs_best_baseline_p_unadjusted=c["test"]["p_value"])
    return out


def make_metrics(runs: Mapping[str, Stage1Run]) -> dict[str, dict]:
    """metrics.json content, one block per dataset (flattened to ``<dataset>.<key>``). Accuracy
    intervals and p-values respect the test split's independent unit; ``vs_best_baseline_p`` is the
    Holm-adjusted p of stage 1 against the baseline with the best validation accuracy."""
    out = {}
    for r in runs.values():  # keyed by the dataset name (a folder's name, not its path)
        out[r.name] = {
            "test_acc": r.eval_test["accuracy"], "test_acc_ci_low": r.eval_test["acc_ci_low"],
            "test_acc_ci_high": r.eval_test["acc_ci_high"], "test_acc_ci_method": r.test_ci["method"],
            "test_acc_unit": r.unit.name, "test_acc_n_units": r.test_ci["n_units"], "test_f1": r.eval_test["f1"],
            "test_auc": r.eval_test["roc_auc"], "val_acc": r.eval_val["accuracy"],
            "threshold": r.eval_test["threshold"],
            **_baseline_metrics(r),
            "epochs_run": r.epochs_run, "train_samples_per_s": r.train_samples_per_s, "fit_s": r.fit_s,
            "n_train": r.sizes["train"], "n_test": r.sizes["test"], "n_params": r.n_params,
            "generated": r.generated, "has_classes": r.has_classes, **_recall_metrics(r),
        }
    return out


def _label(name: str) -> str:
    return BASELINE_LABELS.get(name, name)


def describe_run(run: Stage1Run) -> str:
    """Takeaway for one dataset: stage 1 with its interval, the best baseline on validation and the
    paired verdict, then which baselines stage 1 beats, ties and loses to (all from the paired tests)."""
    t, b = run.eval_test, run.best_baseline
    c, bt = run.comparisons[b], run.baselines[b]["test"]
    text = (f"{run.name}: stage-1 test accuracy {t['accuracy']:.4f} (95% CI {t['acc_ci_low']:.4f} to "
            f"{t['acc_ci_high']:.4f}, {run.test_ci['method']}). Best baseline on validation: {_label(b)} "
            f"({_settings_text(b, run.baselines[b])}), test {bt['accuracy']:.4f} (95% CI {c['ci']['ci_low']:.4f} to "
            f"{c['ci']['ci_high']:.4f}); stage 1 minus it {c['test']['diff']:+.4f} (95% CI {c['test']['ci_low']:+.4f} "
            f"to {c['test']['ci_high']:+.4f}): {c['verdict']}.")
    groups = {"better": [], "worse": [], "not distinguishable": []}
    for name, comp in run.comparisons.items():
        key = next(k for k in groups if comp["verdict"].startswith(("stage 1 " + k, k)))
        p = format_p(comp["p_holm"], comp["test"].get("p_floor"))
        groups[key].append(f"{_label(name)} ({comp['test']['diff']:+.4f}, {p})")
    for key, what in (("worse", "Stage 1 is WORSE than"), ("not distinguishable", "Stage 1 is not distinguishable "
                      "from"), ("better", "Stage 1 beats")):
        if groups[key]:
            text += f" {what}: {'; '.join(groups[key])}."
    if not run.has_classes:
        text += (" This data has no per-image classes ('ca'/'cb' in the pair files): the classify-then-compare "
                 "baselines need them and did not run.")
    return text


def describe_summary(runs: Mapping[str, Stage1Run]) -> str:
    lines = []
    for name, r in runs.items():
        if r.kind == "image":
            gap = r.eval_val["accuracy"] - STAGE1_CLAIM_VAL_ACC
            lines.append(f"{name}: val accuracy {r.eval_val['accuracy']:.4f} vs M1's claimed "
                         f"{STAGE1_CLAIM_VAL_ACC:.4f} on its own data ({gap:+.4f}; different data, so a "
                         "reference, not a replication).")
        lines.append(describe_run(r))
    lines.append(f"Verdicts come from paired tests on the test split over each dataset's independent unit (pairs "
                 f"that share an image or a person pair are not independent), Holm-adjusted across the baselines, "
                 f"at alpha {ALPHA:g}; never from overlapping intervals.")
    return "\n".join(lines)


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


def describe_recall(runs: Mapping[str, Stage1Run]) -> str:
    """What the recall figures mean, or why the all-pairs one cannot be computed."""
    lines = []
    for name, run in runs.items():
        if not run.recall:
            continue
        r = run.recall["stage 1 model"]
        s = r["sampled"]
        head = (f"{name}: stage-1 recall {s['mean']:.4f} (95% CI {s['ci_low']:.4f} to {s['ci_high']:.4f}) on the "
                f"{r['n_sampled']:,} interacting test pairs notebook 01 sampled")
        if r["all"] is None:
            lines.append(head + "; meta.json has no 'all_interacting_pairs', so recall over all interacting pairs "
                                "of the test frames cannot be computed: this figure ignores the pairs the sampling "
                                "dropped.")
            continue
        a = r["all"]
        lines.append(head + f"; over all {r['n_all']:,} interacting pairs of the test frames (the "
                            f"{r['n_all'] - r['n_sampled']:,} the sampling dropped counted as misses) it is "
                            f"{a['mean']:.4f} (95% CI {a['ci_low']:.4f} to {a['ci_high']:.4f}): the sampling kept "
                            f"{r['share_sampled']:.1%} of them, and no model can find a pair it never sees.")
    return "\n".join(lines) or "No dataset here is scene data: recall over all interacting pairs does not apply."


def _answer_sentence(run: Stage1Run) -> str:
    t, b = run.eval_test, run.best_baseline
    c = run.comparisons[b]
    return (f"On {run.name}{' (generated)' if run.generated else ''}, stage 1 scores {t['accuracy']:.3f} test "
            f"accuracy (95% CI {t['acc_ci_low']:.3f} to {t['acc_ci_high']:.3f}, intervals over "
            f"{run.test_ci['n_units']:,} {run.unit.name}s) against {run.baselines[b]['test']['accuracy']:.3f} for "
            f"the best baseline chosen on validation, {_label(b)}: {c['test']['diff']:+.3f} (95% CI "
            f"{c['test']['ci_low']:+.3f} to {c['test']['ci_high']:+.3f}), {c['verdict'].split('; ')[0]}, "
            f"Holm-adjusted over {len(run.comparisons)} baselines).")


def _answer_caveat(runs: Mapping[str, Stage1Run]) -> str:
    """One closing sentence: scene recall over all pairs where counted, else which baselines could not run."""
    for run in runs.values():
        r = (run.recall or {}).get("stage 1 model")
        if r and r["all"]:
            return (f"Counting the interacting pairs the sampling dropped as misses, stage-1 recall on {run.name} "
                    f"falls from {r['sampled']['mean']:.3f} to {r['all']['mean']:.3f}.")
        if r:
            return (f"Recall over all interacting pairs of {run.name} cannot be computed (meta.json has no "
                    f"'all_interacting_pairs'); the sampled-pair recall is {r['sampled']['mean']:.3f}.")
    missing = [n for n, r in runs.items() if not r.has_classes]
    return (f"{', '.join(missing)} {'has' if len(missing) == 1 else 'have'} no per-image classes, so the "
            "classify-then-compare baselines did not run there." if missing else "")


def describe_answer(runs: Mapping[str, Stage1Run]) -> tuple[str, dict[str, Any]]:
    """The notebook's answer (a sentence per dataset and one caveat) and its two or three headline numbers."""
    text = " ".join(s for s in [*(_answer_sentence(r) for r in runs.values()), _answer_caveat(runs)] if s)
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
        ax.set_yticks(ypos, [_label(n) + (" (* best on val)" if n == run.best_baseline else "") for n in names],
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
