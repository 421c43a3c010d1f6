"""Multi-task image tables (notebook 06): a CSV/Excel table of images and task columns, split by
subject; the built-in table is made from the real UCI digits."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.core.taskspec import TaskSpec


# A head layout shaped like M2's tasks (one 10-class, one binary, one 3-class head): what a speed
# benchmark builds when given no tasks (random targets; only the head shapes matter there). The
# built-in table's tasks are DIGIT_TASKS: its parity and loops columns are gone, because both are
# functions of the digit label and so repeated the digit task instead of adding information.
DEFAULT_TASKS = ["digit:multiclass:10", "parity:binary", "loops:multiclass:3"]


# The built-in table's tasks: the digit class plus two properties measured from each image.
DIGIT_TASKS = ["digit:multiclass:10", "ink:regression", "slant:regression"]


IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


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


def _resolve_table_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if not path.is_absolute() and not path.exists() and (paths.PROJ_ROOT / path).exists():
        path = paths.PROJ_ROOT / path   # notebooks run with their own folder as cwd; allow repo-relative paths
    return path.resolve()


def _check_columns(df, path: Path, tasks: Sequence[TaskSpec], image_col: str, subject_col: str) -> None:
    """Every needed column present, at least one row, no empty image or subject cell."""
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


def _named_paths(df, path: Path, image_col: str, image_root: str | Path | None) -> tuple[Path, list[Path]]:
    root = Path(image_root).expanduser().resolve() if image_root else path.parent
    return root, [p if p.is_absolute() else root / p for p in map(Path, df[image_col].astype(str))]


def table_image_files(table: str | Path, image_col: str, image_root: str | Path | None) -> list[Path]:
    """The existing image files a task table names: what a result computed from the table depends on,
    beside the table itself (its cache key covers them). Empty when the table or column is absent."""
    path = _resolve_table_path(table)
    if not path.is_file():
        return []
    df = _read_table(path)
    if image_col not in df.columns:
        return []
    return sorted({p for p in _named_paths(df, path, image_col, image_root)[1] if p.is_file()})


def _image_paths(df, path: Path, image_col: str, image_root: str | Path | None) -> list[Path]:
    """Absolute image paths (relative ones under `image_root`, default the table's folder); all must exist."""
    root, paths_ = _named_paths(df, path, image_col, image_root)
    absent = [str(p) for p in paths_ if not p.is_file()]
    if absent:
        raise DataError(f"task table {path}: {len(absent)} image file(s) not found under {root}, "
                        f"e.g. {absent[:3]}")
    return paths_


def _encode_regression(col, t: TaskSpec, path: Path) -> np.ndarray:
    import pandas as pd

    vals = pd.to_numeric(col, errors="coerce").astype(float)
    bad = col.notna() & ~np.isfinite(vals)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"task table {path}: column {t.name!r} (regression) holds non-numbers: row {row + 1} is "
                        f"{str(col.iloc[row])!r} ({int(bad.sum())} such row(s)); a regression target is a finite number")
    return vals.to_numpy()


# More classes than this is a label column gone wrong (an id, a typo of 10**12), not a task: refused
# before 0..K-1 would be laid out in memory.
MAX_CLASSES = 100_000


def _check_class_range(col, t: TaskSpec, path: Path) -> None:
    """Whole-number class labels within the declared count (or MAX_CLASSES), naming the first row outside."""
    import pandas as pd

    if t.kind != "multiclass":
        return
    vals = pd.to_numeric(col, errors="coerce")
    present = col.notna()
    if (present & vals.isna()).any():
        return   # text labels: mapped in sorted order, counted by _class_labels
    limit = t.num_classes or MAX_CLASSES
    with np.errstate(invalid="ignore"):
        bad = present & (~np.isfinite(vals) | ((vals == np.floor(vals)) & (vals >= limit)))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"task table {path}: column {t.name!r}, row {row + 1}: class label {col.iloc[row]} is "
                        f"outside 0..{limit - 1}" + (f" (the task declares {t.num_classes} classes)" if t.num_classes
                                                     else f" (at most {MAX_CLASSES} classes)"))


def _class_labels(uniq: list, t: TaskSpec, path: Path) -> tuple[list, TaskSpec]:
    """The original label of each class index of a categorical column, and the task with its class count.

    Binary: 0/1 (or True/False), else the two labels in sorted order. Multiclass: 0..K-1 for
    non-negative integers (K at least the declared count), else the sorted labels.
    """
    if t.kind == "binary":
        if len(uniq) > 2:
            raise DataError(f"task table {path}: binary column {t.name!r} has {len(uniq)} values "
                            f"{uniq[:6]}; expected two (e.g. 0/1)")
        return ([0, 1] if set(uniq) <= {0, 1, True, False} else list(uniq)), t
    is_int = all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer())
                 for v in uniq)
    if is_int and min(uniq) >= 0:
        labels = list(range(max(t.num_classes, int(max(uniq)) + 1)))
    else:
        labels = list(uniq)
    if t.num_classes and len(labels) > t.num_classes:
        raise DataError(f"task table {path}: column {t.name!r} has {len(labels)} classes "
                        f"{labels[:12]}; the task declares {t.num_classes}")
    k = max(t.num_classes, len(labels))
    if k < 2:
        raise DataError(f"task table {path}: multiclass column {t.name!r} has a single class {labels}")
    return labels, TaskSpec(t.name, t.kind, k, t.weight)


def _encode_task(col, t: TaskSpec, path: Path) -> tuple[np.ndarray, list | None, TaskSpec]:
    """One task column encoded as float (class index / 0-1 / value, NaN = missing): (values, the class
    labels or None for regression, the task with its resolved class count)."""
    import pandas as pd

    present = col.dropna()
    if present.empty:
        raise DataError(f"task table {path}: column {t.name!r} has no labels")
    if t.kind == "regression":
        return _encode_regression(col, t, path), None, t
    _check_class_range(col, t, path)
    labels, t = _class_labels(sorted(present.unique(), key=lambda v: (str(type(v)), v)), t, path)
    index = {v: i for i, v in enumerate(labels)}
    if t.kind == "multiclass" and labels == list(range(len(labels))):
        enc = pd.to_numeric(col, errors="coerce")
    else:
        enc = col.map(lambda v: index.get(v, np.nan) if pd.notna(v) else np.nan)
    return enc.astype(float).to_numpy(), labels, t


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

    path = _resolve_table_path(path)
    df = _read_table(path)
    _check_columns(df, path, tasks, image_col, subject_col)
    paths_ = _image_paths(df, path, image_col, image_root)
    out = pd.DataFrame({"path": [str(p) for p in paths_], "subject": df[subject_col].astype(str).to_numpy()})
    classes: dict[str, list] = {}
    resolved: list[TaskSpec] = []
    for t in tasks:
        values, labels, t = _encode_task(df[t.name], t, path)
        out[t.name] = values
        if labels is not None:
            classes[t.name] = labels
        resolved.append(t)
    return TaskTable(out, resolved, classes, source or f"task table {path}", path, generated)


def make_image_properties(images: np.ndarray) -> dict[str, np.ndarray]:
    """Properties measured from grey images [N, H, W] (intensity 0..1), vectorised over N.

    ink: ink mass, the summed intensity (in fully lit pixels). slant: the shear of the ink's
    second-order central moments, -mu11 / mu02, i.e. the horizontal shift per row down the image
    (positive = the top leans right; the quantity deskewing removes). Rows are y (down), columns x.
    """
    im = np.asarray(images, dtype=np.float64)
    h, w = im.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)                  # [H, W] each
    mass = im.sum(axis=(1, 2))                                      # [N]
    safe = np.where(mass > 0, mass, 1.0)
    cy = (im * ys).sum(axis=(1, 2)) / safe
    cx = (im * xs).sum(axis=(1, 2)) / safe
    dy = ys[None] - cy[:, None, None]                               # [N, H, W]
    dx = xs[None] - cx[:, None, None]
    mu11 = (im * dx * dy).sum(axis=(1, 2))
    mu02 = (im * dy * dy).sum(axis=(1, 2))
    slant = np.divide(-mu11, mu02, out=np.zeros_like(mu11), where=mu02 > 0)   # a blank image has no slant
    return {"ink": mass, "slant": slant}


def _write_digit_folder(tmp: Path, imgs: np.ndarray, y: np.ndarray) -> None:
    """PNG files under ``tmp/images`` and ``tmp/table.csv`` (image, subject, digit, ink, slant)."""
    from PIL import Image

    (tmp / "images").mkdir()
    names = [f"images/{i:05d}.png" for i in range(len(y))]
    for name, im in zip(names, imgs):
        Image.fromarray(im, mode="L").save(tmp / name)
    # Measured on the pixels as saved, so the targets describe exactly the images a model sees.
    props = make_image_properties(imgs / 255.0)
    lines = ["image,subject,digit,ink,slant"]
    lines += [f"{n},digit-{i:05d},{c},{k:.6f},{s:.6f}"
              for i, (n, c, k, s) in enumerate(zip(names, y, props["ink"], props["slant"]))]
    (tmp / "table.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_digit_task_table(cache_dir: str | Path | None = None) -> Path:
    """Write the built-in table once: sklearn's real 8x8 digit images as PNG files + table.csv.

    Columns: image, subject (each image is its own subject: sklearn ships no writer ids), digit
    (0-9, the true label), ink and slant (measured from each image by `make_image_properties`:
    they vary within a digit class, so they carry information the label does not; see
    `evaluate_task_redundancy`). Returns the CSV path.
    """
    from sklearn.datasets import load_digits

    folder = Path(cache_dir) if cache_dir else paths.CACHE / "digit_tasks_v2"
    csv = folder / "table.csv"
    if csv.is_file():
        return csv
    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)  # [N, 8, 8]
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".digit_tasks.", dir=folder.parent))
    try:
        _write_digit_folder(tmp, imgs, d.target.astype(np.int64))
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
    """`table` empty -> the built-in digit table (cached under helpers.core.paths.CACHE); else the user's file."""
    if not table:
        csv = make_digit_task_table()
        return load_task_table(csv, tasks, "image", "subject", None,
                               source="sklearn digits (UCI 8x8, 1797 real images) as PNG files; digit = the "
                                      "true label, ink and slant measured from each image; each image is its "
                                      "own subject")
    return load_task_table(table, tasks, image_col, subject_col, image_root or None)


def _eta_squared(groups: np.ndarray, values: np.ndarray) -> float:
    """Correlation ratio η²: the share of the values' variance explained by the group means (0..1)."""
    import pandas as pd

    v = pd.Series(values)
    total = float(((v - v.mean()) ** 2).sum())
    fitted = v.groupby(groups).transform("mean")
    return float(((fitted - v.mean()) ** 2).sum() / total) if total > 0 else float("nan")


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    """Cramér's V of two categorical columns (0 = independent; 1 = the one with fewer classes is
    a function of the other)."""
    import pandas as pd

    obs = pd.crosstab(a, b).to_numpy(dtype=np.float64)
    n = obs.sum()
    k = min(obs.shape) - 1
    if k < 1 or n == 0:
        return float("nan")
    expected = obs.sum(1, keepdims=True) * obs.sum(0, keepdims=True) / n
    chi2 = float(((obs - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / (n * k)))


def _redundancy_row(f, a: TaskSpec, b: TaskSpec) -> dict:
    """Pearson r, η² (categorical `a`, regression `b`) and Cramér's V (both categorical) of two task columns."""
    both = f[[a.name, b.name]].dropna()
    x, y = both[a.name].to_numpy(), both[b.name].to_numpy()
    r = float(np.corrcoef(x, y)[0, 1]) if len(both) > 1 and x.std() > 0 and y.std() > 0 else float("nan")
    cat_a, reg_b = a.kind != "regression", b.kind == "regression"
    return {"task": b.name, "kind": b.kind, "vs": a.name, "rows": int(len(both)), "pearson_r": r,
            "eta_squared": _eta_squared(x, y) if cat_a and reg_b else float("nan"),
            "cramers_v": _cramers_v(x, y) if cat_a and not reg_b else float("nan")}


def evaluate_task_redundancy(table: TaskTable):
    """How much each task repeats another, over all labelled rows of the table.

    One row per (categorical task, other task) and per pair of regression tasks: Pearson r (a
    class index taken as a number, as a plain correlation would), η² (the share of a regression
    target's variance the classes explain: a model that knew only the class could reach R² = η²
    on it, no more) and Cramér's V for two categorical tasks. Values near 1 mean a task repeats
    the other; near 0, it carries separate information.
    """
    import pandas as pd

    cats = [t for t in table.tasks if t.kind != "regression"]
    regs = [t for t in table.tasks if t.kind == "regression"]
    pairs = [(a, b) for a in cats for b in table.tasks if b.name != a.name]
    pairs += [(a, b) for i, a in enumerate(regs) for b in regs[i + 1:]]
    return pd.DataFrame([_redundancy_row(table.frame, a, b) for a, b in pairs],
                        columns=["task", "kind", "vs", "rows", "pearson_r", "eta_squared", "cramers_v"])


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
