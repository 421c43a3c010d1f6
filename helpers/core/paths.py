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
    return slug or "unnamed"


def unique_slugs(names: list[str]) -> list[str]:
    """`safe_slug` of each name; a slug seen before gets ``-2``, ``-3``, ... in list order."""
    out: list[str] = []
    for name in names:
        base = safe_slug(name)
        slug, k = base, 2
        while slug in out:
            slug, k = f"{base}-{k}", k + 1
        out.append(slug)
    return out


def inside(root: str | Path, path: str | Path) -> bool:
    """Whether ``path`` (resolved, links followed) lies inside ``root``."""
    return Path(path).resolve().is_relative_to(Path(root).resolve())
