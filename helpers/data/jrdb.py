"""The JRDB loader: a JRDB root (the real annotation layout) read into ``Scenes``, with groups, group types,
3D cues and velocities joined across sequences.

`load_scenes` reads a JRDB root, or writes generated JRDB-like scenes in the same layout
(`helpers.data.jrdb_layout`) and reads them back with the same loader, so a user's JRDB folder and the
default data take one path. The label files themselves are parsed in `helpers.data.jrdb_labels`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core import paths
from helpers.core.errors import DataError
from helpers.core.io import atomic_folder, atomic_write_json
from helpers.data.jrdb_labels import parse_2d, parse_3d, parse_social, read_json
from helpers.data.jrdb_layout import (file_sha256, generated_sequence_name,  # noqa: F401 (public here too)
                                      MARKER, write_jrdb_layout)
from helpers.data.panorama import JPEG_QUALITY, RENDERER_VERSION, write_panoramas
from helpers.data.scene_generator import make_generated_people
from helpers.data.scenes import Scenes, WIDTH


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


_GENERATED_SOURCE = "generated JRDB-like scenes"


def _provenance(root: Path, generated: bool | None, source: str | None) -> tuple[bool, str, list[str]]:
    """(generated, source, notes): as given, else from the GENERATED.json marker when it verifies."""
    marker = root / MARKER
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
        obj = read_json(marker)
    except (OSError, DataError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _label_files(root: Path) -> set[str]:
    """Every JSON file under root/labels, as a path relative to root with '/' separators."""
    return {p.relative_to(root).as_posix() for p in (root / "labels").rglob("*.json") if p.is_file()}



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
        if file_sha256(root / rel) != digest:
            return f"{rel} has changed since it was generated"
    return None


def _load_sequence(root: Path, path: Path, s: int) -> tuple[pd.DataFrame, str, tuple[int, int, int, int] | None]:
    """One sequence -> (its people with seq, group_local and type; how its groups were found; its 3D
    match counts (boxes, boxes with 3D cues, 3D records, 3D records matching no box), None without 3D)."""
    df, edges = parse_2d(path)
    social = root / "labels" / "labels_2d_activity_social_stitched" / path.name
    if social.exists():
        edges += parse_social(social)
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
        d3 = parse_3d(p3).drop_duplicates(["frame", "track"])
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
    marker = root / MARKER
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
