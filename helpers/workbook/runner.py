"""Run the workbook headlessly: validate every parameter, execute with papermill, render reports.

    python -m helpers run --profile smoke [--only 00 01] [--out DIR] [--set 02_stage1.epochs=3]
"""
from __future__ import annotations

import keyword
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.core import io, paths
from helpers.core.env import ENV_PROFILE, ENV_THREADS, scoped_env
from helpers.core.errors import ParameterError, WorkbookError
from helpers.core.runcard import git_facts, package_versions
from helpers.workbook.params import check_plain, load_notebook_spec, load_profile_file, parse_set, validate
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


def stem_of(key: str) -> str:
    """``00`` or ``00_data_audit`` -> ``00_data_audit``; an unknown notebook is an error naming the choices."""
    known = list_notebooks()
    match = [s for s in known if key == s or key == s.split("_", 1)[0]]
    if not match:
        raise ParameterError(f"no notebook {key!r} (have: {', '.join(known)})")
    return match[0]


def _set_stem(key: str) -> str:
    try:
        return stem_of(key)
    except ParameterError as e:
        raise ParameterError(f"--set {key}.…: {e}") from None


def _profile_overrides(profile: str, stem: str, spec) -> dict[str, Any]:
    overrides, path = load_profile_file(profile, stem)
    where = str(path.relative_to(paths.PROJ_ROOT)) if path.is_relative_to(paths.PROJ_ROOT) else str(path)
    if "out_dir" in overrides:
        raise ParameterError(f"{where}: out_dir is set by the runner (use --out for the run folder)")
    validate(spec, overrides, where)
    return overrides


def _set_overrides(stem: str, values: dict[str, Any], spec) -> dict[str, Any]:
    if "out_dir" in values:
        raise ParameterError(f"--set {stem}.out_dir: out_dir is set by the runner (use --out for the run folder)")
    for key, value in values.items():
        validate(spec, {key: value}, f"--set {stem}.{key}")
    return values


def resolve_parameters(profile: str, stems: list[str], sets: list[str] | None = None
                       ) -> dict[str, dict[str, dict[str, Any]]]:
    """Validate every selected notebook's profile file and every --set override.

    Returns {stem: {"overrides": {...}, "resolved": {...}}}; raises ParameterError on the first problem,
    before any kernel starts. A --set for a notebook that is not selected is validated too, and refused
    because it would not take effect.
    """
    by_nb = parse_set(sets or [], stem_of=_set_stem)
    for stem, values in by_nb.items():
        _set_overrides(stem, values, load_notebook_spec(stem))
        if stem not in stems:
            keys = ", ".join(f"{stem}.{k}" for k in values)
            raise ParameterError(f"--set {keys}: notebook {stem} is not part of this run (--only "
                                 f"{' '.join(s[:2] for s in stems)}); add it or drop the --set")
    out = {}
    for stem in stems:
        spec = load_notebook_spec(stem)
        overrides = {**_profile_overrides(profile, stem, spec), **by_nb.get(stem, {})}
        out[stem] = {"overrides": overrides, "resolved": validate(spec, overrides, stem)}
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
        run_dir = Path(out).expanduser().resolve()
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise WorkbookError(f"--out {out}: {run_dir} already exists and is not an empty folder; a run writes "
                                "only into a new folder, so earlier results and your own files are never "
                                "overwritten: choose a new folder")
        return run_dir, started
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


def _plain_python_translator():
    """papermill's Python translator escapes only double quotes inside strings, so a string holding
    ``\\"`` could end the literal early and run code. Parameter values here are plain JSON data (checked
    before this point), for which ``repr`` is an exact, safe Python literal."""
    from papermill.translators import PythonTranslator  # deferred with papermill itself

    class PlainPythonTranslator(PythonTranslator):
        @classmethod
        def translate(cls, val):
            check_plain(val, "parameter value")
            return repr(val)

        @classmethod
        def assign(cls, name, str_val):
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ParameterError(f"parameter name {name!r} is not a Python identifier")
            return f"{name} = {str_val}"

    return PlainPythonTranslator


def _execute(stem: str, overrides: dict[str, Any], nb_dir: Path) -> Exception | None:
    """Run one notebook with papermill into ``nb_dir``; the exception when it failed, else None."""
    import papermill as pm  # deferred: papermill pulls in nbclient, jupyter and its kernels machinery
    from papermill.translators import papermill_translators

    translator = _plain_python_translator()
    for name in ("python", "python3"):
        papermill_translators.register(name, translator)
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
    try:
        io.atomic_write_json(nb_dir / "failure.json", details)
    except OSError as e:  # the notebook's folder is not writable: the record in run.json still says why
        entry["failure_json_error"] = f"{nb_dir / 'failure.json'}: {e.strerror or e}"
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


def _run_notebooks(run_info: dict[str, Any], plan: dict, run_dir: Path, metrics: dict[str, dict],
                   current: list) -> bool:
    """Execute the notebooks in order until one fails; the rest stay "not run". True when all ran.
    ``current[0]`` names the notebook executing now (for the interrupt handler)."""
    from tqdm import tqdm  # deferred with papermill: only a run needs it

    bar = tqdm(list(plan), desc=f"run {run_info['profile']}", unit="nb", disable=not sys.stderr.isatty(),
               leave=False)
    try:
        for stem in bar:
            bar.set_postfix_str(stem)
            nb_dir = run_dir / stem
            nb_dir.mkdir(parents=True, exist_ok=True)
            current[0] = stem
            t0 = time.perf_counter()
            error = _execute(stem, plan[stem]["overrides"], nb_dir)
            seconds = time.perf_counter() - t0
            _record_outcome(run_info["notebooks"][stem], stem, nb_dir, error, seconds)
            metrics[stem] = _read_json_or_empty(nb_dir / "metrics.json")
            _render(run_info, stem, nb_dir, metrics[stem], seconds)
            tqdm.write(_log_line(stem, run_info["notebooks"][stem]), file=sys.stderr)
            _save_record(run_dir, run_info, metrics)
            current[0] = None
            if error is not None:
                return False
    finally:
        bar.close()
    return True


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run record is finished like after Ctrl-C."""


def _raise_interrupted(signum, frame) -> None:
    raise RunInterrupted(f"signal {signal.Signals(signum).name}")


def _mark_interrupted(run_info: dict[str, Any], stem: str | None, why: str) -> None:
    """The notebook that was executing is "interrupted" (it half ran), with the time and how to go on."""
    if stem is None:
        return
    entry = run_info["notebooks"][stem]
    entry.update(status="interrupted", interrupted_at=datetime.now().isoformat(timespec="seconds"),
                 error=f"interrupted ({why}); run it again: python -m helpers run --profile {run_info['profile']}")


def run(profile: str, only: list[str] | None = None, out: str | Path | None = None,
        sets: list[str] | None = None, threads: int | None = None) -> int:
    """Execute the selected notebooks in order. Returns the process exit code (0 = all ok)."""
    stems = select_notebooks(only)
    plan = resolve_parameters(profile, stems, sets)  # every problem surfaces before a kernel starts
    run_dir, started = _new_run_dir(profile, out)
    run_info = _new_run_record(profile, run_dir, started, plan)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        io.atomic_write_json(run_dir / "run.json", run_info)
    except OSError as e:
        raise WorkbookError(f"cannot write the run folder {run_dir}: {e.strerror or e} "
                            "(choose a folder you can write to with --out)") from None
    metrics: dict[str, dict[str, Any]] = {}
    all_ok, current = False, [None]
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        # Kernels inherit these: the profile for run cards, the thread count for torch.
        with scoped_env(**{ENV_PROFILE: profile, ENV_THREADS: str(threads) if threads else None}):
            all_ok = _run_notebooks(run_info, plan, run_dir, metrics, current)
    except KeyboardInterrupt as e:   # Ctrl-C, or SIGTERM via RunInterrupted
        _mark_interrupted(run_info, current[0], str(e) or "Ctrl-C")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
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


def _read_run_record(run_dir: Path) -> dict[str, Any]:
    record = io.read_json(run_dir / "run.json")
    if not isinstance(record, dict) or not isinstance(record.get("notebooks"), dict) or \
            not all(isinstance(v, dict) for v in record["notebooks"].values()):
        raise WorkbookError(f"{run_dir / 'run.json'}: not a run record (expected an object with a "
                            "'notebooks' object of per-notebook objects, as python -m helpers run writes it)")
    return record


def diff_runs(run_a: str | Path, run_b: str | Path) -> list[tuple[str, Any, Any]]:
    """Configuration and metric values that differ between two run folders."""
    a_dir, b_dir = Path(run_a), Path(run_b)
    for d in (a_dir, b_dir):
        if not (d / "run.json").is_file():
            raise WorkbookError(f"{d}: not a run folder (no run.json)")
    ra, rb = _read_run_record(a_dir), _read_run_record(b_dir)
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
