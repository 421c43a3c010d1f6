"""`python -m helpers diagnose`: the curve doctor from a shell (text and --json); bad input is one line."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.core.paths import PROJ_ROOT
from helpers.evaluation.doctor import make_synthetic_history
from helpers.workbook.diagnose_cli import diagnose_main

CASES = PROJ_ROOT / "tests" / "fixtures" / "histories" / "cases"


def test_cli_json_and_text(tmp_path, capsys):
    h = make_synthetic_history("plateau")
    p = tmp_path / "history.json"
    p.write_text(h.to_json(orient="records"))
    assert diagnose_main([str(p), "--json", "--ceiling", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"findings", "recommendations"}
    assert out["findings"][0]["kind"] == "plateau"
    assert set(out["findings"][0]) >= {"kind", "metric", "epoch", "evidence"}
    assert set(out["recommendations"][0]) >= {"change", "reason", "confidence"}
    assert diagnose_main([str(tmp_path), "--metric", "val_loss"]) == 0      # a run folder
    text = capsys.readouterr().out
    assert "ReduceLROnPlateau" in text and "EarlyStopping" in text


@pytest.mark.parametrize("name", ["workbook_smoke_history.json", "nan_inf_losses.json", "duplicate_epochs.csv"])
@pytest.mark.parametrize("as_json", [False, True])
def test_cli_answers_awkward_histories(name, as_json, capsys):
    assert diagnose_main([str(CASES / name)] + (["--json"] if as_json else [])) == 0
    out = capsys.readouterr().out
    if as_json:
        kinds = [f["kind"] for f in json.loads(out)["findings"]]
        assert kinds and {"too_short", "divergence", "plateau", "healthy", "noise"} & set(kinds)
    else:
        assert "findings:" in out and "would stop" in out


def test_cli_short_history_in_text_mode_has_a_verdict(capsys):
    # a short history used to end in KeyError: 'verdict' in describe_rules
    assert diagnose_main([str(CASES / "workbook_smoke_history.json")]) == 0
    text = capsys.readouterr().out
    assert "[healthy] epoch 4: only 4 epochs: too few for the trend rules" in text
    assert "[not judged: 4 epochs are too few to judge]" in text and "read as: workbook history.json" in text


def test_cli_nan_inf_and_duplicates(tmp_path, capsys):
    assert diagnose_main([str(CASES / "nan_inf_losses.json")]) == 0
    assert "  [divergence] epoch 12:" in capsys.readouterr().out
    assert diagnose_main([str(CASES / "duplicate_epochs.csv")]) == 0
    assert "note: 3 repeated epoch rows" in capsys.readouterr().out
    rows = [{"epoch": e, "train_loss": math.nan, "val_loss": math.inf} for e in range(1, 10)]
    p = tmp_path / "h.json"
    p.write_text(json.dumps(rows, allow_nan=True))
    assert diagnose_main([str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["findings"][0]["kind"] == "divergence"


@pytest.mark.parametrize("name, content, needle", [
    ("empty.csv", b"", "the file is empty; expected a header row"),
    ("binary.json", bytes(range(256)) * 4, "not a text file"),
    ("binary.csv", bytes(range(256)), "not a text file"),
    ("bad.json", b"{not json", "invalid JSON"),
    ("list.json", b"[1, 2, 3]", "expected a list of per-epoch objects"),
    ("h.csv", b"step_count,foo\n1,2\n", "no epoch column"),
    ("h.txt", b"epoch\n1\n2\n", "no loss or metric column"),
    ("h.parquet", b"PAR1", "unknown history format"),
])
def test_cli_bad_input_is_one_line_naming_the_file(tmp_path, capsys, name, content, needle):
    p = tmp_path / name
    p.write_bytes(content)
    assert diagnose_main([str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and str(p) in err and err.count("\n") == 1


def test_cli_missing_file_and_empty_folder(tmp_path, capsys):
    assert diagnose_main([str(tmp_path / "missing.json")]) == 2
    assert "file not found" in capsys.readouterr().err
    assert diagnose_main([str(tmp_path)]) == 2
    assert "a folder without history.json" in capsys.readouterr().err


def test_cli_text_lists_findings_and_ranked_recommendations(tmp_path, capsys):
    p = tmp_path / "h.csv"
    make_synthetic_history("overfitting").to_csv(p, index=False)
    assert diagnose_main([str(p)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"diagnosis of {p}  (metric: val_cos, higher is better)")
    assert "  [overfitting] epoch " in text
    # a CSV without its config: the change is stated as a target or a factor, not as M4's values
    assert "  1. dropout → 0.2 (not in the log), weight_decay ×2 (not in the log)" in text
    assert "     because overfitting: " in text
    assert "on the same curve (val_cos, mode max):" in text


def test_cli_schedule_ended_json_keeps_the_kind_name(tmp_path, capsys):
    p = tmp_path / "h.csv"
    make_synthetic_history("schedule_ended").to_csv(p, index=False)
    assert diagnose_main([str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["findings"][0]["kind"] == "schedule_ended"
    assert out["recommendations"][0]["name"] == "longer_schedule"


def test_cli_via_python_m_helpers(tmp_path):
    p = tmp_path / "h.csv"
    make_synthetic_history("oscillation").to_csv(p, index=False)
    root = Path(__file__).resolve().parents[3]
    r = subprocess.run([sys.executable, "-m", "helpers", "diagnose", str(p), "--json"], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["findings"][0]["kind"] == "oscillation"
    bad = tmp_path / "empty.csv"
    bad.write_text("")
    r = subprocess.run([sys.executable, "-m", "helpers", "diagnose", str(bad)], cwd=root,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
