"""The multi-task task (notebook 06): summed per-task losses and per-task scores of a multi-head output."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from helpers.core.errors import WorkbookError
from helpers.core.taskspec import task_slices, TaskSpec
from helpers.training.tasks import binary_counts, MulticlassTask


@dataclass
class MultiTask:
    """Task protocol of `helpers.training.tasks` for a multi-task head.

    Model output: concatenated head outputs [N, Σ out_dim] (in `specs` order). Target: [N, T]
    float, one column per task (class index, 0/1, or value; NaN = label missing, skipped).
    Loss: Σ_t weight_t · loss_t (BCE, cross-entropy, MSE on the standardised value).
    Metrics: per task F1 (binary), macro-F1 (multiclass), R² (regression) and their unweighted mean
    ``combined`` (the primary metric; R² is clipped at 0 so one task cannot drag it below 0).
    """
    specs: list[TaskSpec]
    reg_mean: dict[str, float] = field(default_factory=dict)
    reg_std: dict[str, float] = field(default_factory=dict)
    primary: str = "combined"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        for t in self.specs:
            if t.kind == "multiclass" and t.num_classes < 2:
                raise WorkbookError(f"task {t.name!r}: multiclass needs num_classes >= 2, got {t.num_classes}")
        self._slices = task_slices(self.specs)

    @property
    def out_dim(self) -> int:
        return sum(t.out_dim for t in self.specs)

    def _check(self, output, target=None) -> torch.Tensor:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if output.dim() != 2 or output.shape[1] != self.out_dim:
            raise WorkbookError(f"MultiTask: model output has shape {tuple(output.shape)}; expected "
                                f"[N, {self.out_dim}] for tasks {[t.name for t in self.specs]}")
        if target is not None and (target.dim() != 2 or target.shape[1] != len(self.specs)):
            raise WorkbookError(f"MultiTask: target has shape {tuple(target.shape)}; expected "
                                f"[N, {len(self.specs)}] (one column per task)")
        return output.float()

    def task_losses(self, output, target) -> dict[str, torch.Tensor]:
        """Mean loss of each task over the rows where its label is present.

        Missing labels are masked by weight rather than by boolean indexing, so the loss has a
        fixed shape (no host sync; also runs on the meta device for shape checks).
        """
        import torch.nn.functional as F

        out = self._check(output, target)
        losses = {}
        for j, (t, sl) in enumerate(zip(self.specs, self._slices)):
            y = target[:, j].float()
            m = (~torch.isnan(y)).float()                     # [N] 1 where labelled
            y0 = torch.nan_to_num(y, nan=0.0)
            o = out[:, sl]
            if t.kind == "binary":
                per = F.binary_cross_entropy_with_logits(o[:, 0], y0, reduction="none")
            elif t.kind == "multiclass":
                per = F.cross_entropy(o, y0.long(), reduction="none")
            else:
                z = (y0 - self.reg_mean.get(t.name, 0.0)) / self.reg_std.get(t.name, 1.0)
                per = (o[:, 0] - z) ** 2
            losses[t.name] = (per * m).sum() / m.sum().clamp_min(1.0)
        return losses

    def loss(self, output, target) -> torch.Tensor:
        losses = self.task_losses(output, target)
        return sum(t.weight * losses[t.name] for t in self.specs)

    def predict(self, output) -> torch.Tensor:
        """[N, Σ out_dim]: P(positive) for binary, class probabilities, values (original scale)."""
        out = self._check(output)
        cols = []
        for t, sl in zip(self.specs, self._slices):
            o = out[:, sl]
            if t.kind == "binary":
                cols.append(torch.sigmoid(o))
            elif t.kind == "multiclass":
                cols.append(torch.softmax(o, dim=1))
            else:
                cols.append(o * self.reg_std.get(t.name, 1.0) + self.reg_mean.get(t.name, 0.0))
        return torch.cat(cols, dim=1)

    def metrics(self, output, target) -> dict:

        out = self._check(output, target)
        res: dict[str, Any] = {"primary": self.primary}
        scores = []
        for t, sl in zip(self.specs, self._slices):
            y = target[:, self.specs.index(t)].float()
            keep = ~torch.isnan(y)
            o, y = out[keep, sl], y[keep]
            if t.kind == "binary":
                c = binary_counts((o[:, 0] >= 0).long(), y.long())
                res[f"{t.name}_f1"], res[f"{t.name}_accuracy"] = c["f1"], c["accuracy"]
                score = c["f1"]
            elif t.kind == "multiclass":
                c = MulticlassTask(t.num_classes).metrics(o, y.long())
                res[f"{t.name}_macro_f1"], res[f"{t.name}_accuracy"] = c["f1"], c["accuracy"]
                score = c["f1"]
            else:
                pred = o[:, 0] * self.reg_std.get(t.name, 1.0) + self.reg_mean.get(t.name, 0.0)
                ss_res = float(((pred - y) ** 2).sum())
                ss_tot = float(((y - y.mean()) ** 2).sum()) if y.numel() else 0.0
                r2 = 1 - ss_res / ss_tot if ss_tot > 0 else 0.0
                res[f"{t.name}_r2"] = r2
                res[f"{t.name}_mae"] = float((pred - y).abs().mean()) if y.numel() else float("nan")
                score = max(r2, 0.0)
            scores.append(score)
        res["combined"] = float(np.mean(scores))
        return res


def task_score_names(specs: Sequence[TaskSpec]) -> list[str]:
    """The metric key that scores each task (what `combined` averages)."""
    return [f"{t.name}_{ {'binary': 'f1', 'multiclass': 'macro_f1', 'regression': 'r2'}[t.kind] }"
            for t in specs]


def metric_key(name: str) -> str:
    """A model name as a flat metrics.json key part: dots and '+' would break `a.b` keys."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name.replace("+", "__"))
