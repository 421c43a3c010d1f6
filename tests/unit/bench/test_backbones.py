"""Unit tests of helpers/backbones.py (notebook 06): tasks, models, table loader, benchmark, reports."""
from __future__ import annotations

import torch

from helpers.bench.backbones import bench_main


torch.set_num_threads(1)


def test_bench_cli_prints_the_table(capsys):
    rc = bench_main(["--models", "convnext_atto", "--img-size", "32", "--batch", "4", "--warmup", "0",
                        "--steps", "1", "--same-process", "--simulate-oom-above", "3", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0 and "convnext_atto" in out and "OOM at [4]" in out and "peak MB" in out
