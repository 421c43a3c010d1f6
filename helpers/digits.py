"""Pair data: the built-in digit pairs, the NPZ pair loader, and notebook 00's audit.

The built-in pairs come from the UCI handwritten digits that scikit-learn ships (1,797 real 8x8
images). A pair is positive (y = 1) when both images show the same digit. Splits are made by
source image, so no image appears in two splits ("split by subject", source note 003).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import io, paths
from .errors import DataError, WorkbookError

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


# ----------------------------------------------------------------------------- loading
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


# ----------------------------------------------------------------------------- built-in digit pairs
def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 UCI digits shipped with scikit-learn: images float32 [N, 8, 8] in [0, 1], labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def make_pairs(ids: np.ndarray, labels: np.ndarray, n_pairs: int, pos_rate: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample pairs of distinct images among `ids` (vectorised).

    Positives: two different images of one digit. Negatives: two images of different digits.
    Returns (ida, idb, y).
    """
    n_pos = int(round(n_pairs * pos_rate))
    n_neg = n_pairs - n_pos
    lab = labels[ids]
    # Positives: an anchor, then a different image of the same class, by offset within the class.
    order = np.argsort(lab, kind="stable")
    sorted_ids, sorted_lab = ids[order], lab[order]
    starts = np.searchsorted(sorted_lab, sorted_lab, side="left")
    counts = np.searchsorted(sorted_lab, sorted_lab, side="right") - starts
    usable = np.flatnonzero(counts >= 2)
    if n_pos and usable.size == 0:
        raise WorkbookError("cannot make positive pairs: no digit has two images in this split")
    a = rng.choice(usable, size=n_pos)
    off = rng.integers(1, counts[a])  # 1..count-1: never the anchor itself
    b = starts[a] + (a - starts[a] + off) % counts[a]
    pos_a, pos_b = sorted_ids[a], sorted_ids[b]
    # Negatives: draw twice as many random pairs as needed, keep those with different digits.
    neg_a = np.empty(0, np.int64)
    neg_b = np.empty(0, np.int64)
    while len(neg_a) < n_neg:
        ca, cb = rng.choice(ids, size=2 * n_neg + 16), rng.choice(ids, size=2 * n_neg + 16)
        keep = labels[ca] != labels[cb]
        neg_a, neg_b = np.concatenate([neg_a, ca[keep]]), np.concatenate([neg_b, cb[keep]])
    ida = np.concatenate([pos_a, neg_a[:n_neg]])
    idb = np.concatenate([pos_b, neg_b[:n_neg]])
    y = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)])
    perm = rng.permutation(n_pairs)
    return ida[perm], idb[perm], y[perm]


def make_digit_pairs(seed: int = 0, train_sources: int = 400, val_sources: int = 400,
                     n_pairs: tuple[int, int, int] = (4000, 2000, 4000), pos_rate: float = 0.5,
                     cache: Path | None = None) -> Path:
    """Build (once) the digit pairs for these settings into a cache folder and return it.

    Source images are split first (train / val / rest = test), then pairs are drawn inside each
    split, so no image is shared between splits. Deterministic for a seed.
    """
    images, labels = load_digit_images()
    n_img = len(labels)
    if train_sources + val_sources >= n_img - 20:
        raise WorkbookError(f"train_sources + val_sources = {train_sources + val_sources} leaves fewer than 20 of "
                            f"{n_img} images for the test split")
    settings = {"seed": seed, "train_sources": train_sources, "val_sources": val_sources,
                "n_pairs": list(n_pairs), "pos_rate": pos_rate, "version": 1}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    folder = (cache or paths.CACHE / "digit_pairs") / key
    if (folder / "meta.json").exists():
        return folder
    rng = np.random.default_rng(seed)
    # Stratify the source split by digit so every split sees every digit.
    perm = rng.permutation(n_img)
    order = perm[np.argsort(labels[perm], kind="stable")]
    rank_in_class = np.empty(n_img, np.int64)
    for d in range(10):  # ten classes, not a per-sample loop
        members = order[labels[order] == d]
        rank_in_class[members] = np.arange(len(members))
    frac = rank_in_class / np.bincount(labels)[labels]
    # Walking images in order of their rank within their class interleaves the digits, so the first
    # `train_sources` images are an (almost) stratified sample of exactly that size.
    walk = np.lexsort((perm.argsort(), frac))
    split_of = np.full(n_img, 2)
    split_of[walk[:train_sources]] = 0
    split_of[walk[train_sources:train_sources + val_sources]] = 1
    with io.atomic_folder(folder) as tmp:  # the finished folder appears in one step
        for s, (split, fname) in enumerate(SPLIT_FILES.items()):
            ids = np.flatnonzero(split_of == s)
            ida, idb, y = make_pairs(ids, labels, n_pairs[s], pos_rate, rng)
            io.atomic_savez(tmp / fname, xa=images[ida][:, None], xb=images[idb][:, None], y=y, ida=ida, idb=idb,
                            digit_a=labels[ida], digit_b=labels[idb])
        io.atomic_write_json(tmp / "meta.json", {
            "name": "digit_pairs", "generated": False,
            "source": "UCI handwritten digits shipped with scikit-learn (1,797 real 8x8 images); pairs sampled "
                      "by the workbook, split by source image",
            "settings": settings, "split_method": "by_source_image",
            "sources_per_split": {k: int((split_of == i).sum()) for i, k in enumerate(SPLIT_FILES)}})
    return folder


def copy_pair_folder(src: Path, dst: Path) -> Path:
    """Copy a pair folder into a run's output (atomically, as a whole folder)."""
    with io.atomic_folder(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return dst


# ----------------------------------------------------------------------------- audit
def make_split_summary(splits: PairSplits) -> pd.DataFrame:
    """Counts, label balance, sources and value ranges per split."""
    rows = []
    for split, s in splits.items():
        src = s.sources
        rows.append({"split": split, "pairs": len(s), "positive rate": float(s.y.mean()) if len(s) else np.nan,
                     "distinct sources": None if src is None else len(src),
                     "input shape": "x".join(map(str, s.xa.shape[1:])), "min": float(min(s.xa.min(), s.xb.min())),
                     "max": float(max(s.xa.max(), s.xb.max())), "mean": float((s.xa.mean() + s.xb.mean()) / 2)})
    return pd.DataFrame(rows).set_index("split")


def _row_hash(x: np.ndarray) -> np.ndarray:
    """A 64-bit content hash per row, vectorised: bytes as uint64 words times fixed odd multipliers."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    raw = flat.view(np.uint8).reshape(len(x), -1)
    pad = (-raw.shape[1]) % 8
    if pad:
        raw = np.concatenate([raw, np.zeros((len(x), pad), np.uint8)], axis=1)
    words = raw.view(np.uint64)  # (N, W)
    mult = np.random.default_rng(12345).integers(1, 2**63, size=words.shape[1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        h = (words * mult).sum(axis=1, dtype=np.uint64)
        return h ^ (h >> np.uint64(29))


def _pair_keys(s: PairSet) -> np.ndarray:
    """Order-free content key of each pair: (a, b) and (b, a) are the same pair."""
    ha, hb = _row_hash(s.xa), _row_hash(s.xb)
    lo, hi = np.minimum(ha, hb), np.maximum(ha, hb)
    with np.errstate(over="ignore"):
        return lo * np.uint64(0x9E3779B97F4A7C15) ^ hi


def evaluate_leakage(splits: PairSplits) -> dict[str, Any]:
    """Sources shared across splits (by id) and exact duplicate pairs across splits (by content)."""
    keys = {split: _pair_keys(s) for split, s in splits.items()}
    dup = {f"{a}-{b}": int(np.isin(keys[b], keys[a]).sum())
           for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    out: dict[str, Any] = {"duplicate_pairs_across_splits": int(sum(dup.values())), "duplicates_by_split_pair": dup}
    if any(s.ida is None for _, s in splits.items()):
        out.update(leaked_sources=None, ids_available=False,
                   leak_message="no ids: cannot check sources shared across splits")
        return out
    src = {split: s.sources for split, s in splits.items()}
    shared = {f"{a}-{b}": int(np.intersect1d(src[a], src[b]).size)
              for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    total = int(np.unique(np.concatenate([np.intersect1d(src["train"], src["val"]),
                                          np.intersect1d(src["train"], src["test"]),
                                          np.intersect1d(src["val"], src["test"])])).size)
    out.update(leaked_sources=total, shared_sources_by_split_pair=shared, ids_available=True,
               leak_message="no source appears in two splits" if total == 0 else
               f"WARNING: {total} source ids appear in more than one split: results would be optimistic")
    return out


def make_leakage_table(leak: dict[str, Any]) -> pd.DataFrame:
    """Per pair of splits: sources shared (by id) and pairs with identical content."""
    shared = leak.get("shared_sources_by_split_pair") or {}
    rows = [{"splits": k, "shared sources": shared.get(k, "no ids"), "duplicate pairs": v}
            for k, v in leak["duplicates_by_split_pair"].items()]
    return pd.DataFrame(rows).set_index("splits")


def make_digit_frequency(splits: PairSplits) -> pd.DataFrame | None:
    """How often each digit appears among pair members, per split (built-in pairs only)."""
    if "digit_a" not in splits.train.extras:
        return None
    rows = {}
    for split, s in splits.items():
        digits = np.concatenate([s.extras["digit_a"], s.extras["digit_b"]])
        rows[split] = np.bincount(digits, minlength=10) / len(digits)
    return pd.DataFrame(rows, index=pd.Index(range(10), name="digit"))


def plot_sample_pairs(s: PairSet, n_per_label: int = 6, seed: int = 0):
    """A grid: one row of pairs per label (top: different, bottom: same)."""
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, n_per_label, figsize=(1.6 * n_per_label, 3.6), squeeze=False)
    for row, label in enumerate((0, 1)):
        idx = np.flatnonzero(s.y == label)
        pick = rng.choice(idx, size=min(n_per_label, idx.size), replace=False) if idx.size else []
        for col in range(n_per_label):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(pick):
                i = pick[col]
                img = np.concatenate([s.xa[i, 0], np.full((s.xa.shape[2], 1), 0.3), s.xb[i, 0]], axis=1)
                ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
                if col == 0:
                    ax.set_title("y = 1 (same)" if label else "y = 0 (different)", loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def plot_split_balance(summary: pd.DataFrame, freq: pd.DataFrame | None = None):
    """Pairs and positive rate per split, and (when known) digit frequency per split."""
    import matplotlib.pyplot as plt

    ncols = 2 if freq is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 3.2), squeeze=False)
    ax = axes[0, 0]
    pos = summary["pairs"] * summary["positive rate"]
    ax.bar(summary.index, summary["pairs"] - pos, label="y = 0")
    ax.bar(summary.index, pos, bottom=summary["pairs"] - pos, label="y = 1")
    ax.set_ylabel("pairs")
    ax.set_title("pairs per split and label")
    ax.legend()
    if freq is not None:
        freq.plot.bar(ax=axes[0, 1], width=0.8)
        axes[0, 1].set_ylabel("share of pair members")
        axes[0, 1].set_title("digit frequency per split")
    fig.tight_layout()
    return fig


def load_audit_pairs(pairs_dir: str, out_dir: Path, *, seed: int, train_sources: int, val_sources: int,
                     n_pairs: tuple[int, int, int], pos_rate: float) -> PairSplits:
    """Notebook 00's data: the user's folder, or the built-in digit pairs.

    The built-in pairs are built once into the cache and copied to ``out_dir/digit_pairs`` so that
    later notebooks of the same run read exactly what was audited.
    """
    if pairs_dir:
        folder = Path(pairs_dir).expanduser()
        return load_pair_folder(folder if folder.is_absolute() else paths.PROJ_ROOT / folder)
    cached = make_digit_pairs(seed=seed, train_sources=train_sources, val_sources=val_sources,
                              n_pairs=n_pairs, pos_rate=pos_rate)
    return load_pair_folder(copy_pair_folder(cached, Path(out_dir) / "digit_pairs"), name="digit_pairs")


def describe_balance(summary: pd.DataFrame) -> str:
    """One-line takeaway on split sizes and label balance, computed from the summary table."""
    rates = summary["positive rate"]
    spread = float(rates.max() - rates.min())
    verdict = "balanced alike" if spread < 0.05 else "NOT balanced alike: compare accuracies with care"
    return (f"{int(summary['pairs'].sum()):,} pairs in all; positive rate {rates.min():.3f}–{rates.max():.3f} "
            f"across splits ({verdict}).")


def describe_leakage(leak: dict[str, Any]) -> str:
    dup = leak["duplicate_pairs_across_splits"]
    dup_txt = "no exact duplicate pair across splits" if dup == 0 else \
        f"WARNING: {dup} pairs appear in two splits with identical content"
    return f"{leak['leak_message']}; {dup_txt}."


def make_dataset_card(splits: PairSplits, leak: dict[str, Any]) -> dict[str, Any]:
    """The `dataset` section of config.json (note 003): samples and sources per split, split method, leakage."""
    card: dict[str, Any] = {"name": splits.name, "source": splits.source, "generated": splits.generated,
                            "kind": splits.kind, "input_shape": list(splits.train.xa.shape[1:])}
    for split, s in splits.items():
        card[f"{split}_samples"] = len(s)
        card[f"{split}_sources"] = None if s.sources is None else int(len(s.sources))
    card["total_samples"] = sum(len(s) for _, s in splits.items())
    card["random_seed"] = splits.meta.get("settings", {}).get("seed")
    card["split_method"] = splits.meta.get("split_method", "as provided by the user")
    card["data_leakage_prevention"] = leak.get("leaked_sources") == 0
    card["leakage_check"] = {k: v for k, v in leak.items() if k != "leak_message"} | {"message": leak["leak_message"]}
    return card
