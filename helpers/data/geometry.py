"""Panorama geometry of person pairs: wrapped distances and every same-frame or candidate pair, vectorised.

Rows of the people table are sorted by frame uid ``fid``; pairs are index pairs (i, j), i < j, into it.
The only Python loops run over chunks of frames or over offsets of a sorted window, never over pairs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from helpers.core.errors import WorkbookError
from helpers.data.scenes import WIDTH


def wrapped_distance(cx_a: np.ndarray, cx_b: np.ndarray, width: float = WIDTH, wrap: bool = True) -> np.ndarray:
    """Horizontal centre distance; with wrap the panorama's left and right edges touch:
    d = min(|dx|, width - |dx|)."""
    d = np.abs(np.asarray(cx_a, dtype=np.float64) - np.asarray(cx_b, dtype=np.float64))
    return np.minimum(d, width - d) if wrap else d


def is_candidate(cx_a, cx_b, w_a, w_b, multiplier: float, width: float = WIDTH, wrap: bool = True) -> np.ndarray:
    """The distance rule: a pair is a candidate iff d <= multiplier * max(w_a, w_b) (inclusive)."""
    return wrapped_distance(cx_a, cx_b, width, wrap) <= multiplier * np.maximum(w_a, w_b)


def _check_sorted(fid: np.ndarray) -> None:
    if len(fid) and np.any(np.diff(fid) < 0):
        raise WorkbookError("people rows must be sorted by frame uid 'fid' (Scenes.people is); got unsorted fid")


def _frame_runs(fid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row offset and person count of each frame present (rows sorted by fid)."""
    _check_sorted(fid)
    if len(fid) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, fid[1:] != fid[:-1]])
    counts = np.diff(np.r_[starts, len(fid)])
    return starts.astype(np.int64), counts.astype(np.int64)


def _iter_pair_chunks(fid: np.ndarray, max_pairs: int = 4_000_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All within-frame pairs (i < j) as index arrays, in chunks of whole frames.

    Pairs inside a frame of n people are ordered by (j, i), so the pairs of the first n people
    are a prefix of one table: frame f takes the first n_f(n_f-1)/2 entries and adds its offset.
    """
    starts, counts = _frame_runs(fid)
    if len(starts) == 0:
        return
    nmax = int(counts.max())
    J = np.repeat(np.arange(nmax), np.arange(nmax))            # [nmax(nmax-1)/2]
    I = np.arange(len(J)) - np.repeat(np.cumsum(np.arange(nmax)) - np.arange(nmax), np.arange(nmax))
    npairs = counts * (counts - 1) // 2                          # [F]
    cum = np.cumsum(npairs)
    bounds = [0]
    while bounds[-1] < len(starts):  # frame chunks of about max_pairs pairs
        nxt = int(np.searchsorted(cum, (cum[bounds[-1] - 1] if bounds[-1] else 0) + max_pairs, side="right"))
        bounds.append(max(nxt, bounds[-1] + 1))
    for a, b in zip(bounds[:-1], bounds[1:]):
        c = npairs[a:b]
        tot = int(c.sum())
        if tot == 0:
            continue
        local = np.arange(tot) - np.repeat(np.cumsum(c) - c, c)   # index into the (J, I) table
        off = np.repeat(starts[a:b], c)
        yield I[local] + off, J[local] + off


def make_frame_pairs(fid: np.ndarray, cx: np.ndarray, w: np.ndarray, group: np.ndarray,
                     width: float = WIDTH) -> dict[str, np.ndarray]:
    """Every same-frame pair with what the sweeps need: i, j, fid, d_wrap, d_plain, maxw, same_group,
    and r_wrap / r_plain = distance / max width (a pair is a candidate at multiplier m iff r <= m)."""
    parts: dict[str, list] = {k: [] for k in ("i", "j", "d_wrap", "d_plain", "maxw")}
    for i, j in _iter_pair_chunks(np.asarray(fid)):
        d = np.abs(cx[i] - cx[j])
        parts["i"].append(i.astype(np.int64))
        parts["j"].append(j.astype(np.int64))
        parts["d_plain"].append(d.astype(np.float32))
        parts["d_wrap"].append(np.minimum(d, width - d).astype(np.float32))
        parts["maxw"].append(np.maximum(w[i], w[j]).astype(np.float32))
    out = {k: (np.concatenate(v) if v else np.zeros(0, np.int64 if k in ("i", "j") else np.float32))
           for k, v in parts.items()}
    out["fid"] = np.asarray(fid)[out["i"]]
    out["same_group"] = np.asarray(group)[out["i"]] == np.asarray(group)[out["j"]]
    safe = np.maximum(out["maxw"], 1e-6)
    out["r_wrap"] = out["d_wrap"] / safe
    out["r_plain"] = out["d_plain"] / safe
    return out


def _window_pairs(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (k, m) for every k and every m in [start[k], stop[k]) (empty where stop <= start)."""
    cnt = np.maximum(stop - start, 0)
    tot = int(cnt.sum())
    k = np.repeat(np.arange(len(cnt)), cnt)
    m = np.arange(tot) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(start, cnt)
    return k, m


def make_candidates(fid: np.ndarray, cx: np.ndarray, w: np.ndarray, multiplier: float, wrap: bool = True,
                    width: float = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (i, j), i < j, in the same frame with d <= multiplier * max(w_i, w_j).

    Sort-and-window instead of all pairs: people sorted by (frame, cx); a pair is a candidate iff
    it lies in the forward window of its left member (dx <= m*w_left) or the backward window of its
    right member (dx <= m*w_right); both windows are walked one offset at a time over all people
    at once. With wrap, people near the left edge get a copy shifted by +width so pairs across the
    seam are ordinary window pairs.
    """
    fid, cx, w = np.asarray(fid), np.asarray(cx, dtype=np.float64), np.asarray(w, dtype=np.float64)
    n = len(fid)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    reach = multiplier * w                                    # [N] each person's own radius
    if wrap:
        origin, pos = _with_seam_copies(fid, cx, w, multiplier, width)
    else:
        origin, pos = np.arange(n, dtype=np.int64), cx
    win = _sorted_windows(fid, origin, pos, reach, width)
    fwd_a, fwd_b = _forward_walk(win)
    back_a, back_b = _backward_walk(win, wrap)
    fa, fb = np.concatenate(fwd_a + back_a), np.concatenate(fwd_b + back_b)  # positions in the padded arrays
    a, b = win.origin[fa], win.origin[fb]
    i, j = np.minimum(a, b), np.maximum(a, b)
    if wrap and multiplier * w.max() >= width / 2:
        i, j = _drop_seam_duplicates(i, j, win.is_copy[fb], cx, w, multiplier)
    return i, j


@dataclass(frozen=True)
class _SortedWindows:
    """Everyone (seam copies included) on one sorted axis, padded at both ends with far-away
    sentinels so the walks need no bounds checks. Every array is [pad + N' + pad]."""
    key: np.ndarray       # float64 frame * span + position, ascending
    key_hi: np.ndarray    # key + reach: the right end of each person's window
    key_lo: np.ndarray    # key - reach: the left end
    origin: np.ndarray    # int64 row in the people table (0 for sentinels)
    is_copy: np.ndarray   # bool: a seam copy
    orig: np.ndarray      # bool: an original row (not a copy, not a sentinel)
    valid: np.ndarray     # bool: not a sentinel
    idx_t: type           # index dtype of the walks: int32 while it fits (halves the memory traffic)


def _with_seam_copies(fid: np.ndarray, cx: np.ndarray, w: np.ndarray, multiplier: float,
                      width: float) -> tuple[np.ndarray, np.ndarray]:
    """(origin, pos) [N + copies]: every row at its cx, then a copy at cx + width of each row near
    the left edge. Only people close enough to the left edge can pair across the seam with someone
    near the right edge of the same frame: cx_b + W - cx_a <= m * (the frame's widest box)."""
    starts, counts = _frame_runs(fid)
    thr = multiplier * np.maximum.reduceat(w, starts) - (width - np.maximum.reduceat(cx, starts))  # [F]
    near = np.flatnonzero(cx <= np.repeat(thr, counts))
    return np.r_[np.arange(len(fid), dtype=np.int64), near], np.r_[cx, cx[near] + width]


def _sorted_windows(fid: np.ndarray, origin: np.ndarray, pos: np.ndarray, reach: np.ndarray,
                    width: float) -> _SortedWindows:
    """Sort everyone by (frame, position) on one float axis and pad both ends (see _SortedWindows)."""
    n = len(fid)
    span = 2.0 * width + 2.0 * float(reach.max()) + 1.0      # frames never overlap on this axis
    fo = fid[origin]
    key = fo * span + pos                                     # [N'] float64, exact below 2**53
    order = np.argsort(key, kind="stable")
    # As many sentinels as the largest frame holds, so a walk leaves every frame before it runs out.
    pad = int(np.bincount(fo - fo.min()).max()) + 1
    big = 4.0 * span * (float(fid.max()) + 2.0)
    key = np.r_[np.full(pad, -big), key[order], np.full(pad, big)]
    r = np.r_[np.zeros(pad), reach[origin[order]], np.zeros(pad)]
    none = np.zeros(pad, bool)
    return _SortedWindows(
        key=key, key_hi=key + r, key_lo=key - r,
        origin=np.r_[np.zeros(pad, np.int64), origin[order], np.zeros(pad, np.int64)],
        is_copy=np.r_[none, order >= n, none], orig=np.r_[none, order < n, none],
        valid=np.r_[none, np.ones(len(order), bool), none],
        idx_t=np.int32 if len(key) < 2**31 else np.int64)


# Both walks go outwards one offset k at a time over everyone at once, keeping only people whose
# window still reaches: total work ~ (window pairs + N), no per-pair Python. Keys are sorted, so
# "k steps away is still within reach" implies it for every smaller step: the people active at
# step k are exactly those for whom the k-th neighbour is in reach. While many are active a
# contiguous comparison over everyone is cheapest; then gathers on the shrinking active set take over.


def _forward_walk(win: _SortedWindows) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs (left, right) in the left member's reach (dx <= m*w_left), from originals only; as
    lists of position arrays, one per offset."""
    key, key_hi, orig = win.key, win.key_hi, win.orig
    total = len(key)
    fa, fb = [], []
    act = None
    k = 1
    while act is None or act.size:
        if act is None or act.size > total // 4:
            act = (np.flatnonzero(orig[:-k] & (key[k:] <= key_hi[:-k]))).astype(win.idx_t)
        else:
            act = act[key[act + k] <= key_hi[act]]
        fa.append(act)
        fb.append(act + k)
        k += 1
    return fa, fb


def _backward_walk(win: _SortedWindows, wrap: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs (left, right) in the right member's reach that the forward walk did not find
    (dx > m*w_left); with wrap the left member must be an original (copies pair only with originals)."""
    key, key_hi, key_lo, orig, valid = win.key, win.key_hi, win.key_lo, win.orig, win.valid
    total = len(key)
    fa, fb = [], []
    act = None
    k = 1
    while act is None or act.size:
        if act is None or act.size > total // 4:
            act = (np.flatnonzero(valid[k:] & (key[:-k] >= key_lo[k:])) + k).astype(win.idx_t)
        else:
            act = act[key[act - k] >= key_lo[act]]
        left = act - k
        new = key[act] > key_hi[left]
        if wrap:
            new &= orig[left]
        fa.append(left[new])
        fb.append(act[new])
        k += 1
    return fa, fb


def _drop_seam_duplicates(i: np.ndarray, j: np.ndarray, via_copy: np.ndarray, cx: np.ndarray, w: np.ndarray,
                          multiplier: float) -> tuple[np.ndarray, np.ndarray]:
    """Rare (huge boxes, multiplier * w >= width / 2): a person can reach their own seam copy, and a
    pair near both ways round is found directly and through the copy: drop those."""
    ok = (i != j) & ~(via_copy & (np.abs(cx[i] - cx[j]) <= multiplier * np.maximum(w[i], w[j])))
    return i[ok], j[ok]
