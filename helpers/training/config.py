"""`TrainConfig`: everything the training loop needs, written into every checkpoint and run card."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from helpers.core.errors import WorkbookError


@dataclass
class TrainConfig:
    """Everything the loop needs; written into every checkpoint and ``config.json``."""
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    scheduler: str = "cosine"          # cosine | plateau | none
    warmup_epochs: float = 1.0         # cosine: linear warm-up from warmup_lr to lr
    warmup_lr: float = 1e-6
    eta_min: float = 1e-6              # cosine: final learning rate
    plateau_factor: float = 0.1        # plateau: ReduceLROnPlateau on val_loss
    plateau_patience: int = 2
    max_grad_norm: float = 1.0         # <= 0: no clipping (the norm is still logged)
    amp: bool = False
    amp_dtype: str = "auto"            # auto (float16+GradScaler on CUDA, bfloat16 on CPU) | float16 | bfloat16
    grad_accum_steps: int = 1
    label_smoothing: float = 0.0       # training loss only; replaces the task's value when > 0
    patience: int = 5                  # early stopping on `monitor`; 0 = off
    min_delta: float = 1e-4
    monitor: str = "val_loss"          # val_loss | accuracy | f1 | any metric the task reports
    restore_best: bool = True          # end with the weights of the best `monitor` epoch
    seed: int = 42
    augment: bool = False              # pair augmentation of 4-D image inputs (each image independently)
    aug_rotation: float = 15.0         # degrees, uniform in ±value
    aug_translate: float = 0.1         # fraction of the image size, uniform in ±value
    aug_crop_scale: tuple[float, float] = (0.9, 1.0)   # resized crop: kept area fraction
    lr_groups: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> lr (e.g. backbone.)
    eval_batch_size: int = 0           # 0 = 4 × batch_size
    num_threads: int = 0               # torch CPU threads during training; 0 = leave as is
    log_every: int = 1                 # print a line every N epochs (rank 0); 0 = silent
    tensorboard: bool = True           # TensorBoard scalars in out_dir beside history.json (rank 0)
    checkpoint: bool = True            # write *.pt into out_dir (history.json is always written)
    resume: bool = True                # resume from out_dir/last.pt when it matches this run

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("scheduler", self.scheduler in ("cosine", "plateau", "none"), "one of cosine|plateau|none"),
            ("amp_dtype", self.amp_dtype in ("auto", "float16", "bfloat16"), "one of auto|float16|bfloat16"),
            ("grad_accum_steps", self.grad_accum_steps >= 1, ">= 1"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "0 <= value < 1"),
            ("patience", self.patience >= 0, ">= 0"), ("warmup_epochs", self.warmup_epochs >= 0, ">= 0"),
            ("aug_crop_scale", 0 < self.aug_crop_scale[0] <= self.aug_crop_scale[1] <= 1, "0 < lo <= hi <= 1"),
        ]
        for key, ok, want in checks:
            if not ok:
                raise WorkbookError(f"TrainConfig.{key}={getattr(self, key)!r}; expected {want}")
        self.aug_crop_scale = tuple(float(v) for v in self.aug_crop_scale)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise WorkbookError(f"TrainConfig: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**d)
