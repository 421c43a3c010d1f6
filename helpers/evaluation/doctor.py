"""The training-curve doctor: why a curve stalls and what to change (notebook 07, `python -m helpers diagnose`).

Input: any per-epoch training history (the workbook's ``history.json``, a Keras CSVLogger file, a
timm ``summary.csv``, a list of dicts). Output: a `Diagnosis` with

- findings, each with numeric evidence: ``plateau``, ``overfitting``, ``underfitting``,
  ``divergence``, ``oscillation``, ``lr_decayed_early``, ``warmup_not_linear``, ``too_short``,
  ``healthy``;
- ranked recommendations mapped to note 004's concrete parameter changes (each with the reason
  drawn from the findings and a ``params`` dict a follow-up run can apply);
- the epochs at which PyTorch ``ReduceLROnPlateau`` (patience 10, threshold 1e-4 rel) and
  Lightning ``EarlyStopping`` (patience 20, min_delta 1e-4) would have acted on the same curve.

Everything here is plain numpy/pandas: no torch, no plotting (the plots live in `helpers.plateau`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError


KINDS = ("divergence", "overfitting", "lr_decayed_early", "oscillation", "plateau", "underfitting",
         "warmup_not_linear", "too_short", "healthy")


# Findings are listed most severe first: a cause ranks above the symptom it explains.
_SEVERITY = {k: i for i, k in enumerate(KINDS)}


# Note 004's starting configuration (train_transformer3D/train_3d.py): the "from" values when a
# history comes without its own config.
NOTE004_BASELINE: dict[str, Any] = {
    "d_model": 512, "nhead": 8, "num_layers": 4, "dim_feedforward": 2048, "dropout": 0.15,
    "mse_weight": 0.2, "cosine_weight": 0.8, "lr": 1e-4, "warmup_epochs": 5, "warmup_lr": 1e-6,
    "epochs": 100, "cosine_eta_min": 1e-6, "batch_size": 32, "weight_decay": 1e-4,
    "early_stopping_patience": 20, "early_stopping_min_delta": 1e-4,
}


# TrainConfig / other spellings of note 004's flags in a config.json.
_CONFIG_ALIASES = {"eta_min": "cosine_eta_min", "patience": "early_stopping_patience",
                   "min_delta": "early_stopping_min_delta", "learning_rate": "lr"}


# Column spellings of common loggers -> the workbook's names.
_EPOCH_NAMES = ("epoch", "epochs", "step", "iteration", "iter")


_EXACT_ALIASES = {
    "loss": "train_loss", "training_loss": "train_loss", "trn_loss": "train_loss",
    "train_loss_epoch": "train_loss",
    "eval_loss": "val_loss", "valid_loss": "val_loss", "validation_loss": "val_loss",
    "val_loss_epoch": "val_loss", "test_loss": "val_loss",
    "learning_rate": "lr", "lr_0": "lr", "lr_adam": "lr", "lr_sgd": "lr", "lr_adamw": "lr",
    "acc": "train_accuracy", "accuracy": "train_accuracy", "train_acc": "train_accuracy",
    "val_acc": "val_accuracy", "eval_top1": "val_top1", "eval_top5": "val_top5",
}


_VAL_PREFIXES = ("eval_", "valid_", "validation_", "val/", "eval/", "valid/")


_LOSS_WORDS = ("loss", "mse", "mae", "rmse", "nll", "error", "err", "perplexity")


# Metrics preferred as the primary score when none is named (first match wins).
_SCORE_PREFERENCE = ("val_cos", "val_cosine", "val_accuracy", "val_top1", "val_f1", "val_auc")


_BOUNDED_SCORES = ("accuracy", "acc", "top1", "top5", "f1", "auc", "precision", "recall")


_NOT_METRICS = {"epoch", "lr", "grad_norm", "epoch_time_s", "samples_per_s", "time", "wall_time",
                "train_loss", "val_loss", "momentum", "weight_decay"}


@dataclass
class Finding:
    """One finding: its kind, the metric it concerns, the epoch it refers to and numeric evidence."""
    kind: str
    metric: str
    epoch: float | None
    evidence: dict[str, Any]
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "metric": self.metric, "epoch": self.epoch,
                "evidence": self.evidence, "message": self.message}


@dataclass
class Recommendation:
    """A concrete change (``params`` can be applied to a config) and the reason from the findings."""
    change: str
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    plan: str = ""          # note 004's plan letter or rule it comes from
    name: str = ""          # short id, used as a follow-up run's folder name

    def to_dict(self) -> dict[str, Any]:
        return {"change": self.change, "reason": self.reason, "params": self.params,
                "plan": self.plan, "name": self.name}


@dataclass
class Diagnosis:
    metric: str
    greater_is_better: bool
    findings: list[Finding]
    recommendations: list[Recommendation]
    rules: dict[str, Any]
    summary: dict[str, Any]

    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.findings]

    @property
    def label(self) -> str:
        """The most severe finding's kind."""
        return self.findings[0].kind if self.findings else "healthy"

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: findings, recommendations, plus the rules and a summary."""
        return {"findings": [f.to_dict() for f in self.findings],
                "recommendations": [r.to_dict() for r in self.recommendations],
                "rules": self.rules, "summary": self.summary}


def _canon(name: str) -> str:
    n = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    if n in _EXACT_ALIASES:
        return _EXACT_ALIASES[n]
    for p in _VAL_PREFIXES:
        if n.startswith(p):
            rest = n[len(p):]
            return "val_" + {"acc": "accuracy"}.get(rest, rest)
    if n.startswith("train/"):
        return "train_" + n[len("train/"):]
    return n.replace("/", "_")


def normalise_columns(df: pd.DataFrame, source: str = "history") -> pd.DataFrame:
    """Rename common logger spellings to the workbook's, keep numeric columns, sort by epoch.

    Raises WorkbookError when there is no epoch column, no loss or metric column, or the epoch
    column is not numeric and finite.
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise WorkbookError(f"{source}: the history is empty; expected one row per epoch")
    mapping: dict[str, str] = {}
    canon = {c: _canon(c) for c in df.columns}
    present = set(canon.values())
    for c in df.columns:
        n = canon[c]
        # A bare score ("accuracy", "cos") is a training value when its val_ twin exists (Keras),
        # else a validation value (the workbook's history.json scores the validation split).
        if n.startswith("train_") and n != "train_loss" and str(c).lower() in ("acc", "accuracy"):
            n = n if "val_" + n[len("train_"):] in present else "val_" + n[len("train_"):]
        elif (n not in _NOT_METRICS and n not in _EPOCH_NAMES and not n.startswith(("val_", "train_"))):
            n = ("train_" + n) if ("val_" + n) in present else ("val_" + n)
        if n in _EPOCH_NAMES:
            n = "epoch"
        if n in mapping.values():       # two spellings of one column: keep the first
            continue
        mapping[c] = n
    out = df[list(mapping)].rename(columns=mapping)
    if "epoch" not in out.columns:
        raise WorkbookError(f"{source}: no epoch column; expected one of {', '.join(_EPOCH_NAMES)} "
                            f"(columns found: {', '.join(map(str, df.columns))})")
    numeric = {}
    for c in out.columns:
        v = pd.to_numeric(out[c], errors="coerce")
        if c == "epoch" or v.notna().any():
            numeric[c] = v
    out = pd.DataFrame(numeric)
    if not np.isfinite(out["epoch"].to_numpy(dtype=float)).all():
        raise WorkbookError(f"{source}: the epoch column has missing or non-numeric values; "
                            "expected a number on every row")
    scores = [c for c in out.columns if c != "epoch"]
    if not any(c in ("train_loss", "val_loss") or c not in _NOT_METRICS for c in scores):
        raise WorkbookError(f"{source}: no loss or metric column; expected train_loss/val_loss "
                            f"(or loss, eval_loss…) or a score such as val_accuracy "
                            f"(columns found: {', '.join(map(str, df.columns))})")
    # Resumed runs repeat epochs: the last row of an epoch wins.
    out = out.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    return out


def load_history(source: str | Path | pd.DataFrame | Sequence[dict] | dict) -> pd.DataFrame:
    """Read a history (JSON list of rows / dict of lists / {"history": [...]}, CSV, a run folder
    holding history.json, a DataFrame or a list of dicts) into a normalised DataFrame."""
    name = "history"
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    elif isinstance(source, (list, tuple)):
        df = pd.DataFrame(list(source))
    elif isinstance(source, dict):
        df = _frame_from_json(source, name)
    else:
        path = Path(source)
        name = str(path)
        if path.is_dir():
            cand = path / "history.json"
            if not cand.exists():
                raise WorkbookError(f"{path}: a folder without history.json; expected a history "
                                    "file (.json or .csv) or a run folder holding history.json")
            path, name = cand, str(cand)
        if not path.exists():
            raise WorkbookError(f"{path}: file not found; expected a training history (.json or .csv)")
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv", ".txt"):
            try:
                df = pd.read_csv(path, sep=None, engine="python")  # sniffs , ; or tab
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
                raise WorkbookError(f"{path}: not a readable CSV ({e}); expected a header row and "
                                    "one row per epoch") from None
        elif suffix in (".json", ".jsonl"):
            text = path.read_text(encoding="utf-8")
            try:
                if suffix == ".jsonl":
                    obj = [json.loads(line) for line in text.splitlines() if line.strip()]
                else:
                    obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise WorkbookError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
            df = _frame_from_json(obj, name)
        else:
            raise WorkbookError(f"{path}: unknown history format {suffix!r}; expected .json, .jsonl or .csv")
    return normalise_columns(df, name)


def _frame_from_json(obj: Any, name: str) -> pd.DataFrame:
    if isinstance(obj, dict) and "history" in obj:
        obj = obj["history"]
    if isinstance(obj, list) and all(isinstance(r, dict) for r in obj):
        return pd.DataFrame(obj)
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        lens = {len(v) for v in obj.values()}
        if len(lens) != 1:
            raise WorkbookError(f"{name}: columns of different lengths {sorted(lens)}; expected one "
                                "value per epoch in every column")
        df = pd.DataFrame(obj)
        if not any(_canon(c) in _EPOCH_NAMES for c in df.columns):  # Keras History.history has none
            df.insert(0, "epoch", np.arange(len(df)))
        return df
    raise WorkbookError(f"{name}: expected a list of per-epoch objects, an object of per-epoch lists "
                        "or {\"history\": [...]}")


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Hyperparameters from a config.json beside a history (nested sections flattened; only the
    keys a recommendation can change are kept). {} when there is none."""
    p = Path(path)
    cfg_path = p / "config.json" if p.is_dir() else p.parent / "config.json"
    if not cfg_path.exists():
        return {}
    try:
        obj = json.loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    flat: dict[str, Any] = {}

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(v)
                else:
                    k = _CONFIG_ALIASES.get(k, k)
                    if k in NOTE004_BASELINE and isinstance(v, (int, float)) and not isinstance(v, bool):
                        flat.setdefault(k, v)
    walk(obj)
    return flat


def metric_direction(name: str) -> bool:
    """True when larger is better (accuracy, cosine...), False for losses and errors."""
    n = name.lower()
    return not any(w in n for w in _LOSS_WORDS)


def pick_metric(df: pd.DataFrame, metric: str | None = None) -> str:
    """The primary metric: ``metric`` (any known spelling) or the first validation score, else val_loss."""
    if metric:
        for cand in (metric, _canon(metric), "val_" + _canon(metric)):
            if cand in df.columns:
                return cand
        raise WorkbookError(f"--metric {metric!r}: not a column of the history; expected one of "
                            f"{', '.join(c for c in df.columns if c != 'epoch')}")
    cols = [c for c in df.columns if c != "epoch"]
    for pref in _SCORE_PREFERENCE:
        for c in cols:
            if c.startswith(pref):
                return c
    for c in cols:
        if c.startswith("val_") and c != "val_loss" and c not in _NOT_METRICS:
            return c
    for c in ("val_loss", "train_loss"):
        if c in cols:
            return c
    others = [c for c in cols if c not in _NOT_METRICS]
    if others:
        return others[0]
    raise WorkbookError("history: no metric to judge; expected val_loss, train_loss or a score column")


def evaluate_reduce_lr_on_plateau(values: Sequence[float], greater_is_better: bool = False,
                                  patience: int = 10, threshold: float = 1e-4,
                                  threshold_mode: str = "rel", cooldown: int = 0) -> list[int]:
    """Row indices at which PyTorch's ReduceLROnPlateau would cut the learning rate.

    Same rule as torch.optim.lr_scheduler.ReduceLROnPlateau: improvement is ``a < best·(1−thr)``
    (min, rel) / ``a > best·(1+thr)`` (max, rel) or ``∓ thr`` (abs); the LR is cut when the number
    of bad epochs exceeds ``patience``, then the counter resets. NaN counts as a bad epoch.
    """
    best = -math.inf if greater_is_better else math.inf
    bad, cool, cuts = 0, 0, []
    for i, a in enumerate(np.asarray(values, dtype=float)):
        if greater_is_better:
            ref = best * (1 + threshold) if threshold_mode == "rel" else best + threshold
            better = a > ref
        else:
            ref = best * (1 - threshold) if threshold_mode == "rel" else best - threshold
            better = a < ref
        if better:
            best, bad = a, 0
        else:
            bad += 1
        if cool > 0:
            cool -= 1
            bad = 0
        if bad > patience:
            cuts.append(i)
            cool, bad = cooldown, 0
    return cuts


def evaluate_early_stopping(values: Sequence[float], greater_is_better: bool = False,
                            patience: int = 20, min_delta: float = 1e-4,
                            check_finite: bool = True) -> int | None:
    """Row index at which Lightning's EarlyStopping would stop (None if it never would).

    Improvement is ``current < best − |min_delta|`` (min) / ``current > best + |min_delta|`` (max);
    it stops when ``wait_count >= patience``; a non-finite value stops at once (check_finite).
    """
    best = -math.inf if greater_is_better else math.inf
    wait = 0
    d = abs(min_delta)
    for i, a in enumerate(np.asarray(values, dtype=float)):
        if check_finite and not math.isfinite(a):
            return i
        better = a > best + d if greater_is_better else a < best - d
        if better:
            best, wait = a, 0
        else:
            wait += 1
            if wait >= patience:
                return i
    return None


def _slope(y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope per step of y against 0..n-1, and its standard error."""
    n = len(y)
    if n < 3:
        return (float(y[-1] - y[0]) / max(n - 1, 1), math.inf)
    x = np.arange(n, dtype=float)
    x -= x.mean()
    b = float((x * (y - y.mean())).sum() / (x ** 2).sum())
    resid = y - y.mean() - b * x
    se = math.sqrt(float((resid ** 2).sum()) / (n - 2) / float((x ** 2).sum()))
    return b, se


def find_plateau(values: Sequence[float], greater_is_better: bool = True, window: int = 8,
                 rel_tol: float = 0.05) -> dict[str, Any] | None:
    """Where a curve stops improving, judged by a trend test over a window, not a single epoch.

    The curve is oriented so that up is better. With G the total gain (best − first value) and
    tol = rel_tol·G, row t starts a plateau when
      (1) the least-squares trend over rows [t, t+window) gains less than tol across the window, and
      (2) the curve never again improves on its running best at t by more than tol.
    Returns None if no row qualifies (the curve is still improving); otherwise the start row, the
    row at which an online observer could flag it (start + window − 1), its level and the trend.
    """
    y = np.asarray(values, dtype=float)
    y = y if greater_is_better else -y
    ok = np.isfinite(y)
    if ok.sum() < window + 2:
        return None
    idx = np.flatnonzero(ok)
    y = y[ok]
    run_best = np.maximum.accumulate(y)
    gain = float(run_best[-1] - y[0])
    # A curve that never improved is flat from the start; tol then comes from its noise.
    noise = float(np.median(np.abs(np.diff(y)))) if len(y) > 2 else 0.0
    tol = max(rel_tol * gain, 2.0 * noise / math.sqrt(window), 1e-12)
    n = len(y)
    for t in range(0, n - window + 1):
        b, se = _slope(y[t:t + window])
        if b * (window - 1) >= tol:
            continue
        if run_best[-1] - run_best[t] > tol:
            continue
        seg = y[t:]
        level = float(np.mean(seg))
        sign = 1.0 if greater_is_better else -1.0
        return {"start": int(idx[t]), "flagged": int(idx[min(t + window - 1, n - 1)]),
                "level": sign * level, "best": sign * float(run_best[-1]),
                "window_gain": sign * b * (window - 1), "tolerance": tol,
                "total_gain": gain, "slope_per_epoch": sign * b, "slope_se": se}
    return None


def _tail_median(x: np.ndarray, k: int) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x[-k:])) if len(x) else math.nan


def _r(x: Any, nd: int = 4) -> Any:
    """Round for evidence; keep None/NaN readable."""
    if x is None:
        return None
    if isinstance(x, (int, np.integer)):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.{nd}g}")


def diagnose_history(history: pd.DataFrame | str | Path | Sequence[dict], metric: str | None = None,
                     ceiling: float | None = None, config: dict[str, Any] | None = None,
                     window: int = 8, min_epochs: int = 8, rel_tol: float = 0.05,
                     rlrop_patience: int = 10, es_patience: int = 20,
                     es_min_delta: float = 1e-4) -> Diagnosis:
    """Diagnose one training history.

    Args:
        history: a DataFrame / rows / path (see `load_history`).
        metric: the score to judge (any spelling); default the first validation score, else val_loss.
        ceiling: the best achievable value of ``metric`` when known (e.g. the generated data's
            noise ceiling); the plateau level is judged against it.
        config: the run's hyperparameters (keys of `NOTE004_BASELINE`); recommendations then give
            concrete values relative to it, else relative to note 004's baseline.
        window: rows of the plateau trend test; min_epochs: fewer rows -> ``too_short``.
    """
    df = load_history(history)
    metric = pick_metric(df, metric)
    gib = metric_direction(metric)
    ep = df["epoch"].to_numpy(dtype=float)
    n = len(df)
    w = int(min(window, max(4, n // 3)))
    y = df[metric].to_numpy(dtype=float)
    tr = df["train_loss"].to_numpy(dtype=float) if "train_loss" in df else None
    va = df["val_loss"].to_numpy(dtype=float) if "val_loss" in df else None
    lr = df["lr"].to_numpy(dtype=float) if "lr" in df else None
    findings: list[Finding] = []

    def epoch_at(i: int | None) -> float | None:
        if i is None:
            return None
        e = float(ep[i])
        return int(e) if e.is_integer() else e

    # ---- the rules users already know, on the same curve
    cuts = evaluate_reduce_lr_on_plateau(y, gib, patience=rlrop_patience)
    stop = evaluate_early_stopping(y, gib, patience=es_patience, min_delta=es_min_delta)
    finite = np.isfinite(y)
    best_i = (int(np.nanargmax(y) if gib else np.nanargmin(y))) if finite.any() else None
    rules: dict[str, Any] = {
        "monitor": metric, "mode": "max" if gib else "min", "n_epochs": int(len(y)),
        "reduce_lr_on_plateau": {"patience": rlrop_patience, "threshold": 1e-4,
                                 "threshold_mode": "rel",
                                 "first_cut_epoch": epoch_at(cuts[0]) if cuts else None,
                                 "cut_epochs": [epoch_at(i) for i in cuts]},
        "early_stopping": {"patience": es_patience, "min_delta": es_min_delta,
                           "stop_epoch": epoch_at(stop)},
    }

    # ---- divergence: non-finite losses or a training loss that ends above where it started
    for col, arr in (("train_loss", tr), ("val_loss", va), (metric, y)):
        if arr is not None and not np.isfinite(arr).all():
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            findings.append(Finding("divergence", col, epoch_at(i),
                                    {"first_nonfinite_epoch": epoch_at(i),
                                     "nonfinite_rows": int((~np.isfinite(arr)).sum()), "rows": n},
                                    f"{col} is NaN/Inf from epoch {epoch_at(i)} on "
                                    f"({int((~np.isfinite(arr)).sum())} of {n} rows)"))
            break
    if not any(f.kind == "divergence" for f in findings) and tr is not None and n >= 4:
        tmin_i = int(np.nanargmin(tr))
        end = _tail_median(tr, max(2, w // 2))
        if tmin_i < n - 2 and end > max(tr[0], 2.0 * tr[tmin_i]):
            findings.append(Finding("divergence", "train_loss", epoch_at(tmin_i),
                                    {"min_train_loss": _r(tr[tmin_i]), "min_epoch": epoch_at(tmin_i),
                                     "end_train_loss": _r(end), "first_train_loss": _r(tr[0])},
                                    f"train_loss fell to {tr[tmin_i]:.4g} at epoch {epoch_at(tmin_i)}, "
                                    f"then climbed to {end:.4g} (above its start {tr[0]:.4g})"))

    if n < min_epochs:
        findings.append(Finding("too_short", metric, epoch_at(n - 1), {"rows": n, "needed": min_epochs},
                                f"only {n} epochs: at least {min_epochs} are needed to judge a trend"))
        return _finish(df, metric, gib, findings, rules,
                       {"rows": n, "best": _r(y[best_i]) if best_i is not None else None,
                        "best_epoch": epoch_at(best_i)}, config, ceiling, best_i, epoch_at)

    # An accuracy-like score has a natural best (1, or 100 for percentages) when no ceiling is given.
    implicit = False
    if ceiling is None and gib and finite.any() and any(w_ in metric for w_ in _BOUNDED_SCORES):
        top = float(np.nanmax(y))
        ceiling, implicit = (1.0 if top <= 1.0 else 100.0 if top <= 100.0 else None), True

    # ---- plateau of the primary metric (trend test), and its level against the ceiling
    pl = find_plateau(y, gib, window=w, rel_tol=rel_tol)
    summary: dict[str, Any] = {"rows": n, "best": _r(y[best_i]) if best_i is not None else None,
                               "best_epoch": epoch_at(best_i), "window": w}
    if pl is not None:
        ev = {"start_epoch": epoch_at(pl["start"]), "flagged_epoch": epoch_at(pl["flagged"]),
              "level": _r(pl["level"]), "best": _r(pl["best"]),
              "window_gain": _r(pl["window_gain"]), "tolerance": _r(pl["tolerance"]),
              "window": w, "epochs_on_plateau": int(n - pl["start"]),
              "reduce_lr_first_cut_epoch": rules["reduce_lr_on_plateau"]["first_cut_epoch"]}
        msg = (f"{metric} stopped improving at epoch {ev['start_epoch']} (level {pl['level']:.4g}, best "
               f"{pl['best']:.4g}); the trend over the next {w} epochs gains {pl['window_gain']:.2g}, "
               f"less than the tolerance {pl['tolerance']:.2g}")
        if ceiling is not None and math.isfinite(ceiling):
            gap = (ceiling - pl["best"]) if gib else (pl["best"] - ceiling)
            ev.update({"ceiling": _r(ceiling), "gap_to_ceiling": _r(gap),
                       "fraction_of_ceiling": _r(pl["best"] / ceiling) if ceiling else None})
            at_ceiling = gap <= 0.01 * abs(ceiling)
            ev.update({"ceiling_is_implicit": implicit, "at_ceiling": at_ceiling})
            msg += (f"; the best achievable is {ceiling:.4g}" + (" (the score's maximum)" if implicit else "")
                    + (": converged at the ceiling, nothing to fix" if at_ceiling else f", {gap:.3g} away"))
        findings.append(Finding("plateau", metric, ev["start_epoch"], ev, msg))
        summary.update({"plateau_epoch": ev["start_epoch"], "plateau_level": ev["level"]})

    # ---- overfitting: val/train loss ratio over time and its trend (note 004: >1.5 / <1.2 / ≈1.4)
    ratio_late = None
    if tr is not None and va is not None:
        ok = np.isfinite(tr) & np.isfinite(va) & (tr > 0) & (va > 0)
        if ok.sum() >= 4:
            ratio = np.where(ok, va / np.where(ok, tr, 1.0), np.nan)
            r_ok = ratio[ok]
            ratio_late = _tail_median(ratio, w)
            half = r_ok[len(r_ok) // 2:]
            r_slope, r_se = _slope(half)
            vmin_i = int(np.nanargmin(np.where(ok, va, np.nan)))
            v_end = _tail_median(va, max(2, w // 2))
            t_end = _tail_median(tr, max(2, w // 2))
            v_rise = (v_end - va[vmin_i]) / max(abs(va[vmin_i]), 1e-12)
            ev = {"ratio_first": _r(r_ok[0]), "ratio_mid": _r(r_ok[len(r_ok) // 2]),
                  "ratio_end": _r(ratio_late), "ratio_slope_per_epoch": _r(r_slope),
                  "val_loss_min": _r(va[vmin_i]), "val_loss_min_epoch": epoch_at(vmin_i),
                  "val_loss_end": _r(v_end), "val_loss_rise": _r(v_rise), "train_loss_end": _r(t_end)}
            summary.update({"overfit_ratio": _r(ratio_late), "ratio_slope": _r(r_slope)})
            rising_val = (vmin_i < n - w and v_rise > 0.10 and t_end < tr[vmin_i])
            if ratio_late > 1.5 or rising_val:
                why = []
                if ratio_late > 1.5:
                    why.append(f"val/train loss ratio {ratio_late:.3g} > 1.5 (note 004's threshold)")
                if rising_val:
                    why.append(f"val_loss rose {100 * v_rise:.0f}% from its minimum at epoch "
                               f"{epoch_at(vmin_i)} while train_loss kept falling")
                findings.append(Finding("overfitting", "val_loss/train_loss", epoch_at(vmin_i), ev,
                                        "; ".join(why) + f" (ratio trend {r_slope:+.3g}/epoch)"))
            elif pl is not None and ratio_late < 1.2:
                gap_ok = ceiling is None or not math.isfinite(ceiling) or \
                    ((ceiling - pl["best"]) if gib else (pl["best"] - ceiling)) > 0.02 * abs(ceiling)
                if gap_ok:
                    findings.append(Finding(
                        "underfitting", metric, summary.get("plateau_epoch"), ev,
                        f"{metric} plateaued while val/train loss ratio is only {ratio_late:.3g} (< 1.2): "
                        "the model does not even fit the training data better than held-out data"))

    # ---- oscillation: large epoch-to-epoch swings around the trend (learning rate too high)
    osc_col, osc_arr, osc_thr = None, None, 0.0
    for col, arr, thr in (("train_loss", tr, 0.05), ("val_loss", va, 0.10)):
        if arr is not None and np.isfinite(arr).sum() >= 6:
            osc_col, osc_arr, osc_thr = col, arr, thr
            break
    if osc_arr is not None:
        a = osc_arr[np.isfinite(osc_arr)]
        # a centred 5-epoch mean: an alternating ±a swing leaves a residual of ~0.8a
        trend = pd.Series(a).rolling(5, center=True, min_periods=1).mean().to_numpy()
        late = slice(len(a) // 3, None)
        resid = (a - trend)[late]
        amp = float(np.median(np.abs(resid)) / max(np.median(np.abs(trend[late])), 1e-12))
        d = np.diff(a[late])
        flips = float(np.mean(np.sign(d[1:]) != np.sign(d[:-1]))) if len(d) > 2 else 0.0
        summary.update({"oscillation_amplitude": _r(amp), "oscillation_flip_rate": _r(flips)})
        if amp > osc_thr and flips > 0.5:
            findings.append(Finding("oscillation", osc_col, epoch_at(len(a) // 3),
                                    {"relative_amplitude": _r(amp), "threshold": osc_thr,
                                     "direction_flip_rate": _r(flips)},
                                    f"{osc_col} swings by {100 * amp:.0f}% of its level around its trend "
                                    f"and changes direction on {100 * flips:.0f}% of epochs"))

    # ---- the learning-rate schedule
    if lr is not None and np.isfinite(lr).sum() >= 4 and np.nanmax(lr) > 0:
        lr_ok = np.where(np.isfinite(lr), lr, np.nan)
        peak_i = int(np.nanargmax(lr_ok))
        peak = float(lr_ok[peak_i])
        final = float(lr_ok[np.flatnonzero(np.isfinite(lr_ok))[-1]])
        summary.update({"lr_peak": _r(peak), "lr_final": _r(final), "lr_peak_epoch": epoch_at(peak_i)})
        # Warm-up: the leading rows where the LR rises; linear means constant steps.
        k = 0
        while k + 1 < n and np.isfinite(lr_ok[k + 1]) and lr_ok[k + 1] > lr_ok[k] * (1 + 1e-9):
            k += 1
        if k >= 2:
            seg = lr_ok[:k + 1]
            xs = np.arange(k + 1, dtype=float)
            fit = np.polyval(np.polyfit(xs, seg, 1), xs)
            dev = float(np.max(np.abs(seg - fit)) / max(seg[-1] - seg[0], 1e-30))
            steps = np.diff(seg)
            summary.update({"warmup_epochs": k, "warmup_max_deviation": _r(dev)})
            if dev > 0.1:
                findings.append(Finding("warmup_not_linear", "lr", epoch_at(0),
                                        {"warmup_rows": k, "max_deviation_from_line": _r(dev),
                                         "first_step": _r(steps[0]), "last_step": _r(steps[-1]),
                                         "lr_start": _r(seg[0]), "lr_end": _r(seg[-1])},
                                        f"the LR rises over {k} epochs but deviates from a straight line by "
                                        f"{100 * dev:.0f}% of its range (steps {steps[0]:.2g} … {steps[-1]:.2g})"))
        if pl is not None:
            lr_at = float(lr_ok[pl["start"]]) if np.isfinite(lr_ok[pl["start"]]) else math.nan
            frac = lr_at / peak
            summary.update({"lr_at_plateau_fraction": _r(frac)})
            # Before the LR fell, was the curve still improving? (slope over the window before decay)
            if pl["start"] > peak_i and frac <= 0.2:
                findings.append(Finding("lr_decayed_early", "lr", epoch_at(pl["start"]),
                                        {"lr_at_plateau": _r(lr_at), "lr_peak": _r(peak),
                                         "fraction_of_peak": _r(frac), "lr_final": _r(final),
                                         "final_fraction_of_peak": _r(final / peak),
                                         "plateau_start_epoch": epoch_at(pl["start"]),
                                         "rows": n},
                                        f"when {metric} stalled (epoch {epoch_at(pl['start'])}) the LR was already "
                                        f"{lr_at:.2g}, {100 * frac:.0f}% of its peak {peak:.2g}; it ends at "
                                        f"{final:.2g} ({100 * final / peak:.1g}% of peak)"))

    # ---- early stopping: too eager (stopped while improving) or too lax (ran long past the best)
    verdict, es_note = "ok", ""
    last_b, _ = _slope((y if gib else -y)[-w:][np.isfinite(y[-w:])]) if np.isfinite(y[-w:]).sum() >= 3 else (0.0, 0.0)
    if best_i is not None:
        after_best = n - 1 - best_i
        if stop is not None and stop < n - 1:
            verdict = "too lax"
            es_note = (f"EarlyStopping(patience {es_patience}, min_delta {es_min_delta:g}) would have stopped at "
                       f"epoch {epoch_at(stop)}; the run went on {n - 1 - stop} more epochs")
        elif pl is None and after_best < max(3, w // 2) and last_b > 0:
            verdict = "too eager"
            es_note = (f"the run ended {after_best} epochs after its best, with {metric} still improving "
                       f"({last_b:+.2g}/epoch over the last {w})")
    rules["early_stopping"].update({"verdict": verdict, "note": es_note})
    summary["still_improving_per_epoch"] = _r(last_b if gib else -last_b)
    return _finish(df, metric, gib, findings, rules, summary, config, ceiling, best_i, epoch_at)


def _finish(df, metric, gib, findings, rules, summary, config, ceiling, best_i, epoch_at) -> Diagnosis:
    if not findings:
        y = df[metric].to_numpy(dtype=float)
        findings.append(Finding("healthy", metric, epoch_at(best_i),
                                {"best": _r(y[best_i]) if best_i is not None else None,
                                 "best_epoch": epoch_at(best_i),
                                 "still_improving_per_epoch": summary.get("still_improving_per_epoch"),
                                 "overfit_ratio": summary.get("overfit_ratio")},
                                f"no plateau, divergence, oscillation or overfitting in {metric}; "
                                f"best {y[best_i]:.4g} at epoch {epoch_at(best_i)}"))
    findings.sort(key=lambda f: _SEVERITY[f.kind])
    summary.setdefault("plateau_epoch", None)
    summary.setdefault("overfit_ratio", None)
    summary["label"] = findings[0].kind
    diag = Diagnosis(metric, gib, findings, [], rules, summary)
    diag.recommendations = make_recommendations(diag, config, ceiling)
    return diag


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def make_recommendations(diag: Diagnosis, config: dict[str, Any] | None = None,
                         ceiling: float | None = None) -> list[Recommendation]:
    """Ranked recommendations (most promising first) with note 004's concrete parameter changes.

    Values are computed from ``config`` (the run's hyperparameters) when given, else from note
    004's baseline: loss weights → 0.1/0.9; capacity d_model ×1.5, layers ×1.5, feed-forward
    4·d_model, dropout 0.2; warm-up ×2, epochs ×1.5, eta_min = lr/10; batch ×2.
    """
    base = dict(NOTE004_BASELINE)
    given = {k: v for k, v in (config or {}).items() if v is not None}
    if "lr" not in given and isinstance(diag.summary.get("lr_peak"), (int, float)):
        given["lr"] = diag.summary["lr_peak"]          # the history's own peak learning rate
    base.update(given)
    recs: list[Recommendation] = []
    f = {x.kind: x for x in diag.findings}
    s = diag.summary

    def add(name: str, plan: str, params: dict[str, Any], reason: str) -> None:
        if any(r.name == name for r in recs):
            return
        change = ", ".join(f"{k} {_fmt(base.get(k, '?'))} → {_fmt(v)}" for k, v in params.items())
        if any(k not in given for k in params):
            change += " (note 004's values; this run's own are unknown: scale them the same way)"
        recs.append(Recommendation(change, reason, params, plan, name))

    def capacity() -> dict[str, Any]:
        nhead = int(base.get("nhead", 8))
        d = int(round(base["d_model"] * 1.5 / nhead)) * nhead
        return {"d_model": d, "num_layers": int(math.ceil(base["num_layers"] * 1.5)),
                "dim_feedforward": 4 * d, "dropout": max(0.2, float(base["dropout"]))}

    def schedule() -> dict[str, Any]:
        return {"warmup_epochs": int(max(2 * base["warmup_epochs"], 1)),
                "epochs": int(math.ceil(base["epochs"] * 1.5)),
                "cosine_eta_min": max(float(base["cosine_eta_min"]), float(base["lr"]) / 10)}

    if "divergence" in f:
        ev = f["divergence"]
        recs.append(Recommendation(
            f"lr {_fmt(base['lr'])} → {_fmt(base['lr'] / 10)}, max_grad_norm 1.0, check inputs for NaN"
            + ("" if "lr" in given else " (note 004's lr)"),
            f"divergence: {ev.message}", {"lr": base["lr"] / 10, "max_grad_norm": 1.0}, "stability", "lower_lr"))
    if "overfitting" in f:
        add("regularise", "note 004 §2 option 1",
            {"dropout": round(max(0.2, float(base["dropout"]) + 0.05), 3),
             "weight_decay": float(base["weight_decay"]) * 2},
            f"overfitting: {f['overfitting'].message}")
    if "lr_decayed_early" in f:
        add("longer_cosine", "C", schedule(),
            f"lr_decayed_early: {f['lr_decayed_early'].message}; note 004 plan C keeps a longer "
            "high-LR phase and a higher floor")
    if "oscillation" in f:
        add("calmer_steps", "note 004 §4", {"lr": base["lr"] / 3, "batch_size": int(base["batch_size"]) * 2},
            f"oscillation: {f['oscillation'].message}; a smaller LR and a larger batch (steadier gradients)")
    if "warmup_not_linear" in f:
        add("linear_warmup", "C", {"warmup_epochs": int(max(2 * base["warmup_epochs"], 1)),
                                   "warmup_lr": 1e-6},
            f"warmup_not_linear: {f['warmup_not_linear'].message}; note 004: warm-up must be linear")
    if "plateau" in f and not f["plateau"].evidence.get("at_ceiling"):
        pl = f["plateau"]
        below = pl.evidence.get("gap_to_ceiling")
        tail = f" and is {below:.3g} below the best achievable" if isinstance(below, (int, float)) else ""
        lvl = f"{diag.metric} stalled at {pl.evidence['level']:.4g} from epoch {pl.epoch}{tail}"
        ratio = s.get("overfit_ratio")
        ratio_txt = f"; val/train ratio {ratio:.3g}" if isinstance(ratio, (int, float)) else ""
        cos_metric = "cos" in diag.metric.lower()
        plan_a = ({"mse_weight": 0.1, "cosine_weight": 0.9}
                  if float(base.get("mse_weight", 0.2)) > 0.1 else None)
        a_reason = (f"plateau: {lvl}; the score is cosine similarity but the loss gives MSE weight "
                    f"{_fmt(base.get('mse_weight'))}; note 004 plan A (first to try: cheapest)")
        b_reason = (f"plateau: {lvl}{ratio_txt}; note 004's rule: still stalled after 20 epochs → more "
                    "capacity (plan B)")
        if "underfitting" in f:
            b_reason = f"underfitting: {f['underfitting'].message}; {b_reason}"
        # Ranking: with evidence of underfitting, capacity first; otherwise note 004's order A, B, C.
        order = ["B", "A", "C"] if "underfitting" in f else ["A", "B", "C"]
        for plan in order:
            # Plan A only where the loss mixes MSE and cosine: a cosine score or a config with mse_weight.
            if plan == "A" and plan_a and (cos_metric or "mse_weight" in given):
                add("loss_weights", "A", plan_a, a_reason)
            elif plan == "B" and "d_model" in given or plan == "B" and not given and cos_metric:
                add("capacity", "B", capacity(), b_reason)
            elif plan == "B":   # not a transformer config: note 004's rule, stated as scale factors
                recs.append(Recommendation(
                    "more capacity: width ×1.5, depth ×1.5, dropout 0.2 (note 004 plan B: d_model 512 → 768, "
                    "num_layers 4 → 6, dim_feedforward 3072)", b_reason, capacity(), "B", "capacity"))
            elif plan == "C":
                lr_frac = s.get("lr_at_plateau_fraction")
                low_floor = float(base["cosine_eta_min"]) < float(base["lr"]) / 10
                if low_floor or (isinstance(lr_frac, float) and lr_frac < 0.5):
                    add("longer_cosine", "C", schedule(),
                        f"plateau: {lvl}; eta_min {_fmt(base['cosine_eta_min'])} is below lr/10 "
                        f"({_fmt(base['lr'] / 10)}): note 004 plan C (longer cosine, warm-up 10, "
                        "eta_min 1e-5)" + (f"; the LR was already down to {100 * lr_frac:.0f}% of its peak when it "
                                           "stalled" if isinstance(lr_frac, float) and lr_frac < 0.5 else ""))
    ratio = s.get("overfit_ratio")
    if isinstance(ratio, (int, float)) and ratio < 1.2 and "overfitting" not in f and "plateau" in f \
            and not f["plateau"].evidence.get("at_ceiling"):
        add("less_regularisation", "note 004 §2 rule",
            {"dropout": round(max(0.0, float(base["dropout"]) - 0.05), 3),
             "weight_decay": float(base["weight_decay"]) / 2},
            f"val/train loss ratio {ratio:.3g} < 1.2: note 004 — regularisation can be reduced")
    es = diag.rules.get("early_stopping", {})
    if es.get("verdict") == "too eager":
        add("more_epochs", "C", {"epochs": int(math.ceil(base["epochs"] * 1.5))},
            f"early stopping too eager: {es['note']}")
    elif es.get("verdict") == "too lax":
        recs.append(Recommendation(
            f"early_stopping_patience {es['patience']}, early_stopping_min_delta {es['min_delta']:g} "
            "(note 004's early stopping)", f"early stopping too lax: {es['note']}",
            {"early_stopping_patience": es["patience"], "early_stopping_min_delta": es["min_delta"]},
            "note 004 early stopping", "early_stopping"))
    if "healthy" in f and not recs:
        imp = s.get("still_improving_per_epoch")
        if isinstance(imp, (int, float)) and imp > 0:
            add("more_epochs", "C", {"epochs": int(math.ceil(base["epochs"] * 1.5))},
                f"healthy and still improving ({imp:+.2g}/epoch at the end): train longer")
    if "too_short" in f:
        recs.append(Recommendation("train longer before judging", f["too_short"].message, {}, "", "too_short"))
    return recs


SYNTHETIC_KINDS = ("healthy", "plateau", "overfitting", "divergence", "oscillation", "lr_decayed_early")


def make_synthetic_history(kind: str, epochs: int = 60, seed: int = 0) -> pd.DataFrame:
    """A labelled synthetic history (val_cos, train_loss, val_loss, lr) showing one failure mode.

    healthy: still improving at the end; plateau: cos saturates by epoch ~20 (val/train 1.4, like
    note 004); overfitting: val_loss turns up while train_loss falls; divergence: the loss blows up
    to NaN; oscillation: the training loss alternates ±25 %; lr_decayed_early: the LR decays ×0.8
    per epoch and the score stalls far below its asymptote.
    """
    if kind not in SYNTHETIC_KINDS:
        raise WorkbookError(f"make_synthetic_history: kind={kind!r}; expected one of {', '.join(SYNTHETIC_KINDS)}")
    rng = np.random.default_rng(seed)
    t = np.arange(epochs, dtype=float)
    noise = lambda s: rng.normal(0, s, epochs)  # noqa: E731
    # Note 004's schedule: linear warm-up 5 epochs from 1e-6, cosine over 100 epochs to 1e-6.
    lr0, wu, total = 1e-4, 5, 100
    lr = np.where(t < wu, 1e-6 + (lr0 - 1e-6) * t / wu,
                  1e-6 + 0.5 * (lr0 - 1e-6) * (1 + np.cos(np.pi * (t - wu) / (total - wu))))
    train = 0.12 + 0.5 * np.exp(-t / 6) + noise(0.002)
    cos = 0.75 - 0.65 * np.exp(-t / 5) + noise(0.003)
    if kind == "healthy":
        cos = 0.2 + 0.7 * (1 - np.exp(-t / 50)) + noise(0.003)
        train = 0.1 + 0.6 * np.exp(-t / 50) + noise(0.002)
        val = train * 1.3 + noise(0.002)
    elif kind == "plateau":
        val = train * 1.4 + noise(0.003)
    elif kind == "overfitting":
        train = 0.03 + 0.6 * np.exp(-t / 10) + noise(0.002)
        val = 0.25 + 0.5 * np.exp(-t / 6) + 0.004 * np.clip(t - 15, 0, None) + noise(0.003)
        cos = 0.7 - 0.6 * np.exp(-t / 5) - 0.002 * np.clip(t - 15, 0, None) + noise(0.003)
    elif kind == "divergence":
        val = train * 1.3
        blow = t >= 30
        train = np.where(blow, train * np.exp(0.5 * (t - 29)), train)
        val = np.where(blow, val * np.exp(0.6 * (t - 29)), val)
        train[t >= 36] = np.nan
        val[t >= 36] = np.nan
        cos = np.where(blow, cos * np.exp(-0.3 * (t - 29)), cos)
    elif kind == "oscillation":
        train = (0.2 + 0.5 * np.exp(-t / 15)) * (1 + 0.25 * (-1) ** t) + noise(0.002)
        val = train * 1.3 + noise(0.003)
        cos = 0.7 - 0.5 * np.exp(-t / 15) - 0.05 * (-1) ** t + noise(0.003)
    elif kind == "lr_decayed_early":
        lr = lr0 * 0.8 ** t
        # progress per epoch proportional to the LR: the curve freezes once the LR is tiny
        prog = np.cumsum(lr / lr0) / 5.0
        cos = 0.9 - 0.8 * np.exp(-prog * 0.5) + noise(0.002)
        train = 0.1 + 0.5 * np.exp(-prog * 0.5) + noise(0.002)
        val = train * 1.35 + noise(0.002)
    return pd.DataFrame({"epoch": t.astype(int) + 1, "train_loss": train, "val_loss": val,
                         "val_cos": cos, "lr": lr})


def evaluate_synthetic_set(epochs: int = 60, seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame:
    """Diagnose every labelled synthetic curve: the label found, whether it is right, and (for the
    plateau) the epoch it is flagged next to ReduceLROnPlateau(patience 10)'s first cut."""
    rows = []
    for kind in SYNTHETIC_KINDS:
        for seed in seeds:
            d = diagnose_history(make_synthetic_history(kind, epochs, seed))
            pl = d.finding("plateau")
            rows.append({"curve": kind, "seed": seed, "label": d.label, "correct": d.label == kind,
                         "all_findings": ", ".join(d.kinds),
                         "plateau_flagged_epoch": pl.evidence["flagged_epoch"] if pl else None,
                         "reduce_lr_cut_epoch": d.rules["reduce_lr_on_plateau"]["first_cut_epoch"]})
    return pd.DataFrame(rows)


def make_findings_table(diag: Diagnosis) -> pd.DataFrame:
    """One row per finding: kind, metric, epoch, message and the evidence as compact text."""
    rows = [{"kind": f.kind, "metric": f.metric, "epoch": f.epoch, "finding": f.message,
             "evidence": ", ".join(f"{k}={v}" for k, v in f.evidence.items() if v is not None)}
            for f in diag.findings]
    return pd.DataFrame(rows, columns=["kind", "metric", "epoch", "finding", "evidence"])


def make_recommendations_table(diag: Diagnosis) -> pd.DataFrame:
    rows = [{"rank": i + 1, "name": r.name, "plan": r.plan, "change": r.change, "reason": r.reason}
            for i, r in enumerate(diag.recommendations)]
    return pd.DataFrame(rows, columns=["rank", "name", "plan", "change", "reason"])


def describe_rules(diag: Diagnosis) -> str:
    """When ReduceLROnPlateau and EarlyStopping would have acted on this curve, in two lines."""
    rl, es = diag.rules["reduce_lr_on_plateau"], diag.rules["early_stopping"]
    n = diag.rules.get("n_epochs", "recorded")
    cut = f"epoch {rl['first_cut_epoch']}" if rl["first_cut_epoch"] is not None else f"never within the {n} epochs"
    stop = f"epoch {es['stop_epoch']}" if es["stop_epoch"] is not None else f"never within the {n} epochs"
    note = f": {es['note']}" if es.get("note") else ""
    return (f"ReduceLROnPlateau(patience {rl['patience']}, threshold 1e-4 rel) would first cut the LR: {cut}\n"
            f"EarlyStopping(patience {es['patience']}, min_delta {es['min_delta']:g}) would stop: {stop} "
            f"[{es['verdict']}{note}]")
