"""Reading a history (any logger's spelling) and a run's config; choosing the metric to judge."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import DataError, WorkbookError
from helpers.evaluation.doctor.formats import (coerce_numeric, find_event_files, is_event_file, LogFormat,
                                               read_csv_log, read_tensorboard, read_trainer_state)


# M4's starting configuration (train_transformer3D/train_3d.py): the "from" values when a
# history comes without its own config.
NOTE004_BASELINE: dict[str, Any] = {
    "d_model": 512, "nhead": 8, "num_layers": 4, "dim_feedforward": 2048, "dropout": 0.15,
    "mse_weight": 0.2, "cosine_weight": 0.8, "lr": 1e-4, "warmup_epochs": 5, "warmup_lr": 1e-6,
    "epochs": 100, "cosine_eta_min": 1e-6, "batch_size": 32, "weight_decay": 1e-4,
    "early_stopping_patience": 20, "early_stopping_min_delta": 1e-4,
}


# TrainConfig / other spellings of M4's flags in a config.json.
_CONFIG_ALIASES = {"eta_min": "cosine_eta_min", "patience": "early_stopping_patience",
                   "min_delta": "early_stopping_min_delta", "learning_rate": "lr"}


# Column spellings of common loggers -> the workbook's names.
_EPOCH_NAMES = ("epoch", "epochs", "step", "iteration", "iter")
_STEP_NAMES = ("step", "iteration", "iter")


_EXACT_ALIASES = {
    "loss": "train_loss", "training_loss": "train_loss", "trn_loss": "train_loss",
    "train_loss_epoch": "train_loss",
    "eval_loss": "val_loss", "valid_loss": "val_loss", "validation_loss": "val_loss",
    "val_loss_epoch": "val_loss", "test_loss": "val_loss",
    "learning_rate": "lr", "lr_0": "lr", "lr_adam": "lr", "lr_sgd": "lr", "lr_adamw": "lr",
    "acc": "train_accuracy", "accuracy": "train_accuracy", "train_acc": "train_accuracy",
    "val_acc": "val_accuracy", "eval_top1": "val_top1", "eval_top5": "val_top5",
    # YOLOv5 spells mAP50-95 and its learning rates its own way
    "metrics/map_0.5:0.95": "val_map50_95", "metrics/map_0.5": "val_map50",
    "x/lr0": "lr_pg0", "x/lr1": "lr_pg1", "x/lr2": "lr_pg2",
}


# Columns that describe the run's speed or memory, not the model: never a monitor.
_NOT_SCORE_WORDS = ("runtime", "per_second", "samples", "time", "flos", "memory", "mem_", "grad_norm", "batch")


# Logs that report the held-out split per epoch as "test" mean their validation signal.
_VAL_PREFIXES = ("eval_", "valid_", "validation_", "test_", "val/", "eval/", "valid/", "metrics/")


# Short score names of the held-out split -> the workbook's.
_VAL_RENAMES = {"acc": "accuracy", "acc1": "top1", "acc5": "top5"}


_LOSS_WORDS = ("loss", "mse", "mae", "rmse", "nll", "error", "err", "perplexity", "ppl", "wer", "cer", "fid")


# Metrics preferred as the primary score when none is named (first match wins). mAP50-95 is what
# Ultralytics' fitness weighs 0.9 (YOLO results.csv).
_SCORE_PREFERENCE = ("val_cos", "val_cosine", "val_overall_f1", "val_accuracy", "val_top1", "val_map50_95", "val_f1", "val_auc")


_NOT_METRICS = {"epoch", "lr", "grad_norm", "epoch_time_s", "samples_per_s", "time", "wall_time",
                "train_loss", "val_loss", "momentum", "weight_decay"}


def _canon(name: str) -> str:
    n = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    n = n[:-3] if n.endswith("(b)") else n             # YOLO's "(B)" (box) suffix
    if n in _EXACT_ALIASES:
        return _EXACT_ALIASES[n]
    for p in _VAL_PREFIXES:
        if n.startswith(p):
            rest = n[len(p):]
            return "val_" + _VAL_RENAMES.get(rest, rest)
    if n.startswith("train/"):
        return "train_" + n[len("train/"):]
    return n.replace("/", "_")


def _column_mapping(df: pd.DataFrame, bare_is_validation: bool = True) -> dict[str, str]:
    """Each kept column's workbook name; of two spellings of one column the first wins. ``epoch`` wins
    over ``step``/``iteration`` wherever it stands (a step count is never read as the epoch). A bare score
    name ("cos") is a validation value in the workbook's own history and generic tables, a training value in
    the tools' logs (Keras, Lightning, YOLO, HF and TensorBoard prefix their validation values)."""
    mapping: dict[str, str] = {}
    canon = {c: _canon(c) for c in df.columns}
    present = set(canon.values())
    has_epoch = any(n in ("epoch", "epochs") for n in present)
    for c in df.columns:
        n = canon[c]
        if any(w in n for w in _NOT_SCORE_WORDS) or (has_epoch and n in _STEP_NAMES):
            continue
        # A bare score ("accuracy", "cos") is a training value when its val_ twin exists (Keras),
        # else a validation value (the workbook's history.json scores the validation split).
        if n.startswith("train_") and n != "train_loss" and str(c).lower() in ("acc", "accuracy"):
            n = n if "val_" + n[len("train_"):] in present else "val_" + n[len("train_"):]
        elif (n not in _NOT_METRICS and n not in _EPOCH_NAMES and not n.startswith(("val_", "train_", "lr_"))):
            n = ("train_" + n) if ("val_" + n) in present or not bare_is_validation else ("val_" + n)
        if n in _EPOCH_NAMES:
            n = "epoch"
        if n in mapping.values():
            continue
        mapping[c] = n
    return mapping


def _add_loss_sums(out: pd.DataFrame) -> pd.DataFrame:
    """Loggers with several loss terms and no total (YOLO: box, cls, dfl) get train_loss / val_loss as
    their sum, and a learning rate from the weights' parameter group (YOLO's lr/pg1; pg0 is the biases'
    warm-up from 0.1)."""
    for split in ("train", "val"):
        parts = [c for c in out.columns if c.startswith(split + "_") and c.endswith("_loss") and c != split + "_loss"]
        if split + "_loss" not in out.columns and len(parts) >= 2:
            out[split + "_loss"] = out[parts].sum(axis=1, min_count=len(parts))
    groups = [c for c in ("lr_pg1", "lr_pg0") if c in out.columns]
    if "lr" not in out.columns and groups:
        out["lr"] = out[groups[0]]
    return out


def normalise_columns(df: pd.DataFrame, source: str = "history", fmt: LogFormat | None = None) -> pd.DataFrame:
    """Rename common logger spellings to the workbook's, keep numeric columns, sort by epoch.

    Raises DataError when there is no epoch column, no loss or metric column, a text cell in a column of
    numbers (naming its row and column), or the epoch column is not numeric and finite. Repeated epochs
    (a resumed run) keep their last row; how many rows were dropped is in ``df.attrs["duplicate_epochs"]``.
    ``attrs`` also carry the format read, its monitor rule, the columns read and notes.
    """
    if not isinstance(df, pd.DataFrame) or df.empty:
        raise DataError(f"{source}: the history is empty; expected one row per epoch")
    fmt = fmt or LogFormat("per-epoch table", "the first validation score, else val_loss (none: not judged)",
                           (), [str(c) for c in df.columns], bare_is_validation=True)
    mapping = _column_mapping(df, fmt.bare_is_validation)
    out = df[list(mapping)].rename(columns=mapping)
    if "epoch" not in out.columns:
        raise DataError(f"{source}: no epoch column; expected one of {', '.join(_EPOCH_NAMES)} "
                        f"(columns found: {', '.join(map(str, df.columns))})")
    out = _add_loss_sums(coerce_numeric(out, source))
    out = _drop_dead_losses(out, fmt)
    if "epoch" not in out.columns or not np.isfinite(out["epoch"].to_numpy(dtype=float)).all():
        raise DataError(f"{source}: the epoch column has missing or non-numeric values; "
                        "expected a number on every row")
    scores = [c for c in out.columns if c != "epoch"]
    if not any(c in ("train_loss", "val_loss") or c not in _NOT_METRICS for c in scores):
        raise DataError(f"{source}: no loss or metric column; expected train_loss/val_loss "
                        f"(or loss, eval_loss…) or a score such as val_accuracy "
                        f"(columns found: {', '.join(map(str, df.columns))})")
    n_rows = len(out)
    # Resumed runs repeat epochs: the last row of an epoch wins.
    out = out.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
    out.attrs.update(duplicate_epochs=int(df.attrs.get("duplicate_epochs", 0)) + n_rows - len(out),
                     format=fmt.name, monitor_rule=fmt.monitor_rule, columns_read=list(fmt.columns),
                     notes=list(fmt.notes), monitor_prefs=[_canon(m) for m in fmt.monitor],
                     percent_columns=[_canon(m) for m in fmt.monitor] if fmt.percent else [])
    return out


def _drop_dead_losses(out: pd.DataFrame, fmt: LogFormat) -> pd.DataFrame:
    """A loss column whose values are all 0 or inf was never computed (YOLO with validation off writes
    0/inf), nor a validation loss empty on every row beside a logged validation score: it is dropped, with a
    note, rather than read as a divergence. (A training loss NaN on every row is a divergence.)"""
    scores = [c for c in out.columns if c.startswith("val_") and c != "val_loss"]
    scored = any(np.isfinite(out[c].to_numpy(dtype=float)).any() for c in scores)
    for c in ("train_loss", "val_loss"):
        if c in out.columns:
            v = out[c].to_numpy(dtype=float)
            dead = np.all(np.isinf(v) | (v == 0)) or (c == "val_loss" and scored and np.isnan(v).all())
            if len(v) >= 2 and dead:
                out = out.drop(columns=[c])
                fmt.notes.append(f"{c}: every value is 0, inf or empty (never computed): not used")
    return out


def load_history(source: str | Path | pd.DataFrame | Sequence[dict] | dict) -> pd.DataFrame:
    """Read a history (see `helpers.evaluation.doctor.formats` for the tools' files; also a JSON list of
    rows / dict of lists / {"history": [...]}, a run folder, a DataFrame or a list of dicts) into a
    normalised DataFrame.

    Raises DataError naming the file and what was expected for anything that is not a history."""
    name, fmt = "history", None
    if isinstance(source, pd.DataFrame):
        if "format" in source.attrs:           # already read and normalised
            return source
        df = source.copy()
    elif isinstance(source, (list, tuple)):
        if not all(isinstance(r, dict) for r in source):
            raise DataError("history: a list whose items are not all objects; expected one object per epoch")
        df = pd.DataFrame(list(source))
    elif isinstance(source, dict):
        df, fmt = _frame_from_json(source, name)
    else:
        path = _resolve_path(Path(source))
        name = str(path)
        df, fmt = _read_history_file(path)
    return normalise_columns(df, name, fmt)


def _resolve_path(path: Path) -> Path:
    """A run folder's history: history.json, trainer_state.json or its TensorBoard event files."""
    if not path.is_dir():
        return path
    for cand in ("history.json", "trainer_state.json", "results.csv", "metrics.csv", "summary.csv"):
        if (path / cand).is_file():
            return path / cand
    if find_event_files(path):
        return path
    raise DataError(f"{path}: a folder without history.json, trainer_state.json, results.csv, metrics.csv, "
                    "summary.csv or TensorBoard event files; expected a history file or a run folder holding one")


def _read_text(path: Path) -> str:
    """The file as UTF-8 text (a BOM is dropped); DataError for a missing or binary file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a training history (.json or .csv)")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (bytes that are not UTF-8); expected a training "
                        "history written as JSON or CSV text") from None


def _read_csv_text(text: str, path: Path) -> pd.DataFrame:
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a header row and one row per epoch")
    conflict = re.search(r"^(<<<<<<< |=======$|>>>>>>> )", text, re.M)
    if conflict:
        line = text.count("\n", 0, conflict.start()) + 1
        raise DataError(f"{path}: line {line} is a git merge-conflict marker ({conflict.group(0).strip()!r}); the file "
                        "holds two versions of the log: expected one")
    head = text.split("\n", 1)[0]
    sep = next((d for d in (",", "\t", ";") if d in head), ",")
    try:
        # The C parser (fast on step-level logs of a million rows); a column holding a text cell stays text,
        # so that `coerce_numeric` can name the cell rather than read it as NaN.
        df = pd.read_csv(io.StringIO(text), sep=sep, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, csv.Error, ValueError) as e:
        raise DataError(f"{path}: not a readable CSV ({e}); expected a header row and "
                        "one row per epoch") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _read_history_file(path: Path) -> tuple[pd.DataFrame, LogFormat | None]:
    """The rows of a history file, not yet normalised, and the format that wrote it."""
    if path.is_dir() or is_event_file(path):
        return read_tensorboard(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt", ".json", ".jsonl"):
        raise DataError(f"{path}: unknown history format {suffix!r}; expected .json, .jsonl, .csv or a "
                        "TensorBoard event file (events.out.tfevents.*)")
    text = _read_text(path)
    if suffix in (".csv", ".tsv", ".txt"):
        return read_csv_log(_read_csv_text(text, path), str(path))
    if not text.strip():
        raise DataError(f"{path}: the file is empty; expected a JSON list with one object per epoch")
    try:
        if suffix == ".jsonl":
            obj = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    df, fmt = _frame_from_json(obj, str(path))
    if fmt is None and path.name.endswith("history.json"):
        fmt = LogFormat("workbook history.json", "cos (the workbook's validation score) or the first validation "
                        "score, else val_loss", ("cos",), [str(c) for c in df.columns], bare_is_validation=True)
    return df, fmt


def _frame_from_json(obj: Any, name: str) -> tuple[pd.DataFrame, LogFormat | None]:
    if isinstance(obj, dict) and "log_history" in obj:
        return read_trainer_state(obj, name)
    if isinstance(obj, dict) and "history" in obj:
        obj = obj["history"]
    if isinstance(obj, list) and obj and all(isinstance(r, dict) for r in obj):
        return pd.DataFrame(obj), None
    if isinstance(obj, dict) and obj and all(isinstance(v, list) for v in obj.values()):
        lens = {len(v) for v in obj.values()}
        if len(lens) != 1:
            raise DataError(f"{name}: columns of different lengths {sorted(lens)}; expected one "
                            "value per epoch in every column")
        df = pd.DataFrame(obj)
        if not any(_canon(c) in _EPOCH_NAMES for c in df.columns):  # Keras History.history has none
            df.insert(0, "epoch", np.arange(len(df)))
        return df, None
    raise DataError(f"{name}: expected a list of per-epoch objects, an object of per-epoch lists, "
                    "{\"history\": [...]} or a trainer_state.json with log_history")


def load_run_config(path: str | Path) -> dict[str, Any]:
    """Hyperparameters from a config.json beside a history (nested sections flattened; only the
    keys a recommendation can change are kept). {} when there is none."""
    p = Path(path)
    cfg_path = p / "config.json" if p.is_dir() else p.parent / "config.json"
    if not cfg_path.exists():
        return {}
    try:
        obj = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):   # a config we cannot read adds nothing
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


def usable(df: pd.DataFrame, col: str) -> bool:
    """A column that can be judged: at least two finite values, not all of them 0 (never computed)."""
    v = df[col].to_numpy(dtype=float)
    ok = np.isfinite(v)
    return bool(ok.sum() >= 2 and np.any(v[ok] != 0))


def pick_metric(df: pd.DataFrame, metric: str | None = None) -> str | None:
    """The monitor: ``metric`` (any known spelling), else the format's own (``attrs["monitor_prefs"]``), else
    the first usable validation score, else val_loss; None when there is none (a log of training values only)."""
    if metric:
        for cand in (metric, _canon(metric), "val_" + _canon(metric)):
            if cand in df.columns:
                return cand
        raise WorkbookError(f"--metric {metric!r}: not a column of the history; expected one of "
                            f"{', '.join(c for c in df.columns if c != 'epoch')}")
    cols = [c for c in df.columns if c != "epoch" and usable(df, c)]
    for c in df.attrs.get("monitor_prefs", []):
        if c in cols:
            return c
    for pref in _SCORE_PREFERENCE:
        for c in cols:
            if c.startswith(pref):
                return c
    for c in cols:
        if c.startswith("val_") and c != "val_loss" and c not in _NOT_METRICS:
            return c
    # A training loss alone says nothing about held-out data: such a log is not judged.
    return "val_loss" if "val_loss" in cols else None
