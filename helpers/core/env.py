"""Environment variables the runner and the worker pool set for the processes they start."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

VERSION = "0.1.0"

# Set by the runner for the kernels it starts; absent when a notebook is opened in JupyterLab.
ENV_PROFILE = "PAIRWISE_PROFILE"
ENV_THREADS = "PAIRWISE_THREADS"
# torch and BLAS threads of every kernel the runner starts, and of a kernel started in JupyterLab, so
# a notebook gives the same numbers in Lab as in a run: not the machine's core count.
DEFAULT_THREADS = 2
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


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
