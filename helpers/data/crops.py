"""Person crops from the stitched panoramas, cached so that training reads arrays, not JPEGs.

A crop is the person's box resized to (H, W) by bilinear sampling, with the horizontal wrap: a box with
x < 0 or x + w > width is assembled from both edges of the panorama in panorama order (the part past the
right edge continues at x = 0). Crops are stored as uint8 arrays **[N, 3, H, W]** (channels first, as the
models take them), one memory-mapped ``crops.npy`` per sequence under ``helpers.core.paths.CACHE/crops``,
keyed by the sequence's label file, the boxes cropped, the image files' identity (path, size, mtime) and
the crop size; a changed image or label file gives a new key and so a rebuilt cache. Building decodes
each image once and crops all its people in one vectorised gather.

The last section builds what a scene pair model takes, by input kind (``INPUT_KINDS``), for any split:
the scenes notebook 01 sampled from, loaded again from its meta.json (``load_pair_scenes``), every
same-frame candidate pair of chosen sequences (``make_candidate_split``), the crops of the pairs' people
in one uint8 array with two row vectors per split (``make_pair_crops``), and the inputs of one kind
(``make_scene_inputs``). Notebooks 02 and 03 share them."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from PIL import Image

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_folder, atomic_path, atomic_write_json
from helpers.data.geometry import make_candidates
from helpers.data.jrdb import find_stitched_images, IMAGE_DIR, load_jrdb, load_scenes
from helpers.data.scene_pairs import make_frames_digest, make_pair_features, make_person_cues
from helpers.data.scenes import Scenes, select_keyframes


# Bump when the cropping changes: caches of another version are not read.
CROP_VERSION = 1


DEFAULT_CROP_SIZE = (64, 32)  # (H, W): people are about twice as tall as wide


def check_crop_size(size: Iterable[int]) -> tuple[int, int]:
    """(H, W) as two ints >= 1, or a WorkbookError saying what is expected."""
    vals = list(size) if isinstance(size, (list, tuple)) else [size]
    if len(vals) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                 for v in vals):
        raise WorkbookError(f"crop size {size!r}: expected [H, W], two whole numbers >= 1 (e.g. [64, 32])")
    return int(vals[0]), int(vals[1])


def load_image(path: Path) -> np.ndarray:
    """One stitched image as [H, W, 3] uint8 RGB; a missing or unreadable file is a DataError naming it."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # PIL's errors for damaged files
        raise DataError(f"{path}: cannot read the image ({e})") from None


def make_person_crops(image: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crops [P, 3, H, W] uint8 of the boxes [P, 4] (x, y, w, h) on one panorama [Hi, Wi, 3].

    Bilinear sampling at pixel centres (a box of exactly H x W at whole pixels is copied pixel for pixel);
    columns are taken modulo the panorama width, so a box spilling past either edge joins its two parts
    in panorama order, and rows are clamped to the image."""
    H, W = size
    hi, wi = image.shape[:2]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bw, bh = np.maximum(b[:, 2], 1.0), np.maximum(b[:, 3], 1.0)
    sx = b[:, :1] + (np.arange(W) + 0.5)[None, :] * (bw / W)[:, None] - 0.5          # [P, W]
    sy = np.clip(b[:, 1:2] + (np.arange(H) + 0.5)[None, :] * (bh / H)[:, None] - 0.5, 0, hi - 1)  # [P, H]
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    x0 = x0.astype(np.int64)
    xa, xb = np.mod(x0, wi), np.mod(x0 + 1, wi)                                         # the wrap
    ya, yb = y0.astype(np.int64), np.minimum(y0.astype(np.int64) + 1, hi - 1)
    img = image
    fx, fy = fx[:, None, :, None], fy[:, :, None, None]                                 # [P, 1, W, 1], [P, H, 1, 1]
    top = img[ya[:, :, None], xa[:, None, :]] * (1 - fx) + img[ya[:, :, None], xb[:, None, :]] * fx
    bottom = img[yb[:, :, None], xa[:, None, :]] * (1 - fx) + img[yb[:, :, None], xb[:, None, :]] * fx
    out = top * (1 - fy) + bottom * fy                                                  # [P, H, W, 3]
    return np.ascontiguousarray(np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2))


@dataclass
class SequenceCrops:
    """One sequence's cached crops: ``crops`` [N, 3, H, W] uint8 (memory-mapped, copy-on-write) for the
    rows ``frame``, ``track`` [N] (the sequence's people in frames that have an image)."""

    sequence: str
    crops: np.ndarray
    frame: np.ndarray
    track: np.ndarray
    folder: Path
    n_decoded: int  # images decoded by the call that returned this (0: read from the cache)

    def rows(self, frame: np.ndarray, track: np.ndarray) -> np.ndarray:
        """Row of each (frame, track) in ``crops``; -1 where the sequence has no such crop."""
        have = pd.MultiIndex.from_arrays([self.frame, self.track])
        return have.get_indexer(pd.MultiIndex.from_arrays([np.asarray(frame), np.asarray(track)]))


def _sequence_index(scenes: Scenes, sequence: int | str) -> int:
    if isinstance(sequence, str):
        if sequence not in scenes.sequences:
            raise DataError(f"sequence {sequence!r} is not in {scenes.root}; it has: {', '.join(scenes.sequences)}")
        return scenes.sequences.index(sequence)
    if not 0 <= int(sequence) < len(scenes.sequences):
        raise DataError(f"sequence index {sequence}: expected 0..{len(scenes.sequences) - 1}")
    return int(sequence)


def _no_images(scenes: Scenes) -> DataError:
    return DataError(f"{scenes.root}: no stitched images ({IMAGE_DIR}/<sequence>/<frame>.jpg) for the labelled "
                     "frames: the data are geometry only (n_images = 0), so there is nothing to crop")


def _cache_key(scenes: Scenes, name: str, rows: pd.DataFrame, images: dict[int, Path], size: tuple[int, int]) -> str:
    """What the crops depend on: the label file, the boxes cropped, each image's (path, size, mtime), the size."""
    label = Path(scenes.root or ".") / "labels" / "labels_2d_stitched" / f"{name}.json"
    st = label.stat() if label.is_file() else None
    h = hashlib.sha256(json.dumps({"version": CROP_VERSION, "size": size, "width": scenes.width,
                                   "label": [str(label.resolve()), st.st_size, st.st_mtime_ns] if st else None}
                                  ).encode())
    h.update(rows[["frame", "track", "x", "y", "w", "h"]].to_numpy(np.float64).tobytes())
    for f in np.unique(rows["frame"].to_numpy()).tolist():
        p = images[f]
        try:
            s = p.stat()
        except FileNotFoundError:  # listed a moment ago, gone now
            raise DataError(f"{p}: image not found") from None
        h.update(f"{p.resolve()}|{s.st_size}|{s.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


def load_sequence_crops(scenes: Scenes, sequence: int | str, size: Iterable[int] = DEFAULT_CROP_SIZE,
                        cache_dir: str | Path | None = None) -> SequenceCrops:
    """The crops of every person of one sequence in ``scenes`` whose frame has a stitched image: read from
    the cache when its key matches, else built (each image decoded once) and written atomically."""
    size = check_crop_size(size)
    if scenes.image_root is None:
        raise _no_images(scenes)
    s = _sequence_index(scenes, sequence)
    name = scenes.sequences[s]
    images = find_stitched_images(scenes.image_root, name)
    if not images:
        raise DataError(f"{scenes.image_root / name}: no stitched images of sequence {name!r} (expected "
                        "<frame>.jpg files named like 000015.jpg)")
    p = scenes.people
    rows = p[(p["seq"].to_numpy() == s) & p["frame"].isin(list(images)).to_numpy()]
    rows = rows.sort_values(["frame", "track"], kind="stable")
    key = _cache_key(scenes, name, rows, images, size)
    folder = Path(cache_dir or paths.CACHE / "crops") / f"{paths.safe_slug(name)}_{size[0]}x{size[1]}_{key}"
    n_decoded = 0
    if not _cache_complete(folder, len(rows), size):
        n_decoded = _build_cache(folder, rows, images, size, scenes.width)
    idx = np.load(folder / "index.npz")
    # Copy-on-write mapping: pages come from the file (shared, read on demand), and torch.from_numpy
    # accepts it, unlike a read-only map; nothing is ever written back.
    crops = np.load(folder / "crops.npy", mmap_mode="c")
    return SequenceCrops(name, crops, idx["frame"], idx["track"], folder, n_decoded)


def _cache_complete(folder: Path, n: int, size: tuple[int, int]) -> bool:
    """Whether a cache folder holds all three files with the expected shape (else it is rebuilt)."""
    if not all((folder / f).is_file() for f in ("crops.npy", "index.npz", "meta.json")):
        return False
    try:
        shape = np.load(folder / "crops.npy", mmap_mode="r").shape
    except (OSError, ValueError):
        return False
    return shape == (n, 3, *size)


def _build_cache(folder: Path, rows: pd.DataFrame, images: dict[int, Path], size: tuple[int, int],
                 width: int) -> int:
    """Decode each frame's image once, crop all its people, write crops.npy / index.npz / meta.json
    (the folder appears in one step). Returns the number of images decoded."""
    frames = rows["frame"].to_numpy()
    boxes = rows[["x", "y", "w", "h"]].to_numpy(np.float64)
    starts = np.flatnonzero(np.r_[True, frames[1:] != frames[:-1]]) if len(frames) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(frames)]
    with atomic_folder(folder) as tmp:
        # Written through a memory map: the crops never need to fit in memory at once.
        out = np.lib.format.open_memmap(tmp / "crops.npy", mode="w+", dtype=np.uint8, shape=(len(rows), 3, *size))
        for a, b in zip(starts.tolist(), ends.tolist()):
            path = images[int(frames[a])]
            img = load_image(path)
            if img.shape[1] != width:  # the wrap is modulo the panorama width, so a resized image cannot be used
                raise DataError(f"{path}: image is {img.shape[1]} x {img.shape[0]} px; expected a stitched "
                                f"panorama {width} px wide (the boxes are in that frame)")
            out[a:b] = make_person_crops(img, boxes[a:b], size)
        out.flush()
        del out
        np.savez(tmp / "index.npz", frame=frames.astype(np.int64), track=rows["track"].to_numpy(np.int64))
        atomic_write_json(tmp / "meta.json", {"layout": "[N, 3, H, W] uint8 RGB", "size": list(size),
                                              "n_crops": len(rows), "n_images": len(starts), "version": CROP_VERSION})
    return len(starts)


def load_crops(scenes: Scenes, seq: np.ndarray, frame: np.ndarray, track: np.ndarray,
               size: Iterable[int] = DEFAULT_CROP_SIZE, cache_dir: str | Path | None = None) -> np.ndarray:
    """Crops [P, 3, H, W] uint8 for the rows (seq index, frame, track) [P], e.g. a scene pair dataset's
    ``seq``, ``frame`` and ``track_a`` (or ``track_b``); each sequence's cache is built on first use."""
    bank = load_crop_bank(scenes, size, np.unique(np.asarray(seq)).tolist(), cache_dir)
    return bank.take_numpy(bank.index(seq, frame, track))


class CropBank:
    """The cached crops of several sequences behind one index: ``index(seq, frame, track)`` gives rows,
    ``take(rows)`` a uint8 tensor [B, 3, H, W] gathered from the memory-mapped files (one gather per sequence)."""

    def __init__(self, scenes: Scenes, parts: dict[int, SequenceCrops], size: tuple[int, int]):
        self.scenes, self.parts, self.size = scenes, parts, size
        self.seq_ids = np.array(sorted(parts), dtype=np.int64)
        counts = [len(parts[s].frame) for s in self.seq_ids.tolist()]
        self.offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_decoded(self) -> int:
        return sum(p.n_decoded for p in self.parts.values())

    def index(self, seq: np.ndarray, frame: np.ndarray, track: np.ndarray) -> np.ndarray:
        """Rows [P] of the bank for (seq, frame, track) [P]; a row without a crop is a DataError naming the
        image it would need (or saying that the box is not labelled)."""
        seq, frame, track = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (seq, frame, track))
        out = np.full(len(seq), -1, np.int64)
        for k, s in enumerate(self.seq_ids.tolist()):
            sel = np.flatnonzero(seq == s)
            out[sel] = self.parts[s].rows(frame[sel], track[sel])
            out[sel[out[sel] >= 0]] += self.offsets[k]
        if (out < 0).any():
            raise self._missing(int(np.flatnonzero(out < 0)[0]), seq, frame, track)
        return out

    def _missing(self, i: int, seq: np.ndarray, frame: np.ndarray, track: np.ndarray) -> DataError:
        s, f, t = int(seq[i]), int(frame[i]), int(track[i])
        if s not in self.parts:
            return DataError(f"sequence index {s} was not loaded into this crop bank")
        p = self.scenes.people
        labelled = bool(((p["seq"] == s) & (p["frame"] == f) & (p["track"] == t)).any())
        name = self.scenes.sequences[s]
        if not labelled:
            return DataError(f"sequence {name!r} frame {f:06d} has no box of pedestrian:{t}")
        return DataError(f"{self.scenes.image_root / name / f'{f:06d}.jpg'}: image not found (needed for the "
                         f"crop of pedestrian:{t} in sequence {name!r}, frame {f:06d})")

    def take_numpy(self, rows: np.ndarray) -> np.ndarray:
        """[B, 3, H, W] uint8 in memory for bank rows [B]."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), 3, *self.size), np.uint8)
        part = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(part).tolist():
            sel = part == k
            out[sel] = self.parts[int(self.seq_ids[k])].crops[rows[sel] - self.offsets[k]]
        return out

    def take(self, rows: Any) -> Any:
        """A uint8 torch tensor [B, 3, H, W] for bank rows [B] (a batch of training crops)."""
        import torch  # deferred: torch takes seconds to import and only training asks for tensors

        return torch.from_numpy(self.take_numpy(np.asarray(rows)))


def load_crop_bank(scenes: Scenes, size: Iterable[int] = DEFAULT_CROP_SIZE, sequences: Iterable[int] | None = None,
                   cache_dir: str | Path | None = None) -> CropBank:
    """The crops of ``sequences`` (indices; default all that have images), each built once and cached."""
    size = check_crop_size(size)
    if scenes.image_root is None:
        raise _no_images(scenes)
    if sequences is None:
        sequences = [s for s, name in enumerate(scenes.sequences) if find_stitched_images(scenes.image_root, name)]
    parts = {int(s): load_sequence_crops(scenes, int(s), size, cache_dir) for s in sequences}
    return CropBank(scenes, parts, size)


def write_crop_pngs(scenes: Scenes, out_dir: str | Path, sequences: Iterable[int] | None = None,
                    size: Iterable[int] = DEFAULT_CROP_SIZE, cache_dir: str | Path | None = None) -> int:
    """Every cached crop as ``out_dir/<sequence>_<frame:06d>_<track>.png`` (what the models see); returns
    how many files were written. Each file is written atomically."""
    bank = load_crop_bank(scenes, size, sequences, cache_dir)
    out_dir = Path(out_dir)
    n = 0
    for part in bank.parts.values():
        for k, (f, t) in enumerate(zip(part.frame.tolist(), part.track.tolist())):
            with atomic_path(out_dir / f"{part.sequence}_{f:06d}_{t}.png", suffix=".png") as tmp:
                Image.fromarray(np.ascontiguousarray(part.crops[k].transpose(1, 2, 0))).save(tmp, format="PNG")
            n += 1
    return n


# ------------------------------------------------------------------------- scene pair inputs by kind
# geometry: person cue vectors (xa, xb) and pair geometry (pair); appearance: the two people's crops (as
# rows of a crop array); both: the crops and the pair geometry.
INPUT_KINDS = ("geometry", "appearance", "both")


def load_pair_scenes(source: Any, images: bool = True, where: str = "meta.json") -> Scenes:
    """The keyframe scenes a scene pair folder was sampled from, loaded again from its meta.json
    ``scene_source`` (`helpers.data.scene_pairs.make_scene_source`): generated scenes from their
    generator settings (panoramas drawn again when the cache lost them or holds another stride), a JRDB
    folder from its root; then the same keyframes, checked against the recorded frames and people.
    ``images=False`` (or none recorded) loads them geometry only (``n_images == 0``)."""
    if not isinstance(source, dict) or not isinstance(source.get("keyframe_stride"), int):
        raise DataError(f"{where}: no 'scene_source' with a 'keyframe_stride' (folders written before notebook 01 "
                        "recorded where its scenes come from): run notebook 01 again to reload its scenes")
    stride = int(source["keyframe_stride"])
    with_images = bool(images) and int(source.get("n_images") or 0) > 0
    if source.get("generator"):
        scenes = load_scenes(None, **source["generator"], render_stride=stride if with_images else 0)
    else:
        root = Path(str(source.get("root") or ""))
        if not source.get("root") or not root.is_dir():
            raise DataError(f"{where}: scene_source.root = {source.get('root')!r} is not a folder; the JRDB labels "
                            "notebook 01 read are needed to rebuild the scenes")
        scenes = load_jrdb(root, images=with_images)
    scenes = select_keyframes(scenes, stride)
    got = {"frames": scenes.n_frames, "people": len(scenes.people), "frames_digest": make_frames_digest(scenes.people)}
    bad = {k: (source.get(k), v) for k, v in got.items() if source.get(k) != v}
    if bad:
        raise DataError(f"{where}: the scenes loaded again from {scenes.root} differ from those notebook 01 sampled "
                        f"({', '.join(f'{k} {a!r} then, {b!r} now' for k, (a, b) in bad.items())}): the labels or "
                        "the generator changed since; run notebook 01 again")
    return scenes


def _field(split: Any, key: str) -> np.ndarray:
    """An array of a split given as a dict of arrays or a `helpers.data.pairs.PairSet` (extras)."""
    if isinstance(split, dict):
        return np.asarray(split[key])
    value = getattr(split, key, None)
    return np.asarray(value if value is not None else split.extras[key])


def make_person_rows(scenes: Scenes, seq: np.ndarray, frame: np.ndarray, track: np.ndarray) -> np.ndarray:
    """Row of ``scenes.people`` for each (seq, frame, track); a DataError names the first one missing."""
    p = scenes.people
    at = pd.MultiIndex.from_frame(p[["seq", "frame", "track"]]).get_indexer(
        pd.MultiIndex.from_arrays([np.asarray(seq), np.asarray(frame), np.asarray(track)]))
    if (at < 0).any():
        k = int(np.flatnonzero(at < 0)[0])
        raise DataError(f"sequence {int(np.asarray(seq)[k])}, frame {int(np.asarray(frame)[k])}: no person with track "
                        f"{int(np.asarray(track)[k])} in the scenes at {scenes.root}")
    return at


def check_scene_split(scenes: Scenes, split: Any, name: str = "split", atol: float = 1e-4) -> int:
    """Raise a DataError unless every pair of ``split`` names people of ``scenes`` whose cue vectors are the
    split's ``xa`` / ``xb`` (the scenes are those the pairs were sampled from); returns the pairs checked."""
    cues = make_person_cues(scenes.people, scenes.width, scenes.height)
    seq, frame = _field(split, "seq"), _field(split, "frame")
    for side, track, x in (("a", "track_a", "xa"), ("b", "track_b", "xb")):
        got = cues[make_person_rows(scenes, seq, frame, _field(split, track))]
        want = _field(split, x).reshape(len(got), -1)
        if got.shape != want.shape or not np.allclose(got, want, atol=atol, rtol=1e-4):
            raise DataError(f"{name}: the cue vectors of person {side} differ from those of the scenes at {scenes.root} "
                            "(not the scenes these pairs were sampled from): run notebook 01 again")
    return len(seq)


def make_candidate_split(scenes: Scenes, sequences: Iterable[int], distance_multiplier: float,
                         use_wrap: bool = True) -> dict[str, np.ndarray]:
    """Every same-frame candidate pair (the distance rule of notebook 01, no sampling) of the frames of
    ``sequences`` (indices), in frame order, with the arrays of a scene pair split: xa, xb (cues), pair,
    y (same group), type (-1 for negatives), seq, frame, track_a, track_b, ida, idb."""
    p = scenes.people
    sel = np.flatnonzero(p["seq"].isin(list(sequences)).to_numpy())
    q = p.iloc[sel]
    ci, cj = make_candidates(q["fid"].to_numpy(), q["cx"].to_numpy(), q["w"].to_numpy(), float(distance_multiplier),
                             bool(use_wrap), scenes.width)
    i, j = sel[ci], sel[cj]
    fid = p["fid"].to_numpy()
    order = np.lexsort((j, i, fid[i]))
    i, j = i[order], j[order]
    cues = make_person_cues(p, scenes.width, scenes.height)
    seq, track, grp = (p[c].to_numpy().astype(np.int64) for c in ("seq", "track", "group"))
    y = (grp[i] == grp[j]).astype(np.int64)
    return {"xa": cues[i], "xb": cues[j], "pair": make_pair_features(p, i, j, scenes.width), "y": y,
            "type": np.where(y == 1, p["type"].to_numpy()[i], -1).astype(np.int64), "seq": seq[i],
            "frame": p["frame"].to_numpy()[i].astype(np.int64), "track_a": track[i], "track_b": track[j],
            "ida": seq[i] * 1_000_000 + track[i], "idb": seq[j] * 1_000_000 + track[j]}


@dataclass
class PairCrops:
    """The crops of every person in some splits' pairs: ``crops`` [U, 3, H, W] uint8 in memory (each
    person of a frame once) and, per split, the rows (a, b) [N] of its pairs' two people in it."""
    crops: np.ndarray
    rows: dict[str, tuple[np.ndarray, np.ndarray]]
    n_decoded: int          # images decoded to build the crop cache for this call (0: all cached)
    cache_folders: list[str]


def make_pair_crops(scenes: Scenes, splits: dict[str, Any], size: Iterable[int] = DEFAULT_CROP_SIZE,
                    cache_dir: str | Path | None = None) -> PairCrops:
    """Crops of the two people of every pair of ``splits`` (name -> split with seq, frame, track_a,
    track_b): each sequence's crop cache is built once (or read), the people the pairs name are gathered
    into one in-memory uint8 array, and each split gets two row vectors into it, so a model gathers a
    batch by index (no per-sample Python)."""
    seqs = np.unique(np.concatenate([_field(s, "seq") for s in splits.values()])).tolist()
    bank = load_crop_bank(scenes, size, seqs, cache_dir)
    rows = {k: (bank.index(_field(s, "seq"), _field(s, "frame"), _field(s, "track_a")),
                bank.index(_field(s, "seq"), _field(s, "frame"), _field(s, "track_b"))) for k, s in splits.items()}
    used = np.unique(np.concatenate([np.r_[a, b] for a, b in rows.values()]))
    return PairCrops(crops=bank.take_numpy(used),
                     rows={k: (np.searchsorted(used, a), np.searchsorted(used, b)) for k, (a, b) in rows.items()},
                     n_decoded=bank.n_decoded, cache_folders=[str(p.folder) for p in bank.parts.values()])


def make_scene_inputs(kind: str, split: Any, rows: tuple[np.ndarray, np.ndarray] | None = None) -> tuple:
    """The model inputs of one split for an input kind: geometry (xa, xb, pair); appearance (rows a, rows b);
    both (rows a, rows b, pair), the rows from `make_pair_crops` (``PairCrops.rows[split name]``)."""
    if kind not in INPUT_KINDS:
        raise WorkbookError(f"input kind {kind!r}: expected one of {'|'.join(INPUT_KINDS)}")
    if kind == "geometry":
        return (_field(split, "xa"), _field(split, "xb"), _field(split, "pair"))
    if rows is None:
        raise WorkbookError(f"input kind {kind!r} needs the crop rows of the split (make_pair_crops)")
    ra, rb = (np.asarray(r, dtype=np.int64) for r in rows)
    return (ra, rb) if kind == "appearance" else (ra, rb, _field(split, "pair"))
