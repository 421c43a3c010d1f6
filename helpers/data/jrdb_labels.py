"""Reading JRDB's label files: the 2D stitched labels (boxes, tracks, attributes, JRDB-Act groups), the
JRDB-Social H-interaction pairs and the 3D boxes, each checked in bulk; a bad record is a ``DataError``
naming the file, the frame and the record's index."""
from __future__ import annotations

import json
import re
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core.errors import DataError
from helpers.data.scenes import OCCLUSION_LEVELS, type_of_label, type_of_labels


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from None


def _labels_of(obj: Any, path: Path) -> dict[str, list]:
    if not isinstance(obj, dict) or not isinstance(obj.get("labels"), dict):
        raise DataError(f"{path}: expected an object with a 'labels' mapping of frame name -> list of records")
    for k, v in obj["labels"].items():
        if not isinstance(v, list):
            raise DataError(f"{path}: frame {k!r}: expected a list of records, got {type(v).__name__}")
    return obj["labels"]


# Frame keys: JRDB names each frame by its six-digit image (2D labels) or point cloud (3D labels).
_IMAGE_KEY = re.compile(r"[0-9]{6}\.(?:jpg|png)")
_CLOUD_KEY = re.compile(r"[0-9]{6}\.pcd")
_IMAGE_KEY_TEXT = "a six-digit image name like '000003.jpg' (exactly six digits and .jpg or .png)"
_CLOUD_KEY_TEXT = "a six-digit point-cloud name like '000003.pcd' (exactly six digits and .pcd)"


def _frame_numbers(keys: list[str], path: Path, pattern: re.Pattern = _IMAGE_KEY,
                   expected: str = _IMAGE_KEY_TEXT) -> np.ndarray:
    """Frame keys -> frame numbers [F]; a key of another shape, or one frame under two names, is refused
    (int('3') would otherwise make '3.png' an alias of '000003.jpg')."""
    bad = next((k for k in keys if not pattern.fullmatch(k)), None)
    if bad is not None:
        raise DataError(f"{path}: frame key {bad!r} is not a frame name: expected {expected}")
    numbers = np.array([int(k[:6]) for k in keys], dtype=np.int64)
    if len(np.unique(numbers)) != len(numbers):
        seen: dict[int, str] = {}
        for k, n in zip(keys, numbers.tolist()):
            if n in seen:
                raise DataError(f"{path}: frame {n} appears twice ({seen[n]!r} and {k!r}); expected one key per frame")
            seen[n] = k
    return numbers


def _locate(counts: np.ndarray, keys: list[str], flat_index: int) -> tuple[str, int]:
    """Flat record index -> (frame key, index within the frame)."""
    starts = np.concatenate([[0], np.cumsum(counts)])
    f = int(np.searchsorted(starts, flat_index, side="right") - 1)
    return keys[f], int(flat_index - starts[f])


def _who(rec: Any) -> str:
    """The record's label_id as written, to name the track in a message."""
    return str(rec.get("label_id", "no label_id")) if isinstance(rec, dict) else "not an object"


# What json gives for numbers; bool is a type of its own, so true/false are refused along with text.
_NUMBER_TYPES = {int, float}


def _first_non_number(rows: list) -> int | None:
    """Index of the first row holding anything but JSON numbers, or None (one C-speed pass when all are)."""
    if set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:
        return None
    return next(i for i, row in enumerate(rows) if not all(type(v) in _NUMBER_TYPES for v in row))


def parse_2d(path: Path) -> tuple[pd.DataFrame, list[tuple[int, int, int, int]]]:
    """One labels_2d_stitched file -> per-record table and H-interaction edges found on its records."""
    labels = _labels_of(read_json(path), path)
    keys = list(labels.keys())
    counts = np.array([len(labels[k]) for k in keys], dtype=np.int64)
    recs = [r for k in keys for r in labels[k]]
    frames = np.repeat(_frame_numbers(keys, path), counts) if keys else np.zeros(0, np.int64)
    boxes = _boxes_2d(recs, counts, keys, path)
    tracks = _tracks_2d(recs, counts, keys, path)
    df = pd.DataFrame({"frame": frames, "track": tracks, "x": boxes[:, 0], "y": boxes[:, 1], "w": boxes[:, 2],
                       "h": boxes[:, 3], **_attributes_2d(recs)})
    return df, _edges_of(recs, frames, path)


def _boxes_2d(recs: list, counts: np.ndarray, keys: list[str], path: Path) -> np.ndarray:
    """Boxes [R, 4] float64, checked in bulk; the first bad record is reported by file, frame and index."""
    box_len = np.array([len(r["box"]) if isinstance(r, dict) and isinstance(r.get("box"), (list, tuple))
                        else (-1 if isinstance(r, dict) and "box" in r else -2) for r in recs], dtype=np.int64)
    bad = np.flatnonzero(box_len != 4)
    if bad.size:
        frame, idx = _locate(counts, keys, int(bad[0]))
        why = {-2: "has no 'box'", -1: "has a 'box' that is not a list"}.get(int(box_len[bad[0]]),
                                                                             f"has a box of length {box_len[bad[0]]}")
        raise DataError(f"{path}: frame {frame!r}, record {idx} {why}; expected box = [x, y, w, h]")
    values = [r["box"] for r in recs]
    bad_i = _first_non_number(values)  # numpy would turn "10" into 10.0 and true into 1.0 without a word
    if bad_i is not None:
        frame, idx = _locate(counts, keys, bad_i)
        raise DataError(f"{path}: frame {frame!r}, record {idx} ({_who(recs[bad_i])}): box values must be numbers, "
                        f"got {values[bad_i]!r} (text and other values are not converted); "
                        f"expected box = [x, y, w, h] of numbers")
    boxes = np.array(values, dtype=np.float64).reshape(-1, 4)
    bad = np.flatnonzero(~np.isfinite(boxes).all(1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if bad.size:
        frame, idx = _locate(counts, keys, int(bad[0]))
        raise DataError(f"{path}: frame {frame!r}, record {idx}: box {boxes[bad[0]].tolist()} has a negative or "
                        "non-finite width/height; expected w >= 0 and h >= 0")
    big = np.abs(boxes) > BOX_LIMIT
    if big.any():
        row, col = map(int, np.argwhere(big)[0])
        frame, idx = _locate(counts, keys, row)
        raise DataError(f"{path}: frame {frame!r}, record {idx} ({_who(recs[row])}): box {'xywh'[col]} = "
                        f"{boxes[row, col]:g} is not a pixel coordinate of a panorama; expected |x|, |y|, w, h "
                        f"at most {BOX_LIMIT:g} (distances and velocities would overflow)")
    return boxes


# Box values beyond this (pixels) are not positions in a panorama: 1e308 would overflow every distance.
BOX_LIMIT = 1e6


# Only pedestrian tracks are read; 18 digits at most so the id fits an int64.
_LABEL_ID = re.compile(r"pedestrian:([0-9]{1,18})")


def _track_number(label_id: Any) -> int | None:
    """'pedestrian:12' -> 12; None for anything else ('car:7', '7', 7, 'pedestrian: 7')."""
    m = _LABEL_ID.fullmatch(label_id) if isinstance(label_id, str) else None
    return int(m.group(1)) if m else None


def _tracks_2d(recs: list, counts: np.ndarray, keys: list[str], path: Path) -> np.ndarray:
    tracks = np.empty(len(recs), dtype=np.int64)
    for i, r in enumerate(recs):  # string parsing: one pass over records, no per-pair work
        if "label_id" not in r:
            frame, idx = _locate(counts, keys, i)
            raise DataError(f"{path}: frame {frame!r}, record {idx} has no 'label_id'")
        t = _track_number(r["label_id"])
        if t is None:
            frame, idx = _locate(counts, keys, i)
            raise DataError(f"{path}: frame {frame!r}, record {idx}: label_id {r['label_id']!r} is not "
                            f"'pedestrian:<int>' (only pedestrian tracks are read)")
        tracks[i] = t
    return tracks


def _attributes_2d(recs: list) -> dict[str, np.ndarray]:
    """occlusion, truncated, no_eval, cluster (JRDB-Act cluster_ID, -1 without) and activity (-1 without)."""
    occ_map = {n: i for i, n in enumerate(OCCLUSION_LEVELS)}
    attrs = [r.get("attributes") or {} for r in recs]
    occ = np.array([occ_map.get(a.get("occlusion"), 0) for a in attrs], dtype=np.int8)
    trunc = np.array([str(a.get("truncated", "false")).lower() == "true" for a in attrs], dtype=bool)
    no_eval = np.array([bool(a.get("no_eval", False)) for a in attrs], dtype=bool)
    sg = [r.get("social_group") for r in recs]
    cluster = np.array([int(g["cluster_ID"]) if isinstance(g, dict) and g.get("cluster_ID") is not None else -1
                        for g in sg], dtype=np.int64)
    act = [r.get("social_activity") or r.get("action_label") for r in recs]
    activity = np.array([type_of_label(max(a, key=lambda k: a[k] if isinstance(a[k], (int, float)) else 0))
                         if isinstance(a, dict) and a else -1 for a in act], dtype=np.int8)
    return {"occlusion": occ, "truncated": trunc, "no_eval": no_eval, "cluster": cluster, "activity": activity}


def _tid(label_id: Any, path: Path, frame: int) -> int:
    """'pedestrian:12' -> 12, or a DataError naming the file and frame."""
    t = _track_number(label_id)
    if t is None:
        raise DataError(f"{path}: frame {frame:06d}: label id {label_id!r} is not 'pedestrian:<int>'")
    return t


def _edges_of(recs: list, frames: np.ndarray, path: Path) -> list[tuple[int, int, int, int]]:
    """H-interaction (or HHI) entries -> (frame, track_a, track_b, type) with a < b."""
    edges = []
    for r, f in zip(recs, frames):
        inter = r.get("H-interaction", r.get("HHI")) if isinstance(r, dict) else None
        if not inter:
            continue
        a = _tid(r.get("label_id"), path, int(f))
        for e in inter:
            if not isinstance(e, dict) or "pair" not in e:
                continue  # unknown shapes are ignored, as unknown fields are
            b = _tid(e["pair"], path, int(f))
            if a != b:
                edges.append((int(f), min(a, b), max(a, b), type_of_labels(e.get("inter_labels", {}))))
    return edges


def parse_social(path: Path) -> list[tuple[int, int, int, int]]:
    labels = _labels_of(read_json(path), path)
    keys = list(labels.keys())
    counts = np.array([len(labels[k]) for k in keys], dtype=np.int64)
    frames = np.repeat(_frame_numbers(keys, path), counts) if keys else np.zeros(0, np.int64)
    return _edges_of([r for k in keys for r in labels[k]], frames, path)


_BOX_3D = ("cx", "cy", "cz", "rot_z")  # the 3D box values the loader uses


def parse_3d(path: Path) -> pd.DataFrame:
    labels = _labels_of(read_json(path), path)
    keys = list(labels.keys())
    counts = np.array([len(labels[k]) for k in keys], dtype=np.int64)
    recs = [r for k in keys for r in labels[k]]
    frames = (np.repeat(_frame_numbers(keys, path, _CLOUD_KEY, _CLOUD_KEY_TEXT), counts) if keys
              else np.zeros(0, np.int64))
    tracks, values = [], []
    for i, r in enumerate(recs):
        b = r.get("box") if isinstance(r, dict) else None
        missing = [k for k in _BOX_3D if k not in b] if isinstance(b, dict) else None
        if missing != []:
            frame, idx = _locate(counts, keys, i)
            why = f"box has no {missing[0]!r}" if missing else "has no box object"
            raise DataError(f"{path}: frame {frame!r}, record {idx} ({_who(r)}): {why}; "
                            f"expected box = {{cx, cy, cz, l, w, h, rot_z}} of numbers")
        tracks.append(_tid(r.get("label_id"), path, int(frames[i])))
        values.append([b[k] for k in _BOX_3D])
    arr = _values_3d(values, recs, counts, keys, path)
    return pd.DataFrame({"frame": frames, "track": np.array(tracks, dtype=np.int64), "x3d": arr[:, 0],
                         "y3d": arr[:, 1], "z3d": arr[:, 2], "rot_z": arr[:, 3]})


def _values_3d(values: list, recs: list, counts: np.ndarray, keys: list[str], path: Path) -> np.ndarray:
    """[R, 4] float64 (cx, cy, cz, rot_z): finite JSON numbers only, since NaN here would read as
    'no 3D label' and text would be converted silently."""
    bad_i = _first_non_number(values)
    if bad_i is None:
        arr = np.array(values, dtype=np.float64).reshape(-1, len(_BOX_3D))
        finite = np.isfinite(arr)
        bad_i = None if finite.all() else int(np.flatnonzero(~finite.all(1))[0])
    if bad_i is None:
        return arr
    row = values[bad_i]
    j = next(j for j, v in enumerate(row) if type(v) not in _NUMBER_TYPES or not np.isfinite(v))
    frame, idx = _locate(counts, keys, bad_i)
    raise DataError(f"{path}: frame {frame!r}, record {idx} ({_who(recs[bad_i])}): box key {_BOX_3D[j]!r} is "
                    f"{row[j]!r}; expected a finite number")
