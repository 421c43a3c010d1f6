"""Writing scenes in JRDB's label layout (2D stitched labels with JRDB-Act groups, JRDB-Social
H-interaction pairs, 3D boxes) with the GENERATED.json marker that lists every file written and its
SHA-256, so that generated scenes are read back through the same loader as a user's JRDB folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpers.core.io import atomic_write_json, atomic_write_text
from helpers.data.scenes import _OTHER_LABELS, OCCLUSION_LEVELS, TYPE_NAMES

# The marker a generated folder carries (written last): its source and every label file with its SHA-256.
MARKER = "GENERATED.json"


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
    atomic_write_json(root / MARKER, {"generated": True, "source": source,  # written last
                                       "sequences": int(people["seq"].nunique()), "files": written})
    return root


def generated_sequence_name(s: int) -> str:
    """The name generated sequence ``s`` gets (its label files and its image folder)."""
    return f"gen_seq_{s:03d}"


def _dump(root: Path, rel: str, obj: Any) -> tuple[str, str]:
    """Write one label file; (its path relative to root, the SHA-256 of what is on disk)."""
    path = root / rel
    atomic_write_text(path, json.dumps(obj, separators=(",", ":")))  # compact: these files are large
    return rel, file_sha256(path)


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


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
