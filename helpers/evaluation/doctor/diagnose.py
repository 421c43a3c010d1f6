"""`diagnose_history`: load a history, run each finding rule, rank, recommend."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from helpers.evaluation.doctor.curve import (Curve, measure_curve, Measures, prepare_curve, short_summary,
                                             summarise)
from helpers.evaluation.doctor.findings import (divergence_finding, healthy_finding, too_short_finding,
                                                TREND_RULES)
from helpers.evaluation.doctor.history import load_history, pick_metric
from helpers.evaluation.doctor.recommend import make_recommendations
from helpers.evaluation.doctor.results import Diagnosis, Finding, SEVERITY
from helpers.evaluation.doctor.rules import evaluate_early_stopping, evaluate_reduce_lr_on_plateau


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
            concrete values relative to it, else relative to M4's baseline.
        window: rows of the plateau trend test; min_epochs: fewer rows -> ``too_short``.
    """
    df = load_history(history)
    c = prepare_curve(df, pick_metric(df, metric), window)
    cuts = evaluate_reduce_lr_on_plateau(c.y, c.gib, patience=rlrop_patience)
    stop = evaluate_early_stopping(c.y, c.gib, patience=es_patience, min_delta=es_min_delta)
    rules = _rules_on_curve(c, cuts, stop, rlrop_patience, es_patience, es_min_delta)
    divergence, short = divergence_finding(c), too_short_finding(c, min_epochs)
    findings = [f for f in (divergence, short) if f is not None]
    if short is not None:
        # Too few rows for a trend: no trend rules, no early-stopping verdict.
        return _finish(c, findings, rules, short_summary(c), config, ceiling)
    m = measure_curve(c, ceiling, rel_tol, rules["reduce_lr_on_plateau"]["first_cut_epoch"])
    findings += [f for rule in TREND_RULES if (f := rule(c, m)) is not None]
    rules["early_stopping"].update(_early_stopping_verdict(c, m, stop, es_patience, es_min_delta))
    return _finish(c, findings, rules, summarise(c, m), config, m.ceiling)


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
                           "stop_epoch": c.epoch_at(stop)},
    }


def _early_stopping_verdict(c: Curve, m: Measures, stop: int | None, patience: int,
                            min_delta: float) -> dict[str, str]:
    """"too lax" when EarlyStopping would have stopped before the end; "too eager" when the run
    ended soon after its best, with no plateau and the metric still improving."""
    verdict, note = "ok", ""
    if c.best_i is not None:
        after_best = c.n - 1 - c.best_i
        if stop is not None and stop < c.n - 1:
            verdict = "too lax"
            note = (f"EarlyStopping(patience {patience}, min_delta {min_delta:g}) would have stopped at "
                    f"epoch {c.epoch_at(stop)}; the run went on {c.n - 1 - stop} more epochs")
        elif m.plateau is None and after_best < max(3, c.window // 2) and m.still_improving > 0:
            verdict = "too eager"
            note = (f"the run ended {after_best} epochs after its best, with {c.metric} still improving "
                    f"({m.still_improving:+.2g}/epoch over the last {c.window})")
    return {"verdict": verdict, "note": note}


def _finish(c: Curve, findings: list[Finding], rules: dict[str, Any], summary: dict[str, Any],
            config: dict[str, Any] | None, ceiling: float | None) -> Diagnosis:
    """Rank the findings (healthy when there are none), label the summary, add recommendations."""
    if not findings:
        findings.append(healthy_finding(c, summary))
    findings.sort(key=lambda f: SEVERITY[f.kind])
    summary.setdefault("plateau_epoch", None)
    summary.setdefault("overfit_ratio", None)
    summary["label"] = findings[0].kind
    diag = Diagnosis(c.metric, c.gib, findings, [], rules, summary)
    diag.recommendations = make_recommendations(diag, config, ceiling)
    return diag
