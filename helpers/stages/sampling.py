"""Notebook 01 (pair sampling): the sweeps of the distance rule, the pair sample's counts, the pair datasets
and the tables they are measured in. The words, figures and the live panel are in `helpers.reports.sampling`."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.data.crops import load_crops
from helpers.data.jrdb import find_stitched_images, load_scenes
from helpers.data.pair_sampling import (_ratio, make_inferred_counts, make_pair_sample, make_scene_pairs, PairSample,
                                        PRESET_EPOCHS, PRESETS)
from helpers.data.scene_pairs import (evaluate_split_leakage, make_dataset_meta, make_scene_pair_dataset,
                                      make_split_method, make_split_of_frame, make_type_group_counts, TooShortToSplit,
                                      write_pair_dataset)
from helpers.data.scene_stats import make_scene_stats_table
from helpers.data.scenes import Scenes, select_keyframes, TYPE_NAMES

# What notebook 01 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["evaluate_at_multiplier", "evaluate_sampling_counts", "evaluate_split_leakage", "load_example_crops",
           "load_scenes", "make_dataset_card", "make_dataset_meta", "make_pair_sample", "make_pairs_per_frame_table",
           "make_presets_table", "make_recall_table", "make_scene_pair_datasets", "make_scene_pairs",
           "make_scene_stats_table", "make_split_method", "make_sweep_table", "make_type_groups_table",
           "select_keyframes", "write_scene_pair_datasets"]


def make_sweep_table(pairs: dict[str, np.ndarray], multipliers=None, n_frames: int | None = None,
                     max_multiplier: float = 6.0, include: float | None = None) -> pd.DataFrame:
    """For each distance multiplier (1 to ``max_multiplier`` in steps of 0.5, plus ``include``), with
    and without wrap: share of all same-frame pairs kept, share of positive (same-group) pairs kept
    (recall), and positives lost at the seam without wrap."""
    if multipliers is None:
        ms = np.arange(1.0, max_multiplier + 1e-9, 0.5)
        ms = np.unique(np.r_[ms, [include]] if include is not None else ms)
    else:
        ms = np.asarray(multipliers, dtype=float)
    pos = pairs["same_group"]
    n_all, n_pos = max(len(pos), 1), max(int(pos.sum()), 1)
    nf = n_frames or max(len(np.unique(pairs["fid"])), 1)
    rw, rp = np.sort(pairs["r_wrap"]), np.sort(pairs["r_plain"])
    rwp, rpp = np.sort(pairs["r_wrap"][pos]), np.sort(pairs["r_plain"][pos])
    rows = []
    for wrap, r_all, r_pos in ((True, rw, rwp), (False, rp, rpp)):
        kept = np.searchsorted(r_all, ms, side="right")   # r <= m: the rule is inclusive
        kept_pos = np.searchsorted(r_pos, ms, side="right")
        lost = np.searchsorted(rwp, ms, side="right") - np.searchsorted(rpp, ms, side="right")
        for m, k, kp, lo in zip(ms, kept, kept_pos, lost):
            rows.append({"distance_multiplier": float(m), "wrap": wrap, "frac_kept": k / n_all,
                         "reduction": 1 - k / n_all, "positive_recall": kp / n_pos, "positives_kept": int(kp),
                         "seam_positives_lost": 0 if wrap else int(lo), "pairs_per_frame": k / nf})
    return pd.DataFrame(rows)


def make_presets_table(scenes: Scenes, use_wrap: bool = True, use_group_sampling: bool = True,
                       max_group_samples_ratio: float = 1.0, stage1_balance_ratio: float = 1.0,
                       seed: int = 0) -> pd.DataFrame:
    """M0's presets (quick 2.0/3, standard 3.0/5, high quality 4.0/7) on these scenes."""
    rows = []
    for name, (m, cap) in PRESETS.items():
        s = make_pair_sample(scenes, m, use_wrap, use_group_sampling, max_group_samples_ratio, cap,
                             stage1_balance_ratio, seed)
        c = s.counts
        rows.append({"preset": name, "distance_multiplier": m, "max_negatives_per_frame": cap,
                     "epochs (note)": PRESET_EPOCHS[name], "candidate_frac_kept": c["candidates"] / max(c["all_pairs"], 1),
                     "positive_recall": c["candidate_positives"] / max(c["all_positives"], 1),
                     "end-to-end recall": c["positives"] / max(c["all_positives"], 1),
                     "positives": c["positives"], "negatives": c["negatives"],
                     "pairs per frame": (c["positives"] + c["negatives"]) / max(c["frames"], 1),
                     "positives per negative": _ratio(c["positives"], c["negatives"])})
    return pd.DataFrame(rows).set_index("preset")


def make_pairs_per_frame_table(scenes: Scenes, pairs: dict[str, np.ndarray], sample: PairSample) -> pd.DataFrame:
    """Per frame: people, all pairs, candidates (at the sample's settings), sampled pairs."""
    nf = scenes.n_frames
    m, wrap = sample.settings["distance_multiplier"], sample.settings["use_wrap"]
    r = pairs["r_wrap"] if wrap else pairs["r_plain"]
    fid = scenes.people["fid"].to_numpy()
    return pd.DataFrame({
        "people": np.bincount(fid, minlength=nf),
        "all pairs": np.bincount(pairs["fid"], minlength=nf),
        "candidates": np.bincount(pairs["fid"][r <= m], minlength=nf),
        "sampled pairs": np.bincount(fid[sample.i], minlength=nf),
    })


def evaluate_sampling_counts(pairs: dict[str, np.ndarray], distance_multiplier: float, max_negatives_per_frame: int,
                             use_wrap: bool = True) -> dict[str, float]:
    """Fast counts for one setting (the widget's callback): candidates, recall, capped negatives."""
    r = pairs["r_wrap"] if use_wrap else pairs["r_plain"]
    keep = r <= distance_multiplier
    pos = pairs["same_group"]
    nf = max(len(np.unique(pairs["fid"])), 1)
    neg_per_frame = np.bincount(pairs["fid"][keep & ~pos])
    neg_capped = int(np.minimum(neg_per_frame, max_negatives_per_frame).sum())
    n_pos_kept = int((keep & pos).sum())
    return {"candidates": int(keep.sum()), "candidate_frac_kept": float(keep.mean()) if len(keep) else 0.0,
            "positive_recall": n_pos_kept / max(int(pos.sum()), 1), "positives_kept": n_pos_kept,
            "negatives_after_cap": neg_capped, "pairs_per_frame": (n_pos_kept + neg_capped) / nf}


def evaluate_at_multiplier(pairs: dict[str, np.ndarray], distance_multiplier: float) -> dict[str, float]:
    """Headline numbers at one multiplier (wrap on), and what ignoring the wrap loses."""
    on = evaluate_sampling_counts(pairs, distance_multiplier, 0, True)
    off = evaluate_sampling_counts(pairs, distance_multiplier, 0, False)
    lost = on["positives_kept"] - off["positives_kept"]
    return {"candidate_frac_kept": on["candidate_frac_kept"], "positive_recall": on["positive_recall"],
            "seam_positives_lost_without_wrap": int(lost),
            "seam_positives_lost_frac": lost / max(on["positives_kept"], 1),
            "positive_recall_without_wrap": off["positive_recall"]}


def make_scene_pair_datasets(scenes: Scenes, sample: PairSample, val_fraction: float, test_fraction: float,
                             seed: int) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """The pair datasets and "" -- or, when the scenes are too few and too short to split (2 sequences of 2
    frames), every pair in train, val and test empty, and why no pair datasets are written: the sampling
    analysis needs no split, so it is still reported."""
    try:
        return make_scene_pair_dataset(scenes, sample, val_fraction, test_fraction, seed), ""
    except TooShortToSplit as e:
        ds = make_scene_pair_dataset(scenes, sample, val_fraction, test_fraction, seed, all_train_if_short=True)
        return ds, f"No pair datasets are written: {e}. The sampling above is measured on all frames"


def write_scene_pair_datasets(ds: dict[str, dict[str, np.ndarray]], folder, meta: dict[str, Any],
                              unsplittable: str):
    """Write the pair datasets (the folder), or nothing when they cannot be split (None)."""
    return None if unsplittable else write_pair_dataset(ds, folder, meta)


def make_recall_table(scenes: Scenes, sample: PairSample, ds: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per split and overall: interacting (same-group) pairs in the frames, how many survive each step,
    and the end-to-end recall (interacting pairs that reach training / all interacting pairs); beside it
    the recall counting pairs inferable by transitivity from those that reach training (M0's group inference)."""
    fid = scenes.people["fid"].to_numpy()
    split_of_frame = make_split_of_frame(scenes, ds)
    pos = sample.y == 1
    fc = {**sample.frame_counts, "inferred": make_inferred_counts(fid, sample.i[pos], sample.j[pos], scenes.n_frames)}
    cols = {"interacting pairs": "all_positives", "after distance rule": "candidate_positives",
            "after group sampling": "positives_sampled", "reach training": "positives"}
    rows = {name: {c: int(fc[k][split_of_frame == s].sum()) for c, k in cols.items()} | {
        "_inferred": int(fc["inferred"][split_of_frame == s].sum())} for s, name in enumerate(ds)}
    rows["all"] = {c: int(fc[k].sum()) for c, k in cols.items()} | {"_inferred": int(fc["inferred"].sum())}
    df = pd.DataFrame.from_dict(rows, orient="index").rename_axis("split")
    n = df["interacting pairs"].where(df["interacting pairs"] > 0)
    df["end-to-end recall"] = df["reach training"] / n
    df["recall incl. inferred"] = df.pop("_inferred") / n
    return df


def make_type_groups_table(scenes: Scenes, sample: PairSample, ds: dict[str, dict[str, np.ndarray]]) -> pd.DataFrame:
    """Per split: its sequences, and the groups of each interaction type with at least one pair in it
    (the units the stage-2 type head is scored on)."""
    if make_split_method(scenes) == "by_frame_block":   # sequences are in every split: count per block
        split = make_split_of_frame(scenes, ds)[scenes.people["fid"].to_numpy()[sample.i]]
        rows = {k: [len(np.unique(a["seq"])), *make_type_group_counts(scenes, sample, split == n).sum(0)]
                for n, (k, a) in enumerate(ds.items())}
        return pd.DataFrame.from_dict(rows, orient="index", columns=["sequences", *TYPE_NAMES]).rename_axis("split")
    per_seq = make_type_group_counts(scenes, sample)                       # [S, C]
    rows = {k: [len(np.unique(a["seq"])), *per_seq[np.unique(a["seq"])].sum(0)] for k, a in ds.items()}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["sequences", *TYPE_NAMES]).rename_axis("split")


def make_dataset_card(scenes: Scenes, sample: PairSample, ds: dict[str, dict[str, np.ndarray]], seed: int
                      ) -> dict[str, Any]:
    """The run card's dataset section (M3): sizes, sequences (subjects) per split, split method, and the
    leakage check that ran on the written splits (sequences and person ids shared, with the counts)."""
    method = make_split_method(scenes)
    leak = evaluate_split_leakage(ds, method)
    return {"name": "scene_pairs", "source": scenes.source, "generated": bool(scenes.generated),
            "total_samples": int(sum(len(a["y"]) for a in ds.values())),
            **{f"{k}_samples": int(len(a["y"])) for k, a in ds.items()},
            **{f"{k}_subjects": int(len(np.unique(a["seq"]))) for k, a in ds.items()},
            "subject": "sequence" if method == "by_sequence" else "frame block of a sequence",
            "random_seed": seed, "split_method": method,
            "data_leakage_prevention": leak["passed"], "leakage_check": leak, "sampling": sample.settings}


def load_example_crops(scenes: Scenes, ds: dict[str, dict[str, np.ndarray]], size, n_pairs: int = 6
                       ) -> dict[str, Any]:
    """A few training pairs of one sequence as the image models see them: {"a", "b": [n, 3, H, W] uint8,
    "titles"}: a positive of each interaction type present first, then negatives, from frames that have an
    image (a figure should not fail on a partly downloaded folder). Empty without images."""
    t = ds["train"]
    with_image = np.zeros(len(t["y"]), bool)
    for s in np.unique(t["seq"]).tolist() if scenes.n_images else []:
        have = list(find_stitched_images(scenes.image_root, scenes.sequences[s]))
        with_image |= (t["seq"] == s) & np.isin(t["frame"], have)
    if not with_image.any():
        return {"a": np.zeros((0, 3, *size), np.uint8), "b": np.zeros((0, 3, *size), np.uint8), "titles": []}
    on_seq = np.flatnonzero(with_image & (t["seq"] == t["seq"][with_image][0]))
    typ = t["type"][on_seq]
    firsts = [on_seq[typ == k][0] for k in range(len(TYPE_NAMES)) if (typ == k).any()]
    rows = np.r_[firsts, on_seq[typ < 0]][:n_pairs].astype(np.int64)
    a = load_crops(scenes, t["seq"][rows], t["frame"][rows], t["track_a"][rows], size)
    b = load_crops(scenes, t["seq"][rows], t["frame"][rows], t["track_b"][rows], size)
    titles = [f"{TYPE_NAMES[k] if k >= 0 else 'not interacting'}\nframe {f:06d}, {ta} & {tb}"
              for k, f, ta, tb in zip(t["type"][rows], t["frame"][rows], t["track_a"][rows], t["track_b"][rows])]
    return {"a": a, "b": b, "titles": titles}


