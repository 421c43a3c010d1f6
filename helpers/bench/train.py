"""``python -m helpers bench train``: the training loop's samples/s next to a bare forward + backward + step."""
from __future__ import annotations

import argparse
import copy
import time

import torch

from helpers.core.device import resolve_device
from helpers.models.registry import create_model
from helpers.training.batching import _batch_bounds, _move, make_rank_indices
from helpers.training.config import TrainConfig
from helpers.training.loop import train_model
from helpers.training.tasks import BinaryTask


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
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, patience=0, log_every=0, tensorboard=False,
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
