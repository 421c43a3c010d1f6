"""``python -m helpers bench rerun`` and ``bench jobs``: what cached results and parallel notebooks save.

rerun: a full run, then one parameter of a late notebook changed and only that notebook asked for
(``--only 05``): the second run reuses everything upstream. Printed side by side with the ratio; with
``--verify`` a full uncached run with the same changed parameter checks that the changed notebook's
metrics are the same either way.

jobs: the same profile with ``--jobs 1`` and ``--jobs N``, no result reused, side by side.

Each run uses a fresh cache folder (as a new clone would), so nothing from earlier work is reused.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from helpers.core import paths


def _run(args: list[str], cache: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "PAIRWISE_CACHE": str(cache)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "helpers", "run", *args], cwd=paths.PROJ_ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds, proc


def _metrics(run_dir: Path, stem: str) -> dict:
    m = json.loads((run_dir / stem / "metrics.json").read_text())
    return {k: v for k, v in m.items() if not k.endswith(("_s", "seconds", "speedup", "_mb"))}


def _print(rows: list[tuple[str, float]], ratio_label: str) -> None:
    width = max(len(r[0]) for r in rows)
    for label, seconds in rows:
        print(f"  {label:<{width}}  {seconds:8.1f} s")
    print(f"  {ratio_label}: {rows[0][1] / max(rows[1][1], 1e-9):.1f}x")


def _rerun(a: argparse.Namespace, tmp: Path) -> int:
    cache = tmp / "cache"
    full, _ = _run(["--profile", a.profile, "--out", str(tmp / "full")], cache)
    stem = a.change.split(".", 1)[0]
    again, _ = _run(["--profile", a.profile, "--only", stem[:2], "--set", a.change, "--out", str(tmp / "changed")],
                    cache)
    statuses = json.loads((tmp / "changed" / "run.json").read_text())["notebooks"]
    print(f"profile {a.profile}; changed {a.change}; second run: "
          + ", ".join(f"{s} {v['status']}" for s, v in statuses.items()))
    _print([("full run (fresh cache)", full), (f"--only {stem[:2]} after the change", again)],
           "the changed notebook alone is faster by")
    print(f"  goal >= 10x: {'met' if full / again >= 10 else 'MISSED'}")
    if a.verify:
        _run(["--profile", a.profile, "--set", a.change, "--no-cache", "--out", str(tmp / "check")], tmp / "cache2")
        full_stem = next(s for s in statuses if s.startswith(stem[:2]))
        same = _metrics(tmp / "changed", full_stem) == _metrics(tmp / "check", full_stem)
        print(f"  {full_stem} metrics equal to an uncached full run with the same change: {'yes' if same else 'NO'}")
        return 0 if same else 1
    return 0


def _jobs(a: argparse.Namespace, tmp: Path) -> int:
    _run(["--profile", a.profile, "--only", "00", "01", "--out", str(tmp / "warm")], tmp / "cache")  # data built
    one, _ = _run(["--profile", a.profile, "--no-cache", "--out", str(tmp / "one")], tmp / "cache")
    many, _ = _run(["--profile", a.profile, "--no-cache", "--jobs", str(a.jobs), "--out", str(tmp / "many")],
                   tmp / "cache")
    print(f"profile {a.profile}, {os.cpu_count()} cores, every kernel 2 threads")
    _print([("--jobs 1", one), (f"--jobs {a.jobs}", many)], f"--jobs {a.jobs} is faster by")
    return 0


def bench_main(argv: list[str], name: str = "rerun") -> int:
    ap = argparse.ArgumentParser(prog=f"python -m helpers bench {name}", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="default" if name == "rerun" else "smoke")
    ap.add_argument("--change", default="05_stacking.n_boot=1000", help="NB.KEY=VALUE changed in the second run")
    ap.add_argument("--verify", action="store_true", help="also run the changed profile in full, uncached")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        return _rerun(a, Path(tmp)) if name == "rerun" else _jobs(a, Path(tmp))
