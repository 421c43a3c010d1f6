"""Labelled synthetic (generated) histories, one per failure mode, and the doctor's score on them."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.evaluation.doctor.diagnose import diagnose_history


SYNTHETIC_KINDS = ("healthy", "plateau", "overfitting", "divergence", "oscillation", "schedule_ended",
                   "saturated_monitor")


def _cosine_lr(t: np.ndarray, lr0: float = 1e-4, warmup: int = 5, total: int = 100) -> np.ndarray:
    """M4's schedule: linear warm-up from 1e-6 over ``warmup`` epochs, cosine to 1e-6 at ``total``."""
    return np.where(t < warmup, 1e-6 + (lr0 - 1e-6) * t / warmup,
                    1e-6 + 0.5 * (lr0 - 1e-6) * (1 + np.cos(np.pi * np.clip(t - warmup, 0, None) / (total - warmup))))


def make_synthetic_history(kind: str, epochs: int = 60, seed: int = 0) -> pd.DataFrame:
    """A labelled generated history (val_cos, train_loss, val_loss, lr) showing one failure mode.

    healthy: still improving at the end; plateau: cos saturates by epoch ~20 with the LR still high
    (val/train 1.4, like M4); overfitting: val_loss turns up while train_loss falls; divergence: the
    loss blows up to NaN; oscillation: the training loss alternates ±25 %; schedule_ended: a cosine
    schedule that reaches its floor at the last epoch while cos still rises (progress per epoch
    proportional to the LR); saturated_monitor: a holdout accuracy (``val_accuracy``) at 1.0 from epoch 3.
    """
    if kind not in SYNTHETIC_KINDS:
        raise WorkbookError(f"make_synthetic_history: kind={kind!r}; expected one of {', '.join(SYNTHETIC_KINDS)}")
    rng = np.random.default_rng(seed)
    t = np.arange(epochs, dtype=float)
    noise = lambda s: rng.normal(0, s, epochs)  # noqa: E731
    lr = _cosine_lr(t)
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
    elif kind == "schedule_ended":
        return _schedule_ended(t, epochs, noise)
    else:
        return _saturated(t, noise)
    return pd.DataFrame({"epoch": t.astype(int) + 1, "train_loss": train, "val_loss": val,
                         "val_cos": cos, "lr": lr})


def _schedule_ended(t: np.ndarray, epochs: int, noise) -> pd.DataFrame:
    """Warm-up 2, cosine to 1 % of the peak at the last epoch; progress per epoch follows the LR."""
    lr = _cosine_lr(t, 1e-3, 2, epochs - 1)
    prog = np.cumsum(lr / lr.max()) / 12.0
    cos = 0.9 - 0.8 * np.exp(-prog) + noise(0.0005)
    train = 0.1 + 0.5 * np.exp(-prog) + noise(0.001)
    return pd.DataFrame({"epoch": t.astype(int) + 1, "train_loss": train, "val_loss": train * 1.3 + noise(0.001),
                         "val_cos": cos, "lr": lr})


def _saturated(t: np.ndarray, noise) -> pd.DataFrame:
    """A holdout accuracy at its maximum 1.0 from epoch 3 on (0-based row 2)."""
    acc = np.minimum(1.0, 0.7 + 0.15 * t)
    train = 0.05 + 0.6 * np.exp(-t / 4) + np.abs(noise(0.002))
    return pd.DataFrame({"epoch": t.astype(int) + 1, "train_loss": train, "val_loss": 0.8 * train,
                         "val_accuracy": acc, "lr": _cosine_lr(t, 1e-3)})


def evaluate_synthetic_set(epochs: int = 60, seeds: Sequence[int] = (0, 1, 2)) -> pd.DataFrame:
    """Diagnose every labelled generated curve: the label found, whether it is right, and (for the
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
