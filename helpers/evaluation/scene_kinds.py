"""Stage 1 on the scene pairs' input kinds (JRDB as M0 uses it), side by side, and the groups formed from the
kind chosen on validation (notebook 02's scene section; `helpers.stages.stage1.run_stage1` calls it).

``geometry`` is the stage-1 model itself (cue vectors and pair geometry, MLP encoder); ``appearance`` a siamese
CNN on the two people's crops (``siamese_crops``); ``both`` the crops fused with the pair geometry. The kinds
are compared on the test split by paired tests over the test split's unit (Holm-adjusted, with the tuned
LightGBM baseline in the same family); the best kind is chosen on validation, and its probabilities for every
same-frame candidate pair of the validation and test frames form groups, scored with PAR's group F1 and
JRDB-Act's AP."""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from helpers.core.errors import WorkbookError
from helpers.data.crops import (check_scene_split, INPUT_KINDS, load_pair_scenes, make_candidate_split,
                                make_pair_crops, make_scene_inputs, PairCrops)
from helpers.data.predictions import write_prediction_file
from helpers.evaluation.groups import evaluate_groups, make_pair_scores
from helpers.evaluation.metrics import correct_at, evaluate_binary, with_interval
from helpers.evaluation.stats import ALPHA, compare, interval, Unit, unit_of
from helpers.models.registry import count_parameters, create_model
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask


# Scene settings a caller may leave out (the notebook declares them all; these are its defaults).
SCENE_DEFAULTS = {"scene_inputs": list(INPUT_KINDS), "crop_size": [64, 32], "crop_epochs": 0, "crop_layers": [1, 1, 1],
                  "crop_width_mult": 0.125, "crop_stem_stride": 2, "crop_backbone": "", "crop_backbone_weights": ""}


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
    budget: dict = field(default_factory=dict)      # {"max_epochs", "patience"}: the rule it trained under

    @property
    def train_samples_per_s(self) -> float:
        return train_samples_per_s(self.history)


def _budget(cfg) -> dict:
    """The training budget a kind ran under: kinds compare at matched budgets when these are equal, whatever
    epoch early stopping ended each one at."""
    return {"max_epochs": int(cfg.epochs), "patience": int(cfg.patience)}


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
                   fit["val_prob"], fit["test_prob"], fit["eval_val"], fit["eval_test"], test_ci, out, fit["model"],
                   _budget(fit["cfg"]))


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
    test_ci = interval(correct_at(test_prob, te.y, thr), unit_of(te))
    val_ci = interval(correct_at(val_prob, va.y, thr), unit_of(va))
    return KindRun(kind, spec, count_parameters(model), res.history, res.epochs_run, fit_s, val_prob, test_prob,
                   with_interval(ev_val, val_ci), with_interval(ev_test, test_ci), test_ci, out / kind, model,
                   _budget(make_crop_train_config(params)))


def evaluate_kinds(kinds: Mapping[str, KindRun], y_test: np.ndarray, baselines: Mapping[str, dict], thr: float,
                   unit: Unit, against: str = "lgbm") -> dict[str, dict]:
    """Paired tests on the test split over ``unit``: each later kind minus each earlier one (appearance -
    geometry, both - geometry, both - appearance) and every kind minus the ``against`` baseline, all
    Holm-adjusted as one family; verdict words from those tests."""
    correct = {k: correct_at(r.test_prob, y_test, thr) for k, r in kinds.items()}
    names = list(kinds)
    pairs = [(names[j], names[i]) for i in range(len(names)) for j in range(i + 1, len(names))]
    if against in baselines:
        correct[against] = correct_at(baselines[against]["test_prob"], y_test, thr)
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
