"""Notebook 04: how much of an architecture's accuracy is the seed? The models notebooks 02 and 03 report,
retrained with several seeds, each member in its own worker process.

A member takes its recipe from the notebook that reports it (`load_recipe`): the model spec and training
config stored in that notebook's scored checkpoint (widths, fusion, CBAM/SE, augmentation, epochs, learning
rate), its loss from its run card, and for stage 2 the stage-1 weights 03 started from. Only the seed
changes. Every member early-stops on pairs whose images it never trained on (the validation split, or a
holdout of training source images), writes its folder (``config.json``, ``history.json`` and TensorBoard event
files, ``metrics.json``, ``predictions.npz``, ``model.pt`` with the kept weights) and a prediction file for
notebook 05. The spread is the seed standard deviation with a chi-square interval, set against the standard
error of one model's accuracy; architectures are compared by a test that counts both the seed variance and the
test split's own (with its independent unit).

The search (M1's hyper-parameter search): an Optuna study over one recipe's learning rate, weight decay and
width (`helpers.training.search`: TPE, a pruner fed by the loop's per-epoch validation accuracy, trials in
worker processes sharing a SQLite file or a database), whose best configuration is re-run over the recipe's
grid seeds and compared with the hand-set recipe per seed on the same test pairs, then across seeds
(`evaluate_tuning_gain`), next to the seed sd."""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.core.io import atomic_savez, atomic_torch_save, atomic_write_json, read_json
from helpers.core.paths import unique_slugs
from helpers.data.pairs import _uses_pair, dataset_labels, load_pair_dataset, make_inputs
from helpers.data.predictions import load_threshold, write_predictions
from helpers.evaluation.metrics import correct
from helpers.evaluation.stats import (adjust, compare, compare_over_seeds, format_p, interval, seed_prediction_bound,
                                      unit_of)
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model, list_models
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model
from helpers.training.search import (evaluate_importance, load_recipe, make_data_fingerprint, make_trial_spec,
                                     RECIPE_STEMS, run_study, StudyResult, width_value)
from helpers.training.tasks import BinaryTask
from helpers.training.workers import resolve_workers, run_in_workers, WorkerOutcome
from helpers.stages.words import markdown, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 04 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["dataset_labels", "describe_answer", "describe_comparison", "describe_failures", "describe_search",
           "describe_spread", "describe_tuning", "evaluate_tuning_gain", "handset_val_acc", "load_member_histories",
           "load_recipes", "make_answer_headline", "make_arch_summary", "make_claims_table", "make_comparison_table",
           "make_comparison_view", "make_grid", "make_headline", "make_importance_table", "make_leakage_summary",
           "make_metrics_view", "make_plan_table", "make_search_card", "make_search_spec", "make_summary_view",
           "make_test_unit", "make_trials_view", "make_tuned_grid", "make_tuned_strip", "make_tuning_view",
           "plot_member_curves", "plot_search", "plot_seed_strip", "resolve_workers", "run_search", "train_members"]


# M1 stage 3, validation accuracy per (family, seed), on the note's own 28x28 pair data.
NOTE_001_CLAIMS: dict[tuple[str, int], float] = {
    ("resnet", 42): 0.8538, ("resnet", 2023): 0.8702, ("resnet", 2024): 0.8671, ("resnet", 2025): 0.8739,
    ("fpn", 42): 0.8730,
    ("fusion", 42): 0.8538, ("fusion", 123): 0.8436, ("fusion", 456): 0.8439,
}

EARLY_STOP_SPLITS = ("val", "source_holdout")


@dataclass
class MemberSpec:
    """One member of the grid: an architecture (a recipe or a registry name) trained with one seed."""
    name: str                      # "<arch slug>_s<seed>", unique; also the folder and prediction-file name
    arch: str                      # the grid's label (e.g. "stage1")
    seed: int
    model: str = ""                # registry name ("" = the label itself)
    dataset: str = ""              # built-in name or folder
    label: str = ""                # the dataset's folder name (dataset_labels)
    run_dir: str = ""              # where the dataset's notebook wrote it
    out_dir: str = ""              # this member's folder
    predictions_path: str = ""     # <run>/04_multi_seed/<label>/predictions/<name>.npz
    recipe: str = ""               # notebook stem the model and training come from ("" = given here)
    vector_model: str = ""         # registry name used instead when the dataset holds vectors (no recipe)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)   # TrainConfig fields
    loss: str = "bce"
    threshold: float | None = None  # the recipe's notebook's declared threshold (a registry model: given)
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0
    start_checkpoint: str = ""     # weights the member starts from where names and shapes match ("" = none)
    early_stop_split: str = "val"  # val | source_holdout
    holdout_frac: float = 0.3      # source_holdout: share of training source images held out
    max_train: int = 0
    max_epochs: int = 0            # cap on the recipe's epochs (0 = the recipe's own)
    device: str = "cpu"
    crash: str = ""                # testing aid: "raise" | "exit" | "segv" makes this member fail


# ----------------------------------------------------------------------------------- recipes
def load_recipes(run_dir: str | Path, label: str, architectures: dict[str, dict] | None) -> dict[str, dict]:
    """`load_recipe` of every notebook the architectures name (``{"recipe": "02_stage1"}``), by stem."""
    stems = sorted({e["recipe"] for e in (architectures or {}).values() if isinstance(e, dict) and e.get("recipe")})
    bad = [s for s in stems if s not in RECIPE_STEMS]
    if bad:
        raise WorkbookError(f"architectures name recipe(s) {bad}; expected one of {', '.join(RECIPE_STEMS)}")
    return {s: load_recipe(run_dir, s, label) for s in stems}


# -------------------------------------------------------------------------------------- grid
def _check_seeds(arch: str, seeds) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise WorkbookError(f"grid[{arch!r}] = {seeds!r}: expected a non-empty list of non-negative int seeds")
    if len(set(seeds)) != len(seeds):
        raise WorkbookError(f"grid[{arch!r}] lists a seed twice: {seeds}")
    return [int(s) for s in seeds]


def _resolve_arch(arch: str, entry: Any, recipes: dict[str, dict], common: dict[str, Any]) -> dict[str, Any]:
    """MemberSpec fields of one architecture: from its recipe (entry keys override the model and its
    kwargs; ``start: ""`` trains from scratch), else the registry model with the common training settings."""
    if not isinstance(entry, dict):
        raise WorkbookError(f"architectures[{arch!r}] = {entry!r}: expected a mapping with a 'recipe' or 'model' key")
    entry = dict(entry)
    stem = entry.pop("recipe", "")
    if stem and stem not in recipes:
        raise WorkbookError(f"architectures[{arch!r}] names recipe {stem!r}, which was not loaded "
                            f"(loaded: {sorted(recipes) or 'none'}; known: {', '.join(RECIPE_STEMS)})")
    r = recipes.get(stem, {})
    # One threshold per model: a recipe's is the one its notebook declared; a registry model's is given here.
    given = entry.pop("threshold", None)
    if stem and given is not None:
        raise WorkbookError(f"architectures[{arch!r}] sets threshold {given!r}, but its recipe {stem} declared one: "
                            f"set it in {stem}'s parameters")
    threshold = r["threshold"] if stem else (given if given is not None else common.get("threshold"))
    start = entry.pop("start", r.get("start", ""))
    model = entry.pop("model", r.get("model", arch))
    fields = {"recipe": stem, "model": model, "vector_model": entry.pop("vector_model", ""),
              "model_kwargs": {**r.get("kwargs", {}), **entry}, "start_checkpoint": str(start or ""), **common,
              "threshold": None if threshold is None else float(threshold)}
    if stem:   # the recipe's training and loss; the common train dict may only shorten or adjust it
        fields.update(train={**r["train"], **common.get("train", {})}, loss=r["loss"],
                      focal_alpha=r["focal_alpha"], focal_gamma=r["focal_gamma"])
    registry = list_models()
    for m in (fields["model"], fields["vector_model"]):
        if m and m not in registry:
            raise WorkbookError(f"grid/architectures: {arch!r} names model {m!r}, which is not in the registry "
                                f"({', '.join(registry)}); add an architectures entry "
                                f"{{{arch!r}: {{'recipe': '02_stage1'}}}} or {{{arch!r}: {{'model': <registry name>}}}}")
    if threshold is None:
        raise WorkbookError(f"architectures[{arch!r}] is a registry model, and no notebook declared its decision "
                            f"threshold: give one, e.g. {{{arch!r}: {{'model': ..., 'threshold': 0.5}}}}")
    return fields


def make_grid(grid: dict[str, Sequence[int]], dataset: str, run_dir: str | Path, out_dir: str | Path,
              architectures: dict[str, dict] | None = None, label: str | None = None,
              recipes: dict[str, dict] | None = None, **common: Any) -> list[MemberSpec]:
    """Expand ``{"label": [seed, ...], ...}`` into member specs (one folder each).

    Member folders: ``out_dir/<dataset label>/members/<arch slug>_s<seed>/``; prediction files for
    stacking: ``out_dir/<dataset label>/predictions/<arch slug>_s<seed>.npz``. ``label`` defaults to
    `dataset_labels` of the dataset alone.

    architectures: ``{"label": {"recipe": "02_stage1" | "03_stage2", [model, kwargs, start overrides]}}``
    (the recipe of the notebook that reports the model, `load_recipes`), or ``{"label": {"model":
    registry name, "vector_model": name for vector data, **create_model kwargs}}``; a label without an
    entry must itself be a registry name. recipes: `load_recipes` output (loaded from ``run_dir`` when
    omitted). common: MemberSpec fields shared by all members (train=..., early_stop_split=..., device=...).
    """
    if not isinstance(grid, dict) or not grid:
        raise WorkbookError(f"grid = {grid!r}: expected a non-empty mapping of architecture -> list of seeds, "
                            'e.g. {"stage1": [42, 2023]}')
    label = label or dataset_labels([str(dataset)])[0]
    architectures = architectures or {}
    if recipes is None:
        recipes = load_recipes(run_dir, label, {a: architectures.get(a, {}) for a in grid})
    # Labels become folder and file names: safe, unique slugs (the table shows label and name side by side).
    slugs = dict(zip(grid, unique_slugs([str(a) for a in grid])))
    root = Path(out_dir) / label
    specs = []
    for arch, seeds in grid.items():
        fields = _resolve_arch(arch, architectures.get(arch, {}), recipes, common)
        for s in _check_seeds(arch, seeds):
            name = f"{slugs[arch]}_s{s}"
            specs.append(MemberSpec(name=name, arch=arch, seed=s, dataset=str(dataset), label=label,
                                    run_dir=str(run_dir), out_dir=str(root / "members" / name),
                                    predictions_path=str(root / "predictions" / f"{name}.npz"), **fields))
    return specs


def make_plan_table(specs: Sequence[MemberSpec]) -> pd.DataFrame:
    """The grid as planned: one row per member with the recipe it follows and what that recipe sets."""
    rows = []
    for s in specs:
        t = s.train
        epochs = min(t.get("epochs", 0), s.max_epochs) if s.max_epochs else t.get("epochs")
        rows.append({"member": s.name, "arch": s.arch, "seed": s.seed, "recipe": s.recipe or "(given here)",
                     "model": s.model or s.arch, "model_kwargs": json.dumps(s.model_kwargs), "epochs": epochs,
                     "lr": t.get("lr"), "batch_size": t.get("batch_size"), "augment": t.get("augment", False),
                     "loss": s.loss, "starts_from": Path(s.start_checkpoint).name if s.start_checkpoint else "scratch",
                     "early_stop_split": s.early_stop_split, "crash_planted": s.crash or ""})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ one member
_DATA_CACHE: dict[tuple[str, str, str], Any] = {}


def _load_splits(dataset: str, run_dir: str, label: str = ""):
    """Load (once per worker process) the pair dataset."""
    key = (dataset, run_dir, label)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset per worker at a time keeps memory flat
        _DATA_CACHE[key] = load_pair_dataset(dataset, run_dir, label=label or None)
    return _DATA_CACHE[key]


def _model_and_kwargs(splits, spec: MemberSpec) -> tuple[str, dict[str, Any]]:
    """Registry name and ``create_model`` kwargs: input shapes from the data, then the member's kwargs."""
    s = splits.train
    image = splits.kind == "image"
    name = spec.vector_model if (not image and spec.vector_model) else (spec.model or spec.arch)
    kw: dict[str, Any] = {"in_channels": int(s.xa.shape[1])} if image else {"in_features": int(s.xa.shape[1])}
    own = dict(spec.model_kwargs)
    if not image and spec.vector_model:
        # Image-encoder settings (layers, width...) mean nothing to a vector model: keep shared ones.
        own = {k: v for k, v in own.items() if k in ("fusion", "feat_dim", "dropout", "hidden")}
    kw.update(own)
    if s.extras and "pair" in s.extras and _uses_pair(splits):
        kw["pair_dim"] = int(s.extras["pair"].shape[1])
    return name, kw


def _crash(mode: str) -> None:
    if mode == "raise":
        raise RuntimeError("planted failure (crash='raise')")
    if mode == "exit":
        os._exit(3)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)


@dataclass
class _Rows:
    """Training rows a member uses: all it may see (``rows``), those it is fitted on, and its early stopping."""
    rows: np.ndarray
    fit: np.ndarray
    stop: np.ndarray | None        # training rows held out for early stopping (source_holdout), else None
    stop_data: tuple
    split: str


def _source_groups(s) -> tuple[np.ndarray, np.ndarray] | None:
    """What a pair's images come from: its sequence (scene pairs, split by sequence) or its two source images."""
    if "seq" in (s.extras or {}):
        seq = np.asarray(s.extras["seq"])
        return seq, seq
    if s.ida is not None:
        return s.ida, s.idb
    return None


def make_source_holdout(tr, rows: np.ndarray, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, early-stopping rows): a share ``frac`` of the training source images (sequences for scene
    pairs) is held out; pairs with both images held out stop, pairs with neither fit, mixed pairs are dropped
    (they would show the stopping split a training image). The same holdout for every seed (``seed`` fixed)."""
    groups = _source_groups(tr)
    if groups is None:
        raise WorkbookError("early_stop_split = 'source_holdout' needs source ids (ida/idb) or sequences (seq) in "
                            "the training split; use early_stop_split = 'val'")
    ga, gb = groups[0][rows], groups[1][rows]
    uniq = np.unique(np.concatenate([ga, gb]))
    held = np.random.default_rng(seed).choice(uniq, max(1, int(round(frac * len(uniq)))), replace=False)
    ina, inb = np.isin(ga, held), np.isin(gb, held)
    fit, stop = rows[~ina & ~inb], rows[ina & inb]
    if len(np.unique(tr.y[stop])) < 2 or len(np.unique(tr.y[fit])) < 2:
        raise WorkbookError(f"source_holdout with holdout_frac {frac}: {len(stop)} early-stopping and {len(fit)} "
                            "fitting pairs, one of them without both labels; raise holdout_frac or use 'val'")
    return fit, stop


def _split_rows(spec: MemberSpec, splits) -> _Rows:
    """The rows a member trains on and what it early-stops on: the validation split (images disjoint from
    training, as in 02/03) or a holdout of training source images (`make_source_holdout`). Training rows
    are optionally capped (a seeded draw)."""
    tr, use_pair = splits.train, _uses_pair(splits)
    n = len(tr.y)
    rng = np.random.default_rng(spec.seed)
    rows = np.sort(rng.choice(n, spec.max_train, replace=False)) if 0 < spec.max_train < n else np.arange(n)
    if spec.early_stop_split == "val":
        va = splits.val
        return _Rows(rows, rows, None, (*make_inputs(va, use_pair), va.y), "val")
    if spec.early_stop_split == "source_holdout":
        fit, stop = make_source_holdout(tr, rows, spec.holdout_frac)
        inputs = make_inputs(tr, use_pair)
        return _Rows(rows, fit, stop, (*[a[stop] for a in inputs], tr.y[stop]), "source_holdout")
    raise WorkbookError(f"early_stop_split = {spec.early_stop_split!r}; expected one of {'|'.join(EARLY_STOP_SPLITS)}")


def _keys(s, rows=None, use_pair: bool = False) -> np.ndarray:
    r = slice(None) if rows is None else rows
    return make_example_keys(s.xa[r], s.xb[r], s.extras["pair"][r] if use_pair else None)


def evaluate_member_leakage(splits, rows: _Rows) -> dict[str, Any]:
    """What a member was fitted on, held against every split it is stopped or scored on: pairs with the
    same content (order-free keys) and shared source ids (sequences for scene pairs). Returns the counts
    and a verdict; nothing here trusts the split names."""
    tr, use_pair = splits.train, _uses_pair(splits)
    fit_keys = _keys(tr, rows.fit, use_pair)
    others = {"val": (splits.val, None), "test": (splits.test, None)}
    if rows.stop is not None:
        others["stop"] = (tr, rows.stop)
    groups = _source_groups(tr)
    fit_src = None if groups is None else np.unique(np.concatenate([g[rows.fit] for g in groups]))
    out: dict[str, Any] = {"compared": f"{len(fit_keys):,} fitted training pairs (content keys"
                                       + (", source ids)" if fit_src is not None else ")") + " against "
                                       + ", ".join(f"{k} ({len(s.y) if r is None else len(r):,} pairs)"
                                                   for k, (s, r) in others.items())}
    for name, (s, r) in others.items():
        out[f"{name}_pairs_shared"] = int(np.isin(_keys(s, r, use_pair), fit_keys).sum())
        g = _source_groups(s)
        if fit_src is not None and g is not None:
            src = np.unique(np.concatenate([x if r is None else x[r] for x in g]))
            out[f"{name}_sources_shared"] = int(np.intersect1d(src, fit_src).size)
    shared = sum(v for k, v in out.items() if k.endswith("_shared"))
    out["verdict"] = ("passed: no pair and no source image shared" if shared == 0
                      else f"FAILED: {shared} shared pairs/sources")
    return out


def _build_member(splits, spec: MemberSpec):
    """(registry name, kwargs, the model seeded with the member's seed and started from its checkpoint,
    what was transferred, the task, the TrainConfig)."""
    torch.manual_seed(spec.seed)  # model initialisation depends on the member's seed
    model_name, kwargs = _model_and_kwargs(splits, spec)
    model = create_model(model_name, **kwargs)
    transfer = None
    if spec.start_checkpoint:
        transfer = transfer_weights(model, read_checkpoint_file(spec.start_checkpoint)["model_state_dict"])
    task = BinaryTask(loss_name=spec.loss, alpha=spec.focal_alpha, gamma=spec.focal_gamma, threshold=spec.threshold)
    train = {**spec.train, "seed": spec.seed, "log_every": 0, "num_threads": 0, "checkpoint": False, "resume": False}
    if spec.max_epochs:
        train["epochs"] = min(int(train.get("epochs", spec.max_epochs)), spec.max_epochs)
    # Mixed precision only where the recipe asked for it and a GPU runs it (bfloat16 on CPU is slow).
    train["amp"] = bool(train.get("amp", False)) and str(spec.device).startswith("cuda")
    return model_name, kwargs, model, transfer, task, TrainConfig(**train)


def _write_member_predictions(spec: MemberSpec, out: Path, model, task, splits, rows: _Rows) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the restored best model on the validation and test splits, written to the member's
    ``predictions.npz`` and to its prediction file for notebook 05; returns (val, test)."""
    va, te, use_pair = splits.val, splits.test, _uses_pair(splits)
    val_prob = predict(model, task, make_inputs(va, use_pair), device=spec.device).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, use_pair), device=spec.device).astype(np.float64)
    atomic_savez(out / "predictions.npz", val_prob=val_prob, test_prob=test_prob, val_y=va.y, test_y=te.y,
                 threshold=np.float64(spec.threshold))
    # What this member trained on, for notebook 05's leakage check: the content keys of every training
    # row it could have seen (fitted rows and a training holdout it stopped on).
    write_predictions(spec.predictions_path, val_prob, test_prob, va.y, te.y, threshold=spec.threshold,
                      trained_on=["train"],
                      selected_on=rows.split, train_keys=_keys(splits.train, rows.rows, use_pair))
    return val_prob, test_prob


def _member_metrics(spec: MemberSpec, model_name: str, model, result, val_prob: np.ndarray, test_prob: np.ndarray,
                    splits, rows: _Rows, leakage: dict[str, Any], t0: float, cpu0: float) -> dict[str, Any]:
    """metrics.json of a member: accuracies (test with its 95% interval over the data's independent unit and
    the standard error that interval implies), the binomial SE, the leakage check and the run's facts."""
    test_correct = correct(test_prob, splits.test.y, spec.threshold)
    iv = interval(test_correct, unit_of(splits.test))
    p, n = float(test_correct.mean()), int(test_correct.size)
    best = result.best.get("monitor", {})
    return {
        "name": spec.name, "arch": spec.arch, "model": model_name, "seed": spec.seed, "recipe": spec.recipe,
        "val_acc": float(correct(val_prob, splits.val.y, spec.threshold).mean()), "test_acc": p,
        "test_ci_low": iv["ci_low"], "test_ci_high": iv["ci_high"], "test_ci_method": iv["method"],
        "unit": iv["unit"], "unit_se": (iv["ci_high"] - iv["ci_low"]) / (2 * st.norm.ppf(0.975)),
        "binomial_se": math.sqrt(p * (1 - p) / n), "n_val": int(len(splits.val.y)), "n_test": n,
        "n_train_fit": int(rows.fit.size), "n_stop": int(len(rows.stop_data[-1])), "early_stop_split": rows.split,
        "epochs_run": result.epochs_run, "stopped_early": result.stopped_early, "best_epoch": best.get("epoch"),
        "params": int(sum(q.numel() for q in model.parameters())), "leakage": leakage,
        "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
        # CPU time of the worker: the cost of a member even on a machine shared with other jobs.
        "cpu_seconds": time.process_time() - cpu0,
    }


def _write_member_card(spec: MemberSpec, out: Path, model_name: str, kwargs: dict[str, Any], model, result,
                       splits, rows: _Rows, transfer, leakage: dict[str, Any]) -> None:
    """config.json of a member: the spec, the model, the training config, the task, the data and the leakage check."""
    atomic_write_json(out / "config.json", {
        "member": asdict(spec),
        "model": {"architecture": model_name, "label": spec.arch, "kwargs": kwargs, "recipe": spec.recipe,
                  "spec": getattr(model, "spec", None), "params": int(sum(q.numel() for q in model.parameters())),
                  "pretrained": f"{spec.start_checkpoint} ({transfer['copied']} of {transfer['total']} tensors)"
                  if transfer else False},
        "training": result.config, "task": {"loss": spec.loss, "alpha": spec.focal_alpha, "gamma": spec.focal_gamma},
        "dataset": {"name": splits.name, "kind": splits.kind, "generated": splits.generated, "source": splits.source,
                    "train_rows_used": int(rows.rows.size), "fit_rows": int(rows.fit.size),
                    "early_stop_split": rows.split, "early_stop_rows": int(len(rows.stop_data[-1])),
                    "val": int(len(splits.val.y)), "test": int(len(splits.test.y)),
                    "data_leakage_prevention": leakage},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": spec.device,
    })


def train_member(spec: MemberSpec | dict) -> dict[str, Any]:
    """Train one member and write its folder and prediction file; returns its metrics.

    Runs inside a worker process (or inline). Early stopping and the kept weights use pairs whose images
    the member never fitted on; a leakage check holds the fitted pairs against every other split first.
    """
    spec = spec if isinstance(spec, MemberSpec) else MemberSpec(**spec)
    t0, cpu0 = time.perf_counter(), time.process_time()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _crash(spec.crash)
    splits = _load_splits(spec.dataset, spec.run_dir, spec.label)
    rows = _split_rows(spec, splits)
    leakage = evaluate_member_leakage(splits, rows)
    if not leakage["verdict"].startswith("passed"):
        raise WorkbookError(f"member {spec.name}: leakage check {leakage}")
    model_name, kwargs, model, transfer, task, cfg = _build_member(splits, spec)
    tr, use_pair = splits.train, _uses_pair(splits)
    fit_data = (*[a[rows.fit] for a in make_inputs(tr, use_pair)], tr.y[rows.fit])
    result = train_model(model, task, train=fit_data, val=rows.stop_data, config=cfg, out_dir=out, device=spec.device)
    val_prob, test_prob = _write_member_predictions(spec, out, model, task, splits, rows)
    # The kept weights (one file, not the loop's five checkpoints): notebook 05 times the ensemble's inference
    # with the very models it stacks.
    atomic_torch_save({"model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "model_spec": getattr(model, "spec", None), "config": result.config,
                       "epoch": result.best.get("monitor", {}).get("epoch")}, out / "model.pt")
    metrics = _member_metrics(spec, model_name, model, result, val_prob, test_prob, splits, rows, leakage, t0, cpu0)
    atomic_write_json(out / "metrics.json", metrics)
    _write_member_card(spec, out, model_name, kwargs, model, result, splits, rows, transfer, leakage)
    return metrics


def train_members(specs: Sequence[MemberSpec], workers: int = 0, timeout_s: float | None = None,
                  verbose: bool = True) -> pd.DataFrame:
    """Train every member in parallel workers; returns `make_member_table` of the outcomes.

    A failed member gets a ``failed.json`` in its folder with the error; the others are unaffected.
    """
    n_workers, threads = resolve_workers(len(specs), workers, specs[0].device if specs else "cpu")
    if verbose:
        print(f"{len(specs)} members on {n_workers} worker process(es) × {threads} torch thread(s)", flush=True)

    def report(o: WorkerOutcome) -> None:
        if verbose:
            s = specs[o.index]
            msg = (f"test acc {o.value['test_acc']:.4f}, {o.value['epochs_run']} epochs" if o.ok
                   else "FAILED: " + o.error.strip().splitlines()[0])
            print(f"  {s.name:<28} {o.seconds:6.1f} s  {msg}", flush=True)

    # Stale results of an earlier run must not pass for this run's.
    for s in specs:
        for f in ("metrics.json", "failed.json", "predictions.npz", "model.pt"):
            (Path(s.out_dir) / f).unlink(missing_ok=True)
        Path(s.predictions_path).unlink(missing_ok=True)
    outcomes = run_in_workers(train_member, [asdict(s) for s in specs], n_workers, threads, timeout_s, report)
    for s, o in zip(specs, outcomes):
        if not o.ok:
            atomic_write_json(Path(s.out_dir) / "failed.json", {"name": s.name, "error": o.error,
                                                                 "exitcode": o.exitcode, "seconds": o.seconds})
    return make_member_table(specs, outcomes)


_MEMBER_COLS = ["member", "arch", "seed", "status", "val_acc", "test_acc", "test_ci_low", "test_ci_high", "unit",
                "unit_se", "binomial_se", "n_test", "early_stop_split", "epochs_run", "best_epoch", "params",
                "leakage", "seconds", "cpu_seconds", "error", "folder"]


def make_member_table(specs: Sequence[MemberSpec], outcomes: Sequence[WorkerOutcome]) -> pd.DataFrame:
    """One row per member: status, accuracies with the test accuracy's 95% interval over the unit, error."""
    rows = []
    for s, o in zip(specs, outcomes):
        row = {"member": s.name, "arch": s.arch, "seed": s.seed, "status": "ok" if o.ok else "failed",
               "seconds": round(o.seconds, 2), "folder": s.out_dir}
        if o.ok:
            row.update({k: o.value.get(k) for k in _MEMBER_COLS if k in o.value and k not in ("seconds", "leakage")})
            row.update(leakage=o.value["leakage"]["verdict"], error="")
        else:
            row["error"] = o.error.strip().splitlines()[0][:200] if o.error else "failed"
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=_MEMBER_COLS)


# ---------------------------------------------------------------------------------- spread
def sd_interval(sd: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Chi-square interval of a standard deviation from ``n`` values (normal values assumed):
    sd * sqrt((n-1) / chi2_{upper}) .. sd * sqrt((n-1) / chi2_{lower}); NaN for fewer than two values."""
    if n < 2 or not np.isfinite(sd):
        return (float("nan"), float("nan"))
    a = (1 - confidence) / 2
    lo, hi = st.chi2.ppf([1 - a, a], n - 1)
    return (float(sd * math.sqrt((n - 1) / lo)), float(sd * math.sqrt((n - 1) / hi)))


def _arch_row(arch: str, g: pd.DataFrame) -> dict[str, Any]:
    ok = g[g["status"] == "ok"]
    acc = ok["test_acc"].astype(float)
    n, mean = len(acc), (float(acc.mean()) if len(acc) else np.nan)
    sd = float(acc.std(ddof=1)) if n > 1 else np.nan
    lo, hi = sd_interval(sd, n)
    n_test = float(ok["n_test"].iloc[0]) if n else np.nan
    binom = math.sqrt(mean * (1 - mean) / n_test) if n else np.nan
    unit_se = float(ok["unit_se"].astype(float).mean()) if n else np.nan
    return {"arch": arch, "n_ok": n, "n_failed": int((g["status"] != "ok").sum()), "mean_test_acc": mean,
            "std_test_acc": sd, "sd_ci_low": lo, "sd_ci_high": hi,
            "min_test_acc": acc.min() if n else np.nan, "max_test_acc": acc.max() if n else np.nan,
            "spread": (acc.max() - acc.min()) if n else np.nan, "binomial_se": binom, "unit_se": unit_se,
            "unit": ok["unit"].iloc[0] if n else "", "sd_over_unit_se": sd / unit_se if n > 1 else np.nan,
            "mean_val_acc": float(ok["val_acc"].astype(float).mean()) if n else np.nan, "n_test": n_test}


def make_arch_summary(members: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: members ok/failed, mean test accuracy, the seed sd (ddof 1; NaN for one seed) with its
    95% chi-square interval, min–max, and one model's standard error: binomial sqrt(p(1-p)/n) at the mean
    accuracy, and the unit-aware one (`interval` over the data's independent unit, averaged over members)."""
    return pd.DataFrame([_arch_row(a, g) for a, g in members.groupby("arch", sort=False)])


def make_summary_view(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary trimmed to what answers the spread question, one row per architecture."""
    cols = {"n_ok": "seeds", "mean_test_acc": "mean test acc", "std_test_acc": "seed sd",
            "sd_ci_low": "sd 95% low", "sd_ci_high": "sd 95% high", "binomial_se": "binomial SE",
            "unit_se": "SE over unit", "sd_over_unit_se": "sd / SE", "min_test_acc": "min", "max_test_acc": "max"}
    return summary.set_index("arch")[list(cols)].rename(columns=cols)


def make_test_unit(dataset: str, run_dir: str | Path, label: str | None = None):
    """The independent unit of the dataset's test split (`unit_of`): source images, person pairs or rows."""
    return unit_of(load_pair_dataset(dataset, run_dir, label=label).test)


def _member_correct(members: pd.DataFrame, arch: str) -> np.ndarray:
    """Per-pair test correctness [seeds, N] of an architecture's members (from their predictions.npz)."""
    return np.stack([_correct_of(f) for f in members.loc[(members["arch"] == arch) & (members["status"] == "ok"),
                                                        "folder"]])


def make_comparison_table(members: pd.DataFrame, unit, baseline: str | None = None, n_boot: int = 2000,
                          seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Each architecture against the baseline architecture (the grid's first unless named) on the same test
    split: difference of the seed-mean accuracies from `compare_over_seeds` (each architecture's seed variance
    plus the unit-aware test-split variance, t with Welch-Satterthwaite df), Holm-adjusted across the rows;
    ``ci_low`` / ``ci_high`` are the Holm-adjusted interval beside the adjusted verdict at ``alpha``."""
    archs = list(dict.fromkeys(members.loc[members["status"] == "ok", "arch"]))
    base = baseline or (archs[0] if archs else "")
    tests = adjust({arch: compare_over_seeds(_member_correct(members, base), _member_correct(members, arch), unit,
                                             paired_seeds=False, n_boot=n_boot, seed=seed, alpha=alpha)
                    for arch in archs if arch != base})
    rows = [{"arch": arch, "baseline": base, "diff": t.estimate, "se_seed": t.extra["se_seeds"],
             "se_test": t.extra["se_test"], "se": t.extra["se"], "ci_low": t.ci_low_adjusted,
             "ci_high": t.ci_high_adjusted, "p_value": t.p, "p_holm": t.p_adjusted,
             "verdict": f"{t.verdict} ({format_p(t.p_adjusted, t.p_floor)})" if np.isfinite(t.p) else
             "not testable (an architecture with one seed has no seed variance)"} for arch, t in tests.items()]
    df = pd.DataFrame(rows, columns=["arch", "baseline", "diff", "se_seed", "se_test", "se", "ci_low", "ci_high",
                                     "p_value", "p_holm", "verdict"])
    df.attrs.update(unit=getattr(unit, "name", "row"), n_tests=int(df["p_value"].notna().sum()))
    return df


def make_comparison_view(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison as shown: p-values as text (a tiny p is never displayed as a rounded 0)."""
    out = comparison.copy()
    for col in ("p_value", "p_holm"):
        out[col] = [format_p(p) if np.isfinite(p) else "n/a" for p in out[col]]
    return out.set_index("arch")


def make_metrics_view(table: pd.DataFrame) -> pd.DataFrame:
    """metrics.json as shown: p-values as text (never a rounded 0); the file keeps the numbers."""
    out = table.astype(object)
    for key in out.index[out.index.str.endswith(("p_vs_baseline", "tuned_vs_handset_p"))]:
        v = out.loc[key, "value"]
        out.loc[key, "value"] = format_p(float(v)) if isinstance(v, (int, float)) and np.isfinite(v) else v
    return out


def describe_comparison(comparison: pd.DataFrame) -> str:
    """One line per architecture against the baseline, with the test that decided it."""
    if comparison.empty:
        return "Only one architecture finished: nothing to compare."
    holm_note = " (Holm-adjusted over the rows)" if comparison.attrs.get("n_tests", 0) > 1 else ""
    which = "Holm-adjusted interval" if comparison.attrs.get("n_tests", 0) > 1 else "95% interval"
    lines = [f"{r.arch} vs {r.baseline}: {r.diff:+.4f} ({which} {r.ci_low:+.4f} to {r.ci_high:+.4f}; seed SE "
             f"{r.se_seed:.4f}, test-split SE {r.se_test:.4f} over {comparison.attrs.get('unit', 'row')}s) — "
             f"{r.verdict}{holm_note}" for r in comparison.itertuples()]
    return "\n".join(lines)


def describe_spread(summary: pd.DataFrame) -> str:
    """Per architecture: the seed sd with its chi-square interval against one model's standard error, and
    how far apart two single-seed runs of the same recipe can land from the seed alone."""
    lines = []
    for r in summary.itertuples():
        if not r.n_ok:
            lines.append(f"{r.arch}: no member finished")
            continue
        head = f"{r.arch}: test accuracy {r.mean_test_acc:.4f} over {r.n_ok} seed(s)"
        if r.n_ok < 2:
            lines.append(f"{head}; one seed, so no seed spread (one model's SE {r.unit_se:.4f} over {r.unit}s)")
            continue
        if r.sd_ci_low > r.unit_se:
            reading = "the seed moves accuracy MORE than the test split's sampling noise"
        elif r.sd_ci_high < r.unit_se:
            reading = "the seed moves accuracy less than the test split's sampling noise"
        else:
            reading = ("the sd's interval contains one model's SE: these seeds cannot tell whether the seed moves "
                       "accuracy more or less than the test split's sampling noise")
        lines.append(f"{head}: seed sd {r.std_test_acc:.4f} (95% chi-square interval {r.sd_ci_low:.4f}–"
                     f"{r.sd_ci_high:.4f}) vs one model's SE {r.unit_se:.4f} over {r.unit}s (binomial "
                     f"{r.binomial_se:.4f}); {reading}. Two single-seed runs of this recipe differ by up to "
                     f"{seed_prediction_bound(r.std_test_acc, r.n_ok):.4f} from the seed alone (95% prediction bound, "
                     f"t with {r.n_ok - 1} df for the sd's own uncertainty; range here "
                     f"{r.min_test_acc:.4f}–{r.max_test_acc:.4f}).")
    return "\n".join(lines)


def _answer_facts(label: str, summary: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, Any]:
    """One dataset's numbers the answer states: the largest seed sd against one model's SE, and the first
    architecture comparison (its interval Holm-adjusted when the table holds several)."""
    ok = summary[(summary["n_ok"] > 1) & summary["std_test_acc"].notna()]
    if ok.empty:
        return {"name": label, "sd": None}
    top = ok.loc[ok["std_test_acc"].idxmax()]
    first = comparison.iloc[0] if len(comparison) else None
    return {"name": label, "sd": float(top["std_test_acc"]), "sd_arch": top["arch"], "n_seeds": int(top["n_ok"]),
            "se": float(ok["unit_se"].mean()),
            "comparison": None if first is None else {**first.to_dict(), "adjusted": len(comparison) > 1}}


def describe_answer(results: Mapping[str, tuple], arch: str = "") -> str:
    """The notebook's answer (template block ``answer``) from ``{label: (summary, comparison, tuning gain or
    None, search or None)}``: per dataset the architecture verdict and the seed sd against one model's SE,
    then what tuning bought on the first dataset with a search."""
    facts = [_answer_facts(label, s, c) for label, (s, c, _, _) in results.items()]
    tuning = None
    for gain, search in ((g, r) for _, _, g, r in results.values()):
        if gain is not None and search is not None and gain["n_seeds"]:
            tuning = {"arch": arch or "the recipe", "trials": search.n_trials, "handset_best": best_is_handset(search),
                      **{k: gain[k] for k in ("diff", "ci_low", "ci_high", "verdict")}}
            break
    return render_answer("04_multi_seed", datasets=facts, tuning=tuning)


def make_answer_headline(summary: pd.DataFrame, comparison: pd.DataFrame,
                         tuning: dict[str, Any] | None = None, arch: str = "") -> dict[str, float]:
    """The two or three numbers the answer rests on (with a search: the seed sd, the architecture difference
    and what tuning bought)."""
    ok = summary[summary["n_ok"] > 1]
    out: dict[str, float] = {}
    if len(ok):
        r = ok.loc[ok["std_test_acc"].idxmax()]
        out[f"largest seed sd ({r['arch']})"] = round(float(r["std_test_acc"]), 4)
    if len(summary) and not (tuning and tuning["n_seeds"]):
        out["one model's SE over the unit"] = round(float(summary["unit_se"].mean()), 4)
    if len(comparison):
        r = comparison.iloc[0]
        out[f"{r['arch']} − {r['baseline']}"] = round(float(r["diff"]), 4)
    if tuning and tuning["n_seeds"]:
        out[f"{arch}_tuned − {arch} (test)"] = round(float(tuning["diff"]), 4)
    return out


def make_headline(members: pd.DataFrame, summary: pd.DataFrame, comparison: pd.DataFrame | None = None,
                  search: StudyResult | None = None, tuning: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metrics.json block of one dataset: counts, per-architecture mean / sd with its interval, one
    model's SE (binomial and over the unit), each architecture's difference to the baseline, and with a
    search its numbers (`make_search_headline`)."""
    out: dict[str, Any] = {"n_members": int(len(members)), "n_failed": int((members["status"] != "ok").sum())}
    for _, r in summary.iterrows():
        out[r["arch"]] = {k: r[k] for k in ("mean_test_acc", "std_test_acc", "min_test_acc", "max_test_acc",
                                            "sd_ci_low", "sd_ci_high", "binomial_se", "unit_se")}
        out[r["arch"]]["n_ok"] = int(r["n_ok"])
    for _, r in (comparison if comparison is not None else pd.DataFrame()).iterrows():
        out[r["arch"]].update(diff_vs_baseline=r["diff"], p_vs_baseline=r["p_holm"])
    ok = members[members["status"] == "ok"]
    if len(ok):
        acc = ok["test_acc"].astype(float)
        out["best_member"] = str(ok.loc[ok["val_acc"].astype(float).idxmax(), "member"])
        out["overall_std_test_acc"] = float(acc.std(ddof=1)) if len(ok) > 1 else float("nan")
        p, n = float(acc.mean()), float(ok["n_test"].iloc[0])
        out["binomial_se"] = math.sqrt(p * (1 - p) / n)
        out["unit_se"] = float(ok["unit_se"].astype(float).mean())
    if comparison is not None and len(comparison):
        out["baseline_arch"] = str(comparison["baseline"].iloc[0])
    if search is not None and tuning is not None:
        out.update(make_search_headline(search, tuning))
    return out


def make_leakage_summary(members: pd.DataFrame) -> dict[str, Any]:
    """The run card's record of the leakage checks the members ran (`evaluate_member_leakage`): what was
    compared, the shared pairs and source ids summed over members, and the verdict."""
    checks = [read_json(Path(f) / "metrics.json")["leakage"]
              for f in members.loc[members["status"] == "ok", "folder"] if (Path(f) / "metrics.json").is_file()]
    counts: dict[str, int] = {}
    for c in checks:
        for k, v in c.items():
            if k.endswith("_shared"):
                counts[k] = counts.get(k, 0) + int(v)
    passed = sum(c["verdict"].startswith("passed") for c in checks)
    return {"checked": "each member's fitted training pairs against the validation, test and early-stopping "
                       "pairs: equal content (order-free keys) and shared source ids",
            "example": checks[0]["compared"] if checks else "", "members_checked": len(checks),
            "members_passed": passed, "shared_totals": counts,
            "verdict": ("passed" if checks and passed == len(checks) and not any(counts.values())
                        else "FAILED" if checks else "not run: no member finished")}


def make_claims_table(summary: pd.DataFrame) -> pd.DataFrame:
    """M1's seed spreads (validation accuracy on its own 28x28 pairs) next to this run's (test accuracy)."""
    rows = []
    for fam in ("resnet", "fusion"):
        v = np.array([a for (f, _), a in NOTE_001_CLAIMS.items() if f == fam])
        rows.append({"source": "M1 (their data, val)", "architecture": fam, "seeds": len(v),
                     "seed sd": float(v.std(ddof=1)), "min–max range": float(v.max() - v.min())})
    for r in summary.itertuples():
        rows.append({"source": "this run (test)", "architecture": r.arch, "seeds": r.n_ok,
                     "seed sd": r.std_test_acc, "min–max range": r.spread})
    return pd.DataFrame(rows)


def describe_failures(members: pd.DataFrame) -> str:
    bad = members[members["status"] != "ok"]
    if not len(bad):
        return f"All {len(members)} members finished."
    lines = [f"{len(bad)} of {len(members)} members FAILED (the other {len(members) - len(bad)} finished and are used):"]
    lines += [f"  {r.member}: {r.error}" for r in bad.itertuples()]
    return "\n".join(lines)


def load_member_histories(members: pd.DataFrame) -> dict[str, list[dict]]:
    """history.json of every member that finished, keyed by member name."""
    out = {}
    for _, r in members[members["status"] == "ok"].iterrows():
        p = Path(r["folder"]) / "history.json"
        if p.is_file():
            out[r["member"]] = json.loads(p.read_text())
    return out


def plot_seed_strip(members: pd.DataFrame, ax=None):
    """Seed variance on the test split: one dot per member (test accuracy with its 95% interval over the
    data's independent unit), per architecture, with the architecture's mean as a bar."""
    import matplotlib.pyplot as plt

    ok = members[members["status"] == "ok"]
    archs = list(dict.fromkeys(members["arch"]))
    if ax is None:
        _, ax = plt.subplots(figsize=(1.8 + 1.6 * len(archs), 3.8))
    for i, arch in enumerate(archs):
        g = ok[ok["arch"] == arch].reset_index(drop=True)
        if not len(g):
            continue
        # Spread the dots sideways so overlapping seeds stay visible.
        x = i + (np.linspace(-0.18, 0.18, len(g)) if len(g) > 1 else np.zeros(1))
        y = g["test_acc"].astype(float).to_numpy()
        err = np.vstack([y - g["test_ci_low"].astype(float), g["test_ci_high"].astype(float) - y])
        ax.errorbar(x, y, yerr=err, fmt="o", ms=6, capsize=3, color=f"C{i}", alpha=0.9)
        for xi, yi, s in zip(x, y, g["seed"]):
            ax.annotate(str(s), (xi, yi), textcoords="offset points", xytext=(5, 3), fontsize=7)
        ax.hlines(y.mean(), i - 0.3, i + 0.3, color=f"C{i}", lw=2)
    ax.set_xticks(range(len(archs)), archs)
    unit = ok["unit"].iloc[0] if len(ok) else "row"
    ax.set_ylabel(f"test-split accuracy (95% interval over {unit}s)")
    failed = members.loc[members["status"] != "ok", "member"].tolist()
    ax.set_title("Seed spread per architecture, test split" + (f" — failed: {', '.join(failed)}" if failed else ""))
    return ax.figure


def plot_member_curves(histories: dict[str, list[dict]], members: pd.DataFrame,
                       metrics: Sequence[str] = ("train_loss", "val_loss", "accuracy"), stop_split: str = "val",
                       axes=None):
    """Training curves of every member overlaid, one colour per architecture, one panel per metric.
    ``val_loss`` and ``accuracy`` are on the early-stopping split, which the titles name."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    where = {"val": "validation split", "source_holdout": "held-out training source images"}.get(stop_split, stop_split)
    archs = list(dict.fromkeys(members["arch"]))
    colour = {a: f"C{i}" for i, a in enumerate(archs)}
    arch_of = dict(zip(members["member"], members["arch"]))
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    for ax, m in zip(axes, metrics):
        for name, hist in histories.items():
            ep = [r["epoch"] for r in hist if m in r]
            if ep:
                ax.plot(ep, [r[m] for r in hist if m in r], color=colour[arch_of[name]], alpha=0.75, lw=1.3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{m} (training pairs)" if m.startswith("train") else f"{m} ({where})", fontsize=9)
    axes[-1].legend(handles=[plt.Line2D([], [], color=colour[a], label=a) for a in archs], fontsize=8)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------------- the search (M1)
def make_search_spec(arch: str, grid: dict[str, Sequence[int]], architectures: dict[str, dict] | None,
                     recipes: dict[str, dict], dataset: str, label: str, run_dir: str | Path, out_dir: str | Path,
                     n_trials: int, space: dict[str, Any] | None = None, seed: int = 42, device: str = "cpu",
                     pruner: str = "median", max_epochs: int = 0, max_train: int = 0) -> dict[str, Any]:
    """The trial spec (`helpers.training.search.make_trial_spec`) of a study over the recipe of grid architecture
    ``arch``: its model, kwargs, TrainConfig and loss as its members train them (``max_epochs`` and ``max_train``
    as the members), trials in ``out_dir/<label>/search/trials/``. TPE's random start-up (and the median
    pruner's) is a quarter of the budget, between 2 and 10 trials."""
    if arch not in grid:
        raise WorkbookError(f"search_arch = {arch!r} is not an architecture of the grid ({', '.join(grid)})")
    fields = _resolve_arch(arch, (architectures or {}).get(arch, {}), recipes, {})
    if not fields["recipe"]:
        raise WorkbookError(f"search_arch = {arch!r}: the search tunes a recipe of 02/03; give the architecture "
                            "a 'recipe' entry")
    train = dict(fields["train"])
    if max_epochs:
        train["epochs"] = min(int(train.get("epochs", max_epochs)), max_epochs)
    recipe = {"stem": fields["recipe"], "model": fields["model"], "kwargs": fields["model_kwargs"], "train": train,
              "threshold": fields["threshold"],
              "loss": fields["loss"], "focal_alpha": fields["focal_alpha"], "focal_gamma": fields["focal_gamma"],
              "start": fields["start_checkpoint"]}
    splits = load_pair_dataset(dataset, run_dir, label=label)
    return make_trial_spec(recipe, dataset, label, run_dir, Path(out_dir) / label / "search" / "trials", space,
                           seed, device, pruner, n_startup_trials=min(10, max(2, int(n_trials) // 4)),
                           data_fingerprint=make_data_fingerprint(splits), max_train=max_train)


def run_search(spec: dict[str, Any], n_trials: int, out_dir: str | Path, arch: str, storage: str = "",
               resume: str = "", workers: int = 0, verbose: bool = True) -> StudyResult:
    """Run (or continue) the study of ``spec`` until it holds ``n_trials`` finished trials, in worker processes.

    The study lives in ``out_dir/<label>/search/study.db`` (SQLite; kept, so a later run continues it with
    ``resume``) unless ``storage`` names a database server shared by several machines; the trials table is
    written beside it as ``trials.csv`` either way."""
    folder = Path(out_dir) / spec["label"] / "search"
    if resume and not Path(resume).expanduser().is_absolute():
        resume = str(paths.PROJ_ROOT / resume)          # a path relative to the project, like reports/<run>/...
    result = run_study(spec, storage or folder / "study.db", f"{spec['label']}_{unique_slugs([arch])[0]}", n_trials,
                       workers, resume_from=resume, verbose=verbose)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "study.json", {"study": result.name, "storage": result.storage, "path": result.path,
                                              "spec": result.spec, "best_params": result.best_params,
                                              "best_value": result.best_value, "best_trial": result.best_trial,
                                              "n_trials": result.n_trials, "resumed_from": result.resumed_from,
                                              "join": make_join_command(result)})
    result.trials.to_csv(folder / "trials.csv", index=False)
    return result


def make_join_command(result: StudyResult) -> str:
    """The command another machine runs to add trials to this study (docs in helpers/training/search.py)."""
    return (f"python -m helpers.training.search --storage {result.storage} --study {result.name} --n-trials 20 "
            f"--run-dir <the run folder on that machine> --out <a folder for its trials>")


def make_importance_table(result: StudyResult, seed: int = 0) -> pd.DataFrame:
    """Parameter importances (fANOVA over the completed trials) of the study; empty with fewer than three."""
    import optuna  # deferred: optuna is slow to import; only the search section needs it

    study = optuna.load_study(study_name=result.name, storage=result.storage)
    return evaluate_importance(study, seed)


def make_trials_view(result: StudyResult, n: int = 10) -> pd.DataFrame:
    """The best ``n`` completed trials (validation accuracy, the parameters and what the width means)."""
    t = result.trials
    cols = ["number", "value", "lr", "weight_decay", "width", "width_value", "epochs_run", "seconds", "handset",
            "worker"]
    return (t[t["state"] == "COMPLETE"].sort_values(["value", "number"], ascending=[False, True])[cols].head(n)
            .rename(columns={"value": "val_acc", "width": "width ×"}).set_index("number"))


def make_handset_config(spec: dict[str, Any]) -> dict[str, Any]:
    """The recipe's own (hand-set) values of the searched parameters."""
    return {"lr": float(spec["train"].get("lr", float("nan"))),
            "weight_decay": float(spec["train"].get("weight_decay", float("nan"))), "width": 1.0,
            "width_value": width_value(spec["kwargs"])}


def make_tuned_grid(result: StudyResult, arch: str, grid: dict[str, Sequence[int]], dataset: str,
                    run_dir: str | Path, out_dir: str | Path, architectures: dict[str, dict] | None,
                    recipes: dict[str, dict], label: str, **common: Any) -> list[MemberSpec]:
    """Members ``<arch>_tuned_s<seed>``: the searched recipe at the study's best learning rate, weight decay and
    width, trained with the seeds ``arch`` has in the grid (everything else as the grid's members)."""
    entry = dict((architectures or {}).get(arch, {}))
    best = result.best_kwargs
    entry.update({k: best[k] for k in ("width_mult", "hidden") if k in best})
    train = {**common.pop("train", {}), "lr": float(result.best_params["lr"]),
             "weight_decay": float(result.best_params["weight_decay"])}
    tuned = f"{arch}_tuned"
    return make_grid({tuned: list(grid[arch])}, dataset, run_dir, out_dir, {tuned: entry}, label=label,
                     recipes=recipes, train=train, **common)


def evaluate_tuning_gain(members: pd.DataFrame, tuned: pd.DataFrame, arch: str, unit, n_boot: int = 2000,
                         seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """The tuned recipe minus the hand-set one, on the same test rows.

    Per seed (the same seed for both): `stats.compare` of the two members' per-pair correctness over the data's
    independent unit. Across seeds: `stats.compare_over_seeds`, paired by seed (the per-seed differences' seed
    noise plus the test split's over the unit; t with Welch-Satterthwaite df). Next to it, the seed sd of
    each recipe. Returns ``per_seed`` (a table) and the summary numbers.
    """
    hand = members[(members["arch"] == arch) & (members["status"] == "ok")].set_index("seed")
    tun = tuned[tuned["status"] == "ok"].set_index("seed")
    seeds = [s for s in hand.index if s in tun.index]
    rows, ca, cb = [], [], []
    for s in seeds:
        a, b = _correct_of(hand.loc[s, "folder"]), _correct_of(tun.loc[s, "folder"])
        t = compare({"tuned - handset": (a, b)}, unit, n_boot=n_boot, seed=seed, alpha=alpha)["tuned - handset"]
        rows.append({"seed": int(s), "handset_test_acc": float(a.mean()), "tuned_test_acc": float(b.mean()),
                     "diff": t.estimate, "ci_low": t.ci_low, "ci_high": t.ci_high, "p_value": t.p,
                     "handset_val_acc": float(hand.loc[s, "val_acc"]), "tuned_val_acc": float(tun.loc[s, "val_acc"])})
        ca.append(a)
        cb.append(b)
    per_seed = pd.DataFrame(rows, columns=["seed", "handset_test_acc", "tuned_test_acc", "diff", "ci_low", "ci_high",
                                           "p_value", "handset_val_acc", "tuned_val_acc"])
    out: dict[str, Any] = {"per_seed": per_seed, "n_seeds": len(seeds), "unit": getattr(unit, "name", "row")}
    nan = float("nan")
    out.update(diff=nan, ci_low=nan, ci_high=nan, p_value=nan, se_seed=nan, se_test=nan, verdict="no paired seeds",
               handset_sd=nan, tuned_sd=nan, handset_mean=nan, tuned_mean=nan)
    if not seeds:
        return out
    g = compare_over_seeds(np.stack(ca), np.stack(cb), unit, paired_seeds=True, n_boot=n_boot, seed=seed, alpha=alpha)
    acc_a, acc_b = per_seed["handset_test_acc"], per_seed["tuned_test_acc"]
    one = len(seeds) < 2
    out.update(diff=g.estimate, ci_low=g.ci_low, ci_high=g.ci_high, p_value=g.p,
               se_seed=nan if one else g.extra["se_seeds"], se_test=g.extra["se_test"],
               handset_mean=float(acc_a.mean()), tuned_mean=float(acc_b.mean()),
               handset_sd=nan if one else float(acc_a.std(ddof=1)), tuned_sd=nan if one else float(acc_b.std(ddof=1)),
               verdict=g.text("tuned better", "tuned worse").split("; ")[0] + ")" if not one else
               "not testable (one seed: no seed variance)")
    return out


def make_tuned_strip(members: pd.DataFrame, tuned: pd.DataFrame, arch: str) -> pd.DataFrame:
    """The hand-set members of ``arch`` and the tuned ones in one table, for `plot_seed_strip`."""
    return pd.concat([members[members["arch"] == arch], tuned], ignore_index=True)


def _correct_of(folder: str | Path) -> np.ndarray:
    """Per-pair test correctness of one member, at the threshold its predictions.npz records."""
    path = Path(folder) / "predictions.npz"
    threshold = load_threshold(path)
    with np.load(path) as z:
        return correct(z["test_prob"], z["test_y"], threshold)


def make_tuning_view(gain: dict[str, Any]) -> pd.DataFrame:
    """Per seed and across seeds: hand-set and tuned test accuracy, the paired difference, its interval and p."""
    df = gain["per_seed"].copy()
    df["p"] = [format_p(p) for p in df["p_value"]]
    across = {"seed": "across seeds", "handset_test_acc": gain["handset_mean"], "tuned_test_acc": gain["tuned_mean"],
              "diff": gain["diff"], "ci_low": gain["ci_low"], "ci_high": gain["ci_high"], "p_value": gain["p_value"],
              "p": format_p(gain["p_value"]) if np.isfinite(gain["p_value"]) else "n/a (one seed)",
              "handset_val_acc": df["handset_val_acc"].mean(), "tuned_val_acc": df["tuned_val_acc"].mean()}
    df = pd.concat([df.astype({"seed": object}), pd.DataFrame([across])], ignore_index=True)
    return df.drop(columns=["p_value"]).set_index("seed")


def handset_val_acc(members: pd.DataFrame, arch: str, seed: int) -> float:
    """Validation accuracy of the hand-set recipe's member trained with the search's seed (NaN when none)."""
    r = members[(members["arch"] == arch) & (members["seed"] == seed) & (members["status"] == "ok")]
    return float(r["val_acc"].iloc[0]) if len(r) else float("nan")


def make_search_card(result: StudyResult) -> dict[str, Any]:
    """The run card's record of a study: where it lives, how to continue or join it, sampler, pruner, space,
    budget and outcome, and the best configuration."""
    spec = result.spec
    return {"study": result.name, "storage": result.storage, "study_file": result.path or None,
            "resumed_from": result.resumed_from or None, "join_from_another_machine": make_join_command(result),
            "sampler": f"TPE (Optuna), seeded {spec['seed']} + 1000 × worker, {spec['n_startup_trials']} random start-up trials",
            "pruner": spec["pruner"], "objective": "best validation accuracy of the recipe trained on the training "
            "split (the test split is never read)", "space": spec["space"], "recipe": spec["recipe"],
            "trial_seed": spec["seed"], "budget": result.n_budget, "n_trials": result.n_trials,
            "n_complete": result.n_complete, "n_pruned": result.n_pruned, "n_failed": result.n_failed,
            "workers": result.workers, "threads_per_worker": result.threads, "seconds": round(result.seconds, 1),
            "best_trial": result.best_trial, "best_value": result.best_value, "best_params": result.best_params,
            "best_kwargs": result.best_kwargs, "trials_dir": spec["trials_dir"]}


def describe_search(result: StudyResult, members: pd.DataFrame | None = None, arch: str = "") -> str:
    """The study in a few sentences: trials (complete, pruned, failed), workers, time, the best configuration
    next to the hand-set one, and why the best validation accuracy is optimistic."""
    handset = make_handset_config(result.spec)
    handset_val = handset_val_acc(members, arch, result.spec["seed"]) if members is not None else None
    t = result.trials
    enq = t[t["handset"].fillna(False).astype(bool) & (t["state"] == "COMPLETE")] if "handset" in t else t.iloc[:0]
    pr = {"median": "the median rule", "halving": "successive halving", "none": "no pruner"}[result.spec["pruner"]]
    bp = result.best_params
    text = (f"Study {result.name!r}: {result.n_trials} finished trials ({result.n_complete} completed, "
            f"{result.n_pruned} pruned by {pr} on the per-epoch validation accuracy"
            + (f", {result.n_failed} failed" if result.n_failed else "")
            + (f"; {result.n_before} of them continued from {result.resumed_from}" if result.n_before else "")
            + f"), run on {max(result.workers, 1)} worker process(es) in {result.seconds:.0f} s. "
            f"Best: trial {result.best_trial}, validation accuracy {result.best_value:.4f} at lr {bp['lr']:.2e}, "
            f"weight decay {bp['weight_decay']:.2e}, width ×{bp['width']:g} ({width_value(result.best_kwargs)}); "
            f"the hand-set recipe uses lr {handset['lr']:.2e}, weight decay {handset['weight_decay']:.2e}, width "
            f"{handset['width_value']}")
    if len(enq):
        text += f" (trial {int(enq['number'].iloc[0])}, enqueued: validation accuracy {float(enq['value'].iloc[0]):.4f})"
    elif handset_val is not None and np.isfinite(handset_val):
        text += f" (validation accuracy {handset_val:.4f} with the search's seed)"
    return text + (". The best validation accuracy is the maximum over the trials on the split they were chosen "
                   "on, so it flatters the winner; the re-run over the grid's seeds, scored on the untouched test "
                   "split, is the fair measure.")


def best_is_handset(result: StudyResult) -> bool:
    """Whether the study's best trial is the enqueued hand-set recipe (then the tuned re-run repeats it)."""
    t = result.trials
    if "handset" not in t or not len(t):
        return False
    best = t[t["number"] == result.best_trial]
    return bool(len(best) and best["handset"].fillna(False).astype(bool).iloc[0])


def describe_tuning(gain: dict[str, Any], arch: str, result: StudyResult | None = None) -> str:
    """Tuned minus hand-set, across seeds with its interval, set against the seed sd."""
    if not gain["n_seeds"]:
        return f"No seed finished for both {arch} and {arch}_tuned: no comparison."
    if result is not None and best_is_handset(result):
        return (f"The study's best configuration is the hand-set recipe itself (trial {result.best_trial}): "
                f"{arch}_tuned repeats {arch} with the same seeds, so the difference is {gain['diff']:+.4f} by "
                f"construction and tuning bought nothing over the hand-set values in {result.n_trials} trials.")
    sd = gain["handset_sd"]
    ratio = abs(gain["diff"]) / sd if np.isfinite(sd) and sd > 0 else float("nan")
    text = (f"{arch}_tuned − {arch} over {gain['n_seeds']} seed(s), on the same test pairs: {gain['diff']:+.4f} "
            f"(95% interval {gain['ci_low']:+.4f} to {gain['ci_high']:+.4f}, counting seed noise and the test "
            f"split's over {gain['unit']}s), {gain['verdict']}. Test accuracy {gain['handset_mean']:.4f} → "
            f"{gain['tuned_mean']:.4f}; ")
    if np.isfinite(sd):
        text += (f"the seed sd is {sd:.4f} hand-set and {gain['tuned_sd']:.4f} tuned, so the gain is "
                 f"{ratio:.1f}× the hand-set recipe's seed sd.")
    else:
        text += "one seed: no seed sd to compare with."
    return text


def make_search_headline(result: StudyResult, gain: dict[str, Any]) -> dict[str, Any]:
    """metrics.json keys of the search and the tuned re-run."""
    bp = result.best_params
    sd = gain["handset_sd"]
    return {"search_n_trials": result.n_trials, "search_n_complete": result.n_complete,
            "search_n_pruned": result.n_pruned, "search_n_failed": result.n_failed,
            "search_best_val_acc": result.best_value, "search_best_trial": result.best_trial,
            "search_best_lr": float(bp["lr"]), "search_best_weight_decay": float(bp["weight_decay"]),
            "search_best_width": float(bp["width"]), "search_seconds": result.seconds,
            "search_workers": result.workers, "tuned_n_seeds": gain["n_seeds"],
            "tuned_mean_test_acc": gain["tuned_mean"], "handset_mean_test_acc": gain["handset_mean"],
            "tuned_vs_handset_diff": gain["diff"], "tuned_vs_handset_ci_low": gain["ci_low"],
            "tuned_vs_handset_ci_high": gain["ci_high"], "tuned_vs_handset_p": gain["p_value"],
            "tuned_vs_handset_se_seed": gain["se_seed"], "tuned_vs_handset_se_test": gain["se_test"],
            "handset_seed_sd": sd, "tuned_seed_sd": gain["tuned_sd"],
            "tuned_gain_over_seed_sd": abs(gain["diff"]) / sd if np.isfinite(sd) and sd > 0 else float("nan")}


def plot_optimization_history(trials: pd.DataFrame, reference: float | None = None, ax=None):
    """Validation accuracy of every trial in trial order (pruned trials at the last value they reported), the
    best so far as a step line, and the hand-set recipe's value as a dashed line when given."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.6))
    t = trials.sort_values("number")
    done, pruned = t[t["state"] == "COMPLETE"], t[t["state"] == "PRUNED"]
    ax.scatter(done["number"], done["value"], s=22, color="tab:blue", label="completed", zorder=3)
    if len(pruned):
        ax.scatter(pruned["number"], pruned["last_value"], s=22, marker="x", color="tab:gray",
                   label="pruned (last reported)", zorder=3)
    hand = t[t["handset"].fillna(False).astype(bool)] if "handset" in t else t.iloc[:0]
    if len(hand):
        ax.scatter(hand["number"], hand["value"].fillna(hand["last_value"]), s=90, marker="*", color="tab:orange",
                   label="hand-set recipe (enqueued)", zorder=4)
    if len(done):
        best = done.set_index("number")["value"].reindex(t["number"]).ffill().cummax()
        ax.step(best.index, best.to_numpy(), where="post", color="tab:red", lw=1.5, label="best so far")
    if reference is not None and np.isfinite(reference):
        ax.axhline(reference, ls="--", color="black", lw=1, label="hand-set member, same seed")
    ax.set_xlabel("trial")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("Optimisation history", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


def plot_param_importances(importance: pd.DataFrame, ax=None):
    """Horizontal bars: each searched parameter's importance (fANOVA share, completed trials)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.4))
    if importance.empty:
        ax.text(0.5, 0.5, "fewer than three completed trials:\nno importance", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    else:
        df = importance.sort_values("importance")
        ax.barh(df["parameter"], df["importance"], color="tab:blue")
        for y, v in enumerate(df["importance"]):
            ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(1.0, float(df["importance"].max()) * 1.15))
    ax.set_xlabel("importance (fANOVA share of the variance)")
    ax.set_title("Parameter importance", fontsize=10)
    return ax.figure


def plot_trial_curves(curves: pd.DataFrame, ax=None):
    """Each trial's validation accuracy per epoch, as reported to the pruner: completed trials in blue, pruned
    ones in grey ending where they were stopped."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    for (_, state), g in curves.groupby(["number", "state"]):
        c = "tab:gray" if state == "PRUNED" else "tab:blue"
        ax.plot(g["epoch"], g["value"], color=c, alpha=0.55 if state == "PRUNED" else 0.8, lw=1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_title("Trials per epoch (grey: pruned)", fontsize=10)
    return ax.figure


def plot_lr_slice(trials: pd.DataFrame, ax=None):
    """Validation accuracy of the completed trials against the learning rate (log axis), coloured by width."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.4))
    done = trials[trials["state"] == "COMPLETE"]
    lw = np.log10(done["weight_decay"].astype(float))
    size = 12 + 60 * (lw - lw.min()) / max(float(lw.max() - lw.min()), 1e-12)     # larger = more weight decay
    for i, (w, g) in enumerate(done.groupby("width")):
        ax.scatter(g["lr"], g["value"], s=size[g.index], color=f"C{i}", label=f"width ×{w:g}", alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (marker size: weight decay, log)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("Completed trials by learning rate", fontsize=10)
    if len(done):
        ax.legend(fontsize=7)
    return ax.figure


def plot_search(result: StudyResult, importance: pd.DataFrame, reference: float | None = None, label: str = ""):
    """The study on one figure: optimisation history, parameter importance, per-epoch curves, lr slice."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    plot_optimization_history(result.trials, reference, axes[0, 0])
    plot_param_importances(importance, axes[0, 1])
    plot_trial_curves(result.curves, axes[1, 0])
    plot_lr_slice(result.trials, axes[1, 1])
    fig.suptitle((f"{label}: " if label else "") + f"study {result.name}, {result.n_trials} trials "
                 f"({result.n_pruned} pruned)", fontsize=11)
    fig.tight_layout()
    return fig
