"""Shared fixtures. The end-to-end smoke run happens once per test session."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory) -> Path:
    """The data and result cache of the session's smoke runs (PAIRWISE_CACHE)."""
    reuse = os.environ.get("PAIRWISE_SMOKE_CACHE")
    return Path(reuse) if reuse else tmp_path_factory.mktemp("cache")


def run_helpers(args: list[str], cache: Path, timeout: int = 1500, prefix: tuple[str, ...] = ()):
    """``python -m helpers ARGS`` from the project root with the session's cache."""
    env = {**os.environ, "PAIRWISE_CACHE": str(cache)}
    return subprocess.run([*prefix, sys.executable, "-m", "helpers", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, smoke_cache) -> Path:
    """Run every notebook with the smoke profile once; return the run folder.

    Set PAIRWISE_SMOKE_RUN (and PAIRWISE_SMOKE_CACHE) to an existing run folder (and its cache) to
    reuse them while developing tests.
    """
    reuse = os.environ.get("PAIRWISE_SMOKE_RUN")
    if reuse:
        return Path(reuse)
    out = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_helpers(["run", "--profile", "smoke", "--out", str(out)], smoke_cache)
    if proc.returncode != 0:
        failures = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/failure.json")}
        pytest.fail(f"smoke run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n"
                    f"{json.dumps(failures, indent=1)[:6000]}")
    return out


def read_metrics(run: Path, stem: str) -> dict:
    return json.loads((run / stem / "metrics.json").read_text())


def check_recall_over_all_pairs(run: Path, m: dict, prefix: str = "scene_pairs") -> None:
    """The all-pairs recall of 02 and 03: the sampled recall times the share of interacting test pairs
    notebook 01 sampled (the dropped ones are misses), or None when meta.json does not count them."""
    import pytest

    meta = json.loads((run / "01_pair_sampling" / "scene_pairs" / "meta.json").read_text())
    rec, n_sampled = m[f"{prefix}.test_recall_sampled"], m[f"{prefix}.test_sampled_interacting_pairs"]
    if "all_interacting_pairs" not in meta:
        assert m[f"{prefix}.test_recall_all_pairs"] is None
        return
    n_all = meta["all_interacting_pairs"]["test"]
    assert m[f"{prefix}.test_all_interacting_pairs"] == n_all >= n_sampled
    assert m[f"{prefix}.test_recall_all_pairs"] == pytest.approx(rec * n_sampled / n_all, abs=1e-9)
