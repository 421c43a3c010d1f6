"""``python -m helpers bench jobs``: ``--jobs 1`` against ``--jobs N`` on one profile (see bench/rerun.py)."""
from __future__ import annotations

from helpers.bench.rerun import bench_main as _bench


def bench_main(argv: list[str]) -> int:
    return _bench(argv, name="jobs")
