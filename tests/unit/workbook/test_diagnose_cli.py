"""The curve doctor (helpers.diagnose) and notebook 07's data, model and task (helpers.plateau)."""
from __future__ import annotations

import json

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
