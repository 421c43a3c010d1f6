"""Progress of long cells: a widget bar in JupyterLab; off under the runner, whose log stays one line
per notebook (the executed notebook then holds no bar either)."""
from __future__ import annotations

import os
from typing import Iterable, TypeVar

from helpers.core.env import ENV_PROFILE

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, total: int | None = None) -> Iterable[T]:
    from tqdm.auto import tqdm  # deferred: in a notebook tqdm.auto imports ipywidgets

    return tqdm(items, desc=desc, total=total, disable=bool(os.environ.get(ENV_PROFILE)), leave=False)
