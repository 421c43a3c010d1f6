"""Pair sampling: seam geometry, the distance rule, group sampling, capping, the pipeline, datasets."""
from __future__ import annotations

from helpers.bench.sampling import bench_main



def test_bench_runs_small(capsys):
    rc = bench_main(["--frames", "60", "--sequences", "3", "--subset-frames", "10"])
    out = capsys.readouterr().out
    assert rc == 0 and "ratio" in out and "match" in out
