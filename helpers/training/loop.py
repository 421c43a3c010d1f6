"""The one training loop every notebook uses.

```python
cfg = TrainConfig(epochs=20, batch_size=64, lr=1e-3, scheduler="cosine", seed=42)
result = train_model(model, task, train=(xa, xb, y), val=(xa_v, xb_v, y_v), config=cfg,
                     out_dir=folder_or_None, device="cpu", on_epoch_end=None)
probs = predict(model, task, (xa_t, xb_t), device="cpu")
```

Data are tuples of tensors held in memory (numpy arrays are accepted); the last one is the target,
the others are the model's positional inputs, of any shapes. uint8 inputs are scaled to [0, 1]
float32. Batches are taken by index, so there is no per-sample Python in the hot loop.

Determinism and resuming: each epoch's batch order, augmentation and dropout are drawn from RNGs
seeded by (seed, epoch), and ``last.pt`` holds model, optimizer, scheduler, scaler, early-stopping
state, best values and history. A run interrupted mid-way and started again with the same model,
data and config resumes from ``last.pt`` and ends with the same metrics as an uninterrupted run
(CPU). A changed config, model or data starts afresh (the old ``last.pt`` is overwritten).

DDP-ready: with ``torch.distributed`` initialised, each rank trains on its own shard of every
epoch's permutation (`make_rank_indices`), only rank 0 logs and writes files, and the model may be
wrapped in ``DistributedDataParallel`` (checkpoints store the unwrapped module's state).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from helpers.core.device import resolve_device
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_torch_save, atomic_write_json
from helpers.training.augment import augment_images
from helpers.training.batching import (_as_tensors, _batch_bounds, _dist, _epoch_seed, _fingerprint,
                                       _model_signature, _move, _unwrap, make_rank_indices)
from helpers.training.checkpoints import _state
from helpers.training.config import TrainConfig
from helpers.training.optim import _make_optimizer, _make_scheduler
from helpers.training.tasks import with_label_smoothing


# Metrics where a smaller value is better (used to pick "best" and for monitor="...").
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "nll")


@dataclass
class TrainResult:
    history: list[dict]              # one row per epoch (also history.json)
    best: dict[str, dict]            # metric -> {"value", "epoch"}
    epochs_run: int
    stopped_early: bool
    resumed_from: int                # epochs already done when this call started (0 = fresh)
    out_dir: Path | None
    checkpoints: dict[str, str]      # name -> path of the checkpoints written
    config: dict
    model: nn.Module | None = None

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def _amp_setup(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """(enabled, dtype, use_scaler)."""
    if not cfg.amp:
        return False, torch.float32, False
    if cfg.amp_dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    else:
        dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
    return True, dtype, dtype == torch.float16


def _cat(outputs: list) -> Any:
    """Concatenate per-batch model outputs (tensor, tuple/list or dict of tensors) along dim 0."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat([o.float() for o in outputs])
    if isinstance(first, dict):
        return {k: _cat([o[k] for o in outputs]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_cat([o[i] for o in outputs]) for i in range(len(first)))
    raise WorkbookError(f"model output of type {type(first).__name__}; expected tensor, tuple or dict")


@torch.inference_mode()
def _forward_all(model: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device,
                 batch_size: int, amp: tuple[bool, torch.dtype, bool]) -> Any:
    """Model outputs for all rows (float32, on ``device``), in row order."""
    n = inputs[0].shape[0]
    outs = []
    for s in range(0, n, batch_size):
        batch = [t[s:s + batch_size].to(device, non_blocking=True) for t in inputs]
        with torch.autocast(device.type, dtype=amp[1], enabled=amp[0]):
            outs.append(model(*batch))
    return _cat(outs)


def _primary(metrics: dict, task) -> tuple[str | None, bool]:
    name = metrics.get("primary", getattr(task, "primary", None))
    if not isinstance(name, str):
        name = "primary" if "primary" in metrics else None
    return name, _greater_is_better(name or "", task)


def _greater_is_better(name: str, task=None) -> bool:
    if task is not None and name == getattr(task, "primary", None) and hasattr(task, "greater_is_better"):
        return bool(task.greater_is_better)
    return not any(name.endswith(s) for s in _LOWER_IS_BETTER)


def _numeric(d: dict) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def train_model(model: nn.Module, task, train: Sequence, val: Sequence, config: TrainConfig | None = None,
                out_dir: str | Path | None = None, device: str | torch.device = "cpu",
                on_epoch_end: Callable[[dict], Any] | None = None) -> TrainResult:
    """Train ``model`` on ``train`` for ``task``, validating on ``val`` every epoch.

    Args:
        model: called as ``model(*inputs)``; may be DDP-wrapped.
        task: implements ``loss``, ``predict``, ``metrics`` (see helpers.training.tasks).
        train, val: tuples (inputs..., target) of tensors/arrays with equal first dimension.
        config: TrainConfig (defaults when None).
        out_dir: where history.json and checkpoints go (None = nothing written, no resume).
        device: "cpu", "cuda", "auto" or a torch.device.
        on_epoch_end: called with each history row; returning True stops training.
    Returns:
        TrainResult (history, best values, checkpoints); the model holds the best-``monitor``
        weights when ``config.restore_best`` (else the final ones).
    """
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    rank, world = _dist()
    main = rank == 0
    out = Path(out_dir) if out_dir is not None else None
    train_t = _as_tensors(train, "train")
    val_t = _as_tensors(val, "val")
    if len(train_t) != len(val_t) or len(train_t) < 2:
        raise WorkbookError(f"train has {len(train_t)} arrays and val {len(val_t)}; expected the same "
                            "number, at least (input, target)")
    for i, (a, b) in enumerate(zip(train_t[:-1], val_t[:-1])):
        if a.shape[1:] != b.shape[1:]:
            raise WorkbookError(f"input {i}: train rows are {tuple(a.shape[1:])}, val rows "
                                f"{tuple(b.shape[1:])}; expected the same shape")
    old_threads = torch.get_num_threads()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(model, task, train_t, val_t, cfg, out, dev, rank, world, main, on_epoch_end)
    finally:
        if cfg.num_threads > 0:
            torch.set_num_threads(old_threads)


def _train(model, task, train_t, val_t, cfg, out, dev, rank, world, main, on_epoch_end) -> TrainResult:
    model.to(dev)
    n_train = train_t[0].shape[0]
    # Keep data on the device once (small pair data sets); batches are index_select'ed there.
    train_d = _move(train_t, dev)
    val_inputs, val_y = val_t[:-1], val_t[-1].to(dev)
    idx_per_epoch = make_rank_indices(n_train, 0, cfg.seed, rank, world).numel()
    bounds = _batch_bounds(idx_per_epoch, cfg.batch_size)
    n_batches = len(bounds)
    steps_per_epoch = math.ceil(n_batches / cfg.grad_accum_steps)
    eval_bs = cfg.eval_batch_size or 4 * cfg.batch_size
    amp = _amp_setup(cfg, dev)
    opt = _make_optimizer(model, cfg)
    sched = _make_scheduler(opt, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type) if amp[2] else None
    train_task = with_label_smoothing(task, cfg.label_smoothing)
    image_inputs = [i for i, t in enumerate(train_t[:-1]) if t.dim() == 4 and t.is_floating_point()]

    fingerprint = {"config": {k: v for k, v in cfg.to_dict().items() if k not in ("num_threads", "log_every")},
                   "model": _model_signature(model), "data": _fingerprint(train_t + val_t), "world": world}
    history: list[dict] = []
    best: dict[str, dict] = {}
    best_state = None
    wait, start_epoch, stopped = 0, 0, False
    checkpoints: dict[str, str] = {}

    def log(msg: str) -> None:
        if main and cfg.log_every:
            print(msg, flush=True)

    last_path = out / "last.pt" if out is not None else None
    if last_path is not None and cfg.resume and last_path.is_file():
        ck = torch.load(last_path, map_location="cpu", weights_only=False)
        if ck.get("fingerprint") == fingerprint:
            _unwrap(model).load_state_dict(ck["model_state_dict"])
            opt.load_state_dict(ck["optimizer_state_dict"])
            if sched is not None and ck["scheduler_state_dict"] is not None:
                sched.load_state_dict(ck["scheduler_state_dict"])
            if scaler is not None and ck["scaler_state_dict"] is not None:
                scaler.load_state_dict(ck["scaler_state_dict"])
            history, best, best_state = ck["history"], ck["best"], ck["best_state"]
            wait, start_epoch, stopped = ck["wait"], ck["epoch"], ck["stopped"]
            checkpoints = ck.get("checkpoints", {})
            log(f"resumed from {last_path} after epoch {start_epoch}")
        else:
            log(f"{last_path} belongs to a different run (config, model or data changed): starting afresh")
    resumed_from = start_epoch

    # CPU RNG fork: the loop reseeds per epoch without disturbing the caller's RNG streams.
    cuda_dev = [dev.index or 0] if dev.type == "cuda" else []
    epoch = start_epoch
    with torch.random.fork_rng(devices=cuda_dev):
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            if stopped:
                break
            torch.manual_seed(_epoch_seed(cfg.seed, epoch, salt=1))  # dropout etc.
            aug_gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, salt=2))
            idx = make_rank_indices(n_train, epoch, cfg.seed, rank, world).to(dev)
            model.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=dev)
            gn_sum = torch.zeros((), device=dev)
            n_steps = 0
            opt.zero_grad(set_to_none=True)
            for b in range(n_batches):
                bi = idx[bounds[b][0]:bounds[b][1]]
                batch = [t.index_select(0, bi) for t in train_d]
                if cfg.augment:
                    for i in image_inputs:
                        batch[i] = augment_images(batch[i], aug_gen, cfg.aug_rotation, cfg.aug_translate,
                                                  cfg.aug_crop_scale)
                with torch.autocast(dev.type, dtype=amp[1], enabled=amp[0]):
                    output = model(*batch[:-1])
                    loss = train_task.loss(output, batch[-1])
                # Accumulated micro-batches: scale so the step sees the mean loss.
                acc_n = min(cfg.grad_accum_steps, n_batches - (b // cfg.grad_accum_steps) * cfg.grad_accum_steps)
                (scaler.scale(loss / acc_n) if scaler else loss / acc_n).backward()
                loss_sum += loss.detach() * bi.numel()
                if (b + 1) % cfg.grad_accum_steps == 0 or b + 1 == n_batches:
                    if scaler:
                        scaler.unscale_(opt)
                    gn = nn.utils.clip_grad_norm_(
                        [p for g in opt.param_groups for p in g["params"]],
                        cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"), foreach=True)
                    gn_sum += gn.detach().float().nan_to_num(0.0)
                    if scaler:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    if sched is not None and cfg.scheduler == "cosine":
                        sched.step()
                    n_steps += 1
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            train_time = time.perf_counter() - t0
            train_loss = float(loss_sum) / idx.numel()

            model.eval()
            val_out = _forward_all(model, val_inputs, dev, eval_bs, amp)
            val_loss = float(task.loss(val_out, val_y))
            raw_metrics = task.metrics(val_out, val_y)
            # "primary" names the main metric (a string); a numeric "primary" is kept as a metric.
            metrics = _numeric({k: v for k, v in raw_metrics.items() if not (k == "primary" and isinstance(v, str))})
            primary, primary_up = _primary(raw_metrics, task)
            if sched is not None and cfg.scheduler == "plateau":
                sched.step(val_loss)
            epoch_time = time.perf_counter() - t0
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **metrics,
                   "lr": float(opt.param_groups[-1]["lr"]), "grad_norm": float(gn_sum) / max(1, n_steps),
                   "epoch_time_s": epoch_time, "samples_per_s": idx.numel() * world / max(train_time, 1e-9)}
            history.append(row)

            # Best values: loss (lower), accuracy/f1 and the primary metric (direction from the task).
            tracked = {"loss": ("val_loss", False)}
            for name in ("accuracy", "f1"):
                if name in metrics:
                    tracked[name] = (name, True)
            if primary and primary in metrics and primary not in tracked:
                tracked[primary] = (primary, primary_up)
            improved = []
            for key, (col, up) in tracked.items():
                v = row[col]
                old = best.get(key)
                if math.isfinite(v) and (old is None or (v > old["value"] if up else v < old["value"])):
                    best[key] = {"value": v, "epoch": epoch}
                    improved.append(key)

            # Early stopping on the monitored column (absolute min_delta, acts at wait >= patience).
            mon_col = "val_loss" if cfg.monitor in ("val_loss", "loss") else cfg.monitor.removeprefix("val_")
            if mon_col not in row:
                raise WorkbookError(f"TrainConfig.monitor={cfg.monitor!r}: not among the epoch's values "
                                    f"{sorted(row)}")
            mon_up = mon_col != "val_loss" and _greater_is_better(mon_col, task)
            mv = row[mon_col]
            mbest = best.get("_monitor")
            if not math.isfinite(mv):
                stopped = True
                log(f"epoch {epoch}: {mon_col} is not finite; stopping")
            elif mbest is None or (mv > mbest["value"] + cfg.min_delta if mon_up else mv < mbest["value"] - cfg.min_delta):
                best["_monitor"] = {"value": mv, "epoch": epoch, "name": mon_col}
                wait = 0
                if cfg.restore_best:
                    best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
            else:
                wait += 1
                if cfg.patience and wait >= cfg.patience:
                    stopped = True
                    log(f"early stop at epoch {epoch}: {mon_col} no better than "
                        f"{mbest['value']:.4f} (epoch {mbest['epoch']}) for {wait} epochs")
            if on_epoch_end is not None and on_epoch_end(dict(row)) is True:
                stopped = True
                log(f"stopped by on_epoch_end at epoch {epoch}")

            if main and out is not None:
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_json(out / "history.json", history)
                if cfg.checkpoint:
                    for key in improved:
                        name = f"best_{'loss' if key == 'loss' else key}.pt"
                        atomic_torch_save(_state(model, opt, sched, scaler, epoch, best, cfg), out / name)
                        checkpoints[f"best_{key}"] = str(out / name)
                    atomic_torch_save(_state(model, opt, sched, scaler, epoch, best, cfg, {
                        "history": history, "best_state": best_state, "wait": wait, "stopped": stopped,
                        "fingerprint": fingerprint, "checkpoints": checkpoints}), out / "last.pt")
            if main and cfg.log_every and (epoch % cfg.log_every == 0 or stopped or epoch == cfg.epochs):
                shown = " ".join(f"{k}={row[k]:.4f}" for k in ("accuracy", "f1") if k in row)
                if primary and primary in row and primary not in ("accuracy", "f1"):
                    shown += f" {primary}={row[primary]:.4f}"
                log(f"epoch {epoch:3d}/{cfg.epochs} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
                    f"{shown} lr={row['lr']:.2e} {row['samples_per_s']:.0f} samples/s")

    epochs_run = len(history)
    if main and out is not None and cfg.checkpoint:
        atomic_torch_save(_state(model, opt, sched, scaler, epochs_run, best, cfg, {"history": history}),
                          out / "final.pt")
        checkpoints["final"] = str(out / "final.pt")
    if cfg.restore_best and best_state is not None:
        _unwrap(model).load_state_dict(best_state)
    public_best = {k: v for k, v in best.items() if k != "_monitor"}
    if "_monitor" in best:
        public_best["monitor"] = dict(best["_monitor"])
    return TrainResult(history=history, best=public_best, epochs_run=epochs_run,
                       stopped_early=stopped and epochs_run < cfg.epochs, resumed_from=resumed_from,
                       out_dir=out, checkpoints=checkpoints, config=cfg.to_dict(), model=model)


def predict(model: nn.Module, task, inputs: Sequence, device: str | torch.device = "cpu",
            batch_size: int = 512, amp: bool = False) -> np.ndarray:
    """``task.predict`` applied to the model's outputs on ``inputs`` (a tuple of arrays), as numpy."""
    dev = resolve_device(device)
    ins = _as_tensors(tuple(inputs), "inputs")
    model.to(dev).eval()
    out = _forward_all(model, ins, dev, batch_size, _amp_setup(TrainConfig(amp=amp), dev))
    p = task.predict(out)
    if isinstance(p, dict):
        return {k: v.detach().cpu().numpy() for k, v in p.items()}
    return p.detach().float().cpu().numpy()


def evaluate_model(model: nn.Module, task, data: Sequence, device: str | torch.device = "cpu",
                   batch_size: int = 512) -> dict:
    """Loss and ``task.metrics`` on a tuple (inputs..., target)."""
    dev = resolve_device(device)
    t = _as_tensors(data, "data")
    model.to(dev).eval()
    out = _forward_all(model, t[:-1], dev, batch_size, (False, torch.float32, False))
    y = t[-1].to(dev)
    return {"loss": float(task.loss(out, y)), **_numeric({k: v for k, v in task.metrics(out, y).items()
                                                          if k != "primary"})}
