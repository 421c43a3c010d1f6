"""The study runner: an Optuna study over a training recipe's learning rate, weight decay and width.

M1 (docs/method.md) names grid search or Optuna over the learning rate (log-uniform 1e-4..1e-2) and the weight
decay (log-uniform 1e-5..1e-3), 100 trials, and Ray Tune to scale up. Here:

- **Recipes** (`load_recipe`): what a reporting notebook (02, 03) trained, read from its scored checkpoint
  (model spec and TrainConfig), its run card (the loss) and, for stage 2, the stage-1 weights it started from.
  A study tunes one recipe; notebook 04's members and notebook 05's student follow recipes too.
- **A trial** trains the recipe with the suggested ``lr``, ``weight_decay`` and ``width`` (a multiplier of
  the recipe's encoder width) on the training split, early-stops on the validation split as the recipe
  does, and scores the best validation accuracy; the test split is never read. Each epoch's validation
  accuracy reaches the pruner through the training loop's ``on_epoch_end`` (`_train_trial`); a pruned trial
  stops training there. Every trial writes ``history.json`` and TensorBoard event files in its own folder.
- **The sampler** is TPE (seeded per worker), **the pruner** the median rule or successive halving. The first
  trial of a new study is the hand-set recipe itself (when it lies inside the space), so the best trial is
  never worse on validation than the recipe it tunes.
- **Parallel trials**: worker processes on one machine (`helpers.training.workers`), each running trials of
  the same study; **several machines** share the study through its storage. The default storage is a
  SQLite file in the run folder (kept there, so a later run can continue or extend the study); a database
  URL that every machine reaches (``postgresql://user:pw@host/db``, ``mysql+pymysql://...``) serves a
  cluster. Another machine joins a study with::

      python -m helpers.training.search --storage URL --study NAME --n-trials 20 [--workers 4] \\
          [--run-dir RUN_FOLDER] [--out TRIALS_FOLDER]

  It reads the trial spec from the study (the recipe, the search space, the dataset), so it trains exactly
  what the study's other workers train; ``--run-dir`` points at the run folder holding the dataset on that
  machine (default: the path recorded in the study) and ``--out`` at where its trials write their folders.
  A SQLite file suits the worker processes of one machine (or a shared disk with working file locks); for
  many machines use a database server.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.core.io import read_json
from helpers.data.pairs import _uses_pair, load_pair_dataset, make_inputs
from helpers.data.predictions import load_threshold
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.loop import train_model
from helpers.training.tasks import BinaryTask
from helpers.training.workers import resolve_workers, run_in_workers, WorkerOutcome

# The notebooks whose models can be retrained from their recipe (their scored checkpoint holds spec and config).
RECIPE_STEMS = ("02_stage1", "03_stage2")
# The prediction file of the model each recipe notebook reports: it records the threshold that notebook declared.
RECIPE_PREDICTIONS = {"02_stage1": "stage1", "03_stage2": "stage2"}
PRUNERS = ("median", "halving", "none")
SPACE_KEYS = ("lr", "weight_decay", "width")
# M1's ranges; the width multipliers are the workbook's (M1 names the two rates only).
DEFAULT_SPACE = {"lr": (1e-4, 1e-2), "weight_decay": (1e-5, 1e-3), "width": (0.5, 1.0, 2.0)}
_TRAIN_FIELDS = set(TrainConfig.__dataclass_fields__)


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
    TrainConfig of its scored checkpoint, the loss from its run card, the decision threshold the notebook
    declared (recorded in its prediction file), and (03) the stage-1 start."""
    if stem not in RECIPE_STEMS:
        raise WorkbookError(f"recipe {stem!r}: expected one of {', '.join(RECIPE_STEMS)}")
    folder = paths.upstream(run_dir, stem) / label
    ckpt = _scored_checkpoint(folder)
    if not ckpt.is_file():
        raise WorkbookError(f"recipe {stem!r} for dataset {label!r}: no checkpoint {ckpt}. This step retrains the "
                            f"model {stem} reports: run it first in this run folder "
                            f"(`python -m helpers run --only {stem[:2]} ...`)")
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
            "checkpoint": str(ckpt), "start": str(start or ""),
            "threshold": load_threshold(folder / "predictions" / f"{RECIPE_PREDICTIONS[stem]}.npz")}


def scale_width(kwargs: dict[str, Any], factor: float) -> dict[str, Any]:
    """The model kwargs with the encoder ``factor`` times as wide: ``width_mult`` (ResNet encoders) or every
    ``hidden`` size (MLP encoders). Raises when the model has neither."""
    out = dict(kwargs)
    if "width_mult" in out:
        out["width_mult"] = round(float(out["width_mult"]) * factor, 6)
    elif "hidden" in out:
        out["hidden"] = [max(1, int(round(h * factor))) for h in out["hidden"]]
    else:
        raise WorkbookError(f"width search: the model kwargs {sorted(kwargs)} have no width_mult or hidden to scale")
    return out


def width_value(kwargs: dict[str, Any]) -> Any:
    """What "width" means for these kwargs (``width_mult`` or the ``hidden`` sizes), for tables."""
    return kwargs.get("width_mult", kwargs.get("hidden"))


# ------------------------------------------------------------------------------- the spec
def make_data_fingerprint(splits) -> str:
    """A short hash of the training and validation pairs' content: a study continued later must see the same data."""
    h = hashlib.blake2b(digest_size=8)
    for s in (splits.train, splits.val):
        h.update(np.sort(make_example_keys(s.xa, s.xb, s.extras.get("pair") if s.extras else None)).tobytes())
        h.update(np.asarray(s.y, np.int64).tobytes())
    return h.hexdigest()


def check_space(space: dict[str, Any]) -> dict[str, Any]:
    """``{"lr": [lo, hi], "weight_decay": [lo, hi], "width": [multipliers]}`` checked; lists, for JSON."""
    out = {}
    for key in ("lr", "weight_decay"):
        lo, hi = (float(v) for v in space.get(key, DEFAULT_SPACE[key]))
        if not 0 < lo < hi:
            raise WorkbookError(f"search space {key} = [{lo}, {hi}]: expected 0 < low < high (log-uniform)")
        out[key] = [lo, hi]
    widths = [float(w) for w in space.get("width", DEFAULT_SPACE["width"])]
    if not widths or any(w <= 0 for w in widths) or len(set(widths)) != len(widths):
        raise WorkbookError(f"search space width = {widths}: expected distinct positive multipliers")
    out["width"] = widths
    return out


def make_trial_spec(recipe: dict[str, Any], dataset: str, label: str, run_dir: str | Path, trials_dir: str | Path,
                    space: dict[str, Any] | None = None, seed: int = 42, device: str = "cpu",
                    pruner: str = "median", n_startup_trials: int = 5, data_fingerprint: str = "",
                    max_train: int = 0) -> dict[str, Any]:
    """Everything a trial needs, as plain data (stored in the study, so workers on other machines train the
    same): the recipe (model, kwargs, TrainConfig fields, loss, start weights), the dataset, the search space,
    the training seed, the pruner and the folder trials write into. ``max_train`` caps the training pairs
    (a seeded draw, the same for every trial; 0 = all)."""
    if pruner not in PRUNERS:
        raise WorkbookError(f"pruner = {pruner!r}; expected one of {'|'.join(PRUNERS)}")
    space = check_space(space or {})
    scale_width(recipe["kwargs"], 1.0)          # the recipe must have a width to search
    handset = {"lr": float(recipe["train"].get("lr", float("nan"))),
               "weight_decay": float(recipe["train"].get("weight_decay", float("nan"))), "width": 1.0}
    return {"dataset": str(dataset), "label": label, "run_dir": str(run_dir), "trials_dir": str(trials_dir),
            "recipe": recipe.get("stem", ""), "model": recipe["model"], "kwargs": dict(recipe["kwargs"]),
            "train": dict(recipe["train"]), "loss": recipe.get("loss", "bce"), "threshold": float(recipe["threshold"]),
            "focal_alpha": float(recipe.get("focal_alpha", -1.0)), "focal_gamma": float(recipe.get("focal_gamma", 2.0)),
            "start": str(recipe.get("start", "")), "space": space, "seed": int(seed), "device": str(device),
            "pruner": pruner, "n_startup_trials": int(n_startup_trials), "data": data_fingerprint,
            "max_train": int(max_train), "handset": handset if in_space(handset, space) else None}


def in_space(params: dict[str, float], space: dict[str, Any]) -> bool:
    """Whether a configuration lies inside the search space (ranges inclusive, width one of the choices)."""
    return all(space[k][0] <= params[k] <= space[k][1] for k in ("lr", "weight_decay")) and \
        params["width"] in space["width"]


# What must agree between a study and a run that continues it (paths and the device may differ).
_COMPARABLE = ("label", "model", "kwargs", "train", "loss", "threshold", "focal_alpha", "focal_gamma", "start",
               "space", "seed", "data", "max_train", "handset")


def check_compatible(stored: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """Raise when a study's stored spec and this run's differ in anything that changes a trial's score."""
    diff = [k for k in _COMPARABLE if _norm(stored.get(k)) != _norm(spec.get(k))]
    if diff:
        raise WorkbookError(f"{where}: the study's trials were run with a different " + ", ".join(diff)
                            + " (" + "; ".join(f"{k}: study {stored.get(k)!r} vs now {spec.get(k)!r}" for k in diff[:3])
                            + "). Continue it only with the same recipe, data and space, or start a new study")


def _norm(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


# ------------------------------------------------------------------------------ one trial
_DATA_CACHE: dict[tuple[str, str, str], Any] = {}


def _load_splits(dataset: str, run_dir: str, label: str):
    key = (dataset, run_dir, label)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_pair_dataset(dataset, run_dir, label=label or None)
    return _DATA_CACHE[key]


def suggest(trial, space: dict[str, Any]) -> dict[str, float]:
    """The trial's ``lr`` and ``weight_decay`` (log-uniform) and ``width`` (one of the multipliers)."""
    return {"lr": trial.suggest_float("lr", *space["lr"], log=True),
            "weight_decay": trial.suggest_float("weight_decay", *space["weight_decay"], log=True),
            "width": trial.suggest_categorical("width", list(space["width"]))}


def make_trial_config(spec: dict[str, Any], params: dict[str, float]) -> TrainConfig:
    """The recipe's TrainConfig with the trial's rates; quiet, no checkpoints, TensorBoard on, fresh start."""
    train = {**spec["train"], "lr": float(params["lr"]), "weight_decay": float(params["weight_decay"]),
             "seed": int(spec["seed"]), "log_every": 0, "num_threads": 0, "checkpoint": False, "resume": False,
             "tensorboard": True}
    train["amp"] = bool(train.get("amp", False)) and str(spec["device"]).startswith("cuda")
    return TrainConfig(**train)


def _build_model(spec: dict[str, Any], splits, factor: float):
    s = splits.train
    image = splits.kind == "image"
    kw: dict[str, Any] = {"in_channels": int(s.xa.shape[1])} if image else {"in_features": int(s.xa.shape[1])}
    kw.update(scale_width(spec["kwargs"], factor))
    torch.manual_seed(int(spec["seed"]))
    model = create_model(spec["model"], **kw)
    if spec.get("start"):
        transfer_weights(model, read_checkpoint_file(spec["start"])["model_state_dict"])
    return model, kw


def _train_trial(trial, spec: dict[str, Any], params: dict[str, float], out_dir: Path) -> dict[str, Any]:
    """Train one trial; each epoch's validation accuracy goes to ``trial.report`` and a True
    ``trial.should_prune()`` stops training there (the loop's ``on_epoch_end``). Returns what happened."""
    splits = _load_splits(spec["dataset"], spec["run_dir"], spec["label"])
    use_pair = _uses_pair(splits)
    model, kw = _build_model(spec, splits, float(params["width"]))
    task = BinaryTask(loss_name=spec["loss"], alpha=spec["focal_alpha"], gamma=spec["focal_gamma"],
                      threshold=spec["threshold"])
    cfg = make_trial_config(spec, params)
    monitor = "accuracy"
    state = {"pruned_at": 0, "curve": []}

    def on_epoch_end(row: dict) -> bool:
        value = float(row[monitor])
        state["curve"].append(value)
        trial.report(value, int(row["epoch"]))
        if trial.should_prune():
            state["pruned_at"] = int(row["epoch"])
            return True
        return False

    tr, va = splits.train, splits.val
    n, cap = len(tr.y), int(spec.get("max_train", 0))
    rows = np.sort(np.random.default_rng(int(spec["seed"])).choice(n, cap, replace=False)) if 0 < cap < n else np.arange(n)
    t0 = time.perf_counter()
    res = train_model(model, task, (*[a[rows] for a in make_inputs(tr, use_pair)], tr.y[rows]),
                      (*make_inputs(va, use_pair), va.y), cfg, out_dir=out_dir, device=spec["device"],
                      on_epoch_end=on_epoch_end)
    best = res.best.get(monitor, {}).get("value", max(state["curve"]) if state["curve"] else float("nan"))
    return {"value": float(best), "pruned_at": state["pruned_at"], "epochs_run": res.epochs_run,
            "seconds": time.perf_counter() - t0, "width_value": width_value(kw), "curve": state["curve"]}


def objective(trial, spec: dict[str, Any]) -> float:
    """One trial: suggest, train (`_train_trial`), record; raises ``optuna.TrialPruned`` when pruned."""
    import optuna  # deferred: optuna (and SQLAlchemy) are slow to import; only searches need them

    params = suggest(trial, spec["space"])
    out = Path(spec["trials_dir"]) / f"trial_{trial.number:04d}"
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    trial.set_user_attr("handset", params == spec.get("handset"))
    trial.set_user_attr("folder", str(out))
    r = _train_trial(trial, spec, params, out)
    for k in ("epochs_run", "seconds", "width_value", "pruned_at"):
        trial.set_user_attr(k, r[k])
    if r["pruned_at"]:
        raise optuna.TrialPruned(f"pruned after epoch {r['pruned_at']}")
    return r["value"]


# ---------------------------------------------------------------------------- the study
def make_storage_url(storage: str | Path) -> str:
    """A database URL as given, or ``sqlite:///<absolute path>`` for a file path."""
    s = str(storage)
    if "://" in s:
        return s
    return f"sqlite:///{Path(s).expanduser().resolve()}"


def open_storage(url: str):
    """Optuna's RDBStorage for ``url``; SQLite waits up to 60 s for a lock held by another worker, and a
    heartbeat marks the trials of a worker that died as failed, so a resumed study is not left with
    trials that run forever."""
    import optuna  # deferred: slow to import

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():   # the heartbeat is marked experimental; its use here is documented above
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=120)


def make_sampler(spec: dict[str, Any], worker: int = 0):
    import optuna  # deferred: slow to import

    return optuna.samplers.TPESampler(seed=int(spec["seed"]) + 1000 * int(worker),
                                      n_startup_trials=int(spec["n_startup_trials"]))


def make_pruner(spec: dict[str, Any]):
    """Median rule (after ``n_startup_trials`` finished trials, from the second epoch on), successive halving
    (rungs at epochs 2, 6, 18, ...: the best third goes on), or none."""
    import optuna  # deferred: slow to import

    name = spec["pruner"]
    if name == "median":
        # Steps are epochs (1, 2, ...): the first epoch's score (often inside the warm-up) never prunes.
        return optuna.pruners.MedianPruner(n_startup_trials=max(1, int(spec["n_startup_trials"])), n_warmup_steps=2)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _counted(study) -> int:
    import optuna  # deferred: slow to import

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))


def run_trials(task: dict[str, Any]) -> dict[str, Any]:
    """One worker's share: load the study from its storage and run ``n_trials`` trials of it (stopping early
    once the study holds ``total`` finished trials, e.g. when other machines contribute). A worker entry
    point (module level, so worker processes import it by name)."""
    import optuna  # deferred: slow to import

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(task["storage"])
    study = optuna.load_study(study_name=task["study"], storage=storage)
    spec = dict(study.user_attrs["spec"])
    spec.update({k: task[k] for k in ("run_dir", "trials_dir", "device") if task.get(k)})
    study = optuna.load_study(study_name=task["study"], storage=storage, sampler=make_sampler(spec, task.get("worker", 0)),
                              pruner=make_pruner(spec))
    callbacks = []
    if task.get("total"):
        callbacks.append(optuna.study.MaxTrialsCallback(int(task["total"]), states=(
            optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)))
    before = {t.number for t in study.get_trials(deepcopy=False) if t.state != optuna.trial.TrialState.WAITING}
    study.optimize(lambda t: objective(t, spec), n_trials=int(task["n_trials"]), catch=(Exception,),
                   callbacks=callbacks, gc_after_trial=False)
    mine = [t.number for t in study.get_trials(deepcopy=False)
            if t.number not in before and t.user_attrs.get("worker") == f"{socket.gethostname()}:{os.getpid()}"]
    return {"worker": f"{socket.gethostname()}:{os.getpid()}", "trials": mine}


@dataclass
class StudyResult:
    """A study after this run's trials: where it lives, its trials and the best configuration."""
    name: str
    storage: str                      # the URL
    path: str                         # the SQLite file ("" for a database server)
    spec: dict[str, Any]
    trials: pd.DataFrame              # `make_trials_table`
    curves: pd.DataFrame              # `make_curves_table`: each trial's validation accuracy per epoch
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    n_before: int                     # finished (complete or pruned) trials the study held before this run
    n_budget: int
    workers: int
    threads: int
    worker_outcomes: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: str = ""

    @property
    def n_trials(self) -> int:
        return int(self.trials["state"].isin(["COMPLETE", "PRUNED"]).sum()) if len(self.trials) else 0

    @property
    def n_complete(self) -> int:
        return int((self.trials["state"] == "COMPLETE").sum()) if len(self.trials) else 0

    @property
    def n_pruned(self) -> int:
        return int((self.trials["state"] == "PRUNED").sum()) if len(self.trials) else 0

    @property
    def n_failed(self) -> int:
        return int((self.trials["state"] == "FAIL").sum()) if len(self.trials) else 0

    @property
    def best_kwargs(self) -> dict[str, Any]:
        """The recipe's model kwargs at the best width."""
        return scale_width(self.spec["kwargs"], float(self.best_params["width"]))


def make_trials_table(study) -> pd.DataFrame:
    """One row per trial: number, state, value (best validation accuracy), the parameters, the width it
    means, epochs run, the epoch a pruned trial stopped at, seconds, the worker that ran it."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value, "lr": t.params.get("lr"),
                     "weight_decay": t.params.get("weight_decay"), "width": t.params.get("width"),
                     "width_value": t.user_attrs.get("width_value"), "epochs_run": t.user_attrs.get("epochs_run"),
                     "pruned_at": t.user_attrs.get("pruned_at") or None, "seconds": t.user_attrs.get("seconds"),
                     "last_value": (t.intermediate_values[max(t.intermediate_values)]
                                    if t.intermediate_values else None),
                     "handset": bool(t.user_attrs.get("handset", False)),
                     "worker": t.user_attrs.get("worker", ""), "folder": t.user_attrs.get("folder", "")})
    return pd.DataFrame(rows, columns=["number", "state", "value", "lr", "weight_decay", "width", "width_value",
                                       "epochs_run", "pruned_at", "seconds", "last_value", "handset", "worker",
                                       "folder"])


def make_curves_table(study) -> pd.DataFrame:
    """Long table of the values each trial reported: number, state, epoch, validation accuracy."""
    rows = [{"number": t.number, "state": t.state.name, "epoch": int(e), "value": float(v)}
            for t in study.get_trials(deepcopy=False) for e, v in sorted(t.intermediate_values.items())]
    return pd.DataFrame(rows, columns=["number", "state", "epoch", "value"])


def evaluate_importance(study, seed: int = 0) -> pd.DataFrame:
    """Each parameter's share of the variance of the objective over the completed trials (fANOVA, Hutter et
    al. 2014, as Optuna implements it); empty when fewer than three trials completed."""
    import optuna  # deferred: slow to import

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(done) < 3 or len({t.value for t in done}) < 2:
        return pd.DataFrame(columns=["parameter", "importance"])
    imp = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    return pd.DataFrame({"parameter": list(imp), "importance": [float(v) for v in imp.values()]})


def _share(total: int, workers: int) -> list[int]:
    base, extra = divmod(total, workers)
    return [base + (1 if i < extra else 0) for i in range(workers) if base + (1 if i < extra else 0) > 0]


def run_study(spec: dict[str, Any], storage: str | Path, study_name: str, n_trials: int, workers: int = 0,
              threads: int = 0, resume_from: str | Path = "", timeout_s: float | None = None,
              verbose: bool = True) -> StudyResult:
    """Create (or continue) the study and run trials until it holds ``n_trials`` finished ones.

    storage: a file path (SQLite) or a database URL. resume_from: an existing SQLite study file copied to
    ``storage`` first (never modified: an earlier run's folder stays as it was). Trials run in ``workers``
    processes (0 = as many as the cores allow, `resolve_workers`); a worker that crashes costs its own
    trials only. Returns the study's trials, its best configuration and what this run added.
    """
    import optuna  # deferred: slow to import

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    url = make_storage_url(storage)
    path = "" if "://" in str(storage) else str(Path(storage).expanduser().resolve())
    if resume_from:
        src = Path(resume_from).expanduser()
        if not src.is_file():
            raise WorkbookError(f"search_resume = {str(resume_from)!r}: no such study file (expected a study.db "
                                "written by an earlier run)")
        if not path:
            raise WorkbookError("search_resume copies a study file, and search_storage names a database server: "
                                "set only one of them")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if src.resolve() != Path(path):
            shutil.copy2(src, path)
    elif path:                                    # a fresh study in this run's folder: nothing of an earlier attempt
        Path(path).unlink(missing_ok=True)
        shutil.rmtree(spec["trials_dir"], ignore_errors=True)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(spec["trials_dir"]).mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=study_name, storage=open_storage(url), direction="maximize",
                                load_if_exists=True, sampler=make_sampler(spec), pruner=make_pruner(spec))
    if "spec" in study.user_attrs:
        check_compatible(study.user_attrs["spec"], spec, f"study {study_name!r} in {resume_from or url}")
    else:
        study.set_user_attr("spec", spec)
        if spec.get("handset") and n_trials:
            # The first trial is the recipe as it is: the study's best is then never worse on validation than the
            # hand-set recipe (with the search's seed), and the history shows where the search starts from.
            study.enqueue_trial(dict(spec["handset"]))
    n_before = _counted(study)
    remaining = max(0, int(n_trials) - n_before)
    n_workers, n_threads = resolve_workers(remaining, workers, spec["device"])
    outcomes: list[dict[str, Any]] = []
    if remaining:
        if verbose:
            print(f"study {study_name!r}: {n_before} finished trial(s) stored, running {remaining} more on "
                  f"{n_workers} worker process(es) × {n_threads} torch thread(s); storage {url}", flush=True)
        base = {"storage": url, "study": study_name, "total": int(n_trials), "run_dir": spec["run_dir"],
                "trials_dir": spec["trials_dir"], "device": spec["device"]}
        outcomes = _run_workers(study, base, remaining, n_workers, n_threads, timeout_s, verbose)
    study = optuna.load_study(study_name=study_name, storage=open_storage(url))
    trials = make_trials_table(study)
    done = trials[trials["state"] == "COMPLETE"]
    if done.empty:
        raise WorkbookError(f"study {study_name!r}: no trial completed ({len(trials)} trials: "
                            f"{trials['state'].value_counts().to_dict()}); see the trial folders under {spec['trials_dir']}")
    best = study.best_trial
    return StudyResult(study_name, url, path, spec, trials, make_curves_table(study), dict(best.params),
                       float(best.value), int(best.number), n_before, int(n_trials), n_workers if outcomes else 0, n_threads,
                       outcomes, time.perf_counter() - t0, str(resume_from or ""))


def _run_workers(study, base: dict[str, Any], remaining: int, n_workers: int, n_threads: int,
                 timeout_s: float | None, verbose: bool) -> list[dict[str, Any]]:
    """Run ``remaining`` trials in worker processes. An enqueued trial (the hand-set recipe) runs first, alone:
    two processes popping the same waiting trial from SQLite at once can both run it, and the second one's
    result is then refused ("Cannot tell a COMPLETE trial"), which stops that worker."""
    import optuna  # deferred: slow to import

    def report(o: WorkerOutcome) -> None:
        if verbose:
            msg = f"{len(o.value['trials'])} trials" if o.ok else "FAILED: " + o.error.strip().splitlines()[0]
            print(f"  worker {o.index}: {o.seconds:6.1f} s  {msg}", flush=True)

    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    first = min(waiting, remaining) if n_workers > 1 else 0
    rounds = [[{**base, "n_trials": first, "worker": 0}]] if first else []
    rounds.append([{**base, "n_trials": k, "worker": i} for i, k in enumerate(_share(remaining - first, n_workers))])
    results = [o for tasks in rounds if tasks
               for o in run_in_workers(run_trials, tasks, len(tasks), n_threads, timeout_s, report)]
    return [{"index": o.index, "ok": o.ok, "seconds": round(o.seconds, 2),
             **(o.value if o.ok else {"error": o.error.strip().splitlines()[0][:300] if o.error else ""})}
            for o in results]


def load_study_result(storage: str | Path, study_name: str) -> pd.DataFrame:
    """The trials table of a stored study (to inspect one without running anything)."""
    import optuna  # deferred: slow to import

    return make_trials_table(optuna.load_study(study_name=study_name, storage=open_storage(make_storage_url(storage))))


# ------------------------------------------------------------------------ another machine
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.training.search``: join a stored study from this machine (module docstring)."""
    p = argparse.ArgumentParser(prog="python -m helpers.training.search",
                                description="Run trials of a stored study (a notebook-04 search) on this machine.")
    p.add_argument("--storage", required=True, help="database URL or SQLite file of the study")
    p.add_argument("--study", required=True, help="study name (notebook 04 prints it; e.g. digit_pairs_stage1)")
    p.add_argument("--n-trials", type=int, required=True, help="trials this machine runs")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: as many as the cores allow)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per worker (0: the cores split evenly)")
    p.add_argument("--run-dir", default="", help="the run folder holding the dataset on this machine")
    p.add_argument("--out", default="", help="folder the trials write their history.json and TensorBoard files to")
    p.add_argument("--device", default="", help="torch device (default: the study's)")
    a = p.parse_args(argv)
    url = make_storage_url(a.storage)
    n_workers, n_threads = resolve_workers(a.n_trials, a.workers, a.device or "cpu")
    tasks = [{"storage": url, "study": a.study, "n_trials": k, "worker": 100 + i, "run_dir": a.run_dir,
              "trials_dir": a.out, "device": a.device} for i, k in enumerate(_share(a.n_trials, n_workers))]
    outcomes = run_in_workers(run_trials, tasks, len(tasks), a.threads or n_threads)
    for o in outcomes:
        print(f"worker {o.index}: " + (f"{len(o.value['trials'])} trials" if o.ok else "FAILED: " + o.error[:300]))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":  # pragma: no cover - the command line
    raise SystemExit(main())
