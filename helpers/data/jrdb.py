"""The JRDB loader (the real annotation layout) and the writer of that layout for generated scenes.

`load_scenes` reads a JRDB root, or writes generated JRDB-like scenes in the same layout and reads them
back with the same loader, so a user's JRDB folder and the default data take one path."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core import paths
from helpers.core.errors import DataError
from helpers.core.io import atomic_folder, atomic_write_json, atomic_write_text
from helpers.data.panorama import JPEG_QUALITY, RENDERER_VERSION, write_panoramas
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import (_OTHER_LABELS, OCCLUSION_LEVELS, Scenes, TYPE_NAMES, type_of_label,
                                 type_of_labels, WIDTH)


def _read_json(path: Path) -> Any:
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


def _parse_2d(path: Path) -> tuple[pd.DataFrame, list[tuple[int, int, int, int]]]:
    """One labels_2d_stitched file -> per-record table and H-interaction edges found on its records."""
    labels = _labels_of(_read_json(path), path)
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


def _parse_social(path: Path) -> list[tuple[int, int, int, int]]:
    labels = _labels_of(_read_json(path), path)
    keys = list(labels.keys())
    counts = np.array([len(labels[k]) for k in keys], dtype=np.int64)
    frames = np.repeat(_frame_numbers(keys, path), counts) if keys else np.zeros(0, np.int64)
    return _edges_of([r for k in keys for r in labels[k]], frames, path)


_BOX_3D = ("cx", "cy", "cz", "rot_z")  # the 3D box values the loader uses


def _parse_3d(path: Path) -> pd.DataFrame:
    labels = _labels_of(_read_json(path), path)
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


def _wrap_diff(d: np.ndarray, width: float = WIDTH) -> np.ndarray:
    """Signed horizontal difference wrapped into [-width/2, width/2)."""
    return (d + width / 2) % width - width / 2


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of an undirected graph on n nodes (the transitive closure of pairs)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


def _majority(keys: np.ndarray, values: np.ndarray) -> pd.Series:
    """Most frequent value per key (ties: the smaller value), vectorised: key -> value."""
    if len(keys) == 0:
        return pd.Series(dtype=np.int64)
    c = pd.DataFrame({"k": keys, "v": values}).value_counts().reset_index(name="n")
    c = c.sort_values(["k", "n", "v"], ascending=[True, False, True], kind="stable").drop_duplicates("k")
    return pd.Series(c["v"].to_numpy(), index=c["k"].to_numpy())


def _add_velocity(df: pd.DataFrame, width: float) -> None:
    """vx, vy (px/frame) from the track: centred difference where both neighbours exist (in place)."""
    order = np.lexsort((df["frame"].to_numpy(), df["track"].to_numpy(), df["seq"].to_numpy()))
    seq, trk = df["seq"].to_numpy()[order], df["track"].to_numpy()[order]
    fr = df["frame"].to_numpy()[order].astype(np.float64)
    cx, yb = df["cx"].to_numpy()[order], df["y_bottom"].to_numpy()[order]
    same_prev = np.r_[False, (seq[1:] == seq[:-1]) & (trk[1:] == trk[:-1])]
    same_next = np.r_[same_prev[1:], False]
    i = np.arange(len(order))
    ip = np.where(same_prev, i - 1, i)  # the row itself where there is no neighbour
    inx = np.where(same_next, np.minimum(i + 1, len(order) - 1), i)
    dt = fr[inx] - fr[ip]
    ok = dt > 0
    vx = np.zeros(len(order))
    vy = np.zeros(len(order))
    vx[ok] = _wrap_diff(cx[inx] - cx[ip], width)[ok] / dt[ok]
    vy[ok] = (yb[inx] - yb[ip])[ok] / dt[ok]
    out_vx = np.empty_like(vx)
    out_vy = np.empty_like(vy)
    out_vx[order], out_vy[order] = vx, vy
    df["vx"], df["vy"] = out_vx, out_vy


_PEOPLE_COLUMNS = ["seq", "frame", "fid", "track", "x", "y", "w", "h", "cx", "y_bottom", "group", "type", "occlusion",
                   "truncated", "no_eval", "vx", "vy", "x3d", "y3d", "z3d", "rot_z"]


def load_jrdb(root: str | Path, width: int = WIDTH, generated: bool | None = None,
              source: str | None = None, images: bool = True) -> Scenes:
    """Read a JRDB root (``labels/labels_2d_stitched/<sequence>.json`` and the optional JRDB-Act,
    JRDB-Social and 3D files) into ``Scenes``.

    Positive (same-group) structure: ``social_group.cluster_ID`` where a sequence has it; otherwise
    the transitive closure (per frame) of its H-interaction pairs. Malformed input raises
    ``DataError`` naming the file, frame and record index. ``generated=None`` trusts a GENERATED.json
    marker only when it lists exactly the label files present, unchanged (else a note says it was ignored).
    Stitched images (``images/image_stitched/<sequence>/<frame>.jpg``) are listed, not opened: ``n_images``
    labelled frames have one (0: geometry only, also with ``images=False``).
    """
    root = Path(root)
    files = _sequence_files(root)
    generated, source, notes = _provenance(root, generated, source)
    parts, grouping, matches = [], {}, {}
    for s, path in enumerate(files):
        df, grouping[path.stem], matches[path.name] = _load_sequence(root, path, s)
        parts.append(df)
    if not any(len(df) for df in parts):  # a run on no boxes would report "0 boxes, 100% removed" as a result
        raise DataError(f"{root}: no sequence holds a box: the {len(files)} files in labels/labels_2d_stitched "
                        f"have no records; expected frames like {{\"000000.jpg\": [{{\"label_id\": \"pedestrian:1\", "
                        f"\"box\": [x, y, w, h]}}]}}")
    people = _join_sequences(parts, width)
    counts = _count_3d(matches)
    image_root, n_images = _count_images(root, [p.stem for p in files], people) if images else (None, 0)
    return Scenes(people=people, sequences=[p.stem for p in files], generated=bool(generated),
                  source=str(source), root=root, width=width, grouping=grouping,
                  notes=notes + _notes_3d(matches, counts, len(people)), image_root=image_root,
                  n_images=n_images, **counts)


IMAGE_DIR = Path("images") / "image_stitched"
_IMAGE_NAME = re.compile(r"([0-9]{6})\.(?:jpg|png)")


def find_stitched_images(image_root: Path | None, sequence: str) -> dict[int, Path]:
    """Frame number -> stitched image of one sequence (``<image_root>/<sequence>/<frame:06d>.jpg`` or
    .png; a .jpg wins over a .png of the same frame); {} when the folder is absent."""
    folder = Path(image_root) / sequence if image_root is not None else None
    if folder is None or not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name, reverse=True):  # .png before .jpg: jpg wins
        m = _IMAGE_NAME.fullmatch(entry.name)
        if m and entry.is_file():
            found[int(m.group(1))] = Path(entry.path)
    return found


def _count_images(root: Path, sequences: list[str], people: pd.DataFrame) -> tuple[Path | None, int]:
    """(the stitched-image folder or None, labelled frames that have an image): one directory listing
    per sequence, no image is opened."""
    image_root = root / IMAGE_DIR
    if not image_root.is_dir():
        return None, 0
    frames = people[["seq", "frame"]].drop_duplicates()
    n = 0
    for s, f in frames.groupby("seq")["frame"]:
        n += int(np.isin(f.to_numpy(), list(find_stitched_images(image_root, sequences[int(s)]))).sum())
    return (image_root if n else None), n


def _sequence_files(root: Path) -> list[Path]:
    """The 2D label files, one per sequence, in name order (their index is the sequence id)."""
    d2 = root / "labels" / "labels_2d_stitched"
    files = sorted(d2.glob("*.json")) if d2.is_dir() else []
    if not files:
        raise DataError(f"{root}: no JRDB layout here: expected labels/labels_2d_stitched/<sequence>.json")
    return files


_MARKER = "GENERATED.json"
_GENERATED_SOURCE = "generated JRDB-like scenes"


def _provenance(root: Path, generated: bool | None, source: str | None) -> tuple[bool, str, list[str]]:
    """(generated, source, notes): as given, else from the GENERATED.json marker when it verifies."""
    marker = root / _MARKER
    notes = []
    if generated is None:
        problem = _marker_problem(root, marker) if marker.exists() else "absent"
        generated = problem is None
        if marker.exists() and problem is not None:
            notes.append(f"{marker} did not match the label files ({problem}) and was ignored: the data are "
                         f"treated as real annotations, not generated ones")
    if source is None:
        source = (str(_read_marker(marker).get("source", _GENERATED_SOURCE)) if generated
                  else f"JRDB annotations at {root}")
    return generated, source, notes


def _read_marker(marker: Path) -> dict[str, Any]:
    """The marker's object; {} when it is absent, unreadable or not an object (it is then not trusted)."""
    try:
        obj = _read_json(marker)
    except (OSError, DataError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _label_files(root: Path) -> set[str]:
    """Every JSON file under root/labels, as a path relative to root with '/' separators."""
    return {p.relative_to(root).as_posix() for p in (root / "labels").rglob("*.json") if p.is_file()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _marker_problem(root: Path, marker: Path) -> str | None:
    """Why the marker cannot be trusted, or None when the label files are exactly those it lists, each
    with its recorded SHA-256 (a marker copied into real data, or data edited after generation, fail)."""
    files = _read_marker(marker).get("files")
    if not isinstance(files, dict) or not files:
        return "it lists no label files with their SHA-256"
    present = _label_files(root)
    extra = sorted(present - set(files))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return f"{extra[0]} is not one of the files it lists{more}"
    for rel, digest in sorted(files.items()):
        if rel not in present:  # also covers paths outside root/labels: those are never opened
            return f"{rel} is listed but missing"
        if _sha256(root / rel) != digest:
            return f"{rel} has changed since it was generated"
    return None


def _load_sequence(root: Path, path: Path, s: int) -> tuple[pd.DataFrame, str, tuple[int, int, int, int] | None]:
    """One sequence -> (its people with seq, group_local and type; how its groups were found; its 3D
    match counts (boxes, boxes with 3D cues, 3D records, 3D records matching no box), None without 3D)."""
    df, edges = _parse_2d(path)
    social = root / "labels" / "labels_2d_activity_social_stitched" / path.name
    if social.exists():
        edges += _parse_social(social)
    df, read_3d = _join_3d(df, root / "labels" / "labels_3d" / path.name)
    df = df.drop_duplicates(["frame", "track"]).sort_values(["frame", "track"], kind="stable")
    df = df.reset_index(drop=True)
    df["seq"] = np.int32(s)
    ia, ib, et = _pairs_present(df, edges)
    group, grouping = _local_groups(df, ia, ib)
    df["group_local"] = group
    df["type"] = _group_types(df, group, ia, et)
    match = None if read_3d is None else (len(df), int(df["x3d"].notna().sum()), *read_3d)
    return df, grouping, match


def _join_3d(df: pd.DataFrame, p3: Path) -> tuple[pd.DataFrame, tuple[int, int] | None]:
    """x3d, y3d, z3d, rot_z joined by (frame, track) from the 3D file; NaN where there is none. Also
    (3D records, 3D records whose (frame, track) has no 2D box) when the file was read."""
    if p3.exists() and len(df):
        d3 = _parse_3d(p3).drop_duplicates(["frame", "track"])
        hit = pd.MultiIndex.from_arrays([d3["frame"], d3["track"]]).isin(
            pd.MultiIndex.from_arrays([df["frame"], df["track"]]))
        return df.merge(d3, on=["frame", "track"], how="left"), (len(d3), int((~hit).sum()))
    for c in ("x3d", "y3d", "z3d", "rot_z"):
        df[c] = np.nan
    return df, None


def _count_3d(matches: dict[str, tuple[int, int, int, int] | None]) -> dict[str, int]:
    read = [m for m in matches.values() if m is not None]
    return {"n_boxes_with_3d": sum(m[1] for m in read), "n_3d_records": sum(m[2] for m in read),
            "n_3d_unmatched": sum(m[3] for m in read)}


def _notes_3d(matches: dict[str, tuple[int, int, int, int] | None], counts: dict[str, int], n_boxes: int) -> list[str]:
    """Sentences on 3D cues: a file matching no box, and the totals when any box or record went unmatched."""
    notes = []
    for name, m in matches.items():
        if m is not None and m[1] == 0:
            why = "(tracks differ?)" if m[2] else "(the file holds no 3D records)"
            notes.append(f"labels_3d/{name}: 0 of {m[0]} boxes matched a 3D label {why}")
    n_files = sum(m is not None for m in matches.values())
    if n_files == 0:
        notes.append(f"no labels_3d files: the 3D cues (x3d, y3d, z3d, rot_z) are NaN for all {n_boxes} boxes")
    elif counts["n_boxes_with_3d"] < n_boxes or counts["n_3d_unmatched"]:
        notes.append(f"3D labels: {counts['n_boxes_with_3d']} of {n_boxes} boxes have 3D cues (NaN for the others); "
                     f"{counts['n_3d_unmatched']} of {counts['n_3d_records']} 3D records matched no 2D box; "
                     f"{n_files} of {len(matches)} sequences have a labels_3d file read")
    return notes


def _pairs_present(df: pd.DataFrame, edges: list[tuple[int, int, int, int]]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interaction edges as row pairs into df: (ia, ib, type) [E], each pair once per frame; pairs
    naming someone absent from the 2D labels are dropped."""
    e = pd.DataFrame(edges, columns=["frame", "a", "b", "type"]).drop_duplicates(["frame", "a", "b"])
    key = pd.MultiIndex.from_arrays([df["frame"], df["track"]])
    ia = key.get_indexer(pd.MultiIndex.from_arrays([e["frame"], e["a"]]))
    ib = key.get_indexer(pd.MultiIndex.from_arrays([e["frame"], e["b"]]))
    keep = (ia >= 0) & (ib >= 0)
    return ia[keep], ib[keep], e["type"].to_numpy()[keep]


def _local_groups(df: pd.DataFrame, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, str]:
    """Group id of each row [R] within the sequence, and where it came from: cluster_ID when the
    sequence has social groups, else the closure of H-interaction pairs, else everyone alone."""
    if (df["cluster"] >= 0).any():
        cl = df["cluster"].to_numpy()
        # Someone without a cluster_ID in a grouped sequence is alone: give them their own id.
        lone = cl < 0
        cl = np.where(lone, cl.max() + 1 + df["track"].to_numpy(), cl)
        return pd.factorize(cl)[0].astype(np.int64), "cluster_ID"
    if len(ia):
        return _components(len(df), ia, ib), "H-interaction"
    return np.arange(len(df), dtype=np.int64), "none"


def _group_types(df: pd.DataFrame, group: np.ndarray, ia: np.ndarray, et: np.ndarray) -> np.ndarray:
    """Type of each row's (frame, group) [R] int8: majority of labelled pairs; else members' activity;
    else other (4); -1 for people alone in the frame."""
    gkey = df["frame"].to_numpy() * (len(df) + 1) + group  # one key per (frame, group)
    maj = _majority(gkey[ia], et)
    act = df["activity"].to_numpy()
    act_maj = _majority(gkey[act >= 0], act[act >= 0])
    size = pd.Series(1, index=gkey).groupby(level=0).transform("size").to_numpy()
    typ = pd.Series(gkey).map(maj)
    typ = typ.fillna(pd.Series(gkey).map(act_maj)).fillna(4).to_numpy().astype(np.int8)
    return np.where(size >= 2, typ, -1).astype(np.int8)


def _join_sequences(parts: list[pd.DataFrame], width: int) -> pd.DataFrame:
    """All sequences in one table: global group ids, box centre and bottom, frame uid, velocity."""
    people = pd.concat(parts, ignore_index=True)
    # Global group ids: (sequence, local group) -> 0..G-1.
    people["group"] = pd.factorize(pd.MultiIndex.from_arrays([people["seq"], people["group_local"]]))[0]
    people["cx"] = np.mod(people["x"].to_numpy() + people["w"].to_numpy() / 2, width)  # seam boxes wrap
    people["y_bottom"] = people["y"] + people["h"]
    people = people.sort_values(["seq", "frame", "track"], kind="stable").reset_index(drop=True)
    people["fid"] = pd.factorize(pd.MultiIndex.from_arrays([people["seq"], people["frame"]]), sort=True)[0]
    _add_velocity(people, width)
    return people[_PEOPLE_COLUMNS]


def write_jrdb_layout(people: pd.DataFrame, root: str | Path, source: str,
                      act_every: int = 3, seed: int = 0) -> Path:
    """Write simulated people in the exact JRDB layout under ``root``.

    2D records carry JRDB-Act ``social_group`` in all but every ``act_every``-th sequence (those rely
    on the JRDB-Social H-interaction pairs alone); H-interaction entries form a chain through each
    group plus a few extra edges, so their transitive closure recovers the group; 3D labels are joined
    by label_id and frame stem. A ``GENERATED.json`` marker labels the folder as generated and lists
    the SHA-256 of every label file written, so a marker copied elsewhere or data edited later is caught.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)  # one generator across sequences, in sequence order
    written: dict[str, str] = {}
    for s, df in people.groupby("seq", sort=True):
        with_act = (int(s) % act_every) != act_every - 1 if act_every > 0 else True
        df = df.sort_values(["frame", "group", "track"], kind="stable")
        written.update(_write_sequence(root, generated_sequence_name(int(s)), df, with_act, rng))
    atomic_write_json(root / _MARKER, {"generated": True, "source": source,  # written last
                                       "sequences": int(people["seq"].nunique()), "files": written})
    return root


def generated_sequence_name(s: int) -> str:
    """The name generated sequence ``s`` gets (its label files and its image folder)."""
    return f"gen_seq_{s:03d}"


def _dump(root: Path, rel: str, obj: Any) -> tuple[str, str]:
    """Write one label file; (its path relative to root, the SHA-256 of what is on disk)."""
    path = root / rel
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))  # compact: these files are large
    return rel, _sha256(path)


def _write_sequence(root: Path, name: str, df: pd.DataFrame, with_act: bool,
                    rng: np.random.Generator) -> dict[str, str]:
    """One sequence's 2D, JRDB-Social and 3D label files; df sorted by (frame, group, track). Returns
    each written file (relative to root) -> its SHA-256."""
    keys = np.char.add(np.char.zfill(df["frame"].to_numpy().astype(str), 6), ".jpg")  # [R] image names
    lab = np.char.add("pedestrian:", df["track"].to_numpy().astype(str))               # [R] label ids
    labels2d = _records_2d(df, keys, lab, with_act)
    ea, eb = _interaction_edges(df["frame"].to_numpy(), df["group"].to_numpy(), rng)
    social = _social_records(ea, eb, df["type"].to_numpy(), keys, lab, rng)
    labels3d = _records_3d(df, keys, lab)
    return dict([_dump(root, f"labels/labels_2d_stitched/{name}.json", {"labels": labels2d}),
                 _dump(root, f"labels/labels_2d_activity_social_stitched/{name}.json", {"labels": social}),
                 _dump(root, f"labels/labels_3d/{name}.json", {"labels": labels3d})])


def _records_2d(df: pd.DataFrame, keys: np.ndarray, lab: np.ndarray, with_act: bool) -> dict[str, list]:
    """labels_2d_stitched records by image name; with JRDB-Act social_group and action_label if with_act."""
    box = np.round(df[["x", "y", "w", "h"]].to_numpy(), 2).tolist()
    occ = np.array(OCCLUSION_LEVELS)[df["occlusion"].to_numpy()]
    trunc = np.where(df["truncated"].to_numpy(), "true", "false")
    grp = df["group"].to_numpy()
    cstat = df["cluster_stat"].to_numpy()
    act_name = np.array(["walking", "standing", "talking", "sitting", "moving"])[df["activity"].to_numpy()]
    labels2d: dict[str, list] = {}
    for i in range(len(df)):  # writing JSON is per record by nature; reading is the hot path
        rec = {"label_id": str(lab[i]), "file_id": str(keys[i]), "box": box[i],
               "attributes": {"occlusion": str(occ[i]), "truncated": str(trunc[i]), "interpolated": False,
                              "area": round(box[i][2] * box[i][3], 1), "no_eval": False}}
        if with_act:
            rec["social_group"] = {"cluster_ID": int(grp[i]), "cluster_stat": int(cstat[i])}
            rec["action_label"] = {str(act_name[i]): 1}
        labels2d.setdefault(str(keys[i]), []).append(rec)
    return labels2d


def _interaction_edges(fr: np.ndarray, grp: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """H-interaction edges (ea, eb) as row pairs, rows sorted by (frame, group): a chain through each
    (frame, group) so the closure recovers it, plus ~30% extra pairs from a group's first member to its
    third and later ones."""
    pos = np.arange(len(fr))
    same_next = np.r_[(fr[1:] == fr[:-1]) & (grp[1:] == grp[:-1]), False]
    chain_a, chain_b = pos[same_next], pos[same_next] + 1
    first = np.r_[True, (fr[1:] != fr[:-1]) | (grp[1:] != grp[:-1])]
    gstart = np.maximum.accumulate(np.where(first, pos, 0))  # row of each row's group's first member
    extra = (~first) & (pos - gstart >= 2) & (rng.random(len(fr)) < 0.3)
    return np.r_[chain_a, gstart[extra]], np.r_[chain_b, pos[extra]]


def _social_records(ea: np.ndarray, eb: np.ndarray, typ: np.ndarray, keys: np.ndarray, lab: np.ndarray,
                    rng: np.random.Generator) -> dict[str, list]:
    """JRDB-Social records by image name: each edge's left member lists its partners with the group's
    interaction label ('other' groups get one of the other labels) and a 1..3 annotator count."""
    by_rec: dict[int, list] = {}
    for a, b in zip(ea.tolist(), eb.tolist()):
        t = int(typ[a])
        label = TYPE_NAMES[t] if t < 4 else _OTHER_LABELS[(a + b) % len(_OTHER_LABELS)]
        by_rec.setdefault(a, []).append({"pair": str(lab[b]), "inter_labels": {label: int(rng.integers(1, 4))}})
    social: dict[str, list] = {}
    for a, inter in by_rec.items():
        social.setdefault(str(keys[a]), []).append({"label_id": str(lab[a]), "file_id": str(keys[a]),
                                                    "H-interaction": inter})
    return social


def _records_3d(df: pd.DataFrame, keys: np.ndarray, lab: np.ndarray) -> dict[str, list]:
    """labels_3d records by point-cloud name (the image name's stem + .pcd)."""
    xyz = np.round(df[["x3d", "y3d", "z3d", "rot_z"]].to_numpy(), 3).tolist()
    labels3d: dict[str, list] = {}
    for i in range(len(df)):
        k3 = str(keys[i])[:-4] + ".pcd"
        labels3d.setdefault(k3, []).append({"label_id": str(lab[i]), "box": {
            "cx": xyz[i][0], "cy": xyz[i][1], "cz": xyz[i][2], "l": 0.5, "w": 0.6, "h": 1.7, "rot_z": xyz[i][3]},
            "observation_angle": 0.0, "attributes": {"num_points": 100}})
    return labels3d


def load_scenes(jrdb_root: str | Path | None = None, n_sequences: int = 12, frames_per_sequence: int = 240,
                people_median: float = 20.0, people_mean: float = 25.0, max_people: int = 80,
                seed: int = 0, render_stride: int = 0) -> Scenes:
    """JRDB scenes from ``jrdb_root``; None or "" generates JRDB-like scenes (deterministic for the
    sizes and seed) into a cache folder under ``helpers.core.paths.CACHE`` and loads them with the same loader.

    ``render_stride`` > 0 also draws the generated scenes' stitched panoramas (labelled generated) for the
    frames ``select_keyframes(scenes, render_stride)`` keeps, cached beside the labels; it never changes
    the labels. It is ignored with ``jrdb_root`` (real images are read where they are)."""

    if jrdb_root not in (None, ""):
        root = Path(jrdb_root).expanduser()
        return load_jrdb(root if root.is_absolute() else paths.PROJ_ROOT / root)

    sizes = dict(n_sequences=int(n_sequences), frames_per_sequence=int(frames_per_sequence),
                 people_median=float(people_median), people_mean=float(people_mean), max_people=int(max_people),
                 seed=int(seed), version=4)  # bump when the generator or layout changes
    tag = hashlib.sha1(json.dumps(sizes, sort_keys=True).encode()).hexdigest()[:12]
    root = paths.CACHE / "scenes" / f"jrdb_like_{tag}"
    source = ("generated JRDB-like scenes (not JRDB): " + ", ".join(f"{k}={v}" for k, v in sizes.items()
                                                                   if k != "version"))
    generator_sizes = {k: v for k, v in sizes.items() if k != "version"}
    _ensure_generated_labels(root, generator_sizes, source)
    if int(render_stride) > 0:
        _ensure_panoramas(root, generator_sizes, int(render_stride))
    # Without rendering the scenes are geometry only, even where an earlier run left panoramas in the cache.
    return load_jrdb(root, generated=True, source=source, images=int(render_stride) > 0)


def _ensure_generated_labels(root: Path, sizes: dict[str, Any], source: str) -> None:
    """The generated label files under ``root``, written once (a damaged or old cache folder is rebuilt)."""
    marker = root / _MARKER
    if marker.exists():  # a cache folder missing files (e.g. partly deleted) is rebuilt
        n_files = len(list((root / "labels" / "labels_2d_stitched").glob("*.json")))
        written = _read_marker(marker)
        # Caches from before markers listed their files are rebuilt too (the same data, now verifiable).
        if written.get("sequences") != n_files or not isinstance(written.get("files"), dict):
            shutil.rmtree(root, ignore_errors=True)
    if not marker.exists():
        people, _ = make_generated_people(**sizes)
        tmp = root.with_name(f"{root.name}.building-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_jrdb_layout(people, tmp, source=source, seed=int(sizes["seed"]))
        try:
            tmp.rename(root)  # the finished folder appears in one step
        except OSError:  # another process finished it first
            shutil.rmtree(tmp, ignore_errors=True)


_RENDER_MARKER = "RENDERED.json"


def _ensure_panoramas(root: Path, sizes: dict[str, Any], stride: int) -> None:
    """Stitched panoramas of the keyframes under ``root/images/image_stitched``, drawn once per renderer
    version and stride (the cache key of the labels, plus these); the images folder appears in one step."""
    marker = root / "images" / _RENDER_MARKER
    want = {"generated": True, "renderer_version": RENDERER_VERSION, "stride": stride}
    got = _read_marker(marker)
    if all(got.get(k) == v for k, v in want.items()) and \
            got.get("n_images") == sum(1 for _ in (root / IMAGE_DIR).glob("*/*.jpg")):
        return
    # The people are generated again (deterministic, under a second) rather than read back from the
    # labels: the generator's per-person activity is what the drawing shows.
    people, _ = make_generated_people(**sizes)
    names = {int(s): generated_sequence_name(int(s)) for s in people["seq"].unique()}
    with atomic_folder(root / "images") as tmp:
        n = write_panoramas(people, tmp / IMAGE_DIR.name, names, stride, seed=int(sizes["seed"]))
        atomic_write_json(tmp / _RENDER_MARKER, {**want, "n_images": n, "jpeg_quality": JPEG_QUALITY,
                                                 "source": "generated panoramas drawn from generated labels "
                                                           "(not JRDB images)"})
