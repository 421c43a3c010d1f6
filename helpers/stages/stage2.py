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

The type head is `helpers.evaluation.type_head`; the tables, figures and words are in `helpers.reports.stage2`.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

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
from helpers.evaluation.metrics import correct_at, evaluate_binary, make_evaluation_report
from helpers.evaluation.type_head import adjusted_record, N_BOOT, run_types, TYPE_BALANCES
from helpers.evaluation.recall import evaluate_scene_recall
from helpers.evaluation.stats import adjust, compare_over_seeds, Unit, unit_of
from helpers.models.pair import transfer_weights
from helpers.models.registry import count_parameters, create_model, create_model_from_spec
from helpers.training.checkpoints import load_checkpoint
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask

# What notebook 03 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["find_stage1_checkpoint", "load_stage1_model", "run_stage2", "run_stage2_datasets"]


ALPHA = 0.05                 # level of every paired test's verdict


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


def variant_key(text: str) -> str:
    """'layers [2, 2, 2]' -> 'layers_2_2_2' (metric keys and ablation folders)."""
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


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
        folder = out / "ablation" / variant_key(variant)

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
    val_acc = [float(correct_at(base.val_prob[:, i], base.val_y, threshold).mean()) for i in keep]
    i = keep[int(np.argmax(val_acc))]
    return {"name": base.names[i].split("/", 1)[1].removeprefix("baseline_"), "file": str(base.files[i]),
            "val_acc": max(val_acc), "test_prob": base.test_prob[:, i],
            "candidates": {base.names[j].split("/", 1)[1].removeprefix("baseline_"): a for j, a in zip(keep, val_acc)}}


def evaluate_stage2_comparisons(run: "Stage2Run") -> dict[str, dict]:
    """Stage 2 (over seeds) minus each reference on the same test rows, Holm-adjusted over the references:
    stage 1 trained on for the same epochs, the stage-1 checkpoint of 02, and 02's strongest baseline."""
    y, thr = run.test_y, run.threshold
    refs = {"matched_stage1": run.matched.correct(y, thr), "stage1_checkpoint": correct_at(run.stage1_test_prob, y, thr)}
    if run.baseline is not None:
        refs["best_baseline"] = correct_at(run.baseline["test_prob"], y, thr)
    s2 = run.stage2.correct(y, thr)
    return _seed_family({k: (c, s2) for k, c in refs.items()}, run.unit, "stage 2 better", "stage 2 worse")


def _seed_family(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], unit: Unit, better: str, worse: str
                 ) -> dict[str, dict]:
    """`compare_over_seeds` for each (reference, other) correctness pair [S, N] (a single model: [N]), paired
    by seed, Holm-adjusted as one table; flat records for the tables and metrics."""
    tests = adjust({k: compare_over_seeds(a, b, unit, paired_seeds=True, n_boot=N_BOOT, alpha=ALPHA)
                    for k, (a, b) in pairs.items()})
    return {k: adjusted_record(t, better, worse) for k, t in tests.items()}


def evaluate_ablation(run: "Stage2Run") -> dict[str, dict]:
    """Each variant minus the reference (the stage-2 runs), per seed and across seeds, Holm over variants."""
    y, thr = run.test_y, run.threshold
    ref = run.ablation[0]["runs"].correct(y, thr)
    return _seed_family({a["variant"]: (ref, a["runs"].correct(y, thr)) for a in run.ablation[1:]}, run.unit,
                        "variant better", "variant worse")


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


