"""Notebook 04: how much of an architecture's accuracy is the seed? The models notebooks 02 and 03 report,
retrained with several seeds, each member in its own worker process.

A member takes its recipe from the notebook that reports it (`load_recipe`): the model spec and training
config stored in that notebook's scored checkpoint (widths, fusion, CBAM/SE, augmentation, epochs, learning
rate), its loss from its run card, and for stage 2 the stage-1 weights 03 started from. Only the seed
changes. Every member early-stops on pairs whose images it never trained on (the validation split, or a
holdout of training source images), writes its folder (``config.json``, ``history.json``, ``metrics.json``,
``predictions.npz``) and a prediction file for notebook 05. The spread is the seed standard deviation with a
chi-square interval, set against the standard error of one model's accuracy; architectures are compared by
a test that counts both the seed variance and the test split's own (with its independent unit)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.core.io import atomic_savez, atomic_write_json, read_json
from helpers.core.paths import unique_slugs
from helpers.data.pairs import _uses_pair, dataset_labels, load_pair_dataset, make_inputs
from helpers.data.predictions import write_predictions
from helpers.evaluation.stats import format_p, holm, interval, paired_test, unit_of
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model, list_models
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model
from helpers.training.tasks import BinaryTask
from helpers.training.workers import resolve_workers, run_in_workers, WorkerOutcome

# What notebook 04 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["dataset_labels", "describe_answer", "describe_comparison", "describe_failures", "describe_spread",
           "load_member_histories", "load_recipes", "make_answer_headline", "make_arch_summary", "make_claims_table",
           "make_comparison_table", "make_comparison_view", "make_grid", "make_headline", "make_leakage_summary",
           "make_metrics_view", "make_plan_table", "make_summary_view", "make_test_unit", "plot_member_curves",
           "plot_seed_strip", "resolve_workers", "train_members"]


# M1 stage 3, validation accuracy per (family, seed), on the note's own 28x28 pair data.
NOTE_001_CLAIMS: dict[tuple[str, int], float] = {
    ("resnet", 42): 0.8538, ("resnet", 2023): 0.8702, ("resnet", 2024): 0.8671, ("resnet", 2025): 0.8739,
    ("fpn", 42): 0.8730,
    ("fusion", 42): 0.8538, ("fusion", 123): 0.8436, ("fusion", 456): 0.8439,
}

# The notebooks whose models 04 can retrain (their scored checkpoint holds the model spec and TrainConfig).
RECIPE_STEMS = ("02_stage1", "03_stage2")
EARLY_STOP_SPLITS = ("val", "source_holdout")
_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}
# Two single-seed runs of one recipe differ by up to z * sqrt(2) * sd from the seed alone (95%).
_TWO_RUNS = float(st.norm.ppf(0.975) * math.sqrt(2))


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
def _read_card(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _scored_checkpoint(folder: Path) -> Path:
    """The weights a notebook scored: ``best_<monitor>.pt`` per the dataset's run card (accuracy by default)."""
    monitor = str(_read_card(folder / "config.json").get("training", {}).get("monitor", "accuracy"))
    return folder / f"best_{monitor.removeprefix('val_')}.pt"


def _stage1_start(run_dir: str | Path, label: str) -> Path:
    """The stage-1 checkpoint notebook 03 started from (its run card), else 02's scored one in this run."""
    recorded = _read_card(paths.upstream(run_dir, "03_stage2") / "config.json").get("stage1_checkpoints", {})
    if isinstance(recorded, dict) and recorded.get(label) and Path(recorded[label]).is_file():
        return Path(recorded[label])
    return _scored_checkpoint(paths.upstream(run_dir, "02_stage1") / label)


def load_recipe(run_dir: str | Path, stem: str, label: str) -> dict[str, Any]:
    """How notebook ``stem`` trained the model it reports on dataset ``label`` in this run: the model spec and
    TrainConfig of its scored checkpoint, the loss from its run card, and (03) the stage-1 start."""
    folder = paths.upstream(run_dir, stem) / label
    ckpt = _scored_checkpoint(folder)
    if not ckpt.is_file():
        raise WorkbookError(f"recipe {stem!r} for dataset {label!r}: no checkpoint {ckpt}. Notebook 04 retrains the "
                            f"models {stem} reports: run it first in this run folder "
                            f"(`python -m helpers run --only {stem[:2]} 04`)")
    ck = read_checkpoint_file(ckpt)
    spec, cfg = ck.get("model_spec"), ck.get("config")
    if not isinstance(spec, dict) or "name" not in spec or not isinstance(cfg, dict):
        raise WorkbookError(f"{ckpt}: no model_spec/config; expected a checkpoint written by train_model")
    training = _read_card(folder / "config.json").get("training", {})
    focal = str(training.get("loss_function", "")).lower().startswith("focal")
    start = _stage1_start(run_dir, label) if stem == "03_stage2" else None
    if start is not None and not start.is_file():
        raise WorkbookError(f"recipe {stem!r} for dataset {label!r} starts from stage 1, but {start} does not exist")
    return {"stem": stem, "model": spec["name"], "kwargs": dict(spec.get("kwargs") or {}),
            "train": {k: v for k, v in cfg.items() if k in _TRAIN_FIELDS}, "loss": "focal" if focal else "bce",
            "focal_alpha": float(training.get("focal_alpha", -1.0)), "focal_gamma": float(training.get("focal_gamma", 2.0)),
            "checkpoint": str(ckpt), "start": str(start or "")}


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
    start = entry.pop("start", r.get("start", ""))
    model = entry.pop("model", r.get("model", arch))
    fields = {"recipe": stem, "model": model, "vector_model": entry.pop("vector_model", ""),
              "model_kwargs": {**r.get("kwargs", {}), **entry}, "start_checkpoint": str(start or ""), **common}
    if stem:   # the recipe's training and loss; the common train dict may only shorten or adjust it
        fields.update(train={**r["train"], **common.get("train", {})}, loss=r["loss"],
                      focal_alpha=r["focal_alpha"], focal_gamma=r["focal_gamma"])
    registry = list_models()
    for m in (fields["model"], fields["vector_model"]):
        if m and m not in registry:
            raise WorkbookError(f"grid/architectures: {arch!r} names model {m!r}, which is not in the registry "
                                f"({', '.join(registry)}); add an architectures entry "
                                f"{{{arch!r}: {{'recipe': '02_stage1'}}}} or {{{arch!r}: {{'model': <registry name>}}}}")
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
    task = BinaryTask(loss_name=spec.loss, alpha=spec.focal_alpha, gamma=spec.focal_gamma)
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
    atomic_savez(out / "predictions.npz", val_prob=val_prob, test_prob=test_prob, val_y=va.y, test_y=te.y)
    # What this member trained on, for notebook 05's leakage check: the content keys of every training
    # row it could have seen (fitted rows and a training holdout it stopped on).
    write_predictions(spec.predictions_path, val_prob, test_prob, va.y, te.y, trained_on=["train"],
                      selected_on=rows.split, train_keys=_keys(splits.train, rows.rows, use_pair))
    return val_prob, test_prob


def _member_metrics(spec: MemberSpec, model_name: str, model, result, val_prob: np.ndarray, test_prob: np.ndarray,
                    splits, rows: _Rows, leakage: dict[str, Any], t0: float, cpu0: float) -> dict[str, Any]:
    """metrics.json of a member: accuracies (test with its 95% interval over the data's independent unit and
    the standard error that interval implies), the binomial SE, the leakage check and the run's facts."""
    test_correct = ((test_prob >= 0.5) == splits.test.y).astype(np.float64)
    iv = interval(test_correct, unit_of(splits.test))
    p, n = float(test_correct.mean()), int(test_correct.size)
    best = result.best.get("monitor", {})
    return {
        "name": spec.name, "arch": spec.arch, "model": model_name, "seed": spec.seed, "recipe": spec.recipe,
        "val_acc": float(((val_prob >= 0.5) == splits.val.y).mean()), "test_acc": p,
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
        for f in ("metrics.json", "failed.json", "predictions.npz"):
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
    out = []
    for f in members.loc[(members["arch"] == arch) & (members["status"] == "ok"), "folder"]:
        with np.load(Path(f) / "predictions.npz") as z:
            out.append(((z["test_prob"] >= 0.5) == z["test_y"]).astype(np.float64))
    return np.stack(out)


def _compare(ca: np.ndarray, cb: np.ndarray, unit, n_boot: int, seed: int) -> dict[str, float]:
    """Architecture B minus A on the same test pairs, each averaged over its seeds [seeds, N]. Two sources of
    noise add up: the seeds (the variance of each seed mean, sd^2 / n) and the test split (`paired_test` of
    the seed-averaged per-pair correctness over the data's independent unit). Normal interval and p."""
    t = paired_test(ca.mean(0), cb.mean(0), unit, n_boot=n_boot, seed=seed)
    z = float(st.norm.ppf(0.975))
    se_test = (t["ci_high"] - t["ci_low"]) / (2 * z)
    acc_a, acc_b = ca.mean(1), cb.mean(1)
    var_seed = (acc_a.var(ddof=1) / len(acc_a) + acc_b.var(ddof=1) / len(acc_b)
                if min(len(acc_a), len(acc_b)) > 1 else float("nan"))
    se = math.sqrt(se_test ** 2 + var_seed)
    d = float(t["diff"])
    p = float(2 * st.norm.sf(abs(d) / se)) if se > 0 else (1.0 if d == 0 else float("nan"))
    return {"diff": d, "se_seed": math.sqrt(var_seed), "se_test": se_test, "se": se,
            "ci_low": d - z * se, "ci_high": d + z * se, "p_value": p}


def make_comparison_table(members: pd.DataFrame, unit, baseline: str | None = None, n_boot: int = 2000,
                          seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Each architecture against the baseline architecture (the grid's first unless named) on the same test
    split: difference of the seed-mean accuracies, its 95% interval and p from `_compare` (seed variance plus
    the unit-aware test variance), Holm-adjusted across the rows, and the verdict at ``alpha``."""
    archs = list(dict.fromkeys(members.loc[members["status"] == "ok", "arch"]))
    base = baseline or (archs[0] if archs else "")
    rows = []
    for arch in (a for a in archs if a != base):
        c = _compare(_member_correct(members, base), _member_correct(members, arch), unit, n_boot, seed)
        rows.append({"arch": arch, "baseline": base, **c})
    df = pd.DataFrame(rows, columns=["arch", "baseline", "diff", "se_seed", "se_test", "se", "ci_low", "ci_high",
                                     "p_value"])
    finite = df["p_value"].notna()
    df["p_holm"] = np.nan
    if finite.any():
        df.loc[finite, "p_holm"] = holm(df.loc[finite, "p_value"].tolist())
    df["verdict"] = [_verdict(r.diff, r.p_holm, alpha) for r in df.itertuples()]
    df.attrs.update(unit=getattr(unit, "name", "row"), n_tests=int(finite.sum()))
    return df


def _fmt_p(p: float) -> str:
    # A normal tail below 1e-16 is not worth printing digits for (and is never printed as 0).
    return format_p(p, 1e-16)


def _verdict(diff: float, p: float, alpha: float) -> str:
    if not np.isfinite(p):
        return "not testable (an architecture with one seed has no seed variance)"
    words = ("better" if diff > 0 else "worse") if p < alpha else "not distinguishable"
    return f"{words} ({_fmt_p(p)})"


def make_comparison_view(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison as shown: p-values as text (a tiny p is never displayed as a rounded 0)."""
    out = comparison.copy()
    for col in ("p_value", "p_holm"):
        out[col] = [_fmt_p(p) if np.isfinite(p) else "n/a" for p in out[col]]
    return out.set_index("arch")


def make_metrics_view(table: pd.DataFrame) -> pd.DataFrame:
    """metrics.json as shown: p-values as text (never a rounded 0); the file keeps the numbers."""
    out = table.astype(object)
    for key in out.index[out.index.str.endswith("p_vs_baseline")]:
        v = out.loc[key, "value"]
        out.loc[key, "value"] = _fmt_p(float(v)) if isinstance(v, (int, float)) and np.isfinite(v) else v
    return out


def describe_comparison(comparison: pd.DataFrame) -> str:
    """One line per architecture against the baseline, with the test that decided it."""
    if comparison.empty:
        return "Only one architecture finished: nothing to compare."
    holm_note = " (Holm-adjusted over the rows)" if comparison.attrs.get("n_tests", 0) > 1 else ""
    lines = [f"{r.arch} vs {r.baseline}: {r.diff:+.4f} (95% interval {r.ci_low:+.4f} to {r.ci_high:+.4f}; seed SE "
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
                     f"{_TWO_RUNS * r.std_test_acc:.4f} (95%) from the seed alone (range here "
                     f"{r.min_test_acc:.4f}–{r.max_test_acc:.4f}).")
    return "\n".join(lines)


def describe_answer(summary: pd.DataFrame, comparison: pd.DataFrame, label: str) -> str:
    """The notebook's answer in two to four sentences: the seed sd of each architecture with its interval,
    one model's SE, what a single-seed difference is worth, and the architecture comparison's verdict."""
    ok = summary[summary["n_ok"] > 0]
    if ok.empty:
        return f"On {label} no member finished, so the seed spread could not be measured."
    parts = [f"{r.arch} {r.mean_test_acc:.4f} (seed sd {r.std_test_acc:.4f}, 95% chi-square interval "
             f"{r.sd_ci_low:.4f}–{r.sd_ci_high:.4f}, {r.n_ok} seeds)" for r in ok.itertuples()]
    text = f"On the test split of {label}, retraining the models 02/03 report with new seeds gives " + "; ".join(parts) + "."
    sd = float(np.nanmax(ok["std_test_acc"])) if ok["std_test_acc"].notna().any() else float("nan")
    se, unit = float(ok["unit_se"].mean()), ok["unit"].iloc[0]
    text += (f" One model's accuracy has a standard error of {se:.4f} over {unit}s (binomial "
             f"{float(ok['binomial_se'].mean()):.4f}), and the largest seed sd is {sd / se:.1f}× that: two "
             f"single-seed runs of one recipe can differ by {_TWO_RUNS * sd:.4f} from the seed alone.")
    for r in comparison.itertuples():
        text += (f" {r.arch} vs {r.baseline}: {r.diff:+.4f} (95% interval {r.ci_low:+.4f} to {r.ci_high:+.4f}, "
                 f"counting seed and test-split noise), {r.verdict}.")
    return text


def make_answer_headline(summary: pd.DataFrame, comparison: pd.DataFrame) -> dict[str, float]:
    """The two or three numbers the answer rests on."""
    ok = summary[summary["n_ok"] > 1]
    out: dict[str, float] = {}
    if len(ok):
        r = ok.loc[ok["std_test_acc"].idxmax()]
        out[f"largest seed sd ({r['arch']})"] = float(r["std_test_acc"])
    if len(summary):
        out["one model's SE over the unit"] = float(summary["unit_se"].mean())
    if len(comparison):
        r = comparison.iloc[0]
        out[f"{r['arch']} − {r['baseline']}"] = float(r["diff"])
    return out


def make_headline(members: pd.DataFrame, summary: pd.DataFrame, comparison: pd.DataFrame | None = None) -> dict[str, Any]:
    """The metrics.json block of one dataset: counts, per-architecture mean / sd with its interval, one
    model's SE (binomial and over the unit), and each architecture's difference to the baseline."""
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
