"""Notebook 06: timm backbones on a multi-task head (source note 002).

Stages, top to bottom:
- tasks: `TaskSpec`, `make_task_specs` ("digit:multiclass:10", "parity:binary", "age:regression")
  and `MultiTask`, the task object the shared training loop (`helpers.train`) fine-tunes with;
- models: `MultiTaskBackbone` (any timm backbone, pooled features, one head per task),
  `EnsembleMultiTask` (note 002 configuration 3), `make_multitask_model` ("a+b" = ensemble);
- data: `load_task_table` (CSV or Excel: image path, subject id, one column per task),
  `make_digit_task_table` (the built-in table from the real sklearn digit images),
  `make_subject_split`, `load_table_tensors`;
- benchmark (timm's `benchmark.py` method plus peak memory): `measure_backbone`,
  `run_with_batch_decay`, `evaluate_backbone_speed` (a fresh process per backbone);
- fine-tune and report: `train_backbone`, `make_comparison_table`, `make_claims_table`,
  `plot_pareto`, `plot_memory`, and `bench_main` for ``python -m helpers bench backbones``.

Pretrained weights come only from local files (timm's ``pretrained_cfg_overlay=dict(file=...)``);
without one a backbone is randomly initialised and `MultiTaskBackbone.pretrained` is False.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import DataError, WorkbookError

TASK_KINDS = ("binary", "multiclass", "regression")
DEFAULT_TASKS = ["digit:multiclass:10", "parity:binary", "loops:multiclass:3"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Closed loops of each digit as usually written (0, 6, 9, 4 one; 8 two; the rest none).
DIGIT_LOOPS = np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1], dtype=np.int64)

# Reference figures (methods.md): timm results CSVs (params M with the 1000-class head, GMACs at
# 224 px, ImageNet-1k top-1) and a 2-core CPU's fwd+bwd throughput (batch 8, fp32, img/s).
TIMM_REFERENCE = {
    "convnext_tiny": (28.59, 4.47, 82.07), "convnext_small": (50.22, 8.71, 83.14),
    "convnext_base": (88.59, 15.38, 83.84), "convnext_large": (197.77, 34.40, 84.30),
    "swin_tiny_patch4_window7_224": (28.29, 4.51, 81.39), "swin_base_patch4_window7_224": (87.77, 15.47, 83.60),
    "vit_base_patch16_224": (86.57, 17.58, None), "vit_large_patch16_224": (304.33, 61.60, None),
}
CPU_REFERENCE = {("convnext_tiny", 64): 27.0, ("convnext_tiny", 224): 4.0,
                 ("swin_tiny_patch4_window7_224", 224): 4.5, ("vit_tiny_patch16_224", 224): 17.0,
                 ("convnext_base", 224): 1.5, ("convnext_large", 224): 0.7, ("resnet18", 64): 81.0}
# Note 002, a 12 GB card: model -> (batch, claimed GB).
NOTE002_MEMORY = {"convnext_base": (16, 8.0), "convnext_large": (8, 10.0),
                  "swin_base_patch4_window7_224": (16, 9.0), "swin_large_patch4_window7_224": (4, 11.0),
                  "vit_base_patch16_224": (16, 9.0), "vit_large_patch16_224": (2, 11.0)}


# =========================================================================================== tasks
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


@dataclass
class MultiTask:
    """Task protocol of `helpers.tasks` for a multi-task head.

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
        from .tasks import MulticlassTask, binary_counts

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


# ========================================================================================== models
def _create_timm_backbone(name: str, pretrained_file: str | None, img_size: int | None):
    """timm backbone with pooled features (num_classes=0); weights only from a local file."""
    import timm

    if pretrained_file:
        if not Path(pretrained_file).is_file():
            raise DataError(f"pretrained_files[{name!r}] = {pretrained_file!r}: file not found "
                            "(weights are never downloaded; give a local .pth/.safetensors file)")
        kw: dict[str, Any] = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained_file)))
    else:
        kw = dict(pretrained=False)
    try:
        if not timm.is_model(name):
            close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
            raise WorkbookError(f"backbone {name!r} is not a timm model name (similar: {close})")
    except AttributeError:  # pragma: no cover - older timm
        pass
    try:
        # Fixed-size models (ViT, Swin) are built for the benchmark's resolution; timm resamples
        # position embeddings of a pretrained file to it.
        return timm.create_model(name, num_classes=0, img_size=img_size, **kw) if img_size else \
            timm.create_model(name, num_classes=0, **kw)
    except TypeError as e:
        if "img_size" not in str(e):
            raise
        return timm.create_model(name, num_classes=0, **kw)  # size-agnostic CNNs take no img_size


class MultiTaskBackbone(nn.Module):
    """timm backbone -> pooled features [B, F] -> one linear head per task.

    forward(x [B, 3, H, W]) -> concatenated head outputs [B, Σ out_dim] (see `MultiTask`).
    """

    def __init__(self, backbone_name: str, tasks: Sequence[TaskSpec], pretrained_file: str | None = None,
                 freeze_backbone: bool = False, img_size: int | None = None, dropout: float = 0.0,
                 channels_last: bool = False):
        super().__init__()
        self.backbone_name = backbone_name
        self.tasks = list(tasks)
        self.pretrained_file = pretrained_file or None
        self.pretrained = bool(pretrained_file)
        self.channels_last = channels_last
        self.backbone = _create_timm_backbone(backbone_name, pretrained_file, img_size)
        nf = int(self.backbone.num_features)
        self.heads = nn.ModuleDict({t.name: nn.Sequential(nn.Dropout(dropout), nn.Linear(nf, t.out_dim))
                                    for t in self.tasks})
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = self.backbone(x)                                   # [B, F] pooled features
        return torch.cat([self.heads[t.name](f) for t in self.tasks], dim=1)  # [B, Σ out_dim]

    def param_groups(self, lr_backbone: float, lr_head: float, weight_decay: float = 0.0) -> list[dict]:
        """Optimizer groups with separate backbone / head learning rates (note 002: 2e-5 / 1e-4)."""
        bb = [p for p in self.backbone.parameters() if p.requires_grad]
        hd = [p for p in self.heads.parameters() if p.requires_grad]
        groups = [{"params": hd, "lr": lr_head, "weight_decay": weight_decay, "name": "heads"}]
        if bb:
            groups.insert(0, {"params": bb, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"})
        return groups

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()   # a frozen backbone keeps its normalisation statistics too
        return self


class EnsembleMultiTask(nn.Module):
    """Several `MultiTaskBackbone`s trained together; output = mean of their head outputs."""

    def __init__(self, members: Sequence[MultiTaskBackbone]):
        super().__init__()
        if len(members) < 2:
            raise WorkbookError("an ensemble needs at least two backbones, e.g. 'resnet18+convnext_atto'")
        self.members = nn.ModuleList(members)
        self.backbone_name = "+".join(m.backbone_name for m in members)
        self.tasks = members[0].tasks
        self.pretrained = all(m.pretrained for m in members)
        self.freeze_backbone = members[0].freeze_backbone

    def forward(self, x):
        return torch.stack([m(x) for m in self.members], dim=0).mean(0)   # [B, Σ out_dim]

    def param_groups(self, lr_backbone: float, lr_head: float, weight_decay: float = 0.0) -> list[dict]:
        groups: list[dict] = []
        for m in self.members:
            groups.extend(m.param_groups(lr_backbone, lr_head, weight_decay))
        return groups


def make_multitask_model(name: str, tasks: Sequence[TaskSpec], pretrained_files: dict | None = None,
                         freeze_backbone: bool = False, img_size: int | None = None, dropout: float = 0.0,
                         channels_last: bool = False):
    """Build a model by name: one timm backbone, or ``"a+b"`` for an ensemble of backbones.

    pretrained_files: ``{backbone_name: local file}``; a backbone not listed is randomly initialised.
    """
    files = pretrained_files or {}
    parts = [p.strip() for p in name.split("+") if p.strip()]
    if not parts:
        raise WorkbookError(f"backbone name {name!r} is empty")
    members = [MultiTaskBackbone(p, tasks, files.get(p), freeze_backbone, img_size, dropout, channels_last) for p in parts]
    return members[0] if len(members) == 1 else EnsembleMultiTask(members)


def count_params(model) -> dict[str, float]:
    """Parameter counts in millions: total, backbone(s), trainable."""
    total = sum(p.numel() for p in model.parameters())
    heads = sum(p.numel() for n, p in model.named_parameters() if ".heads." in f".{n}" or n.startswith("heads."))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    nf = getattr(model, "num_features", None)   # None for an ensemble
    return {"params_m": total / 1e6, "backbone_params_m": (total - heads) / 1e6, "trainable_m": trainable / 1e6,
            "num_features": int(nf) if nf is not None else None}


def metric_key(name: str) -> str:
    """A model name as a flat metrics.json key part: dots and '+' would break `a.b` keys."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name.replace("+", "__"))


# ============================================================================================ data
@dataclass
class TaskTable:
    """A validated multi-task image table.

    frame: columns ``path`` (absolute image path), ``subject`` (str) and one column per task with the
    encoded target (class index / 0-1 / value as float, NaN = missing).
    classes: the original label of each class index, per categorical task.
    """
    frame: Any
    tasks: list[TaskSpec]
    classes: dict[str, list]
    source: str
    path: Path
    generated: bool = False

    @property
    def n_images(self) -> int:
        return len(self.frame)

    @property
    def n_subjects(self) -> int:
        return int(self.frame["subject"].nunique())


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"task table {path}: file not found (expected a .csv or .xlsx file)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
        if suffix in (".xlsx", ".xlsm", ".xls"):
            return pd.read_excel(path)
    except ImportError as e:
        raise DataError(f"task table {path}: reading {suffix} needs {e.name or 'openpyxl'}, which is not installed") from None
    except Exception as e:  # noqa: BLE001 - any parser failure is a data error naming the file
        raise DataError(f"task table {path}: cannot be read as {suffix}: {e}") from None
    raise DataError(f"task table {path}: unsupported extension {suffix!r}; expected .csv or .xlsx")


def load_task_table(path: str | Path, tasks: Sequence[TaskSpec], image_col: str = "image",
                    subject_col: str = "subject", image_root: str | Path | None = None,
                    source: str | None = None, generated: bool = False) -> TaskTable:
    """Read and validate a CSV/Excel task table.

    Image paths are taken relative to `image_root` (default: the table's folder). Binary columns
    hold two distinct values (0/1, True/False or two labels, mapped in sorted order); multiclass
    columns are integers 0..K-1 or labels (sorted, mapped to 0..K-1); regression columns numbers.
    Empty cells are missing labels. Every image file must exist.
    """
    import pandas as pd

    from . import paths as _paths

    path = Path(path).expanduser()
    if not path.is_absolute() and not path.exists() and (_paths.PROJ_ROOT / path).exists():
        path = _paths.PROJ_ROOT / path   # notebooks run with their own folder as cwd; allow repo-relative paths
    path = path.resolve()
    df = _read_table(path)
    need = [image_col, subject_col] + [t.name for t in tasks]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"task table {path}: missing column(s) {missing}; it has {list(df.columns)} "
                        f"(image column {image_col!r}, subject column {subject_col!r}, one column per task)")
    if len(df) == 0:
        raise DataError(f"task table {path}: no rows")
    if df[image_col].isna().any() or df[subject_col].isna().any():
        bad = df.index[df[image_col].isna() | df[subject_col].isna()].tolist()[:5]
        raise DataError(f"task table {path}: empty {image_col!r} or {subject_col!r} in rows {bad}")
    root = Path(image_root).expanduser().resolve() if image_root else path.parent
    paths_ = [p if p.is_absolute() else root / p for p in map(Path, df[image_col].astype(str))]
    absent = [str(p) for p in paths_ if not p.is_file()]
    if absent:
        raise DataError(f"task table {path}: {len(absent)} image file(s) not found under {root}, "
                        f"e.g. {absent[:3]}")
    out = pd.DataFrame({"path": [str(p) for p in paths_], "subject": df[subject_col].astype(str).to_numpy()})
    classes: dict[str, list] = {}
    resolved: list[TaskSpec] = []
    for t in tasks:
        col = df[t.name]
        present = col.dropna()
        if present.empty:
            raise DataError(f"task table {path}: column {t.name!r} has no labels")
        if t.kind == "regression":
            vals = pd.to_numeric(col, errors="coerce")
            if vals[col.notna()].isna().any():
                raise DataError(f"task table {path}: column {t.name!r} (regression) holds non-numbers, "
                                f"e.g. {col[col.notna() & vals.isna()].iloc[0]!r}")
            out[t.name] = vals.astype(float).to_numpy()
            resolved.append(t)
            continue
        uniq = sorted(present.unique(), key=lambda v: (str(type(v)), v))
        if t.kind == "binary":
            if len(uniq) > 2:
                raise DataError(f"task table {path}: binary column {t.name!r} has {len(uniq)} values "
                                f"{uniq[:6]}; expected two (e.g. 0/1)")
            labels = [0, 1] if set(uniq) <= {0, 1, True, False} else list(uniq)
        else:
            is_int = all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer())
                         for v in uniq)
            if is_int and min(uniq) >= 0:
                k = max(t.num_classes, int(max(uniq)) + 1)
                labels = list(range(k))
            else:
                labels = list(uniq)
            if t.num_classes and len(labels) > t.num_classes:
                raise DataError(f"task table {path}: column {t.name!r} has {len(labels)} classes "
                                f"{labels[:12]}; the task declares {t.num_classes}")
            k = max(t.num_classes, len(labels))
            if k < 2:
                raise DataError(f"task table {path}: multiclass column {t.name!r} has a single class {labels}")
            t = TaskSpec(t.name, t.kind, k, t.weight)
        index = {v: i for i, v in enumerate(labels)}
        if t.kind == "multiclass" and labels == list(range(len(labels))):
            enc = pd.to_numeric(col, errors="coerce")
        else:
            enc = col.map(lambda v: index.get(v, np.nan) if pd.notna(v) else np.nan)
        out[t.name] = enc.astype(float).to_numpy()
        classes[t.name] = labels
        resolved.append(t)
    return TaskTable(out, resolved, classes, source or f"task table {path}", path, generated)


def make_digit_task_table(cache_dir: str | Path | None = None) -> Path:
    """Write the built-in table once: sklearn's real 8x8 digit images as PNG files + table.csv.

    Columns: image, subject (each image is its own subject: sklearn ships no writer ids), digit
    (0-9), parity (1 = odd), loops (closed loops 0/1/2, from the digit), ink (fraction of lit
    pixels, a real continuous target for the regression task). Returns the CSV path.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    from . import paths

    folder = Path(cache_dir) if cache_dir else paths.CACHE / "digit_tasks_v1"
    csv = folder / "table.csv"
    if csv.is_file():
        return csv
    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    y = d.target.astype(np.int64)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digit_tasks.", dir=folder.parent))
    try:
        (tmp / "images").mkdir()
        names = [f"images/{i:05d}.png" for i in range(len(y))]
        for name, im in zip(names, imgs):
            Image.fromarray(im, mode="L").save(tmp / name)
        ink = (d.images > 0).mean(axis=(1, 2))
        lines = ["image,subject,digit,parity,loops,ink"]
        lines += [f"{n},digit-{i:05d},{c},{c % 2},{DIGIT_LOOPS[c]},{k:.6f}"
                  for i, (n, c, k) in enumerate(zip(names, y, ink))]
        (tmp / "table.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        try:
            os.replace(tmp, folder)    # atomic: a half-written folder never appears under the final name
        except OSError:
            if not csv.is_file():      # someone else built it meanwhile: theirs is as good as ours
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return csv


def load_default_or_user_table(table: str, tasks: Sequence[TaskSpec], image_col: str = "image",
                               subject_col: str = "subject", image_root: str = "") -> TaskTable:
    """`table` empty -> the built-in digit table (cached under helpers.paths.CACHE); else the user's file."""
    if not table:
        csv = make_digit_task_table()
        return load_task_table(csv, tasks, "image", "subject", None,
                               source="sklearn digits (UCI 8x8, 1797 real images) as PNG files; "
                                      "tasks derived from the true label; each image is its own subject")
    return load_task_table(table, tasks, image_col, subject_col, image_root or None)


def make_subject_split(table: TaskTable, val_frac: float = 0.15, test_frac: float = 0.15,
                       seed: int = 0) -> np.ndarray:
    """Split by subject (no subject in two splits): array of "train"/"val"/"test" per row."""
    if not (0 < val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise WorkbookError(f"val_frac={val_frac}, test_frac={test_frac}: expected fractions in (0, 1) "
                            "with val_frac + test_frac < 1 (every split needs subjects)")
    subjects = table.frame["subject"].to_numpy()
    uniq, inv = np.unique(subjects, return_inverse=True)
    if len(uniq) < 3:
        raise DataError(f"{table.source}: {len(uniq)} subject(s); a train/val/test split by subject needs at least 3")
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_val = max(1, int(round(val_frac * len(uniq))))
    n_test = max(1, int(round(test_frac * len(uniq))))
    split_of_subject = np.empty(len(uniq), dtype=object)
    split_of_subject[order[:n_val]] = "val"
    split_of_subject[order[n_val:n_val + n_test]] = "test"
    split_of_subject[order[n_val + n_test:]] = "train"
    return split_of_subject[inv].astype(str)


def evaluate_split(table: TaskTable, split: np.ndarray):
    """Images and subjects per split, and subjects shared between splits (must be 0)."""
    import pandas as pd

    df = table.frame.assign(split=split)
    rows = []
    for name in ("train", "val", "test"):
        part = df[df.split == name]
        others = set(df.loc[df.split != name, "subject"])
        rows.append({"split": name, "images": len(part), "subjects": part["subject"].nunique(),
                     "subjects_in_other_splits": len(set(part["subject"]) & others)})
    return pd.DataFrame(rows)


def load_images(paths_: Sequence[str], img_size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Decode, resize (bilinear) and normalise images -> float32 tensor [N, 3, S, S]."""
    from PIL import Image

    arr = np.empty((len(paths_), img_size, img_size, 3), dtype=np.uint8)
    for i, p in enumerate(paths_):   # decoding is per file; everything after is vectorised
        try:
            with Image.open(p) as im:
                arr[i] = np.asarray(im.convert("RGB").resize((img_size, img_size), Image.BILINEAR))
        except OSError as e:
            raise DataError(f"image {p}: cannot be decoded ({e})") from None
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)   # [N, 3, S, S]
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


@dataclass
class TableTensors:
    """Images [N, 3, S, S] and targets [N, T] per split, in memory."""
    x: dict
    y: dict
    tasks: list[TaskSpec]
    reg_mean: dict[str, float]
    reg_std: dict[str, float]

    def sizes(self) -> dict[str, int]:
        return {k: int(v.shape[0]) for k, v in self.x.items()}


def load_table_tensors(table: TaskTable, split: np.ndarray, img_size: int, max_train: int = 0,
                       max_eval: int = 0, seed: int = 0) -> TableTensors:
    """Images and targets of each split; `max_train`/`max_eval` > 0 cap the rows (random subset)."""
    rng = np.random.default_rng(seed)
    xs, ys = {}, {}
    cols = [t.name for t in table.tasks]
    for name, cap in (("train", max_train), ("val", max_eval), ("test", max_eval)):
        idx = np.flatnonzero(split == name)
        if cap and len(idx) > cap:
            idx = np.sort(rng.choice(idx, size=cap, replace=False))
        if len(idx) == 0:
            raise DataError(f"{table.source}: the {name} split is empty; lower the other fractions or add subjects")
        part = table.frame.iloc[idx]
        xs[name] = load_images(part["path"].tolist(), img_size)
        ys[name] = torch.tensor(part[cols].to_numpy(dtype=np.float32))     # [n, T]
    reg_mean, reg_std = {}, {}
    for j, t in enumerate(table.tasks):
        if t.kind == "regression":   # standardise with training statistics only
            v = ys["train"][:, j]
            v = v[~torch.isnan(v)]
            reg_mean[t.name] = float(v.mean()) if v.numel() else 0.0
            reg_std[t.name] = float(v.std()) if v.numel() > 1 and float(v.std()) > 0 else 1.0
    return TableTensors(xs, ys, list(table.tasks), reg_mean, reg_std)


# ======================================================================================= benchmark
class SimulatedOOM(RuntimeError):
    """Raised by `measure_backbone(simulate_oom_above=B)` for batches above B (tests the retry path)."""

    def __init__(self, batch: int):
        super().__init__(f"CUDA out of memory (simulated: batch {batch} above the simulated limit)")


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory error from CUDA or the CPU allocator."""
    if isinstance(exc, (MemoryError, SimulatedOOM)) or isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg
                                              or "failed to allocate" in msg)


def decay_batch(batch: int) -> int:
    """timm's batch decay: 256 -> 192 -> 128 -> 96 -> 64 -> 48 -> … -> 2 -> 1."""
    try:
        from timm.utils import decay_batch_step
        return int(decay_batch_step(batch))
    except ImportError:  # pragma: no cover - same rule as timm.utils.decay_batch_step(num_intervals=2)
        if batch <= 1:
            return 0
        base = 2 ** int(math.log2(batch - 1))
        step = max(base // 2, 1)
        return max(((batch - 1) // step) * step, 1)


class OOMAtEveryBatch(WorkbookError):
    """No batch size down to 1 fitted in memory."""


def run_with_batch_decay(measure: Callable[[int], dict], batch: int) -> dict:
    """Call ``measure(batch)``; on out-of-memory retry with timm's decayed batch until one fits.

    Returns the measurement with ``batch`` (the batch that fitted) and ``oom_batches`` (those that
    did not).
    """
    tried: list[int] = []
    while True:
        try:
            res = measure(batch)
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are retried
            if not is_oom(e):
                raise
            tried.append(batch)
            nxt = decay_batch(batch)
            if nxt < 1 or nxt >= batch:
                raise OOMAtEveryBatch(f"out of memory at every batch size tried {tried}: {e}") from None
            batch = nxt
            continue
        res = dict(res)
        res["batch"] = batch
        res["oom_batches"] = tried
        return res


def _proc_status_mb(field_name: str) -> float:
    """A memory line of /proc/self/status in MB (VmRSS, VmHWM); NaN where /proc is absent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _rss_mb() -> float:
    return _proc_status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB).

    Linux: VmHWM, the high-water mark of this process's own address space. ``getrusage``'s
    ``ru_maxrss`` is the fallback only: on Linux it carries the *parent's* peak across fork and
    exec, so a fresh measuring process spawned by a big notebook kernel would report the kernel's peak.
    """
    hwm = _proc_status_mb("VmHWM")
    if math.isfinite(hwm):
        return hwm
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0  # bytes on macOS, KiB on Linux


def _gmacs(model, img_size: int, device: str) -> float | None:
    """GMACs per image at batch 1 via fvcore (it counts one fused multiply-add as one flop); None without it."""
    try:
        from fvcore.nn import FlopCountAnalysis
    except ImportError:
        return None
    x = torch.randn(1, 3, img_size, img_size, device=device)
    try:
        fca = FlopCountAnalysis(model.eval(), x)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        return float(fca.total()) / 1e9
    except Exception:  # noqa: BLE001 - an optional figure; fvcore cannot trace every model
        return None


def measure_backbone(name: str, img_size: int, batch: int, tasks: Sequence[TaskSpec] | None = None,
                     warmup: int = 10, steps: int = 40, device: str = "cpu", amp: bool = False,
                     channels_last: bool = False, pretrained_files: dict | None = None,
                     lr_backbone: float = 1e-4, lr_head: float = 1e-3,
                     simulate_oom_above: int = 0, seed: int = 0) -> dict:
    """Measure one backbone (and multi-task heads) the way timm's `benchmark.py` does, plus memory.

    Inference: `warmup` then `steps` forward passes under ``torch.inference_mode()``. Training step:
    forward + multi-task loss + backward + AdamW step (zero_grad outside the step timer). CUDA is
    synchronised at each step end. samples/s = samples / wall time of the timed loop. Peak memory:
    CUDA ``max_memory_allocated`` after ``reset_peak_memory_stats``; on CPU this process's peak RSS
    (``ru_maxrss``; measure each backbone in a fresh process, see `evaluate_backbone_speed`).
    """
    import timm  # noqa: F401 - imported before the baseline reading so it counts as runtime, not model

    tasks = list(tasks or make_task_specs(DEFAULT_TASKS))
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    torch.manual_seed(seed)
    rss_before = _rss_mb()   # torch + timm runtime, before the model exists
    model = make_multitask_model(name, tasks, pretrained_files, False, img_size, 0.0, channels_last).to(dev)
    task = MultiTask(tasks)
    counts = count_params(model)
    gmacs = _gmacs(model, img_size, device)
    if simulate_oom_above and batch > simulate_oom_above:
        raise SimulatedOOM(batch)
    x = torch.randn(batch, 3, img_size, img_size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cols = []
    for t in tasks:   # random valid targets: class indices / 0-1 / standard normal values
        if t.kind == "regression":
            cols.append(torch.randn(batch, device=dev))
        else:
            cols.append(torch.randint(0, t.out_dim if t.kind == "multiclass" else 2, (batch,), device=dev).float())
    y = torch.stack(cols, 1)                                              # [B, T]
    amp_dtype = torch.float16 if cuda else torch.bfloat16
    autocast = (lambda: torch.autocast(dev.type, dtype=amp_dtype)) if amp else (lambda: torch.autocast(dev.type, enabled=False))

    def sync():
        if cuda:
            torch.cuda.synchronize(dev)

    # ---- inference
    model.eval()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    with torch.inference_mode():
        for _ in range(warmup):
            with autocast():
                model(x)
        sync()
        t_step = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            s = time.perf_counter()
            with autocast():
                model(x)
            sync()
            t_step += time.perf_counter() - s
        infer_wall = time.perf_counter() - t0
    infer_peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else _peak_rss_mb()

    # ---- training
    model.train()
    opt = torch.optim.AdamW(model.param_groups(lr_backbone, lr_head))
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)

    def train_step() -> float:
        opt.zero_grad(set_to_none=True)
        s = time.perf_counter()
        with autocast():
            out = model(x)
        loss = task.loss(out.float(), y)
        loss.backward()
        opt.step()
        sync()
        return time.perf_counter() - s

    for _ in range(warmup):
        train_step()
    train_step_total = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step_total += train_step()
    train_wall = time.perf_counter() - t0
    train_peak = torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else _peak_rss_mb()
    return {
        "model": name, "img_size": img_size, "batch": batch, "device": str(dev), "amp": amp,
        "channels_last": channels_last, "pretrained": bool(getattr(model, "pretrained", False)),
        **counts, "gmacs": gmacs,
        "infer_samples_per_s": steps * batch / infer_wall, "infer_step_ms": 1000 * t_step / steps,
        "train_samples_per_s": steps * batch / train_wall, "train_step_ms": 1000 * train_step_total / steps,
        "peak_mem_mb": train_peak, "infer_peak_mem_mb": infer_peak,
        "mem_kind": "cuda_max_allocated" if cuda else "cpu_peak_rss",
        "rss_before_model_mb": rss_before if not cuda else None,
        "model_mem_mb": train_peak - rss_before if not cuda else train_peak,
        "warmup": warmup, "steps": steps, "threads": torch.get_num_threads(),
        # Other processes on the machine slow a CPU measurement down: record how busy it was.
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpu_count": os.cpu_count(),
    }


_RESULT_TAG = "BACKBONE_BENCH_RESULT "


def _bench_child() -> int:
    """Entry point of the measuring subprocess: JSON kwargs on stdin, one tagged JSON line out."""
    kwargs = json.loads(sys.stdin.read())
    threads = kwargs.pop("threads", 0)
    if threads:
        torch.set_num_threads(int(threads))
    kwargs["tasks"] = [TaskSpec(**t) for t in kwargs.get("tasks") or []] or None
    try:
        res = measure_backbone(**kwargs)
    except Exception as e:  # noqa: BLE001 - the parent decides what an error means
        res = {"error": f"{type(e).__name__}: {e}", "oom": is_oom(e)}
    print(_RESULT_TAG + json.dumps(res), flush=True)
    return 0


def _measure_in_subprocess(kwargs: dict, timeout_s: float) -> dict:
    from . import paths

    env = dict(os.environ)
    env["PYTHONPATH"] = str(paths.PROJ_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = "import sys; from helpers.backbones import _bench_child; sys.exit(_bench_child())"
    try:
        proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(kwargs), capture_output=True,
                              text=True, timeout=timeout_s, cwd=str(paths.PROJ_ROOT), env=env)
    except subprocess.TimeoutExpired:
        raise WorkbookError(f"benchmark of {kwargs['name']!r} at batch {kwargs['batch']} ran past "
                            f"{timeout_s:.0f} s; lower steps/warmup/img_size or raise bench_timeout_s") from None
    if proc.returncode == -9:   # SIGKILL: on Linux the kernel's OOM killer
        raise MemoryError(f"measuring process killed (SIGKILL, likely out of memory) at batch {kwargs['batch']}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout)[-1500:]
        raise WorkbookError(f"benchmark subprocess for {kwargs['name']!r} failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(lines[-1][len(_RESULT_TAG):])
    if "error" in res:
        if res.get("oom"):
            raise MemoryError(res["error"])
        raise WorkbookError(f"benchmark of {kwargs['name']!r}: {res['error']}")
    return res


def evaluate_backbone_speed(name: str, img_size: int, batch: int, tasks: Sequence[TaskSpec] | None = None,
                            warmup: int = 10, steps: int = 40, device: str = "cpu", amp: bool = False,
                            channels_last: bool = False, pretrained_files: dict | None = None,
                            fresh_process: bool = True, threads: int = 0, simulate_oom_above: int = 0,
                            timeout_s: float = 600.0) -> dict:
    """Benchmark one backbone with timm's out-of-memory batch decay, in a fresh process by default.

    A fresh process per backbone (and per retried batch) keeps one measurement from inheriting
    another's peak resident memory. `threads` > 0 sets torch's thread count there (default: this
    process's).
    """
    tasks = list(tasks or make_task_specs(DEFAULT_TASKS))
    threads = threads or torch.get_num_threads()

    def measure(b: int) -> dict:
        kw = dict(name=name, img_size=img_size, batch=b, tasks=[asdict(t) for t in tasks], warmup=warmup,
                  steps=steps, device=device, amp=amp, channels_last=channels_last,
                  pretrained_files=pretrained_files or {}, simulate_oom_above=simulate_oom_above)
        if not fresh_process:
            return measure_backbone(**{**kw, "tasks": tasks})
        return _measure_in_subprocess({**kw, "threads": threads}, timeout_s)

    return run_with_batch_decay(measure, batch)


# ======================================================================================== fine-tune
def make_lr_groups(model, lr_backbone: float) -> dict[str, float]:
    """`TrainConfig.lr_groups` for a multi-task model: every backbone's parameters get `lr_backbone`
    (the heads take `TrainConfig.lr`)."""
    names = {n.split("backbone.")[0] + "backbone." for n, _ in model.named_parameters() if "backbone." in n}
    return {prefix: float(lr_backbone) for prefix in sorted(names)}


def choose_lrs(pretrained: bool, lr_backbone: float, lr_head: float, lr_scratch: float) -> tuple[float, float]:
    """(backbone lr, head lr): note 002's fine-tuning rates for a pretrained backbone; a randomly
    initialised one learns from scratch, where rates like 2e-5 barely move it, so both take `lr_scratch`."""
    return (lr_backbone, lr_head) if pretrained else (lr_scratch, lr_scratch)


def train_backbone(name: str, data: TableTensors, config, lr_backbone: float = 2e-5, lr_head: float = 1e-4,
                   lr_scratch: float = 1e-3, pretrained_files: dict | None = None, freeze_backbone: bool = False,
                   img_size: int | None = None, dropout: float = 0.0, channels_last: bool = False,
                   out_dir: str | Path | None = None, device: str = "cpu", seed: int = 0) -> dict:
    """Fine-tune one backbone (or "a+b" ensemble) on the table with the shared loop.

    `config` is a `helpers.train.TrainConfig`; its ``lr`` is replaced by the heads' rate and the
    backbone's rate goes in through ``lr_groups`` (see `choose_lrs`); ``grad_accum_steps`` keeps
    the effective batch. Returns val/test loss and per-task scores, the history and fit time.
    """
    import dataclasses

    from .train import evaluate_model, train_model

    torch.manual_seed(seed)
    model = make_multitask_model(name, data.tasks, pretrained_files, freeze_backbone, img_size, dropout, channels_last)
    pretrained = bool(getattr(model, "pretrained", False))
    lr_b, lr_h = choose_lrs(pretrained, lr_backbone, lr_head, lr_scratch)
    task = MultiTask(list(data.tasks), data.reg_mean, data.reg_std)
    cfg = dataclasses.replace(config, lr=lr_h, lr_groups={**make_lr_groups(model, lr_b), **config.lr_groups})
    t0 = time.perf_counter()
    res = train_model(model, task, (data.x["train"], data.y["train"]), (data.x["val"], data.y["val"]),
                      cfg, out_dir, device)
    fit_s = time.perf_counter() - t0
    ebs = cfg.eval_batch_size or 4 * cfg.batch_size
    val = evaluate_model(model, task, (data.x["val"], data.y["val"]), device, ebs)
    test = evaluate_model(model, task, (data.x["test"], data.y["test"]), device, ebs)
    return {"model": name, "pretrained": pretrained, "freeze_backbone": freeze_backbone,
            "lr_backbone": lr_b, "lr_head": lr_h, **count_params(model),
            "val_loss": val["loss"], "val_combined": val["combined"], "test_loss": test["loss"],
            "test_combined": test["combined"],
            **{f"val_{k}": v for k, v in val.items() if k not in ("loss", "combined")},
            **{f"test_{k}": v for k, v in test.items() if k not in ("loss", "combined")},
            "epochs_run": res.epochs_run, "fit_s": fit_s,
            "effective_batch": cfg.batch_size * cfg.grad_accum_steps,
            "fit_samples_per_s": float(np.mean([r["samples_per_s"] for r in res.history])),
            "history": res.history}


def train_backbones(names: Sequence[str], data: TableTensors, config, out_dir: str | Path | None = None,
                    **kwargs: Any) -> list[dict]:
    """`train_backbone` for each name (history.json per model under ``out_dir/<name>/``)."""
    out = []
    for name in names:
        print(f"--- fine-tuning {name}", flush=True)
        folder = Path(out_dir) / metric_key(name) if out_dir is not None else None
        out.append(train_backbone(name, data, config, out_dir=folder, **kwargs))
    return out


def make_finetune_table(results: Sequence[dict], tasks: Sequence[TaskSpec]):
    """One row per fine-tuned model: initialisation, learning rates, losses, per-task and combined scores."""
    import pandas as pd

    score_cols = [f"val_{c}" for c in task_score_names(tasks)]
    cols = ["model", "pretrained", "lr_backbone", "lr_head", "epochs_run", "val_loss", *score_cols, "val_combined",
            "test_loss", "test_combined", "fit_s"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in results])


def evaluate_backbones_speed(names: Sequence[str], img_size: int, batch: int, tasks: Sequence[TaskSpec],
                             **kwargs: Any) -> list[dict]:
    """`evaluate_backbone_speed` for each name, each in a fresh process; prints one line per model."""
    rows = []
    for name in names:
        r = evaluate_backbone_speed(name, img_size, batch, tasks, **kwargs)
        print(f"{name}: batch {r['batch']} train {r['train_samples_per_s']:.1f}/s infer "
              f"{r['infer_samples_per_s']:.1f}/s peak {r['peak_mem_mb']:.0f} MB"
              + (f" (out of memory at {r['oom_batches']})" if r["oom_batches"] else ""), flush=True)
        rows.append(r)
    return rows


def make_bench_table(rows: Sequence[dict]):
    """The benchmark as timm prints it, plus memory."""
    import pandas as pd

    cols = ["model", "params_m", "gmacs", "batch", "infer_samples_per_s", "infer_step_ms", "train_samples_per_s",
            "train_step_ms", "peak_mem_mb", "model_mem_mb", "oom_batches"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows])


def describe_tasks(table: TaskTable, data: TableTensors):
    """Per task: kind, classes, loss weight, labelled training rows and the class counts."""
    import pandas as pd

    rows = []
    for j, t in enumerate(table.tasks):
        y = data.y["train"][:, j]
        y = y[~torch.isnan(y)]
        if t.kind == "regression":
            dist = f"mean {float(y.mean()):.3f}, sd {float(y.std()):.3f}"
        else:
            counts = torch.bincount(y.long(), minlength=t.out_dim if t.kind == "multiclass" else 2).tolist()
            dist = ", ".join(f"{lab}: {c}" for lab, c in zip(table.classes.get(t.name, range(len(counts))), counts))
        rows.append({"task": t.name, "kind": t.kind, "classes": t.out_dim if t.kind == "multiclass" else
                     (2 if t.kind == "binary" else None), "weight": t.weight, "train_labelled": int(y.numel()),
                     "train distribution": dist, "score": task_score_names([t])[0]})
    return pd.DataFrame(rows)


def pretrained_note(names: Sequence[str], pretrained_files: dict | None) -> str:
    """One plain sentence per backbone saying where its weights come from; a listed file that
    does not exist is an error here, before anything is measured."""
    files = pretrained_files or {}
    missing = {k: v for k, v in files.items() if v and not Path(v).expanduser().is_file()}
    if missing:
        raise DataError(f"pretrained_files: file(s) not found {missing}; weights are never downloaded, "
                        "give local .pth/.safetensors files or remove the entries")
    unknown = sorted(set(files) - {p for n in names for p in n.split("+")})
    lines = []
    for n in names:
        for p in n.split("+"):
            lines.append(f"{p}: weights from local file {files[p]}" if files.get(p) else
                         f"{p}: RANDOMLY INITIALISED (no local weight file given; nothing is downloaded)")
    if unknown:
        lines.append(f"pretrained_files names backbones not in the list: {unknown}")
    return "\n".join(dict.fromkeys(lines))


def make_dataset_card(table: TaskTable, split: np.ndarray, data: TableTensors, seed: int) -> dict:
    """Dataset section of config.json (note 003): samples and subjects per split, split method."""
    df = table.frame.assign(split=split)
    card = {"source": table.source, "table": str(table.path), "generated": table.generated,
            "total_samples": int(len(df)), "total_subjects": int(df["subject"].nunique()),
            "split_method": "by_subject_id", "data_leakage_prevention": True, "random_seed": seed,
            "tasks": [asdict(t) for t in table.tasks]}
    for name in ("train", "val", "test"):
        part = df[df.split == name]
        card[f"{name}_samples"] = int(len(part))
        card[f"{name}_subjects"] = int(part["subject"].nunique())
        card[f"{name}_samples_used"] = int(data.x[name].shape[0])
    return card


def make_metrics(table, summary: dict) -> dict:
    """metrics.json: per model params_m, train/infer samples/s, peak_mem_mb, val_loss, combined,
    test_combined, batch; plus the names of the lowest-loss / fastest / best models."""
    out: dict[str, Any] = {}
    for _, r in table.iterrows():
        key = metric_key(str(r["model"]))
        out[key] = {c: (None if r.get(c) is None or (isinstance(r.get(c), float) and not math.isfinite(r.get(c)))
                        else (int(r[c]) if c == "batch" else float(r[c])))
                    for c in ("params_m", "train_samples_per_s", "infer_samples_per_s", "peak_mem_mb", "val_loss",
                              "combined", "test_combined", "batch") if c in r}
    out.update(summary)
    out["n_models"] = int(len(table))
    return out


# ========================================================================================= reports
def make_comparison_table(bench: Sequence[dict], finetune: Sequence[dict]):
    """Note 002's table: model | params (M) | val loss | combined | train/infer samples/s | peak
    memory | batch, sorted by validation loss; ``combined_x_samples_per_s`` = combined score ×
    training samples/s (score-weighted throughput)."""
    import pandas as pd

    b = pd.DataFrame([{k: r.get(k) for k in ("model", "params_m", "train_samples_per_s", "infer_samples_per_s",
                                               "train_step_ms", "peak_mem_mb", "model_mem_mb", "mem_kind", "batch",
                                               "gmacs", "oom_batches", "threads", "load_avg_1m", "cpu_count")}
                       for r in bench])
    f = pd.DataFrame([{k: v for k, v in r.items() if k != "history" and k != "params_m"} for r in finetune])
    df = b.merge(f, on="model", how="outer")
    df = df.rename(columns={"val_combined": "combined"})
    df["combined_x_samples_per_s"] = df["combined"] * df["train_samples_per_s"]
    first = ["model", "params_m", "val_loss", "combined", "test_combined", "train_samples_per_s",
             "infer_samples_per_s", "peak_mem_mb", "batch", "pretrained", "combined_x_samples_per_s"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].sort_values("val_loss", kind="stable").reset_index(drop=True)


def summarize_comparison(table) -> dict[str, Any]:
    """Names of the lowest-loss, fastest-training, best-combined and best combined×samples/s models."""
    def pick(col: str, largest: bool) -> str | None:
        s = table[col].dropna() if col in table else []
        if len(s) == 0:
            return None
        return str(table.loc[s.idxmax() if largest else s.idxmin(), "model"])

    return {"lowest_loss": pick("val_loss", False), "fastest": pick("train_samples_per_s", True),
            "best_combined": pick("combined", True), "best_combined_per_s": pick("combined_x_samples_per_s", True)}


def _base_name(name: str) -> str:
    return name.split(".")[0]   # timm "model.tag" -> architecture


def make_claims_table(table, img_size: int, device: str, tasks: Sequence[TaskSpec]):
    """Reference figures next to what this run measured, with a verdict computed here.

    Rows: parameter count vs timm's results CSV (backbone + a 1000-class head, as timm counts);
    2-core CPU throughput reference (methods.md, batch 8 fp32) where model and size match; note
    002's GPU memory on a 12 GB card; note 002's Large-vs-Base and Swin-vs-ConvNeXt expectations.
    """
    import pandas as pd

    rows = []
    by = {str(r["model"]): r for _, r in table.iterrows()}
    for name, r in by.items():
        base = _base_name(name)
        if base in TIMM_REFERENCE and pd.notna(r.get("backbone_params_m")):
            nf = _num_features(r)
            meas = float(r["backbone_params_m"]) + (nf * 1000 + 1000) / 1e6 if nf else float("nan")
            ref = TIMM_REFERENCE[base][0]
            rows.append({"model": name, "what": "params (M) with a 1000-class head", "source": "timm results CSV",
                         "claimed": ref, "measured": meas,
                         "verdict": "matches" if abs(meas - ref) / ref < 0.01 else f"differs by {meas - ref:+.2f} M"})
        key = (base, img_size)
        if device == "cpu" and key in CPU_REFERENCE and pd.notna(r.get("train_samples_per_s")):
            ref, meas = CPU_REFERENCE[key], float(r["train_samples_per_s"])
            rows.append({"model": name, "what": f"train img/s on CPU at {img_size} px", "source": "methods.md (2-core, batch 8)",
                         "claimed": ref, "measured": meas,
                         "verdict": f"{meas / ref:.2f}x the reference (batch {int(r['batch'])}, "
                                    f"{_int_or(r.get('threads'), '?')} thread(s), multi-task loss"
                                    + (f"; 1-min load average {float(r['load_avg_1m']):.1f} on "
                                       f"{_int_or(r.get('cpu_count'), '?')} CPUs while measuring)"
                                       if pd.notna(r.get("load_avg_1m")) else ")")})
        if device.startswith("cuda") and base in NOTE002_MEMORY and pd.notna(r.get("peak_mem_mb")):
            cb, gb = NOTE002_MEMORY[base]
            meas = float(r["peak_mem_mb"]) / 1024
            same = int(r["batch"]) == cb
            rows.append({"model": name, "what": f"GPU memory (GB) at batch {cb}", "source": "note 002 (12 GB card)",
                         "claimed": gb, "measured": meas,
                         "verdict": ("within 12 GB" if meas <= 12 else "above 12 GB") if same else
                         f"not comparable: measured at batch {int(r['batch'])} at {img_size} px"})
    for big, small, claim_comb, claim_time, label in (
            ("convnext_large", "convnext_base", 0.03, 1.5, "ConvNeXt Large vs Base"),
            ("swin_base_patch4_window7_224", "convnext_base", 0.03, 1.2, "Swin-B vs ConvNeXt-B")):
        a = next((r for n, r in by.items() if _base_name(n) == big), None)
        b = next((r for n, r in by.items() if _base_name(n) == small), None)
        if a is None or b is None:
            continue
        d = float(a["combined"] - b["combined"])
        rows.append({"model": f"{big} vs {small}", "what": "combined score gain", "source": "note 002",
                     "claimed": claim_comb, "measured": d,
                     "verdict": "met" if d >= claim_comb else f"missed by {claim_comb - d:.3f}"})
        t = float(b["train_samples_per_s"] / a["train_samples_per_s"])
        rows.append({"model": f"{big} vs {small}", "what": "training time ratio", "source": "note 002",
                     "claimed": claim_time, "measured": t,
                     "verdict": f"{'slower' if t > claim_time else 'faster'} than claimed ({t:.2f}x vs {claim_time}x)"})
    covered = {r["model"] for r in rows}
    for name in by:   # say so plainly where no reference applies, rather than leave the table silent
        if name not in covered and not any(name in str(m) for m in covered):
            rows.append({"model": name, "what": "-", "source": "-", "claimed": None, "measured": None,
                         "verdict": f"no reference figure for this model at {img_size} px on {device}"})
    return pd.DataFrame(rows, columns=["model", "what", "source", "claimed", "measured", "verdict"])


def _int_or(v, default: str) -> str:
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return default


def _num_features(row) -> int:
    v = row.get("num_features")
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def pareto_front(score: Sequence[float], speed: Sequence[float]) -> np.ndarray:
    """Boolean mask of points no other point beats on both score and speed (higher is better)."""
    s, v = np.asarray(score, float), np.asarray(speed, float)
    keep = np.ones(len(s), bool)
    for i in range(len(s)):
        dominated = (s >= s[i]) & (v >= v[i]) & ((s > s[i]) | (v > v[i]))
        keep[i] = not dominated.any()
    return keep


def plot_pareto(table, ax=None, score: str = "combined", speed: str = "train_samples_per_s"):
    """Score vs training throughput (log x), marker area ~ params, the Pareto front joined."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.2))
    t = table.dropna(subset=[score, speed])
    front = pareto_front(t[score], t[speed])
    sizes = 30 + 6 * t["params_m"].fillna(1).to_numpy()
    ax.scatter(t[speed], t[score], s=sizes, c=np.where(front, "tab:red", "tab:blue"), alpha=0.7, edgecolor="k")
    for _, r in t.iterrows():
        ax.annotate(str(r["model"]), (r[speed], r[score]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    f = t[front].sort_values(speed)
    ax.plot(f[speed], f[score], "--", color="tab:red", lw=1, label="Pareto front")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel("training samples/s (log)")
    ax.set_ylabel(f"validation {score}")
    ax.set_title("score vs throughput (marker area ~ params)")
    ax.legend(loc="best", fontsize=8)
    return fig


def plot_memory(table, ax=None):
    """Peak memory vs parameter count (filled), and on CPU the growth over the runtime's own
    resident memory once the model exists (hollow); labels give the batch that fitted."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.0))
    t = table.dropna(subset=["peak_mem_mb", "params_m"])
    cpu = len(t) and str(t["mem_kind"].iloc[0]) == "cpu_peak_rss"
    ax.scatter(t["params_m"], t["peak_mem_mb"], color="tab:purple", label="peak" + (" RSS" if cpu else " allocated"))
    if cpu and "model_mem_mb" in t:
        ax.scatter(t["params_m"], t["model_mem_mb"], facecolors="none", edgecolors="tab:purple",
                   label="growth over torch+timm runtime")
    for _, r in t.iterrows():
        ax.annotate(f"{r['model']} (batch {int(r['batch'])})", (r["params_m"], r["peak_mem_mb"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("memory (MB)")
    ax.set_title("training memory: " + ("CPU, measuring process" if cpu else "CUDA max_memory_allocated"))
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_training_curves(results: Sequence[dict], metric: str = "combined", ax=None):
    """Per epoch and fine-tuned model: train (dashed) and validation loss, and validation `metric`."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    else:
        fig, axes = ax.figure, [ax, ax.twinx()]
    for i, r in enumerate(results):
        color = f"C{i % 10}"
        ep = [h["epoch"] for h in r["history"]]
        axes[0].plot(ep, [h["val_loss"] for h in r["history"]], marker="o", color=color, label=r["model"])
        axes[0].plot(ep, [h["train_loss"] for h in r["history"]], ls="--", color=color, alpha=0.6)
        axes[1].plot(ep, [h.get(metric, np.nan) for h in r["history"]], marker="o", color=color, label=r["model"])
    for a, label in zip(axes, ("loss (solid: validation, dashed: train)", f"validation {metric}")):
        a.set_xlabel("epoch")
        a.set_ylabel(label)
        epochs = sorted({h["epoch"] for r in results for h in r["history"]})
        if len(epochs) <= 15:
            a.set_xticks(epochs)
        else:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[1].legend(fontsize=8, loc="best")
    return fig


# ============================================================================================= CLI
def bench_main(argv: list[str]) -> int:
    """``python -m helpers bench backbones --models resnet18 convnext_tiny --img-size 64 --batch 32``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m helpers bench backbones",
                                 description="timm benchmark.py's method (warm-up, timed loop, inference_mode, "
                                             "fwd+loss+bwd+step, OOM batch decay) on multi-task heads, plus "
                                             "peak memory; each backbone in a fresh process.")
    ap.add_argument("--models", nargs="+", default=["resnet18"], help="timm names; 'a+b' = ensemble")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=256, help="starting batch (decays on out of memory)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=40, help="timed iterations")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="autocast: float16 on CUDA, bfloat16 on CPU")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    ap.add_argument("--pretrained-file", action="append", default=[], metavar="MODEL=PATH")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in the measuring process")
    ap.add_argument("--same-process", action="store_true", help="measure here (peak RSS then accumulates)")
    ap.add_argument("--simulate-oom-above", type=int, default=0, help="testing: batches above this raise OOM")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    from .train import resolve_device

    try:
        device = str(resolve_device(args.device))
    except WorkbookError as e:
        ap.error(str(e))
    files = {}
    for item in args.pretrained_file:
        if "=" not in item:
            ap.error(f"--pretrained-file {item!r}: expected MODEL=PATH")
        k, v = item.split("=", 1)
        files[k] = v
    try:
        tasks = make_task_specs(args.tasks)
        rows = [evaluate_backbone_speed(m, args.img_size, args.batch, tasks, args.warmup, args.steps, device,
                                        args.amp, args.channels_last, files, not args.same_process, args.threads,
                                        args.simulate_oom_above) for m in args.models]
    except WorkbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"device={device} img_size={args.img_size} warmup={args.warmup} steps={args.steps} amp={args.amp} "
          f"channels_last={args.channels_last}")
    hdr = f"{'model':<34}{'params(M)':>10}{'batch':>7}{'infer/s':>10}{'ms':>8}{'train/s':>10}{'ms':>8}{'peak MB':>10}{'GMACs':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        g = f"{r['gmacs']:.2f}" if r.get("gmacs") is not None else "n/a"
        print(f"{r['model']:<34}{r['params_m']:>10.2f}{r['batch']:>7d}{r['infer_samples_per_s']:>10.1f}"
              f"{r['infer_step_ms']:>8.1f}{r['train_samples_per_s']:>10.1f}{r['train_step_ms']:>8.1f}"
              f"{r['peak_mem_mb']:>10.0f}{g:>8}" + (f"  (OOM at {r['oom_batches']})" if r["oom_batches"] else ""))
    print(f"peak memory: {rows[0]['mem_kind']}; GMACs need fvcore (optional)"
          + (f"; 1-min load average {rows[-1]['load_avg_1m']:.1f} on {rows[-1]['cpu_count']} CPUs"
             if rows[-1].get("load_avg_1m") is not None else ""))
    if args.json:
        from .io import atomic_write_json
        atomic_write_json(args.json, rows)
    return 0
