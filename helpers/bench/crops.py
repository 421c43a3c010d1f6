"""``python -m helpers bench crops``: training on cached person crops (memory-mapped uint8, gathered by
batch indices) next to the bare forward + backward + step on the same crops already in memory as float
tensors (goal: ratio >= 0.9), with the one-off costs beside them: drawing the generated panoramas and
building the crop cache (what the first epoch pays once).

``python -m helpers bench crops --kinds`` instead times stage 1's input kinds (geometry, appearance, both)
side by side on a profile's scene data (`helpers.bench.scenes`)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers.bench import scenes as scene_kinds
from helpers.data.crops import load_crop_bank
from helpers.data.jrdb import generated_sequence_name, IMAGE_DIR, load_jrdb, write_jrdb_layout
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.panorama import write_panoramas
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import select_keyframes
from helpers.training.batching import _batch_bounds


class _PairCNN(nn.Module):
    """A small siamese CNN: a shared conv encoder, |ea - eb| -> one logit."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, 1)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return self.head((self.enc(xa) - self.enc(xb)).abs()).squeeze(1)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m helpers bench crops",
                                 description="Training on memory-mapped cached crops vs on crops already in memory "
                                             "(goal >= 0.9), beside the one-off costs of drawing the panoramas "
                                             "and building the crop cache.")
    ap.add_argument("--sequences", type=int, default=3, help="generated sequences")
    ap.add_argument("--frames", type=int, default=60, help="frames per sequence")
    ap.add_argument("--stride", type=int, default=2, help="keyframe stride (panoramas drawn for these frames)")
    ap.add_argument("--size", nargs=2, type=int, default=[64, 32], metavar=("H", "W"), help="crop size")
    ap.add_argument("--pairs", type=int, default=1024, help="training pairs per epoch (at most)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="alternating one-epoch repeats; the best of each is kept")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    return ap.parse_args(argv)


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, n: int, batch_size: int, fetch) -> float:
    """One epoch of forward + loss + backward + step; ``fetch(s, e)`` gives the batch (xa, xb, y). Seconds."""
    loss_fn = nn.BCEWithLogitsLoss()
    t0 = time.perf_counter()
    for s, e in _batch_bounds(n, batch_size):
        xa, xb, y = fetch(s, e)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xa, xb), y).backward()
        opt.step()
    return time.perf_counter() - t0


def _setup(args: argparse.Namespace, tmp: Path) -> tuple[object, dict[str, float]]:
    """Generated scenes in the JRDB layout with their panoramas drawn; the scenes at the keyframes and the costs."""
    people, _ = make_generated_people(n_sequences=args.sequences, frames_per_sequence=args.frames, seed=0)
    root = tmp / "jrdb"
    write_jrdb_layout(people, root, source="bench crops (generated)")
    names = {int(s): generated_sequence_name(int(s)) for s in people["seq"].unique()}
    t0 = time.perf_counter()
    n_img = write_panoramas(people, root / IMAGE_DIR, names, args.stride)
    render_s = time.perf_counter() - t0
    mb = sum(p.stat().st_size for p in (root / IMAGE_DIR).rglob("*.jpg")) / 2**20
    return select_keyframes(load_jrdb(root), args.stride), {"render_s": render_s, "images": n_img, "render_mb": mb}


def bench_main(argv: list[str]) -> int:
    """Print the one-off costs and the two training speeds side by side (``--kinds``: the input kinds)."""
    if "--kinds" in argv:
        return scene_kinds.bench_main([a for a in argv if a != "--kinds"])
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_crops_") as d:
        tmp = Path(d)
        scenes, cost = _setup(args, tmp)
        t0 = time.perf_counter()
        bank = load_crop_bank(scenes, args.size, cache_dir=tmp / "crops")
        build_s = time.perf_counter() - t0
        cache_mb = sum(p.stat().st_size for p in (tmp / "crops").rglob("*") if p.is_file()) / 2**20
        sample = make_pair_sample(scenes, 3.0, seed=0)
        p = scenes.people
        keep = np.random.default_rng(0).permutation(len(sample.y))[:args.pairs]
        i, j = sample.i[keep], sample.j[keep]
        ia = bank.index(p["seq"].to_numpy()[i], p["frame"].to_numpy()[i], p["track"].to_numpy()[i])
        ib = bank.index(p["seq"].to_numpy()[j], p["frame"].to_numpy()[j], p["track"].to_numpy()[j])
        y = torch.from_numpy(sample.y[keep].astype(np.float32))
        speeds = _compare(args, bank, ia, ib, y)
    _report(args, cost, build_s, cache_mb, len(bank), bank.n_decoded, len(y), speeds)
    return 1 if (args.strict and speeds[0] / speeds[1] < 0.9) else 0


def _compare(args: argparse.Namespace, bank, ia: np.ndarray, ib: np.ndarray, y: torch.Tensor) -> tuple[float, float]:
    """(cached samples/s, in-memory samples/s), best of ``repeats`` alternating epochs on the same batches."""
    mem_a, mem_b = bank.take(ia).float().div_(255), bank.take(ib).float().div_(255)   # already in memory

    def cached(s: int, e: int):
        return bank.take(ia[s:e]).float().div_(255), bank.take(ib[s:e]).float().div_(255), y[s:e]

    def in_memory(s: int, e: int):
        return mem_a[s:e], mem_b[s:e], y[s:e]

    torch.manual_seed(0)
    model = _PairCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    _epoch(model, opt, len(y), args.batch_size, in_memory)  # warm-up: allocator, kernels
    best_c = best_m = 0.0
    for _ in range(args.repeats):  # alternating, so load from other processes hits both alike
        best_c = max(best_c, len(y) / _epoch(model, opt, len(y), args.batch_size, cached))
        best_m = max(best_m, len(y) / _epoch(model, opt, len(y), args.batch_size, in_memory))
    return best_c, best_m


def _report(args, cost: dict[str, float], build_s: float, cache_mb: float, n_crops: int, n_decoded: int,
            n_pairs: int, speeds: tuple[float, float]) -> None:
    cached, mem = speeds
    ratio = cached / mem
    print(f"generated scenes: {args.sequences} sequences x {args.frames} frames, keyframe stride {args.stride}; "
          f"crops {args.size[0]} x {args.size[1]}; {n_pairs} pairs, batch {args.batch_size}, threads {args.threads}")
    print(f"one-off  panoramas drawn   : {cost['render_s']:8.2f} s  ({cost['images']} images, "
          f"{cost['render_mb']:.1f} MB)")
    print(f"one-off  crop cache build  : {build_s:8.2f} s  ({n_crops} crops from {n_decoded} images, "
          f"{cache_mb:.1f} MB; the first epoch pays this once)")
    print(f"per epoch cached crops     : {cached:8.1f} samples/s  ({n_pairs / cached:.2f} s; memmap gathered "
          "per batch)")
    print(f"per epoch crops in memory  : {mem:8.1f} samples/s  ({n_pairs / mem:.2f} s; bare fwd+bwd+step)")
    print(f"ratio cached / in memory   : {ratio:8.3f}  goal >= 0.9: {'met' if ratio >= 0.9 else 'MISSED'}")
