"""The stage-1/2 scene pair datasets: per-person cue vectors, pair geometry, labels, split by sequence."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_folder, atomic_savez, atomic_write_json
from helpers.data.pair_sampling import PairSample
from helpers.data.scenes import FPS, Scenes, TYPE_NAMES, WIDTH


PERSON_FEATURES = ("bearing_sin", "bearing_cos", "y_bottom", "log_w", "log_h", "aspect_h_over_w", "vx_rel",
                   "vy_rel", "speed_rel", "log_range_3d", "facing_rel_sin", "facing_rel_cos", "has_3d",
                   "occlusion", "truncated")


# Groups of each interaction type a split should hold for the type head to be scored per class.
MIN_GROUPS_PER_CLASS = 10


PAIR_FEATURES = ("dx_signed_rel", "dx_abs_rel", "dx_abs_px", "dy_bottom_rel", "log_h_ratio", "dvx_rel", "dv_abs_rel",
                 "motion_cos", "dist_3d", "facing_a_to_b", "facing_b_to_a", "facing_cos", "seam_crossed")


def make_person_cues(people: pd.DataFrame, width: float = WIDTH, height: float = 480.0) -> np.ndarray:
    """Per-person cue vectors [N, len(PERSON_FEATURES)] float32: position, box size and shape
    (sitting people are shorter), motion over frames (in body widths per second), 3D range and
    facing relative to the line of sight (zeros where there are no 3D labels)."""
    cx, w, h = people["cx"].to_numpy(), people["w"].to_numpy(), people["h"].to_numpy()
    w_safe, h_safe = np.maximum(w, 1.0), np.maximum(h, 1.0)
    theta = 2 * math.pi * (cx / width - 0.5)
    vx = people["vx"].to_numpy() * FPS / w_safe
    vy = people["vy"].to_numpy() * FPS / h_safe
    X, Y, rot = people["x3d"].to_numpy(), people["y3d"].to_numpy(), people["rot_z"].to_numpy()
    has3 = np.isfinite(X) & np.isfinite(Y) & np.isfinite(rot)
    rng_m = np.where(has3, np.hypot(np.nan_to_num(X), np.nan_to_num(Y)), 1.0)
    rel = np.where(has3, np.nan_to_num(rot) - np.arctan2(np.nan_to_num(Y), np.nan_to_num(X)), 0.0)
    f = np.stack([np.sin(theta), np.cos(theta), people["y_bottom"].to_numpy() / height, np.log(w_safe / 100),
                  np.log(h_safe / 100), h_safe / w_safe, vx, vy, np.hypot(vx, vy), np.where(has3, np.log(rng_m), 0.0),
                  np.where(has3, np.sin(rel), 0.0), np.where(has3, np.cos(rel), 0.0), has3.astype(float),
                  people["occlusion"].to_numpy() / 3.0, people["truncated"].to_numpy().astype(float)], axis=1)
    return f.astype(np.float32)


def make_pair_features(people: pd.DataFrame, i: np.ndarray, j: np.ndarray, width: float = WIDTH) -> np.ndarray:
    """Pair-level relative geometry [P, len(PAIR_FEATURES)] float32 (wrapped dx, depth and motion
    similarity, 3D distance and mutual facing where 3D labels exist)."""
    cx, w, h = people["cx"].to_numpy(), people["w"].to_numpy(), people["h"].to_numpy()
    yb, vx, vy = people["y_bottom"].to_numpy(), people["vx"].to_numpy(), people["vy"].to_numpy()
    X, Y, rot = people["x3d"].to_numpy(), people["y3d"].to_numpy(), people["rot_z"].to_numpy()
    maxw = np.maximum(np.maximum(w[i], w[j]), 1.0)
    meanw = np.maximum((w[i] + w[j]) / 2, 1.0)
    maxh = np.maximum(np.maximum(h[i], h[j]), 1.0)
    raw = cx[j] - cx[i]
    dx = (raw + width / 2) % width - width / 2  # signed, wrapped into [-W/2, W/2)
    dvx = (vx[j] - vx[i]) * FPS / meanw
    dvy = (vy[j] - vy[i]) * FPS / meanw
    sa, sb = np.hypot(vx[i], vy[i]), np.hypot(vx[j], vy[j])
    motion_cos = np.where((sa > 0) & (sb > 0), (vx[i] * vx[j] + vy[i] * vy[j]) / np.maximum(sa * sb, 1e-9), 0.0)
    has3 = np.isfinite(X[i]) & np.isfinite(X[j]) & np.isfinite(rot[i]) & np.isfinite(rot[j])
    Xa, Ya, Xb, Yb = (np.nan_to_num(v) for v in (X[i], Y[i], X[j], Y[j]))
    ra, rb = np.nan_to_num(rot[i]), np.nan_to_num(rot[j])
    ang_ab = np.arctan2(Yb - Ya, Xb - Xa)
    f = np.stack([dx / maxw, np.abs(dx) / maxw, np.abs(dx) / 100, (yb[j] - yb[i]) / maxh,
                  np.log(np.maximum(h[j], 1) / np.maximum(h[i], 1)), dvx, np.hypot(dvx, dvy), motion_cos,
                  np.where(has3, np.hypot(Xb - Xa, Yb - Ya), 0.0), np.where(has3, np.cos(ra - ang_ab), 0.0),
                  np.where(has3, np.cos(rb - ang_ab - math.pi), 0.0), np.where(has3, np.cos(ra - rb), 0.0),
                  (np.abs(raw) > width / 2).astype(float)], axis=1)
    return f.astype(np.float32)


def make_sequence_split(n_sequences: int, val_fraction: float, test_fraction: float, seed: int,
                        type_counts: np.ndarray | None = None, tries: int = 300,
                        group_counts: np.ndarray | None = None, min_groups: int = MIN_GROUPS_PER_CLASS) -> np.ndarray:
    """Split index (0 train, 1 val, 2 test) per sequence; no sequence is in two splits.

    With ``type_counts`` ([S, K] pairs of each class per sequence) it draws ``tries`` random
    assignments (deterministic for the seed) and keeps the one leaving the fewest (split, class)
    cells empty, then (with ``group_counts``, [S, C] groups of each interaction type per sequence) the
    one with the smallest shortfall below ``min_groups`` groups per (split, type), then the one closest
    to the target shares of pairs: a class missing from the validation or test split cannot be
    evaluated, and one held by a few groups can only be evaluated on those few."""
    if n_sequences < 3:
        raise WorkbookError(f"{n_sequences} sequences: a split by sequence needs at least 3 (train, val, test)")
    n_test = min(max(1, int(round(test_fraction * n_sequences))), n_sequences - 2)
    n_val = min(max(1, int(round(val_fraction * n_sequences))), n_sequences - 1 - n_test)
    rng = np.random.default_rng(seed)
    target = np.array([1 - val_fraction - test_fraction, val_fraction, test_fraction])
    best, best_score = None, None
    for _ in range(tries if type_counts is not None else 1):
        perm = rng.permutation(n_sequences)
        split = np.zeros(n_sequences, np.int64)
        split[perm[:n_test]] = 2
        split[perm[n_test:n_test + n_val]] = 1
        if type_counts is None:
            return split
        per = np.stack([type_counts[split == s].sum(0) for s in range(3)])       # [3, K]
        empty = int((per[:, type_counts.sum(0) > 0] == 0).sum())
        short = 0
        if group_counts is not None:
            groups = np.stack([group_counts[split == s].sum(0) for s in range(3)])  # [3, C]
            short = int(np.maximum(min_groups - groups[:, group_counts.sum(0) > 0], 0).sum())
        share = per.sum(1) / max(per.sum(), 1)
        score = (empty, short, float(np.abs(share - target).sum()))
        if best_score is None or score < best_score:
            best, best_score = split, score
    return best


# Fewer sequences than this cannot give train, val and test a sequence each: they are split by frame blocks.
MIN_SEQUENCES_BY_SEQUENCE = 3


def make_split_method(scenes: Scenes) -> str:
    """"by_sequence" (no sequence in two splits) with 3 or more sequences, else "by_frame_block"
    (contiguous blocks of frames within each sequence, a gap of keyframes between them)."""
    return "by_sequence" if len(scenes.sequences) >= MIN_SEQUENCES_BY_SEQUENCE else "by_frame_block"


class TooShortToSplit(WorkbookError):
    """Too few sequences to split by sequence, and every one too short to cut into frame blocks."""


def make_frame_block_split(seq: np.ndarray, frame: np.ndarray, val_fraction: float, test_fraction: float,
                           gap: int = 1, all_train_if_short: bool = False) -> np.ndarray:
    """Split index per row [R] (0 train, 1 val, 2 test, -1 left out): each sequence's distinct frames, in
    time order, become a train block, ``gap`` frames left out, a val block, ``gap`` left out, a test block,
    so frames of two splits are at least gap + 1 keyframe intervals apart. A sequence too short for that
    (fewer than 3 + 2 * gap frames) goes to train whole; if every sequence is that short, TooShortToSplit
    (or, with ``all_train_if_short``, every row in train: what the sampling report counts, never written)."""
    seq, frame = np.asarray(seq, np.int64), np.asarray(frame, np.int64)
    keys = np.unique(np.c_[seq, frame], axis=0)                         # distinct (seq, frame), sorted
    first = np.r_[True, keys[1:, 0] != keys[:-1, 0]] if len(keys) else np.zeros(0, bool)
    start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
    rank = np.arange(len(keys)) - start                                 # frame's position in its sequence
    n_frames = np.bincount(np.cumsum(first) - 1)[np.cumsum(first) - 1]  # frames of its sequence, per key
    usable = n_frames - 2 * gap
    if not (usable >= 3).any():
        if all_train_if_short:
            return np.zeros(len(seq), np.int64)
        raise TooShortToSplit(
            f"{len(np.unique(seq))} sequence(s) with at most {int(n_frames.max(initial=0))} frame(s): a split by "
            f"frame blocks needs a sequence with at least {3 + 2 * gap} frames (train, {gap} left out, val, "
            f"{gap} left out, test), and a split by sequence needs {MIN_SEQUENCES_BY_SEQUENCE} sequences")
    n_test = np.minimum(np.maximum(1, np.round(test_fraction * usable)), usable - 2).astype(np.int64)
    n_val = np.minimum(np.maximum(1, np.round(val_fraction * usable)), usable - 1 - n_test).astype(np.int64)
    n_train = usable - n_val - n_test
    split = np.select([rank < n_train, rank < n_train + gap, rank < n_train + gap + n_val,
                       rank < n_train + 2 * gap + n_val], [0, -1, 1, -1], 2)
    split = np.where(usable >= 3, split, 0)
    at = np.searchsorted(keys[:, 0] * (int(frame.max(initial=0)) + 1) + keys[:, 1],
                         seq * (int(frame.max(initial=0)) + 1) + frame)
    return split[at]


def make_scene_pair_dataset(scenes: Scenes, sample: PairSample, val_fraction: float = 0.2,
                            test_fraction: float = 0.2, seed: int = 0, all_train_if_short: bool = False
                            ) -> dict[str, dict[str, np.ndarray]]:
    """The stage-1/2 pair datasets: per split a dict of arrays (xa, xb [N, F] person cues, pair [N, G],
    y, type (0..4, -1 for negatives), seq, frame, track_a, track_b, ida, idb (global person ids
    = seq * 1e6 + track)), split by sequence, choosing among random sequence splits one that leaves
    no class missing from a split and at least ``MIN_GROUPS_PER_CLASS`` groups of each interaction
    type in every split where possible. With fewer than 3 sequences (``make_split_method``) the split
    is by frame blocks within each sequence instead, and pairs in the frames left out between blocks are dropped."""
    p = scenes.people
    cues = make_person_cues(p, scenes.width, scenes.height)
    i, j = sample.i, sample.j
    seq = p["seq"].to_numpy().astype(np.int64)
    track = p["track"].to_numpy().astype(np.int64)
    typ = np.where(sample.y == 1, p["type"].to_numpy()[i], -1).astype(np.int64)
    n_seq = len(scenes.sequences)
    if make_split_method(scenes) == "by_sequence":
        # Pairs per (sequence, class), with negatives as a class of their own: [S, 6].
        counts = np.zeros((n_seq, len(TYPE_NAMES) + 1), np.int64)
        np.add.at(counts, (seq[i], typ + 1), 1)
        split_of_seq = make_sequence_split(n_seq, val_fraction, test_fraction, seed, counts,
                                           group_counts=make_type_group_counts(scenes, sample))
        split = split_of_seq[seq[i]]
    else:
        split = make_frame_block_split(seq, p["frame"].to_numpy(), val_fraction, test_fraction,
                                       all_train_if_short=all_train_if_short)[i]
    arrays = {"xa": cues[i], "xb": cues[j], "y": sample.y.astype(np.int64),
              "pair": make_pair_features(p, i, j, scenes.width), "type": typ, "seq": seq[i],
              "frame": p["frame"].to_numpy()[i].astype(np.int64), "track_a": track[i], "track_b": track[j],
              "ida": seq[i] * 1_000_000 + track[i], "idb": seq[j] * 1_000_000 + track[j]}
    return {name: {k: v[split == s] for k, v in arrays.items()} for s, name in enumerate(("train", "val", "test"))}


def make_type_group_counts(scenes: Scenes, sample: PairSample, keep: np.ndarray | None = None) -> np.ndarray:
    """Groups [S, C] of each interaction type per sequence that have at least one positive pair in the
    sample (the independent units the stage-2 type head is scored on, rather than pairs). A group is
    followed over time through its members' tracks (``make_track_groups``), so a group seen in many
    frames counts once, also where group ids are per frame (JRDB-Social's pairs without cluster ids).
    ``keep`` [P] (optional) counts only those sampled pairs (e.g. one split's frame blocks)."""
    p = scenes.people
    comp = make_track_groups(p)
    pos = sample.i[(sample.y == 1) & (True if keep is None else np.asarray(keep, bool))]
    typ = p["type"].to_numpy()[pos].astype(np.int64)
    seq = p["seq"].to_numpy()[pos].astype(np.int64)
    ok = typ >= 0
    key = np.unique(np.c_[comp[pos][ok], typ[ok], seq[ok]], axis=0)       # one row per (group, type)
    out = np.zeros((len(scenes.sequences), len(TYPE_NAMES)), np.int64)
    np.add.at(out, (key[:, 2], key[:, 1]), 1)
    return out


def make_track_groups(people: pd.DataFrame) -> np.ndarray:
    """Per row, a group id that holds over time: people (sequence, track) who share a group in any
    frame are joined, and the connected sets of people are the groups."""
    ident = pd.factorize(pd.MultiIndex.from_arrays([people["seq"], people["track"]]))[0]
    order = np.lexsort((people["group"].to_numpy(), people["fid"].to_numpy()))
    fg = people["fid"].to_numpy()[order] * (int(people["group"].max()) + 1) + people["group"].to_numpy()[order]
    link = np.flatnonzero(fg[1:] == fg[:-1])                 # next member of the same (frame, group): a chain
    n = int(ident.max()) + 1 if len(ident) else 0
    graph = coo_matrix((np.ones(len(link)), (ident[order][link], ident[order][link + 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1][ident]


def write_pair_dataset(ds: dict[str, dict[str, np.ndarray]], folder: str | Path, meta: dict[str, Any]) -> Path:
    """Write train.npz / val.npz / test_public.npz and meta.json; the folder appears in one step."""

    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        for name, fname in (("train", "train.npz"), ("val", "val.npz"), ("test", "test_public.npz")):
            atomic_savez(tmp / fname, **ds[name])
        atomic_write_json(tmp / "meta.json", meta)
    return folder


def evaluate_split_leakage(ds: dict[str, dict[str, np.ndarray]], split_method: str = "by_sequence"
                           ) -> dict[str, Any]:
    """What a split by sequence must keep apart, checked on the written arrays: sequences and person
    ids (ida/idb) shared between each two splits, with how many of each every split holds. ``passed``
    is True only when nothing is shared. (In real JRDB one person could walk through two sequences
    under two track ids: no label links them, so that cannot be checked.) A split by frame blocks
    keeps frames apart, not sequences or people: there ``passed`` means no frame is in two splits, and
    the check adds the frames shared and the smallest frame distance between two splits of a sequence."""
    if split_method == "by_frame_block":
        return _frame_block_leakage(ds)
    seqs = {k: np.unique(a["seq"]) for k, a in ds.items()}
    ids = {k: np.unique(np.r_[a["ida"], a["idb"]]) for k, a in ds.items()}
    pairs = [(a, b) for n, a in enumerate(ds) for b in list(ds)[n + 1:]]
    shared_seq = {f"{a}-{b}": int(np.intersect1d(seqs[a], seqs[b]).size) for a, b in pairs}
    shared_ids = {f"{a}-{b}": int(np.intersect1d(ids[a], ids[b]).size) for a, b in pairs}
    return {"compared": "sequence indices and person ids (sequence * 1,000,000 + track) of every pair, "
                        "between each two splits",
            "sequences_per_split": {k: int(v.size) for k, v in seqs.items()},
            "person_ids_per_split": {k: int(v.size) for k, v in ids.items()},
            "sequences_shared": shared_seq, "person_ids_shared": shared_ids,
            "passed": not any(shared_seq.values()) and not any(shared_ids.values())}


def _frame_block_leakage(ds: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The leakage check of a split by frame blocks (see evaluate_split_leakage)."""
    base = evaluate_split_leakage(ds, "by_sequence")
    names = list(ds)
    pairs = [(a, b) for n, a in enumerate(names) for b in names[n + 1:]]
    frames = {k: np.unique(a["seq"] * 10**9 + a["frame"]) for k, a in ds.items()}
    shared = {f"{a}-{b}": int(np.intersect1d(frames[a], frames[b]).size) for a, b in pairs}
    gaps = {f"{a}-{b}": _closest_frames(frames[a], frames[b]) for a, b in pairs}
    return {**base, "compared": "frames (sequence, frame) of every pair between each two splits; sequences and "
                                "person ids are shared by design (frame blocks of the same sequences)",
            "frames_per_split": {k: int(v.size) for k, v in frames.items()}, "frames_shared": shared,
            "closest_frames_apart": gaps, "frames_disjoint": not any(shared.values()),
            # Subjects (people) are not kept apart, so the note-M3 sense of "no leakage" does not hold.
            "passed": not any(shared.values()) and not any(base["person_ids_shared"].values()),
            "not_kept_apart": "the same people (tracks) appear in several splits"}


def _closest_frames(a: np.ndarray, b: np.ndarray) -> int | None:
    """Smallest |frame difference| between a frame of ``a`` and one of ``b`` in the same sequence
    (keys seq * 1e9 + frame, sorted); None when they share no sequence."""
    if not len(a) or not len(b):
        return None
    at = np.clip(np.searchsorted(b, a), 1, len(b) - 1) if len(b) > 1 else np.zeros(len(a), np.int64)
    near = np.minimum(np.abs(a - b[at]), np.abs(a - b[np.maximum(at - 1, 0)]))
    near = near[near < 10**8]  # differences across sequences are >= 1e9 - max frame
    return int(near.min()) if len(near) else None


def make_split_of_frame(scenes: Scenes, ds: dict[str, dict[str, np.ndarray]]) -> np.ndarray:
    """Split index (position in ``ds``) of every frame uid [F], -1 for none. When no sequence is in two
    splits, every frame of a split's sequences; otherwise (frame blocks) the frames from a split's first
    to its last sampled frame in each sequence, so the frames left out between blocks belong to none."""
    p = scenes.people
    fid, seq, frame = p["fid"].to_numpy(), p["seq"].to_numpy(), p["frame"].to_numpy()
    seqs = [np.unique(a["seq"]) for a in ds.values()]
    out = np.full(scenes.n_frames, -1, np.int64)
    if sum(len(v) for v in seqs) == len(np.unique(np.concatenate(seqs))):      # no sequence in two splits
        split_of_seq = np.full(len(scenes.sequences), -1)
        for k, v in enumerate(seqs):
            split_of_seq[v] = k
        out[fid] = split_of_seq[seq]
        return out
    for k, a in enumerate(ds.values()):
        for s in np.unique(a["seq"]).tolist():
            f = a["frame"][a["seq"] == s]
            inside = (seq == s) & (frame >= f.min()) & (frame <= f.max())
            out[fid[inside]] = k
    return out


def make_split_interacting_pairs(scenes: Scenes, sample: PairSample, ds: dict[str, dict[str, np.ndarray]]
                                 ) -> dict[str, int]:
    """Interacting (same-group) person pairs in each split's frames before any sampling: the
    denominator of recall over all interacting pairs (the split's sequences as written in ``ds``; for
    frame blocks, the frames of each block, see ``make_split_of_frame``)."""
    if make_split_method(scenes) == "by_frame_block":
        split_of_frame = make_split_of_frame(scenes, ds)
        pos = sample.frame_counts["all_positives"]
        return {k: int(pos[split_of_frame == n].sum()) for n, k in enumerate(ds)}
    p = scenes.people
    seq_of_frame = np.zeros(scenes.n_frames, np.int64)
    seq_of_frame[p["fid"].to_numpy()] = p["seq"].to_numpy()
    per_seq = np.bincount(seq_of_frame, weights=sample.frame_counts["all_positives"],
                          minlength=len(scenes.sequences))
    return {k: int(per_seq[np.unique(a["seq"])].sum()) for k, a in ds.items()}


# The generator's settings as `helpers.data.jrdb.load_scenes` writes them into a generated source line.
_GENERATOR_KEYS = {"n_sequences": int, "frames_per_sequence": int, "people_median": float, "people_mean": float,
                   "max_people": int, "seed": int}


def make_frames_digest(people: pd.DataFrame) -> str:
    """A digest of the distinct (sequence index, frame) keys of a people table, in order."""
    keys = people[["seq", "frame"]].drop_duplicates().to_numpy(np.int64)
    return hashlib.sha256(np.ascontiguousarray(keys).tobytes()).hexdigest()[:16]


def make_scene_source(scenes: Scenes) -> dict[str, Any]:
    """What a later notebook needs to load the same scenes again (`helpers.data.crops.load_pair_scenes`):
    the label folder, the generator's settings for generated scenes, the keyframe stride (the common step
    between the kept frames of a sequence; one kept frame per sequence keeps only the first), whether
    stitched images were found, and the counts and frame digest the reloaded scenes are checked against."""
    p = scenes.people
    f = p[["seq", "frame"]].drop_duplicates()
    steps = np.diff(f["frame"].to_numpy(np.int64))[np.diff(f["seq"].to_numpy(np.int64)) == 0]
    stride = int(np.gcd.reduce(steps[steps > 0])) if (steps > 0).any() else int(p["frame"].max(initial=0)) + 1
    found = dict(re.findall(r"\b(" + "|".join(_GENERATOR_KEYS) + r")=([-+0-9.eE]+)", scenes.source))
    generator = ({k: t(float(found[k])) for k, t in _GENERATOR_KEYS.items()}
                 if scenes.generated and set(found) == set(_GENERATOR_KEYS) else None)
    return {"root": str(scenes.root) if scenes.root is not None else None, "generated": bool(scenes.generated),
            "generator": generator, "keyframe_stride": stride, "n_images": int(scenes.n_images),
            "frames": int(scenes.n_frames), "people": int(len(p)), "frames_digest": make_frames_digest(p)}


def make_dataset_meta(scenes: Scenes, sample: PairSample, ds: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    method = make_split_method(scenes)
    leak = evaluate_split_leakage(ds, method)
    return {"name": "scene_pairs", "kind": "vector", "generated": bool(scenes.generated),
            "source": scenes.source + "; pairs sampled by notebook 01",
            "feature_names": list(PERSON_FEATURES), "pair_feature_names": list(PAIR_FEATURES),
            "type_names": list(TYPE_NAMES), "split_method": method,
            "data_leakage_prevention": leak["passed"], "leakage_check": leak,
            "ids": "ida/idb = sequence index * 1,000,000 + track id",
            "sequences_per_split": {k: sorted(scenes.sequences[s] for s in np.unique(v["seq"])) for k, v in ds.items()},
            "all_interacting_pairs": make_split_interacting_pairs(scenes, sample, ds),
            "settings": sample.settings, "counts": sample.counts, "scene_source": make_scene_source(scenes)}
