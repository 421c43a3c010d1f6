"""The run record: ``run.json`` and ``index.html`` of a run folder, ``reports/latest``, and `diff_runs`."""
from __future__ import annotations

import os
import platform
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.core import io, paths
from helpers.core.errors import WorkbookError
from helpers.core.runcard import git_facts, package_versions
from helpers.workbook.cache import device_kind
from helpers.workbook.execute import read_json_or_empty
from helpers.workbook.report import index_html, read_answer

# Notebook statuses: ran (executed now), reused (an earlier identical result), failed, interrupted, not run.
FINISHED = ("ran", "reused", "ok")   # "ok" is what runs recorded before results were cached


def new_run_record(profile: str, run_dir: Path, started: datetime, jobs: list, threads: int) -> dict[str, Any]:
    """run.json as it stands before any notebook ran: every notebook "not run", with its parameters."""
    return {
        "run_id": run_dir.name, "profile": profile, "run_dir": str(run_dir),
        "started": started.isoformat(timespec="seconds"), "finished": None, "status": "running",
        "threads": threads, "machine": machine_facts(), "git": git_facts(), "packages": package_versions(),
        "command": sys.argv,
        "notebooks": {j.stem: {"status": "not run", "parameters": j.resolved, "overrides": j.overrides,
                               "key": j.key.key, "plan": j.describe()} for j in jobs},
    }


def machine_facts() -> dict[str, Any]:
    """What the run's timings and numbers depend on: device kind, cores, memory."""
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages * size / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
        memory_gb = None
    return {"device": device_kind(), "cores": os.cpu_count(), "memory_gb": memory_gb, "os": platform.platform()}


def save_record(run_dir: Path, run_info: dict[str, Any]) -> None:
    metrics = {s: read_json_or_empty(run_dir / s / "metrics.json") for s in run_info["notebooks"]}
    answers = {s: read_answer(run_dir / s) for s in run_info["notebooks"]}
    io.atomic_write_json(run_dir / "run.json", run_info)
    io.atomic_write_text(run_dir / "index.html", index_html(run_info, metrics, answers=answers))


def finish_record(run_dir: Path, run_info: dict[str, Any]) -> str:
    """The run's overall status from its notebooks', with the finishing time; saved."""
    run_info["finished"] = datetime.now().isoformat(timespec="seconds")
    statuses = [n["status"] for n in run_info["notebooks"].values()]
    run_info["status"] = "ok" if all(s in FINISHED for s in statuses) else \
        ("failed" if "failed" in statuses else "interrupted")
    save_record(run_dir, run_info)
    return run_info["status"]


def mark_interrupted(run_info: dict[str, Any], stems: list[str], why: str) -> None:
    """The notebooks that were executing are "interrupted" (they half ran), with the time and how to go on."""
    for stem in stems:
        run_info["notebooks"][stem].update(
            status="interrupted", interrupted_at=datetime.now().isoformat(timespec="seconds"),
            error=f"interrupted ({why}); continue with: python -m helpers run --resume {run_info['run_dir']}")


def point_latest(run_dir: Path) -> None:
    """reports/latest -> the newest completed run (a relative symlink, replaced atomically)."""
    latest = paths.REPORTS / "latest"
    if run_dir.parent.resolve() != paths.REPORTS.resolve():
        return  # only runs inside reports/ are tracked by `latest`
    tmp = paths.REPORTS / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, latest)


def read_run_record(run_dir: Path) -> dict[str, Any]:
    if not (run_dir / "run.json").is_file():
        raise WorkbookError(f"{run_dir}: not a run folder (no run.json)")
    record = io.read_json(run_dir / "run.json")
    if not isinstance(record, dict) or not isinstance(record.get("notebooks"), dict) or \
            not all(isinstance(v, dict) for v in record["notebooks"].values()):
        raise WorkbookError(f"{run_dir / 'run.json'}: not a run record (expected an object with a "
                            "'notebooks' object of per-notebook objects, as python -m helpers run writes it)")
    return record


_STATUSES = ("ran", "reused", "ok", "failed", "interrupted", "not run", "running")


def check_resumable(record: dict[str, Any], run_dir: Path, known: list[str], params_root: Path) -> None:
    """A run.json that ``--resume`` can act on, as the runner wrote it for this folder; else an error
    saying which field is wrong (a tampered or foreign record is refused before anything runs)."""
    where = run_dir / "run.json"

    def bad(field: str, value: Any, expected: str) -> WorkbookError:
        return WorkbookError(f"{where}: {field} = {str(value)[:80]!r}, expected {expected}; this run.json was not "
                             "written by python -m helpers run for this folder, so it cannot be resumed")

    if record.get("run_id") != run_dir.name:
        raise bad("run_id", record.get("run_id"), f"the folder's own name {run_dir.name!r}")
    profile = record.get("profile")
    if not isinstance(profile, str) or "/" in profile or not (params_root / profile).is_dir() or profile.startswith("."):
        raise bad("profile", profile, "the name of a profile under params/")
    threads = record.get("threads")
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= 1024:
        raise bad("threads", threads, "a whole number of threads, 1 or more")
    for stem, entry in record["notebooks"].items():
        if stem not in known:
            raise bad("notebooks key", stem, f"one of the workbook's notebooks ({', '.join(known)})")
        if entry.get("status") not in _STATUSES:
            raise bad(f"notebooks.{stem}.status", entry.get("status"), "|".join(_STATUSES))
        if not isinstance(entry.get("overrides", {}), dict):
            raise bad(f"notebooks.{stem}.overrides", entry.get("overrides"), "a mapping of parameter: value")


def _finished_or(status: str | None) -> str | None:
    """Ran now or reused: either way the notebook's results are complete (not a difference)."""
    return "finished" if status in FINISHED else status


def diff_runs(run_a: str | Path, run_b: str | Path) -> list[tuple[str, Any, Any]]:
    """Configuration and metric values that differ between two run folders."""
    a_dir, b_dir = Path(run_a), Path(run_b)
    ra, rb = read_run_record(a_dir), read_run_record(b_dir)
    rows: list[tuple[str, Any, Any]] = []

    def cmp(prefix: str, x: dict, y: dict) -> None:
        for k in sorted(set(x) | set(y)):
            if x.get(k, "<absent>") != y.get(k, "<absent>"):
                rows.append((f"{prefix}{k}", x.get(k, "<absent>"), y.get(k, "<absent>")))

    cmp("", {"profile": ra.get("profile"), **ra.get("git", {})}, {"profile": rb.get("profile"), **rb.get("git", {})})
    cmp("packages.", ra.get("packages", {}), rb.get("packages", {}))
    for stem in sorted(set(ra["notebooks"]) | set(rb["notebooks"])):
        na, nb_ = ra["notebooks"].get(stem, {}), rb["notebooks"].get(stem, {})
        cmp(f"{stem}.status.", {"": _finished_or(na.get("status"))}, {"": _finished_or(nb_.get("status"))})
        cmp(f"{stem}.params.", na.get("parameters", {}), nb_.get("parameters", {}))
        cmp(f"{stem}.metrics.", read_json_or_empty(a_dir / stem / "metrics.json"),
            read_json_or_empty(b_dir / stem / "metrics.json"))
    return [(k.rstrip("."), x, y) for k, x, y in rows]
