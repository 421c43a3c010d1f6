"""``python -m helpers bench backbones``: timm backbones measured the timm way, side by side."""
from __future__ import annotations

import argparse
import sys

from helpers.core.device import resolve_device
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_json
from helpers.core.taskspec import make_task_specs
from helpers.data.tables import DEFAULT_TASKS
from helpers.evaluation.speed import evaluate_backbone_speed


def _make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m helpers bench backbones",
                                 description="timm benchmark.py's method (warm-up, timed loop, inference_mode, "
                                             "fwd+loss+bwd+step, OOM batch decay) on multi-task heads, plus "
                                             "peak memory; each backbone in a fresh process.")
    ap.add_argument("--models", nargs="+", default=["resnet18"], help="timm names; 'a+b' = ensemble")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256, help="starting batch (decays on out of memory)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40, help="timed iterations")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="autocast: float16 on CUDA, bfloat16 on CPU")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--pretrained-file", action="append", default=[], metavar="MODEL=PATH")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the measuring process")
    ap.add_argument("--same-process", action="store_true", help="measure here (peak RSS then accumulates)")
    ap.add_argument("--simulate-oom-above", type=int, default=0, help="testing: batches above this raise OOM")
    ap.add_argument("--json", help="also write the results here")
    return ap


def _parse_args(argv: list[str]) -> tuple[argparse.Namespace, str, dict[str, str]]:
    """(arguments, the resolved device, ``--pretrained-file`` as {model: path}); exits on a bad value."""
    ap = _make_parser()
    args = ap.parse_args(argv)
    try:
        device = str(resolve_device(args.device))
    except WorkbookError as e:
        ap.error(str(e))
    files = {}
    for item in args.pretrained_file:
        if "=" not in item:
            ap.error(f"--pretrained-file {item!r}: expected MODEL=PATH")
        k, v = item.split("=", 1)
        files[k] = v
    return args, device, files


def _measure_models(args: argparse.Namespace, device: str, files: dict[str, str]) -> list[dict]:
    """One `evaluate_backbone_speed` row per ``--models`` entry."""
    tasks = make_task_specs(args.tasks)
    return [evaluate_backbone_speed(m, args.img_size, args.batch, tasks, args.warmup, args.steps, device,
                                    args.amp, args.channels_last, files, not args.same_process, args.threads,
                                    args.simulate_oom_above) for m in args.models]


def _print_table(rows: list[dict], args: argparse.Namespace, device: str) -> None:
    print(f"device={device} img_size={args.img_size} warmup={args.warmup} steps={args.steps} amp={args.amp} "
          f"channels_last={args.channels_last}")
    hdr = f"{'model':<34}{'params(M)':>10}{'batch':>7}{'infer/s':>10}{'ms':>8}{'train/s':>10}{'ms':>8}{'peak MB':>10}{'GMACs':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        g = f"{r['gmacs']:.2f}" if r.get("gmacs") is not None else "n/a"
        print(f"{r['model']:<34}{r['params_m']:>10.2f}{r['batch']:>7d}{r['infer_samples_per_s']:>10.1f}"
              f"{r['infer_step_ms']:>8.1f}{r['train_samples_per_s']:>10.1f}{r['train_step_ms']:>8.1f}"
              f"{r['peak_mem_mb']:>10.0f}{g:>8}" + (f"  (OOM at {r['oom_batches']})" if r["oom_batches"] else ""))
    print(f"peak memory: {rows[0]['mem_kind']}; GMACs need fvcore (optional)"
          + (f"; 1-min load average {rows[-1]['load_avg_1m']:.1f} on {rows[-1]['cpu_count']} CPUs"
             if rows[-1].get("load_avg_1m") is not None else ""))


def bench_main(argv: list[str]) -> int:
    """``python -m helpers bench backbones --models resnet18 convnext_tiny --img-size 64 --batch 32``."""
    args, device, files = _parse_args(argv)
    try:
        rows = _measure_models(args, device, files)
    except WorkbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_table(rows, args, device)
    if args.json:
        atomic_write_json(args.json, rows)
    return 0
