"""Stage-1 training under torchrun: the scale path for data that outgrows one process or GPU.

    torchrun --nproc_per_node=2 -m helpers.distributed --pairs FOLDER --out DIR [--epochs 20] [--set key=value ...]

FOLDER holds train.npz / val.npz / test_public.npz (the built-in digit pairs of a run live in
``<run>/00_data_audit/digit_pairs``). The model and training settings are notebook 02's parameter
defaults, overridable with ``--set`` and validated by the same typed contract. Each rank trains on
its own shard of every epoch (``helpers.train.make_rank_indices``), DistributedDataParallel averages
the gradients, and only rank 0 prints and writes ``history.json``, checkpoints and ``metrics.json``.
Backend: NCCL on CUDA, gloo on CPU. Without torchrun it runs as a single process.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from helpers.core import io
from helpers.core.errors import WorkbookError
from helpers.data.pairs import _uses_pair, load_pair_folder, make_inputs
from helpers.evaluation.stats import accuracy_with_ci
from helpers.models.registry import create_model
from helpers.stages.stage1 import make_stage1_model_spec
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask
from helpers.workbook.params import load_notebook_spec, parse_set, validate


def _setup() -> tuple[int, int, int, str]:
    """(rank, world_size, local_rank, device) from torchrun's environment; init the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world > 1:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if device.startswith("cuda"):
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend=backend)
    return rank, world, local, device


def main(argv: list[str] | None = None) -> int:

    ap = argparse.ArgumentParser(prog="torchrun ... -m helpers.distributed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", required=True, help="folder with train.npz, val.npz, test_public.npz")
    ap.add_argument("--out", required=True, help="output folder (written by rank 0)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override a notebook-02 parameter, e.g. epochs=5 layers=[3,3,3]")
    args = ap.parse_args(argv)
    try:
        spec = load_notebook_spec("02_stage1")
        overrides = parse_set([f"02_stage1.{item}" for item in args.set]).get("02_stage1", {})
        params = validate(spec, overrides, "--set")
        rank, world, local, device = _setup()
    except WorkbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        splits = load_pair_folder(args.pairs)
        use_pair = _uses_pair(splits)
        torch.manual_seed(int(params["seed"]))  # identical initial weights on every rank
        mspec = make_stage1_model_spec(splits, params)
        model = create_model(mspec["name"], **mspec["kwargs"]).to(device)
        if world > 1:
            ids = [local] if device.startswith("cuda") else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        task = BinaryTask(threshold=float(params["threshold"]))
        cfg = make_train_config(params, splits.kind)
        train = (*make_inputs(splits.train, use_pair), splits.train.y)
        val = (*make_inputs(splits.val, use_pair), splits.val.y)
        out = Path(args.out)
        result = train_model(model, task, train=train, val=val, config=cfg, out_dir=out, device=device)
        if rank == 0:
            net = model.module if world > 1 else model
            p = predict(net, task, make_inputs(splits.test, use_pair), device=device)
            ci = accuracy_with_ci((p >= task.threshold) == splits.test.y.astype(bool))
            io.atomic_write_json(out / "metrics.json", {
                "world_size": world, "backend": torch.distributed.get_backend() if world > 1 else None,
                "test_acc": ci["acc"], "test_acc_ci_low": ci["ci_low"], "test_acc_ci_high": ci["ci_high"],
                "epochs_run": len(result.history), "model": mspec["name"],
                "train_samples_per_s": train_samples_per_s(result.history)})
            print(f"test accuracy {ci['acc']:.4f} ({ci['ci_low']:.4f}-{ci['ci_high']:.4f}) on {world} process(es); "
                  f"wrote {out}")
    except WorkbookError as e:
        print(f"error (rank {rank}): {e}", file=sys.stderr)
        return 2
    finally:
        if world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
