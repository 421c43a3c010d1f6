"""Notebook 04: a grid of registry architectures × seeds trained in parallel worker processes.

Every member trains through the one training loop in its own process, writes its folder
(``config.json``, ``history.json``, ``metrics.json``, ``predictions.npz``) and a prediction file for
notebook 05; the spread across seeds is shown with intervals."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.core.io import atomic_savez, atomic_write_json
from helpers.core.paths import unique_slugs
from helpers.data.pairs import load_pair_dataset, make_inputs
from helpers.data.predictions import write_predictions
from helpers.evaluation.stats import wilson_interval
from helpers.models.registry import create_model, list_models
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model
from helpers.training.tasks import BinaryTask
from helpers.training.workers import resolve_workers, run_in_workers, WorkerOutcome

# What notebook 04 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["dataset_label", "describe_failures", "describe_spread", "load_member_histories", "make_arch_summary", "make_claims_table", "make_grid", "make_headline", "make_plan_table", "plot_member_curves", "plot_seed_strip", "resolve_workers", "train_members"]



# M1 stage 3, validation accuracy per (family, seed), on the note's own 28x28 pair data.
NOTE_001_CLAIMS: dict[tuple[str, int], float] = {
    ("resnet", 42): 0.8538, ("resnet", 2023): 0.8702, ("resnet", 2024): 0.8671, ("resnet", 2025): 0.8739,
    ("fpn", 42): 0.8730,
    ("fusion", 42): 0.8538, ("fusion", 123): 0.8436, ("fusion", 456): 0.8439,
}


@dataclass
class MemberSpec:
    """One member of the grid: an architecture (registry name) trained with one seed."""
    name: str                      # "<arch>_s<seed>", unique; also the folder and prediction-file name
    arch: str                      # the grid's label (e.g. "resnet")
    seed: int
    model: str = ""                # registry name ("" = the label itself)
    dataset: str = ""              # built-in name or folder
    run_dir: str = ""              # where the dataset's notebook wrote it
    out_dir: str = ""              # this member's folder
    predictions_path: str = ""     # <run>/04_multi_seed/<dataset>/predictions/<name>.npz
    vector_model: str = ""         # registry name used instead when the dataset holds vectors
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)   # TrainConfig fields
    loss: str = "bce"
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0
    early_stop_split: str = "train_holdout"   # train_holdout | val
    holdout_frac: float = 0.1
    max_train: int = 0
    device: str = "cpu"
    crash: str = ""                # testing aid: "raise" | "exit" | "segv" makes this member fail


def dataset_label(dataset: str) -> str:
    """The folder name a dataset's outputs go under: the built-in name, or the pair folder's name."""
    return Path(str(dataset)).name


def make_grid(grid: dict[str, Sequence[int]], dataset: str, run_dir: str | Path, out_dir: str | Path,
              architectures: dict[str, dict] | None = None, **common: Any) -> list[MemberSpec]:
    """Expand ``{"label": [seed, ...], ...}`` into member specs (one folder each).

    Member folders: ``out_dir/<dataset label>/members/<label>_s<seed>/``; prediction files for
    stacking: ``out_dir/<dataset label>/predictions/<label>_s<seed>.npz``.

    architectures: ``{"label": {"model": registry name, "vector_model": name for vector data,
    **create_model kwargs}}``; a label without an entry must itself be a registry name.
    common: MemberSpec fields shared by all members (train=..., loss=..., device=...).
    """

    if not isinstance(grid, dict) or not grid:
        raise WorkbookError(f"grid = {grid!r}: expected a non-empty mapping of architecture -> list of seeds, "
                            'e.g. {"siamese_resnet": [42, 2023]}')
    architectures = architectures or {}
    registry = list_models()
    specs, seen = [], set()
    # Labels become folder and file names: safe, unique slugs (the table shows label and name side by side).
    slugs = dict(zip(grid, unique_slugs(list(grid))))
    for arch, seeds in grid.items():
        entry = dict(architectures.get(arch, {}))
        if not isinstance(entry, dict):
            raise WorkbookError(f"architectures[{arch!r}] = {entry!r}: expected a mapping with a 'model' key")
        model = entry.pop("model", arch)
        vector_model = entry.pop("vector_model", "")
        for m in (model, vector_model):
            if m and m not in registry:
                raise WorkbookError(f"grid/architectures: {arch!r} names model {m!r}, which is not in the registry "
                                    f"({', '.join(registry)}); add an architectures entry "
                                    f"{{{arch!r}: {{'model': <registry name>}}}}")
        if isinstance(seeds, int):
            seeds = [seeds]
        if not isinstance(seeds, (list, tuple)) or not seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise WorkbookError(f"grid[{arch!r}] = {seeds!r}: expected a non-empty list of non-negative int seeds")
        for s in seeds:
            name = f"{slugs[arch]}_s{s}"
            if name in seen:
                raise WorkbookError(f"grid[{arch!r}] lists seed {s} twice")
            seen.add(name)
            specs.append(MemberSpec(name=name, arch=arch, seed=int(s), model=model, vector_model=vector_model,
                                    dataset=str(dataset), run_dir=str(run_dir),
                                    out_dir=str(Path(out_dir) / dataset_label(dataset) / "members" / name),
                                    predictions_path=str(Path(out_dir) / dataset_label(dataset) / "predictions"
                                                         / f"{name}.npz"),
                                    model_kwargs=entry, **common))
    return specs


_DATA_CACHE: dict[tuple[str, str], Any] = {}


def _load_splits(dataset: str, run_dir: str):
    """Load (once per worker process) the pair dataset."""
    key = (dataset, run_dir)
    if key not in _DATA_CACHE:

        _DATA_CACHE.clear()  # one dataset per worker at a time keeps memory flat
        _DATA_CACHE[key] = load_pair_dataset(dataset, run_dir)
    return _DATA_CACHE[key]


def _model_and_kwargs(splits, spec: MemberSpec) -> tuple[str, dict[str, Any]]:
    """Registry name and ``create_model`` kwargs: shapes from the data, then the member's own kwargs."""
    s = splits.train
    name = spec.model or spec.arch
    kw: dict[str, Any] = {}
    if splits.kind == "image":
        kw["in_channels"] = int(s.xa.shape[1])
        kw.update(spec.model_kwargs)
    else:
        if spec.vector_model:
            name = spec.vector_model
        kw["in_features"] = int(s.xa.shape[1])
        # Image-encoder settings (layers, width...) mean nothing to a vector model: keep shared ones.
        kw.update({k: v for k, v in spec.model_kwargs.items() if k in ("fusion", "feat_dim", "dropout", "hidden")})
    if s.extras and "pair" in s.extras:
        kw["pair_dim"] = int(s.extras["pair"].shape[1])
    return name, kw


def _crash(mode: str) -> None:
    if mode == "raise":
        raise RuntimeError("planted failure (crash='raise')")
    if mode == "exit":
        os._exit(3)
    if mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)


def _split_rows(spec: MemberSpec, tr, va) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    """(training rows used, rows the model is fitted on, the early-stopping data, its split name).

    The training rows are optionally capped (a seeded draw); early stopping watches a stratified
    holdout of them ("train_holdout") or the validation split ("val").
    """
    rng = np.random.default_rng(spec.seed)
    n = len(tr.y)
    rows = np.sort(rng.choice(n, spec.max_train, replace=False)) if 0 < spec.max_train < n else np.arange(n)
    if spec.early_stop_split == "train_holdout":
        from sklearn.model_selection import train_test_split

        fit_rows, stop_rows = train_test_split(rows, test_size=spec.holdout_frac, stratify=tr.y[rows],
                                               random_state=spec.seed)
        fit_rows, stop_rows = np.sort(fit_rows), np.sort(stop_rows)
        stop_inputs = [a[stop_rows] for a in make_inputs(tr, "pair" in tr.extras)]
        return rows, fit_rows, (*stop_inputs, tr.y[stop_rows]), "train_holdout"
    if spec.early_stop_split == "val":
        return rows, rows, (*make_inputs(va, "pair" in va.extras), va.y), "val"
    raise WorkbookError(f"early_stop_split = {spec.early_stop_split!r}; expected train_holdout or val")


def _build_member(splits, spec: MemberSpec):
    """(registry name, its kwargs, the model seeded with the member's seed, the task, the TrainConfig)."""
    import torch

    torch.manual_seed(spec.seed)  # model initialisation depends on the member's seed
    model_name, kwargs = _model_and_kwargs(splits, spec)
    model = create_model(model_name, **kwargs)
    task = BinaryTask(loss_name=spec.loss, alpha=spec.focal_alpha, gamma=spec.focal_gamma)
    cfg = TrainConfig(**{**spec.train, "seed": spec.seed, "log_every": 0, "num_threads": 0})
    return model_name, kwargs, model, task, cfg


def _write_member_predictions(spec: MemberSpec, out: Path, model, task, splits, seen: np.ndarray,
                              selected_on: str) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of the restored best model on the untouched validation and test splits, written to
    the member's ``predictions.npz`` and to its prediction file for notebook 05; returns (val, test)."""
    tr, va, te = splits.train, splits.val, splits.test
    val_prob = predict(model, task, make_inputs(va, "pair" in va.extras), device=spec.device).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, "pair" in te.extras), device=spec.device).astype(np.float64)
    atomic_savez(out / "predictions.npz", val_prob=val_prob, test_prob=test_prob, val_y=va.y, test_y=te.y)
    # What this member trained on, for notebook 05's leakage check: the split name and the
    # content keys of every training row it could have seen (fit part and early-stopping holdout).
    train_keys = make_example_keys(tr.xa[seen], tr.xb[seen], tr.extras.get("pair")[seen] if "pair" in tr.extras else None)
    write_predictions(spec.predictions_path, val_prob, test_prob, va.y, te.y, trained_on=["train"],
                      selected_on=selected_on, train_keys=train_keys)
    return val_prob, test_prob


def _member_metrics(spec: MemberSpec, model_name: str, model, result, val_prob: np.ndarray,
                    test_prob: np.ndarray, splits, fit_rows: np.ndarray, selected_on: str, t0: float) -> dict[str, Any]:
    """metrics.json of a member: accuracies (test with its 95% Wilson interval), the run's facts."""
    import torch

    val_correct = (val_prob >= 0.5) == splits.val.y
    test_correct = (test_prob >= 0.5) == splits.test.y
    k, nt = int(test_correct.sum()), int(test_correct.size)
    lo, hi = wilson_interval(k, nt)
    best = result.best.get("monitor", {})
    return {
        "name": spec.name, "arch": spec.arch, "model": model_name, "seed": spec.seed,
        "val_acc": float(val_correct.mean()), "test_acc": k / nt, "test_ci_low": lo, "test_ci_high": hi,
        "n_val": int(val_correct.size), "n_test": nt, "n_train_fit": int(fit_rows.size),
        "early_stop_split": selected_on, "epochs_run": result.epochs_run, "stopped_early": result.stopped_early,
        "best_epoch": best.get("epoch"), "params": int(sum(p.numel() for p in model.parameters())),
        "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
    }


def _write_member_card(spec: MemberSpec, out: Path, model_name: str, kwargs: dict[str, Any], model, result,
                       splits, rows: np.ndarray, fit_rows: np.ndarray, selected_on: str, n_params: int) -> None:
    """config.json of a member: the spec, the model, the training config, the task and the data used."""
    import torch

    atomic_write_json(out / "config.json", {
        "member": asdict(spec), "model": {"architecture": model_name, "label": spec.arch, "kwargs": kwargs,
                                          "spec": getattr(model, "spec", None), "params": n_params},
        "training": result.config, "task": {"loss": spec.loss, "alpha": spec.focal_alpha, "gamma": spec.focal_gamma},
        "dataset": {"name": splits.name, "kind": splits.kind, "generated": splits.generated, "source": splits.source,
                    "train_rows_used": int(rows.size), "fit_rows": int(fit_rows.size),
                    "early_stop_split": selected_on, "val": int(len(splits.val.y)), "test": int(len(splits.test.y)),
                    "data_leakage_prevention": True},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": spec.device,
    })


def train_member(spec: MemberSpec | dict) -> dict[str, Any]:
    """Train one member and write its folder and prediction file; returns its metrics.

    Runs inside a worker process (or inline). Early stopping and checkpoint choice use a holdout
    carved from the *training* split by default, so the validation split stays untouched by every
    member and can train the stacking meta-learner in notebook 05.
    """
    spec = spec if isinstance(spec, MemberSpec) else MemberSpec(**spec)
    t0 = time.perf_counter()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _crash(spec.crash)
    splits = _load_splits(spec.dataset, spec.run_dir)
    tr = splits.train
    rows, fit_rows, stop_data, selected_on = _split_rows(spec, tr, splits.val)
    model_name, kwargs, model, task, cfg = _build_member(splits, spec)
    fit_data = (*[a[fit_rows] for a in make_inputs(tr, "pair" in tr.extras)], tr.y[fit_rows])
    result = train_model(model, task, train=fit_data, val=stop_data, config=cfg, out_dir=out, device=spec.device)
    seen = rows if selected_on == "train_holdout" else fit_rows
    val_prob, test_prob = _write_member_predictions(spec, out, model, task, splits, seen, selected_on)
    metrics = _member_metrics(spec, model_name, model, result, val_prob, test_prob, splits, fit_rows, selected_on, t0)
    atomic_write_json(out / "metrics.json", metrics)
    _write_member_card(spec, out, model_name, kwargs, model, result, splits, rows, fit_rows, selected_on,
                       metrics["params"])
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


def make_member_table(specs: Sequence[MemberSpec], outcomes: Sequence[WorkerOutcome]) -> pd.DataFrame:
    """One row per member: status, accuracies with the test accuracy's 95% Wilson interval, error."""
    rows = []
    for s, o in zip(specs, outcomes):
        row = {"member": s.name, "arch": s.arch, "seed": s.seed, "status": "ok" if o.ok else "failed",
               "seconds": round(o.seconds, 2)}
        if o.ok:
            v = o.value
            row.update({k: v[k] for k in ("val_acc", "test_acc", "test_ci_low", "test_ci_high", "n_test",
                                          "epochs_run", "best_epoch", "params")})
            row["error"] = ""
        else:
            row["error"] = o.error.strip().splitlines()[0][:200] if o.error else "failed"
        row["folder"] = s.out_dir
        rows.append(row)
    cols = ["member", "arch", "seed", "status", "val_acc", "test_acc", "test_ci_low", "test_ci_high", "n_test",
            "epochs_run", "best_epoch", "params", "seconds", "error", "folder"]
    return pd.DataFrame(rows).reindex(columns=cols)


def make_arch_summary(members: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: members ok/failed, mean ± std (ddof = 1; NaN for one seed), min–max of test accuracy."""
    rows = []
    for arch, g in members.groupby("arch", sort=False):
        ok = g[g["status"] == "ok"]
        acc = ok["test_acc"].astype(float)
        rows.append({"arch": arch, "n_ok": len(ok), "n_failed": int((g["status"] != "ok").sum()),
                     "mean_test_acc": acc.mean() if len(acc) else np.nan,
                     "std_test_acc": acc.std(ddof=1) if len(acc) > 1 else np.nan,
                     "min_test_acc": acc.min() if len(acc) else np.nan,
                     "max_test_acc": acc.max() if len(acc) else np.nan,
                     "spread": (acc.max() - acc.min()) if len(acc) else np.nan,
                     "mean_val_acc": ok["val_acc"].astype(float).mean() if len(ok) else np.nan,
                     "mean_ci_half_width": ((ok["test_ci_high"] - ok["test_ci_low"]) / 2).mean() if len(ok) else np.nan})
    return pd.DataFrame(rows)


def _family(arch: str) -> str | None:
    a = arch.lower()
    for fam in ("fpn", "fusion", "resnet"):   # "resnet_fusion" is the note's Fusion model
        if fam in a:
            return fam
    return None


def make_claims_table(members: pd.DataFrame) -> pd.DataFrame:
    """M1's per-seed validation accuracies next to this run's members (their data vs this data)."""
    rows = []
    for _, r in members.iterrows():
        claim = NOTE_001_CLAIMS.get((_family(r["arch"]) or "", int(r["seed"])))
        rows.append({"member": r["member"], "M1 val acc (their data)": claim,
                     "this run val acc": r.get("val_acc"), "this run test acc": r.get("test_acc")})
    return pd.DataFrame(rows)


def make_headline(members: pd.DataFrame, summary: pd.DataFrame) -> dict[str, Any]:
    """The metrics.json block of one dataset: counts and per-architecture mean/std."""
    out: dict[str, Any] = {"n_members": int(len(members)), "n_failed": int((members["status"] != "ok").sum())}
    for _, r in summary.iterrows():
        out[r["arch"]] = {"mean_test_acc": r["mean_test_acc"], "std_test_acc": r["std_test_acc"],
                          "min_test_acc": r["min_test_acc"], "max_test_acc": r["max_test_acc"], "n_ok": int(r["n_ok"])}
    ok = members[members["status"] == "ok"]
    if len(ok):
        out["best_member"] = str(ok.loc[ok["val_acc"].astype(float).idxmax(), "member"])
        out["overall_std_test_acc"] = float(ok["test_acc"].astype(float).std(ddof=1)) if len(ok) > 1 else float("nan")
    return out


def make_plan_table(specs: Sequence[MemberSpec]) -> pd.DataFrame:
    """The grid as planned: one row per member with its model, kwargs and training settings."""
    return pd.DataFrame([{"member": s.name, "arch": s.arch, "model": s.model or s.arch, "seed": s.seed,
                          "dataset": s.dataset, "model_kwargs": json.dumps(s.model_kwargs),
                          "epochs": s.train.get("epochs"), "loss": s.loss, "early_stop_split": s.early_stop_split,
                          "max_train": s.max_train or "all", "crash_planted": s.crash or ""} for s in specs])


def describe_failures(members: pd.DataFrame) -> str:
    bad = members[members["status"] != "ok"]
    if not len(bad):
        return f"All {len(members)} members finished."
    lines = [f"{len(bad)} of {len(members)} members FAILED (the other {len(members) - len(bad)} finished and are used):"]
    lines += [f"  {r.member}: {r.error}" for r in bad.itertuples()]
    return "\n".join(lines)


def describe_spread(summary: pd.DataFrame) -> str:
    """Per architecture: mean ± std, min–max, and whether the seed spread exceeds one run's interval."""
    lines = []
    for r in summary.itertuples():
        if not r.n_ok:
            lines.append(f"{r.arch}: no member finished")
            continue
        std = "n/a (one seed)" if not np.isfinite(r.std_test_acc) else f"{r.std_test_acc:.4f}"
        verdict = ""
        if r.n_ok > 1:
            verdict = ("; the seed spread is WIDER than one run's 95% interval (half-width "
                       f"{r.mean_ci_half_width:.4f}): a single seed can mislead" if r.spread > r.mean_ci_half_width
                       else f"; the seed spread is within one run's 95% interval (half-width {r.mean_ci_half_width:.4f})")
        lines.append(f"{r.arch}: test accuracy {r.mean_test_acc:.4f} ± {std} over {r.n_ok} seed(s), "
                     f"min–max {r.min_test_acc:.4f}–{r.max_test_acc:.4f} (spread {r.spread:.4f}){verdict}")
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
    """Seed variance: one dot per member (test accuracy with its 95% Wilson interval), per
    architecture, with the architecture's mean as a bar. Failed members are listed in the title."""
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
    ax.set_ylabel("test accuracy (95% Wilson interval)")
    failed = members.loc[members["status"] != "ok", "member"].tolist()
    ax.set_title("Seed variance per architecture" + (f" — failed: {', '.join(failed)}" if failed else ""))
    return ax.figure


def plot_member_curves(histories: dict[str, list[dict]], members: pd.DataFrame,
                       metrics: Sequence[str] = ("train_loss", "val_loss", "accuracy"), axes=None):
    """Training curves of every member overlaid, one colour per architecture, one panel per metric.

    "val_*"/"accuracy" here are on the early-stopping split (a training holdout by default)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

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
            val = [r[m] for r in hist if m in r]
            if ep:
                ax.plot(ep, val, color=colour[arch_of[name]], alpha=0.75, lw=1.3)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(m)
    handles = [plt.Line2D([], [], color=colour[a], label=a) for a in archs]
    axes[-1].legend(handles=handles, fontsize=8)
    fig.tight_layout()
    return fig
