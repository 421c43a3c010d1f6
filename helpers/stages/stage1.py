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

Scene pairs (JRDB as M0 uses it) also train stage 1 on each input kind of ``scene_inputs``
(`helpers.data.crops.INPUT_KINDS`): ``geometry`` is the stage-1 model above (cue vectors and pair
geometry, MLP encoder); ``appearance`` a siamese CNN on the two people's crops (``siamese_crops``);
``both`` the crops fused with the pair geometry. The scenes are loaded again from the folder's meta.json
(``scene_source``) and checked against the pair files; crops come from the crop cache. The kinds are
compared on the test split by paired tests over person pairs (Holm-adjusted, with the tuned LightGBM
baseline in the same family), the best kind is chosen on validation, and its probabilities for every
same-frame candidate pair of the validation and test frames form groups, scored with PAR's group F1 and
JRDB-Act's AP (``<out>/scene_pairs/groups/``)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
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
from helpers.data.crops import (check_scene_split, INPUT_KINDS, load_pair_scenes, make_candidate_split,
                                make_pair_crops, make_scene_inputs, PairCrops)
from helpers.data.pairs import _uses_pair, dataset_labels, describe_renamed, make_inputs, open_dataset
from helpers.data.predictions import write_prediction_file
from helpers.evaluation.baselines import (BaselineResult, CNNSettings, make_class_images, make_pair_features,
                                          pick_on_val, train_1nn_compare_baseline, train_1nn_pair_baseline,
                                          train_cnn_compare_baseline, train_lgbm_baseline, train_logreg_baseline,
                                          train_svm_compare_baseline)
from helpers.evaluation.groups import evaluate_groups, make_pair_scores, SIZE_CLASSES
from helpers.evaluation.metrics import evaluate_binary, make_evaluation_report
from helpers.evaluation.recall import evaluate_scene_recall, is_scene
from helpers.evaluation.plots import (plot_confusion_matrix, plot_fusion_weights,
                                      plot_probability_distributions, plot_training_curves)
from helpers.evaluation.stats import (compare, compare_to_references, format_p, interval, MIN_SEQUENCES, Unit,
                                      unit_of)
from helpers.models.registry import count_parameters, create_model
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask
from helpers.stages.words import markdown, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 02 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_answer", "describe_groups", "describe_kinds", "describe_recall", "describe_summary",
           "make_baseline_card", "make_data_table", "make_display_table", "make_groups_table", "make_kinds_card",
           "make_kinds_table", "make_metrics", "make_recall_table", "make_summary_table", "plot_comparison",
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


# Scene settings a caller may leave out (the notebook declares them all; these are its defaults).
SCENE_DEFAULTS = {"scene_inputs": list(INPUT_KINDS), "crop_size": [64, 32], "crop_epochs": 0, "crop_layers": [1, 1, 1],
                  "crop_width_mult": 0.125, "crop_stem_stride": 2, "crop_backbone": "", "crop_backbone_weights": ""}

KIND_LABELS = {"geometry": "geometry: person cues + pair geometry (MLP)",
               "appearance": "appearance: the two people's crops (siamese CNN)",
               "both": "both: crops + pair geometry"}

# SPDP-Net (ECCV 2024) on real JRDB: group detection at IoU 0.5, and its ablation's single cues. On
# generated scenes these are context, never a target: the data differ.
SPDP_NET = {"group_iou50": 56.4, "distance_over_time_only": 55.8, "appearance_only": 37.6}


@dataclass
class KindRun:
    """Stage 1 trained on one input kind of the scene pairs (the geometry kind is the main stage-1 run)."""
    kind: str
    model_spec: dict
    n_params: int
    history: list[dict]
    epochs_run: int
    fit_s: float
    val_prob: np.ndarray
    test_prob: np.ndarray
    eval_val: dict
    eval_test: dict
    test_ci: dict                   # unit-aware interval of test correctness
    out_dir: Path
    model: Any = field(default=None, repr=False)   # the trained model (best validation epoch)

    @property
    def train_samples_per_s(self) -> float:
        return train_samples_per_s(self.history)


@dataclass
class SceneKinds:
    """What notebook 02 shows for scene pairs beyond stage 1: the input kinds side by side, their paired
    comparisons, the kind chosen on validation, and the groups formed from its probabilities."""
    requested: list[str]
    kinds: dict[str, KindRun]
    notes: list[str]                # why a kind or the groups did not run, where the scenes came from
    comparisons: dict[str, dict] = field(default_factory=dict)  # "b - a" -> {"a", "b", "test", "p_holm", "verdict"}
    best_kind: str = "geometry"
    groups: dict | None = None      # evaluate_groups' result with the candidate pairs it used
    n_images: int = 0
    crop_size: list[int] | None = None
    crops: dict = field(default_factory=dict)   # n_crops, n_decoded, seconds (building or reading the cache)
    seconds: dict = field(default_factory=dict)  # wall time of each step beyond the stage-1 run


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


def _correct(prob: np.ndarray, y: np.ndarray, thr: float) -> np.ndarray:
    return ((np.asarray(prob) >= thr) == (np.asarray(y) == 1)).astype(np.float64)


def evaluate_against_baselines(y_test: np.ndarray, stage1_prob: np.ndarray, baselines: Mapping[str, dict],
                               thr: float, unit: Unit) -> dict[str, dict]:
    """Per baseline: its test accuracy with the unit-aware interval and the paired test of stage 1 minus
    it over ``unit``, p-values Holm-adjusted across the baselines, verdict words from that test."""
    s_correct = _correct(stage1_prob, y_test, thr)
    refs = {name: _correct(b["test_prob"], y_test, thr) for name, b in baselines.items()}
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
        out[f"baseline: {_label(best)}"] = evaluate_scene_recall(splits, baselines[best]["test_prob"], thr, unit)
    return out


# ------------------------------------------------------------------ scene pairs: input kinds and groups
def _scene_setting(params: Mapping[str, Any], key: str) -> Any:
    return params.get(key, SCENE_DEFAULTS[key])


def make_crop_model_spec(params: Mapping[str, Any], kind: str, pair_dim: int = 0) -> dict:
    """The stage-1 crop model of an input kind: ``siamese_crops`` on ``crop_size`` crops (the small
    residual CNN, or ``crop_backbone`` from timm with its local weights), fusing ``pair_dim`` pair-geometry
    features for ``both``; a horizontal flip per crop in training when ``augment``."""
    if kind not in ("appearance", "both"):
        raise WorkbookError(f"input kind {kind!r}: a crop model is built for appearance or both")
    kw: dict[str, Any] = {"crop_size": list(_scene_setting(params, "crop_size")), "feat_dim": int(params["feat_dim"]),
                          "fusion": "adaptive", "pair_dim": int(pair_dim) if kind == "both" else 0,
                          "flip": bool(params.get("augment", True))}
    if _scene_setting(params, "crop_backbone"):
        kw.update(backbone=str(_scene_setting(params, "crop_backbone")),
                  weights_file=str(_scene_setting(params, "crop_backbone_weights")))
    else:
        kw.update(layers=list(_scene_setting(params, "crop_layers")),
                  width_mult=float(_scene_setting(params, "crop_width_mult")),
                  stem_stride=int(_scene_setting(params, "crop_stem_stride")))
    return {"name": "siamese_crops", "kwargs": kw}


def make_crop_train_config(params: Mapping[str, Any]):
    """The crop models' TrainConfig: notebook 02's settings with ``crop_epochs`` (their flip is in the model);
    ``crop_epochs`` 0 keeps ``epochs``, so every input kind trains under the same budget and stopping rule."""
    epochs = int(_scene_setting(params, "crop_epochs")) or int(params["epochs"])
    return make_train_config(params, "vector", epochs=epochs)


def _geometry_kind(fit: dict, out: Path, test_ci: dict) -> KindRun:
    res = fit["result"]
    return KindRun("geometry", fit["spec"], count_parameters(fit["model"]), res.history, res.epochs_run, fit["fit_s"],
                   fit["val_prob"], fit["test_prob"], fit["eval_val"], fit["eval_test"], test_ci, out, fit["model"])


def train_crop_kind(kind: str, splits, crops: PairCrops, params: Mapping[str, Any], out: Path,
                    device: str) -> KindRun:
    """Train stage 1 on one crop kind (``<out>/<kind>/``: checkpoints, history.json) and score val and test
    with its best validation epoch; writes ``predictions/stage1_<kind>.npz`` for notebook 05."""
    tr, va, te = splits.train, splits.val, splits.test
    thr = float(params["threshold"])
    spec = make_crop_model_spec(params, kind, int(tr.extras["pair"].shape[1]))
    torch.manual_seed(int(params["seed"]))
    model = create_model(spec["name"], **spec["kwargs"]).set_crops(crops.crops)
    task = BinaryTask(loss_name="bce", threshold=thr)
    inputs = {k: make_scene_inputs(kind, s, crops.rows[k]) for k, s in splits.items()}
    t0 = time.perf_counter()
    res = train_model(model, task, (*inputs["train"], tr.y), (*inputs["val"], va.y), make_crop_train_config(params),
                      out_dir=out / kind, device=device)
    fit_s = time.perf_counter() - t0
    val_prob = predict(model, task, inputs["val"], device=device).astype(np.float64)
    test_prob = predict(model, task, inputs["test"], device=device).astype(np.float64)
    write_prediction_file(out, f"stage1_{kind}", val_prob, test_prob, va.y, te.y, threshold=thr)
    ev_val, ev_test = evaluate_binary(va.y, val_prob, thr), evaluate_binary(te.y, test_prob, thr)
    test_ci = interval(_correct(test_prob, te.y, thr), unit_of(te))
    val_ci = interval(_correct(val_prob, va.y, thr), unit_of(va))
    return KindRun(kind, spec, count_parameters(model), res.history, res.epochs_run, fit_s, val_prob, test_prob,
                   _with_ci(ev_val, val_ci), _with_ci(ev_test, test_ci), test_ci, out / kind, model)


def evaluate_kinds(kinds: Mapping[str, KindRun], y_test: np.ndarray, baselines: Mapping[str, dict], thr: float,
                   unit: Unit, against: str = "lgbm") -> dict[str, dict]:
    """Paired tests on the test split over ``unit``: each later kind minus each earlier one (appearance -
    geometry, both - geometry, both - appearance) and every kind minus the ``against`` baseline, all
    Holm-adjusted as one family; verdict words from those tests."""
    correct = {k: _correct(r.test_prob, y_test, thr) for k, r in kinds.items()}
    names = list(kinds)
    pairs = [(names[j], names[i]) for i in range(len(names)) for j in range(i + 1, len(names))]
    if against in baselines:
        correct[against] = _correct(baselines[against]["test_prob"], y_test, thr)
        pairs += [(k, against) for k in names]
    tests = compare({f"{b} - {a}": (correct[a], correct[b]) for b, a in pairs}, unit, alpha=ALPHA)
    return {key: {"a": a, "b": b, "test": tests[key].as_dict(f"{b} better", f"{b} worse"),
                  "p_holm": tests[key].p_adjusted, "verdict": tests[key].text(f"{b} better", f"{b} worse")}
            for key, (b, a) in zip(tests, pairs)}


def _best_kind(kinds: Mapping[str, KindRun]) -> str:
    """The kind with the best validation accuracy (the first of equals, in INPUT_KINDS order)."""
    return max(kinds, key=lambda k: (kinds[k].eval_val["accuracy"], -INPUT_KINDS.index(k)))


def _requested_kinds(params: Mapping[str, Any]) -> list[str]:
    kinds = list(_scene_setting(params, "scene_inputs"))
    bad = [k for k in kinds if k not in INPUT_KINDS]
    if bad:
        raise WorkbookError(f"scene_inputs = {kinds}: {bad} not among {'|'.join(INPUT_KINDS)}")
    return [k for k in INPUT_KINDS if k in kinds or k == "geometry"]


def _candidate_splits(splits, scenes, notes: list[str]) -> dict[str, dict] | None:
    """Every same-frame candidate pair of the validation and test frames, or None (with a note) where the
    groups cannot be formed from them."""
    settings = splits.meta.get("settings") or {}
    if splits.meta.get("split_method") != "by_sequence":
        notes.append("groups not formed: the split is by frame blocks, so validation and test share sequences, and "
                     "the group scoring takes whole sequences")
        return None
    if "distance_multiplier" not in settings:
        notes.append("groups not formed: meta.json has no sampling 'settings' (the distance rule that makes the "
                     "candidate pairs)")
        return None
    return {f"candidates_{k}": make_candidate_split(scenes, np.unique(s.extras["seq"]).tolist(),
                                                    float(settings["distance_multiplier"]),
                                                    bool(settings.get("use_wrap", True)))
            for k, s in (("val", splits.val), ("test", splits.test))}


def _small_group_ids(scenes):
    """The scenes with group ids renumbered 0..k-1 within each frame. Both protocols score groups per frame,
    so nothing changes but the ids; JRDB-Act's assignment matrix is as wide as the largest id in a
    keyframe, and the loader's global ids (sequences grouped by H-interaction pairs, without cluster_IDs)
    would make it tens of thousands wide (gigabytes, minutes). Sequences with cluster_IDs keep those."""
    p = scenes.people
    local = p.groupby(["seq", "frame"], sort=False)["group"].rank(method="dense").to_numpy(np.int64) - 1
    return replace(scenes, people=p.assign(group=local))


def evaluate_scene_groups(scenes, candidates: Mapping[str, dict], kind: KindRun, crops: PairCrops | None,
                          thr: float, out: Path, device: str) -> dict:
    """Groups from ``kind``'s probabilities for every candidate pair of the validation and test frames
    (thresholds and method chosen on validation), scored with PAR and JRDB-Act; writes
    ``<out>/groups/det_group.txt`` and ``gt_group.txt``. Adds the pair metrics on all candidate test pairs."""
    task = BinaryTask(threshold=thr)
    prob = {}
    for k, c in candidates.items():
        rows = crops.rows[k] if crops is not None and kind.kind != "geometry" else None
        prob[k] = predict(kind.model, task, make_scene_inputs(kind.kind, c, rows), device=device,
                          batch_size=2048).astype(np.float64)
    val, test = candidates["candidates_val"], candidates["candidates_test"]
    res = evaluate_groups(_small_group_ids(scenes), make_pair_scores(val, prob["candidates_val"]),
                          make_pair_scores(test, prob["candidates_test"]), folder=out)
    best = res["table"].set_index("method").loc[res["best"]]
    pair_eval = evaluate_binary(test["y"], prob["candidates_test"], thr)
    return {**res, "kind": kind.kind, "row": best.to_dict(), "n_candidates": {k: len(c["y"]) for k, c in candidates.items()},
            "n_frames": {k: int(len(np.unique(c["seq"] * 10**7 + c["frame"]))) for k, c in candidates.items()},
            "candidate_pairs_test": pair_eval}


def run_scene_kinds(splits, out: Path, params: Mapping[str, Any], fit: dict, baselines: Mapping[str, dict],
                    test_ci: dict, device: str) -> SceneKinds:
    """The scene pairs' input kinds side by side and the groups of the kind chosen on validation.
    Geometry is the stage-1 run; appearance and both need the scenes' stitched images (``n_images`` > 0)
    and meta.json's ``scene_source``; without them only geometry runs and the notes say why."""
    requested = _requested_kinds(params)
    thr = float(params["threshold"])
    sk = SceneKinds(requested=requested, kinds={"geometry": _geometry_kind(fit, out, test_ci)}, notes=[])
    source = splits.meta.get("scene_source")
    wants_crops = any(k != "geometry" for k in requested)
    if source is None:
        sk.notes.append("meta.json does not record the scenes these pairs come from ('scene_source', written by "
                        "notebook 01): only geometry ran, and no groups were formed")
        return _finish_kinds(sk, splits, baselines, thr)
    t0 = time.perf_counter()
    scenes = load_pair_scenes(source, images=wants_crops, where=f"dataset {splits.name!r}, meta.json")
    for name, s in splits.items():
        check_scene_split(scenes, s, name)
    sk.seconds["scenes"] = time.perf_counter() - t0
    sk.n_images = int(scenes.n_images)
    sk.notes.append(f"scenes loaded again from {scenes.root} ({'generated' if scenes.generated else 'real'}; "
                    f"keyframe stride {source['keyframe_stride']}; {scenes.n_frames:,} frames, {scenes.n_images:,} "
                    "stitched images) and checked: every pair's cue vectors match the pair files")
    candidates = _candidate_splits(splits, scenes, sk.notes)
    crops = None
    if wants_crops and scenes.n_images == 0:
        sk.notes.append("no stitched images in these scenes (n_images = 0: labels only, e.g. a JRDB folder without "
                        "images/image_stitched): appearance and both need person crops, so only geometry ran")
    elif wants_crops:
        sk.crop_size = list(_scene_setting(params, "crop_size"))
        t0 = time.perf_counter()
        crops = make_pair_crops(scenes, {**dict(splits.items()), **(candidates or {})}, sk.crop_size)
        sk.crops = {"n_crops": int(len(crops.crops)), "n_decoded": crops.n_decoded,
                    "seconds": time.perf_counter() - t0, "mb": crops.crops.nbytes / 2**20}
        sk.seconds["crops"] = sk.crops["seconds"]
        for kind in requested:
            if kind != "geometry":
                t0 = time.perf_counter()
                sk.kinds[kind] = train_crop_kind(kind, splits, crops, params, out, device)
                sk.seconds[kind] = time.perf_counter() - t0
    _finish_kinds(sk, splits, baselines, thr)
    if candidates is not None:
        t0 = time.perf_counter()
        sk.groups = evaluate_scene_groups(scenes, candidates, sk.kinds[sk.best_kind], crops, thr, out, device)
        sk.seconds["groups"] = time.perf_counter() - t0
    return sk


def _finish_kinds(sk: SceneKinds, splits, baselines: Mapping[str, dict], thr: float) -> SceneKinds:
    sk.comparisons = evaluate_kinds(sk.kinds, splits.test.y, baselines, thr, unit_of(splits.test))
    sk.best_kind = _best_kind(sk.kinds)
    return sk


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
            f"{c['ci']['ci_high']:.4f}); stage 1 minus it {c['test']['diff']:+.4f} (Holm-adjusted CI "
            f"{c['test']['ci_low_adjusted']:+.4f} to {c['test']['ci_high_adjusted']:+.4f}): {c['verdict']}.")
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
                            f"{r['share_sampled']:.1%} of them, so this counts the sampling's losses, not the "
                            "model's." + _candidate_recall(run))
    return "\n".join(lines) or "No dataset here is scene data: recall over all interacting pairs does not apply."


def _candidate_recall(run: Stage1Run) -> str:
    """The model scored on every candidate pair of the test frames (the distance rule only, no sampling), where
    the groups were formed: what it finds when nothing but the distance rule stands between it and a pair."""
    g = run.scene.groups if run.scene is not None else None
    if g is None:
        return ""
    cp, n = g["candidate_pairs_test"], g["n_candidates"]["candidates_test"]
    return (f" Scored on all {n:,} candidate pairs of the test frames instead (the distance rule only, no "
            f"sampling), the {g['kind']} model's recall is {cp['recall']:.3f} and its F1 {cp['f1']:.3f} "
            f"(accuracy {cp['accuracy']:.3f}).")


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


def _kind_verdict(sk: SceneKinds, b: str, a: str) -> str:
    c = sk.comparisons[f"{b} - {a}"]
    t = c["test"]
    return (f"{t['diff']:+.3f} (Holm-adjusted CI {t['ci_low_adjusted']:+.3f} to {t['ci_high_adjusted']:+.3f}), "
            f"{c['verdict'].split('; ')[0]})")


def _appearance_sentence(sk: SceneKinds) -> str:
    """Whether appearance helps, in plain words, from the paired tests."""
    out = []
    if "both" in sk.kinds:
        c = sk.comparisons["both - geometry"]
        words = {"better": "Adding appearance to geometry HELPS", "worse": "Adding appearance to geometry HURTS"}.get(
            c["test"]["verdict_word"], "With appearance added, geometry is not distinguishable")
        out.append(f"{words}: both minus geometry {_kind_verdict(sk, 'both', 'geometry')}.")
    out += [_budget_note(sk)] if _budget_note(sk) else []
    if "appearance" in sk.kinds:
        c = sk.comparisons["appearance - geometry"]
        word = ("is better than" if c["test"]["diff"] > 0 else "is worse than") if c["p_holm"] < ALPHA else \
            "is not distinguishable from"
        out.append(f"Appearance alone {word} geometry: {_kind_verdict(sk, 'appearance', 'geometry')}.")
    return " ".join(out)


def _budget_note(sk: SceneKinds) -> str:
    """Whether the kinds were compared at matched training budgets (epochs run): said plainly when not."""
    epochs = {k: kr.epochs_run for k, kr in sk.kinds.items()}
    if len(set(epochs.values())) <= 1:
        return f"The kinds ran matched budgets ({next(iter(epochs.values()), 0)} epochs each)." if epochs else ""
    return ("The kinds ran UNEQUAL budgets (" + ", ".join(f"{k} {e} epochs" for k, e in epochs.items()) +
            "): the comparison is at those budgets, not at matched epochs.")


def describe_kinds(runs: Mapping[str, Stage1Run]) -> str:
    """What the kinds comparison says (from the paired tests), why a kind did not run, and where the
    scenes came from; the published ablation as context only."""
    lines = []
    for name, run in _scene_runs(runs).items():
        sk = run.scene
        accs = ", ".join(f"{k} {kr.eval_test['accuracy']:.4f} (95% CI {kr.test_ci['ci_low']:.4f} to "
                         f"{kr.test_ci['ci_high']:.4f})" for k, kr in sk.kinds.items())
        lines.append(f"{name}: test accuracy {accs}; intervals over {run.unit.describe(run.test_ci['n'])}. "
                     f"Chosen on validation: {sk.best_kind}.")
        if len(sk.kinds) > 1:
            lines.append(_appearance_sentence(sk))
        if "lgbm" in run.baselines:
            vs = "; ".join(f"{k} {_kind_verdict(sk, k, 'lgbm')}" for k in sk.kinds)
            lines.append(f"Each kind minus the tuned LightGBM baseline ({run.baselines['lgbm']['test']['accuracy']:.4f}): {vs}.")
        if len(sk.kinds) > 1:
            lines.append("Training throughput (median samples/s over epochs): " + ", ".join(
                f"{k} {kr.train_samples_per_s:,.0f}" for k, kr in sk.kinds.items()) + (
                f"; the crops ({sk.crops['n_crops']:,} people at {sk.crop_size[0]} x {sk.crop_size[1]} px, "
                f"{sk.crops['mb']:.0f} MB uint8 in memory) took {sk.crops['seconds']:.1f} s to "
                f"{'build (' + format(sk.crops['n_decoded'], ',') + ' images decoded)' if sk.crops['n_decoded'] else 'read from the crop cache'}."
                if sk.crops else "."))
        if sk.seconds:
            lines.append("Wall time beyond the stage-1 run: " + ", ".join(f"{k} {v:.1f} s" for k, v in sk.seconds.items())
                         + f" (total {sum(sk.seconds.values()):.1f} s).")
        if set(sk.requested) - set(sk.kinds):
            lines.append(f"Requested but not run: {', '.join(k for k in sk.requested if k not in sk.kinds)}.")
        lines += [f"Note: {n}." for n in sk.notes]
        lines.append("The union crop of a pair (JRDB-Social's third view) is not used: each model sees the two "
                     "people's own crops.")
    if not lines:
        return "No dataset here is scene data: the input kinds do not apply."
    lines.append(f"Verdicts come from paired tests over the test split's independent unit (the sequence when "
                 f"there are {MIN_SEQUENCES} or more; otherwise person pairs, conditional on those sequences), Holm-adjusted across the kind "
                 f"differences and the comparisons with LightGBM, at alpha {ALPHA:g}. For context only: SPDP-Net's "
                 f"ablation (ECCV 2024) on real JRDB found a distance-over-time cue alone at "
                 f"{SPDP_NET['distance_over_time_only']} group detection (IoU 0.5) against appearance alone at "
                 f"{SPDP_NET['appearance_only']}; " + _anchor_note(all(r.generated for r in _scene_runs(runs).values())) + ".")
    return "\n".join(lines)


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


def _anchor_note(generated: bool) -> str:
    """How this run's scene figures relate to the published JRDB ones: never comparable on generated scenes;
    on a user's JRDB copy, only on the same protocol (official split, detected boxes)."""
    if generated:
        return "these scenes are generated, so the figures are not comparable"
    return ("this is the user's JRDB data, but the figures are comparable only on the same protocol: the official "
            "test split and the toolkit run on detected boxes (groups here are formed on ground-truth boxes of this "
            "folder's test split)")


def describe_groups(runs: Mapping[str, Stage1Run]) -> str:
    """The group figures next to the pair figures, with how they were made and what they can be compared to."""
    lines = []
    for name, run in _scene_runs(runs).items():
        sk, g = run.scene, run.scene.groups
        if g is None:
            why = [n for n in sk.notes if "group" in n or "scene" in n]
            lines.append(f"{name}: no groups formed ({'; '.join(why) or 'see the notes above'}).")
            continue
        r, cp = g["row"], g["candidate_pairs_test"]
        sizes = ", ".join(f"{c.replace('plus', '+')}: {r[f'act_ap_size_{c}']:.3f}" if np.isfinite(r[f"act_ap_size_{c}"])
                          else f"{c.replace('plus', '+')}: none" for c in SIZE_CLASSES)
        lines.append(
            f"{name}: groups from the {g['kind']} model's probabilities for all {g['n_candidates']['candidates_test']:,} "
            f"candidate pairs of the {g['n_frames']['candidates_test']:,} test frames (every same-frame pair within "
            f"the distance rule, not only the sampled ones; {g['n_candidates']['candidates_val']:,} on validation, "
            f"where the method and threshold were chosen): {g['best']} at threshold {r['threshold']:.2f}. PAR group "
            f"F1 {r['par_f1']:.3f} (precision {r['par_precision']:.3f}, recall {r['par_recall']:.3f}); JRDB-Act AP "
            f"{r['act_ap']:.3f} over {int(r['act_n_people']):,} people in {int(r['act_n_keyframes'])} keyframes "
            f"(frames 15, 30, 45, ... only, as the toolkit scores), AP per true group size {sizes}. On the same "
            f"candidate pairs the pair model scores accuracy {cp['accuracy']:.3f}, recall {cp['recall']:.3f}, "
            f"F1 {cp['f1']:.3f}.")
        lines.append(f"Groups here are formed on ground-truth boxes, so the AP is the share of people whose group is "
                     f"recovered. Published anchor, context only: SPDP-Net (ECCV 2024) reaches {SPDP_NET['group_iou50']} "
                     f"group detection at IoU 0.5 on real JRDB (its ablation: distance over time alone "
                     f"{SPDP_NET['distance_over_time_only']}, appearance alone {SPDP_NET['appearance_only']}); "
                     + _anchor_note(run.generated) + ".")
    return "\n".join(lines) or "No dataset here is scene data: groups do not apply."


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
            "ci_high": t["acc_ci_high"], "baseline": _label(run.best_baseline), "diff": c["test"]["diff"],
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
