"""A JRDB-like scene generator: people in 360° panoramas with groups, motion and interaction types.

The statistics it aims for are the JRDB reference values in `helpers.data.scenes.JRDB_REFERENCE`.
Everything it makes is labelled generated."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.data.scenes import FPS, HEIGHT, PX_PER_RAD, WIDTH


# Group sizes 1..5+ from JRDB-Act (32,543 groups): 77% singles, then 4,801 / 1,758 / 487 / 460.
_GROUP_SIZE_P = np.array([0.77, 4801 / 32543, 1758 / 32543, 487 / 32543, 460 / 32543])


# Drawn per slot occupant; singles are drawn a little more often because short-lived passers-by
# and people out of view make the visible share of singles lower than the drawn one.
_GROUP_SIZE_DRAW = _GROUP_SIZE_P * np.array([1.08, 1, 1, 1, 1])


_TYPE_P = np.array([0.469, 0.337, 0.088, 0.077, 0.029])


@dataclass(frozen=True)
class SceneSizes:
    n_sequences: int = 12
    frames_per_sequence: int = 240
    people_median: float = 20.0
    people_mean: float = 25.0
    max_people: int = 80
    seed: int = 0


def _sample_group_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    cls = rng.choice(5, size=n, p=_GROUP_SIZE_DRAW / _GROUP_SIZE_DRAW.sum())
    big = 5 + np.minimum(rng.geometric(0.22, size=n) - 1, 23)  # 5..28, mean ~8.5
    return np.where(cls == 4, big, cls + 1)


def make_generated_people(n_sequences: int = 12, frames_per_sequence: int = 240, people_median: float = 20.0,
                          people_mean: float = 25.0, max_people: int = 80, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate JRDB-like scenes in memory.

    Returns (people, groups). ``people``: one row per visible person per frame with seq, frame, track,
    group (global), type (group's class, -1 alone), box x, y, w, h (x may spill past the seam),
    occlusion, truncated, and 3D x3d, y3d, z3d, rot_z (robot frame, noisy). ``groups``: one row per group.
    Groups live on "slots": each sequence keeps about N_s/1.39 slots occupied (N_s lognormal with the
    JRDB median/mean), walkers pass through and are replaced, so counts vary but stay near N_s.
    """
    if n_sequences < 1 or frames_per_sequence < 2:
        raise WorkbookError(f"generator sizes n_sequences={n_sequences}, frames_per_sequence={frames_per_sequence}: "
                            "expected >= 1 and >= 2")
    rng = np.random.default_rng(seed)
    sigma = math.sqrt(max(2 * math.log(people_mean / people_median), 1e-6))
    static_life = min(52.5, frames_per_sequence / FPS)  # static groups outlast short sequences
    life_mean = np.array([9.5, static_life, static_life, static_life, 9.5])  # mean time in view (s), below
    type_p = _TYPE_P / life_mean / (_TYPE_P / life_mean).sum()
    g_rows = []  # per group: seq, start, end, size, type, hotspot flag ...
    gid = 0
    for s in range(n_sequences):
        T = int(frames_per_sequence)
        n_target = float(np.clip(people_median * math.exp(sigma * rng.standard_normal()), 3, 0.8 * max_people))
        n_slots = max(1, int(round(n_target / 1.2)))  # calibrated: ~1.2 people per slot in view
        flow = rng.uniform(-math.pi, math.pi)  # the sequence's main walking direction (and its reverse)
        hot = np.c_[rng.uniform(-math.pi, math.pi, 3), np.exp(rng.normal(math.log(5.0), 0.35, 3))]
        for _ in range(n_slots):
            t = -int(rng.integers(0, 6 * FPS))  # occupants already present at frame 0
            while t < T:
                size = int(_sample_group_sizes(rng, 1)[0])
                if size == 1:
                    typ = int(rng.choice([0, 1, 3, 4], p=[0.5, 0.33, 0.12, 0.05]))  # what a lone person does
                else:  # moving groups stay a shorter time, so they are drawn more often (shares over frames)
                    typ = int(rng.choice(5, p=type_p))
                moving = typ in (0, 4)
                life = int(FPS * (rng.uniform(5, 14) if moving else rng.uniform(15, 90)))
                g_rows.append((gid, s, t, t + life, size, typ, flow, *hot[rng.integers(3)], rng.random() < 0.6))
                gid += 1
                t += life
    G = pd.DataFrame(g_rows, columns=["group", "seq", "start", "end", "size", "atype", "flow", "hot_b", "hot_r",
                                      "in_hot"])
    ng = len(G)
    # Group centre at its mid-life: near one of the sequence's hotspots (crowded places, so neighbours
    # are often close in depth too) or anywhere; range lognormal around 6 m.
    anywhere = rng.uniform(-math.pi, math.pi, ng)
    bearing = np.where(G["in_hot"], G["hot_b"] + rng.normal(0, 0.25, ng), anywhere)
    rng_m = np.where(G["in_hot"], G["hot_r"] * np.exp(rng.normal(0, 0.25, ng)), np.exp(rng.normal(math.log(6.0), 0.5, ng)))
    rng_m = np.clip(rng_m, 2.0, 20.0)
    cX, cY = rng_m * np.cos(bearing), rng_m * np.sin(bearing)
    atype = G["atype"].to_numpy()
    walking = atype == 0
    drifting = atype == 4
    heading = np.where(rng.random(ng) < 0.5, G["flow"], G["flow"] + math.pi) + rng.normal(0, 0.5, ng)
    heading = np.where(drifting, rng.uniform(-math.pi, math.pi, ng), heading)
    speed = np.where(walking, rng.normal(1.25, 0.2, ng), np.where(drifting, rng.uniform(0.1, 0.6, ng), 0.0))
    vX, vY = speed * np.cos(heading), speed * np.sin(heading)
    # Members: offsets in the group's frame (u along heading, v across).
    size = G["size"].to_numpy()
    mg = np.repeat(np.arange(ng), size)  # member -> group
    k = np.arange(len(mg)) - np.repeat(np.cumsum(size) - size, size)  # member index within group
    n = size[mg]
    t_m = atype[mg]
    spacing = np.repeat(np.clip(0.5 * np.exp(rng.normal(0, 0.8, ng)), 0.3, 4.0), size)  # heavy tail: some loose groups
    centred = k - (n - 1) / 2
    ring_r = np.maximum(spacing * n / (2 * math.pi), 0.4)
    ang = 2 * math.pi * k / n + np.repeat(rng.uniform(0, 2 * math.pi, ng), size)
    blob_r = 0.75 * np.sqrt(n) * np.sqrt(rng.random(len(mg)))
    blob_a = rng.uniform(0, 2 * math.pi, len(mg))
    line = (t_m == 0) | (t_m == 3)  # walking side by side, sitting on a bench
    ring = (t_m == 1) | (t_m == 2)
    big = n >= 5
    ou = np.where(line & ~big, rng.normal(0, 0.1, len(mg)), np.where(ring & ~big, ring_r * np.cos(ang), blob_r * np.cos(blob_a)))
    ov = np.where(line & ~big, centred * spacing, np.where(ring & ~big, ring_r * np.sin(ang), blob_r * np.sin(blob_a)))
    hd = heading[mg]
    oX = ou * np.cos(hd) - ov * np.sin(hd)
    oY = ou * np.sin(hd) + ov * np.cos(hd)
    # Orientation: walkers face their heading; conversation faces the group centre; standing and
    # sitting face a shared direction; other: anywhere.
    shared = np.repeat(rng.uniform(-math.pi, math.pi, ng), size)
    face = np.select([t_m == 0, t_m == 2, (t_m == 1) | (t_m == 3)],
                     [hd, np.arctan2(-oY, -oX), shared + rng.normal(0, 0.6, len(mg))],
                     rng.uniform(-math.pi, math.pi, len(mg)))
    face = np.where(n == 1, np.where(t_m == 0, hd, rng.uniform(-math.pi, math.pi, len(mg))), face)
    sitting = t_m == 3
    height_m = np.where(sitting, rng.normal(1.25, 0.06, len(mg)), rng.normal(1.72, 0.08, len(mg)))
    width_m = np.where(sitting, rng.normal(0.68, 0.06, len(mg)), rng.normal(0.62, 0.06, len(mg)))
    sway_a = rng.uniform(0.02, 0.12, len(mg))  # smooth per-person sway (m)
    sway_w = rng.uniform(0.5, 2.0, len(mg)) / FPS
    sway_p = rng.uniform(0, 2 * math.pi, len(mg))
    # Expand members over their visible frames: rows = sum over members of lifetime.
    start = np.maximum(G["start"].to_numpy(), 0)[mg]
    end = np.minimum(G["end"].to_numpy(), frames_per_sequence)[mg]
    life = np.maximum(end - start, 0)
    r = np.repeat(np.arange(len(mg)), life)  # row -> member
    t = start[r] + np.arange(len(r)) - np.repeat(np.cumsum(life) - life, life)
    g = mg[r]
    tmid = (G["start"].to_numpy() + G["end"].to_numpy())[g] / 2
    dt = (t - tmid) / FPS
    X = cX[g] + vX[g] * dt + oX[r] + sway_a[r] * np.sin(sway_w[r] * t + sway_p[r])
    Y = cY[g] + vY[g] * dt + oY[r] + sway_a[r] * np.cos(0.7 * sway_w[r] * t + sway_p[r])
    rho = np.hypot(X, Y)
    theta = np.arctan2(-Y, X)
    cx = WIDTH * (theta / (2 * math.pi) + 0.5)
    h = PX_PER_RAD * height_m[r] / rho * np.exp(rng.normal(0, 0.04, len(r)))
    w = PX_PER_RAD * width_m[r] / rho * np.exp(rng.normal(0, 0.05, len(r)))
    cx = np.mod(cx + rng.normal(0, 0.04, len(r)) * w, WIDTH)
    cam_h = 0.75  # camera height (m): feet below the horizon by cam_h/rho rad
    y_bot = HEIGHT / 2 + PX_PER_RAD * cam_h / rho + rng.normal(0, 0.03, len(r)) * h
    y_top = y_bot - h
    truncated = (y_bot > HEIGHT) | (y_top < 0)
    y_top, y_bot = np.clip(y_top, 0, HEIGHT), np.clip(y_bot, 0, HEIGHT)
    visible = (rho >= 1.5) & (rho <= 25.0) & (y_bot - y_top > 4)
    occ = rng.choice(4, size=len(r), p=[0.55, 0.3, 0.12, 0.03]).astype(np.int8)
    # 3D labels carry annotation noise (so they are a cue, not the answer).
    x3d = X + rng.normal(0, 0.25, len(r))
    y3d = Y + rng.normal(0, 0.25, len(r))
    rot = np.angle(np.exp(1j * (face[r] + rng.normal(0, 0.5, len(r)))))
    people = pd.DataFrame({
        "seq": G["seq"].to_numpy()[g].astype(np.int32), "frame": t.astype(np.int64), "track": r.astype(np.int64),
        "group": g.astype(np.int64), "type": np.where(n[r] >= 2, t_m[r], -1).astype(np.int8),
        "activity": t_m[r].astype(np.int8), "x": cx - w / 2, "y": y_top, "w": w, "h": y_bot - y_top,
        "occlusion": occ, "truncated": truncated, "x3d": x3d, "y3d": y3d, "z3d": rng.normal(0.0, 0.05, len(r)),
        "rot_z": rot, "cluster_stat": np.repeat(rng.integers(1, 4, ng), size)[r],
    })[visible]
    # Cap people per frame: drop whole groups (highest ids first) beyond max_people.
    people = people.sort_values(["seq", "frame", "group", "track"], kind="stable")
    gsize = people.groupby(["seq", "frame", "group"])["track"].transform("size")
    first = ~people.duplicated(["seq", "frame", "group"])
    cum = (gsize.where(first, 0)).groupby([people["seq"], people["frame"]]).cumsum()
    people = people[(cum <= max_people).to_numpy()]
    # Track ids per sequence: 0.. in order of appearance (stable across frames).
    people = people.sort_values(["seq", "frame", "track"], kind="stable").reset_index(drop=True)
    people["track"] = people.groupby("seq")["track"].transform(lambda v: pd.factorize(v)[0]).astype(np.int64)
    G = G.assign(type=np.where(size >= 2, atype, -1))
    return people, G
