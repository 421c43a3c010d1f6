"""The README's "Measured figures" come from a run: the section is exactly what `figures` makes from the
reference copy of that run's records, and `figures` itself reports only what the records hold."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.workbook import figures

README = paths.PROJ_ROOT / "README.md"
REFERENCE = paths.PROJ_ROOT / figures.REFERENCE


def _readme_section() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(re.escape(figures.START) + r"\n(.*?)" + re.escape(figures.END), text, flags=re.S)
    assert m, "README.md has no figures markers"
    return m.group(1)


def test_readme_figures_equal_the_reference_run():
    assert (REFERENCE / "run.json").is_file(), "docs/reference-run/ is missing: run `figures RUN --update-readme`"
    assert _readme_section() == figures.make_figures(REFERENCE)


def test_reference_run_is_a_default_run_with_every_notebook_answered():
    record = json.loads((REFERENCE / "run.json").read_text(encoding="utf-8"))
    assert record["profile"] == "default"
    assert set(record["notebooks"]) == {p.stem for p in (paths.PROJ_ROOT / "notebooks").glob("0*.ipynb")}
    for stem, entry in record["notebooks"].items():
        assert entry["status"] in ("ran", "reused"), stem
        assert json.loads((REFERENCE / stem / "answer.json").read_text(encoding="utf-8"))["answer"], stem


def _fake_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "00_x").mkdir(parents=True)
    record = {"run_id": "r1", "profile": "default", "threads": 2, "started": "2026-12-01T00:00:00",
              "machine": {"device": "cpu", "cores": 2, "memory_gb": 24, "os": "Linux"},
              "git": {"git_commit": "abcdef1234567", "git_dirty": False},
              "notebooks": {"00_x": {"status": "ran", "duration_s": 12.4}}}
    (run / "run.json").write_text(json.dumps(record), encoding="utf-8")
    (run / "00_x" / "answer.json").write_text(json.dumps({"answer": "Accuracy 0.8765 | fine.",
                                                          "headline": {"acc": 0.87654, "n": 4000}}))
    return run


def test_figures_report_only_what_the_records_hold(tmp_path):
    text = figures.make_figures(_fake_run(tmp_path))
    assert "Run `r1`: profile `default`, 2 threads" in text and "commit abcdef1234" in text
    assert "| 00_x | Accuracy 0.8765 \\| fine. | acc 0.8765; n 4,000 | 12 s |" in text
    answer_numbers = set(figures.numbers_in("Accuracy 0.8765 acc 0.8765 n 4,000 12 2 24 2026-12-01 00:00:00"))
    header_numbers = set(figures.numbers_in(text.splitlines()[0]))
    assert set(figures.numbers_in(text)) <= answer_numbers | header_numbers | {"0", "1", "00", "12", "4,000"}


def test_update_readme_needs_its_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(WorkbookError, match="markers"):
        figures.update_readme("x\n", readme)
    readme.write_text(f"a\n{figures.START}\nold\n{figures.END}\nb\n")
    figures.update_readme("new\n", readme)
    assert readme.read_text() == f"a\n{figures.START}\nnew\n{figures.END}\nb\n"


def test_doctor_precision_and_recall_per_finding_come_from_07s_metrics(tmp_path):
    run = _fake_run(tmp_path)
    assert "curve doctor" not in figures.make_figures(run)          # no 07 in the run: no doctor table
    (run / figures.DOCTOR_STEM).mkdir()
    (run / figures.DOCTOR_STEM / "metrics.json").write_text(json.dumps(
        {"n_external_histories": 27, "doctor_precision_plateau": 0.6667, "doctor_recall_plateau": 0.857,
         "doctor_precision_underfitting": None, "doctor_recall_underfitting": 0.0}))
    text = figures.make_figures(run)
    assert "on 27 held-out public training histories" in text
    assert "| plateau | 0.67 | 0.86 |" in text and "| underfitting | — | 0.00 |" in text
