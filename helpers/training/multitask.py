"""The multi-task task (notebook 06): summed per-task losses and per-task scores of a multi-head output."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from helpers.core.errors import WorkbookError
from helpers.core.taskspec import task_slices, TaskSpec


@dataclass
class MultiTask:
    """Task protocol of `helpers.training.tasks` for a multi-task head.

    Model output: concatenated head outputs [N, Σ out_dim] (in `specs` order). Target: [N, T]
    float, one column per task (class index, 0/1, or value; NaN = label missing, skipped).
    Loss: Σ_t weight_t · loss_t (BCE, cross-entropy, MSE on the standardised value).
    Metrics: per task F1 (binary), macro-F1 (multiclass) or R² (regression), the chance level of
    that score on the split scored (what a predictor that ignores the image can expect) and the
    chance-normalised score (score - chance) / (1 - chance); ``combined`` (the primary metric) is
    the unweighted mean of the normalised scores, so 0 = chance and 1 = perfect on every task.
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
        """Per task: its score (``<task>_f1`` / ``_macro_f1`` / ``_r2``), ``_accuracy`` or ``_mae``,
        ``<task>_chance`` and ``<task>_norm``; ``combined`` = the mean of the ``_norm`` values."""
        out = self._check(output, target)
        return {"primary": self.primary, **self.evaluate_predictions(self.predict(out), target)}

    def evaluate_predictions(self, pred, target) -> dict[str, float]:
        """`metrics` from predictions as `predict` returns them ([N, Σ out_dim], original scale)."""
        pred = torch.as_tensor(pred).float()
        target = torch.as_tensor(target).float()
        parts = self._scores(pred, target, torch.ones(1, target.shape[0], dtype=torch.float64))
        res = {k: float(v[0]) for k, v in parts.items()}
        res["combined"] = float(np.mean([res[f"{t.name}_norm"] for t in self.specs]))
        return res

    def bootstrap_scores(self, pred, target, n_boot: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
        """Each task's normalised score (``<task>_norm``) and ``combined`` on `n_boot` resamples of
        the rows (drawn with replacement, the same rows for every task), chance recomputed on each
        resample: arrays [n_boot]. Vectorised over resamples."""
        pred = torch.as_tensor(pred).float()
        target = torch.as_tensor(target).float()
        n = target.shape[0]
        counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=n_boot)   # [B, N]
        parts = self._scores(pred, target, torch.from_numpy(counts).double())
        norms = {f"{t.name}_norm": parts[f"{t.name}_norm"].numpy() for t in self.specs}
        return {**norms, "combined": np.mean(list(norms.values()), axis=0)}

    def _scores(self, pred: torch.Tensor, target: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every task's score, chance and normalised score under row weights w [B, N] -> [B] each."""
        res: dict[str, torch.Tensor] = {}
        for j, (t, sl) in enumerate(zip(self.specs, self._slices)):
            y = target[:, j]
            keep = ~torch.isnan(y)
            p, y, wk = pred[keep, sl].double(), y[keep].double(), w[:, keep]
            if t.kind == "regression":
                part = _regression_scores(p[:, 0], y, wk)
            else:
                k = t.num_classes if t.kind == "multiclass" else 2
                decided = p.argmax(1) if t.kind == "multiclass" else (p[:, 0] >= 0.5).long()
                part = _class_scores(decided, y.long(), wk, k, t.kind == "binary")
            score = part.pop("score")
            chance = part.pop("chance")
            res[task_score_names([t])[0]] = score
            res.update({f"{t.name}_{m}": v for m, v in part.items()})
            res[f"{t.name}_chance"] = chance
            res[f"{t.name}_norm"] = chance_normalise(score, chance)
        return res


def chance_normalise(score: torch.Tensor, chance: torch.Tensor) -> torch.Tensor:
    """(score - chance) / (1 - chance): 0 at chance, 1 at a perfect score (R² has chance 0 and
    stays R²); 0 where chance is already perfect (one class only), as nothing can be learnt there."""
    room = 1.0 - chance
    return torch.where(room > 0, (score - chance) / room.clamp_min(1e-12), torch.zeros_like(score))


def _class_scores(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor, k: int, binary: bool) -> dict:
    """F1 (binary, positive = 1) or macro-F1 over the classes present, accuracy, and chance, under
    row weights w [B, N].

    Chance is the best score a predictor that ignores the image can expect: for binary F1, always
    answering "positive" (2p/(1+p)); for macro-F1 over K present classes, the better of the best
    constant answer (2p_max/(1+p_max)/K, the majority class) and shuffled labels (exactly 1/K in
    expectation), which always wins for macro-F1.
    """
    t1 = torch.nn.functional.one_hot(y, k).double()                    # [N, K] truth
    p1 = torch.nn.functional.one_hot(pred.clamp(0, k - 1), k).double()  # [N, K] prediction
    cm = torch.einsum("bn,nk,nj->bkj", w, t1, p1)                      # [B, K, K], rows = truth
    tp, support, predicted = cm.diagonal(dim1=1, dim2=2), cm.sum(2), cm.sum(1)
    f1 = torch.where(support + predicted > 0, 2 * tp / (support + predicted).clamp_min(1e-12), torch.zeros_like(tp))
    total = support.sum(1).clamp_min(1e-12)
    prior = support / total[:, None]                                   # [B, K]
    acc = tp.sum(1) / total
    if binary:
        p = prior[:, 1]
        return {"score": f1[:, 1], "accuracy": acc, "chance": 2 * p / (1 + p)}
    present = (support > 0).double()
    n_present = present.sum(1).clamp_min(1.0)
    constant = (2 * prior / (1 + prior)).max(1).values / n_present
    return {"score": (f1 * present).sum(1) / n_present, "accuracy": acc,
            "chance": torch.maximum(constant, 1.0 / n_present)}


def _regression_scores(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> dict:
    """R² (unclipped: a model worse than the mean goes below 0), MAE, and chance 0 (the best
    constant is the split's own mean, R² = 0), under row weights w [B, N]."""
    total = w.sum(1).clamp_min(1e-12)
    mean = (w @ y) / total
    ss_tot = w @ (y * y) - total * mean * mean
    ss_res = w @ ((pred - y) ** 2)
    r2 = torch.where(ss_tot > 1e-12, 1 - ss_res / ss_tot.clamp_min(1e-12), torch.zeros_like(ss_res))
    return {"score": r2, "mae": (w @ (pred - y).abs()) / total, "chance": torch.zeros_like(r2)}


def task_score_names(specs: Sequence[TaskSpec]) -> list[str]:
    """The metric key that scores each task (what `combined` averages)."""
    return [f"{t.name}_{ {'binary': 'f1', 'multiclass': 'macro_f1', 'regression': 'r2'}[t.kind] }"
            for t in specs]


def metric_key(name: str) -> str:
    """A model name as a flat metrics.json key part: dots and '+' would break `a.b` keys."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name.replace("+", "__"))
