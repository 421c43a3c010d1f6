"""`python -m helpers diagnose`: the curve doctor from a shell (text and --json)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers.evaluation.doctor import make_synthetic_history
from helpers.workbook.diagnose_cli import diagnose_main


def test_cli_json_and_text(tmp_path, capsys):
    h = make_synthetic_history("plateau")
    p = tmp_path / "history.json"
    p.write_text(h.to_json(orient="records"))
    assert diagnose_main([str(p), "--json", "--ceiling", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"findings", "recommendations"}
    assert out["findings"][0]["kind"] == "plateau"
    assert set(out["findings"][0]) >= {"kind", "metric", "epoch", "evidence"}
    assert set(out["recommendations"][0]) >= {"change", "reason"}
    assert diagnose_main([str(tmp_path), "--metric", "val_loss"]) == 0      # a run folder
    text = capsys.readouterr().out
    assert "ReduceLROnPlateau" in text and "EarlyStopping" in text


def test_cli_bad_input_is_a_message(tmp_path, capsys):
    bad = tmp_path / "h.csv"
    bad.write_text("step_count,foo\n1,2\n")
    assert diagnose_main([str(bad)]) == 2
    assert "no epoch column" in capsys.readouterr().err
    assert diagnose_main([str(tmp_path / "missing.json")]) == 2


def test_cli_text_lists_findings_and_ranked_recommendations(tmp_path, capsys):
    p = tmp_path / "h.csv"
    make_synthetic_history("overfitting").to_csv(p, index=False)
    assert diagnose_main([str(p)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"diagnosis of {p}  (metric: val_cos, higher is better)")
    assert "  [overfitting] epoch " in text
    assert "  1. dropout 0.15 → 0.2, weight_decay 0.0001 → 0.0002" in text and "     because overfitting: " in text
    assert "on the same curve (val_cos, mode max):" in text


def test_cli_via_python_m_helpers(tmp_path):
    p = tmp_path / "h.csv"
    make_synthetic_history("oscillation").to_csv(p, index=False)
    root = Path(__file__).resolve().parents[3]
    r = subprocess.run([sys.executable, "-m", "helpers", "diagnose", str(p), "--json"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["findings"][0]["kind"] == "oscillation"
