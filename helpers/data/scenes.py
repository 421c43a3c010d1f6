"""Scenes in 360° panoramas: the flat people table, the panorama constants and the interaction types."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.core.errors import WorkbookError


WIDTH = 3760  # stitched panorama width (px); x wraps modulo this


HEIGHT = 480


FPS = 15


PX_PER_RAD = WIDTH / (2 * math.pi)  # ~598.4 px per radian (1 px ~ 0.0957 deg)


# The five working interaction classes and how JRDB-Social's 20 labels map onto them.
TYPE_NAMES = ("walking together", "standing together", "conversation", "sitting together", "other")


# When one pair carries several labels, the more specific class wins (a conversation while walking
# is a conversation).
_TYPE_PRIORITY = (2, 3, 0, 1, 4)


OCCLUSION_LEVELS = ("Fully_visible", "Mostly_visible", "Severely_occluded", "Fully_occluded")


# JRDB reference statistics (jrdb.md), used by make_scene_stats_table and the generator's defaults.
JRDB_REFERENCE = {
    "people per frame, mean": 24.9,
    "people per frame, median": 20.0,
    "people per frame, max": 80.0,
    "share of groups that are single people": 0.77,
    "share of people alone": 0.54,
    "same-group pairs / all same-frame pairs": 0.049,
    "within-group horizontal gap, median (px)": 62.0,
    "within-group horizontal gap, p95 (px)": 502.0,
    "same-group pairs closer across the seam": 0.023,
    "all pairs kept at 200 px (wrapped)": 0.19,
    "same-group pairs kept at 200 px": 0.82,
    "all pairs kept at 400 px (wrapped)": 0.31,
    "same-group pairs kept at 400 px": 0.93,
    "all pairs kept at 752 px (wrapped)": 0.48,
    "same-group pairs kept at 752 px": 0.974,
    "type share: walking together": 0.469,
    "type share: standing together": 0.337,
    "type share: conversation": 0.088,
    "type share: sitting together": 0.077,
    "type share: other": 0.029,
}


_OTHER_LABELS = ("moving together", "looking at sth together", "holding sth together", "eating together",
                 "going upstairs together", "pointing at sth together", "waving hand together")


def type_of_label(label: str) -> int:
    """Map one JRDB-Social pair label (or a JRDB-Act activity name) to the 5 working classes."""
    s = str(label).strip().lower().replace("_", " ")
    if s.startswith("walking together") or s == "walking":
        return 0
    if s.startswith("standing together") or s == "standing":
        return 1
    if "conversation" in s or s.startswith("talking"):
        return 2
    if s.startswith("sitting together") or s.startswith("sitting"):
        return 3
    return 4


def type_of_labels(labels: Any) -> int:
    """Several labels on one pair: the highest-priority class among them (see _TYPE_PRIORITY)."""
    names = list(labels.keys()) if isinstance(labels, dict) else list(labels or [])
    if not names:
        return 4
    found = {type_of_label(n) for n in names}
    return next(t for t in _TYPE_PRIORITY if t in found)


@dataclass
class Scenes:
    """People in frames. ``people`` has one row per person per frame, sorted by (seq, frame, track):

    seq (int code into ``sequences``), frame (int, the image number), fid (frame uid 0..F-1),
    track (track id), x, y, w, h (raw box, x may spill past the seam), cx (centre modulo width),
    y_bottom, group (global group id; a person alone has a group of one), type (0..4 type of that
    person's group in that frame, -1 alone), occlusion (0..3), truncated, no_eval, vx, vy (px per
    frame, from the track), x3d, y3d, z3d, rot_z (NaN without 3D labels).
    """

    people: pd.DataFrame
    sequences: list[str]
    generated: bool
    source: str
    root: Path | None = None
    width: int = WIDTH
    height: int = HEIGHT
    grouping: dict[str, str] = field(default_factory=dict)  # sequence -> "cluster_ID" | "H-interaction" | "none"
    # What the loader noticed but did not refuse (3D labels that match nothing, an untrusted GENERATED.json
    # marker), as sentences for the notebook and run card; the 3D counts are over the loaded files.
    notes: list[str] = field(default_factory=list)
    n_boxes_with_3d: int = 0  # 2D boxes that got 3D cues (x3d, y3d, z3d, rot_z)
    n_3d_records: int = 0     # 3D records read (one per frame and track)
    n_3d_unmatched: int = 0   # of those, records whose (frame, track) has no 2D box
    # Stitched images (images/image_stitched/<sequence>/<frame>.jpg): their folder when any labelled frame
    # has one, else None, and how many labelled frames have one (0: the data are geometry only).
    image_root: Path | None = None
    n_images: int = 0

    @property
    def n_frames(self) -> int:
        return int(self.people["fid"].max()) + 1 if len(self.people) else 0


def select_keyframes(scenes: Scenes, stride: int) -> Scenes:
    """Keep every ``stride``-th frame of each sequence (JRDB-Act annotates every 15th); velocities
    were already computed from all frames."""
    if stride < 1:
        raise WorkbookError(f"keyframe stride = {stride}: expected an integer >= 1")
    p = scenes.people
    first = p.groupby("seq")["frame"].transform("min")
    keep = ((p["frame"] - first) % stride) == 0
    q = p[keep.to_numpy()].copy()
    q["fid"] = pd.factorize(q["fid"], sort=True)[0]
    return replace(scenes, people=q.reset_index(drop=True))  # every other field (notes included) carries over
