"""``python -m helpers bench scenes`` (also ``bench crops --kinds``): stage 1's input kinds on the scene data of a profile (default:
the default profile's generated scenes), one line each, side by side: training samples/s per epoch of
geometry (cue vectors + pair geometry, MLP), appearance (the two people's crops, siamese CNN) and both
(crops + pair geometry), with the models notebook 02 builds from that profile's parameters, and what the
crops cost once (building or reading the crop cache, the crops held in memory).

The scene pairs are made as notebook 01 makes them (its parameters of the profile); the crops come from
the workbook's crop cache (so a second run, or a run after notebook 02, reads them)."""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from helpers.data.crops import make_pair_crops, make_scene_inputs
from helpers.data.jrdb import load_scenes
from helpers.data.pair_sampling import make_pair_sample
from helpers.data.pairs import PairSet, PairSplits
from helpers.data.scene_pairs import make_scene_pair_dataset
from helpers.data.scenes import select_keyframes
from helpers.models.registry import count_parameters, create_model
from helpers.evaluation.scene_kinds import make_crop_model_spec, make_crop_train_config
from helpers.stages.stage1 import make_stage1_model_spec
from helpers.training.loop import train_model
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask
from helpers.workbook.plan import resolve_parameters

KINDS = ("geometry", "appearance", "both")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m helpers bench scenes",
                                 description="Training samples/s per epoch of stage 1 on geometry, appearance and "
                                             "both, side by side, on a profile's scene data.")
    ap.add_argument("--profile", default="default", help="params/<profile>/ of notebooks 01 and 02")
    ap.add_argument("--epochs", type=int, default=1, help="epochs timed per kind (the median is reported)")
    ap.add_argument("--pairs", type=int, default=0, help="training pairs per epoch (0: all of the profile's)")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def _scene_splits(p01: dict) -> tuple[object, PairSplits, dict]:
    """The scenes and scene pair splits notebook 01 makes with parameters ``p01``."""
    stride = int(p01["keyframe_stride"])
    scenes = select_keyframes(load_scenes(p01["jrdb_root"] or None, n_sequences=p01["n_sequences"],
                                          frames_per_sequence=p01["frames_per_sequence"], seed=p01["seed"],
                                          render_stride=stride if p01["render_images"] else 0), stride)
    sample = make_pair_sample(scenes, p01["distance_multiplier"], p01["use_wrap"], p01["use_group_sampling"],
                              p01["max_group_samples_ratio"], p01["max_negatives_per_frame"],
                              p01["stage1_balance_ratio"], seed=p01["seed"])
    ds = make_scene_pair_dataset(scenes, sample, p01["val_fraction"], p01["test_fraction"], p01["seed"])
    sets = {k: PairSet(a["xa"], a["xb"], a["y"], extras={c: a[c] for c in ("pair", "seq", "frame", "track_a", "track_b")})
            for k, a in ds.items()}
    return scenes, PairSplits("scene_pairs", "vector", scenes.generated, scenes.source, sets["train"], sets["val"],
                              sets["test"]), ds


def _time_kind(kind: str, splits: PairSplits, crops, p02: dict, n: int, epochs: int) -> dict:
    """Train ``kind`` for ``epochs`` epochs on the first ``n`` training pairs (validation on 256 pairs)."""
    if kind == "geometry":
        spec = make_stage1_model_spec(splits, p02)
        cfg = make_train_config(p02, "vector", epochs=epochs)
    else:
        spec = make_crop_model_spec(p02, kind, int(splits.train.extras["pair"].shape[1]))
        cfg = make_crop_train_config(p02)
    cfg.epochs, cfg.patience, cfg.log_every, cfg.tensorboard = epochs, 0, 0, False
    torch.manual_seed(0)
    model = create_model(spec["name"], **spec["kwargs"])
    if kind != "geometry":
        model.set_crops(crops.crops)
    train = make_scene_inputs(kind, splits.train, crops.rows["train"] if crops else None)
    val = make_scene_inputs(kind, splits.val, crops.rows["val"] if crops else None)
    res = train_model(model, BinaryTask(), (*(a[:n] for a in train), splits.train.y[:n]),
                      (*(a[:256] for a in val), splits.val.y[:256]), cfg, out_dir=None, device="cpu")
    sps = [r["samples_per_s"] for r in res.history]
    return {"model": spec["name"], "params": count_parameters(model), "samples_per_s": float(np.median(sps)),
            "epoch_s": n / float(np.median(sps))}


def bench_main(argv: list[str]) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    params = resolve_parameters(args.profile, ["01_pair_sampling", "02_stage1"])
    p01, p02 = params["01_pair_sampling"]["resolved"], dict(params["02_stage1"]["resolved"])
    p02["num_threads"] = args.threads
    t0 = time.perf_counter()
    scenes, splits, _ = _scene_splits(p01)
    setup_s = time.perf_counter() - t0
    n = min(args.pairs or len(splits.train), len(splits.train))
    crops, crop_s = None, 0.0
    if scenes.n_images:
        t0 = time.perf_counter()
        crops = make_pair_crops(scenes, {"train": splits.train, "val": splits.val}, list(p02["crop_size"]))
        crop_s = time.perf_counter() - t0
    kinds = KINDS if crops is not None else ("geometry",)
    rows = {k: _time_kind(k, splits, crops, p02, n, args.epochs) for k in kinds}
    print(f"{args.profile} profile scene data ({'generated' if scenes.generated else 'JRDB'}): {len(scenes.sequences)} "
          f"sequences, {scenes.n_frames:,} keyframes, {scenes.n_images:,} stitched images; {n:,} training pairs per "
          f"epoch, batch {p02['batch_size']}, threads {args.threads} (scenes and pairs made in {setup_s:.1f} s)")
    if crops is not None:
        print(f"crops {p02['crop_size'][0]} x {p02['crop_size'][1]}: {len(crops.crops):,} people, "
              f"{crops.crops.nbytes / 2**20:.0f} MB uint8 in memory, {crop_s:.1f} s to "
              + (f"build the cache ({crops.n_decoded:,} images decoded)" if crops.n_decoded else "read the cache"))
    else:
        print("no stitched images: appearance and both need crops; geometry only")
    print(f"{'input kind':<12}{'model':<16}{'parameters':>12}{'samples/s':>12}{'s / epoch':>11}")
    for k, r in rows.items():
        print(f"{k:<12}{r['model']:<16}{r['params']:>12,}{r['samples_per_s']:>12,.0f}{r['epoch_s']:>11.1f}")
    return 0
