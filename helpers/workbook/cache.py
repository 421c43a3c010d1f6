"""Cached notebook results, keyed by everything that produced them.

A result's key hashes: the notebook's source, its resolved parameters, the source of the ``helpers``
package, the pinned requirements, the keys of its upstream results, the content of user data named in
its parameters, the device kind and the thread count. ``python -m helpers run`` reuses a completed
result with the same key from any earlier run folder (the index ``.cache/results/index.json`` records
where each lives; a result whose folder is gone is not reused), hard-linked or copied into the new run
folder, never moved, so the earlier run stays whole.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.core import io, paths

COMPONENTS = ("notebook", "parameters", "helpers", "requirements", "upstream", "data", "device", "threads")
# Files this large are identified by size and modification time instead of their bytes (a JRDB folder is
# gigabytes of images; hashing them on every run would cost more than the notebook).
_HASH_LIMIT = 16 * 2**20


@dataclass
class ResultKey:
    key: str
    components: dict[str, str] = field(default_factory=dict)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _hash_tree(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        st = f.stat()
        if st.st_size > _HASH_LIMIT:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def helpers_hash() -> str:
    """The source of the helpers package (every .py file under it)."""
    root = paths.PROJ_ROOT / "helpers"
    return _hash_tree(sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts), root)


def _user_paths(value: Any, run_dir: Path) -> list[Path]:
    """Existing files or folders named by a parameter value (strings, also inside lists and mappings)."""
    if isinstance(value, dict):
        return [p for v in value.values() for p in _user_paths(v, run_dir)]
    if isinstance(value, list):
        return [p for v in value for p in _user_paths(v, run_dir)]
    if not isinstance(value, str) or not value or len(value) > 4096 or "\n" in value:
        return []
    p = Path(value).expanduser()
    p = p if p.is_absolute() else paths.PROJ_ROOT / p
    try:
        if not p.exists() or paths.inside(run_dir, p) or p.resolve() == paths.PROJ_ROOT.resolve():
            return []
    except OSError:
        return []
    return [p]


def data_hash(params: dict[str, Any], run_dir: Path) -> str:
    """The content of the user's files and folders named in the parameters (e.g. a pair folder)."""
    h = hashlib.sha256()
    for name in sorted(params):
        for p in _user_paths(params[name], run_dir):
            files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
            h.update(f"{name}={p}:".encode() + _hash_tree(files, p if p.is_dir() else p.parent).encode())
    return h.hexdigest()[:16]


def device_kind() -> str:
    """What the numbers depend on besides the code: the GPU model when there is one, else the CPU's."""
    import torch  # deferred: the runner's validation and `status` should not wait for torch otherwise

    if torch.cuda.is_available():
        return "cuda:" + torch.cuda.get_device_name(0)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return "cpu:" + model


def result_key(stem: str, resolved: dict[str, Any], upstream: dict[str, str], run_dir: Path,
               device: str, threads: int, helpers: str) -> ResultKey:
    """The key of one notebook's result and the hash of each thing that went into it."""
    params = {k: v for k, v in resolved.items() if k != "out_dir"}
    parts = {
        "notebook": _sha(paths.notebook_path(stem).read_bytes()),
        "parameters": _sha(json.dumps(params, sort_keys=True).encode()),
        "helpers": helpers,
        "requirements": _sha((paths.PROJ_ROOT / "requirements.txt").read_bytes()),
        "upstream": _sha(json.dumps(upstream, sort_keys=True).encode()),
        "data": data_hash(params, run_dir),
        "device": device,
        "threads": str(threads),
    }
    return ResultKey(_sha(json.dumps({"stem": stem, **parts}, sort_keys=True).encode()), parts)


# ------------------------------------------------------------------------------------------ the index
def index_path() -> Path:
    return paths.CACHE / "results" / "index.json"


def load_index() -> dict[str, Any]:
    try:
        index = json.loads(index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"results": []}
    return index if isinstance(index, dict) and isinstance(index.get("results"), list) else {"results": []}


def record_result(stem: str, key: ResultKey, folder: Path) -> None:
    """Remember where a completed result lives (the newest entry for a key wins)."""
    index = load_index()
    entry = {"stem": stem, "key": key.key, "components": key.components, "folder": str(folder.resolve())}
    index["results"] = [e for e in index["results"] if e.get("folder") != entry["folder"]] + [entry]
    io.atomic_write_json(index_path(), index)


def _completed(folder: Path, stem: str) -> bool:
    """The folder still exists, and its run record says the notebook finished (ran or was reused)."""
    try:
        record = json.loads((folder.parent / "run.json").read_text(encoding="utf-8"))
        status = record["notebooks"][stem]["status"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return folder.is_dir() and status in ("ran", "reused", "ok")


def find_result(stem: str, key: ResultKey, exclude: Path | None = None) -> Path | None:
    """The newest completed result with this key, outside ``exclude`` (the run being made)."""
    for e in reversed(load_index()["results"]):
        folder = Path(e.get("folder", ""))
        if e.get("key") != key.key or e.get("stem") != stem:
            continue
        if exclude is not None and paths.inside(exclude, folder):
            continue
        if _completed(folder, stem):
            return folder
    return None


def why_not_cached(stem: str, key: ResultKey) -> str:
    """Which inputs differ from the newest earlier result of the same notebook (the reason it runs)."""
    earlier = [e for e in load_index()["results"] if e.get("stem") == stem]
    if not earlier:
        return "no earlier result"
    changed = [c for c in COMPONENTS if earlier[-1].get("components", {}).get(c) != key.components.get(c)]
    if not changed:
        return "its earlier result is gone or did not finish"
    names = {"notebook": "the notebook", "parameters": "its parameters", "helpers": "the helpers code",
             "requirements": "the pinned requirements", "upstream": "an upstream result", "data": "its data",
             "device": "the device", "threads": "the thread count"}
    return ", ".join(names[c] for c in changed) + " changed"


def link_result(src: Path, dst: Path) -> None:
    """Put an earlier result into this run: hard links where the file system allows (the workbook
    replaces files atomically, never edits them in place, so a link cannot change the earlier run),
    else copies. The earlier folder is never moved or modified."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    with io.atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=link, symlinks=True)
