"""The run card (config.json, M3): what ran, where, on what data, with which settings."""
from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from helpers.core import paths
from helpers.core.env import VERSION as __version__


PACKAGES = ("torch", "torchvision", "timm", "lightgbm", "scikit-learn", "numpy", "pandas", "papermill",
            "nbconvert", "matplotlib", "seaborn", "ipywidgets")


def git_facts() -> dict[str, Any]:
    """Commit and dirty flag of the workbook's checkout; nulls outside git."""
    def run(*args: str) -> str | None:
        try:
            return subprocess.run(["git", "-C", str(paths.PROJ_ROOT), *args], capture_output=True,
                                  text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def environment_facts(device: str = "cpu") -> dict[str, Any]:
    """Device, distributed setting and library versions, as M3 records them."""
    import torch

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    versions = package_versions()
    return {
        "device": device,
        "world_size": world_size,
        "use_ddp": world_size > 1,
        "gpu_names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "cuda_version": torch.version.cuda if cuda else None,
        "pytorch_version": versions["torch"],
        "timm_version": versions["timm"],
        "lightgbm_version": versions["lightgbm"],
        "python_version": versions["python"],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def make_config(*, notebook: str, description: str, params: dict[str, Any], out_dir: str, profile: str,
                device: str = "cpu", dataset: dict | None = None, model: dict | None = None,
                training: dict | None = None, **extra: Any) -> dict[str, Any]:
    """Assemble config.json. `dataset`/`model`/`training` are the notebook's own sections.

    `training` is expected to carry loss, optimizer (+ params), scheduler (+ params), warmup epochs,
    max_grad_norm, epochs, patience, batch size, effective batch size, learning rate, weight decay,
    workers; the optimisation flags are derived from it when not given.
    """
    card: dict[str, Any] = {
        "notebook": notebook,
        "helpers_version": __version__,
        **git_facts(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "description": description,
        "profile": profile,
        "environment": environment_facts(device),
        "parameters": params,
    }
    if dataset is not None:
        card["dataset"] = dataset
    if model is not None:
        card["model"] = model
    if training is not None:
        t = dict(training)
        t.setdefault("optimization_flags", {
            "gradient_clipping": bool(t.get("max_grad_norm")),
            "warmup": bool(t.get("warmup_epochs")),
            "early_stopping": bool(t.get("patience")),
            "cosine_annealing": t.get("scheduler") == "cosine",
            "mixed_precision": bool(t.get("amp")),
        })
        card["training"] = t
    card.update(extra)
    card["output_dir"] = out_dir
    return card
