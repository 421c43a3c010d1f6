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


def run(profile: str, only: list[str] | None = None, out: str | Path | None = None,
        sets: list[str] | None = None, threads: int | None = None) -> int:
    """Execute the selected notebooks in order. Returns the process exit code (0 = all ok)."""
    import papermill as pm
    from tqdm import tqdm

    stems = select_notebooks(only)
    plan = resolve_parameters(profile, stems, sets)  # every problem surfaces before a kernel starts
    started = datetime.now()
    run_id = f"{started:%Y%m%d-%H%M%S}-{profile}"
    run_dir = Path(out).resolve() if out else paths.REPORTS / run_id
    if not out:
        while run_dir.exists():  # two runs in the same second: never reuse a folder
            time.sleep(1)
            started = datetime.now()
            run_id = f"{started:%Y%m%d-%H%M%S}-{profile}"
            run_dir = paths.REPORTS / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    run_info: dict[str, Any] = {
        "run_id": run_id if not out else run_dir.name, "profile": profile, "run_dir": str(run_dir),
        "started": started.isoformat(timespec="seconds"), "finished": None, "status": "running",
        "git": git_facts(), "packages": package_versions(), "command": sys.argv,
        "notebooks": {s: {"status": "not run", "parameters": plan[s]["resolved"],
                          "overrides": plan[s]["overrides"]} for s in stems},
    }
    io.atomic_write_json(run_dir / "run.json", run_info)
    env_backup = {k: os.environ.get(k) for k in ("PAIRWISE_PROFILE", "PAIRWISE_THREADS")}
    os.environ["PAIRWISE_PROFILE"] = profile
    if threads:
        os.environ["PAIRWISE_THREADS"] = str(threads)
    metrics: dict[str, dict[str, Any]] = {}
    failed = False
    bar = tqdm(stems, desc=f"run {profile}", unit="nb", disable=not sys.stderr.isatty(), leave=False)
    try:
        for stem in bar:
            entry = run_info["notebooks"][stem]
            if failed:
                continue  # stays "not run"
            bar.set_postfix_str(stem)
            nb_dir = run_dir / stem
            nb_dir.mkdir(parents=True, exist_ok=True)
            out_ipynb = nb_dir / f"{stem}.ipynb"
            params = {**plan[stem]["overrides"], "out_dir": str(nb_dir)}
            t0 = time.perf_counter()
            error = None
            try:
                pm.execute_notebook(str(paths.notebook_path(stem)), str(out_ipynb), parameters=params,
                                    cwd=str(paths.PROJ_ROOT), kernel_name="python3", progress_bar=False,
                                    log_output=False, request_save_on_cell_execute=False,
                                    # The kernel's own start-up warnings would flood the one-line-per-notebook log.
                                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
            except Exception as exc:  # noqa: BLE001 - any failure is reported, never swallowed
                error = exc
            dur = time.perf_counter() - t0
            entry.update(duration_s=round(dur, 2), ipynb=f"{stem}/{stem}.ipynb")
            if error is None:
                entry["status"] = "ok"
            else:
                failed = True
                details = _failure_details(error, out_ipynb)
                io.atomic_write_json(nb_dir / "failure.json", details)
                entry.update(status="failed", error=f"{details.get('ename', details['exception'])}: "
                                                    f"{details.get('evalue', details['message'])}"[:500])
            metrics[stem] = _read_json_or_empty(nb_dir / "metrics.json")
            if out_ipynb.exists():
                config = _read_json_or_empty(nb_dir / "config.json")
                env = config.get("environment", {})
                facts = {"notebook": stem, "status": entry["status"], "profile": profile, "run": run_info["run_id"],
                         "duration": f"{dur:.1f} s", "device": env.get("device"),
                         "commit": (run_info["git"].get("git_commit") or "n/a")[:10]
                         + (" (dirty)" if run_info["git"].get("git_dirty") else ""),
                         "data": (config.get("dataset") or {}).get("source") if isinstance(config.get("dataset"), dict) else None, "error": entry.get("error")}
                try:
                    render_notebook_html(out_ipynb, nb_dir / f"{stem}.html", facts, metrics[stem],
                                         plan[stem]["resolved"])
                    entry["html"] = f"{stem}/{stem}.html"
                except Exception as exc:  # noqa: BLE001
                    entry["html_error"] = f"{type(exc).__name__}: {exc}"
            line = f"{stem:<24} {entry['status']:<7} {dur:7.1f} s"
            if entry.get("error"):
                line += f"  {entry['error'][:160]}"
            tqdm.write(line, file=sys.stderr)
            io.atomic_write_json(run_dir / "run.json", run_info)
            io.atomic_write_text(run_dir / "index.html", index_html(run_info, metrics))
    finally:
        bar.close()
        for k, v in env_backup.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        run_info["finished"] = datetime.now().isoformat(timespec="seconds")
        if run_info["status"] == "running":
            run_info["status"] = "failed" if failed else ("ok" if all(
                n["status"] == "ok" for n in run_info["notebooks"].values()) else "interrupted")
        io.atomic_write_json(run_dir / "run.json", run_info)
        io.atomic_write_text(run_dir / "index.html", index_html(run_info, metrics))
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
