"""Which way seed replicas train fastest (`helpers.training.replicas`): the key a measurement is recorded
under, the record file in the cache, and the choice from measured seconds."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from helpers.core import paths
from helpers.core.device import resolve_device
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_json, read_json
from helpers.training.batching import _model_signature
from helpers.training.config import TrainConfig

MODES = ("sequential", "vmap", "processes")
# A way beats one-after-another only when measured at least this much faster (timings on a shared
# machine wobble by a few percent).
MIN_GAIN = 1.05
RECORD_FILE = "replica_modes.json"


def replica_kind(models: Sequence[nn.Module], configs: Sequence[TrainConfig], n_rows: int,
                 device: str | torch.device = "cpu") -> str:
    """The key a measurement is recorded under: the model's architecture (spec or layer shapes), the
    batch size, augmentation, training rows, the number of replicas, threads, device kind and torch."""
    m, cfg = models[0], configs[0]
    arch = (m.spec.get("name") if isinstance(getattr(m, "spec", None), dict) else type(m).__name__)
    threads = cfg.num_threads or torch.get_num_threads()
    return (f"{arch}:{_model_signature(m)}|batch{cfg.batch_size}|aug{int(cfg.augment)}|rows{n_rows}"
            f"|x{len(models)}|threads{threads}|{resolve_device(device).type}|torch{torch.__version__}")


def read_mode_record(path: str | Path | None = None) -> dict[str, dict]:
    """Recorded measurements: kind -> {mode: seconds, ...} (an absent file is an empty record)."""
    path = Path(path) if path is not None else paths.CACHE / RECORD_FILE
    if not path.is_file():
        return {}
    rec = read_json(path)
    if not isinstance(rec, dict):
        raise WorkbookError(f"{path}: holds a {type(rec).__name__}; expected a mapping kind -> {{mode: seconds}}")
    return rec


def record_modes(kind: str, timings: dict[str, float], path: str | Path | None = None, source: str = "") -> None:
    """Add (or replace) the measurement of ``kind`` in the record file."""
    path = Path(path) if path is not None else paths.CACHE / RECORD_FILE
    bad = sorted(set(timings) - set(MODES))
    if bad:
        raise WorkbookError(f"record_modes: modes {bad}; expected some of {MODES}")
    rec = read_mode_record(path)
    rec[kind] = {**{m: float(s) for m, s in timings.items()}, "source": source}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, rec)


def choose_mode(timings: dict[str, float]) -> tuple[str, str]:
    """(mode, why) from measured seconds: the fastest way when it beat one after another by `MIN_GAIN`,
    else sequential."""
    seq = timings.get("sequential")
    measured = {m: s for m, s in timings.items() if m in MODES and isinstance(s, (int, float)) and s > 0}
    if seq is None or not measured:
        return "sequential", "no measurement of one after another: sequential"
    best = min(measured, key=measured.get)
    gain = seq / measured[best]
    if best != "sequential" and gain >= MIN_GAIN:
        return best, f"{best} measured {gain:.2f}x one after another"
    return "sequential", f"nothing measured at least {MIN_GAIN:.2f}x one after another (best {best}, {gain:.2f}x)"
