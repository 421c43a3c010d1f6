"""``python -m helpers bench doctor``: the curve doctor's planted-fault benchmark (does it name the planted
cause, does its first remedy help beyond seed noise, beside a random remedy) and its speed on step-level logs
(100k and 1M rows: the doctor is linear in rows)."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def time_rows(rows: list[int], folder: Path) -> list[dict]:
    """Write a step-level CSV log of each size (a noisy falling loss, as a step logger writes it) and time
    `diagnose_history` on it, reading the file included."""
    from helpers.evaluation.doctor import diagnose_history  # deferred: `--help` should not load pandas-heavy modules
    out = []
    for n in rows:
        rng = np.random.default_rng(0)
        t = np.arange(n)
        loss = 2.0 * np.exp(-t / (n / 5)) + 0.3 + 0.05 * rng.standard_normal(n)
        acc = 0.9 - 0.4 * np.exp(-t / (n / 5)) + 0.01 * rng.standard_normal(n)
        p = folder / f"steps_{n}.csv"
        # validation columns on every row, so that every rule runs (a log without them is not judged)
        pd.DataFrame({"epoch": t / 1000, "step": t, "train_loss": loss, "val_loss": loss * 1.1,
                      "val_accuracy": acc, "lr": np.full(n, 1e-3)}).to_csv(p, index=False)
        t0 = time.perf_counter()
        d = diagnose_history(p)
        out.append({"rows": n, "seconds": time.perf_counter() - t0, "label": d.label})
    return out


def bench_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers bench doctor", description=__doc__)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per planted fault (>= 2 for the paired test)")
    ap.add_argument("--rows", type=int, nargs="*", default=[100_000, 1_000_000], help="log sizes to time")
    ap.add_argument("--skip-faults", action="store_true", help="only time the log sizes")
    ap.add_argument("--out", default=None, help="write the fault table as CSV here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for r in time_rows(args.rows, Path(tmp)):
            print(f"diagnose on a {r['rows']:,}-row step log: {r['seconds']:.2f} s ({r['label']})")
    if args.skip_faults:
        return 0
    from helpers.stages.planted import run_planted_faults  # deferred: torch loads only when the faults run
    table = run_planted_faults(seeds=max(2, args.seeds), log=print)
    a = table.attrs
    print(f"\nplanted faults: doctor named the cause in {a['named']} of {a['faults']} (random kind: {a['random_named']}); "
          f"its first remedy helped beyond seed noise in {a['helped']} (random remedy: {a['random_helped']}); "
          f"{a['seeds']} seeds, {a['seconds']:.0f} s")
    if args.out:
        table.to_csv(args.out, index=False)
    return 0
