"""Per-epoch bookkeeping of the training loop, one small class each.

- `BestTracker`: best value and epoch of loss, accuracy, f1 and the task's primary metric.
- `EarlyStopping`: the monitored column, its patience counter and the best-epoch weights.
- `Checkpointer`: ``best_<key>.pt`` on improvement, ``last.pt`` every epoch, ``final.pt`` (rank 0).
- `HistoryWriter`: the history rows, written to ``history.json`` every epoch (rank 0).
- `TensorBoardWriter`: each row's numeric columns as TensorBoard scalars beside it (rank 0).

Each exports its state with ``state_dict()`` under the keys ``last.pt`` has always used (``best``,
``best_state``, ``wait``, ``history``, ``checkpoints``) and reads it back with ``load_state_dict(ck)``,
so a run resumed from ``last.pt`` continues exactly where it stopped. `TensorBoardWriter` keeps nothing
in ``last.pt``: its event files are its state.
"""
from __future__ import annotations

import math
from pathlib import Path

from torch import nn

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_torch_save, atomic_write_json
from helpers.training.batching import _unwrap
from helpers.training.checkpoints import _state
from helpers.training.config import TrainConfig

# Metrics where a smaller value is better (used to pick "best" and for monitor="...").
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "nll")

# Key of the monitored column's best value in the `best` dict; private (the public `best` calls it
# "monitor"), kept in the same dict so that last.pt's "best" keeps its format and key order.
_MONITOR = "_monitor"


def _greater_is_better(name: str, task=None) -> bool:
    if task is not None and name == getattr(task, "primary", None) and hasattr(task, "greater_is_better"):
        return bool(task.greater_is_better)
    return not any(name.endswith(s) for s in _LOWER_IS_BETTER)


class BestTracker:
    """Best value and epoch of val loss (lower), accuracy / f1 (higher) and the primary metric.

    ``best`` maps metric -> {"value", "epoch"}; `EarlyStopping` keeps its monitored value there too,
    under "_monitor", which `public` renames to "monitor".
    """

    def __init__(self) -> None:
        self.best: dict[str, dict] = {}

    def update(self, row: dict, metrics: dict, primary: str | None, primary_up: bool) -> list[str]:
        """Record the epoch's improvements; returns the improved keys (loss, accuracy, f1, primary)."""
        tracked = {"loss": ("val_loss", False)}
        for name in ("accuracy", "f1"):
            if name in metrics:
                tracked[name] = (name, True)
        if primary and primary in metrics and primary not in tracked:
            tracked[primary] = (primary, primary_up)
        improved = []
        for key, (col, up) in tracked.items():
            v = row[col]
            old = self.best.get(key)
            if math.isfinite(v) and (old is None or (v > old["value"] if up else v < old["value"])):
                self.best[key] = {"value": v, "epoch": row["epoch"]}
                improved.append(key)
        return improved

    @property
    def monitor(self) -> dict | None:
        return self.best.get(_MONITOR)

    def set_monitor(self, value: float, epoch: int, name: str) -> None:
        self.best[_MONITOR] = {"value": value, "epoch": epoch, "name": name}

    def public(self) -> dict[str, dict]:
        """The ``TrainResult.best`` form: "_monitor" becomes "monitor" (last)."""
        out = {k: v for k, v in self.best.items() if k != _MONITOR}
        if _MONITOR in self.best:
            out["monitor"] = dict(self.best[_MONITOR])
        return out

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, ck: dict) -> None:
        self.best = ck["best"]


class EarlyStopping:
    """Stops when ``cfg.monitor`` has not improved by more than ``min_delta`` (absolute) for
    ``patience`` epochs (0 = never), or is not finite; snapshots the best weights when
    ``restore_best``. The monitored best value lives in ``tracker`` (see `BestTracker`)."""

    def __init__(self, cfg: TrainConfig, task, tracker: BestTracker, model: nn.Module) -> None:
        self.monitor = cfg.monitor
        self.column = "val_loss" if cfg.monitor in ("val_loss", "loss") else cfg.monitor.removeprefix("val_")
        self.greater_is_better = self.column != "val_loss" and _greater_is_better(self.column, task)
        self.min_delta = cfg.min_delta
        self.patience = cfg.patience
        self.restore = cfg.restore_best
        self.tracker = tracker
        self.model = model
        self.wait = 0
        self.best_state: dict | None = None

    def update(self, row: dict) -> str | None:
        """Account for one epoch's row; returns why training should stop, or None."""
        if self.column not in row:
            raise WorkbookError(f"TrainConfig.monitor={self.monitor!r}: not among the epoch's values "
                                f"{sorted(row)}")
        v, epoch, best = row[self.column], row["epoch"], self.tracker.monitor
        if not math.isfinite(v):
            return f"epoch {epoch}: {self.column} is not finite; stopping"
        if best is None or (v > best["value"] + self.min_delta if self.greater_is_better
                            else v < best["value"] - self.min_delta):
            self.tracker.set_monitor(v, epoch, self.column)
            self.wait = 0
            if self.restore:
                self.best_state = {k: t.detach().cpu().clone() for k, t in _unwrap(self.model).state_dict().items()}
            return None
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            return (f"early stop at epoch {epoch}: {self.column} no better than "
                    f"{best['value']:.4f} (epoch {best['epoch']}) for {self.wait} epochs")
        return None

    def restore_best(self) -> None:
        """Load the best-monitor weights into the model (when ``restore_best`` and any were kept)."""
        if self.restore and self.best_state is not None:
            _unwrap(self.model).load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {"best_state": self.best_state, "wait": self.wait}

    def load_state_dict(self, ck: dict) -> None:
        self.best_state, self.wait = ck["best_state"], ck["wait"]


class HistoryWriter:
    """The history rows; ``write`` puts them in ``out/history.json`` (when ``enabled``: rank 0)."""

    def __init__(self, out: Path | None, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled and out is not None
        self.rows: list[dict] = []

    def append(self, row: dict) -> None:
        self.rows.append(row)

    def write(self) -> None:
        if self.enabled:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "history.json", self.rows)

    def state_dict(self) -> dict:
        return {"history": self.rows}

    def load_state_dict(self, ck: dict) -> None:
        self.rows = ck["history"]


class TensorBoardWriter:
    """Each history row's numeric columns (all but ``epoch``) as scalars, tag = column and step = epoch,
    in TensorBoard event files in ``out`` (when ``enabled``: rank 0 with ``cfg.tensorboard``).

    The event file is opened at the first row this call writes, with ``purge_step`` = that epoch: a
    resumed run appends to the folder and TensorBoard drops what an earlier call wrote from that
    epoch on (epochs logged after the last ``last.pt``, or a whole run the call starts afresh over),
    so each epoch keeps one value per tag, as in history.json. Opening late also leaves no empty
    event file when there is nothing left to train. ``close`` must be called (the loop does, in a
    ``finally``).
    """

    def __init__(self, out: Path | None, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled and out is not None
        self.writer = None

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        if self.writer is None:
            # Deferred: tensorboard is slow to import, and runs without an out_dir never need it.
            from torch.utils.tensorboard import SummaryWriter

            self.out.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.out), purge_step=row["epoch"])
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, row["epoch"])
        # Flushed every epoch so that a researcher watching the run sees it (the default waits 2 min).
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Checkpointer:
    """``best_<key>.pt`` for each improved key and ``last.pt`` every epoch, ``final.pt`` at the end;
    writes only when ``enabled`` (rank 0, an out_dir and ``cfg.checkpoint``). ``paths``: name -> path."""

    def __init__(self, out: Path | None, enabled: bool, model: nn.Module, opt, sched, scaler,
                 cfg: TrainConfig) -> None:
        self.out = out
        self.enabled = enabled and out is not None and cfg.checkpoint
        self.model, self.opt, self.sched, self.scaler, self.cfg = model, opt, sched, scaler, cfg
        self.paths: dict[str, str] = {}

    def _save(self, name: str, epoch: int, best: dict, extra: dict | None = None) -> Path:
        path = self.out / name
        atomic_torch_save(_state(self.model, self.opt, self.sched, self.scaler, epoch, best, self.cfg, extra),
                          path)
        return path

    def save_epoch(self, epoch: int, improved: list[str], best: dict, resume: dict) -> None:
        """``resume``: the other callbacks' state for last.pt (this one's ``checkpoints`` goes last)."""
        if not self.enabled:
            return
        for key in improved:
            self.paths[f"best_{key}"] = str(self._save(f"best_{key}.pt", epoch, best))
        self._save("last.pt", epoch, best, {**resume, **self.state_dict()})

    def save_final(self, epochs_run: int, best: dict, history: list[dict]) -> None:
        if self.enabled:
            self.paths["final"] = str(self._save("final.pt", epochs_run, best, {"history": history}))

    def state_dict(self) -> dict:
        return {"checkpoints": self.paths}

    def load_state_dict(self, ck: dict) -> None:
        self.paths = ck.get("checkpoints", {})
