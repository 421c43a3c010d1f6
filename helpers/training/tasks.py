"""Tasks: what a model's output means, how it is scored and how it is turned into predictions.

The training loop (`helpers.train`) knows nothing about labels. A *task* supplies three methods:

- ``loss(output, target) -> scalar tensor`` (differentiable, mean over the batch)
- ``predict(output) -> tensor`` (probabilities or values, what `predict` returns)
- ``metrics(output, target) -> dict`` with float values and a ``"primary"`` key whose value names
  the main metric (e.g. ``{"primary": "accuracy", "accuracy": 0.91, ...}``)

Optional attributes the loop reads when present: ``greater_is_better`` (for the primary metric;
guessed from its name otherwise) and ``label_smoothing`` (the loop's ``TrainConfig.label_smoothing``
replaces it for the *training* loss only, so validation losses stay comparable across runs).

Built-ins: `BinaryTask` (BCE or focal) and `MulticlassTask` (CE or focal, class weights, label
smoothing, ``ignore_index``). Focal loss follows Lin et al. exactly (see `binary_focal_loss`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from helpers.core.errors import WorkbookError


def binary_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                      gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """Focal loss of Lin et al. (arXiv:1708.02002) on logits.

    ``p_t = p·y + (1−p)(1−y)``, ``α_t = α·y + (1−α)(1−y)``, ``FL = −α_t (1−p_t)^γ log p_t``.
    ``alpha < 0`` disables the α weighting (α_t = 1), as in torchvision. A soft target (label
    smoothing) is allowed: ``−log p_t`` is then the binary cross-entropy against the soft target.
    """
    target = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")  # = −log p_t
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * (1 - p_t).clamp_min(0) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return _reduce(loss, reduction)


def multiclass_focal_loss(logits: torch.Tensor, target: torch.Tensor,
                          alpha: torch.Tensor | None = None, gamma: float = 2.0,
                          label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Multi-class focal loss on softmax probabilities: ``−Σ_c q_c α_c (1−p_c)^γ log p_c``.

    logits [N, K], target [N] class indices (already filtered of ignored rows); ``q`` is the
    one-hot (or label-smoothed) target, ``alpha`` an optional per-class weight [K]. With a one-hot
    target this is exactly ``−α_t (1−p_t)^γ log p_t`` for the true class.
    """
    k = logits.shape[-1]
    logp = F.log_softmax(logits.float(), dim=-1)            # [N, K]
    q = F.one_hot(target, k).to(logp.dtype)                  # [N, K]
    if label_smoothing > 0:
        q = q * (1 - label_smoothing) + label_smoothing / k
    per_class = -q * (1 - logp.exp()).clamp_min(0) ** gamma * logp
    if alpha is not None:
        per_class = per_class * alpha.to(per_class)
    return _reduce(per_class.sum(-1), reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()
    if reduction == "sum":
        return loss.sum()
    return loss


def make_class_weights(y: torch.Tensor | Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency class weights ``N / (K · n_c)`` (sklearn's "balanced"); unseen classes get 0."""
    y = torch.as_tensor(y).long().flatten()
    y = y[y >= 0]
    counts = torch.bincount(y, minlength=num_classes).double()
    w = torch.where(counts > 0, y.numel() / (num_classes * counts.clamp_min(1)), torch.zeros_like(counts))
    return w.float()


def with_label_smoothing(task, value: float):
    """A copy of ``task`` whose training loss uses ``value`` label smoothing (tasks without the
    attribute are returned unchanged)."""
    if value <= 0 or not hasattr(task, "label_smoothing"):
        return task
    if dataclasses.is_dataclass(task):
        return dataclasses.replace(task, label_smoothing=float(value))
    import copy
    t = copy.copy(task)
    t.label_smoothing = float(value)
    return t


def binary_counts(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Accuracy, precision, recall and F1 of 0/1 predictions against 0/1 targets (positive = 1)."""
    pred = pred.long().flatten()
    target = target.long().flatten()
    tp = int(((pred == 1) & (target == 1)).sum())
    fp = int(((pred == 1) & (target == 0)).sum())
    fn = int(((pred == 0) & (target == 1)).sum())
    n = target.numel()
    acc = float((pred == target).sum()) / n if n else float("nan")
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": acc, "f1": f1, "precision": precision, "recall": recall}


def _flat_logits(output: torch.Tensor) -> torch.Tensor:
    # Binary heads return [N] or [N, 1]; both mean one logit per row.
    if isinstance(output, (tuple, list)):
        output = output[0]
    if output.dim() == 2 and output.shape[1] == 1:
        output = output[:, 0]
    if output.dim() != 1:
        raise WorkbookError(f"BinaryTask: model output has shape {tuple(output.shape)}; expected "
                            "[N] or [N, 1] logits")
    return output.float()


@dataclass
class BinaryTask:
    """Binary classification from one logit per row (target 0/1).

    loss: "bce" or "focal" (``alpha``, ``gamma``; alpha < 0 = no α weighting).
    pos_weight: optional weight of positive rows (class weights for BCE and focal).
    threshold: probability threshold used by ``metrics``.
    """
    loss_name: str = "bce"
    alpha: float = -1.0
    gamma: float = 2.0
    pos_weight: float | None = None
    label_smoothing: float = 0.0
    threshold: float = 0.5
    primary: str = "accuracy"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if self.loss_name not in ("bce", "focal"):
            raise WorkbookError(f"BinaryTask: loss_name={self.loss_name!r}; expected 'bce' or 'focal'")
        if not 0 <= self.label_smoothing < 1:
            raise WorkbookError(f"BinaryTask: label_smoothing={self.label_smoothing}; expected 0 <= value < 1")
        if not 0 < self.threshold < 1:
            raise WorkbookError(f"BinaryTask: threshold={self.threshold}; expected 0 < value < 1")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = _flat_logits(output)
        y = target.to(logits.dtype).flatten()
        if self.label_smoothing > 0:
            y = y * (1 - self.label_smoothing) + self.label_smoothing / 2
        if self.loss_name == "focal":
            per = binary_focal_loss(logits, y, self.alpha, self.gamma, reduction="none")
        else:
            per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
        if self.pos_weight is not None:
            w = torch.where(target.flatten() > 0.5, float(self.pos_weight), 1.0).to(per)
            return (per * w).sum() / w.sum().clamp_min(1e-12)
        return per.mean()

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """P(y = 1) per row, shape [N]."""
        return torch.sigmoid(_flat_logits(output))

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict:
        pred = (self.predict(output) >= self.threshold).long()
        return {"primary": self.primary, **binary_counts(pred, target)}


@dataclass
class MulticlassTask:
    """K-class classification from [N, K] logits (target: class index, ``ignore_index`` skipped).

    loss: "ce" or "focal" (``gamma``; per-class α = ``class_weights`` when given).
    class_weights: optional per-class weights [K] (e.g. `make_class_weights`).
    Metrics: accuracy and macro precision / recall / F1 (``f1`` is macro-F1, the primary metric).
    """
    num_classes: int
    loss_name: str = "ce"
    gamma: float = 2.0
    class_weights: Sequence[float] | torch.Tensor | None = None
    label_smoothing: float = 0.0
    ignore_index: int = -1
    primary: str = "f1"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if self.loss_name not in ("ce", "focal"):
            raise WorkbookError(f"MulticlassTask: loss_name={self.loss_name!r}; expected 'ce' or 'focal'")
        if self.num_classes < 2:
            raise WorkbookError(f"MulticlassTask: num_classes={self.num_classes}; expected >= 2")
        if self.class_weights is not None and len(self.class_weights) != self.num_classes:
            raise WorkbookError(f"MulticlassTask: class_weights has {len(self.class_weights)} values; "
                                f"expected num_classes={self.num_classes}")

    def _logits(self, output) -> torch.Tensor:
        if isinstance(output, (tuple, list)):
            output = output[0]
        if output.dim() != 2 or output.shape[1] != self.num_classes:
            raise WorkbookError(f"MulticlassTask: model output has shape {tuple(output.shape)}; "
                                f"expected [N, {self.num_classes}]")
        return output.float()

    def _weights(self, ref: torch.Tensor) -> torch.Tensor | None:
        if self.class_weights is None:
            return None
        return torch.as_tensor(self.class_weights, dtype=torch.float32).to(ref.device)

    def loss(self, output, target: torch.Tensor) -> torch.Tensor:
        logits = self._logits(output)
        target = target.long().flatten()
        keep = target != self.ignore_index
        logits, target = logits[keep], target[keep]
        w = self._weights(logits)
        if self.loss_name == "focal":
            return multiclass_focal_loss(logits, target, w, self.gamma, self.label_smoothing)
        if target.numel() == 0:
            return logits.sum() * 0
        return F.cross_entropy(logits, target, weight=w, label_smoothing=self.label_smoothing)

    def predict(self, output) -> torch.Tensor:
        """Class probabilities [N, K]."""
        return torch.softmax(self._logits(output), dim=-1)

    def metrics(self, output, target: torch.Tensor) -> dict:
        target = target.long().flatten()
        keep = target != self.ignore_index
        pred = self._logits(output).argmax(-1)[keep]
        target = target[keep]
        k = self.num_classes
        cm = torch.bincount(target * k + pred, minlength=k * k).reshape(k, k).double()  # rows = truth
        tp = cm.diag()
        prec = torch.where(cm.sum(0) > 0, tp / cm.sum(0).clamp_min(1), torch.zeros_like(tp))
        rec = torch.where(cm.sum(1) > 0, tp / cm.sum(1).clamp_min(1), torch.zeros_like(tp))
        f1 = torch.where(prec + rec > 0, 2 * prec * rec / (prec + rec).clamp_min(1e-12), torch.zeros_like(tp))
        present = cm.sum(1) > 0   # macro averages over classes present in the target
        n = max(int(target.numel()), 1)
        return {
            "primary": self.primary,
            "accuracy": float(tp.sum()) / n,
            "f1": float(f1[present].mean()) if present.any() else 0.0,
            "precision": float(prec[present].mean()) if present.any() else 0.0,
            "recall": float(rec[present].mean()) if present.any() else 0.0,
        }


@dataclass
class RegressionTask:
    """Feature regression scored by cosine similarity (the training loop's task protocol).

    loss = mse_weight · MSE + cosine_weight · (1 − cos); metrics: cos (primary), mse.
    """
    mse_weight: float = 0.2
    cosine_weight: float = 0.8
    primary: str = "cos"
    greater_is_better: bool = True

    def __post_init__(self) -> None:
        if self.mse_weight < 0 or self.cosine_weight < 0 or self.mse_weight + self.cosine_weight <= 0:
            raise WorkbookError(f"RegressionTask: mse_weight={self.mse_weight}, cosine_weight="
                                f"{self.cosine_weight}; expected non-negative weights, not both 0")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out, tgt = output.float(), target.float()
        cos = F.cosine_similarity(out, tgt, dim=-1, eps=1e-8)                    # [B]
        return self.mse_weight * F.mse_loss(out, tgt) + self.cosine_weight * (1 - cos).mean()

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        return output.float()

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict:
        out, tgt = output.float(), target.float()
        return {"primary": "cos", "cos": float(F.cosine_similarity(out, tgt, dim=-1, eps=1e-8).mean()),
                "mse": float(F.mse_loss(out, tgt))}
