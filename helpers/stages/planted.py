"""The planted-fault benchmark (notebook 07, ``python -m helpers bench doctor``): small training runs of the
workbook's own pair model (``siamese_mlp`` on digit pairs) broken on purpose with a known cause. For each
configuration and seed the doctor reads the run's history; does it name the planted cause, and does its
first remedy, run on the same seeds, raise the score beyond seed noise? A random remedy is run beside it.

The score is the test-split accuracy of the checkpoint the run's monitor selects (its best epoch; ties go to
the first): what a user would ship. A remedy that changes the monitor therefore counts when it picks a
better checkpoint. Everything is tiny (8x8 digits, MLPs of <= 256 units, <= 60 epochs) to run in a few
minutes on 2 CPU cores.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from helpers.core.errors import WorkbookError
from helpers.data.digits import load_digit_images, make_pairs
from helpers.evaluation.doctor import diagnose_history, Diagnosis, KINDS
from helpers.evaluation.doctor.seedtest import paired_seed_test
from helpers.models.registry import create_model


@dataclass(frozen=True)
class RunConfig:
    """One small training run. ``schedule``: "constant" or "cosine" (from lr down to eta_min over the epochs)."""
    hidden: tuple[int, ...] = (64, 64)
    feat_dim: int = 32
    dropout: float = 0.1
    weight_decay: float = 1e-4
    lr: float = 3e-3
    optimizer: str = "adam"
    schedule: str = "constant"
    eta_min: float = 0.0
    epochs: int = 30
    batch_size: int = 64
    train_pairs: int = 1500
    val_pairs: int = 600
    label_noise: float = 0.0
    monitor: str = "val_accuracy"

    def doctor_config(self) -> dict[str, Any]:
        """The run's settings under the doctor's names, so remedies are stated from them."""
        return {"lr": self.lr, "epochs": self.epochs, "dropout": self.dropout, "weight_decay": self.weight_decay,
                "batch_size": self.batch_size, "cosine_eta_min": self.eta_min, "warmup_epochs": 0}


@dataclass(frozen=True)
class Fault:
    name: str
    cause: str                      # the planted cause in words
    expected: tuple[str, ...]       # doctor kinds that name it ("still_improving": the run ended improving)
    config: RunConfig


# The validation split is large enough (1,500 pairs) that its own noise does not hide the planted faults.
BASE = RunConfig(val_pairs=1500, batch_size=128)

FAULTS = (
    Fault("lr_too_high", "learning rate far too high (SGD with momentum, lr 3)", ("divergence",),
          replace(BASE, optimizer="sgd", lr=3.0)),
    Fault("schedule_too_short", "cosine schedule at lr 3e-4 decays to 0 in 16 epochs", ("schedule_ended",),
          replace(BASE, lr=3e-4, schedule="cosine", epochs=16)),
    Fault("too_little_capacity", "a 2-unit encoder (one layer, feat_dim 2)", ("underfitting",),
          replace(BASE, hidden=(2,), feat_dim=2, dropout=0.0, epochs=40)),
    Fault("little_data_no_regularisation", "150 training pairs, wide model, no dropout or weight decay",
          ("overfitting",), replace(BASE, hidden=(256, 256), feat_dim=64, dropout=0.0, weight_decay=0.0,
                                    train_pairs=150, epochs=40)),
    Fault("saturating_monitor", "a 16-pair validation split: its accuracy sits at 1.0", ("saturated_monitor",),
          replace(BASE, val_pairs=16)),
    Fault("label_noise", "35 % of training labels flipped, wide model, no regularisation", ("overfitting",),
          replace(BASE, hidden=(256, 256), feat_dim=64, dropout=0.0, weight_decay=0.0, label_noise=0.35,
                  epochs=40)),
    Fault("noisy_validation", "a 40-pair validation split: its accuracy moves by chance from epoch to epoch",
          ("noise",), replace(BASE, val_pairs=40)),
    Fault("stopped_too_early", "10 epochs at a small constant rate: still improving when it stops",
          ("still_improving",), replace(BASE, lr=2e-4, epochs=10)),
)


def select_faults(names: list[str] | tuple[str, ...]) -> tuple[Fault, ...]:
    """The faults named (all when none is); an unknown name is an error naming the known ones."""
    known = {f.name: f for f in FAULTS}
    bad = [n for n in names if n not in known]
    if bad:
        raise WorkbookError(f"planted_faults: unknown {bad}; expected names from {sorted(known)}")
    return tuple(f for f in FAULTS if not names or f.name in names)


# ------------------------------------------------------------------------------------------- data
@dataclass
class Split:
    xa: torch.Tensor
    xb: torch.Tensor
    y: torch.Tensor


def make_splits(cfg: RunConfig, seed: int) -> dict[str, Split]:
    """Digit pairs split by source image (train 40 %, val 20 %, test 40 % of the 1,797 images); the training
    labels flipped at ``cfg.label_noise``."""
    images, labels = load_digit_images()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    cut = (int(0.4 * len(perm)), int(0.6 * len(perm)))
    ids = {"train": perm[:cut[0]], "val": perm[cut[0]:cut[1]], "test": perm[cut[1]:]}
    n = {"train": cfg.train_pairs, "val": cfg.val_pairs, "test": 1000}
    flat = images.reshape(len(images), -1)
    out = {}
    for split, pool in ids.items():
        ia, ib, y = make_pairs(pool, labels, n[split], 0.5, rng)
        if split == "train" and cfg.label_noise:
            flip = rng.random(len(y)) < cfg.label_noise
            y = np.where(flip, 1 - y, y)
        out[split] = Split(torch.from_numpy(flat[ia]), torch.from_numpy(flat[ib]), torch.from_numpy(y).float())
    return out


# --------------------------------------------------------------------------------------- training
def _optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr_at(cfg: RunConfig, epoch: int) -> float:
    if cfg.schedule == "cosine":
        return cfg.eta_min + 0.5 * (cfg.lr - cfg.eta_min) * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


@torch.no_grad()
def _evaluate(model: nn.Module, s: Split) -> tuple[float, float]:
    model.eval()
    logits = model(s.xa, s.xb)
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, s.y))
    return loss, float(((logits > 0).float() == s.y).float().mean())


def train_run(cfg: RunConfig, seed: int) -> pd.DataFrame:
    """Train one configuration; the per-epoch history (train/val loss, val accuracy, lr) plus the test
    accuracy of every epoch (not shown to the doctor; used to score the checkpoint a monitor picks)."""
    torch.manual_seed(seed)
    data = make_splits(cfg, seed)
    model = create_model("siamese_mlp", in_features=64, hidden=list(cfg.hidden), feat_dim=cfg.feat_dim,
                         dropout=cfg.dropout)
    opt = _optimizer(model, cfg)
    tr = data["train"]
    g = torch.Generator().manual_seed(seed)
    rows = []
    for epoch in range(cfg.epochs):
        lr = _lr_at(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        order = torch.randperm(len(tr.y), generator=g)
        total, seen = 0.0, 0
        for i in range(0, len(order), cfg.batch_size):
            b = order[i:i + cfg.batch_size]
            if len(b) < 2:                       # BatchNorm needs two rows
                continue
            loss = nn.functional.binary_cross_entropy_with_logits(model(tr.xa[b], tr.xb[b]), tr.y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(b), seen + len(b)
        vl, va = _evaluate(model, data["val"])
        _, ta = _evaluate(model, data["test"])
        rows.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_loss": vl, "val_accuracy": va,
                     "lr": lr, "test_accuracy": ta})
    return pd.DataFrame(rows)


def selected_score(history: pd.DataFrame, monitor: str) -> float:
    """Test accuracy of the epoch the monitor selects (max accuracy / min loss, first of ties; an epoch with
    a NaN monitor is never selected; all NaN -> the first epoch)."""
    m = history[monitor].to_numpy(dtype=float)
    if not np.isfinite(m).any():
        return float(history["test_accuracy"].iloc[0])
    i = int(np.nanargmin(m) if "loss" in monitor else np.nanargmax(m))
    return float(history["test_accuracy"].iloc[i])


# ---------------------------------------------------------------------------------------- remedies
def apply_remedy(cfg: RunConfig, name: str, params: dict[str, Any]) -> RunConfig | None:
    """The configuration after a remedy (its ``params`` where they name this run's settings); None when the
    remedy cannot be run here (advice on judging, on data we do not have)."""
    keys = {"lr": "lr", "epochs": "epochs", "dropout": "dropout", "weight_decay": "weight_decay",
            "batch_size": "batch_size", "cosine_eta_min": "eta_min"}
    change = {keys[k]: type(getattr(cfg, keys[k]))(v) for k, v in params.items() if k in keys}
    if name == "capacity":                  # M4 plan B as factors: width and depth x1.5
        wide = [int(math.ceil(h * 1.5)) for h in cfg.hidden]
        wide += [wide[-1]] * (int(math.ceil(len(wide) * 1.5)) - len(wide))
        change = {"hidden": tuple(wide), "feat_dim": int(math.ceil(cfg.feat_dim * 1.5)),
                  "dropout": max(cfg.dropout, float(params.get("dropout", 0)))}
    elif name == "monitor_loss":
        change = {"monitor": "val_loss"}
    elif name == "more_data":
        change = {"train_pairs": int(cfg.train_pairs * float(params.get("train_data_factor", 2.0)))}
    elif name == "judge_against_noise":
        change = {"val_pairs": int(cfg.val_pairs * float(params.get("validation_size_factor", 4.0)))}
    elif name in ("longer_schedule", "longer_cosine") and cfg.schedule == "constant":
        change.pop("eta_min", None)
    if not change:
        return None
    return replace(cfg, **change)


# Every remedy the doctor can give, as the random baseline draws them (with the params M4's rules give).
def remedy_catalogue(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    return {"lower_lr": {"lr": cfg.lr / 10}, "longer_schedule": {"epochs": int(math.ceil(cfg.epochs * 1.5)),
                                                                 "cosine_eta_min": max(cfg.eta_min, cfg.lr / 10)},
            "capacity": {"dropout": 0.2}, "regularise": {"dropout": max(0.2, cfg.dropout + 0.05),
                                                         "weight_decay": max(2 * cfg.weight_decay, 1e-4)},
            "monitor_loss": {}, "judge_against_noise": {"validation_size_factor": 4.0}, "calmer_steps": {"lr": cfg.lr / 3, "batch_size": cfg.batch_size * 2},
            "more_epochs": {"epochs": int(math.ceil(cfg.epochs * 1.5))}, "more_data": {"train_data_factor": 2.0},
            "less_regularisation": {"dropout": max(0.0, cfg.dropout - 0.05), "weight_decay": cfg.weight_decay / 2}}


def first_remedy(d: Diagnosis, cfg: RunConfig) -> tuple[str, RunConfig | None]:
    """The doctor's first recommendation and the configuration it gives (None: it cannot be run here, e.g.
    "judge against the noise", which then counts as no improvement)."""
    if not d.recommendations:
        return "none", None
    r = d.recommendations[0]
    return r.name, apply_remedy(cfg, r.name, r.params)


def _kinds(d: Diagnosis) -> set[str]:
    return set(d.kinds) | ({"still_improving"} if d.summary.get("still_improving") else set())


def run_fault(fault: Fault, seeds: list[int], rng_seed: int = 0) -> dict[str, Any]:
    """One configuration over seeds: the doctor's verdict, its first remedy and a random remedy, each run on
    the same seeds, scored against the broken run by a paired test over seeds."""
    cfg = fault.config
    catalogue = remedy_catalogue(cfg)
    rng = np.random.default_rng(rng_seed)
    per_seed = []
    for seed in seeds:
        h = train_run(cfg, seed)
        d = diagnose_history(h.drop(columns=["test_accuracy"]), config=cfg.doctor_config())
        name, fixed = first_remedy(d, cfg)
        rand = str(rng.choice(sorted(catalogue)))
        rand_cfg = apply_remedy(cfg, rand, catalogue[rand])
        base = selected_score(h, cfg.monitor)
        run = lambda c: base if c is None else selected_score(train_run(c, seed), c.monitor)  # noqa: E731
        per_seed.append({"seed": seed, "kinds": sorted(_kinds(d)), "named": bool(_kinds(d) & set(fault.expected)),
                         "remedy": name, "broken": base, "remedied": run(fixed), "random_remedy": rand,
                         "random": run(rand_cfg)})
    df = pd.DataFrame(per_seed)
    doc = paired_seed_test(df["broken"], df["remedied"])
    rnd = paired_seed_test(df["broken"], df["random"])
    return {"fault": fault.name, "cause": fault.cause, "expected": "/".join(fault.expected),
            "named_seeds": int(df["named"].sum()), "seeds": len(seeds), "named": bool(df["named"].mean() > 0.5),
            "doctor_kinds": _mode(df["kinds"].map(", ".join)), "first_remedy": _mode(df["remedy"]),
            "broken_score": float(df["broken"].mean()), "remedy_gain": doc["gain"], "remedy_gain_se": doc["gain_se"],
            "remedy_p": doc["p_value"], "remedy_helped": doc["helped"], "random_remedies": ", ".join(df["random_remedy"]),
            "random_gain": rnd["gain"], "random_p": rnd["p_value"], "random_helped": rnd["helped"],
            "random_named": _random_named(fault, rng, len(seeds))}


def _mode(s: pd.Series) -> str:
    return str(s.value_counts().index[0])


def _random_named(fault: Fault, rng: np.random.Generator, n: int) -> bool:
    """The naming baseline: a kind drawn at random per seed from the doctor's kinds; named on a majority."""
    pool = [k for k in KINDS if k != "too_short"] + ["still_improving"]
    hits = sum(str(rng.choice(pool)) in fault.expected for _ in range(n))
    return hits > n / 2


def run_planted_faults(seeds: int = 5, faults: tuple[Fault, ...] = FAULTS,
                       log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """The whole benchmark: one row per fault (see `run_fault`), ``attrs`` holding the totals and the time."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = []
    for i, f in enumerate(faults):
        rows.append(run_fault(f, list(range(seeds)), rng_seed=1000 + i))
        if log:
            r = rows[-1]
            log(f"{f.name}: named {r['named_seeds']}/{r['seeds']} ({r['doctor_kinds']}); first remedy "
                f"{r['first_remedy']} gain {r['remedy_gain']:+.3f} (p {r['remedy_p']:.3g}); random "
                f"{r['random_gain']:+.3f} (p {r['random_p']:.3g})")
    table = pd.DataFrame(rows)
    table.attrs.update(seconds=time.perf_counter() - t0, seeds=seeds, faults=len(faults),
                       named=int(table["named"].sum()), helped=int(table["remedy_helped"].sum()),
                       random_named=int(table["random_named"].sum()), random_helped=int(table["random_helped"].sum()))
    return table
