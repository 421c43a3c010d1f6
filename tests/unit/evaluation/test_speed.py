"""Unit tests of helpers/backbones.py (notebook 06): tasks, models, table loader, benchmark, reports."""
from __future__ import annotations

import pytest
import torch

from helpers.core.taskspec import make_task_specs
from helpers.data.tables import DEFAULT_TASKS
from helpers.evaluation.speed import (decay_batch, evaluate_backbone_speed, OOMAtEveryBatch, peak_rss_mb,
                                      run_with_batch_decay)


torch.set_num_threads(1)

TASKS = make_task_specs(DEFAULT_TASKS)


# -------------------------------------------------------------------------------------- benchmark
def test_batch_decay_follows_timm():
    seq, b = [256], 256
    while b > 64:
        b = decay_batch(b)
        seq.append(b)
    assert seq == [256, 192, 128, 96, 64]


def test_oom_retry_lands_on_a_smaller_batch():
    calls = []

    def measure(b):
        calls.append(b)
        if b > 100:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {b}")
        return {"ok": True}

    r = run_with_batch_decay(measure, 256)
    assert r["batch"] == 96 and r["oom_batches"] == [256, 192, 128] and calls == [256, 192, 128, 96]
    with pytest.raises(OOMAtEveryBatch):
        run_with_batch_decay(lambda b: (_ for _ in ()).throw(MemoryError("no")), 4)
    with pytest.raises(ValueError, match="not memory"):   # other errors are not retried
        run_with_batch_decay(lambda b: (_ for _ in ()).throw(ValueError("not memory")), 8)


def test_simulated_oom_in_the_real_measurement():
    r = evaluate_backbone_speed("convnext_atto", 32, 8, TASKS, warmup=0, steps=1, fresh_process=False,
                                   simulate_oom_above=4)
    assert r["batch"] == 4 and r["oom_batches"] == [8, 6]
    for k in ("train_samples_per_s", "infer_samples_per_s", "train_step_ms", "peak_mem_mb", "params_m"):
        assert r[k] > 0, k
    assert r["mem_kind"] == "cpu_peak_rss" and r["peak_mem_mb"] >= r["infer_peak_mem_mb"]
    assert r["gmacs"] is None or r["gmacs"] > 0


def test_fresh_process_measurement_reports_its_own_memory():
    big = torch.ones(400 * 2**20 // 4)   # 400 MB held here must not show up in the child's peak
    big += 1
    r = evaluate_backbone_speed("convnext_atto", 32, 2, TASKS, warmup=0, steps=1, fresh_process=True,
                                   threads=1)
    assert r["batch"] == 2 and r["model"] == "convnext_atto"
    assert 0 < r["rss_before_model_mb"] < r["peak_mem_mb"]
    # Linux's ru_maxrss would hand the child this process's peak (which holds the 400 MB); VmHWM does not.
    assert r["peak_mem_mb"] < peak_rss_mb() - 200
    del big
