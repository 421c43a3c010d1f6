"""Which person pairs reach training: distance-limited candidates, group-inference sampling of
positives, negatives capped per frame and balanced (the method page's pair sampling)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers.core.errors import WorkbookError
from helpers.data.geometry import make_candidates, make_frame_pairs
from helpers.data.scenes import Scenes, WIDTH


PRESETS = {"quick": (2.0, 3), "standard": (3.0, 5), "high quality": (4.0, 7)}  # M0: multiplier, negatives cap


PRESET_EPOCHS = {"quick": 20, "standard": 50, "high quality": 80}


def _cycle_order(n: int) -> np.ndarray:
    """All n(n-1)/2 pairs of positions 0..n-1 on a cycle, ordered so any prefix of length
    >= ceil(n/2) covers every member: step-1 pairs at even positions (a perfect cover), then the
    other step-1 pairs, then step 2, 3, ...  Returns [n(n-1)/2, 2]."""
    rows = []
    for s in range(1, n // 2 + 1):
        ms = list(range(n // 2)) if 2 * s == n else list(range(n))
        if s == 1 and 2 * s != n:
            ms = [m for m in ms if m % 2 == 0] + [m for m in ms if m % 2 == 1]
        rows += [(m, (m + s) % n) for m in ms]
    return np.array(rows, dtype=np.int64).reshape(-1, 2)


def group_sample_count(n: np.ndarray | int, ratio: float) -> np.ndarray:
    """Positive pairs a group of n contributes: about ratio*n, at least ceil(n/2) so every member
    appears, at most all n(n-1)/2."""
    n = np.asarray(n, dtype=np.int64)
    k = np.maximum(np.rint(ratio * n).astype(np.int64), (n + 1) // 2)
    return np.where(n >= 2, np.minimum(k, n * (n - 1) // 2), 0)


def sample_group_pairs(fid: np.ndarray, group: np.ndarray, cx: np.ndarray, ratio: float = 1.0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Group-inference sampling: for each group of n >= 2 people in a frame, take
    ``group_sample_count(n, ratio)`` pairs instead of all n(n-1)/2. Members are ordered by their
    horizontal position, so the first pairs are neighbours (those the distance rule keeps).
    Returns (i, j) with i < j."""
    fid, group, cx = np.asarray(fid), np.asarray(group), np.asarray(cx, dtype=np.float64)
    if len(fid) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # One float sort on (frame, group, position): key = (fid * G + group) * 8192 + cx scaled to
    # [0, 8000), exact below 2**53 for any realistic size; cheaper than a three-key lexsort.
    gk = fid.astype(np.int64) * (int(group.max()) + 1) + group
    order = np.argsort(gk * 8192.0 + np.clip(cx, 0, WIDTH) * (8000.0 / WIDTH), kind="stable")
    gs = gk[order]
    starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
    sizes = np.diff(np.r_[starts, len(gs)])
    out_i, out_j = [], []
    for n in np.unique(sizes[sizes >= 2]):  # loop over distinct group sizes, not over pairs
        st = starts[sizes == n]
        members = order[st[:, None] + np.arange(n)]                 # [G_n, n] rows of each group
        tab = _cycle_order(int(n))[: int(group_sample_count(int(n), ratio))]
        a, b = members[:, tab[:, 0]].ravel(), members[:, tab[:, 1]].ravel()
        out_i.append(np.minimum(a, b))
        out_j.append(np.maximum(a, b))
    if not out_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_i), np.concatenate(out_j)


def cap_per_frame(fid_of_pair: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask keeping at most ``cap`` randomly chosen pairs per frame."""
    if len(fid_of_pair) == 0:
        return np.zeros(0, bool)
    order = np.lexsort((rng.random(len(fid_of_pair)), fid_of_pair))
    f = fid_of_pair[order]
    first = np.r_[True, f[1:] != f[:-1]]
    rank = np.arange(len(f)) - np.maximum.accumulate(np.where(first, np.arange(len(f)), 0))
    keep = np.zeros(len(f), bool)
    keep[order] = rank < cap
    return keep


@dataclass
class PairSample:
    """Sampled pairs (i, j) into ``Scenes.people`` with y (1 = same group), the counts per stage, and
    ``frame_counts``: per frame uid [F] the interacting pairs at each stage (all_positives,
    candidate_positives, positives_sampled, positives) and the negatives that reach training."""
    i: np.ndarray
    j: np.ndarray
    y: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    frame_counts: dict[str, np.ndarray] = field(default_factory=dict)


def make_pair_sample(scenes: Scenes, distance_multiplier: float = 3.0, use_wrap: bool = True,
                     use_group_sampling: bool = True, max_group_samples_ratio: float = 1.0,
                     max_negatives_per_frame: int = 5, stage1_balance_ratio: float = 1.0,
                     seed: int = 0) -> PairSample:
    """Candidates -> positives (all candidate same-group pairs, or group-sampled ones that are
    candidates) -> negatives (candidates across groups, capped per frame) -> balanced to
    ``stage1_balance_ratio`` negatives per positive by trimming whichever side is over (0: no balancing)."""
    if distance_multiplier <= 0 or max_negatives_per_frame < 0 or stage1_balance_ratio < 0:
        raise WorkbookError(f"distance_multiplier={distance_multiplier}, max_negatives_per_frame="
                            f"{max_negatives_per_frame}, stage1_balance_ratio={stage1_balance_ratio}: expected "
                            "multiplier > 0 and the others >= 0")
    p = scenes.people
    fid, cx, w, grp = (p["fid"].to_numpy(), p["cx"].to_numpy(), p["w"].to_numpy(), p["group"].to_numpy())
    rng = np.random.default_rng(seed)
    n, nf = len(p), scenes.n_frames
    ci, cj = make_candidates(fid, cx, w, distance_multiplier, use_wrap, scenes.width)
    same = grp[ci] == grp[cj]
    per_frame = np.bincount(fid, minlength=nf).astype(np.int64)
    all_pos_frame = make_interacting_counts(fid, grp, nf)
    if use_group_sampling:
        si, sj = sample_group_pairs(fid, grp, cx, max_group_samples_ratio)
        keep = np.isin(si * n + sj, ci[same] * n + cj[same])  # sampled pairs the distance rule keeps
        pi, pj = si[keep], sj[keep]
        n_sampled = len(si)
    else:
        pi, pj = ci[same], cj[same]
        n_sampled = int(all_pos_frame.sum())
    ni, nj = ci[~same], cj[~same]
    capped = cap_per_frame(fid[ni], max_negatives_per_frame, rng)
    ni, nj = ni[capped], nj[capped]
    n_pos_sampled, n_capped = len(pi), len(ni)
    keep_pos, keep_neg = make_stage1_balance_picks(len(pi), len(ni), stage1_balance_ratio, rng)
    sampled_frame = np.bincount(fid[pi], minlength=nf)
    pi, pj, ni, nj = pi[keep_pos], pj[keep_pos], ni[keep_neg], nj[keep_neg]
    i, j = np.r_[pi, ni], np.r_[pj, nj]
    y = np.r_[np.ones(len(pi), np.int64), np.zeros(len(ni), np.int64)]
    order = np.lexsort((j, i, fid[i]))  # frame order: reproducible and readable
    counts = {"frames": int(nf), "people": int(n), "all_pairs": int((per_frame * (per_frame - 1) // 2).sum()),
              "all_positives": int(all_pos_frame.sum()), "candidates": int(len(ci)),
              "candidate_positives": int(same.sum()), "candidate_negatives": int((~same).sum()),
              "group_sampled": int(n_sampled), "positives_sampled": int(n_pos_sampled), "positives": int(len(pi)),
              "negatives_capped": int(n_capped), "negatives": int(len(ni))}
    frame_counts = {"all_positives": all_pos_frame, "candidate_positives": np.bincount(fid[ci[same]], minlength=nf),
                    "positives_sampled": sampled_frame, "positives": np.bincount(fid[pi], minlength=nf),
                    "negatives": np.bincount(fid[ni], minlength=nf)}
    settings = dict(distance_multiplier=distance_multiplier, use_wrap=use_wrap, use_group_sampling=use_group_sampling,
                    max_group_samples_ratio=max_group_samples_ratio, max_negatives_per_frame=max_negatives_per_frame,
                    stage1_balance_ratio=stage1_balance_ratio, seed=seed)
    return PairSample(i=i[order], j=j[order], y=y[order], counts=counts, settings=settings, frame_counts=frame_counts)


def make_stage1_balance_picks(n_pos: int, n_neg: int, ratio: float, rng: np.random.Generator
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays of the positives and negatives to keep so that negatives : positives = ``ratio``:
    the side that is over is trimmed at random. ``ratio = 0`` keeps everything (no balancing), and
    positives are never trimmed to nothing for want of negatives (with no negative there is no ratio)."""
    keep_pos, keep_neg = np.arange(n_pos), np.arange(n_neg)
    if ratio <= 0:
        return keep_pos, keep_neg
    target_neg = int(round(ratio * n_pos))
    if n_neg > target_neg:
        return keep_pos, np.sort(rng.choice(n_neg, size=target_neg, replace=False))
    target_pos = int(round(n_neg / ratio))
    if 0 < n_neg and target_pos < n_pos:
        return np.sort(rng.choice(n_pos, size=target_pos, replace=False)), keep_neg
    return keep_pos, keep_neg


def make_interacting_counts(fid: np.ndarray, group: np.ndarray, n_frames: int) -> np.ndarray:
    """Interacting (same-group) person pairs per frame [F]: n(n-1)/2 for every group of n in a frame."""
    if len(fid) == 0:
        return np.zeros(n_frames, np.int64)
    _, first, size = np.unique(np.c_[fid, group], axis=0, return_index=True, return_counts=True)
    return np.bincount(np.asarray(fid)[first], weights=size * (size - 1) // 2, minlength=n_frames).astype(np.int64)


def make_inferred_counts(fid: np.ndarray, i: np.ndarray, j: np.ndarray, n_frames: int) -> np.ndarray:
    """Interacting pairs recoverable from the kept positive pairs (i, j) per frame [F]: by transitivity
    (A-B and B-C give A-C, M0's group inference) every two people joined through kept pairs interact,
    so a connected set of c people yields c(c-1)/2 pairs."""
    n = len(fid)
    if len(i) == 0:
        return np.zeros(n_frames, np.int64)
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    size = np.bincount(label)
    first = np.unique(label, return_index=True)[1]          # one person per component, for its frame
    return np.bincount(np.asarray(fid)[first], weights=size * (size - 1) // 2, minlength=n_frames).astype(np.int64)


def _ratio(pos: int, neg: int) -> float:
    return float(pos / neg) if neg else float("inf") if pos else float("nan")


def make_scene_pairs(scenes: Scenes) -> dict[str, np.ndarray]:
    """Every same-frame pair of the scenes (see make_frame_pairs)."""
    p = scenes.people
    return make_frame_pairs(p["fid"].to_numpy(), p["cx"].to_numpy(), p["w"].to_numpy(), p["group"].to_numpy(),
                            scenes.width)
