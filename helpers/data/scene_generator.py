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


# Coverage of the interaction types (see _cover_types): every sequence holds one group of each type per
# 5 s of its length (at least 1, at most 3); the groups added for it are pairs in view for 2-5 s.
_QUOTA_SECONDS, _QUOTA_MAX, _QUOTA_LIFE_S = 5.0, 3, (2.0, 5.0)


# People in view per slot (_sequence_groups): calibrated so that, with the pairs added for coverage,
# people per frame stay near JRDB's (mean 24.9, median 20) at the default size (20 x 240 frames).
_PEOPLE_PER_SLOT = 1.3


@dataclass(frozen=True)
class SceneSizes:
    n_sequences: int = 12
    frames_per_sequence: int = 240
    people_median: float = 20.0
    people_mean: float = 25.0
    max_people: int = 80
    seed: int = 0


@dataclass(frozen=True)
class _Members:
    """Per-member arrays, one entry per group member [M] (members of group 0 first, then group 1 ...)."""
    group: np.ndarray      # [M] member -> group row
    size: np.ndarray       # [M] their group's size
    activity: np.ndarray   # [M] their group's interaction type (0..4)
    oX: np.ndarray         # [M] offset from the group centre (m, robot frame)
    oY: np.ndarray
    face: np.ndarray       # [M] facing direction (rad)
    height_m: np.ndarray   # [M] body size (m)
    width_m: np.ndarray
    sway_a: np.ndarray     # [M] smooth sway: amplitude (m), angular rate (rad/frame), phase
    sway_w: np.ndarray
    sway_p: np.ndarray


def _sample_group_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    cls = rng.choice(5, size=n, p=_GROUP_SIZE_DRAW / _GROUP_SIZE_DRAW.sum())
    big = 5 + np.minimum(rng.geometric(0.22, size=n) - 1, 23)  # 5..28, mean ~8.5
    return np.where(cls == 4, big, cls + 1)


# Every step below draws from the one generator in turn: the order of the steps (and of the draws
# inside each) is part of the output, so reordering them changes every generated scene.


def make_generated_people(n_sequences: int = 12, frames_per_sequence: int = 240, people_median: float = 20.0,
                          people_mean: float = 25.0, max_people: int = 80, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate JRDB-like scenes in memory.

    Returns (people, groups). ``people``: one row per visible person per frame with seq, frame, track,
    group (global), type (group's class, -1 alone), box x, y, w, h (x may spill past the seam),
    occlusion, truncated, and 3D x3d, y3d, z3d, rot_z (robot frame, noisy). ``groups``: one row per group.
    Groups live on "slots": each sequence keeps about N_s/1.3 slots occupied (N_s lognormal with the
    JRDB median/mean), walkers pass through and are replaced, so counts vary but stay near N_s. Every
    sequence then holds at least ``type_quota(frames_per_sequence)`` groups of each interaction type
    (see _cover_types): more small groups than JRDB has, so that every split can score every type.
    """
    if n_sequences < 1 or frames_per_sequence < 2:
        raise WorkbookError(f"generator sizes n_sequences={n_sequences}, frames_per_sequence={frames_per_sequence}: "
                            "expected >= 1 and >= 2")
    rng = np.random.default_rng(seed)
    G = _layout_groups(rng, n_sequences, frames_per_sequence, people_median, people_mean, max_people)
    cX, cY = _group_centres(rng, G)
    heading, vX, vY = _group_motion(rng, G)
    members = _place_members(rng, G, heading)
    r, t = _expand_over_frames(G, members.group, frames_per_sequence)
    X, Y = _member_positions(G, members, cX, cY, vX, vY, r, t)
    people = _visible_people(rng, G, members, r, t, X, Y)
    people = _number_tracks(_cap_people_per_frame(people, max_people))
    G = G.assign(type=np.where(G["size"].to_numpy() >= 2, G["atype"].to_numpy(), -1))
    return people, G


# ----------------------------------------------------------------------------- groups
def _layout_groups(rng: np.random.Generator, n_sequences: int, frames_per_sequence: int, people_median: float,
                   people_mean: float, max_people: int) -> pd.DataFrame:
    """Every group of every sequence: one row per group with group (global id), seq, start, end (frames;
    start < 0 for those already present at frame 0), size, atype, flow, hot_b, hot_r, in_hot."""
    sigma = math.sqrt(max(2 * math.log(people_mean / people_median), 1e-6))
    static_life = min(52.5, frames_per_sequence / FPS)  # static groups outlast short sequences
    life_mean = np.array([9.5, static_life, static_life, static_life, 9.5])  # mean time in view (s), below
    # Moving groups stay a shorter time, so they are drawn more often (the shares are over frames).
    type_p = _TYPE_P / life_mean / (_TYPE_P / life_mean).sum()
    g_rows: list[tuple] = []  # per group: gid, seq, start, end, size, type, flow, hotspot, hotspot flag
    for s in range(n_sequences):
        g_rows += _sequence_groups(rng, s, len(g_rows), int(frames_per_sequence), sigma, people_median,
                                   max_people, type_p)
    G = pd.DataFrame(g_rows, columns=["group", "seq", "start", "end", "size", "atype", "flow", "hot_b", "hot_r",
                                      "in_hot"])
    return _cover_types(rng, G, int(frames_per_sequence))


def _sequence_groups(rng: np.random.Generator, s: int, gid0: int, T: int, sigma: float, people_median: float,
                     max_people: int, type_p: np.ndarray) -> list[tuple]:
    """One sequence's groups: its crowd size, main walking direction and three hotspots, then slots
    whose occupants follow one another until the sequence ends."""
    n_target = float(np.clip(people_median * math.exp(sigma * rng.standard_normal()), 3, 0.8 * max_people))
    n_slots = max(1, int(round(n_target / _PEOPLE_PER_SLOT)))
    flow = rng.uniform(-math.pi, math.pi)  # the sequence's main walking direction (and its reverse)
    hot = np.c_[rng.uniform(-math.pi, math.pi, 3), np.exp(rng.normal(math.log(5.0), 0.35, 3))]  # [3, (bearing, range)]
    rows: list[tuple] = []
    for _ in range(n_slots):
        t = -int(rng.integers(0, 6 * FPS))  # occupants already present at frame 0
        while t < T:
            size, typ, life = _draw_occupant(rng, type_p)
            rows.append((gid0 + len(rows), s, t, t + life, size, typ, flow, *hot[rng.integers(3)], rng.random() < 0.6))
            t += life
    return rows


def _draw_occupant(rng: np.random.Generator, type_p: np.ndarray) -> tuple[int, int, int]:
    """One slot occupant: (group size, interaction type, frames in view)."""
    size = int(_sample_group_sizes(rng, 1)[0])
    if size == 1:
        typ = int(rng.choice([0, 1, 3, 4], p=[0.5, 0.33, 0.12, 0.05]))  # what a lone person does
    else:
        typ = int(rng.choice(5, p=type_p))
    moving = typ in (0, 4)
    life = int(FPS * (rng.uniform(5, 14) if moving else rng.uniform(15, 90)))
    return size, typ, life


def type_quota(frames_per_sequence: int) -> int:
    """Groups of each interaction type every generated sequence holds at least (see _cover_types):
    one per ``_QUOTA_SECONDS`` of sequence, at least 1 and at most ``_QUOTA_MAX``."""
    return int(min(_QUOTA_MAX, max(1, frames_per_sequence // int(_QUOTA_SECONDS * FPS))))


def _cover_types(rng: np.random.Generator, G: pd.DataFrame, T: int) -> pd.DataFrame:
    """Every sequence gets at least ``type_quota(T)`` groups (2+ people, in view) of each interaction type.

    At JRDB's rates a 16 s sequence holds 0.1-0.5 conversation, sitting or "other" groups, so a split
    of a few sequences could not score the type head per class (and adding sequences would multiply
    the pairs). Where a type falls short, pairs of people of that type join the sequence for 2-5 s
    at one of its hotspots. Being pairs and brief, they add few person pairs: big groups (5+, mostly
    walking or standing) still hold most pairs, so the pair shares of the types stay near JRDB's,
    while the share of people alone falls (the slots are calibrated with them: _PEOPLE_PER_SLOT)."""
    q = type_quota(T)
    size, atype, seq = G["size"].to_numpy(), G["atype"].to_numpy(), G["seq"].to_numpy()
    n_seq, n_types = int(seq.max()) + 1, len(_TYPE_P)
    seen = np.minimum(G["end"].to_numpy(), T) - np.maximum(G["start"].to_numpy(), 0) >= min(4 * FPS, T // 2)
    multi = seen & (size >= 2)
    have = np.zeros((n_seq, n_types), np.int64)
    np.add.at(have, (seq[multi], atype[multi]), 1)
    need = np.maximum(q - have, 0).ravel()                                   # [S * K] groups to add
    new_seq = np.repeat(np.arange(n_seq * n_types) // n_types, need)
    new_type = np.repeat(np.tile(np.arange(n_types), n_seq), need)
    n = len(new_seq)
    life = np.minimum(rng.uniform(*_QUOTA_LIFE_S, n) * FPS, T).astype(np.int64)
    start = (rng.random(n) * (T - life + 1)).astype(np.int64)
    # Flow and hotspots are per sequence: copy them from a random group of the same sequence.
    first = np.searchsorted(seq, np.arange(n_seq))
    per_seq = np.diff(np.r_[first, len(seq)])
    donor = first[new_seq] + (rng.random(n) * per_seq[new_seq]).astype(np.int64)
    added = G.iloc[donor].assign(seq=new_seq, start=start, end=start + life, size=2, atype=new_type,
                                 in_hot=rng.random(n) < 0.6)
    out = pd.concat([G, added], ignore_index=True).sort_values(["seq", "start"], kind="stable")
    return out.reset_index(drop=True).assign(group=lambda d: np.arange(len(d)))


def _group_centres(rng: np.random.Generator, G: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Group centre at its mid-life [G] (m): near one of the sequence's hotspots (crowded places, so
    neighbours are often close in depth too) or anywhere; range lognormal around 6 m."""
    ng = len(G)
    anywhere = rng.uniform(-math.pi, math.pi, ng)
    bearing = np.where(G["in_hot"], G["hot_b"] + rng.normal(0, 0.25, ng), anywhere)
    rng_m = np.where(G["in_hot"], G["hot_r"] * np.exp(rng.normal(0, 0.25, ng)), np.exp(rng.normal(math.log(6.0), 0.5, ng)))
    rng_m = np.clip(rng_m, 2.0, 20.0)
    return rng_m * np.cos(bearing), rng_m * np.sin(bearing)


def _group_motion(rng: np.random.Generator, G: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(heading, vX, vY) per group [G]: walkers go with or against the sequence's flow at ~1.25 m/s,
    'other' groups drift slowly anywhere, the rest stand still."""
    ng = len(G)
    atype = G["atype"].to_numpy()
    walking = atype == 0
    drifting = atype == 4
    heading = np.where(rng.random(ng) < 0.5, G["flow"], G["flow"] + math.pi) + rng.normal(0, 0.5, ng)
    heading = np.where(drifting, rng.uniform(-math.pi, math.pi, ng), heading)
    speed = np.where(walking, rng.normal(1.25, 0.2, ng), np.where(drifting, rng.uniform(0.1, 0.6, ng), 0.0))
    return heading, speed * np.cos(heading), speed * np.sin(heading)


# ----------------------------------------------------------------------------- members
def _place_members(rng: np.random.Generator, G: pd.DataFrame, heading: np.ndarray) -> _Members:
    """Every group member: where they stand in the group, which way they face, body size and sway."""
    size = G["size"].to_numpy()
    mg = np.repeat(np.arange(len(G)), size)  # member -> group
    k = np.arange(len(mg)) - np.repeat(np.cumsum(size) - size, size)  # member index within group
    n = size[mg]
    t_m = G["atype"].to_numpy()[mg]
    hd = heading[mg]
    oX, oY = _member_offsets(rng, size, k, n, t_m, hd)
    face = _member_facing(rng, size, n, t_m, hd, oX, oY)
    return _Members(mg, n, t_m, oX, oY, face, *_member_bodies(rng, t_m))


def _member_offsets(rng: np.random.Generator, size: np.ndarray, k: np.ndarray, n: np.ndarray, t_m: np.ndarray,
                    hd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets from the group centre [M] (m, robot frame). Laid out in the group's frame (u along the
    heading, v across): small walking or sitting groups in a line, small standing or talking groups
    on a ring, big groups (5+) in a blob; then rotated by the heading."""
    ng, nm = len(size), len(n)
    spacing = np.repeat(np.clip(0.5 * np.exp(rng.normal(0, 0.8, ng)), 0.3, 4.0), size)  # heavy tail: some loose groups
    centred = k - (n - 1) / 2
    ring_r = np.maximum(spacing * n / (2 * math.pi), 0.4)
    ang = 2 * math.pi * k / n + np.repeat(rng.uniform(0, 2 * math.pi, ng), size)
    blob_r = 0.75 * np.sqrt(n) * np.sqrt(rng.random(nm))
    blob_a = rng.uniform(0, 2 * math.pi, nm)
    line = (t_m == 0) | (t_m == 3)  # walking side by side, sitting on a bench
    ring = (t_m == 1) | (t_m == 2)
    big = n >= 5
    ou = np.where(line & ~big, rng.normal(0, 0.1, nm), np.where(ring & ~big, ring_r * np.cos(ang), blob_r * np.cos(blob_a)))
    ov = np.where(line & ~big, centred * spacing, np.where(ring & ~big, ring_r * np.sin(ang), blob_r * np.sin(blob_a)))
    return ou * np.cos(hd) - ov * np.sin(hd), ou * np.sin(hd) + ov * np.cos(hd)


def _member_facing(rng: np.random.Generator, size: np.ndarray, n: np.ndarray, t_m: np.ndarray, hd: np.ndarray,
                   oX: np.ndarray, oY: np.ndarray) -> np.ndarray:
    """Facing direction [M] (rad): walkers face their heading; conversation faces the group centre;
    standing and sitting face a shared direction; other, and people alone who do not walk: anywhere."""
    nm = len(n)
    shared = np.repeat(rng.uniform(-math.pi, math.pi, len(size)), size)
    face = np.select([t_m == 0, t_m == 2, (t_m == 1) | (t_m == 3)],
                     [hd, np.arctan2(-oY, -oX), shared + rng.normal(0, 0.6, nm)],
                     rng.uniform(-math.pi, math.pi, nm))
    return np.where(n == 1, np.where(t_m == 0, hd, rng.uniform(-math.pi, math.pi, nm)), face)


def _member_bodies(rng: np.random.Generator, t_m: np.ndarray) -> tuple[np.ndarray, ...]:
    """(height_m, width_m, sway_a, sway_w, sway_p) [M]: sitting people are shorter and a little wider;
    each person sways smoothly (amplitude in m, rate in rad/frame, phase)."""
    nm = len(t_m)
    sitting = t_m == 3
    height_m = np.where(sitting, rng.normal(1.25, 0.06, nm), rng.normal(1.72, 0.08, nm))
    width_m = np.where(sitting, rng.normal(0.68, 0.06, nm), rng.normal(0.62, 0.06, nm))
    sway_a = rng.uniform(0.02, 0.12, nm)
    sway_w = rng.uniform(0.5, 2.0, nm) / FPS
    sway_p = rng.uniform(0, 2 * math.pi, nm)
    return height_m, width_m, sway_a, sway_w, sway_p


# ----------------------------------------------------------------------------- per frame
def _expand_over_frames(G: pd.DataFrame, mg: np.ndarray, frames_per_sequence: int) -> tuple[np.ndarray, np.ndarray]:
    """(r, t): one row per member per frame their group is in view [R = sum of lifetimes]: r is the
    member, t the frame (members in order, each over consecutive frames)."""
    start = np.maximum(G["start"].to_numpy(), 0)[mg]
    end = np.minimum(G["end"].to_numpy(), frames_per_sequence)[mg]
    life = np.maximum(end - start, 0)
    r = np.repeat(np.arange(len(mg)), life)  # row -> member
    t = start[r] + np.arange(len(r)) - np.repeat(np.cumsum(life) - life, life)
    return r, t


def _member_positions(G: pd.DataFrame, m: _Members, cX: np.ndarray, cY: np.ndarray, vX: np.ndarray,
                      vY: np.ndarray, r: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground position (X, Y) of each row [R] (m): the group centre moving at its velocity (at its
    centre at mid-life), plus the member's offset and sway."""
    g = m.group[r]
    tmid = (G["start"].to_numpy() + G["end"].to_numpy())[g] / 2
    dt = (t - tmid) / FPS
    X = cX[g] + vX[g] * dt + m.oX[r] + m.sway_a[r] * np.sin(m.sway_w[r] * t + m.sway_p[r])
    Y = cY[g] + vY[g] * dt + m.oY[r] + m.sway_a[r] * np.cos(0.7 * m.sway_w[r] * t + m.sway_p[r])
    return X, Y


def _project_boxes(rng: np.random.Generator, X: np.ndarray, Y: np.ndarray, height_m: np.ndarray,
                   width_m: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Panorama boxes of people at (X, Y) [R]: ({x, y, w, h, truncated}, visible). Box size falls off
    with range, with a little label noise; boxes are clipped to the image height, not to the seam."""
    nr = len(X)
    rho = np.hypot(X, Y)
    theta = np.arctan2(-Y, X)
    cx = WIDTH * (theta / (2 * math.pi) + 0.5)
    h = PX_PER_RAD * height_m / rho * np.exp(rng.normal(0, 0.04, nr))
    w = PX_PER_RAD * width_m / rho * np.exp(rng.normal(0, 0.05, nr))
    cx = np.mod(cx + rng.normal(0, 0.04, nr) * w, WIDTH)
    cam_h = 0.75  # camera height (m): feet below the horizon by cam_h/rho rad
    y_bot = HEIGHT / 2 + PX_PER_RAD * cam_h / rho + rng.normal(0, 0.03, nr) * h
    y_top = y_bot - h
    truncated = (y_bot > HEIGHT) | (y_top < 0)
    y_top, y_bot = np.clip(y_top, 0, HEIGHT), np.clip(y_bot, 0, HEIGHT)
    visible = (rho >= 1.5) & (rho <= 25.0) & (y_bot - y_top > 4)
    return {"x": cx - w / 2, "y": y_top, "w": w, "h": y_bot - y_top, "truncated": truncated}, visible


def _annotations(rng: np.random.Generator, X: np.ndarray, Y: np.ndarray, face: np.ndarray) -> dict[str, np.ndarray]:
    """Occlusion level and 3D labels [R]; the 3D labels carry annotation noise (so they are a cue,
    not the answer)."""
    nr = len(X)
    occ = rng.choice(4, size=nr, p=[0.55, 0.3, 0.12, 0.03]).astype(np.int8)
    x3d = X + rng.normal(0, 0.25, nr)
    y3d = Y + rng.normal(0, 0.25, nr)
    rot = np.angle(np.exp(1j * (face + rng.normal(0, 0.5, nr))))
    return {"occlusion": occ, "x3d": x3d, "y3d": y3d, "rot_z": rot, "z3d": rng.normal(0.0, 0.05, nr)}


def _visible_people(rng: np.random.Generator, G: pd.DataFrame, m: _Members, r: np.ndarray, t: np.ndarray,
                    X: np.ndarray, Y: np.ndarray) -> pd.DataFrame:
    """The people table: one row per member per frame in view, boxes and labels, rows out of view dropped."""
    box, visible = _project_boxes(rng, X, Y, m.height_m[r], m.width_m[r])
    ann = _annotations(rng, X, Y, m.face[r])
    cluster_stat = np.repeat(rng.integers(1, 4, len(G)), G["size"].to_numpy())[r]  # JRDB-Act's per-group field
    g = m.group[r]
    people = pd.DataFrame({
        "seq": G["seq"].to_numpy()[g].astype(np.int32), "frame": t.astype(np.int64), "track": r.astype(np.int64),
        "group": g.astype(np.int64), "type": np.where(m.size[r] >= 2, m.activity[r], -1).astype(np.int8),
        "activity": m.activity[r].astype(np.int8), "x": box["x"], "y": box["y"], "w": box["w"], "h": box["h"],
        "occlusion": ann["occlusion"], "truncated": box["truncated"], "x3d": ann["x3d"], "y3d": ann["y3d"],
        "z3d": ann["z3d"], "rot_z": ann["rot_z"], "cluster_stat": cluster_stat,
    })
    return people[visible]


def _cap_people_per_frame(people: pd.DataFrame, max_people: int) -> pd.DataFrame:
    """At most max_people per frame: drop whole groups (highest ids first) beyond it."""
    people = people.sort_values(["seq", "frame", "group", "track"], kind="stable")
    gsize = people.groupby(["seq", "frame", "group"])["track"].transform("size")
    first = ~people.duplicated(["seq", "frame", "group"])
    cum = (gsize.where(first, 0)).groupby([people["seq"], people["frame"]]).cumsum()  # people up to this group
    return people[(cum <= max_people).to_numpy()]


def _number_tracks(people: pd.DataFrame) -> pd.DataFrame:
    """Track ids per sequence: 0.. in order of appearance (stable across frames)."""
    people = people.sort_values(["seq", "frame", "track"], kind="stable").reset_index(drop=True)
    people["track"] = people.groupby("seq")["track"].transform(lambda v: pd.factorize(v)[0]).astype(np.int64)
    return people
