"""Run the workbook headlessly: plan, then execute or reuse each notebook, and record the run.

    python -m helpers run --profile smoke [--only 05] [--set 05_stacking.n_boot=500] [--jobs 2]
    python -m helpers run --resume reports/<run>           # finish an interrupted or failed run
    python -m helpers status --profile default             # what a run would execute, and why

Every parameter is validated before any kernel starts. A run writes only into a new folder (or, with
``--resume``, into its own earlier one). Each kernel gets the same fixed thread count (``--threads``,
default 2), so the same command gives the same numbers on any machine with the same kind of CPU.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.core import paths
from helpers.core.env import DEFAULT_THREADS, ENV_PROFILE, ENV_THREADS, THREAD_VARS, scoped_env
from helpers.core.errors import WorkbookError
from helpers.workbook import cache
from helpers.workbook.claim import Claim, claim_existing, claim_new
from helpers.workbook.execute import (clear_stale_outputs, execute_notebook, read_json_or_empty, record_outcome,
                                      render_report)
from helpers.workbook.graph import check_reads
from helpers.workbook.plan import Job, list_notebooks, make_plan, resolve_parameters, select_notebooks
from helpers.workbook.record import (check_resumable, diff_runs, finish_record, FINISHED,  # noqa: F401
                                     mark_interrupted, new_run_record, point_latest, read_run_record, save_record)
from helpers.workbook.params import check_profile_name, load_notebook_spec, validate

__all__ = ["run", "check", "status", "diff_runs", "list_notebooks", "resolve_parameters", "select_notebooks"]


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that the run record is finished like after Ctrl-C."""


def _raise_interrupted(signum, frame) -> None:
    raise RunInterrupted(f"signal {signal.Signals(signum).name}")


# ----------------------------------------------------------------------------------- the run folder
def _claim_run_dir(profile: str, out: str | Path | None) -> tuple[Claim, datetime]:
    """The run folder, made and locked in one step: ``--out`` as given (new or empty), else
    reports/<YYYYmmdd-HHMMSS>-<profile>[-2, -3 ...]/ -- never a folder another run holds or wrote."""
    started = datetime.now()
    if out:
        return claim_new(Path(out).expanduser().absolute(), exact=True), started
    return claim_new(paths.REPORTS / f"{started:%Y%m%d-%H%M%S}-{profile}", exact=False), started


def _create(run_dir: Path, run_info: dict[str, Any]) -> None:
    try:
        save_record(run_dir, run_info)
    except OSError as e:
        raise WorkbookError(f"cannot write the run folder {run_dir}: {e.strerror or e} "
                            "(choose a folder you can write to with --out)") from None


# ---------------------------------------------------------------------------------- one notebook
class _Runner:
    """Executes or reuses the planned notebooks, at most ``jobs`` at a time, keeping run.json current."""

    def __init__(self, run_dir: Path, run_info: dict[str, Any], jobs: list[Job], n_jobs: int):
        self.run_dir, self.run_info, self.jobs, self.n_jobs = run_dir, run_info, jobs, max(1, n_jobs)
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.failed = self.interrupted = False

    def entry(self, stem: str) -> dict[str, Any]:
        return self.run_info["notebooks"][stem]

    def log(self, stem: str) -> None:
        e = self.entry(stem)
        line = f"{stem:<24} {e['status']:<11} {e.get('duration_s', 0.0):7.1f} s"
        note = e.get("error") or e.get("note") or ""
        print(line + (f"  {note[:160]}" if note else ""), file=sys.stderr, flush=True)

    def reuse(self, job: Job) -> None:
        cache.link_result(job.source, self.run_dir / job.stem)
        self.entry(job.stem).update(status="reused", reused_from=str(job.source.parent),
                                    note=f"reused from {job.source.parent.name}", ipynb=f"{job.stem}/{job.stem}.ipynb",
                                    html=f"{job.stem}/{job.stem}.html", duration_s=0.0)

    def execute(self, job: Job) -> None:
        nb_dir = self.run_dir / job.stem
        nb_dir.mkdir(parents=True, exist_ok=True)
        clear_stale_outputs(nb_dir)
        t0 = time.perf_counter()
        error = execute_notebook(job.stem, job.overrides, nb_dir)
        with self.lock:
            entry = self.entry(job.stem)
            if self.interrupted:        # its kernel was stopped by the interrupt: not a failure of its own
                return
            record_outcome(entry, job.stem, nb_dir, error, time.perf_counter() - t0)
            entry["note"] = f"ran: {job.reason}"
            broken = check_reads(job.stem, nb_dir, job.reads) if error is None else None
            if broken:
                entry.update(status="failed", error=broken)
            render_report(self.run_info, job.stem, nb_dir, read_json_or_empty(nb_dir / "metrics.json"))
            if entry["status"] == "ran":
                cache.record_result(job.stem, job.key, nb_dir)

    def do(self, job: Job) -> None:
        if job.action == "run":          # the run's index says so while its kernel works
            with self.lock:
                self.entry(job.stem)["status"] = "running"
                save_record(self.run_dir, self.run_info)
        if job.action == "reuse":
            self.reuse(job)
        elif job.action == "run":
            self.execute(job)
        with self.lock:
            if self.interrupted:
                return
            self.running.discard(job.stem)
            self.failed |= self.entry(job.stem)["status"] not in FINISHED
            self.log(job.stem)
            save_record(self.run_dir, self.run_info)

    def ready(self, job: Job, done: set[str]) -> bool:
        in_run = {j.stem for j in self.jobs}
        return all(r in done or r not in in_run for r in job.reads.all)

    def run_all(self) -> None:
        """Every planned notebook, in order; after a failure no new notebook starts."""
        if self.n_jobs == 1:   # in this thread, so Ctrl-C / SIGTERM interrupt the executing notebook itself
            for job in [j for j in self.jobs if j.action != "keep"]:
                if self.failed:
                    break
                self.running.add(job.stem)
                self.do(job)
            return
        try:
            self._run_parallel()
        except KeyboardInterrupt:
            self.interrupted = True
            _stop_kernels()    # the executing notebooks' kernels, so their threads return
            raise

    def _run_parallel(self) -> None:
        """Start every notebook whose reads are done, at most ``n_jobs`` at a time."""
        pending = [j for j in self.jobs if j.action != "keep"]
        done = {j.stem for j in self.jobs if j.action == "keep"}
        futures: dict[Future, Job] = {}
        with ThreadPoolExecutor(self.n_jobs) as pool:
            while pending or futures:
                for job in [j for j in pending if not self.failed and self.ready(j, done)][: self.n_jobs - len(futures)]:
                    pending.remove(job)
                    self.running.add(job.stem)
                    futures[pool.submit(self.do, job)] = job
                if not futures:
                    break
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()
                    done.add(futures.pop(f).stem)


def _stop_kernels() -> None:
    """Terminate this process's children (the kernels of the notebooks executing in threads)."""
    try:
        import psutil  # installed with jupyter; deferred because only an interrupted parallel run needs it
    except ImportError:  # pragma: no cover
        return
    for child in psutil.Process().children(recursive=True):
        try:
            child.terminate()
        except psutil.Error:
            pass


# -------------------------------------------------------------------------------------- commands
def _kernel_env(profile: str, threads: int) -> dict[str, str]:
    """Kernels inherit these: the profile for run cards, one fixed thread count for torch and BLAS."""
    return {ENV_PROFILE: profile, ENV_THREADS: str(threads), **{v: str(threads) for v in THREAD_VARS}}


def describe_oversubscription(n_jobs: int, threads: int, cores: int) -> str:
    """A warning when parallel notebooks ask for more threads than the machine has ("" otherwise): they then
    compete for the cores, and the run can take longer than with --jobs 1 (the numbers stay the same)."""
    if n_jobs <= 1 or n_jobs * threads <= cores:
        return ""
    return (f"note: --jobs {n_jobs} x {threads} threads per kernel asks for {n_jobs * threads} threads on {cores} "
            f"core(s): the notebooks will compete for them and the run may take longer than with --jobs 1 "
            f"(results do not change); --jobs pays when cores >= jobs x threads")


def _execute_run(run_dir: Path, run_info: dict[str, Any], jobs: list[Job], n_jobs: int, threads: int) -> int:
    warning = describe_oversubscription(n_jobs, threads, os.cpu_count() or 1)
    if warning:
        print(warning, file=sys.stderr)
    runner = _Runner(run_dir, run_info, jobs, n_jobs)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        with scoped_env(**_kernel_env(run_info["profile"], threads)):
            runner.run_all()
    except KeyboardInterrupt as e:   # Ctrl-C, or SIGTERM via RunInterrupted
        mark_interrupted(run_info, sorted(runner.running), str(e) or "Ctrl-C")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        status = finish_record(run_dir, run_info)
    if status == "ok":
        point_latest(run_dir)
    print(f"{status}: {run_dir / 'index.html'}", file=sys.stderr)
    return 0 if status == "ok" else 1


def run(profile: str, only: list[str] | None = None, out: str | Path | None = None,
        sets: list[str] | None = None, threads: int | None = None, jobs: int = 1,
        force: list[str] | None = None, use_cache: bool = True) -> int:
    """Plan, then execute or reuse the notebooks. Returns the process exit code (0 = all finished)."""
    threads = threads or DEFAULT_THREADS
    check_profile_name(profile)
    claim, started = _claim_run_dir(profile, out)
    try:
        plan = make_plan(profile, only, sets, threads, claim.run_dir, force, use_cache)  # every check before a kernel
    except BaseException:
        claim.abandon()            # nothing ran: the folder made for it goes again
        raise
    try:
        run_info = new_run_record(profile, claim.run_dir, started, plan, threads)
        _create(claim.run_dir, run_info)
        return _execute_run(claim.run_dir, run_info, plan, jobs, threads)
    finally:
        claim.release()


def resume(run_dir: str | Path, jobs: int = 1, threads: int | None = None, profile: str | None = None) -> int:
    """Continue an interrupted or failed run in its own folder: finished notebooks are kept, the others
    run again there (a training loop continues from its last checkpoint). The folder is locked first."""
    claim = claim_existing(Path(run_dir).expanduser().absolute())
    try:
        run_dir = claim.run_dir
        run_info = read_run_record(run_dir)
        check_resumable(run_info, run_dir, list_notebooks(), paths.PARAMS)
        _refuse_changed_options(run_info, threads, profile)
        plan = _resume_plan(run_info, run_dir)
        run_info.setdefault("resumed", []).append(datetime.now().isoformat(timespec="seconds"))
        run_info["status"] = "running"
        return _execute_run(run_dir, run_info, plan, jobs, int(run_info["threads"]))
    finally:
        claim.release()


def _refuse_changed_options(run_info: dict[str, Any], threads: int | None, profile: str | None) -> None:
    """--resume continues the run as it was planned: a different thread count or profile cannot apply."""
    for flag, given, recorded in (("--threads", threads, run_info["threads"]), ("--profile", profile, run_info["profile"])):
        if given is not None and given != recorded:
            raise WorkbookError(f"--resume: {flag} {given} differs from the run's own ({recorded}); a resumed run "
                                f"keeps its settings so its notebooks agree: drop {flag}, or start a new run")


def _resume_plan(run_info: dict[str, Any], run_dir: Path) -> list[Job]:
    threads = int(run_info["threads"])
    plan = make_plan(run_info["profile"], list(run_info["notebooks"]), None, threads, run_dir, use_cache=False)
    for job in plan:
        entry = run_info["notebooks"].get(job.stem)
        if entry is None:
            raise WorkbookError(f"{run_dir}: the run did not include {job.stem}, which its notebooks need")
        job.overrides = entry.get("overrides", {})
        job.resolved = validate(load_notebook_spec(job.stem), job.overrides, f"{run_dir / 'run.json'} ({job.stem})")
        finished = entry.get("status") in FINISHED
        job.action, job.reason = ("keep", "") if finished else ("run", f"resumed after {entry.get('status')}")
        if not finished:
            entry.update(status="not run", error=None)
    return plan


def status(profile: str, only: list[str] | None = None, sets: list[str] | None = None,
           threads: int | None = None, force: list[str] | None = None, use_cache: bool = True) -> int:
    """Print what a run would do with each notebook, and why, without running anything."""
    plan = make_plan(profile, only, sets, threads or DEFAULT_THREADS, paths.REPORTS / ".status", force, use_cache)
    for job in plan:
        print(f"{job.stem:<24} {'reuse' if job.action == 'reuse' else 'run':<6} {job.describe()}")
    return 0


def check(profile: str, only: list[str] | None = None, sets: list[str] | None = None) -> int:
    """Validate parameters only; print each notebook's overrides (profile file and --set)."""
    stems = select_notebooks(only)
    plan = resolve_parameters(profile, stems, sets)
    for stem in stems:
        ov = plan[stem]["overrides"]
        print(f"{stem}: ok ({len(ov)} override{'s' if len(ov) != 1 else ''}"
              + (f": {', '.join(f'{k}={v!r}' for k, v in ov.items())}" if ov else "") + ")")
    return 0
