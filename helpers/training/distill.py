"""Knowledge distillation for a binary pair model: M1's loss (docs/method.md) as a task of the one training loop.

Hinton et al., *Distilling the Knowledge in a Neural Network* (2015): the student matches the teacher's
probabilities softened by a temperature T, and the hard labels, with

    loss_i = soft_weight · T² · KL(σ(z_t / T) ‖ σ(z_s / T)) + hard_weight · hard(z_s, y)

where z_t is the teacher's logit (from its probability), z_s the student's and KL the binary Kullback-Leibler
divergence. T² keeps the soft term's gradients on the scale of the hard term's as T changes. M1: T = 3,
soft_weight 0.7, hard_weight 0.3, the hard term a cross-entropy.

The target of a row is ``[y, teacher P(y=1)]`` (`make_distill_targets`); a row whose teacher probability is
NaN has no out-of-sample teacher target and is trained on the hard term alone, weighted
``soft_weight + hard_weight`` so that every row carries the same total weight. ``soft_weight = 0`` is the
same student trained without the teacher. A one-column target (labels only) is accepted for validation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from helpers.core.errors import WorkbookError
from helpers.training.tasks import _flat_logits, binary_counts, binary_focal_loss


def make_distill_targets(y: np.ndarray, teacher_prob: np.ndarray | None = None) -> np.ndarray:
    """[N, 2] float32 targets: the 0/1 label and the teacher's P(y=1) (NaN where there is none)."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    t = np.full(y.shape, np.nan, np.float32) if teacher_prob is None else np.asarray(teacher_prob, np.float32).reshape(-1)
    if t.shape != y.shape:
        raise WorkbookError(f"make_distill_targets: {t.shape[0]} teacher probabilities for {y.shape[0]} labels")
    known = np.isfinite(t)
    if known.any() and (t[known].min() < 0 or t[known].max() > 1):
        raise WorkbookError("make_distill_targets: teacher probabilities must lie in [0, 1] (NaN = no teacher target)")
    if not np.isin(y, (0.0, 1.0)).all():
        raise WorkbookError("make_distill_targets: labels must be 0 or 1")
    return np.stack([y, t], axis=1)


def _split_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    if target.dim() == 2 and target.shape[1] == 2:
        return target[:, 0], target[:, 1]
    return target.reshape(-1), None


def binary_kl(teacher_logit: torch.Tensor, student_logit: torch.Tensor) -> torch.Tensor:
    """Per-row KL(Bernoulli(σ(teacher)) ‖ Bernoulli(σ(student))), computed from logits (stable)."""
    p = torch.sigmoid(teacher_logit)
    log_p, log_q = F.logsigmoid(teacher_logit), F.logsigmoid(student_logit)
    log_1p, log_1q = F.logsigmoid(-teacher_logit), F.logsigmoid(-student_logit)
    return p * (log_p - log_q) + (1 - p) * (log_1p - log_1q)


@dataclass
class DistillTask:
    """Binary classification from one logit per row, trained on M1's distillation loss (module docstring).

    temperature: T > 0. soft_weight, hard_weight: >= 0, not both 0. hard_loss: "bce" (M1's cross-entropy) or
    "focal" (``focal_alpha``, ``focal_gamma``, as `BinaryTask`). Metrics are `BinaryTask`'s on the labels.
    """
    temperature: float = 3.0
    soft_weight: float = 0.7
    hard_weight: float = 0.3
    hard_loss: str = "bce"
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0
    threshold: float = 0.5
    primary: str = "accuracy"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise WorkbookError(f"DistillTask: temperature={self.temperature}; expected > 0")
        if self.soft_weight < 0 or self.hard_weight < 0 or self.soft_weight + self.hard_weight <= 0:
            raise WorkbookError(f"DistillTask: soft_weight={self.soft_weight}, hard_weight={self.hard_weight}; "
                                "expected both >= 0 and not both 0")
        if self.hard_loss not in ("bce", "focal"):
            raise WorkbookError(f"DistillTask: hard_loss={self.hard_loss!r}; expected 'bce' or 'focal'")

    def _hard(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hard_loss == "focal":
            return binary_focal_loss(logits, y, self.focal_alpha, self.focal_gamma, reduction="none")
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none")

    def loss_terms(self, output, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row ``hard``, ``soft`` (T²·KL; 0 without a teacher target) and ``has_teacher`` (0/1)."""
        logits = _flat_logits(output)
        y, t = _split_target(target.to(logits.dtype))
        hard = self._hard(logits, y)
        if t is None:
            zero = torch.zeros_like(hard)
            return {"hard": hard, "soft": zero, "has_teacher": zero}
        has = torch.isfinite(t)
        p = torch.where(has, t, torch.full_like(t, 0.5)).clamp(1e-6, 1 - 1e-6)
        teacher_logit = torch.log(p) - torch.log1p(-p)
        T = float(self.temperature)
        soft = torch.where(has, T * T * binary_kl(teacher_logit / T, logits / T), torch.zeros_like(hard))
        return {"hard": hard, "soft": soft, "has_teacher": has.to(hard.dtype)}

    def loss(self, output, target: torch.Tensor) -> torch.Tensor:
        terms = self.loss_terms(output, target)
        has = terms["has_teacher"]
        per = has * (self.soft_weight * terms["soft"] + self.hard_weight * terms["hard"]) \
            + (1 - has) * (self.soft_weight + self.hard_weight) * terms["hard"]
        return per.mean() if per.numel() else per.sum()

    def predict(self, output) -> torch.Tensor:
        """P(y = 1) per row, shape [N]."""
        return torch.sigmoid(_flat_logits(output))

    def metrics(self, output, target: torch.Tensor) -> dict:
        y, _ = _split_target(target)
        pred = (self.predict(output) >= self.threshold).long()
        return {"primary": self.primary, **binary_counts(pred, y)}
