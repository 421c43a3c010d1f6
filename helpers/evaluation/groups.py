"""Social groups from stage-1 pair probabilities, scored with the two published group protocols.

Forming groups, per frame, from rows (seq, frame, track_a, track_b, probability):

- ``components``: people joined by a pair with probability above the threshold, closed transitively
  (connected components); one confident wrong pair merges two groups.
- ``agglomerative``: average-linkage clustering on the distance 1 - probability (a pair not listed
  counts as probability 0); two clusters merge while their mean distance is at most 1 - threshold,
  so one confident wrong pair no longer merges two groups on its own.

Either way a person in no merged pair is alone, and the threshold is chosen on validation to
maximise the PAR group F1 (``choose_threshold``).

Scoring:

- PAR / JRDB-PAR group detection (Han et al., *Panoramic Human Activity Recognition*, ECCV 2022;
  RuizeHan/PAR ``my_utils/group_detection_PRF.py``): groups of two or more per frame; a predicted
  group is correct when |G ∩ Ĝ| / max(|G|, |Ĝ|) > 0.5 for a true group G; precision, recall and F1
  over the groups of all frames.
- JRDB-Act social grouping (Ehsanpour et al., CVPR 2022), as the official toolkit computes it
  (JRDB-dataset/jrdb_toolkit ``Action&Social_grouping_eval/JRDB_eval.py``, tasks 2 and 3): keyframes
  every 15th frame from 15 on; per keyframe, predicted group ids are mapped onto true ones by a
  Hungarian assignment on shared members, a person is correct when its box matches and its mapped
  group is its true group; Pascal-VOC AP over people (task 2) and per true group size 1, 2, 3, 4, 5+
  (task 3). ``write_jrdb_act_files`` writes the toolkit's input files so the official script can
  be run on the same groups.

This module scores groups formed on the ground-truth boxes, so every person's box matches its own
exactly (IoU 1 >= 0.5): there are no false-positive boxes, and the AP equals the share of people
whose group is recovered, whatever the scores.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import linkage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import squareform

from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_write_text
from helpers.data.scenes import Scenes


METHODS = ("components", "agglomerative")


PAIR_COLUMNS = ("seq", "frame", "track_a", "track_b", "probability")


PERSON_COLUMNS = ("seq", "frame", "track")


# JRDB-Act evaluates keyframes 15, 30, 45, ... (GT_conversion_script.py: int(img) % 15 == 0 and >= 15).
KEYFRAME_STRIDE = 15


# JRDB_eval.py evaluates sequence ids 0..26 (and "all" over those); others are silently skipped there,
# so more sequences are written as several file pairs of at most 27 sequences each.
MAX_SEQUENCES = 27


SIZE_CLASSES = ("1", "2", "3", "4", "5plus")  # task 3: true group size in the keyframe, 5 and more pooled


DEFAULT_GRID = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise WorkbookError(f"{what}: missing column(s) {missing}; expected columns {list(columns)}")


def make_pair_scores(split: dict[str, np.ndarray], probability: np.ndarray) -> pd.DataFrame:
    """A pair-score table from one split of the scene pair dataset (``seq``, ``frame``, ``track_a``,
    ``track_b`` arrays) and the stage-1 probability of each of its pairs."""
    prob = np.asarray(probability, dtype=np.float64).reshape(-1)
    if len(prob) != len(split["seq"]):
        raise WorkbookError(f"probability: {len(prob)} values for {len(split['seq'])} pairs; expected one per pair")
    return pd.DataFrame({"seq": split["seq"], "frame": split["frame"], "track_a": split["track_a"],
                         "track_b": split["track_b"], "probability": prob})


def _codes(scenes: Scenes, sequences: Sequence[str] | None) -> list[int]:
    """Sequence names -> their codes in ``scenes.people['seq']`` (all sequences for None)."""
    names = list(scenes.sequences) if sequences is None else list(sequences)
    unknown = [n for n in names if n not in scenes.sequences]
    if unknown:
        raise WorkbookError(f"sequences: {unknown} are not among the scenes' sequences {scenes.sequences}")
    return [scenes.sequences.index(n) for n in names]


def make_true_groups(scenes: Scenes, sequences: Sequence[str] | None = None) -> pd.DataFrame:
    """True groups (seq, frame, track, group) of every person in every frame of ``sequences``."""
    p = scenes.people
    keep = p["seq"].isin(_codes(scenes, sequences)).to_numpy()
    return p.loc[keep, ["seq", "frame", "track", "group"]].reset_index(drop=True)


def _people_of(pairs: pd.DataFrame, people: pd.DataFrame | None) -> pd.DataFrame:
    """The people to group (seq, frame, track) sorted; from the pairs' ends when none are given."""
    if people is not None:
        _require(people, PERSON_COLUMNS, "people")
        out = people[list(PERSON_COLUMNS)].drop_duplicates()
    else:
        ends = [pairs[["seq", "frame", c]].set_axis(list(PERSON_COLUMNS), axis=1) for c in ("track_a", "track_b")]
        out = pd.concat(ends).drop_duplicates()
    return out.sort_values(list(PERSON_COLUMNS), kind="stable").reset_index(drop=True).astype(np.int64)


def _pair_edges(pairs: pd.DataFrame, people: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs as row indices into ``people``: (a, b, probability), a < b, once per unordered pair (the
    mean where a pair is listed both ways). Pairs in frames without people are left out; a pair naming
    a track its frame does not hold is refused (it would silently drop an edge)."""
    _require(pairs, PAIR_COLUMNS, "pairs")
    key = pd.MultiIndex.from_frame(people[list(PERSON_COLUMNS)])
    ia = key.get_indexer(pd.MultiIndex.from_arrays([pairs["seq"], pairs["frame"], pairs["track_a"]]))
    ib = key.get_indexer(pd.MultiIndex.from_arrays([pairs["seq"], pairs["frame"], pairs["track_b"]]))
    in_frame = pd.MultiIndex.from_arrays([pairs["seq"], pairs["frame"]]).isin(
        pd.MultiIndex.from_frame(people[["seq", "frame"]]))
    bad = np.flatnonzero(in_frame & ((ia < 0) | (ib < 0)))
    if bad.size:
        r = pairs.iloc[int(bad[0])]
        raise WorkbookError(f"pairs: row {int(bad[0])} (seq {r['seq']}, frame {r['frame']}, tracks {r['track_a']}-"
                            f"{r['track_b']}) names a track that is not among that frame's people")
    prob = pairs["probability"].to_numpy(np.float64)
    if not np.all(np.isfinite(prob) & (prob >= 0) & (prob <= 1)):
        raise WorkbookError("pairs: probability must be finite and within [0, 1]")
    keep = in_frame & (ia != ib)
    a, b, p = np.minimum(ia, ib)[keep], np.maximum(ia, ib)[keep], prob[keep]
    n = max(len(people), 1)
    code, inv = np.unique(a.astype(np.int64) * n + b, return_inverse=True)
    mean = np.bincount(inv, weights=p) / np.bincount(inv)
    return code // n, code % n, mean


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component label per person [n]: all frames in one sparse graph (no loop over frames)."""
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _cut_tree(tree: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Flat clusters [T, m] of a monotone linkage (average linkage is) at every distance cut at once,
    each person labelled by the top tree node of its cluster: what fcluster(tree, cut, "distance")
    gives, without its per-call validation, which dominated the time of a threshold sweep."""
    m = len(tree) + 1
    parent = np.full(2 * m - 1, -1, np.int64)
    parent[tree[:, :2].astype(np.int64)] = (m + np.arange(m - 1))[:, None]  # both children of merge i
    height = np.r_[np.zeros(m), tree[:, 2]]
    node = np.tile(np.arange(m, dtype=np.int64), (len(cuts), 1))
    while True:  # climb while the next merge is within the cut; merge heights only grow upwards
        up = parent[node]
        move = (up >= 0) & (height[np.maximum(up, 0)] <= cuts[:, None])
        if not move.any():
            return node
        node = np.where(move, up, node)


def _agglomerative(n: int, a: np.ndarray, b: np.ndarray, p: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Average-linkage labels [T, n], one row per threshold, cut at distance 1 - threshold.

    Two clusters merge only when their mean distance is within the cut, which needs at least one
    pair within it; so clusters never cross the components of the pairs within the loosest cut, and
    clustering each such component alone gives the same result as clustering the whole frame. Only
    components of three or more people are clustered (once each, cut at every threshold); two people
    are one pair, merged when it is within the cut."""
    d = 1.0 - p
    cuts = 1.0 - np.asarray(thresholds, dtype=np.float64)
    if n == 0:
        return np.zeros((len(cuts), 0), np.int64)
    comp = _components(n, *(x[d <= cuts.max()] for x in (a, b)))
    labels = np.tile(np.arange(n, dtype=np.int64), (len(cuts), 1))  # alone unless merged below
    members = np.argsort(comp, kind="stable")
    starts = np.searchsorted(comp[members], np.arange(comp.max() + 2))
    inside = np.flatnonzero(comp[a] == comp[b])
    inside = inside[np.argsort(comp[a[inside]], kind="stable")]
    pstarts = np.searchsorted(comp[a[inside]], np.arange(comp.max() + 2))
    two = np.flatnonzero(np.diff(starts) == 2)              # two people, one pair: merged iff within the cut
    first, second = members[starts[two]], members[starts[two] + 1]
    labels[:, second] = np.where(d[inside[pstarts[two]]] <= cuts[:, None], first, second)
    # Every pair listed and within the tightest cut: one group at every threshold, no tree needed.
    size, pc = np.diff(starts), comp[a[inside]]
    dmax = np.zeros(len(size))
    np.maximum.at(dmax, pc, d[inside])
    whole = (size >= 3) & (np.bincount(pc, minlength=len(size)) == size * (size - 1) // 2) & (dmax <= cuts.min())
    at = whole[comp]
    labels[:, at] = members[starts[comp[at]]]               # named by the component's first member
    offset = n                                              # cluster labels above every person index
    for c in np.flatnonzero((size >= 3) & ~whole):
        m = members[starts[c]:starts[c + 1]]                # sorted person indices of this component
        e = inside[pstarts[c]:pstarts[c + 1]]
        la, lb = np.searchsorted(m, a[e]), np.searchsorted(m, b[e])
        dist = np.ones((len(m), len(m)))                    # unlisted pairs: probability 0
        dist[la, lb] = dist[lb, la] = d[e]
        np.fill_diagonal(dist, 0.0)
        labels[:, m] = offset + _cut_tree(linkage(squareform(dist, checks=False), method="average"), cuts)
        offset += 2 * len(m)
    return labels


def _group_labels(pairs: pd.DataFrame, people: pd.DataFrame, thresholds: Sequence[float],
                  method: str) -> np.ndarray:
    """Group label per person [T, n] for each threshold (person indices as labels)."""
    if method not in METHODS:
        raise WorkbookError(f"method = {method!r}: expected one of {'|'.join(METHODS)}")
    a, b, p = _pair_edges(pairs, people)
    if method == "agglomerative":
        return _agglomerative(len(people), a, b, p, thresholds)
    return np.stack([_components(len(people), a[p > t], b[p > t]) for t in thresholds])


def form_groups(pairs: pd.DataFrame, threshold: float, method: str = "components",
                people: pd.DataFrame | None = None) -> pd.DataFrame:
    """Groups per frame from pair probabilities: a table (seq, frame, track, group), one row per person
    of ``people`` (by default everyone named in a pair), group a global id 0..G-1 (never shared by
    two frames). ``components`` joins pairs with probability > threshold; ``agglomerative`` merges
    clusters while their mean probability is >= threshold (average linkage on 1 - probability)."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise WorkbookError(f"threshold = {threshold}: expected a probability in [0, 1]")
    who = _people_of(pairs, people)
    labels = _group_labels(pairs, who, [float(threshold)], method)[0]
    return who.assign(group=pd.factorize(labels)[0].astype(np.int64))


def _aligned(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Predicted group and score per truth row; a person the prediction leaves out is alone (a new
    id), as a group-forming step that never saw them would have left them."""
    _require(pred, (*PERSON_COLUMNS, "group"), "pred")
    _require(truth, (*PERSON_COLUMNS, "group"), "truth")
    p = pred.drop_duplicates(list(PERSON_COLUMNS))
    key = pd.MultiIndex.from_frame(p[list(PERSON_COLUMNS)])
    at = key.get_indexer(pd.MultiIndex.from_frame(truth[list(PERSON_COLUMNS)]))
    lone = at < 0
    group = np.r_[p["group"].to_numpy(np.int64), 0][at]     # index -1: the placeholder, replaced below
    group[lone] = (group[~lone].max(initial=-1) + 1) + np.arange(int(lone.sum()))
    score = np.r_[p["score"].to_numpy(np.float64), 1.0][at] if "score" in p.columns else np.ones(len(at))
    return group, np.where(lone, 1.0, score)


def _frame_codes(truth: pd.DataFrame) -> np.ndarray:
    """One integer per (seq, frame) of each row."""
    return pd.factorize(truth["seq"].to_numpy(np.int64) * (int(truth["frame"].max()) + 1)
                        + truth["frame"].to_numpy(np.int64))[0] if len(truth) else np.zeros(0, np.int64)


def _per_frame(frame: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Group labels made distinct per frame (a label reused in two frames names two groups)."""
    g = pd.factorize(group)[0].astype(np.int64)
    return pd.factorize(frame * (int(g.max(initial=0)) + 1) + g)[0].astype(np.int64)


def _par_scores(frame: np.ndarray, true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """PAR precision, recall and F1 from per-person frame codes and true / predicted group labels."""
    tg, pg = _per_frame(frame, true), _per_frame(frame, pred)
    st, sp = np.bincount(tg), np.bincount(pg)
    cell, shared = np.unique(tg * max(len(sp), 1) + pg, return_counts=True)
    ct, cp = cell // max(len(sp), 1), cell % max(len(sp), 1)
    # Groups of one are dropped; more than half of the larger group shared is a hit, which can hold for
    # one pairing of a true and a predicted group at most, so hits are one-to-one without a matching.
    hit = (st[ct] >= 2) & (sp[cp] >= 2) & (shared / np.maximum(st[ct], sp[cp]) > 0.5)
    tp, n_true, n_pred = int(hit.sum()), int((st >= 2).sum()), int((sp >= 2).sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "n_pred": n_pred, "n_true": n_true}


def score_groups_par(pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """PAR group detection over the people and frames of ``truth`` (seq, frame, track, group): groups
    of two or more people; a predicted group is a true positive when it shares more than half of the
    larger of itself and some true group. Precision = TP / predicted groups, recall = TP / true
    groups, both counted over all frames (micro-averaged, as PAR's group_detection_PRF.py does)."""
    pg, _ = _aligned(pred, truth)
    return _par_scores(_frame_codes(truth), truth["group"].to_numpy(np.int64), pg)


def choose_threshold(val_pairs: pd.DataFrame, val_truth: pd.DataFrame, method: str = "components",
                     grid: Sequence[float] | None = None) -> dict[str, Any]:
    """The threshold on ``grid`` that maximises the PAR group F1 on validation (the first of equals),
    with the whole sweep as a table (threshold, precision, recall, f1, tp, n_pred, n_true). Groups are
    formed over the people of ``val_truth``, so people in no pair count as alone."""
    grid = [float(t) for t in (DEFAULT_GRID if grid is None else grid)]
    if not grid or not all(0.0 <= t <= 1.0 for t in grid):
        raise WorkbookError(f"grid = {grid}: expected one or more thresholds in [0, 1]")
    _require(val_truth, (*PERSON_COLUMNS, "group"), "val_truth")
    who = _people_of(val_pairs, val_truth)
    labels = _group_labels(val_pairs, who, grid, method)
    at = pd.MultiIndex.from_frame(who).get_indexer(pd.MultiIndex.from_frame(val_truth[list(PERSON_COLUMNS)]))
    frame, true = _frame_codes(val_truth), val_truth["group"].to_numpy(np.int64)
    table = pd.DataFrame([{"threshold": t, **_par_scores(frame, true, labels[i][at])} for i, t in enumerate(grid)])
    best = int(table["f1"].to_numpy().argmax())
    return {"method": method, "threshold": grid[best], "f1": float(table["f1"].iloc[best]), "table": table}


_LABEL_ID = re.compile(r"pedestrian:([0-9]{1,18})")


def _social_groups(path: Path, stride: int = KEYFRAME_STRIDE) -> pd.DataFrame:
    """(frame, track, cluster_ID, cluster_stat) of the keyframe records of one labels_2d_stitched file
    that carry a JRDB-Act ``social_group`` (the fields GT_conversion_script.py reads)."""
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))["labels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: cannot read the 2D labels' social groups ({e})") from None
    rows = []
    for key, recs in labels.items():
        frame = int(key[:6])
        if frame % stride or frame < stride:
            continue
        for r in recs:
            g, m = r.get("social_group"), _LABEL_ID.fullmatch(str(r.get("label_id")))
            if isinstance(g, dict) and m and g.get("cluster_ID") is not None:
                rows.append((frame, int(m.group(1)), int(g["cluster_ID"]), int(g.get("cluster_stat", 0))))
    cols = ["frame", "track", "cluster_ID", "cluster_stat"]
    return pd.DataFrame(rows, columns=cols).drop_duplicates(["frame", "track"]).astype(np.int64)


def make_jrdb_act_truth(scenes: Scenes, sequences: Sequence[str] | None = None) -> pd.DataFrame:
    """The JRDB-Act grouping ground truth as GT_conversion_script.py builds it, one row per evaluated
    person: keyframes 15, 30, 45, ...; boxes crossing the seam or the image edge (x < 0, x + w > width,
    y < 0, y + h > height), empty boxes and ``no_eval`` boxes are left out. Columns: seq (code in
    ``scenes``), sequence, seq_id (index of the sequence's label file in sorted order among
    ``sequences``: the toolkit's sequence id), frame, track, x1, y1, x2, y2, group (the file's
    cluster_ID), difficult (1 where cluster_stat > 2). Sequences without cluster_IDs (JRDB-Social
    pairs only) take the loader's groups (+1, so ids stay > 0), with difficulty 0."""
    names = sorted(scenes.sequences if sequences is None else sequences)
    p = scenes.people[scenes.people["seq"].isin(_codes(scenes, names))]
    x1, y1 = p["x"].to_numpy(), p["y"].to_numpy()
    x2, y2 = x1 + p["w"].to_numpy(), y1 + p["h"].to_numpy()
    ok = (((p["frame"] % KEYFRAME_STRIDE == 0) & (p["frame"] >= KEYFRAME_STRIDE)).to_numpy()
          & (x1 >= 0) & (x2 <= scenes.width) & (y1 >= 0) & (y2 <= scenes.height)
          & (p["w"].to_numpy() > 0) & (p["h"].to_numpy() > 0) & ~p["no_eval"].to_numpy(bool))
    t = pd.DataFrame({"seq": p["seq"], "sequence": p["seq"].map(dict(enumerate(scenes.sequences))),
                      "frame": p["frame"], "track": p["track"], "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                      "group": p["group"] + 1}).loc[ok]
    t.insert(2, "seq_id", t["sequence"].map({n: i for i, n in enumerate(names)}).astype(np.int64))
    t["difficult"] = 0
    parts = [_with_cluster_ids(t[t["sequence"] == n], scenes.root, n) for n in names]
    out = pd.concat(parts) if parts else t
    return out.sort_values(["seq_id", "frame", "track"], kind="stable").reset_index(drop=True)


def _with_cluster_ids(t: pd.DataFrame, root: Path | None, name: str) -> pd.DataFrame:
    """One sequence's truth rows with group = cluster_ID and difficult = cluster_stat > 2 from its label
    file, when every row has them there (else as given)."""
    path = None if root is None else Path(root) / "labels" / "labels_2d_stitched" / f"{name}.json"
    if path is None or not path.exists() or t.empty:
        return t
    sg = _social_groups(path).set_index(["frame", "track"])
    at = sg.index.get_indexer(pd.MultiIndex.from_frame(t[["frame", "track"]]))
    if (at < 0).any():
        return t
    return t.assign(group=sg["cluster_ID"].to_numpy()[at], difficult=(sg["cluster_stat"].to_numpy()[at] > 2) * 1)


def _keyframe_ids(pred: pd.DataFrame, truth: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keyframe code, predicted group id 1..k within its keyframe, score) per truth row. The ids keep
    the order of the predicted group ids: these are the ids written to det_group.txt, so the
    assignment below sees the same matrix as JRDB_eval.py."""
    group, score = _aligned(pred, truth)
    kf = pd.factorize(pd.MultiIndex.from_frame(truth[["seq_id", "frame"]]))[0].astype(np.int64)
    pid = pd.Series(group).groupby(kf).rank(method="dense").to_numpy(np.int64) if len(kf) else kf
    return kf, pid, score


def _match_groups(kf: np.ndarray, pid: np.ndarray, tid: np.ndarray) -> np.ndarray:
    """Per person: is its predicted group mapped onto its true group? Per keyframe, JRDB_eval.py
    counts shared members w[pred id, true id] in a square matrix over the raw ids (side = largest id
    + 1) and solves linear_sum_assignment(w.max() - w). The same matrix is built here: any maximal
    assignment credits as many people, but which ones (so the per-size APs) depends on how ties are
    broken, and that depends on the matrix as given."""
    correct = np.zeros(len(kf), bool)
    order = np.argsort(kf, kind="stable")
    bounds = np.searchsorted(kf[order], np.arange(kf.max(initial=-1) + 2))
    for k in range(len(bounds) - 1):
        r = order[bounds[k]:bounds[k + 1]]
        side = int(max(pid[r].max(), tid[r].max())) + 1
        w = np.zeros((side, side), np.int64)
        np.add.at(w, (pid[r], tid[r]), 1)
        col = linear_sum_assignment(w.max() - w)[1]
        correct[r] = col[pid[r]] == tid[r]
    return correct


def _voc_ap(score: np.ndarray, hit: np.ndarray, n_true: int) -> float:
    """Pascal-VOC AP (jr/metrics.py): detections by descending score, precision made non-increasing,
    summed over the steps in recall. NaN without true instances, 0 without detections."""
    if n_true == 0:
        return float("nan")
    if len(hit) == 0:
        return 0.0
    h = hit[np.argsort(-score, kind="stable")].astype(np.float64)
    tp = np.cumsum(h)
    precision = tp / np.arange(1, len(h) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float((np.diff(np.r_[0.0, tp / n_true]) * envelope).sum())


def score_groups_jrdb_act(pred: pd.DataFrame, truth: pd.DataFrame,
                          ignore_difficult: bool = False) -> dict[str, float]:
    """JRDB-Act social grouping as JRDB_eval.py scores it, on ``truth`` from ``make_jrdb_act_truth``.

    Boxes are the ground-truth boxes, so the box match (IoU >= 0.5 in the toolkit) is exact and no
    box is a false positive. Per keyframe, predicted groups are assigned to true ones (``_match_groups``);
    a person is correct when its group maps onto its true group, and a wrong one drops out of the
    ranking (the toolkit relabels it to a class it does not score). ``ap`` (task 2): VOC AP over all
    people ranked by ``pred['score']`` (the box confidence; 1.0 without it); ``ap_size_<c>`` (task 3):
    the same over people in true groups of c members in that keyframe (5plus: 5 and more), ``map_size``
    their mean over the sizes present. With no false positives each AP is the share of correct people.

    Difficulty: JRDB_eval.py marks a person difficult only when the file's last column is >= 2, while
    GT_conversion_script.py writes 0 or 1 (cluster_stat > 2), so the official numbers count every
    person; ``ignore_difficult=True`` instead leaves out people with cluster_stat > 2, VOC style."""
    _require(truth, ("seq_id", "frame", "group", "difficult"), "truth")
    kf, pid, score = _keyframe_ids(pred, truth)
    tid = truth["group"].to_numpy(np.int64)
    if (tid < 0).any():
        raise WorkbookError("truth: group ids must be >= 0 (JRDB_eval.py indexes a matrix by them)")
    correct = _match_groups(kf, pid, tid)
    counted = ~truth["difficult"].to_numpy(bool) if ignore_difficult else np.ones(len(truth), bool)
    size = pd.Series(tid).groupby([kf, tid]).transform("size").to_numpy()
    cls = np.minimum(size, 5)
    out = {"ap": _voc_ap(score[counted & correct], correct[counted & correct], int(counted.sum()))}
    for c, name in enumerate(SIZE_CLASSES, start=1):
        sel = counted & correct & (cls == c)
        out[f"ap_size_{name}"] = _voc_ap(score[sel], correct[sel], int((counted & (cls == c)).sum()))
    sizes = [out[f"ap_size_{n}"] for n in SIZE_CLASSES if np.isfinite(out[f"ap_size_{n}"])]
    out["map_size"] = float(np.mean(sizes)) if sizes else float("nan")
    out.update(n_people=int(counted.sum()), n_correct=int((counted & correct).sum()),
               n_keyframes=int(kf.max(initial=-1) + 1))
    return out


def _lines(cols: list[pd.Series]) -> str:
    """Space-separated rows, each ending in a newline (JRDB_eval.py cuts the last character of every
    line, so a last line without one would lose a digit)."""
    text = cols[0].astype(str)
    for c in cols[1:]:
        text = text + " " + c.astype(str)
    return "".join(text + "\n")


def write_jrdb_act_files(folder: str | Path, pred: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Path]:
    """``<folder>/groups/det_group.txt`` and ``gt_group.txt`` in JRDB_eval.py's 9 columns: sequence id,
    keyframe, x1 y1 x2 y2, group id, 1 (the action column, unused by tasks 2-3), then the score (det:
    the box confidence, 1.0 for ground-truth boxes) or the difficulty (gt: 1 where cluster_stat > 2).
    Both hold exactly the people of ``truth`` (from ``make_jrdb_act_truth``): with ground-truth boxes a
    box the truth leaves out could only be a false positive. Predicted ids are 1..k per keyframe.
    JRDB_eval.py scores sequence ids 0..26 only, so with more sequences the people are written as parts
    ``det_group_1.txt``/``gt_group_1.txt``, ... of at most 27 sequences each, ids renumbered from 0 in
    every part (keys ``det_1``, ``gt_1``, ...): run the toolkit on each part.
    Run the official evaluation on them with ``JRDB_eval.py -g gt_group.txt -d det_group.txt -t task_2
    --labelmap label_map/task_2.pbtxt`` (and task_3); under numpy >= 1.24 first restore the aliases it
    uses (np.float, np.int, np.bool; np.NAN under numpy 2), e.g. in a wrapper that then runs it."""
    _, pid, score = _keyframe_ids(pred, truth)
    t = truth.reset_index(drop=True)
    part = t["seq_id"].to_numpy() // MAX_SEQUENCES
    n_parts = int(part.max(initial=0)) + 1
    out, files = Path(folder) / "groups", {}
    for k in range(n_parts):
        rows = part == k
        suffix = "" if n_parts == 1 else f"_{k + 1}"
        det, gt = _act_lines(t[rows].reset_index(drop=True), pid[rows], score[rows], k * MAX_SEQUENCES)
        files[f"det{suffix}"] = atomic_write_text(out / f"det_group{suffix}.txt", det)
        files[f"gt{suffix}"] = atomic_write_text(out / f"gt_group{suffix}.txt", gt)
    return files


def _act_lines(t: pd.DataFrame, pid: np.ndarray, score: np.ndarray, first_id: int) -> tuple[str, str]:
    """The det and gt lines of one part, sequence ids counted from ``first_id``."""
    one = pd.Series(np.ones(len(t), np.int64))
    head = [t["seq_id"] - first_id, t["frame"], t["x1"].astype(float), t["y1"].astype(float),
            t["x2"].astype(float), t["y2"].astype(float)]
    # Scores in full (repr): JRDB_eval.py ranks by them, so a rounded score could reorder people.
    det = _lines(head + [pd.Series(pid), one, pd.Series(score, dtype=np.float64)])
    gt = _lines(head + [t["group"].astype(np.int64), one, t["difficult"].astype(np.int64)])
    return det, gt


def evaluate_groups(scenes: Scenes, val_pairs: pd.DataFrame, test_pairs: pd.DataFrame,
                    folder: str | Path | None = None, grid: Sequence[float] | None = None) -> dict[str, Any]:
    """Both grouping methods end to end: the threshold chosen on the validation sequences (PAR F1),
    groups formed on the test sequences, scored with PAR and JRDB-Act. Returns ``table`` (one row per
    method), ``best`` (the method with the higher validation F1), flat ``metrics``, and with a
    ``folder`` the JRDB-Act files of the best method (``files``)."""
    names = {k: [scenes.sequences[s] for s in np.unique(v["seq"])]
             for k, v in (("val", val_pairs), ("test", test_pairs))}
    val_truth, test_truth = make_true_groups(scenes, names["val"]), make_true_groups(scenes, names["test"])
    act_truth = make_jrdb_act_truth(scenes, names["test"])
    rows, preds = [], {}
    for method in METHODS:
        choice = choose_threshold(val_pairs, val_truth, method, grid)
        preds[method] = form_groups(test_pairs, choice["threshold"], method, people=test_truth)
        par = score_groups_par(preds[method], test_truth)
        act = score_groups_jrdb_act(preds[method], act_truth)
        rows.append({"method": method, "threshold": choice["threshold"], "val_f1": choice["f1"],
                     **{f"par_{k}": v for k, v in par.items()}, **{f"act_{k}": v for k, v in act.items()}})
    table = pd.DataFrame(rows)
    best = str(table.loc[table["val_f1"].idxmax(), "method"])
    metrics = {f"{r['method']}.{k}": v for r in rows for k, v in r.items() if k != "method"}
    files = write_jrdb_act_files(folder, preds[best], act_truth) if folder is not None else {}
    return {"table": table, "best": best, "metrics": metrics, "files": files, "predictions": preds}
