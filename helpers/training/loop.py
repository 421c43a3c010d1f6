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

Steps, top to bottom: `_setup`, `_resume`, then `_fit` runs `_train_one_epoch` and `_validate` per epoch
and hands the row to the callbacks of `helpers.training.callbacks` (best values, early stopping,
history.json, TensorBoard scalars, checkpoints), each of which saves its own state into ``last.pt``.
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
from helpers.training.augment import augment_images
from helpers.training.batching import (_as_tensors, _batch_bounds, _dist, _epoch_seed, _fingerprint,
                                       _model_signature, _move, _unwrap, make_rank_indices)
from helpers.training.callbacks import (_greater_is_better, BestTracker, Checkpointer, EarlyStopping,
                                        HistoryWriter, TensorBoardWriter)
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.optim import _make_optimizer, _make_scheduler
from helpers.training.tasks import with_label_smoothing

# TrainConfig fields that change what is printed or written, never a number: left out of the
# fingerprint, so a last.pt resumes whatever their values (and one written before a field existed).
_NOT_FINGERPRINTED = ("num_threads", "log_every", "tensorboard")
TRAIN_LOG = "train.log"   # the per-epoch lines of a run with an output folder


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
        out_dir: where history.json, checkpoints and TensorBoard event files go (None = nothing
            written, no resume); watch it with ``tensorboard --logdir <out_dir or a folder above>``.
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


@dataclass
class _Run:
    """What `_setup` prepares once per call: model, data on the device, optimiser, scheduler, scaler."""
    model: nn.Module
    task: Any
    train_task: Any                  # ``task`` with cfg.label_smoothing (training loss only)
    cfg: TrainConfig
    dev: torch.device
    rank: int
    world: int
    main: bool                       # rank 0: the only rank that logs and writes files
    out: Path | None
    n_train: int
    train_d: tuple[torch.Tensor, ...]   # (inputs..., target), all rows, on dev
    val_inputs: tuple[torch.Tensor, ...]  # as given; _forward_all moves each batch to dev
    val_y: torch.Tensor              # on dev
    bounds: list[tuple[int, int]]    # (start, end) of each batch in this rank's index list
    eval_bs: int
    amp: tuple[bool, torch.dtype, bool]
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler | None
    image_inputs: list[int]          # positions of 4-D float inputs [N, C, H, W] (augmented)
    fingerprint: dict                # identity of the run; last.pt is resumed only when it matches

    def log(self, msg: str) -> None:
        """One progress line. With an output folder it goes to ``out/train.log`` (appended, so a resumed
        run's lines follow the first ones) and not to stdout: printed, it would land in whatever notebook
        cell is running, far from the section it belongs to; the report links the file instead."""
        if not (self.main and self.cfg.log_every):
            return
        if self.out is None:
            print(msg, flush=True)
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / TRAIN_LOG, "a", encoding="utf-8") as f:
            f.write(msg + "\n")


@dataclass
class _Callbacks:
    tracker: BestTracker
    stopping: EarlyStopping
    history: HistoryWriter
    checkpointer: Checkpointer
    tensorboard: TensorBoardWriter

    @classmethod
    def create(cls, run: _Run) -> "_Callbacks":
        tracker = BestTracker()
        return cls(tracker, EarlyStopping(run.cfg, run.task, tracker, run.model),
                   HistoryWriter(run.out, run.main),
                   Checkpointer(run.out, run.main, run.model, run.opt, run.sched, run.scaler, run.cfg),
                   TensorBoardWriter(run.out, run.main and run.cfg.tensorboard))

    def load_state_dict(self, ck: dict) -> None:
        for cb in (self.tracker, self.stopping, self.history, self.checkpointer):
            cb.load_state_dict(ck)

    def resume_state(self, stopped: bool, fingerprint: dict) -> dict:
        """last.pt's extra keys, in their order: history, best_state, wait, stopped, fingerprint."""
        return {**self.history.state_dict(), **self.stopping.state_dict(), "stopped": stopped,
                "fingerprint": fingerprint}


@dataclass
class _EpochStats:
    loss: float                      # mean training loss over this rank's rows
    grad_norm: float                 # mean pre-clipping gradient norm over optimiser steps
    steps: int                       # optimiser steps
    seconds: float                   # wall time of the batch loop
    samples: int                     # rows this rank trained on
    started: float                   # perf_counter at the start of the batch loop


@dataclass
class _ValStats:
    loss: float
    metrics: dict[str, float]        # the task's numeric metrics
    primary: str | None              # name of the task's main metric
    primary_up: bool                 # greater is better for ``primary``


def _train(model, task, train_t, val_t, cfg, out, dev, rank, world, main, on_epoch_end) -> TrainResult:
    run = _setup(model, task, train_t, val_t, cfg, out, dev, rank, world, main)
    cbs = _Callbacks.create(run)
    try:
        start_epoch, stopped = _resume(run, cbs)
        stopped = _fit(run, cbs, start_epoch, stopped, on_epoch_end)
    finally:
        # Also on an exception (e.g. from on_epoch_end): what was written stays readable.
        cbs.tensorboard.close()
    epochs_run = len(cbs.history.rows)
    cbs.checkpointer.save_final(epochs_run, cbs.tracker.best, cbs.history.rows)
    cbs.stopping.restore_best()
    return TrainResult(history=cbs.history.rows, best=cbs.tracker.public(), epochs_run=epochs_run,
                       stopped_early=stopped and epochs_run < cfg.epochs, resumed_from=start_epoch,
                       out_dir=out, checkpoints=cbs.checkpointer.paths, config=cfg.to_dict(), model=model)


def _setup(model, task, train_t, val_t, cfg, out, dev, rank, world, main) -> _Run:
    """Model and data on ``dev``, optimiser, scheduler, scaler and the run's fingerprint."""
    model.to(dev)
    n_train = train_t[0].shape[0]
    # Keep data on the device once (small pair data sets); batches are index_select'ed there.
    train_d = _move(train_t, dev)
    val_y = val_t[-1].to(dev)
    idx_per_epoch = make_rank_indices(n_train, 0, cfg.seed, rank, world).numel()
    bounds = _batch_bounds(idx_per_epoch, cfg.batch_size)
    steps_per_epoch = math.ceil(len(bounds) / cfg.grad_accum_steps)
    amp = _amp_setup(cfg, dev)
    opt = _make_optimizer(model, cfg)
    sched = _make_scheduler(opt, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler(dev.type) if amp[2] else None
    fingerprint = {"config": {k: v for k, v in cfg.to_dict().items() if k not in _NOT_FINGERPRINTED},
                   "model": _model_signature(model), "data": _fingerprint(train_t + val_t), "world": world}
    return _Run(model=model, task=task, train_task=with_label_smoothing(task, cfg.label_smoothing), cfg=cfg,
                dev=dev, rank=rank, world=world, main=main, out=out, n_train=n_train, train_d=train_d,
                val_inputs=val_t[:-1], val_y=val_y, bounds=bounds, eval_bs=cfg.eval_batch_size or 4 * cfg.batch_size,
                amp=amp, opt=opt, sched=sched, scaler=scaler,
                image_inputs=[i for i, t in enumerate(train_t[:-1]) if t.dim() == 4 and t.is_floating_point()],
                fingerprint=fingerprint)


def _resume(run: _Run, cbs: _Callbacks) -> tuple[int, bool]:
    """(epochs already done, stopped) from ``out/last.pt`` when it belongs to this run, else (0, False)."""
    last_path = run.out / "last.pt" if run.out is not None else None
    if last_path is None or not run.cfg.resume or not last_path.is_file():
        return 0, False
    ck = read_checkpoint_file(last_path)
    if ck.get("fingerprint") != run.fingerprint:
        run.log(f"{last_path} belongs to a different run (config, model or data changed): starting afresh")
        return 0, False
    _unwrap(run.model).load_state_dict(ck["model_state_dict"])
    run.opt.load_state_dict(ck["optimizer_state_dict"])
    if run.sched is not None and ck["scheduler_state_dict"] is not None:
        run.sched.load_state_dict(ck["scheduler_state_dict"])
    if run.scaler is not None and ck["scaler_state_dict"] is not None:
        run.scaler.load_state_dict(ck["scaler_state_dict"])
    cbs.load_state_dict(ck)
    run.log(f"resumed from {last_path} after epoch {ck['epoch']}")
    return ck["epoch"], ck["stopped"]


def _fit(run: _Run, cbs: _Callbacks, start_epoch: int, stopped: bool,
         on_epoch_end: Callable[[dict], Any] | None) -> bool:
    """Epochs ``start_epoch + 1 .. cfg.epochs`` until stopped; returns whether it stopped."""
    cfg = run.cfg
    # CPU RNG fork: the loop reseeds per epoch without disturbing the caller's RNG streams.
    cuda_dev = [run.dev.index or 0] if run.dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_dev):
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            if stopped:
                break
            stats = _train_one_epoch(run, epoch)
            val = _validate(run)
            if run.sched is not None and cfg.scheduler == "plateau":
                run.sched.step(val.loss)
            row = _history_row(float(run.opt.param_groups[-1]["lr"]), run.world, epoch, stats, val)
            cbs.history.append(row)
            improved = cbs.tracker.update(row, val.metrics, val.primary, val.primary_up)
            reason = cbs.stopping.update(row)
            if reason is not None:
                stopped = True
                run.log(reason)
            if on_epoch_end is not None and on_epoch_end(dict(row)) is True:
                stopped = True
                run.log(f"stopped by on_epoch_end at epoch {epoch}")
            cbs.history.write()
            # Before last.pt: a crash in between re-logs this epoch on resume (purged), never loses it.
            cbs.tensorboard.write(row)
            cbs.checkpointer.save_epoch(epoch, improved, cbs.tracker.best,
                                        cbs.resume_state(stopped, run.fingerprint))
            _log_epoch(run, row, val.primary, stopped)
    return stopped


def _train_one_epoch(run: _Run, epoch: int) -> _EpochStats:
    """One pass over this rank's shard of the epoch's permutation, stepping every grad_accum_steps."""
    cfg, dev, opt = run.cfg, run.dev, run.opt
    torch.manual_seed(_epoch_seed(cfg.seed, epoch, salt=1))  # dropout etc.
    aug_gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, salt=2))
    idx = make_rank_indices(run.n_train, epoch, cfg.seed, run.rank, run.world).to(dev)
    run.model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=dev)   # sum of per-row losses, kept on dev (no sync per batch)
    gn_sum = torch.zeros((), device=dev)
    n_steps = 0
    n_batches = len(run.bounds)
    opt.zero_grad(set_to_none=True)
    for b, (lo, hi) in enumerate(run.bounds):
        bi = idx[lo:hi]
        loss = _forward_backward(run, bi, aug_gen, b)
        loss_sum += loss.detach() * bi.numel()
        if (b + 1) % cfg.grad_accum_steps == 0 or b + 1 == n_batches:
            gn_sum += _optimizer_step(run)
            n_steps += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    return _EpochStats(loss=float(loss_sum) / idx.numel(), grad_norm=float(gn_sum) / max(1, n_steps),
                       steps=n_steps, seconds=seconds, samples=idx.numel(), started=t0)


def _forward_backward(run: _Run, bi: torch.Tensor, aug_gen: torch.Generator, b: int) -> torch.Tensor:
    """Loss of batch ``b`` (rows ``bi``), backpropagated scaled for accumulation; returns the loss."""
    cfg = run.cfg
    batch = [t.index_select(0, bi) for t in run.train_d]
    if cfg.augment:
        for i in run.image_inputs:
            batch[i] = augment_images(batch[i], aug_gen, cfg.aug_rotation, cfg.aug_translate, cfg.aug_crop_scale)
    with torch.autocast(run.dev.type, dtype=run.amp[1], enabled=run.amp[0]):
        output = run.model(*batch[:-1])
        loss = run.train_task.loss(output, batch[-1])
    acc_n = _accumulated(b, len(run.bounds), cfg.grad_accum_steps)
    (run.scaler.scale(loss / acc_n) if run.scaler is not None else loss / acc_n).backward()
    return loss


def _accumulated(b: int, n_batches: int, grad_accum_steps: int) -> int:
    """Micro-batches in batch ``b``'s accumulation group: a loss is divided by it so that the step sees
    the mean loss (the last group may be short)."""
    return min(grad_accum_steps, n_batches - (b // grad_accum_steps) * grad_accum_steps)


def _optimizer_step(run: _Run) -> torch.Tensor:
    """Clip, step, zero the grads, step a cosine schedule; returns the pre-clipping grad norm (NaN -> 0)."""
    cfg, opt, scaler = run.cfg, run.opt, run.scaler
    if scaler is not None:
        scaler.unscale_(opt)
    gn = nn.utils.clip_grad_norm_(
        [p for g in opt.param_groups for p in g["params"]],
        cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf"), foreach=True)
    gn = gn.detach().float().nan_to_num(0.0)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    if run.sched is not None and cfg.scheduler == "cosine":
        run.sched.step()
    return gn


def _validate(run: _Run) -> _ValStats:
    """Val loss and the task's metrics on the whole validation set."""
    run.model.eval()
    val_out = _forward_all(run.model, run.val_inputs, run.dev, run.eval_bs, run.amp)
    return _val_stats(run.task, val_out, run.val_y)


def _val_stats(task, val_out: Any, val_y: torch.Tensor) -> _ValStats:
    """Loss and the task's numeric metrics of the model outputs ``val_out`` (also used by the replica trainer)."""
    val_loss = float(task.loss(val_out, val_y))
    raw_metrics = task.metrics(val_out, val_y)
    # "primary" names the main metric (a string); a numeric "primary" is kept as a metric.
    metrics = _numeric({k: v for k, v in raw_metrics.items() if not (k == "primary" and isinstance(v, str))})
    primary, primary_up = _primary(raw_metrics, task)
    return _ValStats(loss=val_loss, metrics=metrics, primary=primary, primary_up=primary_up)


def _history_row(lr: float, world: int, epoch: int, stats: _EpochStats, val: _ValStats) -> dict:
    """One history row (``lr``: the last param group's, after the epoch); epoch_time_s covers training
    and validation."""
    epoch_time = time.perf_counter() - stats.started
    return {"epoch": epoch, "train_loss": stats.loss, "val_loss": val.loss, **val.metrics,
            "lr": lr, "grad_norm": stats.grad_norm,
            "epoch_time_s": epoch_time, "samples_per_s": stats.samples * world / max(stats.seconds, 1e-9)}


def _log_epoch(run: _Run, row: dict, primary: str | None, stopped: bool) -> None:
    cfg, epoch = run.cfg, row["epoch"]
    if not (run.main and cfg.log_every and (epoch % cfg.log_every == 0 or stopped or epoch == cfg.epochs)):
        return
    shown = " ".join(f"{k}={row[k]:.4f}" for k in ("accuracy", "f1") if k in row)
    if primary and primary in row and primary not in ("accuracy", "f1"):
        shown += f" {primary}={row[primary]:.4f}"
    run.log(f"epoch {epoch:3d}/{cfg.epochs} train_loss={row['train_loss']:.4f} val_loss={row['val_loss']:.4f} "
            f"{shown} lr={row['lr']:.2e} {row['samples_per_s']:.0f} samples/s")


def train_samples_per_s(history: Sequence[dict]) -> float:
    """Median training throughput (``samples_per_s``) over the history rows; NaN when empty."""
    return float(np.median([r["samples_per_s"] for r in history])) if history else float("nan")


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
