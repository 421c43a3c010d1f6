"""The one place for paths. Nothing is created at import."""
from __future__ import annotations

import os
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
