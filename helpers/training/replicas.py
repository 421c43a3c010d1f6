"""Seed replicas of one recipe trained together, and the choice of how.

```python
models = [build(seed) for seed in seeds]          # each built exactly as if trained alone
configs = [dataclasses.replace(cfg, seed=s) for s in seeds]
run = train_replicas(models, task, train, val, configs, device="cpu", mode="auto")
run.results[i]        # the TrainResult train_model would return for seed i (model = models[i])
run.mode, run.reason  # "vmap" | "processes" | "sequential", and why
```

Three ways, the same numbers (CPU):

- ``sequential``: `train_model` once per replica, one after another. The fallback: it runs any recipe.
- ``vmap``: all replicas in one process, one forward/backward per batch over parameters stacked along a
  replica dimension (``torch.func.stack_module_state`` + ``functional_call`` + ``vmap``), one stacked
  AdamW. AdamW is elementwise, so the stacked step is each replica's own step; gradient clipping is done
  per replica. Each replica keeps what it has alone: its initialisation (the model it was given), its
  data order (`make_rank_indices` with its seed), its augmentation and dropout draws (generators seeded
  as `train_model` seeds them: dropout masks are drawn outside ``vmap`` from a per-replica generator in
  the order the model calls its ``nn.Dropout`` layers, so they are the masks the replica draws alone on
  CPU), its BatchNorm running statistics (buffers stacked like the parameters and updated in place under
  ``vmap``), and its own early stopping (`BestTracker` / `EarlyStopping` per replica). A replica that
  stops leaves the stack: its parameters and optimiser state freeze where they were (weight decay would
  otherwise keep shrinking them), and its model ends with its best weights as `train_model`'s would.
  Numbers equal a replica trained alone up to float rounding (batched kernels sum in another order), not
  bit for bit: a model store that promises bit-identical models must key on the way too. On CUDA the
  masks still come from CPU generators, so dropout there differs from a CUDA run alone.
- ``processes``: one single-threaded worker process per replica (at most one per core), each running
  `train_model` (`helpers.training.workers`).

`vmap_unsupported` says why a set of replicas cannot be batched (distributed runs, mixed precision, the
plateau scheduler whose learning rate would differ per replica, resumable checkpoints, dropout other than
``nn.Dropout``, models that draw other random numbers in ``forward``): ``mode="auto"`` then trains them
one after another. Otherwise ``auto`` takes the way measured fastest for this model kind (`replica_kind`):
a measurement recorded by ``python -m helpers bench seeds`` or an earlier probe, else a short probe of
sequential against vmap (`measure_modes`), recorded for the next time. A way is chosen over sequential
only when it measured at least `MIN_GAIN` faster, so ``auto`` is never slower than one after another by
more than the measurement's noise.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from helpers.core.device import resolve_device
from helpers.core.errors import WorkbookError
from helpers.models.registry import create_model_from_spec
from helpers.training.augment import augment_images
from helpers.training.batching import _as_tensors, _batch_bounds, _dist, _epoch_seed, _model_signature, make_rank_indices
from helpers.training.callbacks import BestTracker, EarlyStopping, HistoryWriter, TensorBoardWriter
from helpers.training.config import TrainConfig
from helpers.training.loop import (_accumulated, _cat, _EpochStats, _history_row, _val_stats, train_model,
                                  TrainResult)
from helpers.training.optim import _make_scheduler, make_named_optimizer
from helpers.training.replica_modes import (choose_mode, MIN_GAIN, MODES, read_mode_record, RECORD_FILE,  # noqa: F401
                                            record_modes, replica_kind)  # (re-exported: the way is chosen there)
from helpers.training.tasks import with_label_smoothing
from helpers.training.workers import available_cores, run_in_workers

# Config fields replicas may differ in besides the seed: they change what is printed, never a number.
_FREE_FIELDS = ("seed", "num_threads", "log_every", "tensorboard")


@dataclass
class ReplicaRun:
    """What `train_replicas` did: one TrainResult per replica (in order), the way and why, wall seconds."""
    results: list[TrainResult]
    mode: str
    reason: str
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)   # the measurement the choice was made from


# ----------------------------------------------------------------------------------------- data
@dataclass
class _Data:
    """All replicas' rows in one set of tensors: replica r's rows start at ``offsets[r]`` (all 0 when shared)."""
    tensors: tuple[torch.Tensor, ...]    # (inputs..., target)
    offsets: list[int]
    n: int                               # rows per replica
    shared: bool


def _is_per_replica(data) -> bool:
    return isinstance(data, (list, tuple)) and len(data) > 0 and isinstance(data[0], (list, tuple))


def _replica_data(data, n_rep: int, name: str) -> list[tuple]:
    """One (inputs..., target) tuple per replica: ``data`` itself when shared, else its items."""
    if not _is_per_replica(data):
        return [data] * n_rep
    if len(data) != n_rep:
        raise WorkbookError(f"{name}: {len(data)} per-replica data tuples for {n_rep} replicas; expected one each "
                            "or one shared tuple (inputs..., target)")
    return list(data)


def _stack_data(data, n_rep: int, name: str, dev: torch.device) -> _Data:
    if not _is_per_replica(data):
        t = _as_tensors(data, name)
        return _Data(tuple(x.to(dev) for x in t), [0] * n_rep, t[0].shape[0], True)
    parts = [_as_tensors(d, f"{name}[{i}]") for i, d in enumerate(_replica_data(data, n_rep, name))]
    n = parts[0][0].shape[0]
    if any(p[0].shape[0] != n for p in parts):
        raise WorkbookError(f"{name}: per-replica data of {sorted({p[0].shape[0] for p in parts})} rows; batched "
                            "replicas need the same number of rows each")
    cat = tuple(torch.cat([p[i] for p in parts]).to(dev) for i in range(len(parts[0])))
    return _Data(cat, [i * n for i in range(n_rep)], n, False)


# ------------------------------------------------------------------------------------- support
def _config_key(cfg: TrainConfig) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in _FREE_FIELDS}


def vmap_unsupported(models: Sequence[nn.Module], train, configs: Sequence[TrainConfig],
                     device: str | torch.device = "cpu", out_dirs: Sequence[str | Path | None] | None = None) -> str:
    """Why these replicas cannot be trained batched ('' when they can); `train_replicas` then falls back."""
    cfg = configs[0]
    if len(models) < 2:
        return "fewer than two replicas"
    if _dist()[1] > 1:
        return "torch.distributed is initialised (each rank trains its own shard)"
    if any(_config_key(c) != _config_key(cfg) for c in configs):
        return "the replicas' configs differ in more than the seed"
    if cfg.amp:
        return "mixed precision (amp) is not batched"
    if cfg.scheduler == "plateau":
        return "the plateau scheduler would set a different learning rate per replica"
    for d in out_dirs or []:
        if d is not None and (cfg.checkpoint or (cfg.resume and (Path(d) / "last.pt").is_file())):
            return f"{d}: resumable checkpoints (config.checkpoint) are written by train_model only"
    if len({_model_signature(m) for m in models}) != 1:
        return "the replicas' models differ in architecture"
    for name, m in models[0].named_modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and type(m) is not nn.Dropout:
            return f"module {name!r} is a {type(m).__name__}; only nn.Dropout masks are replayed per replica"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
            return f"module {name!r}: BatchNorm with momentum=None (a cumulative average) is not batched"
    if _is_per_replica(train) and len({len(d[-1]) for d in train}) != 1:
        return "per-replica training data of different sizes"
    return ""


# ------------------------------------------------------------------------------------ dropout
class _MaskFeed:
    """The dropout masks of one batched forward, handed to `_MaskDropout` layers in call order; in
    ``record`` mode it notes the shape and rate of each call instead (one real forward per batch size)."""

    def __init__(self) -> None:
        self.masks: list[torch.Tensor] = []
        self.pos = 0
        self.record: list[tuple[tuple[int, ...], float]] | None = None

    def apply(self, x: torch.Tensor, p: float) -> torch.Tensor:
        if self.record is not None:
            self.record.append((tuple(x.shape), p))
            return x
        m = self.masks[self.pos]
        self.pos += 1
        return x * m


class _MaskDropout(nn.Module):
    """nn.Dropout whose mask comes from the feed: ``x * (bernoulli(1 - p) / (1 - p))``, the CPU kernel's
    arithmetic, with the mask drawn outside ``vmap`` from the replica's own generator."""

    def __init__(self, p: float, feed: _MaskFeed) -> None:
        super().__init__()
        self.p, self.feed = float(p), feed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * torch.zeros((), dtype=x.dtype, device=x.device)
        return self.feed.apply(x, self.p)


def _template(model: nn.Module, feed: _MaskFeed) -> nn.Module:
    """A copy of ``model`` whose nn.Dropout layers take their masks from ``feed`` (the stacked tensors
    replace its own parameters and buffers in every call)."""
    t = copy.deepcopy(model)
    for name, m in list(t.named_modules()):
        for child_name, child in list(m.named_children()):
            if type(child) is nn.Dropout:
                setattr(m, child_name, _MaskDropout(child.p, feed))
    return t


def _draw_masks(shapes: list[tuple[tuple[int, ...], float]], gens: list[torch.Generator],
                dev: torch.device) -> list[torch.Tensor]:
    """[R, *shape] masks for each dropout call, replica j's drawn from ``gens[j]`` in call order (as the
    default generator draws them alone: ``empty_like(x).bernoulli_(1 - p).div_(1 - p)``)."""
    per = [[torch.empty(s).bernoulli_(1 - p, generator=g).div_(1 - p) for s, p in shapes] for g in gens]
    return [torch.stack([per[j][k] for j in range(len(gens))]).to(dev) for k in range(len(shapes))]


# --------------------------------------------------------------------------------- the stack
@dataclass
class _Stack:
    """Everything of one batched run; position j of every stacked tensor is replica ``active[j]``."""
    models: list[nn.Module]
    cfgs: list[TrainConfig]
    task: Any
    train_task: Any
    dev: torch.device
    template: nn.Module
    feed: _MaskFeed
    params: dict[str, torch.Tensor]      # trainable, stacked [R, ...] leaves (the optimiser's tensors)
    others: dict[str, torch.Tensor]      # frozen parameters and buffers, stacked
    active: list[int]
    train: _Data
    val: _Data
    bounds: list[tuple[int, int]]
    eval_bs: int
    opt: torch.optim.Optimizer
    sched: Any
    image_inputs: list[int]
    trackers: list[BestTracker]
    stoppers: list[EarlyStopping]
    histories: list[HistoryWriter]
    boards: list[TensorBoardWriter]
    shapes: dict[int, list] = field(default_factory=dict)   # batch size -> dropout calls (shape, p)
    stopped: list[bool] = field(default_factory=list)


def _stack_setup(models, task, train, val, configs, dev, out_dirs) -> _Stack:
    cfg = configs[0]
    for m in models:
        m.to(dev)
    params, buffers = stack_module_state(models)
    trainable = {k: v for k, v in params.items() if v.requires_grad}
    others = {**{k: v.detach() for k, v in params.items() if not v.requires_grad}, **buffers}
    n_rep = len(models)
    tr, va = _stack_data(train, n_rep, "train", dev), _stack_data(val, n_rep, "val", dev)
    bounds = _batch_bounds(tr.n, cfg.batch_size)
    opt = make_named_optimizer(trainable.items(), cfg)
    sched = _make_scheduler(opt, cfg, -(-len(bounds) // cfg.grad_accum_steps))
    feed = _MaskFeed()
    trackers = [BestTracker() for _ in models]
    outs = list(out_dirs) if out_dirs is not None else [None] * n_rep
    return _Stack(models=list(models), cfgs=list(configs), task=task,
                  train_task=with_label_smoothing(task, cfg.label_smoothing), dev=dev,
                  template=_template(models[0], feed), feed=feed, params=trainable, others=others,
                  active=list(range(n_rep)), train=tr, val=va, bounds=bounds,
                  eval_bs=cfg.eval_batch_size or 4 * cfg.batch_size, opt=opt, sched=sched,
                  image_inputs=[i for i, t in enumerate(tr.tensors[:-1]) if t.dim() == 4 and t.is_floating_point()],
                  trackers=trackers, stoppers=[EarlyStopping(c, task, t, m) for c, t, m in zip(configs, trackers, models)],
                  histories=[HistoryWriter(Path(o) if o else None, True) for o in outs],
                  boards=[TensorBoardWriter(Path(o) if o else None, c.tensorboard) for o, c in zip(outs, configs)],
                  stopped=[False] * n_rep)


def _dropout_calls(st: _Stack, b: int) -> list[tuple[tuple[int, ...], float]]:
    """The (shape, p) of each dropout call of a training forward on ``b`` rows, from one real forward of
    the template (cached per batch size). A model that draws any other random number in ``forward``
    would not replay alone's stream: refused."""
    if b not in st.shapes:
        st.feed.record = []
        st.template.train()
        sample = [t[:b] for t in st.train.tensors[:-1]]
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            before = torch.get_rng_state()
            # A copy (its BatchNorm statistics must not move) sharing the feed that records the calls.
            copy.deepcopy(st.template, {id(st.feed): st.feed})(*sample)
            drew = not torch.equal(before, torch.get_rng_state())
        st.shapes[b], st.feed.record = st.feed.record, None
        if drew:
            raise WorkbookError("train_replicas: the model draws random numbers in forward besides nn.Dropout; "
                                "its replicas cannot be batched (use mode='sequential')")
    return st.shapes[b]


def _call(st: _Stack, state: dict, masks: list, *inputs):
    """One replica's forward (run under vmap): its tensors in the template, its masks in the feed."""
    st.feed.masks, st.feed.pos = masks, 0
    return functional_call(st.template, state, inputs)


def _forward(st: _Stack, inputs: Sequence[torch.Tensor], masks: list, batched_inputs: bool):
    state = {**st.params, **st.others}
    dims = (0, 0, *([0 if batched_inputs else None] * len(inputs)))
    return vmap(lambda s, m, *x: _call(st, s, m, *x), in_dims=dims)(state, masks, *inputs)


def _pick(out: Any, j: int) -> Any:
    """Replica j's part of a batched model output (tensor, tuple/list or dict of tensors)."""
    if isinstance(out, torch.Tensor):
        return out[j]
    if isinstance(out, dict):
        return {k: _pick(v, j) for k, v in out.items()}
    return type(out)(_pick(v, j) for v in out)


# ---------------------------------------------------------------------------------- training
def _batch(st: _Stack, bi: torch.Tensor, augs: list[torch.Generator]) -> list[torch.Tensor]:
    """Rows ``bi`` [R, b] of every training tensor as [R, b, ...], image inputs augmented per replica
    with its own generator (in input order, as `train_model` does)."""
    r, b = bi.shape
    batch = [t.index_select(0, bi.reshape(-1)).view(r, b, *t.shape[1:]) for t in st.train.tensors]
    cfg = st.cfgs[0]
    if cfg.augment and st.image_inputs:
        for i in st.image_inputs:
            batch[i] = torch.stack([augment_images(batch[i][j], augs[j], cfg.aug_rotation, cfg.aug_translate,
                                                   cfg.aug_crop_scale) for j in range(r)])
    return batch


def _clip_and_step(st: _Stack) -> torch.Tensor:
    """Per-replica gradient clipping (`clip_grad_norm_`'s formula on each replica's slice), one AdamW
    step of the stack, the cosine schedule; returns each replica's pre-clipping norm [R] (NaN -> 0)."""
    cfg, r = st.cfgs[0], len(st.active)
    grads = [p.grad for g in st.opt.param_groups for p in g["params"] if p.grad is not None]
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(r, -1), dim=1) for g in grads])   # [P, R]
    total = torch.linalg.vector_norm(norms, dim=0)                                              # [R]
    max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(r, *([1] * (g.dim() - 1))))
    st.opt.step()
    st.opt.zero_grad(set_to_none=True)
    if st.sched is not None and cfg.scheduler == "cosine":
        st.sched.step()
    return total.detach().nan_to_num(0.0)


def _train_epoch(st: _Stack, epoch: int) -> list[_EpochStats]:
    """One epoch of every active replica: its own permutation, dropout and augmentation streams."""
    cfg, dev, act = st.cfgs[0], st.dev, st.active
    drops = [torch.Generator().manual_seed(_epoch_seed(st.cfgs[r].seed, epoch, salt=1)) for r in act]
    augs = [torch.Generator().manual_seed(_epoch_seed(st.cfgs[r].seed, epoch, salt=2)) for r in act]
    idx = torch.stack([make_rank_indices(st.train.n, epoch, st.cfgs[r].seed) + st.train.offsets[r]
                       for r in act]).to(dev)
    st.template.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros(len(act), device=dev)
    gn_sum = torch.zeros(len(act), device=dev)
    n_steps, n_batches = 0, len(st.bounds)
    st.opt.zero_grad(set_to_none=True)
    for b, (lo, hi) in enumerate(st.bounds):
        batch = _batch(st, idx[:, lo:hi], augs)
        masks = _draw_masks(_dropout_calls(st, hi - lo), drops, dev)
        out = _forward(st, batch[:-1], masks, True)
        losses = torch.stack([st.train_task.loss(_pick(out, j), batch[-1][j]) for j in range(len(act))])
        (losses / _accumulated(b, n_batches, cfg.grad_accum_steps)).sum().backward()
        loss_sum += losses.detach() * (hi - lo)
        if (b + 1) % cfg.grad_accum_steps == 0 or b + 1 == n_batches:
            gn_sum += _clip_and_step(st)
            n_steps += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    return [_EpochStats(loss=float(loss_sum[j]) / st.train.n, grad_norm=float(gn_sum[j]) / max(1, n_steps),
                        steps=n_steps, seconds=seconds, samples=st.train.n, started=t0) for j in range(len(act))]


@torch.no_grad()
def _validate(st: _Stack) -> list:
    """Each active replica's `_ValStats` on its validation rows (one batched eval forward per batch)."""
    st.template.eval()
    va, act = st.val, st.active
    outs = []
    for s in range(0, va.n, st.eval_bs):
        e = min(s + st.eval_bs, va.n)
        if va.shared:
            outs.append(_forward(st, [t[s:e] for t in va.tensors[:-1]], [], False))
        else:
            rows = torch.stack([torch.arange(s, e, device=st.dev) + va.offsets[r] for r in act])
            inputs = [t.index_select(0, rows.reshape(-1)).view(len(act), e - s, *t.shape[1:]) for t in va.tensors[:-1]]
            outs.append(_forward(st, inputs, [], True))
    y = va.tensors[-1]
    return [_val_stats(st.task, _cat([_pick(o, j) for o in outs]), y[va.offsets[r]:va.offsets[r] + va.n])
            for j, r in enumerate(act)]


@torch.no_grad()
def _write_back(st: _Stack) -> None:
    """Copy each active replica's stacked tensors into its own model (early stopping snapshots them there)."""
    state = {**st.params, **st.others}
    for j, r in enumerate(st.active):
        own = dict(st.models[r].named_parameters())
        own.update(st.models[r].named_buffers())
        for k, v in state.items():
            own[k].copy_(v[j])


@torch.no_grad()
def _drop_stopped(st: _Stack) -> None:
    """Remove stopped replicas from the stack: parameters, optimiser state and buffers keep only the
    others, so what a stopped replica had stays as it was (its model already holds it)."""
    keep = [j for j, r in enumerate(st.active) if not st.stopped[r]]
    if len(keep) == len(st.active):
        return
    sel = torch.tensor(keep, dtype=torch.long, device=st.dev)
    n = len(st.active)
    for p in st.params.values():
        for k, v in st.opt.state.get(p, {}).items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
                st.opt.state[p][k] = v.index_select(0, sel)
        p.data = p.data.index_select(0, sel)
    st.others = {k: v.index_select(0, sel) for k, v in st.others.items()}
    st.active = [st.active[j] for j in keep]


def _epoch_end(st: _Stack, epoch: int, stats: list[_EpochStats], vals: list) -> None:
    """Each active replica's history row and callbacks, as `train_model` runs them."""
    lr = float(st.opt.param_groups[-1]["lr"])
    for j, r in enumerate(st.active):
        row = _history_row(lr, 1, epoch, stats[j], vals[j])
        st.histories[r].append(row)
        st.trackers[r].update(row, vals[j].metrics, vals[j].primary, vals[j].primary_up)
        if st.stoppers[r].update(row) is not None:
            st.stopped[r] = True
        st.histories[r].write()
        st.boards[r].write(row)


def train_replicas_vmap(models: Sequence[nn.Module], task, train, val, configs: Sequence[TrainConfig],
                        device: str | torch.device = "cpu",
                        out_dirs: Sequence[str | Path | None] | None = None) -> list[TrainResult]:
    """Train the replicas batched (see the module docstring); raises WorkbookError naming why when
    `vmap_unsupported`. Each model ends as `train_model` leaves it (best weights when restore_best)."""
    why = vmap_unsupported(models, train, configs, device, out_dirs)
    if why:
        raise WorkbookError(f"train_replicas_vmap: {why}")
    dev = resolve_device(device)
    cfg = configs[0]
    old_threads = torch.get_num_threads()
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    st = _stack_setup(models, task, train, val, configs, dev, out_dirs)
    try:
        for epoch in range(1, cfg.epochs + 1):
            if not st.active:
                break
            stats = _train_epoch(st, epoch)
            _write_back(st)
            _epoch_end(st, epoch, stats, _validate(st))
            _drop_stopped(st)
    finally:
        for board in st.boards:
            board.close()
        torch.set_num_threads(old_threads)
    results = []
    for r, m in enumerate(st.models):
        st.stoppers[r].restore_best()
        rows = st.histories[r].rows
        results.append(TrainResult(history=rows, best=st.trackers[r].public(), epochs_run=len(rows),
                                   stopped_early=st.stopped[r] and len(rows) < cfg.epochs, resumed_from=0,
                                   out_dir=Path(out_dirs[r]) if out_dirs and out_dirs[r] else None, checkpoints={},
                                   config=st.cfgs[r].to_dict(), model=m))
    return results


# ------------------------------------------------------------------------- the other two ways
def train_replicas_sequential(models, task, train, val, configs, device="cpu", out_dirs=None) -> list[TrainResult]:
    """`train_model` once per replica, one after another (the fallback)."""
    n = len(models)
    trs, vas = _replica_data(train, n, "train"), _replica_data(val, n, "val")
    outs = list(out_dirs) if out_dirs is not None else [None] * n
    return [train_model(m, task, trs[i], vas[i], configs[i], out_dir=outs[i], device=device)
            for i, m in enumerate(models)]


def train_one_replica(job: dict) -> dict:
    """A worker process's job (`train_replicas_processes`): rebuild the model from its spec and the
    weights it was given, `train_model` it, return the result and the final weights."""
    model = create_model_from_spec(job["spec"])
    model.load_state_dict(job["state"])
    res = train_model(model, job["task"], job["train"], job["val"], TrainConfig.from_dict(job["config"]),
                      out_dir=job["out_dir"], device=job["device"])
    out = {f.name: getattr(res, f.name) for f in dataclasses.fields(res) if f.name != "model"}
    return {**out, "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def train_replicas_processes(models, task, train, val, configs, device="cpu", out_dirs=None,
                             workers: int = 0) -> list[TrainResult]:
    """One single-threaded worker process per replica (``workers``: 0 = one per core, at most one per
    replica), each running `train_model`; each model is loaded with its replica's final weights."""
    n = len(models)
    if any(getattr(m, "spec", None) is None for m in models):
        raise WorkbookError("train_replicas_processes: the models have no .spec (build them with create_model): "
                            "a worker rebuilds each model from its spec")
    trs, vas = _replica_data(train, n, "train"), _replica_data(val, n, "val")
    outs = [str(o) if o else None for o in (out_dirs or [None] * n)]
    jobs = [{"spec": m.spec, "state": {k: v.detach().cpu() for k, v in m.state_dict().items()}, "task": task,
             "train": trs[i], "val": vas[i], "config": {**configs[i].to_dict(), "num_threads": 1}, "out_dir": outs[i],
             "device": str(device)} for i, m in enumerate(models)]
    done = run_in_workers(train_one_replica, jobs, workers or min(n, available_cores()), 1)
    failed = [f"replica {i}: {o.error.strip().splitlines()[0] if o.error else 'failed'}" for i, o in enumerate(done)
              if not o.ok]
    if failed:
        raise WorkbookError("train_replicas_processes: " + "; ".join(failed))
    results = []
    for m, o in zip(models, done):
        m.load_state_dict(o.value.pop("state"))
        v = o.value
        results.append(TrainResult(**{**v, "out_dir": Path(v["out_dir"]) if v["out_dir"] else None}, model=m))
    return results


_TRAINERS = {"sequential": train_replicas_sequential, "vmap": train_replicas_vmap,
             "processes": train_replicas_processes}


def _probe_data(data, rows: int):
    """The first ``rows`` rows of shared or per-replica data."""
    if _is_per_replica(data):
        return [tuple(a[:rows] for a in d) for d in data]
    return tuple(a[:rows] for a in data)


def measure_modes(models, task, train, val, configs, device="cpu", batches: int = 4) -> dict[str, float]:
    """Seconds of one short epoch (``batches`` batches, validation on one batch) sequential and batched,
    on copies of the models, each timed twice alternately (the best kept: a shared machine's load hits
    both alike). Processes are not probed here (their start-up dwarfs a short epoch): `bench seeds`
    measures and records them."""
    cfg = configs[0]
    rows = batches * cfg.batch_size
    tr, va = _probe_data(train, rows), _probe_data(val, cfg.batch_size)
    probe = [dataclasses.replace(c, epochs=1, patience=0, log_every=0, tensorboard=False, checkpoint=False)
             for c in configs]
    best: dict[str, float] = {}
    for _ in range(2):
        for mode in ("sequential", "vmap"):
            copies = [copy.deepcopy(m) for m in models]
            t0 = time.perf_counter()
            _TRAINERS[mode](copies, task, tr, va, probe, device)
            best[mode] = min(best.get(mode, float("inf")), time.perf_counter() - t0)
    return best


def train_replicas(models: Sequence[nn.Module], task, train, val, configs: Sequence[TrainConfig],
                   device: str | torch.device = "cpu", out_dirs: Sequence[str | Path | None] | None = None,
                   mode: str = "auto", record: str | Path | None = None) -> ReplicaRun:
    """Train seed replicas of one recipe; each ``models[i]`` ends as `train_model` would leave it.

    models: one per seed, each built as it would be alone (``torch.manual_seed(seed)`` then the model).
    train, val: one (inputs..., target) tuple shared by all replicas, or a list of one tuple per replica.
    configs: one TrainConfig per replica, differing only in the seed (and printing fields).
    mode: "auto" (the recorded or probed fastest way, see `choose_mode`), "vmap", "processes" or
    "sequential". record: the measurement file (default: the cache's replica_modes.json).
    """
    if mode not in ("auto", *MODES):
        raise WorkbookError(f"train_replicas: mode={mode!r}; expected auto or one of {', '.join(MODES)}")
    if len(models) != len(configs) or not models:
        raise WorkbookError(f"train_replicas: {len(models)} models and {len(configs)} configs; expected one config "
                            "per model, at least one")
    why_not = vmap_unsupported(models, train, configs, device, out_dirs)
    timings: dict[str, float] = {}
    if mode == "auto":
        if why_not:
            mode, reason = "sequential", f"not batched: {why_not}"
        else:
            n_rows = len(train[0][-1]) if _is_per_replica(train) else len(train[-1])
            kind = replica_kind(models, configs, n_rows, device)
            timings = read_mode_record(record).get(kind, {})
            if not timings:
                timings = measure_modes(models, task, train, val, configs, device)
                record_modes(kind, timings, record, source="probe (measure_modes)")
            mode, reason = choose_mode(timings)
    else:
        reason = "asked for"
    t0 = time.perf_counter()
    results = _TRAINERS[mode](models, task, train, val, configs, device, out_dirs)
    return ReplicaRun(results=results, mode=mode, reason=reason, seconds=time.perf_counter() - t0, timings=timings)
