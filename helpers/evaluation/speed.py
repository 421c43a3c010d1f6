"""Speed and memory of timm backbones, measured the timm way (warm-up, timed steps, batch decay on
out-of-memory) in a fresh process per backbone, with peak memory on CUDA or CPU."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

import torch

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.taskspec import make_task_specs, TaskSpec
from helpers.data.tables import DEFAULT_TASKS
from helpers.models.multitask import count_multitask_params
from helpers.models.registry import create_model
from helpers.training.multitask import MultiTask


class SimulatedOOM(RuntimeError):
    """Raised by `measure_backbone(simulate_oom_above=B)` for batches above B (tests the retry path)."""

    def __init__(self, batch: int):
        super().__init__(f"CUDA out of memory (simulated: batch {batch} above the simulated limit)")


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error from CUDA or the CPU allocator."""
    if isinstance(exc, (MemoryError, SimulatedOOM)) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                              or "failed to allocate" in msg)


def decay_batch(batch: int) -> int:
    """timm's batch decay: 256 -> 192 -> 128 -> 96 -> 64 -> 48 -> … -> 2 -> 1."""
    try:
        from timm.utils import decay_batch_step
        return int(decay_batch_step(batch))
    except ImportError:  # pragma: no cover - same rule as timm.utils.decay_batch_step(num_intervals=2)
        if batch <= 1:
            return 0
        base = 2 ** int(math.log2(batch - 1))
        step = max(base // 2, 1)
        return max(((batch - 1) // step) * step, 1)


class OOMAtEveryBatch(WorkbookError):
    """No batch size down to 1 fitted in memory."""


def run_with_batch_decay(measure: Callable[[int], dict], batch: int) -> dict:
    """Call ``measure(batch)``; on out-of-memory retry with timm's decayed batch until one fits.

    Returns the measurement with ``batch`` (the batch that fitted) and ``oom_batches`` (those that
    did not).
    """
    tried: list[int] = []
    while True:
        try:
            res = measure(batch)
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are retried
            if not is_oom(e):
                raise
            tried.append(batch)
            nxt = decay_batch(batch)
            if nxt < 1 or nxt >= batch:
                raise OOMAtEveryBatch(f"out of memory at every batch size tried {tried}: {e}") from None
            batch = nxt
            continue
        res = dict(res)
        res["batch"] = batch
        res["oom_batches"] = tried
        return res


def _proc_status_mb(field_name: str) -> float:
    """A memory line of /proc/self/status in MB (VmRSS, VmHWM); NaN where /proc is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _rss_mb() -> float:
    return _proc_status_mb("VmRSS")


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB).

    Linux: VmHWM, the high-water mark of this process's own address space. ``getrusage``'s
    ``ru_maxrss`` is the fallback only: on Linux it carries the *parent's* peak across fork and
    exec, so a fresh measuring process spawned by a big notebook kernel would report the kernel's peak.
    """
    hwm = _proc_status_mb("VmHWM")
    if math.isfinite(hwm):
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _gmacs(model, img_size: int, device: str) -> float | None:
    """GMACs per image at batch 1 via fvcore (it counts one fused multiply-add as one flop); None without it."""
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None
    x = torch.randn(1, 3, img_size, img_size, device=device)
    try:
        fca = FlopCountAnalysis(model.eval(), x)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        return float(fca.total()) / 1e9
    except Exception:  # noqa: BLE001 - an optional figure; fvcore cannot trace every model
        return None


def _make_targets(tasks: Sequence[TaskSpec], batch: int, dev: torch.device) -> torch.Tensor:
    """Random valid targets [B, T]: class indices / 0-1 / standard normal values."""
    cols = []
    for t in tasks:
        if t.kind == "regression":
            cols.append(torch.randn(batch, device=dev))
        else:
            cols.append(torch.randint(0, t.out_dim if t.kind == "multiclass" else 2, (batch,), device=dev).float())
    return torch.stack(cols, 1)


def _autocast(dev: torch.device, amp: bool) -> Callable[[], Any]:
    """A factory of autocast contexts: float16 on CUDA, bfloat16 on CPU; disabled without `amp`."""
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16
    if amp:
        return lambda: torch.autocast(dev.type, dtype=amp_dtype)
    return lambda: torch.autocast(dev.type, enabled=False)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _reset_peak(dev: torch.device, empty_cache: bool = False) -> None:
    if dev.type == "cuda":
        if empty_cache:
            torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mem_mb(dev: torch.device) -> float:
    """Peak memory since the last reset: CUDA max allocated, or this process's peak RSS on CPU."""
    return torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else peak_rss_mb()


def _time_inference(model, x: torch.Tensor, warmup: int, steps: int, autocast, dev: torch.device
                    ) -> tuple[float, float, float]:
    """`warmup` then `steps` forward passes under inference_mode: (summed step time, wall time, peak MB)."""
    model.eval()
    _reset_peak(dev, empty_cache=True)
    with torch.inference_mode():
        for _ in range(warmup):
            with autocast():
                model(x)
        _sync(dev)
        t_step = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            s = time.perf_counter()
            with autocast():
                model(x)
            _sync(dev)
            t_step += time.perf_counter() - s
        wall = time.perf_counter() - t0
    return t_step, wall, _peak_mem_mb(dev)


def _time_training(model, task: MultiTask, x: torch.Tensor, y: torch.Tensor, warmup: int, steps: int, autocast,
                   dev: torch.device, lr_backbone: float, lr_head: float) -> tuple[float, float, float]:
    """AdamW steps (forward + loss + backward + step; zero_grad outside the step timer), `warmup` then
    `steps` timed: (summed step time, wall time, peak MB)."""
    model.train()
    opt = torch.optim.AdamW(model.param_groups(lr_backbone, lr_head))
    _reset_peak(dev)

    def train_step() -> float:
        opt.zero_grad(set_to_none=True)
        s = time.perf_counter()
        with autocast():
            out = model(x)
        loss = task.loss(out.float(), y)
        loss.backward()
        opt.step()
        _sync(dev)
        return time.perf_counter() - s

    for _ in range(warmup):
        train_step()
    total = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        total += train_step()
    return total, time.perf_counter() - t0, _peak_mem_mb(dev)


def measure_backbone(name: str, img_size: int, batch: int, tasks: Sequence[TaskSpec] | None = None,
                     warmup: int = 10, steps: int = 40, device: str = "cpu", amp: bool = False,
                     channels_last: bool = False, pretrained_files: dict | None = None,
                     lr_backbone: float = 1e-4, lr_head: float = 1e-3,
                     simulate_oom_above: int = 0, seed: int = 0) -> dict:
    """Measure one backbone (and multi-task heads) the way timm's `benchmark.py` does, plus memory.

    Inference: `warmup` then `steps` forward passes under ``torch.inference_mode()``. Training step:
    forward + multi-task loss + backward + AdamW step (zero_grad outside the step timer). CUDA is
    synchronised at each step end. samples/s = samples / wall time of the timed loop. Peak memory:
    CUDA ``max_memory_allocated`` after ``reset_peak_memory_stats``; on CPU this process's peak RSS
    (`peak_rss_mb`; measure each backbone in a fresh process, see `evaluate_backbone_speed`).
    """
    import timm  # noqa: F401 - imported before the baseline reading so it counts as runtime, not model

    tasks = list(tasks or make_task_specs(DEFAULT_TASKS))
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(seed)
    rss_before = _rss_mb()   # torch + timm runtime, before the model exists
    model = create_model("timm_multitask", backbone=name, tasks=tasks, pretrained_files=pretrained_files,
                         img_size=img_size, channels_last=channels_last).to(dev)
    task = MultiTask(tasks)
    counts = count_multitask_params(model)
    gmacs = _gmacs(model, img_size, device)
    if simulate_oom_above and batch > simulate_oom_above:
        raise SimulatedOOM(batch)
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = _make_targets(tasks, batch, dev)                                  # [B, T]
    autocast = _autocast(dev, amp)
    t_infer, infer_wall, infer_peak = _time_inference(model, x, warmup, steps, autocast, dev)
    t_train, train_wall, train_peak = _time_training(model, task, x, y, warmup, steps, autocast, dev,
                                                     lr_backbone, lr_head)
    return {
        "model": name, "img_size": img_size, "batch": batch, "device": str(dev), "amp": amp,
        "channels_last": channels_last, "pretrained": bool(getattr(model, "pretrained", False)),
        **counts, "gmacs": gmacs,
        "infer_samples_per_s": steps * batch / infer_wall, "infer_step_ms": 1000 * t_infer / steps,
        "train_samples_per_s": steps * batch / train_wall, "train_step_ms": 1000 * t_train / steps,
        "peak_mem_mb": train_peak, "infer_peak_mem_mb": infer_peak,
        "mem_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss",
        "rss_before_model_mb": rss_before if not cuda else None,
        "model_mem_mb": train_peak - rss_before if not cuda else train_peak,
        "warmup": warmup, "steps": steps, "threads": torch.get_num_threads(),
        # Other processes on the machine slow a CPU measurement down: record how busy it was.
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpu_count": os.cpu_count(),
    }


_RESULT_TAG = "BACKBONE_BENCH_RESULT "


def _bench_child() -> int:
    """Entry point of the measuring subprocess: JSON kwargs on stdin, one tagged JSON line out."""
    kwargs = json.loads(sys.stdin.read())
    threads = kwargs.pop("threads", 0)
    if threads:
        torch.set_num_threads(int(threads))
    kwargs["tasks"] = [TaskSpec(**t) for t in kwargs.get("tasks") or []] or None
    try:
        res = measure_backbone(**kwargs)
    except Exception as e:  # noqa: BLE001 - the parent decides what an error means
        res = {"error": f"{type(e).__name__}: {e}", "oom": is_oom(e)}
    print(_RESULT_TAG + json.dumps(res), flush=True)
    return 0


def _measure_in_subprocess(kwargs: dict, timeout_s: float) -> dict:

    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.PROJ_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = "import sys; from helpers.evaluation.speed import _bench_child; sys.exit(_bench_child())"
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(kwargs), capture_output=True,
                              text=True, timeout=timeout_s, cwd=str(paths.PROJ_ROOT), env=env)
    except subprocess.TimeoutExpired:
        raise WorkbookError(f"benchmark of {kwargs['name']!r} at batch {kwargs['batch']} ran past "
                            f"{timeout_s:.0f} s; lower steps/warmup/img_size or raise bench_timeout_s") from None
    if proc.returncode == -9:   # SIGKILL: on Linux the kernel's OOM killer
        raise MemoryError(f"measuring process killed (SIGKILL, likely out of memory) at batch {kwargs['batch']}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        raise WorkbookError(f"benchmark subprocess for {kwargs['name']!r} failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(lines[-1][len(_RESULT_TAG):])
    if "error" in res:
        if res.get("oom"):
            raise MemoryError(res["error"])
        raise WorkbookError(f"benchmark of {kwargs['name']!r}: {res['error']}")
    return res


def evaluate_backbone_speed(name: str, img_size: int, batch: int, tasks: Sequence[TaskSpec] | None = None,
                            warmup: int = 10, steps: int = 40, device: str = "cpu", amp: bool = False,
                            channels_last: bool = False, pretrained_files: dict | None = None,
                            fresh_process: bool = True, threads: int = 0, simulate_oom_above: int = 0,
                            timeout_s: float = 600.0) -> dict:
    """Benchmark one backbone with timm's out-of-memory batch decay, in a fresh process by default.

    A fresh process per backbone (and per retried batch) keeps one measurement from inheriting
    another's peak resident memory. `threads` > 0 sets torch's thread count there (default: this
    process's).
    """
    tasks = list(tasks or make_task_specs(DEFAULT_TASKS))
    threads = threads or torch.get_num_threads()

    def measure(b: int) -> dict:
        kw = dict(name=name, img_size=img_size, batch=b, tasks=[asdict(t) for t in tasks], warmup=warmup,
                  steps=steps, device=device, amp=amp, channels_last=channels_last,
                  pretrained_files=pretrained_files or {}, simulate_oom_above=simulate_oom_above)
        if not fresh_process:
            return measure_backbone(**{**kw, "tasks": tasks})
        return _measure_in_subprocess({**kw, "threads": threads}, timeout_s)

    return run_with_batch_decay(measure, batch)
