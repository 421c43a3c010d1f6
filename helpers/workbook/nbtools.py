"""Small notebook-file utilities (committing notebooks clean)."""
from __future__ import annotations

import json
from pathlib import Path

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_text


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs and execution counts; return whether the file changed."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise WorkbookError(f"{path}: not a notebook file ({getattr(e, 'strerror', None) or e}); "
                            "expected a .ipynb (JSON) notebook") from None
    cells = nb.get("cells") if isinstance(nb, dict) else None
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise WorkbookError(f"{path}: not a notebook (expected a JSON object with a list of cells)")
    changed = False
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            cell["outputs"], cell["execution_count"] = [], None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.get("metadata", {}):
                del cell["metadata"][key]
                changed = True
    if changed:
        atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed
