"""Notebook 03 (stage 2): start from the stage-1 checkpoint, upgrade the binary model, classify
interaction types, and measure what each addition changed.

- Binary upgrade (M1 stage 2): SE-ResNet ``layers`` (3,3,3) + focal loss (+ mixed precision when
  ``amp`` is on) for image pairs; for vector pairs a deeper MLP encoder with the same loss. The encoder
  (and fusion, head, where names and shapes match) starts from the stage-1 weights.
- Every binary recipe is trained once per seed (``seeds``), each run until validation has flattened
  (early stopping with ``patience``, at most ``epochs``). Comparisons are paired on the same test rows:
  per seed, then across seeds (each test row's correctness averaged over the seeds, then a paired test
  over the data's independent unit, `helpers.evaluation.stats.unit_of`).
- Matched budget: stage 1 trained on from its checkpoint for exactly as many epochs as stage 2 trained
  with the same seed, so "stage 2 vs stage 1" is not "more epochs vs fewer".
- The strongest baseline of notebook 02 (chosen on validation accuracy, never on test) on the same split.
- Type classification (M0 stage 2): a K-class head on the interacting pairs of data with ``type``
  labels, encoder loaded from stage 1 (required), one balancing mechanism (``type_balance``), early
  stopping on validation macro-F1, next to a tuned LightGBM (balanced class weights) and the majority
  class, with per-class scores and cluster-bootstrap intervals over person pairs.
- Ablation: one change at a time against the stage-2 runs themselves (the reference), the same seeds
  and stopping rule; p-values Holm-adjusted over the variants of a dataset.
"""
from __future__ import annotations

import copy
import inspect
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers.core import paths
from helpers.core.env import ENV_PROFILE
from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_write_json, atomic_write_text, read_json
from helpers.core.paths import PROJ_ROOT
from helpers.core.progress import progress
from helpers.core.runcard import make_config
from helpers.data.audit import evaluate_leakage, make_dataset_card
from helpers.data.pairs import _uses_pair, dataset_labels, describe_renamed, make_inputs, open_dataset
from helpers.data.predictions import load_base_predictions, write_prediction_file
from helpers.data.scenes import TYPE_NAMES
from helpers.evaluation.baselines import make_pair_features
from helpers.evaluation.metrics import evaluate_binary, make_evaluation_report, make_multiclass_report
from helpers.evaluation.plots import (plot_confusion_matrix, plot_probability_distributions,
                                      plot_training_curves)
from helpers.evaluation.recall import evaluate_scene_recall
from helpers.evaluation.stats import (adjust, compare_over_seeds, format_p, make_comparison, Spread, Unit, unit_of,
                                      unit_weights)
from helpers.models.pair import transfer_weights
from helpers.models.registry import count_parameters, create_model, create_model_from_spec
from helpers.training.checkpoints import load_checkpoint
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask, make_class_weights, MulticlassTask
from helpers.stages.words import markdown, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 03 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_ablation_all", "describe_answer", "describe_budget", "describe_recipe", "describe_runs",
           "describe_types_all", "make_ablation_tables", "make_comparison_tables", "make_metrics", "make_type_tables",
           "plot_ablation_curves", "plot_seed_accuracies", "plot_test_errors", "plot_training", "plot_type_confusion",
           "run_stage2_datasets"]


# M1 stage 2 (their data): claimed val accuracy of the full stage-2 model and effects.
STAGE2_CLAIMS = {"val_acc": 0.8875, "val_f1": 0.8872, "resnet_fusion_222_val_acc": 0.8792,
                 "resnet_222_val_acc": 0.8780, "focal_gain": 0.008, "amp_speedup": 2.0}

ALPHA = 0.05                 # level of every paired test's verdict
N_BOOT = 2000                # bootstrap resamples of every interval and paired bootstrap test
MIN_GROUPS = 10              # groups of each interaction type per split for per-class scores to mean much
TYPE_BALANCES = ("oversample", "class_weights", "none")
# LightGBM type baseline: its main hyper-parameters, chosen on validation macro-F1 (rounds early-stopped).
LGBM_GRID = {"num_leaves": (7, 31), "min_child_samples": (20, 100)}


# ------------------------------------------------------------------------------ stage-1 checkpoint
def _scored_checkpoint(folder: Path) -> str:
    """File name of the weights notebook 02 scored: best_<monitor>.pt per its config.json."""
    monitor = "accuracy"
    if (folder / "config.json").is_file():
        monitor = read_json(folder / "config.json").get("training", {}).get("monitor", monitor)
    return f"best_{monitor.removeprefix('val_')}.pt"


def find_stage1_checkpoint(dataset: str, run_dir: str | Path, stage1_checkpoint: str = "") -> Path:
    """The stage-1 checkpoint for ``dataset``: the weights notebook 02 scored
    (``<run>/02_stage1/<dataset>/best_<monitor>.pt``) by default; ``stage1_checkpoint`` may name a .pt
    file or a folder holding ``<dataset>/`` or the checkpoints themselves."""
    if stage1_checkpoint:
        p = Path(stage1_checkpoint).expanduser()
        p = p if p.is_absolute() else PROJ_ROOT / p   # relative paths mean the project root, as for datasets
        candidates = [p] if p.suffix == ".pt" else [p / dataset / _scored_checkpoint(p / dataset),
                                                     p / _scored_checkpoint(p)]
        where = f"stage1_checkpoint = {stage1_checkpoint!r}"
    else:
        folder = paths.upstream(run_dir, "02_stage1") / dataset
        candidates = [folder / _scored_checkpoint(folder)]
        where = "the default location (notebook 02 in this run folder)"
    for c in candidates:
        if c.is_file():
            return c
    raise WorkbookError(f"stage-1 checkpoint for dataset {dataset!r} not found at {where}: looked for "
                        f"{', '.join(str(c) for c in candidates)}. Run notebook 02 first in the same run folder "
                        "(`python -m helpers run --only 02 03`) or set stage1_checkpoint to a stage-1 .pt file")


def load_stage1_model(path: Path, splits) -> tuple[Any, dict]:
    """Rebuild the stage-1 model from its checkpoint and check that it fits the dataset."""
    ck = load_checkpoint(path)
    spec = ck.get("model_spec")
    if not spec:
        raise WorkbookError(f"checkpoint {path}: no model_spec; expected a checkpoint written by notebook 02")
    kw = spec.get("kwargs", {})
    shape = tuple(splits.train.xa.shape[1:])
    if splits.kind == "image":
        ok = spec["name"] != "siamese_mlp" and int(kw.get("in_channels", 1)) == shape[0]
        want = f"an image model with in_channels {shape[0]}"
    else:
        pair_dim = splits.train.extras["pair"].shape[1] if _uses_pair(splits) else 0
        ok = (spec["name"] == "siamese_mlp" and int(kw.get("in_features", -1)) == int(np.prod(shape))
              and int(kw.get("pair_dim", 0)) == pair_dim)
        want = f"siamese_mlp with in_features {int(np.prod(shape))} and pair_dim {pair_dim}"
    if not ok:
        raise WorkbookError(f"checkpoint {path}: model {spec['name']} {kw} does not match dataset "
                            f"{splits.name!r} (inputs {shape}); expected {want}")
    model = create_model_from_spec(spec)
    load_checkpoint(path, model)
    return model, ck


def make_stage2_model_spec(stage1_spec: dict, params: Mapping[str, Any], **changes) -> dict:
    """Stage-2 binary model: image -> SE-ResNet ``layers`` (width and feat_dim from stage 1, so
    the encoder can start from it); vector -> MLP encoder with ``mlp_hidden``. ``changes``
    override kwargs (ablation)."""
    kw1 = stage1_spec["kwargs"]
    if stage1_spec["name"] == "siamese_mlp":
        kw = {**kw1, "hidden": list(params["mlp_hidden"])}
        name = "siamese_mlp"
    else:
        kw = {"in_channels": kw1.get("in_channels", 1), "width_mult": kw1.get("width_mult", 1.0),
              "feat_dim": kw1.get("feat_dim", 256), "layers": list(params["layers"]), "fusion": "adaptive",
              "attention": "se"}
        name = "siamese_resnet"
    kw.update(changes)
    return {"name": name, "kwargs": kw}


# ------------------------------------------------------------------------------ one recipe, many seeds
def make_seeds(params: Mapping[str, Any]) -> list[int]:
    """``seeds`` training seeds: seed, seed + 1, ... (the first is the run whose checkpoints are kept)."""
    n = int(params["seeds"])
    if n < 1:
        raise WorkbookError(f"parameter seeds = {n}; expected at least 1 training seed")
    return [int(params["seed"]) + k for k in range(n)]


@dataclass
class SeedRuns:
    """One recipe trained once per seed on the same split: each seed's probabilities and how it ended."""
    recipe: str
    seeds: list[int]
    val_prob: np.ndarray            # [S, N_val]
    test_prob: np.ndarray           # [S, N_test]
    epochs_run: list[int]
    best_epoch: list[int]
    stopped_early: list[bool]
    fit_s: list[float]
    samples_per_s: list[float]
    histories: list[list[dict]]
    n_params: int = 0

    def correct(self, y: np.ndarray, threshold: float) -> np.ndarray:
        """[S, N] 1.0 where the seed's prediction at ``threshold`` is right."""
        return ((self.test_prob >= threshold) == (np.asarray(y) == 1)[None]).astype(np.float64)

    def accuracies(self, y: np.ndarray, threshold: float) -> np.ndarray:
        return self.correct(y, threshold).mean(1)


def make_seed_runs(recipe: str, seeds: Sequence[int], fits: Sequence[dict]) -> SeedRuns:
    """Stack the per-seed results of `_fit_binary` (same order as ``seeds``)."""
    return SeedRuns(recipe=recipe, seeds=list(seeds), val_prob=np.stack([f["val_prob"] for f in fits]),
                    test_prob=np.stack([f["test_prob"] for f in fits]),
                    epochs_run=[int(f["result"].epochs_run) for f in fits], best_epoch=[f["best_epoch"] for f in fits],
                    stopped_early=[bool(f["result"].stopped_early) for f in fits], fit_s=[f["fit_s"] for f in fits],
                    samples_per_s=[f["samples_per_s"] for f in fits], histories=[f["result"].history for f in fits],
                    n_params=int(fits[0]["n_params"]))


def _binary_task(loss: str, params: Mapping[str, Any]):
    if loss == "focal":
        return BinaryTask(loss_name="focal", alpha=float(params["focal_alpha"]), gamma=float(params["focal_gamma"]),
                          threshold=float(params["threshold"]))
    return BinaryTask(loss_name="bce", threshold=float(params["threshold"]))


def _fit_binary(spec: dict, init_state: dict, splits, params: Mapping[str, Any], loss: str, *, seed: int,
                epochs: int, amp: bool, device: str, out: Path | None = None, checkpoint: bool = False,
                patience: int | None = None, max_train: int = 0, log_every: int | None = 0) -> dict:
    """Build a binary model, start it from ``init_state`` where names and shapes allow, train it with the
    seed's batch order and initialisation, and predict val and test with its best validation epoch."""
    use_pair = _uses_pair(splits)
    tr, va, te = splits.train, splits.val, splits.test
    rows = np.arange(len(tr))
    if 0 < max_train < len(tr):
        rows = np.sort(np.random.default_rng(seed).choice(len(tr), max_train, replace=False))
    torch.manual_seed(seed)
    model = create_model(spec["name"], **spec["kwargs"])
    transfer = transfer_weights(model, init_state)
    task = _binary_task(loss, params)
    # Short runs keep at least one epoch after the warm-up.
    over = {"epochs": epochs, "amp": amp, "checkpoint": checkpoint, "seed": seed,
            "warmup_epochs": min(float(params["warmup_epochs"]), max(0.0, epochs - 1.0))}
    over.update({k: v for k, v in (("patience", patience), ("log_every", log_every)) if v is not None})
    cfg = make_train_config(params, splits.kind, **over)
    t0 = time.perf_counter()
    res = train_model(model, task, (*[a[rows] for a in make_inputs(tr, use_pair)], tr.y[rows]),
                      (*make_inputs(va, use_pair), va.y), cfg, out_dir=out, device=device)
    fit_s = time.perf_counter() - t0
    val_prob = predict(model, task, make_inputs(va, use_pair), device=device, amp=amp).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, use_pair), device=device, amp=amp).astype(np.float64)
    thr = float(params["threshold"])
    return {"model": model, "result": res, "transfer": transfer, "config": cfg, "fit_s": fit_s,
            "n_params": count_parameters(model), "val_prob": val_prob, "test_prob": test_prob,
            "best_epoch": int((res.best.get("monitor") or {}).get("epoch") or res.epochs_run),
            "eval_val": evaluate_binary(va.y, val_prob, thr), "eval_test": evaluate_binary(te.y, test_prob, thr),
            "samples_per_s": train_samples_per_s(res.history)}


def train_over_seeds(recipe: str, seeds: Sequence[int], fit_one: Callable[[int, bool], dict]) -> tuple[SeedRuns, dict]:
    """``fit_one(seed, first)`` for every seed; (the stacked runs, the first seed's full result)."""
    fits = [fit_one(s, k == 0) for k, s in enumerate(seeds)]
    return make_seed_runs(recipe, seeds, fits), fits[0]


def train_stage2_seeds(spec: dict, s1_state: dict, splits, params: Mapping[str, Any], out: Path,
                       device: str) -> tuple[SeedRuns, dict]:
    """The stage-2 recipe over the seeds; the first seed's run keeps its checkpoints and history in ``out``."""
    def fit(seed: int, first: bool) -> dict:
        return _fit_binary(spec, s1_state, splits, params, "focal", seed=seed, epochs=int(params["epochs"]),
                           amp=bool(params["amp"]), device=device, out=out if first else None, checkpoint=first,
                           log_every=None if first else 0)
    return train_over_seeds("stage 2", make_seeds(params), fit)


def train_matched_stage1(s1_spec: dict, s1_state: dict, splits, params: Mapping[str, Any], stage2: SeedRuns,
                         out: Path, device: str) -> SeedRuns:
    """Stage 1 trained on from its checkpoint (its own architecture and BCE loss, the same optimiser
    settings) for exactly the epochs stage 2 trained with the same seed, keeping its best validation
    epoch as stage 2 does: the same total budget, so a stage-2 gain is not just more training."""
    budget = dict(zip(stage2.seeds, stage2.epochs_run))

    def fit(seed: int, first: bool) -> dict:
        return _fit_binary(s1_spec, s1_state, splits, params, "bce", seed=seed, epochs=budget[seed], amp=False,
                           device=device, out=out / "matched_stage1" if first else None, patience=0)
    return train_over_seeds("stage 1, matched budget", stage2.seeds, fit)[0]


def make_ablation_variants(kind: str, layers: list[int], amp: bool = True) -> list[tuple[str, str, dict]]:
    """(variant, what changed, settings) rows: the reference (the stage-2 runs themselves) and one change
    at a time. Mixed precision is measured separately by a speed probe (`measure_amp_speed`): on CPUs
    bfloat16 autocast can be an order of magnitude slower, too slow for full runs."""
    ref = {"loss": "focal", "amp": amp, "changes": {}}
    rows = [("reference", "the stage-2 runs above: " + (f"SE-ResNet {layers}, " if kind == "image" else "deeper MLP, ")
             + "focal loss, " + ("mixed precision" if amp else "float32 (no mixed precision)"), ref),
            ("BCE instead of focal", "loss: BCE", {**ref, "loss": "bce"})]
    if kind == "image":
        rows.append(("no SE", "attention: none", {**ref, "changes": {"attention": "none"}}))
        shallow = [2] * len(layers) if any(v != 2 for v in layers) else [1] * len(layers)
        rows.append((f"layers {shallow}", f"layers {layers} -> {shallow}", {**ref, "changes": {"layers": shallow}}))
    else:
        rows.append(("stage-1 MLP depth", "hidden layers as in stage 1", {**ref, "changes": "stage1_hidden"}))
    return rows


def run_ablation(splits, stage1_spec: dict, stage1_state: dict, params: Mapping[str, Any], stage2: SeedRuns,
                 out: Path, device: str) -> list[dict]:
    """Every variant over the same seeds, with the stage-2 stopping rule and cap; the reference is ``stage2``."""
    variants = make_ablation_variants(splits.kind, list(params["layers"]), bool(params["amp"]))
    rows = [{"variant": variants[0][0], "change": variants[0][1], "runs": stage2}]
    for variant, change, s in variants[1:]:
        changes = s["changes"]
        if changes == "stage1_hidden":
            changes = {"hidden": list(stage1_spec["kwargs"].get("hidden", []))}
        spec = make_stage2_model_spec(stage1_spec, params, **changes)
        folder = out / "ablation" / _key(variant)

        def fit(seed: int, first: bool, spec=spec, s=s, folder=folder) -> dict:
            return _fit_binary(spec, stage1_state, splits, params, s["loss"], seed=seed, epochs=int(params["epochs"]),
                               amp=s["amp"], device=device, out=folder if first else None)
        runs = train_over_seeds(variant, stage2.seeds, fit)[0]
        rows.append({"variant": variant, "change": change, "runs": runs})
        write_prediction_file(out, "ablation_" + folder.name, runs.val_prob[0], runs.test_prob[0], splits.val.y,
                              splits.test.y, threshold=float(params["threshold"]))
    return rows


AMP_ORDER = (False, True, True, False, False, True)   # ABBA-style: drift on a shared CPU hits both modes alike


def measure_amp_speed(splits, spec: dict, stage1_state: dict, params: Mapping[str, Any], device: str) -> dict:
    """Training samples/s of the stage-2 model for one epoch on ``amp_probe_pairs`` pairs, in float32 and with
    autocast (float16 + GradScaler on CUDA, bfloat16 on CPU), on the same rows and batches: one untimed
    warm-up epoch per mode, then three timed epochs per mode in alternating order; the medians are compared."""
    n = int(params["amp_probe_pairs"])

    def epoch(amp: bool) -> float:
        return _fit_binary(spec, stage1_state, splits, params, "focal", seed=int(params["seed"]), epochs=1, amp=amp,
                           device=device, max_train=n)["samples_per_s"]

    for amp in (False, True):
        epoch(amp)                                   # warm-up: kernels, allocator, caches
    timed = {False: [], True: []}
    for amp in AMP_ORDER:
        timed[amp].append(epoch(amp))
    out = {"fp32": float(np.median(timed[False])), "amp": float(np.median(timed[True])),
           "fp32_runs": timed[False], "amp_runs": timed[True], "repeats": len(AMP_ORDER) // 2}
    out["pairs"] = min(n, len(splits.train))
    out["speedup"] = out["amp"] / out["fp32"]
    return out


# ------------------------------------------------------------------------------ paired comparisons
def _correct(prob: np.ndarray, y: np.ndarray, thr: float) -> np.ndarray:
    return ((np.asarray(prob) >= thr) == (np.asarray(y) == 1)).astype(np.float64)


def load_best_baseline(run_dir: str | Path, splits, threshold: float) -> dict | None:
    """Notebook 02's baseline with the best validation accuracy (chosen without test labels), read from
    its prediction files; None when 02 wrote no baseline. The files must predict this split's rows."""
    folder = paths.upstream(run_dir, "02_stage1") / splits.name / "predictions"
    if not folder.is_dir():             # a stage-1 checkpoint from elsewhere: 02 may not have run here
        return None
    base = load_base_predictions(run_dir, splits.name, sources=("02_stage1",))
    keep = [i for i, n in enumerate(base.names) if n.split("/", 1)[1].startswith("baseline_")]
    if not keep:
        return None
    if not (np.array_equal(base.val_y, splits.val.y) and np.array_equal(base.test_y, splits.test.y)):
        raise DataError(f"{base.files[keep[0]]}: val_y/test_y differ from dataset {splits.name!r}'s splits; "
                        "expected notebook 02's predictions of the same val and test rows")
    val_acc = [float(_correct(base.val_prob[:, i], base.val_y, threshold).mean()) for i in keep]
    i = keep[int(np.argmax(val_acc))]
    return {"name": base.names[i].split("/", 1)[1].removeprefix("baseline_"), "file": str(base.files[i]),
            "val_acc": max(val_acc), "test_prob": base.test_prob[:, i],
            "candidates": {base.names[j].split("/", 1)[1].removeprefix("baseline_"): a for j, a in zip(keep, val_acc)}}


def evaluate_stage2_comparisons(run: "Stage2Run") -> dict[str, dict]:
    """Stage 2 (over seeds) minus each reference on the same test rows, Holm-adjusted over the references:
    stage 1 trained on for the same epochs, the stage-1 checkpoint of 02, and 02's strongest baseline."""
    y, thr = run.test_y, run.threshold
    refs = {"matched_stage1": run.matched.correct(y, thr), "stage1_checkpoint": _correct(run.stage1_test_prob, y, thr)}
    if run.baseline is not None:
        refs["best_baseline"] = _correct(run.baseline["test_prob"], y, thr)
    s2 = run.stage2.correct(y, thr)
    return _seed_family({k: (c, s2) for k, c in refs.items()}, run.unit, "stage 2 better", "stage 2 worse")


def _seed_family(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], unit: Unit, better: str, worse: str
                 ) -> dict[str, dict]:
    """`compare_over_seeds` for each (reference, other) correctness pair [S, N] (a single model: [N]), paired
    by seed, Holm-adjusted as one table; flat records for the tables and metrics."""
    tests = adjust({k: compare_over_seeds(a, b, unit, paired_seeds=True, n_boot=N_BOOT, alpha=ALPHA)
                    for k, (a, b) in pairs.items()})
    return {k: _adjusted_record(t, better, worse) for k, t in tests.items()}


def _adjusted_record(t, better: str, worse: str) -> dict:
    """A comparison's flat record whose ``ci_low`` / ``ci_high`` are the Holm-adjusted interval (the one beside
    the adjusted verdict everywhere 03 shows it); the unadjusted 95% interval is kept as ``ci_*_95``."""
    d = t.as_dict(better, worse)
    return {**d, "ci_low_95": d["ci_low"], "ci_high_95": d["ci_high"], "ci_low": d["ci_low_adjusted"],
            "ci_high": d["ci_high_adjusted"]}


def evaluate_ablation(run: "Stage2Run") -> dict[str, dict]:
    """Each variant minus the reference (the stage-2 runs), per seed and across seeds, Holm over variants."""
    y, thr = run.test_y, run.threshold
    ref = run.ablation[0]["runs"].correct(y, thr)
    return _seed_family({a["variant"]: (ref, a["runs"].correct(y, thr)) for a in run.ablation[1:]}, run.unit,
                        "variant better", "variant worse")


# ------------------------------------------------------------------------------ interaction types
@dataclass
class TypeData:
    """The interacting pairs with a type label, per split: model inputs, LightGBM features, labels, units."""
    names: list[str]
    inputs: dict[str, tuple]
    features: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    units: dict[str, Unit]
    groups: np.ndarray              # [3, K] groups of each class per split (train, val, test)
    pairs: np.ndarray               # [3, K] rows of each class per split

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def min_groups(self) -> int:
        return int(self.groups.min())


def count_type_groups(seq: np.ndarray, track_a: np.ndarray, track_b: np.ndarray, typ: np.ndarray, k: int) -> np.ndarray:
    """Groups of each class [k] among interacting pairs: a group is a connected set of people (within a
    sequence) linked by interacting pairs, counted once per class its pairs carry."""
    if len(typ) == 0:
        return np.zeros(k, np.int64)
    na = (np.asarray(seq, np.int64) << 32) + np.asarray(track_a, np.int64)
    nb = (np.asarray(seq, np.int64) << 32) + np.asarray(track_b, np.int64)
    uniq, inv = np.unique(np.concatenate([na, nb]), return_inverse=True)
    n = len(na)
    graph = coo_matrix((np.ones(n), (inv[:n], inv[n:])), shape=(len(uniq), len(uniq)))
    _, label = connected_components(graph, directed=False)
    keys = np.unique(label[inv[:n]].astype(np.int64) * k + np.asarray(typ, np.int64))
    return np.bincount(keys % k, minlength=k)


def _type_names(splits) -> list[str]:
    return list(splits.meta.get("type_names", TYPE_NAMES)) if isinstance(splits.meta, dict) else list(TYPE_NAMES)


def _subset_unit(unit: Unit, rows: np.ndarray) -> Unit:
    return Unit(unit.name, tuple(np.asarray(a)[rows] for a in unit.ids), unit.conditional)


def make_type_data(splits) -> TypeData | None:
    """The type task's data (None when the data has no ``type`` labels); errors name the dataset."""
    if any("type" not in s.extras for _, s in splits.items()):
        return None
    names, use_pair = _type_names(splits), _uses_pair(splits)
    sel = {split: np.flatnonzero((s.extras["type"] >= 0) & (s.y == 1)) for split, s in splits.items()}
    if any(len(v) == 0 for v in sel.values()):
        raise WorkbookError(f"dataset {splits.name!r}: 'type' labels present but no interacting pair with a type "
                            f"in some split ({ {k_: len(v) for k_, v in sel.items()} })")
    y = {split: s.extras["type"][sel[split]].astype(np.int64) for split, s in splits.items()}
    top = max(int(v.max()) for v in y.values())
    if top >= len(names):
        raise WorkbookError(f"dataset {splits.name!r}: type label {top} but only {len(names)} type names {names}")
    has_groups = all(c in splits.train.extras for c in ("seq", "track_a", "track_b"))
    groups = np.stack([count_type_groups(*(s.extras[c][sel[split]] for c in ("seq", "track_a", "track_b")),
                                         y[split], len(names)) if has_groups else np.zeros(len(names), np.int64)
                       for split, s in splits.items()])
    return TypeData(names=names,
                    inputs={split: tuple(a[sel[split]] for a in make_inputs(s, use_pair))
                            for split, s in splits.items()},
                    features={split: make_pair_features(s.xa[sel[split]], s.xb[sel[split]],
                                                        s.extras["pair"][sel[split]] if use_pair else None)
                              for split, s in splits.items()},
                    y=y, units={split: _subset_unit(unit_of(s), sel[split]) for split, s in splits.items()},
                    groups=groups, pairs=np.stack([np.bincount(y[s], minlength=len(names)) for s in y]))


def make_type_training(y: np.ndarray, balance: str, k: int, seed: int = 0) -> tuple[np.ndarray, list[float] | None]:
    """(training rows, class weights) for ONE balancing mechanism: ``oversample`` (rows drawn up to the
    largest class, no weights), ``class_weights`` (all rows, inverse-frequency weights) or ``none``."""
    if balance not in TYPE_BALANCES:
        raise WorkbookError(f"type_balance = {balance!r}; expected one of {'|'.join(TYPE_BALANCES)}")
    if balance == "oversample":
        return make_balanced_indices(y, "oversample", seed), None
    weights = make_class_weights(y, k).tolist() if balance == "class_weights" else None
    return np.arange(len(y)), weights


def make_balanced_indices(y: np.ndarray, strategy: str, seed: int = 0) -> np.ndarray:
    """Training rows after class balancing: ``oversample`` (every class drawn up to the largest,
    with replacement), ``undersample`` (every class cut to the smallest present), ``none``."""
    y = np.asarray(y)
    if strategy == "none":
        return np.arange(len(y))
    if strategy not in ("oversample", "undersample"):
        raise WorkbookError(f"balance strategy = {strategy!r}; expected one of oversample|undersample|none")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max() if strategy == "oversample" else counts.min()
    parts = []
    for c, n in zip(classes, counts):
        rows = np.flatnonzero(y == c)
        if strategy == "oversample":
            extra = rng.choice(rows, size=target - n, replace=True) if target > n else rows[:0]
            parts.append(np.concatenate([rows, extra]))
        else:
            parts.append(rng.choice(rows, size=target, replace=False))
    return np.sort(np.concatenate(parts))


def train_type_head(td: TypeData, stage1_model, kind: str, params: Mapping[str, Any], out: Path, device: str) -> dict:
    """The K-class head: encoder, fusion and hidden layer from stage 1, new last layer; trained with one
    balancing mechanism and early-stopped on validation macro-F1 (the kept weights are its best epoch)."""
    seed, balance = int(params["seed"]), str(params["type_balance"])
    rows, weights = make_type_training(td.y["train"], balance, td.k, seed)
    spec = copy.deepcopy(stage1_model.spec)
    spec["kwargs"].update(num_classes=td.k, dropout=float(params["type_dropout"]))
    torch.manual_seed(seed)
    model = create_model(spec["name"], **spec["kwargs"])
    transfer = transfer_weights(model, stage1_model.state_dict())   # encoder, fusion; head's last layer differs
    if params["freeze_backbone"]:
        for n_, p in model.named_parameters():
            if n_.startswith("encoder."):
                p.requires_grad_(False)
    task = MulticlassTask(td.k, loss_name="ce", class_weights=weights)
    cfg = make_train_config(params, kind, epochs=int(params["type_epochs"]), lr=float(params["type_lr"]),
                            weight_decay=float(params["type_weight_decay"]), patience=int(params["type_patience"]),
                            monitor="f1", amp=False, augment=False, checkpoint=False, log_every=0,
                            warmup_epochs=min(float(params["warmup_epochs"]), float(params["type_epochs"]) - 1))
    res = train_model(model, task, (*[a[rows] for a in td.inputs["train"]], td.y["train"][rows]),
                      (*td.inputs["val"], td.y["val"]), cfg, out_dir=out, device=device)
    best = res.best.get("monitor") or {}
    kept = next((h for h in res.history if h["epoch"] == best.get("epoch")), res.history[-1])
    val_prob = predict(model, task, td.inputs["val"], device=device)
    return {"val_prob": val_prob, "val_macro_f1": _macro_f1(td.y["val"], val_prob.argmax(1), td.k),
            "test_prob": predict(model, task, td.inputs["test"], device=device), "history": res.history,
            "epochs_run": res.epochs_run, "stopped_early": bool(res.stopped_early), "best_epoch": kept["epoch"],
            "kept_train_loss": kept["train_loss"], "kept_val_loss": kept["val_loss"], "transfer": transfer,
            "train_rows": int(len(rows)), "class_weights": weights, "balance": balance, "spec": spec,
            "frozen": bool(params["freeze_backbone"])}


def _lgbm_fit(x: dict, y: dict, k: int, setting: dict, params: Mapping[str, Any]):
    """One LightGBM fit with balanced class weights, rounds early-stopped on validation log-loss; returns
    (val and test probabilities [N, k], rounds used)."""
    import lightgbm as lgb  # deferred: a heavy import only this baseline needs

    clf = lgb.LGBMClassifier(n_estimators=int(params["lgbm_estimators"]), learning_rate=0.05, class_weight="balanced",
                             subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=int(params["seed"]),
                             n_jobs=int(params.get("num_threads", 0)) or torch.get_num_threads(), verbose=-1,
                             **setting)
    seen = np.isin(y["val"], np.unique(y["train"]))   # early stopping can only score classes seen in training
    fit_kw: dict[str, Any] = {}
    if seen.any():
        xv, yv = x["val"][seen], y["val"][seen]
        # Newer LightGBM names the validation data eval_X/eval_y (eval_set is deprecated there).
        fit_kw = ({"eval_X": (xv,), "eval_y": (yv,)} if "eval_X" in inspect.signature(clf.fit).parameters
                  else {"eval_set": [(xv, yv)]})
        fit_kw["callbacks"] = [lgb.early_stopping(30, verbose=False)]
    clf.fit(x["train"], y["train"], **fit_kw)
    best = int(clf.best_iteration_ or clf.n_estimators) if fit_kw else clf.n_estimators

    def full(p: np.ndarray) -> np.ndarray:            # classes absent from training get probability 0
        out = np.zeros((len(p), k))
        out[:, clf.classes_.astype(int)] = p
        return out
    return (full(clf.predict_proba(x["val"], num_iteration=best)), full(clf.predict_proba(x["test"], num_iteration=best)),
            best)


def train_type_lgbm(td: TypeData, params: Mapping[str, Any]) -> dict | None:
    """LightGBM on the same pairs' symmetric features, balanced class weights, ``num_leaves`` x
    ``min_child_samples`` chosen on validation macro-F1; None when training holds a single class."""
    if len(np.unique(td.y["train"])) < 2:
        return None
    grid, fits = [], []
    for nl in LGBM_GRID["num_leaves"]:
        for mcs in LGBM_GRID["min_child_samples"]:
            setting = {"num_leaves": nl, "min_child_samples": mcs}
            val_prob, test_prob, rounds = _lgbm_fit(td.features, td.y, td.k, setting, params)
            f1 = _macro_f1(td.y["val"], val_prob.argmax(1), td.k)
            grid.append({**setting, "rounds": rounds, "val_macro_f1": f1})
            fits.append((val_prob, test_prob))
    best = int(np.argmax([g["val_macro_f1"] for g in grid]))
    return {"val_prob": fits[best][0], "test_prob": fits[best][1], "chosen": grid[best],
            "grid": pd.DataFrame(grid).rename_axis("setting")}


def _class_stats(w: np.ndarray, y: np.ndarray, pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-class precision / recall / F1 [R, k], macro-F1 and accuracy [R] under row weights ``w`` [R, N]
    (one row of ones is the plain estimate; bootstrap weights give the replicates). Macro-F1 averages the
    classes present in each replicate, as `evaluate_multiclass` does."""
    onehot_y, onehot_p = np.eye(k, dtype=w.dtype)[y], np.eye(k, dtype=w.dtype)[pred]
    tp, sup, pp = w @ (onehot_y * onehot_p), w @ onehot_y, w @ onehot_p
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(pp > 0, tp / pp, 0.0)
        rec = np.where(sup > 0, tp / sup, 0.0)
        f1 = np.where(pp + sup > 0, 2 * tp / (pp + sup), 0.0)     # = 2PR / (P + R)
    present = sup > 0
    macro = (f1 * present).sum(1) / np.maximum(present.sum(1), 1)
    acc = (w @ (y == pred).astype(w.dtype)) / np.maximum(w.sum(1), 1e-12)
    return {"precision": prec, "recall": rec, "f1": f1, "support": sup, "macro_f1": macro, "accuracy": acc}


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    return float(_class_stats(np.ones((1, len(y))), y, pred, k)["macro_f1"][0])


def evaluate_type_predictions(y: np.ndarray, preds: Mapping[str, np.ndarray], k: int, unit: Unit,
                              n_boot: int = N_BOOT, seed: int = 0) -> dict[str, dict]:
    """Per model: per-class precision / recall / F1, macro-F1 and accuracy with 95% cluster-bootstrap
    intervals over ``unit`` (the same resamples for every model, so differences are paired)."""
    w = np.vstack([np.ones((1, len(y)), np.float32), unit_weights(list(unit.ids), len(y), n_boot, seed)])
    out = {}
    for name, pred in preds.items():
        s = _class_stats(w, np.asarray(y), np.asarray(pred), k)
        lo = {m: np.quantile(v[1:], 0.025, axis=0) for m, v in s.items()}
        hi = {m: np.quantile(v[1:], 0.975, axis=0) for m, v in s.items()}
        out[name] = {"point": {m: v[0] for m, v in s.items()}, "low": lo, "high": hi,
                     "boot": {m: s[m][1:] for m in ("macro_f1", "accuracy")}}
    return out


def evaluate_types(td: TypeData, head: dict, lgbm: dict | None, n_boot: int = N_BOOT) -> dict:
    """Head, LightGBM and the majority class on the test pairs: scores with intervals, and the head's
    macro-F1 minus each other model's (paired bootstrap over the unit, Holm-adjusted)."""
    y = td.y["test"]
    major = int(np.bincount(td.y["train"], minlength=td.k).argmax())
    preds = {"type head": head["test_prob"].argmax(1)}
    if lgbm is not None:
        preds["LightGBM"] = lgbm["test_prob"].argmax(1)
    preds["majority class"] = np.full(len(y), major)
    scores = evaluate_type_predictions(y, preds, td.k, td.units["test"], n_boot)
    h = scores["type head"]
    unit = td.units["test"]
    what = (f"paired {'cluster' if unit.ids else 'row'} bootstrap of macro-F1 over {unit.describe(len(y))}, "
            f"{n_boot:,} resamples; one training seed each")
    tests = adjust({name: make_comparison(Spread(h["point"]["macro_f1"] - s["point"]["macro_f1"],
                                                 draws=h["boot"]["macro_f1"] - s["boot"]["macro_f1"]),
                                          unit.name, unit.n_units or len(y), what, ALPHA)
                    for name, s in scores.items() if name != "type head"})
    tests = {k: _adjusted_record(t, "type head better", "type head worse") for k, t in tests.items()}
    return {"scores": scores, "tests": tests, "majority_class": td.names[major], "preds": preds}


def run_types(splits, stage1_model, params: Mapping[str, Any], out: Path, device: str) -> dict | None:
    """The type head, the tuned LightGBM and their evaluation; None when the data has no type labels."""
    td = make_type_data(splits)
    if td is None:
        return None
    head = train_type_head(td, stage1_model, splits.kind, params, out, device)
    lgbm = train_type_lgbm(td, params)
    ev = evaluate_types(td, head, lgbm)
    s = ev["scores"]["type head"]["point"]
    table = pd.DataFrame({m: s[m] for m in ("precision", "recall", "f1")}, index=pd.Index(td.names, name="class"))
    table["support"] = td.pairs[2]
    summary = {"n": int(len(td.y["test"])), "accuracy": float(s["accuracy"]), "macro_f1": float(s["macro_f1"]),
               "class_names": td.names, "confusion": _confusion(td.y["test"], ev["preds"]["type head"], td.k)}
    atomic_write_text(out / "evaluation_report.txt", make_multiclass_report(
        f"Stage 2 interaction types: {splits.name} (test, interacting pairs)",
        {**summary, "acc_ci_low": float(ev["scores"]["type head"]["low"]["accuracy"]),
         "acc_ci_high": float(ev["scores"]["type head"]["high"]["accuracy"])}, table)
        + f"\ntype_balance {head['balance']} (one mechanism), freeze_backbone {head['frozen']}; training rows "
          f"{head['train_rows']}; early stopping on validation macro-F1: epoch {head['best_epoch']} of "
          f"{head['epochs_run']} kept\nintervals: cluster bootstrap over {td.units['test'].describe(summary['n'])}\n")
    return {"data": td, "head": head, "lgbm": lgbm, "eval": ev, "summary": summary, "table": table,
            "names": td.names}


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    return np.bincount(np.asarray(y) * k + np.asarray(pred), minlength=k * k).reshape(k, k).tolist()


# ------------------------------------------------------------------------------ one dataset
@dataclass
class Stage2Run:
    name: str
    kind: str
    generated: bool
    source: str
    out_dir: Path
    threshold: float
    unit: Unit
    stage1_path: Path
    stage1_test: dict
    stage1_val: dict
    stage1_test_prob: np.ndarray
    model_spec: dict
    n_params: int
    transfer: dict
    config: dict
    history: list[dict]
    epochs_run: int
    fit_s: float
    val_y: np.ndarray
    test_y: np.ndarray
    val_prob: np.ndarray
    test_prob: np.ndarray
    eval_val: dict
    eval_test: dict
    stage2: SeedRuns
    matched: SeedRuns
    baseline: dict | None = None
    comparisons: dict[str, dict] = field(default_factory=dict)
    ablation: list[dict] = field(default_factory=list)
    ablation_tests: dict[str, dict] = field(default_factory=dict)
    types: dict | None = None
    type_note: str = ""
    amp_probe: dict | None = None
    recall: dict | None = None      # scene data only: recall of interacting test pairs (first seed)

    @property
    def train_samples_per_s(self) -> float:
        return train_samples_per_s(self.history)

    @property
    def amp_speedup(self) -> float:
        """Training samples/s with mixed precision / without (the speed probe)."""
        return float(self.amp_probe["speedup"]) if self.amp_probe else float("nan")


def _score_stage1(model, splits, use_pair: bool, params: Mapping[str, Any],
                  device: str) -> tuple[dict, dict, np.ndarray]:
    """The stage-1 checkpoint's val and test scores and its test probabilities."""
    thr, task = float(params["threshold"]), _binary_task("bce", params)
    val_prob, test_prob = (predict(model, task, make_inputs(s, use_pair), device=device).astype(np.float64)
                           for s in (splits.val, splits.test))
    return evaluate_binary(splits.val.y, val_prob, thr), evaluate_binary(splits.test.y, test_prob, thr), test_prob


def _write_stage2_files(run: Stage2Run, splits, cfg, params: Mapping[str, Any], device: str) -> None:
    """evaluation_report.txt and config.json (the run card) in the dataset's folder."""
    spec, thr = run.model_spec, float(params["threshold"])
    atomic_write_text(run.out_dir / "evaluation_report.txt", make_evaluation_report(
        f"Stage 2 evaluation: {run.name} ({spec['name']} {spec['kwargs']}), first seed {run.stage2.seeds[0]}",
        {"stage 2 model, val": run.eval_val, "stage 2 model, test": run.eval_test,
         "stage 1 checkpoint, test": run.stage1_test},
        notes=[f"stage-1 checkpoint: {run.stage1_path}",
               f"weights started from stage 1: {run.transfer['copied']} of {run.transfer['total']} tensors",
               f"loss: focal (alpha {params['focal_alpha']}, gamma {params['focal_gamma']}; alpha < 0 means no "
               "class weighting); " + ("mixed precision (autocast)" if params["amp"] else "float32, no mixed precision"),
               f"seeds {run.stage2.seeds}: test accuracy per seed "
               + ", ".join(f"{a:.4f}" for a in run.stage2.accuracies(run.test_y, thr)),
               f"threshold {thr:.2f} stated in advance (not tuned on test)"]))
    atomic_write_json(run.out_dir / "config.json", make_config(
        notebook="03_stage2", description=f"Stage 2 on {run.name} (stage 2 of docs/method.md)",
        params=dict(params), out_dir=str(run.out_dir), profile=os.environ.get(ENV_PROFILE, "interactive"),
        device=str(device), dataset=make_dataset_card(splits, evaluate_leakage(splits)),
        model={"architecture": spec["name"], "kwargs": spec["kwargs"], "parameters": run.n_params,
               "pretrained": f"stage 1 ({run.stage1_path})", "task": "binary", "output_dim": 1},
        training={"loss_function": "focal", "focal_alpha": params["focal_alpha"], "focal_gamma": params["focal_gamma"],
                  "optimizer": "AdamW", "effective_batch_size": cfg.batch_size * cfg.grad_accum_steps,
                  "workers": 0, "seeds": run.stage2.seeds, "epochs_run_per_seed": run.stage2.epochs_run,
                  **cfg.to_dict()}))


def _add_types_and_ablation(run: Stage2Run, splits, s1_model, s1_spec: dict, s1_state: dict,
                            params: Mapping[str, Any], device: str) -> None:
    """The type head (where the data has type labels), the ablation and the mixed-precision probe."""
    if params["run_types"]:
        run.types = run_types(splits, s1_model, params, run.out_dir / "type", device)
        if run.types is None:
            run.type_note = f"{run.name} has no 'type' labels: type classification skipped."
    else:
        run.type_note = "type classification turned off (run_types false)."
    if params["run_ablation"]:
        run.ablation = run_ablation(splits, s1_spec, s1_state, params, run.stage2, run.out_dir, device)
        run.ablation_tests = evaluate_ablation(run)
    run.amp_probe = measure_amp_speed(splits, run.model_spec, s1_state, params, device)


def run_stage2(dataset: str, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
               device: str = "cpu", label: str | None = None) -> Stage2Run:
    """Stage 2 on one dataset: seeded stage-2 runs, the matched stage-1 control, 02's strongest baseline,
    the type head (when labelled), the ablation, and their paired comparisons."""
    splits, out, use_pair = open_dataset(dataset, run_dir, out_dir, label)
    ck_path = find_stage1_checkpoint(splits.name, run_dir, str(params["stage1_checkpoint"]))
    s1_model, ck = load_stage1_model(ck_path, splits)
    s1_spec, s1_state = ck["model_spec"], ck["model_state_dict"]
    s1_val, s1_test, s1_test_prob = _score_stage1(s1_model, splits, use_pair, params, device)
    spec = make_stage2_model_spec(s1_spec, params)
    stage2, fit = train_stage2_seeds(spec, s1_state, splits, params, out, device)
    write_prediction_file(out, "stage2", fit["val_prob"], fit["test_prob"], splits.val.y, splits.test.y,
                          threshold=float(params["threshold"]))
    res, cfg = fit["result"], fit["config"]
    run = Stage2Run(name=splits.name, kind=splits.kind, generated=splits.generated, source=splits.source,
                    out_dir=out, threshold=float(params["threshold"]), unit=unit_of(splits.test), stage1_path=ck_path,
                    stage1_test=s1_test, stage1_val=s1_val, stage1_test_prob=s1_test_prob, model_spec=spec,
                    n_params=fit["n_params"], transfer=fit["transfer"], config=cfg.to_dict(), history=res.history,
                    epochs_run=res.epochs_run, fit_s=fit["fit_s"], val_y=splits.val.y, test_y=splits.test.y,
                    val_prob=fit["val_prob"], test_prob=fit["test_prob"], eval_val=fit["eval_val"],
                    eval_test=fit["eval_test"], stage2=stage2,
                    matched=train_matched_stage1(s1_spec, s1_state, splits, params, stage2, out, device),
                    baseline=load_best_baseline(run_dir, splits, float(params["threshold"])))
    run.comparisons = evaluate_stage2_comparisons(run)
    run.recall = evaluate_scene_recall(splits, run.test_prob, run.threshold, run.unit)
    _add_types_and_ablation(run, splits, s1_model, s1_spec, s1_state, params, device)
    _write_stage2_files(run, splits, cfg, params, device)
    return run


def run_stage2_datasets(datasets, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
                        device: str = "cpu") -> dict[str, Stage2Run]:
    """`run_stage2` for every dataset, keyed by the dataset's name."""
    make_seeds(params)                           # a bad seeds value stops here, before any training
    if str(params["type_balance"]) not in TYPE_BALANCES:
        raise WorkbookError(f"type_balance = {params['type_balance']!r}; expected one of {'|'.join(TYPE_BALANCES)}")
    labels = dataset_labels(list(datasets))     # safe, unique folder names: two folders called x stay apart
    for line in describe_renamed(list(datasets), labels):
        print(line)
    pairs = list(zip(datasets, labels))
    runs = [run_stage2(d, run_dir, out_dir, params, device, label) for d, label in progress(pairs, "stage 2 datasets")]
    return {r.name: r for r in runs}


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
        refs["best_baseline"] = np.array([_correct(run.baseline["test_prob"], y, thr).mean()])
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
def _key(text: str) -> str:
    """'layers [2, 2, 2]' -> 'layers_2_2_2' (metric keys)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


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
                   best_baseline_test_acc=float(_correct(run.baseline["test_prob"], y, thr).mean()))
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
        out[_key(a["variant"])] = m
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
def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if int(n) == 1 else "s")


def describe_recipe(params: Mapping[str, Any]) -> str:
    """What ran, from the parameters: the stage-2 recipe (mixed precision only when amp is on), seeds,
    stopping rule and cap, and the type head's balancing and stopping."""
    seeds = make_seeds(params)
    amp = "mixed precision (autocast)" if params["amp"] else "float32 (amp off: no mixed precision)"
    return (f"What ran: stage 2 = SE-ResNet {list(params['layers'])} for image pairs, MLP {list(params['mlp_hidden'])} "
            f"for vector pairs, focal loss (gamma {params['focal_gamma']}), {amp}; every binary recipe trained with "
            f"{len(seeds)} seeds ({', '.join(map(str, seeds))}), each until validation {params['monitor']} has not "
            f"improved for {_epochs(params['patience'])} (at most {params['epochs']}). Type head: type_balance "
            f"{params['type_balance']} (one mechanism), early stopping on validation macro-F1 (patience "
            f"{params['type_patience']}, at most {params['type_epochs']} epochs).")


def _vtext(t: dict) -> str:
    """'stage 2 better (p = 0.003, Holm)': the verdict words and the Holm-adjusted p of one comparison."""
    return f"{t['verdict'].split(' (')[0]} ({format_p(t['p_holm'], t.get('p_floor'))}, Holm)"


def describe_budget(runs: Mapping[str, Stage2Run]) -> str:
    """The training budget that ran: binary runs, their epochs and fitting time, per dataset."""
    parts = []
    for r in runs.values():
        recipes = [r.stage2, r.matched] + [a["runs"] for a in r.ablation[1:]]
        n_runs = sum(len(x.seeds) for x in recipes)
        epochs = sum(sum(x.epochs_run) for x in recipes)
        fit_s = sum(sum(x.fit_s) for x in recipes)
        typed = f" + type head {r.types['head']['epochs_run']} epochs" if r.types is not None else ""
        parts.append(f"{r.name}: {n_runs} binary runs ({len(recipes)} recipes x {len(r.stage2.seeds)} seeds), "
                     f"{epochs} epochs in all{typed}, {fit_s:.0f} s of binary training on this machine")
    return "Training budget: " + "; ".join(parts) + "."


def _convergence(run: Stage2Run) -> str:
    runs = [run.stage2] + [a["runs"] for a in run.ablation[1:]]
    n = sum(len(r.seeds) for r in runs)
    stopped = sum(sum(r.stopped_early) for r in runs)
    if stopped == n:
        return f"all {n} runs stopped early (validation had flattened)"
    return (f"{n - stopped} of {n} runs hit the cap of {run.config['epochs']} epochs with validation possibly still "
            "improving")


def describe_comparison(run: Stage2Run) -> str:
    y, thr = run.test_y, run.threshold
    acc, m = run.stage2.accuracies(y, thr), run.comparisons["matched_stage1"]
    parts = [f"{run.name}: stage 2 test accuracy {acc.mean():.3f} ± {_sd(acc):.3f} "
             f"(mean ± sd over {len(acc)} seeds; {_convergence(run)}). Against stage 1 trained on for the same "
             f"epochs: {m['diff']:+.3f} (Holm-adjusted CI {m['ci_low']:+.3f} to {m['ci_high']:+.3f}; per seed "
             f"{_seed_text(m['per_seed'])}), {_vtext(m)}"]
    if "best_baseline" in run.comparisons:
        b = run.comparisons["best_baseline"]
        parts.append(f"against 02's strongest baseline ({run.baseline['name']}, chosen on validation): "
                     f"{b['diff']:+.3f} ({b['ci_low']:+.3f} to {b['ci_high']:+.3f}), {_vtext(b)}")
    else:
        parts.append("notebook 02 wrote no baseline prediction files, so no baseline comparison")
    return "; ".join(parts) + "." + _describe_recall(run)


def _describe_recall(run: Stage2Run) -> str:
    """Scene data: the first seed's recall of interacting test pairs, sampled and over all of them."""
    r = run.recall
    if r is None:
        return ""
    s = r["sampled"]
    text = (f" Recall of interacting test pairs (first seed): {s['mean']:.3f} ({s['ci_low']:.3f} to "
            f"{s['ci_high']:.3f}) over the {r['n_sampled']:,} that notebook 01 sampled")
    if r["all"] is None:
        return text + "; meta.json has no 'all_interacting_pairs', so recall over all of them cannot be computed."
    a = r["all"]
    return text + (f"; over all {r['n_all']:,} interacting pairs of the test frames, the ones the sampling dropped "
                   f"counted as misses, {a['mean']:.3f} ({a['ci_low']:.3f} to {a['ci_high']:.3f}).")


def describe_ablation(run: Stage2Run) -> str:
    if not run.ablation:
        return f"{run.name}: no ablation run."
    parts = []
    for a in run.ablation[1:]:
        t = run.ablation_tests[a["variant"]]
        parts.append(f"{a['variant']}: {t['diff']:+.3f} ({t['ci_low']:+.3f} to {t['ci_high']:+.3f}; "
                     f"{t['same_sign']} of {t['n_seeds']} seeds agree in sign), {_vtext(t)}")
    focal = run.ablation_tests.get("BCE instead of focal")
    focal_txt = _describe_focal_claim(focal) if focal is not None else ""
    return (f"{run.name}: test accuracy of each variant minus the stage-2 reference, over {len(run.stage2.seeds)} "
            "seeds — " + "; ".join(parts) + "." + focal_txt + " " + _count_helped(run.ablation_tests)
            + _amp_text(run))


def _amp_text(run: Stage2Run) -> str:
    """The mixed-precision speed probe in one sentence, against M1's GPU claim."""
    if not run.amp_probe:
        return ""
    amp = run.amp_speedup
    return (f" Mixed precision speed-up {amp:.2f}x on this device (median of {run.amp_probe['repeats']} alternating "
            f"timed epochs per mode after a warm-up; M1 claims {STAGE2_CLAIMS['amp_speedup']:.0f}x on a GPU"
            + ("; here it is SLOWER" if amp < 1 else "") + ").")


def _describe_focal_claim(focal: dict) -> str:
    """Focal's gain over BCE against M1's claim, worded from the Holm-adjusted paired test: the variant is
    BCE, so focal's gain is minus its difference and the interval flips."""
    gain, lo, hi, claim = -focal["diff"], -focal["ci_high"], -focal["ci_low"], STAGE2_CLAIMS["focal_gain"]
    head = f" Focal over BCE: {gain:+.4f} (Holm-adjusted CI {lo:+.4f} to {hi:+.4f}) here vs the +{claim:.4f} M1 claims"
    if focal["p_holm"] < ALPHA:
        return head + (": focal helps here, as M1 claims." if gain > 0 else ": focal is worse here, against M1's claim.")
    test = f": the paired test cannot tell focal from BCE ({format_p(focal['p_holm'])}, Holm)"
    if lo <= claim <= hi:
        return head + test + ", and the interval includes M1's gain: this run neither reproduces nor refutes it."
    return head + test + ", and the whole interval lies below M1's gain: the claimed gain is not reproduced."


def _count_helped(tests: Mapping[str, dict]) -> str:
    """How many of the stage-2 additions helped: a variant that takes one away and is worse (Holm)."""
    helped = sum(t["p_holm"] < ALPHA and t["diff"] < 0 for t in tests.values())
    hurt = sum(t["p_holm"] < ALPHA and t["diff"] > 0 for t in tests.values())
    return (f"Of {len(tests)} additions, {helped} helped, {hurt} made it worse (the variant without it was better) "
            f"and {len(tests) - helped - hurt} made no difference the paired test could tell (Holm, alpha {ALPHA:g}).")


def describe_ablation_all(runs: Mapping[str, Stage2Run]) -> str:
    return "\n".join(describe_ablation(r) for r in runs.values())


def _groups_note(td: TypeData) -> str:
    split, cls = np.unravel_index(int(td.groups.argmin()), td.groups.shape)
    where = f"'{td.names[cls]}' in {('train', 'val', 'test')[split]}"
    if td.min_groups >= MIN_GROUPS:
        return f"every split holds at least {td.min_groups} groups of every class (fewest: {where})"
    return (f"this profile's data cannot hold {MIN_GROUPS} groups of every class in every split: the fewest is "
            f"{td.min_groups} ({where}), so per-class scores of such classes rest on a handful of groups")


def describe_types(run: Stage2Run) -> str:
    if run.types is None:
        return run.type_note
    t, td = run.types, run.types["data"]
    sc, tests = t["eval"]["scores"], t["eval"]["tests"]
    h = sc["type head"]
    f1 = h["point"]["f1"]
    present = td.pairs[2] > 0
    worst = int(np.flatnonzero(present)[np.argmin(f1[present])])
    text = (f"{run.name}: type head macro-F1 {h['point']['macro_f1']:.3f} ({_ci(h, 'macro_f1')}), accuracy "
            f"{h['point']['accuracy']:.3f} on {t['summary']['n']} interacting test pairs "
            f"({td.units['test'].describe(t['summary']['n'])}); majority class macro-F1 "
            f"{sc['majority class']['point']['macro_f1']:.3f} (head vs majority: {_vtext(tests['majority class'])})")
    if "LightGBM" in sc:
        lt = tests["LightGBM"]
        text += (f"; tuned LightGBM {sc['LightGBM']['point']['macro_f1']:.3f}: head minus LightGBM {lt['diff']:+.3f} "
                 f"({lt['ci_low']:+.3f} to {lt['ci_high']:+.3f}), {_vtext(lt)}")
        if lt["diff"] < 0:
            text += ". " + _describe_type_gap(run)
    return (text + f". Weakest class '{td.names[worst]}' (F1 {f1[worst]:.3f}, {td.pairs[2][worst]} test pairs in "
            f"{td.groups[2][worst]} groups); {_groups_note(td)}.")


def _describe_type_gap(run: Stage2Run) -> str:
    """Measured evidence of why the head falls short of LightGBM: validation macro-F1 of both (what each
    was chosen on), the class with the largest F1 gap and its groups, and the head's loss gap."""
    t, td = run.types, run.types["data"]
    sc, head = t["eval"]["scores"], t["head"]
    gap = np.where(td.pairs[2] > 0, sc["LightGBM"]["point"]["f1"] - sc["type head"]["point"]["f1"], -np.inf)
    c = int(np.argmax(gap))
    return (f"The head does NOT match the tabular baseline on test. Measured: on validation, where each was chosen, "
            f"the head scored macro-F1 {head['val_macro_f1']:.3f} and LightGBM {t['lgbm']['chosen']['val_macro_f1']:.3f}; "
            f"the largest test gap is '{td.names[c]}' (F1 {sc['type head']['point']['f1'][c]:.3f} vs "
            f"{sc['LightGBM']['point']['f1'][c]:.3f}, {td.pairs[2][c]} test pairs in {td.groups[2][c]} groups); at its "
            f"kept epoch {head['best_epoch']} of {head['epochs_run']} the head's validation loss was "
            f"{head['kept_val_loss']:.2f} against a training loss of {head['kept_train_loss']:.2f}")


def describe_types_all(runs: Mapping[str, Stage2Run]) -> str:
    return "\n".join(describe_types(r) for r in runs.values())


def describe_runs(runs: Mapping[str, Stage2Run]) -> str:
    """Per dataset, stage 2 against its references (`describe_comparison`), and the method notes' own figure."""
    claim = (f"For reference, the method notes report {STAGE2_CLAIMS['val_acc']:.2%} validation accuracy for "
             "stage 2 on their own 28x28 data: other data, so not a target these runs can replicate.")
    return "\n".join([describe_comparison(r) for r in runs.values()] + [claim])


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
    ablation = {"n": len(tests), "helped": sum(t["p_holm"] < ALPHA and t["diff"] < 0 for t in tests),
                "hurt": sum(t["p_holm"] < ALPHA and t["diff"] > 0 for t in tests)} if tests else None
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
        ax.axvline(_correct(run.baseline["test_prob"], y, thr).mean(), color="tab:red", ls=":",
                   label=f"02's strongest baseline ({run.baseline['name']})")
    ax.set_yticks(range(len(recipes)), [n for n, _ in recipes])
    ax.set_xlabel("accuracy on the test split (dots: seeds; bar: mean)")
    ax.set_title(f"{run.name}: test accuracy per seed", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2, frameon=False)
    ax.figure.tight_layout()
    return ax.figure
