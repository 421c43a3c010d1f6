"""What a multi-task head predicts: one `TaskSpec` per task (binary, multiclass or regression).

Shared by the task tables (columns), the models (head sizes) and the multi-task loss."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from helpers.core.errors import WorkbookError


TASK_KINDS = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task of the multi-task head.

    kind: binary (one logit, F1), multiclass (num_classes logits, macro-F1) or regression (one
    value, R²); weight: the task's weight in the summed loss.
    """
    name: str
    kind: str
    num_classes: int = 0
    weight: float = 1.0

    @property
    def out_dim(self) -> int:
        return self.num_classes if self.kind == "multiclass" else 1


def make_task_specs(tasks: Sequence[str], weights: Sequence[float] | None = None) -> list[TaskSpec]:
    """Parse ``"name:kind[:num_classes]"`` strings, e.g. ``["digit:multiclass:10", "parity:binary"]``.

    A multiclass task without a class count takes it from the table (`load_task_table`).
    `weights` (one per task, default all 1) weight the summed loss.
    """
    if not tasks:
        raise WorkbookError("tasks: empty list; expected at least one 'name:kind[:classes]' entry")
    if weights is not None and len(weights) not in (0, len(tasks)):
        raise WorkbookError(f"task_weights has {len(weights)} values for {len(tasks)} tasks {list(tasks)}; "
                            "expected one weight per task (or an empty list for all 1.0)")
    out: list[TaskSpec] = []
    for i, text in enumerate(tasks):
        parts = str(text).split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise WorkbookError(f"tasks[{i}] = {text!r}: expected 'name:kind' or 'name:multiclass:K' "
                                f"with kind one of {'|'.join(TASK_KINDS)}")
        name, kind = parts[0], parts[1]
        if kind not in TASK_KINDS:
            raise WorkbookError(f"tasks[{i}] = {text!r}: kind {kind!r} is not one of {'|'.join(TASK_KINDS)}")
        k = 0
        if len(parts) == 3:
            if kind != "multiclass" or not parts[2].isdigit() or int(parts[2]) < 2:
                raise WorkbookError(f"tasks[{i}] = {text!r}: only a multiclass task takes a class count, "
                                    "an integer >= 2")
            k = int(parts[2])
        w = float(weights[i]) if weights else 1.0
        if not w >= 0:
            raise WorkbookError(f"task_weights[{i}] = {w}: expected a weight >= 0")
        out.append(TaskSpec(name, kind, 2 if kind == "binary" else k, w))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise WorkbookError(f"tasks: duplicate task names in {names}")
    return out


def task_slices(specs: Sequence[TaskSpec]) -> list[slice]:
    """Column slice of each task's head in the concatenated model output [N, Σ out_dim]."""
    out, start = [], 0
    for t in specs:
        out.append(slice(start, start + t.out_dim))
        start += t.out_dim
    return out
