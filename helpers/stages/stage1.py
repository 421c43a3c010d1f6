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
frames when notebook 01's meta.json counts them (``all_interacting_pairs``).

Scene pairs (JRDB as M0 uses it) also train stage 1 on each input kind of ``scene_inputs`` and form groups
from the kind chosen on validation (`helpers.evaluation.scene_kinds.run_scene_kinds`). The tables, figures
and words are in `helpers.reports.stage1`."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from helpers.core.env import ENV_PROFILE
from helpers.core.errors import WorkbookError
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
from helpers.evaluation.metrics import correct_at, evaluate_binary, make_evaluation_report, with_interval
from helpers.evaluation.scene_kinds import run_scene_kinds, SceneKinds
from helpers.evaluation.recall import evaluate_scene_recall, is_scene
from helpers.evaluation.stats import compare_to_references, interval, Unit, unit_of
from helpers.models.registry import count_parameters, create_model
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask

# What notebook 02 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["run_stage1", "run_stage1_datasets"]


# Level of every paired test in this notebook.
ALPHA = 0.05

BASELINE_LABELS = {
    "svm_compare": "RBF-SVM classifier, then compare",
    "cnn_compare": "small CNN classifier, then compare",
    "1nn": "1-nearest neighbour, raw inputs",
    "logreg": "logistic regression, pair features",
    "lgbm": "LightGBM, pair features",
}

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
    n_test_sequences: int | None = None  # scene data: sequences in the test split
    test_ci: dict = field(default_factory=dict)               # `interval` of stage 1's test correctness
    comparisons: dict[str, dict] = field(default_factory=dict)  # baseline -> {"ci", "test", "p_holm", "verdict"}
    best_baseline: str = ""         # chosen on validation accuracy
    recall: dict | None = None      # scene data: recall on sampled and on all interacting test pairs
    scene: SceneKinds | None = None  # scene data: the input kinds and the groups

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
    write_prediction_file(out, "stage1", val_prob, test_prob, va.y, te.y, threshold=thr)
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
                              threshold=thr, selected_on=b.selected_on)
    return baselines


def evaluate_against_baselines(y_test: np.ndarray, stage1_prob: np.ndarray, baselines: Mapping[str, dict],
                               thr: float, unit: Unit) -> dict[str, dict]:
    """Per baseline: its test accuracy with the unit-aware interval and the paired test of stage 1 minus
    it over ``unit``, p-values Holm-adjusted across the baselines, verdict words from that test."""
    s_correct = correct_at(stage1_prob, y_test, thr)
    refs = {name: correct_at(b["test_prob"], y_test, thr) for name, b in baselines.items()}
    tests = compare_to_references(s_correct, refs, unit, alpha=ALPHA)
    return {name: {"ci": interval(refs[name], unit), "test": tests[name].as_dict("stage 1 better", "stage 1 worse"),
                   "p_holm": tests[name].p_adjusted, "verdict": tests[name].text("stage 1 better", "stage 1 worse")}
            for name in baselines}


def best_on_val(baselines: Mapping[str, dict], y_val: np.ndarray, thr: float, names=None) -> str:
    """The baseline (among ``names``, default all) with the best validation accuracy; never a test figure."""
    names = [n for n in (names or baselines) if n in baselines]
    return names[pick_on_val([baselines[n] for n in names], y_val, thr)] if names else ""


def _recalls(splits, stage1_prob: np.ndarray, baselines: Mapping[str, dict], best: str, thr: float,
             unit: Unit) -> dict | None:
    if not is_scene(splits):
        return None
    out = {"stage 1 model": evaluate_scene_recall(splits, stage1_prob, thr, unit)}
    if best:
        out[f"baseline: {baseline_label(best)}"] = evaluate_scene_recall(splits, baselines[best]["test_prob"], thr, unit)
    return out


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
    if run.scene is not None:
        sk = run.scene
        notes.append("scene input kinds on test (unit-aware 95% CI; verdicts Holm-adjusted over "
                     f"{len(sk.comparisons)} comparisons; chosen on val: {sk.best_kind}):")
        notes += [f"  {k}: accuracy {kr.eval_test['accuracy']:.4f} (95% CI {kr.test_ci['ci_low']:.4f} to "
                  f"{kr.test_ci['ci_high']:.4f}), val {kr.eval_val['accuracy']:.4f}" for k, kr in sk.kinds.items()]
        notes += [f"  {name}: {c['test']['diff']:+.4f}; {c['verdict']}" for name, c in sk.comparisons.items()]
        if sk.groups is not None:
            r = sk.groups["row"]
            notes.append(f"groups ({sk.groups['kind']}, {sk.groups['best']}, threshold {r['threshold']:.2f} from val): "
                         f"PAR F1 {r['par_f1']:.4f}, JRDB-Act AP {r['act_ap']:.4f}; files in groups/")
        notes += [f"note: {n}" for n in sk.notes]
    return notes + run.data_notes


def _write_stage1_files(run: Stage1Run, splits, cfg, params: Mapping[str, Any], device: str) -> None:
    """evaluation_report.txt and config.json (the run card) in the dataset's folder."""
    results = {"stage 1 model, val": run.eval_val, "stage 1 model, test": run.eval_test,
               **{f"baseline {k}, test": with_interval(v["test"], run.comparisons[k]["ci"])
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
    val_ci = interval(correct_at(fit["val_prob"], splits.val.y, thr), unit_of(splits.val))
    return Stage1Run(name=splits.name, kind=splits.kind, generated=splits.generated, source=splits.source,
                     out_dir=out, sizes=_sizes(splits), pos_rates={k: float(np.mean(s.y)) for k, s in splits.items()},
                     data_notes=_data_notes(splits), model_spec=fit["spec"], n_params=count_parameters(model),
                     config=fit["cfg"].to_dict(), history=res.history, best=res.best, epochs_run=res.epochs_run,
                     fit_s=fit["fit_s"], val_y=splits.val.y, test_y=splits.test.y, val_prob=fit["val_prob"],
                     test_prob=fit["test_prob"], eval_val=with_interval(fit["eval_val"], val_ci),
                     eval_test=with_interval(fit["eval_test"], test_ci), baselines=baselines, checkpoints=res.checkpoints,
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
    test_ci = interval(correct_at(fit["test_prob"], splits.test.y, thr), unit)
    run = _make_run(splits, out, fit, baselines, unit, test_ci, thr)
    run.comparisons = evaluate_against_baselines(splits.test.y, fit["test_prob"], baselines, thr, unit)
    run.best_baseline = best_on_val(baselines, splits.val.y, thr)
    if "seq" in (splits.test.extras or {}):
        run.n_test_sequences = int(len(np.unique(splits.test.extras["seq"])))
    run.recall = _recalls(splits, fit["test_prob"], baselines, run.best_baseline, thr, unit)
    if is_scene(splits) and splits.kind == "vector" and _uses_pair(splits):
        run.scene = run_scene_kinds(splits, out, params, fit, baselines, test_ci, device)
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


def baseline_label(name: str) -> str:
    return BASELINE_LABELS.get(name, name)


