"""Atomic writes: write to a temporary name in the same folder, then rename.

A crash or an error mid-write never leaves a half-written file under the final name.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from helpers.core.errors import DataError


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_created(path: Path, mode: int) -> None:
    """Give a temporary file or folder the mode a plain ``open``/``mkdir`` would have: ``tempfile``
    creates them 0600/0700 whatever the umask, which would make shared reports unreadable."""
    os.chmod(path, mode & ~current_umask())


def copy_as_created(src: str | Path, dst: str | Path) -> None:
    """Copy a file's bytes to a new file with the mode this process's umask gives (not the source's:
    a result copied under ``umask 077`` must not stay readable by everyone)."""
    import shutil

    shutil.copyfile(src, dst)
    os.chmod(dst, (0o777 if os.access(src, os.X_OK) else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _as_created(tmp_path, 0o666)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; when the block succeeds it replaces `path`.

    The old folder is renamed aside and the new one renamed in (two renames, so `path` is absent only
    for that instant); readers never see a half-written folder, and the temporary name is unique per call.
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _as_created(tmp, 0o777)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars, paths and non-finite floats to plain JSON values."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        return jsonable(obj.item())  # 0-d torch tensor
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN/Inf; null says "not available"
    return obj


def to_json(obj: Any) -> str:
    return json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n"


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj))


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:  # a file handle stops numpy appending ".npz" to the temp name
            np.savez(fh, **arrays)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    import torch  # imported lazily: most of the workbook's I/O does not need torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def read_json(path: str | Path) -> Any:

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
