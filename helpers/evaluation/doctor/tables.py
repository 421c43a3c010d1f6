"""The diagnosis as tables and text for notebooks and the CLI."""
from __future__ import annotations

import pandas as pd

from helpers.evaluation.doctor.results import Diagnosis


def make_findings_table(diag: Diagnosis) -> pd.DataFrame:
    """One row per finding: kind, metric, epoch, message and the evidence as compact text."""
    rows = [{"kind": f.kind, "metric": f.metric, "epoch": f.epoch, "finding": f.message,
             "evidence": ", ".join(f"{k}={v}" for k, v in f.evidence.items() if v is not None)}
            for f in diag.findings]
    return pd.DataFrame(rows, columns=["kind", "metric", "epoch", "finding", "evidence"])


def make_recommendations_table(diag: Diagnosis) -> pd.DataFrame:
    rows = [{"rank": i + 1, "name": r.name, "plan": r.plan, "confidence": r.confidence, "change": r.change,
             "reason": r.reason} for i, r in enumerate(diag.recommendations)]
    return pd.DataFrame(rows, columns=["rank", "name", "plan", "confidence", "change", "reason"])


def describe_rules(diag: Diagnosis) -> str:
    """When ReduceLROnPlateau and EarlyStopping would have acted on this curve, in two lines."""
    rl, es = diag.rules["reduce_lr_on_plateau"], diag.rules["early_stopping"]
    n = diag.rules.get("n_epochs", "recorded")
    cut = f"epoch {rl['first_cut_epoch']}" if rl["first_cut_epoch"] is not None else f"never within the {n} epochs"
    stop = f"epoch {es['stop_epoch']}" if es["stop_epoch"] is not None else f"never within the {n} epochs"
    note = f": {es['note']}" if es.get("note") else ""
    return (f"ReduceLROnPlateau(patience {rl['patience']}, threshold 1e-4 rel) would first cut the LR: {cut}\n"
            f"EarlyStopping(patience {es['patience']}, min_delta {es['min_delta']:g}) would stop: {stop} "
            f"[{es.get('verdict', 'not judged')}{note}]")
