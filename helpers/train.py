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

import argparse
import copy
import dataclasses
import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from helpers.errors import WorkbookError
from helpers.io import atomic_torch_save, atomic_write_json
from helpers.tasks import with_label_smoothing

__all__ = ["TrainConfig", "TrainResult", "train_model", "predict", "evaluate_model",
           "augment_images", "make_rank_indices", "load_checkpoint", "resolve_device", "bench_main"]

# Metrics where a smaller value is better (used to pick "best" and for monitor="...").
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "nll")


@dataclass
class TrainConfig:
    """Everything the loop needs; written into every checkpoint and ``config.json``."""
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    scheduler: str = "cosine"          # cosine | plateau | none
    warmup_epochs: float = 1.0         # cosine: linear warm-up from warmup_lr to lr
    warmup_lr: float = 1e-6
    eta_min: float = 1e-6              # cosine: final learning rate
    plateau_factor: float = 0.1        # plateau: ReduceLROnPlateau on val_loss
    plateau_patience: int = 2
    max_grad_norm: float = 1.0         # <= 0: no clipping (the norm is still logged)
    amp: bool = False
    amp_dtype: str = "auto"            # auto (float16+GradScaler on CUDA, bfloat16 on CPU) | float16 | bfloat16
    grad_accum_steps: int = 1
    label_smoothing: float = 0.0       # training loss only; replaces the task's value when > 0
    patience: int = 5                  # early stopping on `monitor`; 0 = off
    min_delta: float = 1e-4
    monitor: str = "val_loss"          # val_loss | accuracy | f1 | any metric the task reports
    restore_best: bool = True          # end with the weights of the best `monitor` epoch
    seed: int = 42
    augment: bool = False              # pair augmentation of 4-D image inputs (each image independently)
    aug_rotation: float = 15.0         # degrees, uniform in ±value
    aug_translate: float = 0.1         # fraction of the image size, uniform in ±value
    aug_crop_scale: tuple[float, float] = (0.9, 1.0)   # resized crop: kept area fraction
    lr_groups: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr (e.g. backbone.)
    eval_batch_size: int = 0           # 0 = 4 × batch_size
    num_threads: int = 0               # torch CPU threads during training; 0 = leave as is
    log_every: int = 1                 # print a line every N epochs (rank 0); 0 = silent
    checkpoint: bool = True            # write *.pt into out_dir (history.json is always written)
    resume: bool = True                # resume from out_dir/last.pt when it matches this run

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("scheduler", self.scheduler in ("cosine", "plateau", "none"), "one of cosine|plateau|none"),
            ("amp_dtype", self.amp_dtype in ("auto", "float16", "bfloat16"), "one of auto|float16|bfloat16"),
            ("grad_accum_steps", self.grad_accum_steps >= 1, ">= 1"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "0 <= value < 1"),
            ("patience", self.patience >= 0, ">= 0"), ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("aug_crop_scale", 0 < self.aug_crop_scale[0] <= self.aug_crop_scale[1] <= 1, "0 < lo <= hi <= 1"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise WorkbookError(f"TrainConfig.{key}={getattr(self, key)!r}; expected {want}")
        self.aug_crop_scale = tuple(float(v) for v in self.aug_crop_scale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WorkbookError(f"TrainConfig: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)


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


# --------------------------------------------------------------------------------------- helpers
def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto"/"" -> CUDA when available, else CPU; asking for CUDA where there is none is an error."""
    if device is None or str(device) in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise WorkbookError(f"device = {str(device)!r}, but no CUDA device is available here: use 'auto' or 'cpu'")
    return torch.device(device)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _as_tensors(data: Sequence, name: str) -> tuple[torch.Tensor, ...]:
    """Tuple of tensors with equal first dimension; uint8 inputs -> float32 in [0, 1]."""
    if not isinstance(data, (tuple, list)) or len(data) < 1:
        raise WorkbookError(f"{name}: expected a tuple (inputs..., target) of arrays, got {type(data).__name__}")
    out = []
    for i, a in enumerate(data):
        t = torch.as_tensor(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else torch.as_tensor(a)
        if t.dtype == torch.uint8:
            t = t.float().div_(255.0)
        elif t.dtype == torch.float64:
            t = t.float()
        out.append(t)
    n = out[0].shape[0]
    for i, t in enumerate(out):
        if t.dim() == 0 or t.shape[0] != n:
            raise WorkbookError(f"{name}[{i}]: shape {tuple(t.shape)}; expected {n} rows like {name}[0]")
    if n == 0:
        raise WorkbookError(f"{name}: no rows")
    return tuple(out)


def _fingerprint(tensors: Sequence[torch.Tensor]) -> str:
    """Cheap identity of the data: shapes, dtypes and a hash of the bytes."""
    h = hashlib.blake2b(digest_size=12)
    for t in tensors:
        c = t.detach().cpu().contiguous()
        h.update(f"{tuple(c.shape)}{c.dtype}".encode())
        h.update((c.float() if c.dtype == torch.bfloat16 else c).numpy().tobytes())
    return h.hexdigest()


def _model_signature(model: nn.Module) -> str:
    sd = _unwrap(model).state_dict()
    return hashlib.blake2b("|".join(f"{k}:{tuple(v.shape)}" for k, v in sd.items()).encode(),
                           digest_size=12).hexdigest()


def _epoch_seed(seed: int, epoch: int, salt: int = 0) -> int:
    return (int(seed) * 1_000_003 + epoch * 7919 + salt) % (2**63 - 1)


def make_rank_indices(n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1,
                      shuffle: bool = True) -> torch.Tensor:
    """This rank's row indices for one epoch: a (seed, epoch) permutation padded to a multiple of
    ``world_size`` and strided by rank, like ``DistributedSampler`` but as one tensor."""
    if shuffle:
        g = torch.Generator().manual_seed(_epoch_seed(seed, epoch))
        perm = torch.randperm(n, generator=g)
    else:
        perm = torch.arange(n)
    if world_size > 1:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            perm = torch.cat([perm, perm[: total - n]])
        perm = perm[rank::world_size]
    return perm


def _batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch; a trailing batch of one row joins the previous one, because
    BatchNorm cannot train on a single row."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def augment_images(x: torch.Tensor, generator: torch.Generator, rotation: float = 15.0,
                   translate: float = 0.1, crop_scale: tuple[float, float] = (0.9, 1.0)) -> torch.Tensor:
    """Random rotation, translation and resized crop of a batch [B, C, H, W], one affine warp per
    image, all in one ``grid_sample`` call. Parameters are drawn on CPU from ``generator``."""
    b = x.shape[0]
    u = torch.rand(b, 4, generator=generator)                         # [B, 4] in [0, 1)
    angle = (u[:, 0] * 2 - 1) * math.radians(rotation)
    # Resized crop keeping an area fraction s: zoom in by sqrt(s) (grid coordinates shrink).
    scale = torch.sqrt(crop_scale[0] + u[:, 1] * (crop_scale[1] - crop_scale[0]))
    t = (u[:, 2:] * 2 - 1) * translate * 2                            # grid spans [-1, 1] = 2 units
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1),
                         torch.stack([sin, cos, t[:, 1]], 1)], 1)     # [B, 2, 3]
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _amp_setup(cfg: TrainConfig, device: torch.device) -> tuple[bool, torch.dtype, bool]:
    """(enabled, dtype, use_scaler)."""
    if not cfg.amp:
        return False, torch.float32, False
    if cfg.amp_dtype == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    else:
        dtype = torch.float16 if cfg.amp_dtype == "float16" else torch.bfloat16
    return True, dtype, dtype == torch.float16


def _move(tensors: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(device, non_blocking=True) for t in tensors)


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


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; parameters whose name starts with a key of ``cfg.lr_groups`` get that group's lr."""
    groups: dict[float, list] = {}
    for name, p in _unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        lr = next((v for k, v in cfg.lr_groups.items() if name.startswith(k)), cfg.lr)
        groups.setdefault(float(lr), []).append(p)
    if not groups:
        raise WorkbookError("train_model: the model has no trainable parameters (all frozen?)")
    return torch.optim.AdamW([{"params": ps, "lr": lr, "initial_lr": lr} for lr, ps in groups.items()],
                             lr=cfg.lr, weight_decay=cfg.weight_decay)


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step LambdaLR (cosine with linear warm-up) or a per-epoch ReduceLROnPlateau."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience, min_lr=cfg.eta_min)
    if cfg.scheduler == "none":
        return None
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    lrs = [g["initial_lr"] for g in opt.param_groups]

    def factor_for(base: float):
        start, end = min(cfg.warmup_lr, base) / base, min(cfg.eta_min, base) / base

        def f(step: int) -> float:
            if step < warm:  # linear warm-up from warmup_lr to the base lr
                return start + (1 - start) * step / warm
            prog = min(1.0, (step - warm) / max(1, total - warm))
            return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * prog))
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, [factor_for(b) for b in lrs])


# ----------------------------------------------------------------------------------- checkpoints
def load_checkpoint(path: str | Path, model: nn.Module | None = None, strict: bool = True) -> dict:
    """Read a checkpoint written by `train_model`; with ``model``, load its weights.

    Raises WorkbookError naming the path when the file is missing, unreadable or does not fit.
    """
    path = Path(path)
    if not path.is_file():
        raise WorkbookError(f"checkpoint {path}: file not found (expected a .pt written by train_model)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WorkbookError(f"checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise WorkbookError(f"checkpoint {path}: no 'model_state_dict'; expected a train_model checkpoint")
    if model is not None:
        try:
            _unwrap(model).load_state_dict(ckpt["model_state_dict"], strict=strict)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise WorkbookError(f"checkpoint {path}: does not fit the model "
                                f"({first[0] if first else e}...); expected model_spec "
                                f"{ckpt.get('model_spec')}") from None
    return ckpt


def _state(model, opt, sched, scaler, epoch, best, cfg, extra=None) -> dict:
    d = {
        "epoch": epoch,
        "model_state_dict": _unwrap(model).state_dict(),
        "optimizer_state_dict": opt.state_dict(),
        "scheduler_state_dict": sched.state_dict() if sched is not None else None,
        "scaler_state_dict": scaler.state_dict() if scaler is not None else None,
        "best": copy.deepcopy(best),
        "config": cfg.to_dict(),
        "model_spec": getattr(_unwrap(model), "spec", None),
    }
    if extra:
        d.update(extra)
    return d


# ------------------------------------------------------------------------------------- the loop
def train_model(model: nn.Module, task, train: Sequence, val: Sequence, config: TrainConfig | None = None,
                out_dir: str | Path | None = None, device: str | torch.device = "cpu",
                on_epoch_end: Callable[[dict], Any] | None = None) -> TrainResult:
    """Train ``model`` on ``train`` for ``task``, validating on ``val`` every epoch.

    Args:
        model: called as ``model(*inputs)``; may be DDP-wrapped.
        task: implements ``loss``, ``predict``, ``metrics`` (see helpers.tasks).
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


# --------------------------------------------------------------------------------- inference
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


# ------------------------------------------------------------------------------------ benchmark
def _bare_epoch(model, task, train_d, idx, batch_size, opt) -> float:
    """Plain forward + loss + backward + optimizer step on the same batches; seconds."""
    model.train()
    t0 = time.perf_counter()
    for s, e in _batch_bounds(idx.numel(), batch_size):
        bi = idx[s:e]
        batch = [t.index_select(0, bi) for t in train_d]
        opt.zero_grad(set_to_none=True)
        task.loss(model(*batch[:-1]), batch[-1]).backward()
        opt.step()
    return time.perf_counter() - t0


def bench_main(argv: list[str]) -> int:
    """``python -m helpers bench train``: the loop's samples/s vs a bare forward+backward."""
    from helpers.models import create_model
    from helpers.tasks import BinaryTask

    ap = argparse.ArgumentParser(prog="python -m helpers bench train",
                                 description="Training-loop overhead: train_model's samples/s next to a "
                                             "bare forward+backward+step on the same batches (goal >= 0.9).")
    ap.add_argument("--model", default="siamese_resnet")
    ap.add_argument("--n", type=int, default=1024, help="training pairs")
    ap.add_argument("--size", type=int, default=8, help="image side (pixels)")
    ap.add_argument("--width-mult", type=float, default=0.25)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5, help="alternating one-epoch repeats; the best of each is kept")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    xa = torch.rand(args.n, 1, args.size, args.size, generator=g)
    xb = torch.rand(args.n, 1, args.size, args.size, generator=g)
    y = (torch.rand(args.n, generator=g) > 0.5).long()
    task = BinaryTask()
    model = create_model(args.model, in_channels=1, width_mult=args.width_mult)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, patience=0, log_every=0,
                      checkpoint=False, seed=0)
    train_d = _move((xa, xb, y), dev)
    val = (xa[:64], xb[:64], y[:64])
    # Warm-up (allocator, kernels), then alternate one loop epoch and one bare epoch so that load
    # from other processes hits both alike; the best of each is kept.
    m = copy.deepcopy(model).to(dev)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    _bare_epoch(m, task, train_d, make_rank_indices(args.n, 1, 0).to(dev), args.batch_size, opt)
    loop_best, bare_best = 0.0, 0.0
    for r in range(args.repeats):
        res = train_model(copy.deepcopy(model), task, (xa, xb, y), val, cfg, None, dev)
        loop_best = max(loop_best, max(row["samples_per_s"] for row in res.history))
        idx = make_rank_indices(args.n, 1, 0).to(dev)   # the loop's epoch-1 batches
        bare_best = max(bare_best, idx.numel() / _bare_epoch(m, task, train_d, idx, args.batch_size, opt))
    ratio = loop_best / bare_best
    print(f"model={args.model} n={args.n} size={args.size} batch={args.batch_size} threads={args.threads} "
          f"device={dev}")
    print(f"train_model loop : {loop_best:9.1f} samples/s (training phase, best of {args.repeats} epochs)")
    print(f"bare fwd+bwd+step: {bare_best:9.1f} samples/s (same batches)")
    print(f"ratio            : {ratio:9.3f}  goal >= 0.9: {'met' if ratio >= 0.9 else 'MISSED'}")
    return 1 if (args.strict and ratio < 0.9) else 0
