"""``python -m helpers bench multiseed``: the worker pool against serial training, and a planted crash."""
from __future__ import annotations

import argparse
import math
import os
import time

from helpers.stages.multiseed import _crash
from helpers.training.workers import resolve_workers, run_in_workers


def sleep_task(task: dict) -> dict:
    """A trivial worker task for the pool benchmark and tests: burn CPU or fail on demand."""
    if task.get("crash"):
        _crash(task["crash"])
    t0 = time.perf_counter()
    x = 0.0
    for i in range(int(task.get("work", 0))):
        x += math.sqrt(i)
    if task.get("sleep"):
        time.sleep(task["sleep"])
    return {"pid": os.getpid(), "value": task.get("value"), "seconds": time.perf_counter() - t0,
            "threads": os.environ.get("OMP_NUM_THREADS")}


def bench_main(argv: list[str]) -> int:
    """``python -m helpers bench multiseed``: worker-pool speed-up and crash isolation on trivial tasks."""
    ap = argparse.ArgumentParser(prog="python -m helpers bench multiseed",
                                 description="Runs N CPU-bound trivial tasks serially and in the worker pool "
                                             "(one of them crashing hard) and prints the speed-up.")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--work", type=int, default=10_000_000, help="loop iterations per task")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args(argv)
    tasks = [{"value": i, "work": args.work} for i in range(args.tasks)]
    t0 = time.perf_counter()
    for t in tasks:
        sleep_task(t)
    serial = time.perf_counter() - t0
    n, th = resolve_workers(len(tasks), args.workers)
    t0 = time.perf_counter()
    out = run_in_workers(sleep_task, tasks + [{"value": -1, "crash": "segv"}], n, th)
    pooled = time.perf_counter() - t0
    print(f"{args.tasks} tasks: serial {serial:.2f} s; {n} workers x {th} threads {pooled:.2f} s "
          f"(speed-up {serial / pooled:.2f}x, includes process start-up)")
    print(f"planted hard crash reported as: {out[-1].error}")
    ok = all(o.ok for o in out[:-1]) and not out[-1].ok
    print("crash isolation:", "ok" if ok else "BROKEN")
    return 0 if ok else 1
