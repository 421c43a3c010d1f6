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
def smoke_run(tmp_path_factory) -> Path:
    """Run every notebook with the smoke profile once; return the run folder.

    Set PAIRWISE_SMOKE_RUN to an existing run folder to reuse it while developing tests.
    """
    reuse = os.environ.get("PAIRWISE_SMOKE_RUN")
    if reuse:
        return Path(reuse)
    out = tmp_path_factory.mktemp("smoke") / "run"
    env = {**os.environ, "PAIRWISE_CACHE": str(tmp_path_factory.mktemp("cache"))}
    proc = subprocess.run([sys.executable, "-m", "helpers", "run", "--profile", "smoke", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    if proc.returncode != 0:
        failures = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/failure.json")}
        pytest.fail(f"smoke run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}\n"
                    f"{json.dumps(failures, indent=1)[:6000]}")
    return out


def read_metrics(run: Path, stem: str) -> dict:
    return json.loads((run / stem / "metrics.json").read_text())
