"""Reading a training log as its tool writes it: which tool wrote it, its rows as one row per epoch, and the
rule that picks the monitor.

Each reader returns the rows *not yet normalised* (the tool's own column names) and a `LogFormat`: the
format's name, the monitor rule (stated in the output), the columns read and notes on what was done to
the rows (runs split, step rows merged). `helpers.evaluation.doctor.history` then renames and checks.

Formats: Ultralytics YOLOv5 / v8+ ``results.csv``, timm ``summary.csv``, Keras ``CSVLogger``, Lightning
``CSVLogger`` ``metrics.csv``, Hugging Face ``trainer_state.json``, TensorBoard event files, the
workbook's ``history.json`` (and any per-epoch CSV/JSON with an epoch column).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.core.errors import DataError


@dataclass
class LogFormat:
    """What was read: ``name`` of the format, the ``monitor_rule`` in words, the ``monitor`` column it
    names (the tool's spelling; None = the generic preference), the columns read, notes."""
    name: str
    monitor_rule: str
    monitor: tuple[str, ...] = ()
    columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    percent: bool | None = None          # the monitor's scale when the format fixes it (timm: 0-100)
    bare_is_validation: bool = False     # unprefixed scores are validation values (the workbook's own files)


# Cells that mean "no value" rather than a number: a logger's empty cell or its spelling of NaN.
_MISSING_TEXT = {"", "nan", "none", "null", "na", "n/a", "-nan"}


def coerce_numeric(df: pd.DataFrame, source: str, first_line: int = 2) -> pd.DataFrame:
    """Each column as float. A column with no number at all (a timestamp, a run name) is dropped; a text
    cell in a column that holds numbers is refused naming its row (file line) and column. A list cell
    ("[0.1, 0.01]", timm's per-group lr) reads as its first element."""
    out = {}
    for c in df.columns:
        col = df[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            s = col.astype(str).str.strip()
            lists = s.str.match(r"^\[.*\]$")
            if lists.any():
                s = s.where(~lists, s.str.strip("[]").str.split(",").str[0].str.strip())
            v = pd.to_numeric(s, errors="coerce")
            text = (v.isna() & col.notna() & ~s.str.lower().isin(_MISSING_TEXT)).to_numpy(dtype=bool)
            if text.any() and v.notna().any():
                i = int(np.flatnonzero(text)[0])
                raise DataError(f"{source}: row {i + 1} (line {i + first_line}), column {str(c).strip()!r}: "
                                f"{str(col.iloc[i])[:40]!r} is not a number; expected a number or an empty cell "
                                "in a column of numbers")
            if v.notna().any():
                out[c] = v.astype(float)
        else:
            out[c] = pd.to_numeric(col, errors="coerce").astype(float)
    return pd.DataFrame(out, index=df.index)


# ------------------------------------------------------------------------------------------ detection
def detect_csv_format(columns: list[str]) -> str:
    """The tool that wrote a CSV, from its header."""
    cols = {c.strip() for c in columns}
    low = {c.lower() for c in cols}
    if any(c.startswith("train/") for c in cols) and any(c.startswith("metrics/") for c in cols):
        v5 = "train/obj_loss" in cols or any(c.startswith("x/lr") for c in cols) or "metrics/mAP_0.5:0.95" in cols
        return "yolov5" if v5 else "yolov8"
    if "epoch" in low and "step" in low:
        return "lightning"
    if "epoch" in low and ("eval_top1" in low or ("train_loss" in low and "eval_loss" in low)):
        return "timm"
    # CSVLogger writes "epoch" then the logs' keys sorted, each score with its val_ twin.
    head = [c.strip() for c in columns]
    keys = head[1:]
    if head[:1] == ["epoch"] and keys == sorted(keys) and "loss" in keys and any(k.startswith("val_") for k in keys):
        return "keras"
    return "csv"


def read_csv_log(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, LogFormat]:
    """The rows of a CSV log (raw cells) as numbers, one row per epoch, and its format."""
    df.columns = [str(c).strip() for c in df.columns]
    kind = detect_csv_format(list(df.columns))
    read = coerce_numeric(df, source)
    fmt = _CSV_FORMATS[kind]()
    fmt.columns = list(df.columns)
    if kind == "lightning":
        read = _merge_steps(read, fmt)
    if kind.startswith("yolo"):
        # every train/ and val/ column of a results.csv is a loss term (YOLOv10 spells them box_om, box_oo...)
        read = read.rename(columns={c: c + "_loss" for c in read.columns
                                    if c.startswith(("train/", "val/")) and not c.endswith("_loss")})
    read = _split_runs(read, fmt)
    return read, fmt


def _yolo(version: str, monitor: str, lr: str) -> LogFormat:
    return LogFormat(f"Ultralytics YOLO{version} results.csv",
                     f"{monitor} (Ultralytics' fitness weighs mAP50-95 0.9 and mAP50 0.1); "
                     f"losses = sum of the train/ and val/ loss terms; lr = {lr}", (monitor,))


_CSV_FORMATS = {
    "yolov5": lambda: _yolo("v5", "metrics/mAP_0.5:0.95", "x/lr1 (the weights' group), else x/lr0"),
    "yolov8": lambda: _yolo("v8+", "metrics/mAP50-95(B)", "lr/pg1 (the weights' group), else lr/pg0"),
    "timm": lambda: LogFormat("timm summary.csv", "eval_top1 (timm's default eval metric, a percentage), "
                              "else eval_loss", ("eval_top1", "eval_loss"), percent=True),
    "keras": lambda: LogFormat("Keras CSVLogger", "val_accuracy-like score (val_accuracy, val_acc, val_auc...) "
                               "if logged, else val_loss (Keras callbacks' default monitor)", ()),
    "lightning": lambda: LogFormat("Lightning CSVLogger metrics.csv", "val_acc*/val_accuracy* if logged, else "
                                   "val_loss; rows merged per epoch (step rows: last value, *_step: mean)", ()),
    "csv": lambda: LogFormat("per-epoch CSV", "the first validation score, else val_loss (none: not judged)", (),
                             bare_is_validation=True),
}


def _merge_steps(read: pd.DataFrame, fmt: LogFormat) -> pd.DataFrame:
    """Lightning writes a row per logging step and per validation run, each holding only its own columns:
    one row per epoch, *_step columns averaged, others their last value; ``step`` is dropped (never an epoch)."""
    ep = next((c for c in read.columns if c.lower() == "epoch"), None)
    if ep is None or read[ep].isna().all():
        raise DataError(f"{fmt.name}: no epoch values; expected Lightning's epoch column")
    read = read[read[ep].notna()].drop(columns=[c for c in read.columns if c.lower() == "step"])
    step_cols = [c for c in read.columns if c.endswith("_step")]
    g = read.groupby(ep, sort=False)
    merged = g.last()
    if step_cols:
        merged[step_cols] = g[step_cols].mean()
    merged = merged.reset_index()
    fmt.notes.append(f"{len(read)} step/validation rows merged into {len(merged)} epochs; 'step' not used")
    return merged


def _split_runs(read: pd.DataFrame, fmt: LogFormat) -> pd.DataFrame:
    """Runs appended to one file (the epoch falls back to the file's first epoch): the last run is judged,
    stated in the notes. A fall to a later epoch is a resumed run (its repeated epochs keep the last row)."""
    ep = next((c for c in read.columns if c.lower() in ("epoch", "epochs")), None)
    if ep is None or len(read) < 2:
        return read
    e = read[ep].to_numpy(dtype=float)
    first = e[0]
    starts = np.flatnonzero((e[1:] < e[:-1]) & (e[1:] <= first)) + 1
    if not len(starts):
        return read
    bounds = [0, *starts.tolist(), len(e)]
    spans = ", ".join(f"rows {a + 1}-{b}" for a, b in zip(bounds[:-1], bounds[1:]))
    fmt.notes.append(f"{len(bounds) - 1} runs appended in one file (the epoch restarts at {first:g}): {spans}; "
                     f"judging the last run (rows {bounds[-2] + 1}-{bounds[-1]})")
    return read.iloc[bounds[-2]:].reset_index(drop=True)


# -------------------------------------------------------------------------------- Hugging Face
def read_trainer_state(obj: dict, source: str) -> tuple[pd.DataFrame, LogFormat]:
    """``trainer_state.json``: evaluation rows (eval_*) are the rows judged, each with the mean training
    loss and the last learning rate logged since the previous evaluation; without evaluations, the
    training rows themselves. The summary row (train_runtime) is left out."""
    hist = obj.get("log_history")
    if not isinstance(hist, list) or not all(isinstance(r, dict) for r in hist):
        raise DataError(f"{source}: 'log_history' is not a list of objects; expected the Trainer's trainer_state.json")
    rows = [r for r in hist if "train_runtime" not in r]
    fmt = LogFormat("Hugging Face trainer_state.json", "eval_accuracy/eval_f1-like score if logged, else eval_loss "
                    "(none: not judged)", (), sorted({k for r in rows for k in r}))
    df = coerce_numeric(pd.DataFrame(rows), source, first_line=1) if rows else pd.DataFrame()
    if df.empty:
        return df, fmt
    if "step" not in df:
        df["step"] = np.arange(len(df), dtype=float)
    is_eval = df[[c for c in df.columns if c.startswith("eval_")]].notna().any(axis=1) if any(
        c.startswith("eval_") for c in df.columns) else pd.Series(False, index=df.index)
    if not is_eval.any():
        fmt.notes.append(f"no evaluation rows: the {len(df)} training log rows are judged")
        return df.drop(columns=["step"]) if "epoch" in df else df, fmt
    ev, tr = df[is_eval].copy(), df[~is_eval]
    ev = ev.groupby("step", sort=True).last().reset_index()
    keep = [c for c in ("loss", "learning_rate") if c in tr]
    if keep:
        # the last training value logged at or before each evaluation (logging and evaluation steps differ)
        tr = tr[["step", *keep]].dropna(subset=keep, how="all").sort_values("step")
        ev = pd.merge_asof(ev.drop(columns=[c for c in keep if c in ev]), tr, on="step", direction="backward")
    fmt.notes.append(f"{len(ev)} evaluation rows judged, each with the last training loss and lr logged at or before it")
    return ev.drop(columns=["step"]), fmt


# -------------------------------------------------------------------------------- TensorBoard
def read_tensorboard(path: Path) -> tuple[pd.DataFrame, LogFormat]:
    """Scalar summaries of an event file (or a folder of them): one column per tag, one row per step; the
    step is the row's epoch (the workbook's own writer logs the epoch as the step)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:                      # pragma: no cover - tensorboard is a dependency
        raise DataError(f"{path}: reading TensorBoard files needs the tensorboard package") from None
    acc = event_accumulator.EventAccumulator(str(path), size_guidance={event_accumulator.SCALARS: 0})
    try:
        acc.Reload()
    except Exception as e:                   # the reader raises its own errors on a damaged file
        raise DataError(f"{path}: not a readable TensorBoard event file ({type(e).__name__}: {e})") from None
    tags = acc.Tags().get("scalars", [])
    if not tags:
        raise DataError(f"{path}: no scalar summaries in the event file; expected scalars such as loss per epoch")
    cols = {t: pd.Series({e.step: e.value for e in acc.Scalars(t)}, dtype=float) for t in tags}
    df = pd.DataFrame(cols).sort_index()
    fmt = LogFormat("TensorBoard event file", "the first validation score, else val_loss (none: not judged); "
                    "the step is read as the epoch unless an 'epoch' scalar is logged", (), list(tags))
    # The workbook's own writer logs its history's keys (train_loss, val_loss and unprefixed validation scores).
    fmt.bare_is_validation = {"train_loss", "val_loss"} <= set(df.columns)
    if "epoch" in df.columns:
        # Lightning logs the epoch as a scalar at each step: rows are merged per epoch as for its CSV
        df = df.reset_index(drop=True)
        df["epoch"] = df["epoch"].ffill().bfill()
        return _merge_steps(df, fmt), fmt
    df.insert(0, "epoch", df.index.to_numpy(dtype=float))
    return df.reset_index(drop=True), fmt


def find_event_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and "tfevents" in p.name)


def is_event_file(path: Path) -> bool:
    return "tfevents" in path.name


_PERCENT_HINT = re.compile(r"(percent|pct|%)", re.I)


def percent_from_name(name: str) -> bool:
    """A name that says percent (acc%, top1_pct)."""
    return bool(_PERCENT_HINT.search(name))
