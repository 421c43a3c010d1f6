"""Executing one notebook: papermill with plain-data parameters, the failure record, the HTML report."""
from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Any

from helpers.core import io, paths
from helpers.core.errors import ParameterError, WorkbookError
from helpers.workbook.params import check_plain
from helpers.workbook.report import answer_first, render_notebook_html


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


def execute_notebook(stem: str, overrides: dict[str, Any], nb_dir: Path) -> Exception | None:
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


def failure_details(exc: Exception, out_ipynb: Path) -> dict[str, Any]:
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
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s)


def read_json_or_empty(path: Path) -> dict[str, Any]:
    try:
        return io.read_json(path)
    except WorkbookError:
        return {}


def record_outcome(entry: dict[str, Any], stem: str, nb_dir: Path, error: Exception | None, seconds: float) -> None:
    """Status, duration and (on failure) failure.json with the failing cell's last output."""
    entry.update(duration_s=round(seconds, 2), ipynb=f"{stem}/{stem}.ipynb")
    if error is None:
        entry["status"] = "ran"
        return
    details = failure_details(error, nb_dir / f"{stem}.ipynb")
    try:
        io.atomic_write_json(nb_dir / "failure.json", details)
    except OSError as e:  # the notebook's folder is not writable: the record in run.json still says why
        entry["failure_json_error"] = f"{nb_dir / 'failure.json'}: {e.strerror or e}"
    entry.update(status="failed", error=f"{details.get('ename', details['exception'])}: "
                                        f"{details.get('evalue', details['message'])}"[:500])


def render_report(run_info: dict[str, Any], stem: str, nb_dir: Path, metrics: dict[str, Any]) -> None:
    """The notebook's self-contained HTML report, with its header card; a rendering error is recorded."""
    entry = run_info["notebooks"][stem]
    if not (nb_dir / f"{stem}.ipynb").exists():
        return
    config = read_json_or_empty(nb_dir / "config.json")
    dataset = config.get("dataset")
    git = run_info["git"]
    facts = {"notebook": stem, "status": entry["status"], "profile": run_info["profile"], "run": run_info["run_id"],
             "duration": f"{entry.get('duration_s', 0.0):.1f} s", "device": config.get("environment", {}).get("device"),
             "threads": run_info.get("threads"),
             "commit": (git.get("git_commit") or "n/a")[:10] + (" (dirty)" if git.get("git_dirty") else ""),
             "data": dataset.get("source") if isinstance(dataset, dict) else None, "error": entry.get("error")}
    try:
        _answer_first_in_place(nb_dir / f"{stem}.ipynb")
        render_notebook_html(nb_dir / f"{stem}.ipynb", nb_dir / f"{stem}.html", facts, metrics, entry["parameters"])
        entry["html"] = f"{stem}/{stem}.html"
    except Exception as exc:  # noqa: BLE001 - a report that cannot render must not stop the run
        entry["html_error"] = f"{type(exc).__name__}: {exc}"


def _answer_first_in_place(path: Path) -> None:
    """The executed notebook opens with its answer too (the cell tagged ``answer`` moves up)."""
    import nbformat  # deferred with papermill

    nb = nbformat.read(str(path), as_version=4)
    moved = answer_first(nb.cells)
    if [id(c) for c in moved] != [id(c) for c in nb.cells]:
        nb.cells = moved
        io.atomic_write_text(path, nbformat.writes(nb))


def clear_stale_outputs(nb_dir: Path) -> None:
    """Before a notebook runs again in its own folder (resume): its earlier failure record, metrics and
    report go, so they cannot pass for this run's; checkpoints stay, so training resumes from them."""
    for name in ("failure.json", "metrics.json", "reads.json", "config.json", "answer.json"):
        (nb_dir / name).unlink(missing_ok=True)
    _unshare(nb_dir)


def _unshare(nb_dir: Path) -> None:
    """Give every file hard-linked from an earlier run (a reused result) its own copy before the notebook
    runs here again: papermill and checkpoints write some files in place, which would edit the earlier run."""
    for f in [p for p in nb_dir.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_nlink > 1]:
        with io.atomic_path(f) as tmp:
            io.copy_as_created(f, tmp)
