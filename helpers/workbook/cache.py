"""Cached notebook results, keyed by everything that produced them.

A result's key hashes: the notebook's source, its resolved parameters, the source of the ``helpers``
package, the pinned requirements, the keys of its upstream results, the content of user data named in
its parameters, the device kind and the thread count. ``python -m helpers run`` reuses a completed
result with the same key from any earlier run folder (the index ``.cache/results/index.json`` records
where each lives; a result whose folder is gone is not reused), hard-linked or copied into the new run
folder, never moved, so the earlier run stays whole.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.core import io, paths
from helpers.core.errors import ParameterError, WorkbookError

COMPONENTS = ("notebook", "parameters", "helpers", "requirements", "upstream", "data", "device", "threads")
# A data folder with more files than this is not a data set but a mistake (`pairs_dir=/`): refused, not hashed.
MAX_DATA_FILES = 200_000


@dataclass
class ResultKey:
    key: str
    components: dict[str, str] = field(default_factory=dict)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


# ------------------------------------------------------------------------------------ file contents
# Every file is keyed by its bytes (BLAKE2b, in the standard library), read once: the digest is kept,
# per device and inode, with the size, modification and change times it was taken at. Rewriting a file
# in place changes its change time (ctime), which `touch -r` cannot set back, so a kept digest is never
# stale; a JRDB folder of gigabytes is hashed once, then costs one stat per file.
_DIGESTS: dict[str, list] = {}
_MAX_DIGESTS = 500_000          # about 50 MB of JSON; beyond it the oldest are dropped (and re-hashed if needed)
_DIGESTS_LOADED = False
_DIGESTS_DIRTY = False


def _digest_store() -> Path:
    return paths.CACHE / "results" / "digests.json"


def file_digest(path: Path) -> str:
    """The BLAKE2b digest of a file's bytes (links followed), from the kept digests when still valid."""
    global _DIGESTS_LOADED, _DIGESTS_DIRTY
    if not _DIGESTS_LOADED:
        try:
            loaded = json.loads(_digest_store().read_text(encoding="utf-8"))
            _DIGESTS.update(loaded if isinstance(loaded, dict) else {})
        except (OSError, ValueError):
            pass
        _DIGESTS_LOADED = True
    st = os.stat(path)
    ident, stamp = f"{st.st_dev}:{st.st_ino}", [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    kept = _DIGESTS.get(ident)
    if isinstance(kept, list) and kept[:3] == stamp:
        return kept[3]
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    _DIGESTS[ident] = [*stamp, h.hexdigest()]
    _DIGESTS_DIRTY = True
    return h.hexdigest()


def save_digests() -> None:
    """Keep the digests taken in this process for the next one (a lost write only costs a re-hash)."""
    global _DIGESTS_DIRTY
    if _DIGESTS_DIRTY:
        for ident in list(_DIGESTS)[:max(0, len(_DIGESTS) - _MAX_DIGESTS)]:   # the oldest go first
            del _DIGESTS[ident]
        try:
            io.atomic_write_text(_digest_store(), json.dumps(_DIGESTS))
            _DIGESTS_DIRTY = False
        except OSError:
            pass


def _walk_files(root: Path, what: str) -> list[Path]:
    """The regular files under `root`, through links (the loaders follow them too), each real folder once."""
    if root.resolve() == Path(root.anchor):
        raise ParameterError(f"{what}: {root} is the file-system root; name the data folder itself")
    out: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:       # a link back up the tree: walked already
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(files):
            p = Path(folder) / name
            if p.is_file():
                out.append(p)
        if len(out) > MAX_DATA_FILES:
            raise ParameterError(f"{what}: {root} holds more than {MAX_DATA_FILES} files; that is not a data set "
                                 "folder (name the folder that holds the data itself)")
    return out


def _hash_tree(files: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            digest = file_digest(f)
        except OSError as e:
            raise ParameterError(f"cannot read {f}: {e.strerror or e}") from None
        h.update(str(f.relative_to(root)).encode() + b"\0" + digest.encode())
    return h.hexdigest()[:16]


def notebook_hash(path: Path) -> str:
    """What a notebook computes: its cells' kinds, sources and tags (the parameters cell among them), not
    how an editor wrote the file (key order, kernel name, language info, ids, outputs): opening and saving
    it in JupyterLab keeps its results reusable."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
        cells = [(c.get("cell_type"), "".join(c.get("source", "")) if isinstance(c.get("source"), list)
                  else c.get("source", ""), sorted(c.get("metadata", {}).get("tags", []))) for c in nb["cells"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return _sha(Path(path).read_bytes())
    return _sha(json.dumps(cells).encode())


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


def _table_images(params: dict[str, Any]) -> list[Path]:
    """The images a task table (06's ``table``) names: the result depends on them as much as on the table."""
    table, image_col = params.get("table"), params.get("image_col")
    if not isinstance(table, str) or not table or not isinstance(image_col, str):
        return []
    from helpers.data.tables import table_image_files  # deferred: pandas

    try:
        return table_image_files(table, image_col, params.get("image_root") or None)
    except WorkbookError:
        return []     # an unreadable table fails in the notebook with its own message


def data_hash(params: dict[str, Any], run_dir: Path) -> str:
    """The content of the user's files and folders named in the parameters (e.g. a pair folder), through
    links, and of the images a task table names."""
    h = hashlib.sha256()
    for name in sorted(params):
        for p in _user_paths(params[name], run_dir):
            files = _walk_files(p, name) if p.is_dir() else [p]
            h.update(f"{name}={p}:".encode() + _hash_tree(files, p if p.is_dir() else p.parent).encode())
    images = _table_images(params)
    if images:
        h.update(b"table images:" + _hash_tree(images, Path("/")).encode())
    save_digests()
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
        "notebook": notebook_hash(paths.notebook_path(stem)),
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


@contextmanager
def _index_locked():
    """Hold the index's lock (flock on a file beside it): two runs recording at once both keep their entry."""
    lock = index_path().with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)     # closing the descriptor releases the lock


def load_index() -> dict[str, Any]:
    try:
        index = json.loads(index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"results": []}
    return index if isinstance(index, dict) and isinstance(index.get("results"), list) else {"results": []}


def manifest(folder: Path) -> dict[str, list]:
    """Every file of a result folder (links not followed) with its size and content digest."""
    out: dict[str, list] = {}
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                out[str(p.relative_to(folder))] = [p.stat().st_size, file_digest(p)]
    return out


def record_result(stem: str, key: ResultKey, folder: Path) -> None:
    """Remember where a completed result lives and what it holds (the newest entry for a key wins)."""
    entry = {"stem": stem, "key": key.key, "components": key.components, "folder": str(folder.resolve()),
             "files": manifest(folder)}
    save_digests()
    with _index_locked():
        index = load_index()
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


def changed_files(folder: Path, files: Any) -> str | None:
    """Why a result folder no longer holds what it held at completion (a file gone, resized or
    rewritten), or None when every listed file is intact. A result recorded without a list is not trusted."""
    if not isinstance(files, dict) or not files:
        return "it was recorded without the list of its files"
    for rel, (size, digest) in files.items():
        p = folder / rel
        try:
            if p.is_symlink() or not p.is_file():
                return f"{rel} is gone"
            if p.stat().st_size != size or file_digest(p) != digest:
                return f"{rel} changed"
        except OSError as e:
            return f"{rel} cannot be read ({e.strerror or e})"
    return None


def lookup(stem: str, key: ResultKey, exclude: Path | None = None) -> tuple[Path | None, str]:
    """The newest completed, intact result with this key outside ``exclude`` (the run being made), or
    None and why not (which inputs changed, or what changed in the earlier result's files)."""
    damaged = ""
    for e in reversed(load_index()["results"]):
        folder = Path(e.get("folder", ""))
        if e.get("key") != key.key or e.get("stem") != stem:
            continue
        if exclude is not None and paths.inside(exclude, folder):
            continue
        if not _completed(folder, stem):
            continue
        why = changed_files(folder, e.get("files"))
        if why is None:
            save_digests()
            return folder, ""
        damaged = damaged or f"its earlier result changed since it completed ({folder.parent.name}: {why})"
    save_digests()
    return None, damaged or why_not_cached(stem, key)


def find_result(stem: str, key: ResultKey, exclude: Path | None = None) -> Path | None:
    """The newest completed, intact result with this key, outside ``exclude``."""
    return lookup(stem, key, exclude)[0]


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
    """Put an earlier result into this run: hard links where the file system allows and the file's mode is
    what this process's umask gives (the workbook replaces files atomically, never edits them in place, so
    a link cannot change the earlier run), else copies made with the current umask. The earlier folder is
    never moved or modified."""
    umask = io.current_umask()

    def link(a: str, b: str) -> None:
        mode = os.stat(a).st_mode & 0o777
        if mode & ~umask == mode:
            try:
                os.link(a, b)
                return
            except OSError:
                pass
        io.copy_as_created(a, b)

    with io.atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=link, symlinks=True)
