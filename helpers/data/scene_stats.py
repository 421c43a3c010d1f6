"""How the loaded scenes compare with JRDB's published statistics (notebooks 00 and 01)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.data.geometry import make_frame_pairs
from helpers.data.scenes import JRDB_REFERENCE, Scenes, TYPE_NAMES


def make_scene_stats_table(scenes: Scenes) -> pd.DataFrame:
    """The scenes' statistics next to the JRDB reference values (one row per statistic)."""

    p = scenes.people
    per_frame = p.groupby("fid").size()
    gsz = p.groupby("group")["track"].nunique()
    pairs = make_frame_pairs(p["fid"].to_numpy(), p["cx"].to_numpy(), p["w"].to_numpy(), p["group"].to_numpy(),
                             width=scenes.width)
    same = pairs["same_group"]
    n_pairs = max(len(same), 1)
    gap = pairs["d_plain"][same]
    dw = pairs["d_wrap"]
    t_pair = p["type"].to_numpy()[pairs["i"][same]]
    val: dict[str, float] = {
        "people per frame, mean": per_frame.mean(),
        "people per frame, median": per_frame.median(),
        "people per frame, max": per_frame.max(),
        "share of groups that are single people": (gsz == 1).mean(),
        "share of people alone": (p.groupby(["fid", "group"])["track"].transform("size") == 1).mean(),
        "same-group pairs / all same-frame pairs": same.sum() / n_pairs,
        "within-group horizontal gap, median (px)": float(np.median(pairs["d_wrap"][same])) if same.any() else np.nan,
        "within-group horizontal gap, p95 (px)": float(np.percentile(pairs["d_wrap"][same], 95)) if same.any() else np.nan,
        "same-group pairs closer across the seam": (gap > scenes.width / 2).mean() if same.any() else np.nan,
    }
    for thr in (200, 400, 752):
        val[f"all pairs kept at {thr} px (wrapped)"] = (dw <= thr).mean() if len(dw) else np.nan
        val[f"same-group pairs kept at {thr} px"] = (dw[same] <= thr).mean() if same.any() else np.nan
    for c, name in enumerate(TYPE_NAMES):
        val[f"type share: {name}"] = (t_pair == c).mean() if len(t_pair) else np.nan
    label = "generated" if scenes.generated else "this data"
    rows = [{"statistic": k, label: float(v), "JRDB reference": JRDB_REFERENCE[k]} for k, v in val.items()]
    return pd.DataFrame(rows).set_index("statistic")


def describe_scene_stats(stats: pd.DataFrame, tolerance: float = 0.25) -> str:
    """How far the scenes are from JRDB, computed from ``make_scene_stats_table``: how many statistics lie
    within ``tolerance`` (relative) of JRDB's value, the furthest off, and the pair shares of the types."""
    label = stats.columns[0]
    val, ref = stats[label], stats["JRDB reference"]
    rel = ((val - ref).abs() / ref.abs()).dropna()
    off = rel[rel > tolerance].sort_values(ascending=False)
    furthest = "; ".join(f"{k} {val[k]:.3g} vs {ref[k]:.3g}" for k in off.index[:4]) or "none"
    types = [k for k in stats.index if k.startswith("type share: ")]
    shares = " / ".join(f"{val[k]:.1%}" for k in types)
    why = (" The generator gives every sequence a few groups of each interaction type (pairs in view for a few "
           "seconds) so that every split can score every type; that moves the group-size and type statistics "
           "away from JRDB's.") if label == "generated" else ""
    return (f"{label.capitalize()} scenes against JRDB: {len(rel) - len(off)} of {len(rel)} statistics within "
            f"{tolerance:.0%} of JRDB's value; furthest off: {furthest}. Pair shares of the types "
            f"({' / '.join(k.removeprefix('type share: ') for k in types)}): {shares} vs JRDB "
            f"{' / '.join(f'{ref[k]:.1%}' for k in types)}.{why}")
