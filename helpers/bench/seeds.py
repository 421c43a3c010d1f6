"""``python -m helpers bench seeds``: seed replicas of one recipe trained three ways, side by side.

For stage 1 on the digit pairs (the conv model notebook 02 builds) and for the scene geometry model (the MLP
notebook 02 trains on scene pairs), both with the profile's data and notebook 02's recipe, N seeds are
trained one after another (`train_model` per seed: the baseline), batched in one process (vmap), and in
single-threaded worker processes; each way's wall time and its ratio to one after another are printed with
the thread count, with how far each way's numbers are from one after another's (first-epoch training loss,
test accuracy per seed), and the way `train_replicas(mode="auto")` would take from these timings. The
timings are recorded (``--record``) for the chooser. Ratios, not a timed test: a shared machine moves them.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from helpers.bench.scenes import _scene_splits
from helpers.data.digits import make_digit_pairs
from helpers.data.pairs import _uses_pair, load_pair_folder, make_inputs
from helpers.models.registry import create_model
from helpers.stages.stage1 import make_stage1_model_spec
from helpers.training.loop import predict
from helpers.training.recipes import make_train_config
from helpers.training.replicas import (choose_mode, MODES, record_modes, replica_kind, train_replicas,
                                       vmap_unsupported)
from helpers.training.tasks import BinaryTask
from helpers.workbook.plan import resolve_parameters

SEEDS = (42, 123, 456, 2023, 2024)      # notebook 04's grid seeds


def _parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m helpers bench seeds",
                                 description="N seeds of stage 1 (digits) and of the scene geometry model trained "
                                             "one after another, batched (vmap) and in worker processes.")
    ap.add_argument("--profile", default="default", help="params/<profile>/ of notebooks 00, 01 and 02")
    ap.add_argument("--seeds", type=int, default=5, help="replicas (notebook 04's first N grid seeds)")
    ap.add_argument("--epochs", type=int, default=1, help="cap on the recipe's epochs (0: the recipe's own)")
    ap.add_argument("--pairs", type=int, default=0, help="cap on training pairs, validation and test pairs capped in "
                                                         "the profile's proportion (0: all of the profile's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["digits", "scenes"], choices=["digits", "scenes"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--record", action="store_true", help="record the timings for train_replicas(mode='auto')")
    return ap.parse_args(argv)


def _datasets(args, p00: dict, p01: dict) -> dict:
    """name -> PairSplits of the profile: digit pairs as notebook 00 builds them, scene pairs as notebook 01."""
    out = {}
    if "digits" in args.models:
        folder = make_digit_pairs(seed=p00["seed"], train_sources=p00["train_sources"],
                                  val_sources=p00["val_sources"], pos_rate=p00["pos_rate"],
                                  n_pairs=(p00["n_pairs_train"], p00["n_pairs_val"], p00["n_pairs_test"]))
        out["digits"] = load_pair_folder(folder, name="digit_pairs")
    if "scenes" in args.models:
        # Geometry needs no stitched images: the pairs are the same without rendering them.
        out["scenes"] = _scene_splits({**p01, "render_images": False})[1]
    return out


def _setup(splits, p02: dict, args) -> dict:
    """Notebook 02's model spec and recipe for these splits (epochs and pairs capped), the data tuples."""
    use_pair = _uses_pair(splits)
    spec = make_stage1_model_spec(splits, p02)
    cfg = make_train_config(p02, splits.kind, log_every=0, tensorboard=False, checkpoint=False, resume=False,
                            num_threads=args.threads)
    if args.epochs:
        cfg = dataclasses.replace(cfg, epochs=min(cfg.epochs, args.epochs))
    n = min(args.pairs or len(splits.train.y), len(splits.train.y))
    frac = n / len(splits.train.y)

    def rows(s):
        k = max(1, int(round(frac * len(s.y))))
        return (*[a[:k] for a in make_inputs(s, use_pair)], s.y[:k])

    return {"spec": spec, "cfgs": [dataclasses.replace(cfg, seed=s) for s in SEEDS[:args.seeds]],
            "train": rows(splits.train), "val": rows(splits.val), "test": rows(splits.test), "n": n}


def _models(spec: dict, cfgs) -> list:
    out = []
    for c in cfgs:
        torch.manual_seed(c.seed)     # as notebooks 02 and 04 seed a model before building it
        out.append(create_model(spec["name"], **spec["kwargs"]))
    return out


def _run_mode(mode: str, s: dict) -> dict:
    models = _models(s["spec"], s["cfgs"])
    t0 = time.perf_counter()
    run = train_replicas(models, BinaryTask(), s["train"], s["val"], s["cfgs"], mode=mode)
    seconds = time.perf_counter() - t0
    test_y = s["test"][-1]
    acc = [float(((predict(r.model, BinaryTask(), s["test"][:-1]) >= 0.5) == test_y).mean()) for r in run.results]
    return {"seconds": seconds, "first_loss": [r.history[0]["train_loss"] for r in run.results], "test_acc": acc,
            "epochs": [r.epochs_run for r in run.results]}


def _warm_up(s: dict, modes) -> None:
    """One short run per in-process way first (imports, allocator, kernels), so no way pays them in its timing."""
    short = {**s, "train": tuple(a[:2 * s["cfgs"][0].batch_size] for a in s["train"]),
             "cfgs": [dataclasses.replace(c, epochs=1) for c in s["cfgs"]]}
    for mode in ("sequential", "vmap"):
        if mode in modes:
            train_replicas(_models(s["spec"], short["cfgs"]), BinaryTask(), short["train"], s["val"], short["cfgs"],
                           mode=mode)


def _print_header(name: str, s: dict, args) -> None:
    print(f"\n{name}: {s['spec']['name']} x {args.seeds} seeds, {s['n']:,} training / {len(s['val'][-1]):,} validation"
          f" / {len(s['test'][-1]):,} test pairs, {s['cfgs'][0].epochs} epochs (cap {args.epochs or 'none'}), batch "
          f"{s['cfgs'][0].batch_size}, threads {args.threads}")
    print(f"  {'way':<12}{'seconds':>9}{'x one-after-another':>21}{'max rel d first loss':>22}"
          f"{'max |d test acc|':>18}  epochs run", flush=True)


def _print_row(mode: str, r: dict, base: dict) -> None:
    d_loss = max(abs(a / b - 1) for a, b in zip(r["first_loss"], base["first_loss"]))
    d_acc = max(abs(a - b) for a, b in zip(r["test_acc"], base["test_acc"]))
    print(f"  {mode:<12}{r['seconds']:>9.1f}{base['seconds'] / r['seconds']:>20.2f}x{d_loss:>22.1e}"
          f"{d_acc:>18.4f}  {r['epochs']}", flush=True)


def bench_main(argv: list[str]) -> int:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    params = resolve_parameters(args.profile, ["00_data_audit", "01_pair_sampling", "02_stage1"])
    p00, p01, p02 = (params[k]["resolved"] for k in ("00_data_audit", "01_pair_sampling", "02_stage1"))
    modes = ["sequential", *[m for m in args.modes if m != "sequential"]]
    print(f"{args.profile} profile, {args.seeds} seeds, torch threads {args.threads} (worker processes: 1 thread "
          f"each, one per core at most); the baseline of every ratio is one after another, same data, same run",
          flush=True)
    for name, splits in _datasets(args, p00, p01).items():
        s = _setup(splits, p02, args)
        why = vmap_unsupported(_models(s["spec"], s["cfgs"]), s["train"], s["cfgs"])
        run_modes = [m for m in modes if not (m == "vmap" and why)]
        _warm_up(s, run_modes)
        _print_header(name, s, args)
        rows: dict[str, dict] = {}
        for m in run_modes:
            rows[m] = _run_mode(m, s)
            _print_row(m, rows[m], rows["sequential"])
        if why:
            print(f"  vmap not run: {why}")
        timings = {m: r["seconds"] for m, r in rows.items()}
        mode, reason = choose_mode(timings)
        print(f"  train_replicas(mode='auto') takes: {mode} ({reason})")
        if args.record:
            models = _models(s["spec"], s["cfgs"])
            record_modes(replica_kind(models, s["cfgs"], s["n"]), timings, source="python -m helpers bench seeds")
    return 0
