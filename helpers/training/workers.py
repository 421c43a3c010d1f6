"""A process pool for training members in parallel: spawned workers, each with its own thread budget;
a member that raises, is killed or dies hard is reported as failed and its worker replaced."""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Sequence

from helpers.core.env import ENV_THREADS, scoped_env
from helpers.core.errors import WorkbookError


@dataclass
class WorkerOutcome:
    """What became of one task: its return value, or why it failed."""
    index: int
    ok: bool
    value: Any = None
    error: str = ""
    exitcode: int | None = None
    seconds: float = 0.0


def available_cores() -> int:
    """The thread budget: the runner's PAIRWISE_THREADS when set (the same on every machine, so the
    number of workers and their threads, and with them the numbers, do not depend on the machine),
    else the cores this process may use (affinity)."""
    budget = os.environ.get(ENV_THREADS)
    if budget and budget.isdigit() and int(budget) > 0:
        return int(budget)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(n_tasks: int, workers: int = 0, device: str = "cpu") -> tuple[int, int]:
    """(worker processes, torch threads per worker).

    workers = 0: as many as the cores allow (one per core on CPU; two sharing a GPU), never more
    than there are tasks. Threads: the cores split evenly, at least one, so workers do not fight.
    """
    cores = available_cores()
    if workers <= 0:
        workers = cores if not str(device).startswith("cuda") else 2
    workers = max(1, min(workers, max(n_tasks, 1)))
    return workers, max(1, cores // workers)


_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def _worker_loop(conn, fn_ref: tuple[str, str], threads: int) -> None:
    """A worker process: run tasks received on `conn` until None arrives; reply (ok, value|error)."""
    fn = getattr(importlib.import_module(fn_ref[0]), fn_ref[1])
    # The OMP/MKL variables set at spawn already bound torch's pools; make it explicit for torch
    # when the task function uses it (a task that imports torch later inherits the variables).
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set (only allowed once per process)
            pass
    conn.send(("ready", os.getpid()))  # start-up (imports) does not count against a task's time
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        t0 = time.perf_counter()
        try:
            value = fn(task)
            conn.send((True, value, time.perf_counter() - t0))
        except BaseException as e:  # noqa: BLE001 - everything a member raises is reported, not fatal
            conn.send((False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", time.perf_counter() - t0))


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "worker did not exit"
    if code < 0:
        try:
            return f"worker process killed by signal {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"worker process killed by signal {-code}"
    return f"worker process exited with code {code} without reporting a result"


@dataclass
class _Slot:
    proc: Any
    conn: Any
    task: int | None = None
    started: float = 0.0


class _Pool:
    """The worker processes of one `run_in_workers` call, the tasks still to hand out and the outcomes.

    Every method keeps the pool's invariants: a slot whose worker died or timed out is retired and
    dropped (a new worker replaces it on the next `dispatch`), and every task ends as one outcome.
    """

    def __init__(self, fn_ref: tuple[str, str], tasks: Sequence[Any], workers: int, threads: int,
                 timeout_s: float | None, on_done: Callable[[WorkerOutcome], None] | None):
        self.ctx = mp.get_context("spawn")
        self.fn_ref, self.tasks, self.workers, self.threads = fn_ref, tasks, workers, threads
        self.timeout_s, self.on_done = timeout_s, on_done
        self.outcomes: dict[int, WorkerOutcome] = {}
        self.pending = deque(range(len(tasks)))
        self.slots: list[_Slot] = []

    def launch(self) -> _Slot:
        """Start one worker process (it signals "ready" once its imports are done)."""
        parent, child = self.ctx.Pipe(duplex=True)
        # Thread-count variables are read by the child's OpenMP/BLAS at import.
        with scoped_env(**{k: str(self.threads) for k in _THREAD_ENV}):
            p = self.ctx.Process(target=_worker_loop, args=(child, self.fn_ref, self.threads), daemon=True)
            p.start()
        child.close()
        return _Slot(p, parent)

    def await_ready(self, slot: _Slot) -> _Slot:
        """Wait for a launched worker's "ready"; a worker that cannot start is an error of the whole run."""
        try:
            if not slot.conn.poll(300):
                raise EOFError
            tag, _ = slot.conn.recv()
            assert tag == "ready"
        except (EOFError, OSError, AssertionError):
            slot.proc.join(5)
            self.retire(slot)
            raise WorkbookError(f"run_in_workers: a worker process could not start "
                                f"({_describe_exit(slot.proc.exitcode)}); see its traceback above") from None
        return slot

    def start(self) -> None:
        """Start the first workers together (imports run in parallel), then wait until each is ready."""
        launched = [self.launch() for _ in range(min(self.workers, len(self.tasks)))]
        self.slots.extend(self.await_ready(s) for s in launched)

    def busy(self) -> list[_Slot]:
        return [s for s in self.slots if s.task is not None]

    def dispatch(self) -> None:
        """Hand out pending tasks to idle workers, starting new ones up to the pool size."""
        while self.pending and (len(self.slots) < self.workers or any(s.task is None for s in self.slots)):
            slot = next((s for s in self.slots if s.task is None), None)
            if slot is None:
                slot = self.await_ready(self.launch())
                self.slots.append(slot)
            i = self.pending.popleft()
            slot.task, slot.started = i, time.perf_counter()
            try:
                slot.conn.send(self.tasks[i])
            except (BrokenPipeError, ConnectionResetError, EOFError):  # the worker is already dead
                slot.proc.join(5)
                self.finish(slot, WorkerOutcome(i, False, error=_describe_exit(slot.proc.exitcode),
                                                exitcode=slot.proc.exitcode))
                self.retire(slot)
                self.slots.remove(slot)

    def collect(self) -> None:
        """Wait for a busy worker to reply, die or run past the time limit, and record what happened."""
        busy = self.busy()
        if not busy:  # the last task failed while being handed out: nothing left to wait for
            return
        waits = [s.conn for s in busy] + [s.proc.sentinel for s in busy]
        timeout = None
        if self.timeout_s is not None:
            timeout = max(0.0, min(s.started + self.timeout_s for s in busy) - time.perf_counter())
        ready = set(wait(waits, timeout=timeout))
        now = time.perf_counter()
        for slot in busy:
            if slot.conn in ready:
                self._receive(slot, now)
            elif slot.proc.sentinel in ready:  # hard death without a reply
                self._lose(slot, now)
            elif self.timeout_s is not None and now - slot.started >= self.timeout_s:
                i = slot.task
                self.retire(slot)
                self.finish(slot, WorkerOutcome(i, False, error=f"timed out after {self.timeout_s:g} s (worker killed)",
                                                exitcode=slot.proc.exitcode, seconds=now - slot.started))
                self.slots.remove(slot)

    def _receive(self, slot: _Slot, now: float) -> None:
        """A worker's reply: the task's value or error (a worker that dies mid-reply is lost)."""
        try:
            ok, payload, seconds = slot.conn.recv()
        except (EOFError, OSError):  # died mid-reply
            self._lose(slot, now)
            return
        self.finish(slot, WorkerOutcome(slot.task, ok, payload if ok else None, "" if ok else payload, None, seconds))

    def _lose(self, slot: _Slot, now: float) -> None:
        """A worker that died while running its task: the task fails with the exit reason."""
        slot.proc.join(5)
        self.finish(slot, WorkerOutcome(slot.task, False, error=_describe_exit(slot.proc.exitcode),
                                        exitcode=slot.proc.exitcode, seconds=now - slot.started))
        self.retire(slot)
        self.slots.remove(slot)

    def finish(self, slot: _Slot, outcome: WorkerOutcome) -> None:
        self.outcomes[outcome.index] = outcome
        slot.task = None
        if self.on_done is not None:
            self.on_done(outcome)

    @staticmethod
    def retire(slot: _Slot) -> None:
        if slot.proc.is_alive():
            slot.proc.kill()
        slot.proc.join(5)
        slot.conn.close()

    def shutdown(self) -> None:
        """Ask every remaining worker to stop, then make sure it has."""
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for slot in self.slots:
            slot.proc.join(10)
            self.retire(slot)

    def results(self) -> list[WorkerOutcome]:
        return [self.outcomes[i] for i in range(len(self.tasks))]


def _function_ref(fn: Callable[[Any], Any]) -> tuple[str, str]:
    """(module, qualified name) by which the workers import `fn`; only module-level functions qualify."""
    if "<" in fn.__qualname__ or fn.__module__ == "__main__":
        raise WorkbookError(f"run_in_workers: {fn.__qualname__} must be a module-level function of an importable "
                            "module (workers import it by name)")
    return fn.__module__, fn.__qualname__


def run_in_workers(fn: Callable[[Any], Any], tasks: Sequence[Any], workers: int = 0, threads: int = 0,
                   timeout_s: float | None = None,
                   on_done: Callable[[WorkerOutcome], None] | None = None) -> list[WorkerOutcome]:
    """Run ``fn(task)`` for every task in worker processes; never raises for a failing task.

    fn: a module-level function (imported by name in the workers). Tasks and results are pickled.
    workers / threads: 0 = `resolve_workers`. timeout_s: per task; a task over it is killed and failed.
    on_done: called in this process as each task finishes (progress printing).
    Returns one `WorkerOutcome` per task, in task order.
    """
    fn_ref = _function_ref(fn)
    n_workers, auto_threads = resolve_workers(len(tasks), workers)
    pool = _Pool(fn_ref, tasks, n_workers, threads if threads > 0 else auto_threads, timeout_s, on_done)
    try:
        pool.start()
        while pool.pending or pool.busy():
            pool.dispatch()
            pool.collect()
    finally:
        pool.shutdown()
    return pool.results()
