"""The pair-NPZ contract: ``train.npz``, ``val.npz``, ``test_public.npz`` with ``xa``, ``xb``, ``y``
(optional ``ida``/``idb`` source ids, optional ``ca``/``cb`` per-image classes and extra per-pair arrays),
read and checked with errors naming the file and key; the built-in datasets written earlier in a run are
opened by name."""
from __future__ import annotations

import re
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
    """One split. xa/xb: float32 [N, C, H, W] (images) or [N, F] (vectors); y: int64 {0, 1};
    ca/cb: optional int64 class of each member (e.g. the digit), which the classify-then-compare
    baselines of notebook 02 need."""
    xa: np.ndarray
    xb: np.ndarray
    y: np.ndarray
    ida: np.ndarray | None = None
    idb: np.ndarray | None = None
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    ca: np.ndarray | None = None
    cb: np.ndarray | None = None

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
    arrays = _read_npz(path)
    for key in ("xa", "xb", "y"):
        if key not in arrays:
            raise DataError(f"{path}: missing key {key!r} (found: {', '.join(sorted(arrays)) or 'none'})")
    xa, xb, y = arrays.pop("xa"), arrays.pop("xb"), arrays.pop("y")
    n = len(y) if y.ndim else 0
    if y.ndim != 1:
        raise DataError(f"{path}: key 'y' must be 1-D [N], got shape {y.shape}")
    if n == 0:  # caught here: numpy's "zero-size array" error would surface much later, far from the file
        raise DataError(f"{path}: has 0 rows (expected at least one pair in xa, xb, y)")
    xa, xb = _check_inputs(path, xa, xb, n)
    _check_labels(path, y)
    ida, idb = _read_ids(path, arrays, n)
    ca, cb = _read_classes(path, arrays, n, ida, idb)
    extras = {k: v for k, v in arrays.items() if v.ndim >= 1 and len(v) == n}
    if "pair" in extras:
        _refuse_complex(path, "pair", extras["pair"])
        extras["pair"] = _to_float(extras["pair"])
    return PairSet(xa, xb, y.astype(np.int64), ida, idb, extras, ca, cb)


# The first bytes of a zip archive with members, and of an empty one: every .npz starts with one of them.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz, never unpickling anything. numpy's own messages for these cases advise enabling
    pickles, which would let a file run code, so they are replaced by what was found."""
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head[:4] not in _ZIP_MAGIC:
        found = ("the file is empty" if not head else "it holds a single .npy array" if head.startswith(b"\x93NUMPY")
                 else "it is not a zip archive")
        raise DataError(f"{path}: not an .npz archive of arrays ({found}); expected a file written by "
                        f"numpy.savez with keys xa, xb, y")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy and zipfile raise several types for a corrupt archive
        raise DataError(f"{path}: not a readable .npz archive ({_reason(e)})") from None
    arrays = {}
    with archive as z:
        for key in z.files:
            arrays[key] = _read_member(path, z, key)
    return arrays


def _read_member(path: Path, z: Any, key: str) -> np.ndarray:
    try:
        value = z[key]
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(f"{path}: key {key!r} holds Python objects (object dtype); such arrays are never "
                            f"loaded because loading them could run code: save numeric arrays instead") from None
        raise DataError(f"{path}: key {key!r} could not be read ({_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 - a damaged member: zlib, zipfile or numpy errors
        raise DataError(f"{path}: key {key!r} could not be read ({_reason(e)})") from None
    if not isinstance(value, np.ndarray):  # a zip member that is not an .npy file comes back as bytes
        raise DataError(f"{path}: member {key!r} is not a numpy array; expected an .npz written by numpy.savez")
    return value


def _reason(e: Exception) -> str:
    """An exception as text, without numpy's advice to unpickle (never to be followed for user data)."""
    text = str(e)
    return type(e).__name__ if "pickle" in text.lower() else f"{type(e).__name__}: {text}"


def _refuse_complex(path: Path, key: str, x: np.ndarray) -> None:
    # Converting to float32 would silently drop the imaginary part.
    if np.iscomplexobj(x):
        raise DataError(f"{path}: key {key!r} has complex dtype {x.dtype}, which is not supported "
                        f"(expected real numbers)")


def _check_inputs(path: Path, xa: np.ndarray, xb: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """xa, xb: rank, rows, dtype, shape and finiteness checked; returned as float32 with a channel axis."""
    for key, x in (("xa", xa), ("xb", xb)):
        if x.ndim not in (2, 3, 4):
            raise DataError(f"{path}: key {key!r} has rank {x.ndim} (shape {x.shape}); expected [N, F], "
                            f"[N, H, W] or [N, C, H, W]")
        if len(x) != n:
            raise DataError(f"{path}: length mismatch: {key!r} has {len(x)} rows but 'y' has {n}")
        if x.size == 0:
            raise DataError(f"{path}: key {key!r} has no values per row (shape {x.shape})")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise DataError(f"{path}: key {key!r} has non-numeric dtype {x.dtype}")
        _refuse_complex(path, key, x)
    if xa.shape != xb.shape:
        raise DataError(f"{path}: 'xa' has shape {xa.shape} but 'xb' has {xb.shape}; they must match")
    xa, xb = _to_float(xa), _to_float(xb)
    for key, x in (("xa", xa), ("xb", xb)):
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(n, -1).any(axis=1).sum())
            raise DataError(f"{path}: key {key!r} contains NaN or Inf in {bad} of {n} rows")
    return xa, xb


def _check_labels(path: Path, y: np.ndarray) -> None:
    if not np.issubdtype(y.dtype, np.number) and y.dtype != bool:
        raise DataError(f"{path}: key 'y' has non-numeric dtype {y.dtype}; expected labels 0/1")
    _refuse_complex(path, "y", y)
    labels = np.unique(y)
    if not np.isin(labels, [0, 1]).all():
        raise DataError(f"{path}: key 'y' holds labels {labels[~np.isin(labels, [0, 1])][:5].tolist()}; "
                        f"expected only 0 and 1")


def _read_ids(path: Path, arrays: dict[str, np.ndarray], n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Optional source ids (ida, idb) as int64, popped from ``arrays``."""
    if ("ida" in arrays) != ("idb" in arrays):
        raise DataError(f"{path}: has only one of 'ida'/'idb'; give both or neither")
    if "ida" not in arrays:
        return None, None
    ida, idb = arrays.pop("ida"), arrays.pop("idb")
    for key, ids in (("ida", ida), ("idb", idb)):
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"{path}: key {key!r} must be integer ids of shape ({n},), got {ids.dtype} {ids.shape}")
    return ida.astype(np.int64), idb.astype(np.int64)


def _read_classes(path: Path, arrays: dict[str, np.ndarray], n: int, ida: np.ndarray | None,
                  idb: np.ndarray | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Optional per-member classes (ca, cb) as int64, popped from ``arrays``; with ids, one image (id)
    must have one class, else a classifier would be trained on contradicting labels."""
    if ("ca" in arrays) != ("cb" in arrays):
        raise DataError(f"{path}: has only one of 'ca'/'cb' (the class of each pair member); give both or neither")
    if "ca" not in arrays:
        return None, None
    ca, cb = arrays.pop("ca"), arrays.pop("cb")
    for key, c in (("ca", ca), ("cb", cb)):
        if c.shape != (n,) or not (np.issubdtype(c.dtype, np.integer) or c.dtype == bool):
            raise DataError(f"{path}: key {key!r} must hold one integer class per row, shape ({n},), "
                            f"got {c.dtype} {c.shape}")
    ca, cb = ca.astype(np.int64), cb.astype(np.int64)
    if ida is not None:
        ids, cls = np.concatenate([ida, idb]), np.concatenate([ca, cb])
        order = np.lexsort((cls, ids))
        ids, cls = ids[order], cls[order]
        clash = (ids[1:] == ids[:-1]) & (cls[1:] != cls[:-1])      # the same image with two classes
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            raise DataError(f"{path}: image id {int(ids[i])} has classes {int(cls[i])} and {int(cls[i + 1])} "
                            f"in 'ca'/'cb'; expected one class per image id ({int(clash.sum())} such clashes)")
    return ca, cb


def _to_float(x: np.ndarray) -> np.ndarray:
    """uint8 images are scaled to [0, 1]; everything becomes float32; [N, H, W] gains a channel."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32, copy=False)
    return x[:, None] if x.ndim == 3 else x


def load_pair_folder(folder: str | Path, name: str | None = None, generated: bool = False) -> PairSplits:
    """Read ``train.npz``, ``val.npz`` and ``test_public.npz`` from a folder. Without ``name`` the
    splits are named after the resolved folder, made a safe folder name (``data/sub/..`` is ``data``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: pair folder not found (expected train.npz, val.npz, test_public.npz)")
    sets = {split: load_npz_pairs(folder / fname) for split, fname in SPLIT_FILES.items()}
    shapes = {split: s.xa.shape[1:] for split, s in sets.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{folder}: splits disagree on the input shape: {shapes}")
    meta = _read_meta(folder / "meta.json")
    kind = "image" if sets["train"].xa.ndim == 4 else "vector"
    return PairSplits(name or paths.safe_slug(folder.resolve().name), kind, bool(meta.get("generated", generated)),
                      meta.get("source", str(folder)), sets["train"], sets["val"], sets["test"], meta)


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "true/false", type(None): "null"}


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json (optional): an object whose ``generated`` and ``source``, when given, are a bool and a string."""
    if not path.exists():
        return {}
    if not path.is_file():
        raise DataError(f"{path}: expected a JSON file, found a folder")
    try:
        meta = io.read_json(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object such as {{\"source\": \"...\", \"generated\": false}}, "
                        f"got a JSON {_JSON_TYPES.get(type(meta), type(meta).__name__)}")
    if not isinstance(meta.get("generated", False), bool):
        raise DataError(f"{path}: 'generated' must be true or false, got {meta['generated']!r}")
    if not isinstance(meta.get("source", ""), str):
        raise DataError(f"{path}: 'source' must be a string, got {meta['source']!r}")
    return meta


# Characters allowed in a dataset's label: it becomes a folder name under the run's outputs.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _check_label(label: str) -> None:
    if not isinstance(label, str) or not label or _UNSAFE.search(label) or label.startswith("."):
        raise WorkbookError(f"dataset label {label!r}: expected a safe folder name (letters, digits, '.', '_', '-', "
                            f"not starting with '.'), as dataset_labels gives")


def _folder_of(entry: str) -> Path:
    """A dataset folder as given: ``~`` expanded, relative paths taken from the project root."""
    folder = Path(entry).expanduser()
    return folder if folder.is_absolute() else paths.PROJ_ROOT / folder


def _raw_name(entry: str) -> str:
    return entry if entry in BUILTIN else _folder_of(entry).resolve().name


def dataset_labels(datasets: list[str]) -> list[str]:
    """The name each entry of ``datasets`` is reported (and written) under: the built-in name, or the
    resolved folder's name made safe; repeats get -2, -3, ... in list order, skipping any label another
    entry has on its own, so every notebook given the same list gives the same labels."""
    return paths.unique_slugs([_raw_name(d) for d in datasets])


def describe_renamed(datasets: list[str], labels: list[str]) -> list[str]:
    """One sentence per entry whose label is not its plain name (made safe, or told apart from another)."""
    if len(datasets) != len(labels):
        raise WorkbookError(f"{len(datasets)} datasets but {len(labels)} labels: give one label per dataset")
    raw = [_raw_name(d) for d in datasets]
    natural = [paths.safe_slug(r) for r in raw]
    out = []
    for i, (entry, label) in enumerate(zip(datasets, labels)):
        if label == raw[i]:
            continue
        if label == natural[i]:
            what = "has no folder name" if not raw[i] else f"has the folder name {raw[i]!r}, not a safe name"
            out.append(f"{entry} {what}: it is reported as {label}")
            continue
        j = natural.index(natural[i])
        if datasets[j] == entry:
            out.append(f"{entry} is listed more than once: entry {i + 1} is reported as {label}")
        elif raw[j] == raw[i]:
            out.append(f"{datasets[j]} and {entry} have the same folder name: the second is reported as {label}")
        else:
            out.append(f"{datasets[j]} and {entry} both give the name {natural[i]}: the second is reported as {label}")
    return out


def load_pair_dataset(name_or_dir: str, run_dir: str | Path, label: str | None = None) -> PairSplits:
    """A built-in dataset written earlier in this run (``digit_pairs``, ``scene_pairs``) or a folder.
    ``label`` (from ``dataset_labels``) names the splits; by default the built-in or folder name."""
    if label is not None:
        _check_label(label)
    if name_or_dir in BUILTIN:
        stem, sub = BUILTIN[name_or_dir].split("/", 1)
        folder = paths.upstream(run_dir, stem) / sub
        if not folder.is_dir():
            nb = BUILTIN[name_or_dir].split("/")[0]
            raise WorkbookError(f"dataset {name_or_dir!r} is written by notebook {nb}, but {folder} does not "
                                f"exist: run {nb} first in the same run folder")
        return load_pair_folder(folder, name=label or name_or_dir)
    folder = _folder_of(name_or_dir)
    if not folder.is_dir():
        raise WorkbookError(f"dataset {name_or_dir!r} is neither a built-in name ({', '.join(BUILTIN)}) "
                            f"nor an existing folder")
    return load_pair_folder(folder, name=label or paths.safe_slug(folder.resolve().name))


def copy_pair_folder(src: Path, dst: Path) -> Path:
    """Copy a pair folder into a run's output (atomically, as a whole folder)."""
    with io.atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=io.copy_as_created)  # this run's umask
    return dst


def make_inputs(s, use_pair: bool) -> tuple[np.ndarray, ...]:
    """Model inputs of one split: (xa, xb) or (xa, xb, pair)."""
    if use_pair:
        return (s.xa, s.xb, s.extras["pair"])
    return (s.xa, s.xb)


def _uses_pair(splits) -> bool:
    return all("pair" in s.extras for _, s in splits.items())


def open_dataset(dataset: str, run_dir: str | Path, out_dir: str | Path, label: str | None = None):
    """(splits, the dataset's output folder, whether pair features are used) for stages 1 and 2;
    ``label`` (from ``dataset_labels``) names that folder when given."""
    splits = load_pair_dataset(dataset, run_dir, label=label)
    out = Path(out_dir) / splits.name
    out.mkdir(parents=True, exist_ok=True)
    return splits, out, _uses_pair(splits)


def source_groups(s) -> tuple[np.ndarray, np.ndarray] | None:
    """What each pair's two images come from: its sequence for both (scene pairs, split by sequence), else its
    two source image ids; None when the split records neither."""
    if "seq" in (s.extras or {}):
        seq = np.asarray(s.extras["seq"])
        return seq, seq
    return (s.ida, s.idb) if s.ida is not None else None


def make_source_holdout(s, rows: np.ndarray, frac: float, seed: int = 0,
                        param: str = "holdout_frac") -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows) among ``rows`` of split ``s``: a share ``frac`` of their source images (sequences
    for scene pairs) is held out; pairs with both images held out are held out, pairs with neither fit, mixed
    pairs are dropped (they would show the held-out pairs an image the model fits on). ``param`` names the
    setting in errors."""
    groups = source_groups(s)
    if groups is None:
        raise WorkbookError(f"{param}: holding out source images needs source ids (ida/idb) or sequences (seq) in "
                            "the split")
    ga, gb = groups[0][rows], groups[1][rows]
    uniq = np.unique(np.concatenate([ga, gb]))
    held = np.random.default_rng(seed).choice(uniq, max(1, int(round(frac * len(uniq)))), replace=False)
    ina, inb = np.isin(ga, held), np.isin(gb, held)
    fit, stop = rows[~ina & ~inb], rows[ina & inb]
    if len(np.unique(s.y[stop])) < 2 or len(np.unique(s.y[fit])) < 2:
        raise WorkbookError(f"{param} = {frac}: {len(stop)} held-out (early-stopping) and {len(fit)} fitting pairs, "
                            f"one of them without both labels; raise {param}")
    return fit, stop
