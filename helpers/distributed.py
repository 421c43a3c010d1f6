"""Stage-1 training under torchrun: the scale path for data that outgrows one process or GPU.

    torchrun --nproc_per_node=2 -m helpers.distributed --pairs FOLDER --out DIR [--set key=value ...]
    torchrun --nproc_per_node=2 -m helpers.distributed --scene-pairs FOLDER --input-kind both --out DIR [--set ...]

``--pairs`` FOLDER holds train.npz / val.npz / test_public.npz (the built-in digit pairs of a run live in
``<run>/00_data_audit/digit_pairs``). ``--scene-pairs`` FOLDER is a scene pair folder of notebook 01
(``<run>/01_pair_sampling/scene_pairs``) trained on one input kind: ``geometry`` (cue vectors and pair
geometry), ``appearance`` (the two people's crops) or ``both`` (crops and pair geometry). For the crop
kinds the scenes are loaded again from the folder's meta.json, rank 0 builds the crop cache first (the
other ranks then read it), and every rank holds the pairs' crops as one uint8 array that the model
gathers by batch index. The model and training settings are notebook 02's parameter defaults
(``crop_epochs`` and the other ``crop_*`` settings for the crop kinds), overridable with ``--set`` and
validated by the same typed contract. Each rank trains on its own shard of every epoch
(``helpers.training.batching.make_rank_indices``), DistributedDataParallel averages the gradients (the
crop array is not a synchronised buffer), and only rank 0 prints and writes ``history.json``, checkpoints
and ``metrics.json``. Backend: NCCL on CUDA, gloo on CPU. Without torchrun it runs as a single process.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from helpers.core import io
from helpers.core.errors import DataError, WorkbookError
from helpers.data.crops import (check_scene_split, INPUT_KINDS, load_pair_scenes, make_pair_crops,
                                make_scene_inputs)
from helpers.data.pairs import _uses_pair, load_pair_folder, make_inputs
from helpers.evaluation.stats import interval, unit_of
from helpers.models.registry import create_model
from helpers.evaluation.scene_kinds import make_crop_model_spec, make_crop_train_config
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


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def _rank0_first(rank: int, world: int, build):
    """``build()`` on rank 0, then on the other ranks (which then read what rank 0 cached)."""
    if rank == 0:
        out = build()
        _barrier(world)
        return out
    _barrier(world)
    return build()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="torchrun ... -m helpers.distributed", description=__doc__.split("\n\n")[0])
    data = ap.add_mutually_exclusive_group(required=True)
    data.add_argument("--pairs", help="folder with train.npz, val.npz, test_public.npz")
    data.add_argument("--scene-pairs", help="a scene pair folder of notebook 01 (with its meta.json)")
    ap.add_argument("--input-kind", choices=INPUT_KINDS, default="geometry",
                    help="scene pairs: geometry, appearance (crops) or both (crops + pair geometry)")
    ap.add_argument("--out", required=True, help="output folder (written by rank 0)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override a notebook-02 parameter, e.g. epochs=5 layers=[3,3,3] crop_epochs=2")
    return ap.parse_args(argv)


def _pair_job(folder: str, params: dict) -> dict:
    """Model, config and inputs for a pair folder (or scene pairs on geometry): notebook 02's stage-1 model."""
    splits = load_pair_folder(folder)
    use_pair = _uses_pair(splits)
    torch.manual_seed(int(params["seed"]))  # identical initial weights on every rank
    mspec = make_stage1_model_spec(splits, params)
    return {"splits": splits, "spec": mspec, "model": create_model(mspec["name"], **mspec["kwargs"]),
            "cfg": make_train_config(params, splits.kind),
            "inputs": {k: make_inputs(s, use_pair) for k, s in splits.items()}, "info": {}}


def _crop_job(folder: str, kind: str, params: dict, rank: int, world: int) -> dict:
    """Model, config and inputs for scene pairs on a crop kind; rank 0 builds the crop cache first."""
    splits = load_pair_folder(folder)
    scenes = load_pair_scenes(splits.meta.get("scene_source"), where=f"{Path(folder) / 'meta.json'}")
    if scenes.n_images == 0:
        raise DataError(f"{folder}: its scenes have no stitched images (n_images = 0); input kind {kind!r} needs "
                        "person crops: use --input-kind geometry")
    for name, s in splits.items():
        check_scene_split(scenes, s, name)
    size = list(params["crop_size"])
    crops = _rank0_first(rank, world, lambda: make_pair_crops(scenes, dict(splits.items()), size))
    mspec = make_crop_model_spec(params, kind, int(splits.train.extras["pair"].shape[1]))
    torch.manual_seed(int(params["seed"]))
    model = create_model(mspec["name"], **mspec["kwargs"]).set_crops(crops.crops)
    return {"splits": splits, "spec": mspec, "model": model, "cfg": make_crop_train_config(params),
            "inputs": {k: make_scene_inputs(kind, s, crops.rows[k]) for k, s in splits.items()},
            "info": {"n_crops": int(len(crops.crops)), "crop_size": size, "images_decoded_rank0": crops.n_decoded}}


def _report(job: dict, model, task, result, device: str, world: int, out: Path, kind: str | None) -> None:
    """Rank 0: test accuracy with its interval over the data's independent unit; metrics.json."""
    splits = job["splits"]
    p = predict(model, task, job["inputs"]["test"], device=device)
    ci = interval(((p >= task.threshold) == splits.test.y.astype(bool)).astype(np.float64), unit_of(splits.test))
    io.atomic_write_json(out / "metrics.json", {
        "world_size": world, "backend": torch.distributed.get_backend() if world > 1 else None,
        "input_kind": kind, "test_acc": ci["mean"], "test_acc_ci_low": ci["ci_low"], "test_acc_ci_high": ci["ci_high"],
        "test_acc_ci_method": ci["method"], "epochs_run": len(result.history), "model": job["spec"]["name"],
        "train_samples_per_s": train_samples_per_s(result.history), **job["info"]})
    print(f"test accuracy {ci['mean']:.4f} ({ci['ci_low']:.4f}-{ci['ci_high']:.4f}, {ci['method']}) on {world} "
          f"process(es){f', input kind {kind}' if kind else ''}; wrote {out}")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        spec = load_notebook_spec("02_stage1")
        overrides = parse_set([f"02_stage1.{item}" for item in args.set]).get("02_stage1", {})
        params = validate(spec, overrides, "--set")
        rank, world, local, device = _setup()
    except WorkbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    kind = args.input_kind if args.scene_pairs else None
    try:
        if kind in ("appearance", "both"):
            job = _crop_job(args.scene_pairs, kind, params, rank, world)
        else:
            job = _pair_job(args.scene_pairs or args.pairs, params)
        model = job["model"].to(device)
        if world > 1:
            ids = [local] if device.startswith("cuda") else None
            model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        task = BinaryTask(threshold=float(params["threshold"]))
        splits, inputs = job["splits"], job["inputs"]
        out = Path(args.out)
        result = train_model(model, task, train=(*inputs["train"], splits.train.y), val=(*inputs["val"], splits.val.y),
                             config=job["cfg"], out_dir=out, device=device)
        if rank == 0:
            _report(job, model.module if world > 1 else model, task, result, device, world, out, kind)
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
