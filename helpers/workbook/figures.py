"""``python -m helpers figures RUN_DIR``: the README's "Measured figures" section, generated from a run.

The section is made from the run's own records (run.json, and each notebook's answer.json and
metrics.json), so every number in it was measured by that run; it names the machine, the commit, the
thread count and the date. ``--update-readme`` writes it into README.md between its markers and keeps a
small reference copy of those records in docs/reference-run/, against which a test checks the README.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from helpers.core import io, paths
from helpers.core.errors import WorkbookError
from helpers.workbook.record import read_run_record
from helpers.workbook.report import read_answer

START, END = "<!-- figures:start -->", "<!-- figures:end -->"
REFERENCE = "docs/reference-run"
DOCTOR_STEM = "07_plateau_diagnosis"


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}"


def _header(record: dict[str, Any]) -> str:
    m, git = record.get("machine") or {}, record.get("git") or {}
    commit = (git.get("git_commit") or "unknown")[:10] + (" (with uncommitted changes)" if git.get("git_dirty") else "")
    return (f"Run `{record.get('run_id', '?')}`: profile `{record.get('profile', '?')}`, {record.get('threads', '?')} threads per "
            f"kernel, started {record.get('started')}, commit {commit}; machine: {m.get('device', 'unknown')}, "
            f"{m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB memory, {m.get('os', '')}.")


def _row(stem: str, entry: dict[str, Any], folder: Path) -> str:
    answer = read_answer(folder)
    text = (answer.get("answer") or "(no answer recorded)").replace("|", "\\|").replace("\n", " ")
    headline = "; ".join(f"{k} {_fmt(v)}" for k, v in (answer.get("headline") or {}).items())
    seconds = entry.get("duration_s")
    ran = entry.get("status") in ("ran", "ok")
    took = f"{seconds:.0f} s" if isinstance(seconds, (int, float)) and ran else entry.get("status")
    return f"| {stem} | {text} | {headline} | {took} |"


def _doctor_table(run_dir: Path) -> list[str]:
    """Notebook 07's precision and recall per finding kind on the hand-labelled public histories."""
    try:
        m = io.read_json(run_dir / DOCTOR_STEM / "metrics.json")
    except (OSError, ValueError):
        return []
    kinds = [k.removeprefix("doctor_recall_") for k in m if k.startswith("doctor_recall_")]
    if not kinds:
        return []
    cell = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    rows = [f"| {k} | {cell(m.get('doctor_precision_' + k))} | {cell(m.get('doctor_recall_' + k))} |" for k in kinds]
    return ["", f"The curve doctor (07) per finding on {m.get('n_external_histories', '?')} held-out public training "
            "histories, labelled by hand and scored once after its rules were frozen (— : the doctor never made "
            "that call):", "",
            "| finding | precision | recall |", "|---|---|---|", *rows]


def make_figures(run_dir: str | Path) -> str:
    """The Markdown of the "Measured figures" section for one run folder."""
    run_dir = Path(run_dir)
    record = read_run_record(run_dir)
    rows = [_row(s, e, run_dir / s) for s, e in record["notebooks"].items()]
    total = sum(e.get("duration_s") for e in record["notebooks"].values()
                if isinstance(e.get("duration_s"), (int, float)))
    return "\n".join([_header(record), "",
                      "| notebook | answer (as the report opens) | headline | time |", "|---|---|---|---|",
                      *rows, "", f"Notebooks' own time in all: {total:.0f} s.", *_doctor_table(run_dir)]) + "\n"


def save_reference(run_dir: Path, dest: Path) -> None:
    """A small copy of what `make_figures` reads (run.json, answer.json, metrics.json per notebook)."""
    with io.atomic_folder(dest) as tmp:
        shutil.copy2(run_dir / "run.json", tmp / "run.json")
        for stem in read_run_record(run_dir)["notebooks"]:
            for name in ("answer.json", "metrics.json"):
                if (run_dir / stem / name).is_file():
                    (tmp / stem).mkdir(exist_ok=True)
                    shutil.copy2(run_dir / stem / name, tmp / stem / name)


def update_readme(section: str, readme: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise WorkbookError(f"{readme}: no {START} ... {END} markers to write the figures between")
    new = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: f"{START}\n{section}{END}", text, flags=re.S)
    io.atomic_write_text(readme, new)


def figures_main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--update-readme", action="store_true",
                    help=f"write the section into README.md and keep the records in {REFERENCE}/")
    a = ap.parse_args(argv)
    run_dir = Path(a.run_dir)
    if not run_dir.is_dir():
        raise WorkbookError(f"figures {run_dir}: not a folder; expected a run folder (reports/<run>/ with run.json)")
    section = make_figures(run_dir)
    if a.update_readme:
        save_reference(run_dir, paths.PROJ_ROOT / REFERENCE)
        update_readme(make_figures(paths.PROJ_ROOT / REFERENCE), paths.PROJ_ROOT / "README.md")
    print(section, end="")
    return 0


def numbers_in(text: str) -> list[str]:
    """The numbers written in a text (for the test that the README's figures come from the run)."""
    return re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?", text)

