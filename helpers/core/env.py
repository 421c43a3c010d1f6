"""Environment variables the runner and the worker pool set for the processes they start."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

VERSION = "0.1.0"

# Set by the runner for the kernels it starts; absent when a notebook is opened in JupyterLab.
ENV_PROFILE = "PAIRWISE_PROFILE"
ENV_THREADS = "PAIRWISE_THREADS"


@contextmanager
def scoped_env(**values: str | None) -> Iterator[None]:
    """Set (or, with None, remove) environment variables for the duration of the block, then put
    back exactly what was there: child processes started inside inherit the values."""
    old = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
