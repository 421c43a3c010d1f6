"""Which torch device a run uses: one function, returning a ``torch.device``."""
from __future__ import annotations

import torch

from helpers.core.errors import WorkbookError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto"/"" -> CUDA when available, else CPU; asking for CUDA where there is none is an error."""
    if device is None or str(device) in ("auto", ""):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise WorkbookError(f"device = {str(device)!r}, but no CUDA device is available here: use 'auto' or 'cpu'")
    return torch.device(device)
