"""`diagnose_history`: load a history, cut it at a divergence, run each finding rule, rank, recommend."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import math

import numpy as np
import pandas as pd

from helpers.core.errors import DataError

from helpers.evaluation.doctor.curve import (Curve, find_divergence, measure_curve, Measures, prepare_curve,
                                             rounded, short_summary, summarise)
from helpers.evaluation.doctor.findings import divergence_finding, healthy_finding, TREND_RULES
from helpers.evaluation.doctor.history import load_history, metric_direction, pick_metric
from helpers.evaluation.doctor.learning import evaluate_learning_curve
from helpers.evaluation.doctor.recommend import make_recommendations
from helpers.evaluation.doctor.results import Diagnosis, Finding, SEVERITY
from helpers.evaluation.doctor.rules import estimate_noise, evaluate_early_stopping, evaluate_reduce_lr_on_plateau


# Fewer finite monitor values than this: nothing is judged. From here to ``min_epochs`` only a divergence
# (or its absence) is judged; the trend rules need ``min_epochs``.
MIN_POINTS = 3


def diagnose_history(history: pd.DataFrame | str | Path | Sequence[dict], metric: str | None = None,
                     ceiling: float | None = None, config: dict[str, Any] | None = None,
                     window: int = 8, min_epochs: int = 8, rlrop_patience: int = 10, es_patience: int = 20,
                     es_min_delta: float = 1e-4, learning_curve: Any = None) -> Diagnosis:
    """Diagnose one training history.

    Args:
        history: a DataFrame / rows / path (see `load_history`).
        metric: the score to judge (any spelling); default the first validation score, else val_loss.
        ceiling: the best achievable value of ``metric`` when known (e.g. the generated data's
            noise ceiling); the plateau level is judged against it.
        config: the run's hyperparameters (keys of `NOTE004_BASELINE`); recommendations then give
            concrete values relative to it, else relative to M4's baseline.
        window: rows of the trend tests; min_epochs: fewer rows -> ``too_short``.
        learning_curve: best scores of the same model trained on shares of the training data, e.g.
            ``{0.25: s1, 0.5: s2, 1.0: s3}`` (see `evaluate_learning_curve`); ranks "more data".
    """
    if ceiling is not None and not (isinstance(ceiling, (int, float)) and math.isfinite(ceiling)):
        raise DataError(f"ceiling {ceiling!r}: expected a finite number (the best achievable value of the metric)")
    df = load_history(history)
    name = pick_metric(df, metric)
    if name is None:
        # Without a validation column nothing is judged -- unless the training loss itself blew up.
        return _training_divergence(df, window, min_epochs, config) or unjudgeable(
            df, "no validation score or loss with at least two finite, non-zero values to judge")
    full = prepare_curve(df, name, window)
    div = find_divergence(full)
    n_fin = int(np.isfinite(full.y).sum())
    if div is None and n_fin < MIN_POINTS:
        return unjudgeable(df, f"{name} has {n_fin} finite value{'s' if n_fin != 1 else ''}; at least "
                               f"{MIN_POINTS} are needed to judge anything", name)
    cuts = evaluate_reduce_lr_on_plateau(full.y, full.gib, patience=rlrop_patience)
    stop = evaluate_early_stopping(full.y, full.gib, patience=es_patience, min_delta=es_min_delta)
    rules = _rules_on_curve(full, cuts, stop, rlrop_patience, es_patience, es_min_delta)
    # No finding is drawn from the rows from a divergence on: a plateau of NaNs or of an exploded loss
    # says nothing about the model.
    c = full.head(div.keep) if div is not None else full
    findings = [divergence_finding(full, div)] if div is not None else []
    extra = {"duplicate_epochs": df.attrs.get("duplicate_epochs", 0), "rows_judged": c.n, **_run_values(full, div),
             **reading(df, name)}
    if c.n < min_epochs:
        rules["early_stopping"].update({"verdict": "not judged", "note": f"{c.n} epochs are too few to judge"})
        return _finish(c, findings, rules, {**short_summary(c), **extra}, config, ceiling,
                       _learning(learning_curve, c, None))
    m = measure_curve(c, ceiling, rules["reduce_lr_on_plateau"]["first_cut_epoch"])
    found: dict[str, Finding] = {}
    for rule in TREND_RULES:
        if (f := rule(c, m, found)) is not None:
            found[f.kind] = f
    # Underfitting is the plateau's cause: the plateau is not listed beside it (its evidence is the same).
    findings += [f for k, f in found.items() if not (k == "plateau" and "underfitting" in found)]
    rules["early_stopping"].update(_early_stopping_verdict(c, m, stop, es_patience, es_min_delta))
    return _finish(c, findings, rules, {**summarise(c, m), **extra}, config, m.ceiling,
                   _learning(learning_curve, c, m))


def _training_divergence(df: pd.DataFrame, window: int, min_epochs: int, config) -> Diagnosis | None:
    """A log without validation values whose training loss diverged (NaN/Inf, explosion): that divergence
    alone, nothing else judged."""
    if "train_loss" not in df:
        return None
    c = prepare_curve(df, "train_loss", window)
    div = find_divergence(c)
    if div is None:
        return None
    rules = _rules_on_curve(c, [], None, 10, 20, 1e-4)
    rules["early_stopping"].update({"verdict": "not judged", "note": "no validation values"})
    return _finish(c.head(div.keep), [divergence_finding(c, div)], rules,
                   {**short_summary(c), **_run_values(c, div), **reading(df, "train_loss")}, config, None, None)


def reading(df: pd.DataFrame, monitor: str | None) -> dict[str, Any]:
    """What was read and how the monitor was chosen (every diagnosis states it)."""
    return {"format": df.attrs.get("format", "table"), "monitor": monitor,
            "monitor_rule": df.attrs.get("monitor_rule", ""), "columns_read": df.attrs.get("columns_read", []),
            "reading_notes": df.attrs.get("notes", [])}


def unjudgeable(df: pd.DataFrame, why: str, monitor: str | None = None) -> Diagnosis:
    """No finding: the log cannot be judged (no usable monitor, too few rows); ``why`` names what was read."""
    read = reading(df, monitor)
    cols = ", ".join(map(str, read["columns_read"])) or ", ".join(map(str, df.columns))
    reason = f"not judged: {why} (read {read['format']}, {len(df)} rows; columns: {cols})"
    summary = {**read, "rows": int(len(df)), "judged": False, "reason": reason, "label": "unjudgeable"}
    return Diagnosis(monitor or "", bool(monitor and metric_direction(monitor)), [], [], {}, summary)


def _run_values(c: Curve, div: Any) -> dict[str, Any]:
    """The run's own values that remedies are scaled from: its peak and last learning rate before any
    divergence and the epochs it logged."""
    e = c.epochs[np.isfinite(c.epochs)]
    whole = len(e) and np.all(e == np.round(e))
    # whole epochs: last - first + 1; fractional (a step log): the last epoch rounded up
    out: dict[str, Any] = {"epochs_logged": int(e[-1] - e[0] + 1) if whole else int(math.ceil(e[-1])) if len(e) else c.n}
    if c.lr is not None and np.isfinite(c.lr).any() and np.nanmax(c.lr) > 0:
        lr = c.lr[:div.keep] if div is not None and np.isfinite(c.lr[:div.keep]).any() else c.lr
        out["lr_logged_peak"] = rounded(float(np.nanmax(lr)))
        out["lr_logged_last"] = rounded(float(lr[np.isfinite(lr)][-1]))
    return out


def _learning(learning_curve: Any, c: Curve, m: Measures | None) -> dict[str, Any] | None:
    """The learning-curve evidence, judged against this curve's own noise."""
    if learning_curve is None:
        return None
    noise = m.late.noise if m is not None else estimate_noise(c.up)
    return evaluate_learning_curve(learning_curve, c.gib, noise)


def _rules_on_curve(c: Curve, cuts: list[int], stop: int | None, rlrop_patience: int, es_patience: int,
                    es_min_delta: float) -> dict[str, Any]:
    """Where ReduceLROnPlateau and EarlyStopping act on the judged metric, as epochs."""
    return {
        "monitor": c.metric, "mode": "max" if c.gib else "min", "n_epochs": int(len(c.y)),
        "reduce_lr_on_plateau": {"patience": rlrop_patience, "threshold": 1e-4,
                                 "threshold_mode": "rel",
                                 "first_cut_epoch": c.epoch_at(cuts[0]) if cuts else None,
                                 "cut_epochs": [c.epoch_at(i) for i in cuts]},
        "early_stopping": {"patience": es_patience, "min_delta": es_min_delta,
                           "stop_epoch": c.epoch_at(stop), "verdict": "ok", "note": ""},
    }


def _early_stopping_verdict(c: Curve, m: Measures, stop: int | None, patience: int,
                            min_delta: float) -> dict[str, str]:
    """"too lax" when EarlyStopping would have stopped before the end; "too eager" when the run
    ended soon after its best, with no plateau and the metric still improving beyond its noise."""
    verdict, note = "ok", ""
    if c.best_i is not None:
        after_best = c.n - 1 - c.best_i
        if stop is not None and stop < c.n - 1:
            verdict = "too lax"
            note = (f"EarlyStopping(patience {patience}, min_delta {min_delta:g}) would have stopped at "
                    f"epoch {c.epoch_at(stop)}; the run went on {c.n - 1 - stop} more epochs")
        elif m.plateau is None and after_best < max(3, c.window // 2) and m.late.improving:
            verdict = "too eager"
            g = m.late.gain / max(c.window - 1, 1)
            note = (f"the run ended {after_best} epochs after its best, with {c.metric} still improving "
                    f"({g if c.gib else -g:+.2g}/epoch over the last {c.window})")
    return {"verdict": verdict, "note": note}


def _finish(c: Curve, findings: list[Finding], rules: dict[str, Any], summary: dict[str, Any],
            config: dict[str, Any] | None, ceiling: float | None, learning: dict[str, Any] | None) -> Diagnosis:
    """Rank the findings (healthy when there are none), label the summary, add recommendations."""
    # A warm-up's shape or swings of the training loss are advice, not a problem with the run's result.
    if all(f.kind in ("warmup_not_linear", "oscillation") for f in findings):
        findings.append(healthy_finding(c, summary))
    findings.sort(key=lambda f: SEVERITY[f.kind])
    pl = next((f for f in findings if f.kind == "plateau"), None)
    summary["plateau_epoch"] = pl.epoch if pl is not None else None
    summary.setdefault("overfit_ratio", None)
    if learning is not None:
        summary["learning_curve"] = learning
    summary["label"] = findings[0].kind
    summary["judged"] = True
    diag = Diagnosis(c.metric, c.gib, findings, [], rules, summary)
    diag.recommendations = make_recommendations(diag, config, ceiling)
    return diag
