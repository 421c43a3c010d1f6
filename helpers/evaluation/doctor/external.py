"""The doctor on histories it did not make: public training logs labelled by hand (labels.json), and
its precision and recall per finding kind against those labels."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.core.errors import DataError, WorkbookError
from helpers.evaluation.doctor.diagnose import diagnose_history


# The kinds the hand labels use (labels.json's "_about" defines each); other kinds the doctor reports
# (oscillation, warmup_not_linear, too_short) were not labelled and are listed but not scored.
LABELLED_KINDS = ("divergence", "schedule_ended", "plateau", "overfitting", "underfitting",
                  "saturated_monitor", "noise", "healthy")


def load_labels(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``folder/labels.json``: file stem -> {"kinds": [...], "ambiguous": [...], "reason": "..."}."""
    path = Path(folder) / "labels.json"
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; expected the hand labels of the histories in {Path(folder) / 'external'}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected an object of file stem -> labels") from None
    labels = {k: v for k, v in obj.items() if not k.startswith("_")}
    bad = [k for k, v in labels.items() if not (isinstance(v, dict) and isinstance(v.get("kinds"), list))
           or not set(v["kinds"]) <= set(LABELLED_KINDS)]
    if bad:
        raise DataError(f"{path}: entries {bad[:5]} need a 'kinds' list drawn from {', '.join(LABELLED_KINDS)}")
    return labels


def diagnose_labelled_histories(folder: str | Path) -> pd.DataFrame:
    """One row per labelled file in ``folder/external``: its hand labels next to the doctor's kinds."""
    folder = Path(folder)
    rows = []
    for stem, lab in sorted(load_labels(folder).items()):
        path = next((p for p in sorted((folder / "external").glob(stem + ".*"))), None)
        row = {"history": stem, "labels": ", ".join(lab["kinds"]), "ambiguous": ", ".join(lab.get("ambiguous", [])),
               "reason": lab.get("reason", "")}
        try:
            if path is None:
                raise DataError(f"{folder / 'external'}: no file for the labelled history {stem!r}")
            d = diagnose_history(path)
            row.update({"metric": d.metric, "epochs": d.rules["n_epochs"], "doctor": ", ".join(d.kinds),
                        "first_remedy": d.recommendations[0].name if d.recommendations else "—"})
        except WorkbookError as e:
            row.update({"metric": None, "epochs": None, "doctor": "unreadable", "first_remedy": str(e)})
        rows.append(row)
    return pd.DataFrame(rows, columns=["history", "metric", "epochs", "labels", "doctor", "first_remedy",
                                       "ambiguous", "reason"])


def _split(text: str) -> set[str]:
    return {k.strip() for k in str(text).split(",") if k.strip()}


def evaluate_labelled_histories(folder: str | Path, per_file: pd.DataFrame | None = None) -> pd.DataFrame:
    """Precision and recall of the doctor per labelled kind, with the counts behind them.

    A file counts for a kind as a true positive when both the labels and the doctor name it, a false
    positive when only the doctor does, a false negative when only the labels do. Precision is NaN when
    the doctor never named the kind, recall when no file is labelled with it. The last row pools all kinds.
    """
    per_file = diagnose_labelled_histories(folder) if per_file is None else per_file
    rows = []
    for kind in LABELLED_KINDS:
        lab = per_file["labels"].map(lambda s: kind in _split(s))
        doc = per_file["doctor"].map(lambda s: kind in _split(s))
        rows.append(_counts(kind, int((lab & doc).sum()), int((doc & ~lab).sum()), int((lab & ~doc).sum())))
    total = pd.DataFrame(rows)
    rows.append(_counts("all kinds", int(total["tp"].sum()), int(total["fp"].sum()), int(total["fn"].sum())))
    out = pd.DataFrame(rows)
    out.attrs["n_histories"] = len(per_file)
    return out


def _counts(kind: str, tp: int, fp: int, fn: int) -> dict[str, Any]:
    return {"kind": kind, "labelled": tp + fn, "doctor_found": tp + fp, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else math.nan, "recall": tp / (tp + fn) if tp + fn else math.nan}
