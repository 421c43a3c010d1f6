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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats as st

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_savez, atomic_torch_save, atomic_write_json, read_json
from helpers.core.paths import unique_slugs
from helpers.data.pairs import _uses_pair, dataset_labels, load_pair_dataset, make_inputs, make_source_holdout
from helpers.data.predictions import load_threshold, write_predictions
from helpers.evaluation.leakage import evaluate_fit_leakage, make_row_keys
from helpers.evaluation.metrics import correct
from helpers.evaluation.stats import adjust, compare, compare_over_seeds, format_p, interval, unit_of
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model
from helpers.training.grid import EARLY_STOP_SPLITS, load_recipes, make_grid, MemberSpec, resolve_architecture
from helpers.training.search import (evaluate_importance, make_data_fingerprint, make_trial_spec, run_study,
                                     StudyResult)
from helpers.training.tasks import BinaryTask
from helpers.training.workers import resolve_workers, run_in_workers, WorkerOutcome

# What notebook 04 calls here (its tables, figures and words are in helpers.reports.multiseed); lower-layer
# functions are imported above so the notebook needs this module and its report only.
__all__ = ["dataset_labels", "evaluate_tuning_gain", "handset_val_acc", "load_member_histories", "load_recipes",
           "make_arch_summary", "make_comparison_table", "make_grid", "make_headline", "make_importance_table",
           "make_leakage_summary", "make_search_card", "make_search_spec", "make_test_unit", "make_tuned_grid",
           "resolve_workers", "run_search", "train_members"]


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


def evaluate_member_leakage(splits, rows: _Rows) -> dict[str, Any]:
    """What a member was fitted on against every split it is stopped or scored on (`evaluate_fit_leakage`)."""
    against = {"val": (splits.val, None), "test": (splits.test, None)}
    if rows.stop is not None:
        against["stop"] = (splits.train, rows.stop)
    return evaluate_fit_leakage([(splits.train, rows.fit)], against, _uses_pair(splits))


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
                      selected_on=rows.split, train_keys=make_row_keys(splits.train, rows.rows, use_pair))
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


def load_member_histories(members: pd.DataFrame) -> dict[str, list[dict]]:
    """history.json of every member that finished, keyed by member name."""
    out = {}
    for _, r in members[members["status"] == "ok"].iterrows():
        p = Path(r["folder"]) / "history.json"
        if p.is_file():
            out[r["member"]] = json.loads(p.read_text())
    return out


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
    fields = resolve_architecture(arch, (architectures or {}).get(arch, {}), recipes, {})
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


def _correct_of(folder: str | Path) -> np.ndarray:
    """Per-pair test correctness of one member, at the threshold its predictions.npz records."""
    path = Path(folder) / "predictions.npz"
    threshold = load_threshold(path)
    with np.load(path) as z:
        return correct(z["test_prob"], z["test_y"], threshold)


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


def best_is_handset(result: StudyResult) -> bool:
    """Whether the study's best trial is the enqueued hand-set recipe (then the tuned re-run repeats it)."""
    t = result.trials
    if "handset" not in t or not len(t):
        return False
    best = t[t["number"] == result.best_trial]
    return bool(len(best) and best["handset"].fillna(False).astype(bool).iloc[0])


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


