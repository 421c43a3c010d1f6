"""The pair-NPZ contract: ``train.npz``, ``val.npz``, ``test_public.npz`` with ``xa``, ``xb``, ``y``
(optional ``ida``/``idb`` source ids and extra per-pair arrays), read and checked with errors naming the
file and key; the built-in datasets written earlier in a run are opened by name."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from helpers.core import io, paths
from helpers.core.errors import DataError, WorkbookError


SPLIT_FILES = {"train": "train.npz", "val": "val.npz", "test": "test_public.npz"}


BUILTIN = {"digit_pairs": "00_data_audit/digit_pairs", "scene_pairs": "01_pair_sampling/scene_pairs"}


@dataclass
class PairSet:
    """One split. xa/xb: float32 [N, C, H, W] (images) or [N, F] (vectors); y: int64 {0, 1}."""
    xa: np.ndarray
    xb: np.ndarray
    y: np.ndarray
    ida: np.ndarray | None = None
    idb: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)

    @property
    def sources(self) -> np.ndarray | None:
        return None if self.ida is None else np.unique(np.concatenate([self.ida, self.idb]))


@dataclass
class PairSplits:
    name: str
    kind: str  # "image" or "vector"
    generated: bool
    source: str
    train: PairSet
    val: PairSet
    test: PairSet
    meta: dict[str, Any] = field(default_factory=dict)

    def items(self):
        return (("train", self.train), ("val", self.val), ("test", self.test))


def load_npz_pairs(path: str | Path) -> PairSet:
    """Read one pair file and check it; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected an .npz with keys xa, xb, y)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - numpy raises several types for a corrupt archive
        raise DataError(f"{path}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    for key in ("xa", "xb", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing key {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    xa, xb, y = arrays.pop("xa"), arrays.pop("xb"), arrays.pop("y")
    n = len(y)
    if y.ndim != 1:
        raise DataError(f"{path}: key 'y' must be 1-D [N], got shape {y.shape}")
    for key, x in (("xa", xa), ("xb", xb)):
        if x.ndim not in (2, 3, 4):
            raise DataError(f"{path}: key {key!r} has rank {x.ndim} (shape {x.shape}); expected [N, F], "
                            f"[N, H, W] or [N, C, H, W]")
        if len(x) != n:
            raise DataError(f"{path}: length mismatch: {key!r} has {len(x)} rows but 'y' has {n}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"{path}: key {key!r} has non-numeric dtype {x.dtype}")
    if xa.shape != xb.shape:
        raise DataError(f"{path}: 'xa' has shape {xa.shape} but 'xb' has {xb.shape}; they must match")
    xa, xb = _to_float(xa), _to_float(xb)
    for key, x in (("xa", xa), ("xb", xb)):
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(n, -1).any(axis=1).sum())
            raise DataError(f"{path}: key {key!r} contains NaN or Inf in {bad} of {n} rows")
    if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise DataError(f"{path}: key 'y' has non-numeric dtype {y.dtype}; expected labels 0/1")
    labels = np.unique(y)
    if not np.isin(labels, [0, 1]).all():
        raise DataError(f"{path}: key 'y' holds labels {labels[~np.isin(labels, [0, 1])][:5].tolist()}; "
                        f"expected only 0 and 1")
    ida = idb = None
    if ("ida" in arrays) != ("idb" in arrays):
        raise DataError(f"{path}: has only one of 'ida'/'idb'; give both or neither")
    if "ida" in arrays:
        ida, idb = arrays.pop("ida"), arrays.pop("idb")
        for key, ids in (("ida", ida), ("idb", idb)):
            if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
                raise DataError(f"{path}: key {key!r} must be integer ids of shape ({n},), got {ids.dtype} {ids.shape}")
        ida, idb = ida.astype(np.int64), idb.astype(np.int64)
    extras = {k: v for k, v in arrays.items() if v.ndim >= 1 and len(v) == n}
    if "pair" in extras:
        extras["pair"] = _to_float(extras["pair"])
    return PairSet(xa, xb, y.astype(np.int64), ida, idb, extras)


def _to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images are scaled to [0, 1]; everything becomes float32; [N, H, W] gains a channel."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32, copy=False)
    return x[:, None] if x.ndim == 3 else x


def load_pair_folder(folder: str | Path, name: str | None = None, generated: bool = False) -> PairSplits:
    """Read ``train.npz``, ``val.npz`` and ``test_public.npz`` from a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: pair folder not found (expected train.npz, val.npz, test_public.npz)")
    sets = {split: load_npz_pairs(folder / fname) for split, fname in SPLIT_FILES.items()}
    shapes = {split: s.xa.shape[1:] for split, s in sets.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{folder}: splits disagree on the input shape: {shapes}")
    meta = {}
    if (folder / "meta.json").exists():
        meta = io.read_json(folder / "meta.json")
    kind = "image" if sets["train"].xa.ndim == 4 else "vector"
    return PairSplits(name or folder.name, kind, bool(meta.get("generated", generated)),
                      meta.get("source", str(folder)), sets["train"], sets["val"], sets["test"], meta)


def load_pair_dataset(name_or_dir: str, run_dir: str | Path) -> PairSplits:
    """A built-in dataset written earlier in this run (``digit_pairs``, ``scene_pairs``) or a folder."""
    if name_or_dir in BUILTIN:
        folder = Path(run_dir) / BUILTIN[name_or_dir]
        if not folder.is_dir():
            nb = BUILTIN[name_or_dir].split("/")[0]
            raise WorkbookError(f"dataset {name_or_dir!r} is written by notebook {nb}, but {folder} does not "
                                f"exist: run {nb} first in the same run folder")
        return load_pair_folder(folder, name=name_or_dir)
    folder = Path(name_or_dir).expanduser()
    if not folder.is_absolute():
        folder = paths.PROJ_ROOT / folder
    if not folder.is_dir():
        raise WorkbookError(f"dataset {name_or_dir!r} is neither a built-in name ({', '.join(BUILTIN)}) "
                            f"nor an existing folder")
    return load_pair_folder(folder, name=folder.name)


def copy_pair_folder(src: Path, dst: Path) -> Path:
    """Copy a pair folder into a run's output (atomically, as a whole folder)."""
    with io.atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return dst


def make_inputs(s, use_pair: bool) -> tuple[np.ndarray, ...]:
    """Model inputs of one split: (xa, xb) or (xa, xb, pair)."""
    if use_pair:
        return (s.xa, s.xb, s.extras["pair"])
    return (s.xa, s.xb)


def _uses_pair(splits) -> bool:
    return all("pair" in s.extras for _, s in splits.items())


def open_dataset(dataset: str, run_dir: str | Path, out_dir: str | Path):
    """(splits, the dataset's output folder, whether pair features are used) for stages 1 and 2."""

    splits = load_pair_dataset(dataset, run_dir)
    out = Path(out_dir) / splits.name
    out.mkdir(parents=True, exist_ok=True)
    return splits, out, _uses_pair(splits)
