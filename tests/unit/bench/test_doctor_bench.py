"""`python -m helpers bench doctor`: the timed step logs are judged in full (they carry validation columns)."""
from __future__ import annotations

from helpers.bench.doctor import time_rows


def test_timed_logs_are_judged(tmp_path):
    (r,) = time_rows([3000], tmp_path)
    assert r["rows"] == 3000 and r["seconds"] > 0 and r["label"] != "unjudgeable"
