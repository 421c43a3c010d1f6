"""The built-in digit pairs: real UCI handwritten digits (shipped with scikit-learn), split by source image.

A pair is positive (y = 1) when both images show the same digit. Source images are split first and pairs
are drawn inside each split, so no image appears in two splits."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from helpers.core import io, paths
from helpers.core.errors import WorkbookError
from helpers.data.pairs import copy_pair_folder, load_pair_folder, PairSplits, SPLIT_FILES


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
                "n_pairs": list(n_pairs), "pos_rate": pos_rate, "version": 2}   # 2: ca/cb class arrays
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
            # ca/cb: the pair contract's class arrays (classify-then-compare baselines); digit_a/digit_b
            # hold the same digits under the names notebook 00 reads.
            io.atomic_savez(tmp / fname, xa=images[ida][:, None], xb=images[idb][:, None], y=y, ida=ida, idb=idb,
                            ca=labels[ida], cb=labels[idb], digit_a=labels[ida], digit_b=labels[idb])
        io.atomic_write_json(tmp / "meta.json", {
            "name": "digit_pairs", "generated": False,
            "source": "UCI handwritten digits shipped with scikit-learn (1,797 real 8x8 images); pairs sampled "
                      "by the workbook, split by source image",
            "settings": settings, "split_method": "by_source_image",
            "sources_per_split": {k: int((split_of == i).sum()) for i, k in enumerate(SPLIT_FILES)}})
    return folder


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
