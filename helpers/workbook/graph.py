"""The notebook graph: which notebooks' outputs each notebook reads, as its first cell says.

Every notebook's opening markdown cell has a line ``**Reads:** ...`` naming the notebooks whose outputs
it reads (by stem), and optionally ``**Reads if present:** ...`` for outputs it uses when they are in
the same run but does not need. The runner orders notebooks by it, and ``--only 05`` means "05 with
whatever it needs". A notebook records what it actually opened (``reads.json``); the runner refuses a
read the notebook does not declare, so the declaration stays true.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from helpers.core import paths
from helpers.core.errors import ParameterError, WorkbookError

_STEM = re.compile(r"\b(\d\d_[a-z0-9_]*[a-z0-9])\b")
_READS = re.compile(r"^\*\*Reads:\*\*(.*)$", re.M)
_READS_OPTIONAL = re.compile(r"^\*\*Reads if present:\*\*(.*)$", re.M)


@dataclass(frozen=True)
class Reads:
    """What one notebook reads: ``required`` must run first; ``optional`` only orders the run."""
    required: tuple[str, ...]
    optional: tuple[str, ...]

    @property
    def all(self) -> tuple[str, ...]:
        return self.required + self.optional


def declared_reads(stem: str, known: list[str]) -> Reads:
    """The notebook's ``**Reads:**`` lines, as stems; a stem that is not a notebook is an error."""
    path = paths.notebook_path(stem)
    cells = json.loads(Path(path).read_text(encoding="utf-8")).get("cells", [])
    first = "".join(cells[0].get("source", "")) if cells and cells[0].get("cell_type") == "markdown" else ""
    required, optional = _stems(_READS, first), _stems(_READS_OPTIONAL, first)
    if not _READS.search(first):
        raise WorkbookError(f"{path}: the first markdown cell has no '**Reads:**' line saying which notebooks' "
                            "outputs it reads (write 'no other notebook's outputs' when it reads none)")
    for s in required + optional:
        if s not in known:
            raise WorkbookError(f"{path}: '**Reads:**' names {s!r}, which is not a notebook ({', '.join(known)})")
    return Reads(tuple(required), tuple(optional))


def _stems(pattern: re.Pattern, text: str) -> list[str]:
    return [s for m in pattern.finditer(text) for s in _STEM.findall(m.group(1))]


def make_graph(known: list[str]) -> dict[str, Reads]:
    return {stem: declared_reads(stem, known) for stem in known}


def with_needs(selected: list[str], graph: dict[str, Reads]) -> list[str]:
    """The selected notebooks and every notebook they need (transitively), in run order."""
    chosen: set[str] = set()
    todo = list(selected)
    while todo:
        s = todo.pop()
        if s not in chosen:
            chosen.add(s)
            todo.extend(graph[s].required)
    return run_order(sorted(chosen), graph)


def run_order(stems: list[str], graph: dict[str, Reads]) -> list[str]:
    """A topological order of ``stems`` by required and optional reads, ties by notebook number."""
    order: list[str] = []
    pending = sorted(stems)
    while pending:
        ready = [s for s in pending if all(r in order or r not in pending for r in graph[s].all)]
        if not ready:
            raise ParameterError(f"the notebooks' '**Reads:**' lines form a circle among {', '.join(pending)}")
        order.append(ready[0])
        pending.remove(ready[0])
    return order


def check_reads(stem: str, out_dir: Path, reads: Reads) -> str | None:
    """Why the notebook broke its declaration (it opened an undeclared notebook's outputs), or None."""
    record = out_dir / "reads.json"
    if not record.is_file():
        return None
    try:
        opened = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{record}: unreadable record of the notebooks it read"
    extra = sorted(set(opened) - set(reads.all) - {stem})
    if extra:
        return (f"{stem} read the outputs of {', '.join(extra)} but its '**Reads:**' line does not declare "
                "them: add them there so the runner orders and caches it correctly")
    return None
