"""Run the workbook headlessly: validate every parameter, execute with papermill, render reports.

    python -m helpers run --profile smoke [--only 00 01] [--out DIR] [--set 02_stage1.epochs=3]
"""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.core import io, paths
from helpers.core.env import ENV_PROFILE, ENV_THREADS, scoped_env
from helpers.core.errors import ParameterError, WorkbookError
from helpers.core.runcard import git_facts, package_versions
from helpers.workbook.params import load_notebook_spec, load_profile_file, parse_set, validate
from helpers.workbook.report import index_html, render_notebook_html


def list_notebooks() -> list[str]:
    """Stems of the workbook's notebooks, in order (file names start with two digits)."""
    return sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(only: list[str] | None) -> list[str]:
    stems = list_notebooks()
    if not only:
        return stems
    chosen = []
    for key in only:
        match = [s for s in stems if s == key or s.split("_", 1)[0] == key]
        if not match:
            raise ParameterError(f"--only {key!r}: no such notebook (have: {', '.join(stems)})")
        chosen.extend(m for m in match if m not in chosen)
    return [s for s in stems if s in chosen]


def resolve_parameters(profile: str, stems: list[str], sets: list[str] | None = None
                       ) -> dict[str, dict[str, dict[str, Any]]]:
    """Validate every selected notebook's profile file and --set overrides.

    Returns {stem: {"overrides": {...}, "resolved": {...}}}; raises ParameterError on the first problem,
    before any kernel starts.
    """
    by_nb = parse_set(sets or [])
    known = list_notebooks()
    for key in by_nb:
        if not any(key == s or key == s.split("_", 1)[0] for s in known):
            raise ParameterError(f"--set {key}.…: no notebook {key!r} (have: {', '.join(known)})")
    out = {}
    for stem in stems:
        spec = load_notebook_spec(stem)
        overrides, path = load_profile_file(profile, stem)
        where = str(path.relative_to(paths.PROJ_ROOT)) if path.is_relative_to(paths.PROJ_ROOT) else str(path)
        validate(spec, overrides, where)
        extra = {}
        for key, vals in by_nb.items():
            if key == stem or key == stem.split("_", 1)[0]:
                extra.update(vals)
        overrides = {**overrides, **extra}
        resolved = validate(spec, overrides, f"{where} + --set" if extra else where)
        if "out_dir" in overrides:
            raise ParameterError(f"{where}: out_dir is set by the runner (use --out for the run folder)")
        out[stem] = {"overrides": overrides, "resolved": resolved}
    return out


def _failure_details(exc: Exception, out_ipynb: Path) -> dict[str, Any]:
    """Cell index, exception and the last lines the failing cell printed."""
    details: dict[str, Any] = {"exception": type(exc).__name__, "message": str(exc)[-2000:]}
    for attr in ("cell_index", "exec_count", "ename", "evalue"):
        if hasattr(exc, attr):
            details[attr] = getattr(exc, attr)
    try:
        import nbformat

        nb = nbformat.read(str(out_ipynb), as_version=4)
        # papermill puts a banner cell on top after a failure, so find the cell by its error output.
        errored = [i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
        idx = errored[0] if errored else None
        if idx is not None:
            text = []
            for o in nb.cells[idx].get("outputs", []):
                if o.get("output_type") == "stream":
                    text.append(o.get("text", ""))
                elif o.get("output_type") == "error":
                    text.append("\n".join(o.get("traceback", [])))
            lines = _strip_ansi("".join(text)).splitlines()
            details["last_output_lines"] = lines[-30:]
            details["cell_source"] = nb.cells[idx].source
    except Exception as e:  # noqa: BLE001 - the failure report must not fail itself
        details["note"] = f"could not read the executed notebook: {e}"
    return details


def _strip_ansi(s: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s)


def _read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        return io.read_json(path)
    except WorkbookError:
        return {}


def _point_latest(run_dir: Path) -> None:
    """reports/latest -> the newest completed run (a relative symlink, replaced atomically)."""
    latest = paths.REPORTS / "latest"
    if run_dir.parent.resolve() != paths.REPORTS.resolve():
        return  # only runs inside reports/ are tracked by `latest`
    tmp = paths.REPORTS / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name)
    os.replace(tmp, latest)


def _new_run_dir(profile: str, out: str | Path | None) -> tuple[Path, datetime]:
    """The run folder: ``--out`` as given, else reports/<YYYYmmdd-HHMMSS>-<profile>/, never an existing one."""
    started = datetime.now()
    if out:
        return Path(out).resolve(), started
    run_dir = paths.REPORTS / f"{started:%Y%m%d-%H%M%S}-{profile}"
    while run_dir.exists():  # two runs in the same second: never reuse a folder
        time.sleep(1)
        started = datetime.now()
        run_dir = paths.REPORTS / f"{started:%Y%m%d-%H%M%S}-{profile}"
    return run_dir, started


def _new_run_record(profile: str, run_dir: Path, started: datetime, plan: dict) -> dict[str, Any]:
    """run.json as it stands before any notebook ran: every notebook "not run", with its parameters."""
    return {
        "run_id": run_dir.name, "profile": profile, "run_dir": str(run_dir),
        "started": started.isoformat(timespec="seconds"), "finished": None, "status": "running",
        "git": git_facts(), "packages": package_versions(), "command": sys.argv,
        "notebooks": {s: {"status": "not run", "parameters": p["resolved"], "overrides": p["overrides"]}
                      for s, p in plan.items()},
    }


def _execute(stem: str, overrides: dict[str, Any], nb_dir: Path) -> Exception | None:
    """Run one notebook with papermill into ``nb_dir``; the exception when it failed, else None."""
    import papermill as pm  # deferred: papermill pulls in nbclient, jupyter and its kernels machinery

    try:
        pm.execute_notebook(str(paths.notebook_path(stem)), str(nb_dir / f"{stem}.ipynb"),
                            parameters={**overrides, "out_dir": str(nb_dir)}, cwd=str(paths.PROJ_ROOT),
                            kernel_name="python3", progress_bar=False, log_output=False,
                            request_save_on_cell_execute=False,
                            # The kernel's own start-up warnings would flood the one-line-per-notebook log.
                            extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never swallowed
        return exc
    return None


def _record_outcome(entry: dict[str, Any], stem: str, nb_dir: Path, error: Exception | None, seconds: float) -> None:
    """Status, duration and (on failure) failure.json with the failing cell's last output."""
    entry.update(duration_s=round(seconds, 2), ipynb=f"{stem}/{stem}.ipynb")
    if error is None:
        entry["status"] = "ok"
        return
    details = _failure_details(error, nb_dir / f"{stem}.ipynb")
    io.atomic_write_json(nb_dir / "failure.json", details)
    entry.update(status="failed", error=f"{details.get('ename', details['exception'])}: "
                                        f"{details.get('evalue', details['message'])}"[:500])


def _render(run_info: dict[str, Any], stem: str, nb_dir: Path, metrics: dict[str, Any], seconds: float) -> None:
    """The notebook's self-contained HTML report, with its header card; a rendering error is recorded."""
    entry = run_info["notebooks"][stem]
    if not (nb_dir / f"{stem}.ipynb").exists():
        return
    config = _read_json_or_empty(nb_dir / "config.json")
    dataset = config.get("dataset")
    git = run_info["git"]
    facts = {"notebook": stem, "status": entry["status"], "profile": run_info["profile"], "run": run_info["run_id"],
             "duration": f"{seconds:.1f} s", "device": config.get("environment", {}).get("device"),
             "commit": (git.get("git_commit") or "n/a")[:10] + (" (dirty)" if git.get("git_dirty") else ""),
             "data": dataset.get("source") if isinstance(dataset, dict) else None, "error": entry.get("error")}
    try:
        render_notebook_html(nb_dir / f"{stem}.ipynb", nb_dir / f"{stem}.html", facts, metrics, entry["parameters"])
        entry["html"] = f"{stem}/{stem}.html"
    except Exception as exc:  # noqa: BLE001 - a report that cannot render must not stop the run
        entry["html_error"] = f"{type(exc).__name__}: {exc}"


def _log_line(stem: str, entry: dict[str, Any]) -> str:
    line = f"{stem:<24} {entry['status']:<7} {entry.get('duration_s', 0.0):7.1f} s"
    return line + (f"  {entry['error'][:160]}" if entry.get("error") else "")


def _save_record(run_dir: Path, run_info: dict[str, Any], metrics: dict[str, dict]) -> None:
    io.atomic_write_json(run_dir / "run.json", run_info)
    io.atomic_write_text(run_dir / "index.html", index_html(run_info, metrics))


def _run_notebooks(run_info: dict[str, Any], plan: dict, run_dir: Path, metrics: dict[str, dict]) -> bool:
    """Execute the notebooks in order until one fails; the rest stay "not run". True when all ran."""
    from tqdm import tqdm  # deferred with papermill: only a run needs it

    bar = tqdm(list(plan), desc=f"run {run_info['profile']}", unit="nb", disable=not sys.stderr.isatty(),
               leave=False)
    try:
        for stem in bar:
            bar.set_postfix_str(stem)
            nb_dir = run_dir / stem
            nb_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            error = _execute(stem, plan[stem]["overrides"], nb_dir)
            seconds = time.perf_counter() - t0
            _record_outcome(run_info["notebooks"][stem], stem, nb_dir, error, seconds)
            metrics[stem] = _read_json_or_empty(nb_dir / "metrics.json")
            _render(run_info, stem, nb_dir, metrics[stem], seconds)
            tqdm.write(_log_line(stem, run_info["notebooks"][stem]), file=sys.stderr)
            _save_record(run_dir, run_info, metrics)
            if error is not None:
                return False
    finally:
        bar.close()
    return True


def run(profile: str, only: list[str] | None = None, out: str | Path | None = None,
        sets: list[str] | None = None, threads: int | None = None) -> int:
    """Execute the selected notebooks in order. Returns the process exit code (0 = all ok)."""
    stems = select_notebooks(only)
    plan = resolve_parameters(profile, stems, sets)  # every problem surfaces before a kernel starts
    run_dir, started = _new_run_dir(profile, out)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_info = _new_run_record(profile, run_dir, started, plan)
    io.atomic_write_json(run_dir / "run.json", run_info)
    metrics: dict[str, dict[str, Any]] = {}
    all_ok = False
    try:
        # Kernels inherit these: the profile for run cards, the thread count for torch.
        with scoped_env(**{ENV_PROFILE: profile, ENV_THREADS: str(threads) if threads else None}):
            all_ok = _run_notebooks(run_info, plan, run_dir, metrics)
    finally:
        run_info["finished"] = datetime.now().isoformat(timespec="seconds")
        statuses = [n["status"] for n in run_info["notebooks"].values()]
        run_info["status"] = "ok" if all_ok and all(s == "ok" for s in statuses) else \
            ("failed" if "failed" in statuses else "interrupted")
        _save_record(run_dir, run_info, metrics)
    if run_info["status"] == "ok":
        _point_latest(run_dir)
    print(f"{run_info['status']}: {run_dir / 'index.html'}", file=sys.stderr)
    return 0 if run_info["status"] == "ok" else 1


def check(profile: str, only: list[str] | None = None, sets: list[str] | None = None) -> int:
    stems = select_notebooks(only)
    plan = resolve_parameters(profile, stems, sets)
    for stem in stems:
        ov = plan[stem]["overrides"]
        print(f"{stem}: ok ({len(ov)} override{'s' if len(ov) != 1 else ''}"
              + (f": {', '.join(f'{k}={v!r}' for k, v in ov.items())}" if ov else "") + ")")
    return 0


def diff_runs(run_a: str | Path, run_b: str | Path) -> list[tuple[str, Any, Any]]:
    """Configuration and metric values that differ between two run folders."""
    a_dir, b_dir = Path(run_a), Path(run_b)
    for d in (a_dir, b_dir):
        if not (d / "run.json").is_file():
            raise WorkbookError(f"{d}: not a run folder (no run.json)")
    ra, rb = io.read_json(a_dir / "run.json"), io.read_json(b_dir / "run.json")
    rows: list[tuple[str, Any, Any]] = []

    def cmp(prefix: str, x: dict, y: dict) -> None:
        for k in sorted(set(x) | set(y)):
            if x.get(k, "<absent>") != y.get(k, "<absent>"):
                rows.append((f"{prefix}{k}", x.get(k, "<absent>"), y.get(k, "<absent>")))

    cmp("", {"profile": ra.get("profile"), **ra.get("git", {})}, {"profile": rb.get("profile"), **rb.get("git", {})})
    cmp("packages.", ra.get("packages", {}), rb.get("packages", {}))
    for stem in sorted(set(ra["notebooks"]) | set(rb["notebooks"])):
        na, nb_ = ra["notebooks"].get(stem, {}), rb["notebooks"].get(stem, {})
        cmp(f"{stem}.status.", {"": na.get("status")}, {"": nb_.get("status")})
        cmp(f"{stem}.params.", na.get("parameters", {}), nb_.get("parameters", {}))
        cmp(f"{stem}.metrics.", _read_json_or_empty(a_dir / stem / "metrics.json"),
            _read_json_or_empty(b_dir / stem / "metrics.json"))
    return [(k.rstrip("."), x, y) for k, x, y in rows]
