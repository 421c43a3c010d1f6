"""The doctor against hand labels of real public logs: dev and held-out splits, pooled precision and recall
with intervals clustered by repository, and the fixed-rule baselines scored on the same files.

Scoring: for each file and each labelled kind (`SCORED_KINDS`), the doctor (or a baseline) names the kind
or not; a kind the labeller marked ambiguous for that file is not scored there. Pooled precision =
sum(tp) / sum(tp + fp) over files and kinds; recall = sum(tp) / sum(tp + fn). Intervals and paired tests
resample repositories (`helpers.evaluation.stats.unit_weights`), the logs' independent unit: runs of one
repository share code, data and author.

Baselines, implemented from their documentation on the same per-epoch columns (`baselines` below):
SageMaker Debugger LossNotDecreasing (num_steps 10, loss must decrease; EVAL loss, else TRAIN), Overfit
(ratio (val - train) / train > 0.1 for patience 1 step, from step 0), Overtraining (train loss not improved
by delta 0.1 for 5 steps and validation loss not improved by 0.1 for 10 steps); Keras ReduceLROnPlateau
(monitor val_loss, patience 10, min_delta 1e-4) and EarlyStopping (monitor val_loss, patience 0,
min_delta 0, Keras' defaults) as detectors: a rule that fires names its kind (LossNotDecreasing,
ReduceLROnPlateau, EarlyStopping -> plateau; Overfit, Overtraining -> overfitting); none firing -> healthy.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.evaluation.doctor.diagnose import diagnose_history
from helpers.evaluation.doctor.external import LABELLED_KINDS
from helpers.evaluation.doctor.history import load_history
from helpers.evaluation.doctor.rules import evaluate_reduce_lr_on_plateau
from helpers.evaluation.stats import Spread, unit_weights

SCORED_KINDS = (*LABELLED_KINDS, "unjudgeable")


@dataclass
class LabelledLog:
    """One hand-labelled log: its file, repository (the cluster), split and labels."""
    name: str
    path: Path
    repo: str
    split: str
    kinds: frozenset
    ambiguous: frozenset
    fmt: str = ""


def load_labelled_logs(histories: str | Path) -> list[LabelledLog]:
    """``external/`` with ``labels.json`` (dev by definition; repositories from the README's source list)
    and ``public/manifest.json`` (its own dev / heldout split)."""
    root = Path(histories)
    logs = _external_logs(root) if (root / "labels.json").is_file() else []
    man = root / "public" / "manifest.json"
    if man.is_file():
        obj = json.loads(man.read_text(encoding="utf-8"))
        entries = obj.get("logs", obj) if isinstance(obj, dict) else obj
        for e in entries:
            lab = e["labels"]
            logs.append(LabelledLog(Path(e["file"]).stem, root / "public" / e["file"], e["repo"], e["split"],
                                    frozenset(lab["kinds"]), frozenset(lab.get("ambiguous", [])), e.get("format", "")))
    return logs


def _external_logs(root: Path) -> list[LabelledLog]:
    labels = {k: v for k, v in json.loads((root / "labels.json").read_text(encoding="utf-8")).items()
              if not k.startswith("_")}
    readme = (root / "README.md").read_text(encoding="utf-8") if (root / "README.md").is_file() else ""
    repos = dict(re.findall(r"- `([^`]+)`: https://github\.com/(\S+) at", readme))
    out = []
    for stem, lab in sorted(labels.items()):
        path = next(iter(sorted((root / "external").glob(stem + ".*"))), root / "external" / stem)
        repo = repos.get(path.name, stem)
        out.append(LabelledLog(stem, path, repo, "dev", frozenset(lab["kinds"]), frozenset(lab.get("ambiguous", []))))
    return out


# ------------------------------------------------------------------------------------ predictions
def doctor_kinds(path: Path) -> set[str]:
    """The doctor's scored kinds for one file ("unjudgeable" when it judged nothing or refused the file)."""
    try:
        d = diagnose_history(path)
    except WorkbookError:
        return {"unjudgeable"}
    return {"unjudgeable"} if not d.judged else set(d.kinds) & set(SCORED_KINDS)


def _losses(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    try:
        df = load_history(path)
    except WorkbookError:
        return None, None
    col = lambda c: df[c].to_numpy(dtype=float) if c in df else None  # noqa: E731
    return col("train_loss"), col("val_loss")


def sm_loss_not_decreasing(tr, va, num_steps: int = 10) -> bool:
    """Every num_steps, the loss must be below the loss num_steps earlier (EVAL loss first, else TRAIN)."""
    loss = va if va is not None and np.isfinite(va).sum() > num_steps else tr
    if loss is None:
        return False
    x = loss[np.isfinite(loss)]
    steps = np.arange(num_steps, len(x), num_steps)
    return bool(np.any(x[steps] >= x[steps - num_steps]))


def sm_overfit(tr, va, ratio_threshold: float = 0.1, patience: int = 1, start_step: int = 0) -> bool:
    """(val - train) / train above ratio_threshold on `patience` consecutive steps from start_step."""
    if tr is None or va is None:
        return False
    ok = np.isfinite(tr) & np.isfinite(va) & (tr > 0)
    r = np.where(ok, (va - tr) / np.where(ok, tr, 1.0), -np.inf)[start_step:]
    run = 0
    for over in r > ratio_threshold:
        run = run + 1 if over else 0
        if run >= patience:
            return True
    return False


def _stalled(x: np.ndarray, patience: int, delta: float) -> bool:
    """No new optimum better by `delta` for `patience` steps."""
    best, wait = math.inf, 0
    for v in x[np.isfinite(x)]:
        if v < best - delta:
            best, wait = v, 0
        else:
            wait += 1
            if wait >= patience:
                return True
    return False


def sm_overtraining(tr, va, patience_train: int = 5, patience_validation: int = 10, delta: float = 0.1) -> bool:
    """Training and validation loss both stopped improving by delta (patience 5 and 10 steps)."""
    if tr is None or va is None:
        return False
    return _stalled(tr, patience_train, delta) and _stalled(va, patience_validation, delta)


def keras_reduce_lr(tr, va, patience: int = 10, min_delta: float = 1e-4) -> bool:
    """Keras ReduceLROnPlateau(monitor val_loss) would cut the learning rate at least once."""
    if va is None:
        return False
    return bool(evaluate_reduce_lr_on_plateau(va, False, patience=patience, threshold=min_delta, threshold_mode="abs"))


def keras_early_stopping(tr, va, patience: int = 0, min_delta: float = 0.0) -> bool:
    """Keras EarlyStopping(monitor val_loss, patience 0, min_delta 0) would stop before the last epoch."""
    if va is None:
        return False
    x = va[np.isfinite(va)]
    best, wait = math.inf, 0
    for v in x[:-1]:
        if v < best - min_delta:
            best, wait = v, 0
        else:
            wait += 1
            if wait > patience:
                return True
    return False


GOAL_PRECISION, GOAL_RECALL = 0.85, 0.80    # the doctor's goal on held-out logs (notebook 07, README)
BASELINES: dict[str, tuple[tuple[Callable, str], ...]] = {
    "SageMaker Debugger (LossNotDecreasing, Overfit, Overtraining)": (
        (sm_loss_not_decreasing, "plateau"), (sm_overfit, "overfitting"), (sm_overtraining, "overfitting")),
    "Keras ReduceLROnPlateau": ((keras_reduce_lr, "plateau"),),
    "Keras EarlyStopping": ((keras_early_stopping, "plateau"),),
}


def baseline_kinds(name: str, path: Path) -> set[str]:
    tr, va = _losses(path)
    kinds = {kind for rule, kind in BASELINES[name] if rule(tr, va)}
    return kinds or {"healthy"}


def predict(logs: list[LabelledLog]) -> dict[str, list[set[str]]]:
    """Each method's kinds per log: the doctor first, then each baseline."""
    out = {"doctor": [doctor_kinds(x.path) for x in logs]}
    for name in BASELINES:
        out[name] = [baseline_kinds(name, x.path) for x in logs]
    return out


# ---------------------------------------------------------------------------------------- scoring
def counts(logs: list[LabelledLog], pred: list[set[str]], kinds=SCORED_KINDS) -> np.ndarray:
    """[files, kinds, 3] true positives, false positives, false negatives (ambiguous kinds not scored)."""
    out = np.zeros((len(logs), len(kinds), 3))
    for i, (x, p) in enumerate(zip(logs, pred)):
        for k, kind in enumerate(kinds):
            if kind in x.ambiguous:
                continue
            lab, got = kind in x.kinds, kind in p
            out[i, k] = (lab and got, got and not lab, lab and not got)
    return out


def _ratio(w: np.ndarray, num: np.ndarray, den: np.ndarray) -> np.ndarray:
    d = w @ den
    return np.where(d > 0, (w @ num) / np.where(d > 0, d, 1.0), np.nan)


def pooled_scores(c: np.ndarray, repos: list[str], n_boot: int = 4000, seed: int = 0) -> dict[str, Any]:
    """Pooled precision and recall with 95 % intervals from a bootstrap over repositories."""
    tp, fp, fn = (c[:, :, j].sum(axis=1) for j in range(3))
    w = unit_weights([np.asarray(repos)], len(repos), n_boot, seed).astype(np.float64)
    out: dict[str, Any] = {"files": len(repos), "repositories": len(set(repos)), "tp": int(tp.sum()),
                           "fp": int(fp.sum()), "fn": int(fn.sum())}
    for name, den in (("precision", tp + fp), ("recall", tp + fn)):
        point = tp.sum() / den.sum() if den.sum() else math.nan
        boot = _ratio(w, tp, den)
        lo, hi = np.nanquantile(boot, [0.025, 0.975]) if np.isfinite(boot).any() else (math.nan, math.nan)
        out.update({name: float(point), f"{name}_low": float(lo), f"{name}_high": float(hi)})
    return out


def per_kind_table(c: np.ndarray, kinds=SCORED_KINDS) -> pd.DataFrame:
    rows = []
    for k, kind in enumerate(kinds):
        tp, fp, fn = (int(c[:, k, j].sum()) for j in range(3))
        rows.append({"kind": kind, "labelled": tp + fn, "found": tp + fp, "tp": tp, "fp": fp, "fn": fn,
                     "precision": tp / (tp + fp) if tp + fp else math.nan,
                     "recall": tp / (tp + fn) if tp + fn else math.nan})
    return pd.DataFrame(rows)


def paired_versus(c_a: np.ndarray, c_b: np.ndarray, repos: list[str], n_boot: int = 4000,
                  seed: int = 1) -> dict[str, Any]:
    """B minus A in pooled precision and recall on the same files: the difference, its 95 % interval and a
    two-sided p-value, both methods resampled with the same repositories (paired cluster bootstrap)."""
    w = unit_weights([np.asarray(repos)], len(repos), n_boot, seed).astype(np.float64)
    out: dict[str, Any] = {}
    for name, cols in (("precision", (0, 1)), ("recall", (0, 2))):
        ra, rb = ((lambda cc: _ratio(w, cc[:, :, 0].sum(1), cc[:, :, cols[0]].sum(1) + cc[:, :, cols[1]].sum(1)))(x)
                  for x in (c_a, c_b))
        d = rb - ra
        d = d[np.isfinite(d)]
        pa, pb = (_point(x, cols) for x in (c_a, c_b))
        spread = Spread(pb - pa, draws=d)
        # a bootstrap p-value is at least 1/n_boot: "0" would claim more than the resamples can show
        p = max(spread.p_floor, spread.p) if len(d) else 1.0
        lo, hi = spread.interval(0.95) if len(d) else (math.nan, math.nan)
        out.update({f"{name}_diff": pb - pa, f"{name}_diff_low": float(lo), f"{name}_diff_high": float(hi),
                    f"{name}_p": float(p)})
    return out


def _point(c: np.ndarray, cols: tuple[int, int]) -> float:
    tp = c[:, :, 0].sum()
    den = c[:, :, cols[0]].sum() + c[:, :, cols[1]].sum()
    return float(tp / den) if den else math.nan


def evaluate_split(logs: list[LabelledLog], preds: dict[str, list[set[str]]], split: str) -> dict[str, Any]:
    """For one split: each method's pooled scores, the doctor's per-kind table, and the doctor against each
    baseline (paired, clustered by repository)."""
    idx = [i for i, x in enumerate(logs) if x.split == split]
    sub = [logs[i] for i in idx]
    repos = [x.repo for x in sub]
    cs = {m: counts(sub, [p[i] for i in idx]) for m, p in preds.items()}
    if not sub:
        return {"split": split, "files": 0}
    return {"split": split, "scores": {m: pooled_scores(c, repos) for m, c in cs.items()},
            "per_kind": per_kind_table(cs["doctor"]),
            "versus": {m: paired_versus(cs[m], cs["doctor"], repos) for m in cs if m != "doctor"}}


def scores_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per split and method: pooled precision and recall with their intervals."""
    rows = []
    for r in results:
        for m, s in r.get("scores", {}).items():
            rows.append({"split": r["split"], "method": m, **s})
    return pd.DataFrame(rows)
