"""The one place for paths. Nothing is created at import."""
from __future__ import annotations

import os
import re
from pathlib import Path


PROJ_ROOT = Path(__file__).resolve().parents[2]


NOTEBOOKS = PROJ_ROOT / "notebooks"


PARAMS = PROJ_ROOT / "params"


REPORTS = PROJ_ROOT / "reports"


# Built datasets (digit pairs, generated scenes, image tables) are cached here; safe to delete.
CACHE = Path(os.environ.get("PAIRWISE_CACHE", PROJ_ROOT / ".cache"))


def notebook_path(stem: str) -> Path:
    return NOTEBOOKS / f"{stem}.ipynb"


def params_path(profile: str, stem: str) -> Path:
    return PARAMS / profile / f"{stem}.yaml"


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_slug(text: str) -> str:
    """A name that is safe as one path component: letters, digits, ``. _ -`` only, no leading dot
    (so never ``..``), never empty. ``../../x`` -> ``x``; ``my data`` -> ``my_data``."""
    slug = _UNSAFE.sub("_", str(text)).strip("_").lstrip(".")
    slug = re.sub(r"_*\.\.+_*", "_", slug).strip("_")   # no ".." left inside either
    return slug[:100] or "unnamed"


def unique_slugs(names: list[str]) -> list[str]:
    """`safe_slug` of each name; a slug seen before gets ``-2``, ``-3``, ... in list order, skipping a
    suffixed name that another entry has on its own (so the result is the same for the same list)."""
    natural = [safe_slug(n) for n in names]
    reserved, out = set(natural), []
    for base in natural:
        slug, k = base, 2
        while slug in out or (slug != base and slug in reserved):
            slug, k = f"{base}-{k}", k + 1
        out.append(slug)
    return out


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies inside ``root``."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())


# Earlier notebooks whose outputs this process opened (written to reads.json by the notebook context),
# and the fallback folders already announced (said once per folder, not on every read).
_OPENED: set[str] = set()
_ANNOUNCED: set[Path] = set()


def upstream(run_dir: str | Path, stem: str) -> Path:
    """The output folder of an earlier notebook ``stem`` in the run folder ``run_dir``.

    Every read of another notebook's outputs goes through here, so the notebook can record what it
    read and the runner can hold that against the notebook's ``**Reads:**`` line. In JupyterLab (the
    run folder is reports/interactive) an upstream notebook that has not run interactively is read
    from the latest completed run instead, and a line says which run.
    """
    folder = Path(run_dir) / stem
    if folder.is_dir() or Path(run_dir).resolve() != (REPORTS / "interactive").resolve():
        if folder.is_dir():
            _OPENED.add(stem)
        return folder
    latest = REPORTS / "latest" / stem
    if latest.is_dir():
        real = latest.resolve()
        if real not in _ANNOUNCED:
            _ANNOUNCED.add(real)
            print(f"{stem} has not run in {folder.parent}: reading its outputs from the latest completed "
                  f"run, {real.parent}")
        _OPENED.add(stem)
        return real
    return folder


def opened_upstream() -> list[str]:
    return sorted(_OPENED)
