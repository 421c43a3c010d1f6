"""Data-contract checks of a pair dataset: split summary, leakage across splits, the run card's dataset section."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from helpers.core.hashing import make_example_keys
from helpers.data.pairs import PairSplits


def make_split_summary(splits: PairSplits) -> pd.DataFrame:
    """Counts, label balance, sources and value ranges per split."""
    rows = []
    for split, s in splits.items():
        src = s.sources
        rows.append({"split": split, "pairs": len(s), "positive rate": float(s.y.mean()) if len(s) else np.nan,
                     "distinct sources": None if src is None else len(src),
                     "input shape": "x".join(map(str, s.xa.shape[1:])), "min": float(min(s.xa.min(), s.xb.min())),
                     "max": float(max(s.xa.max(), s.xb.max())), "mean": float((s.xa.mean() + s.xb.mean()) / 2)})
    return pd.DataFrame(rows).set_index("split")


def evaluate_leakage(splits: PairSplits) -> dict[str, Any]:
    """Sources shared across splits (by id) and exact duplicate pairs across splits (by content)."""
    keys = {split: make_example_keys(s.xa, s.xb) for split, s in splits.items()}
    dup = {f"{a}-{b}": int(np.isin(keys[b], keys[a]).sum())
           for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    out: dict[str, Any] = {"duplicate_pairs_across_splits": int(sum(dup.values())), "duplicates_by_split_pair": dup}
    if any(s.ida is None for _, s in splits.items()):
        out.update(leaked_sources=None, ids_available=False,
                   leak_message="no ids: cannot check sources shared across splits")
        return out
    src = {split: s.sources for split, s in splits.items()}
    shared = {f"{a}-{b}": int(np.intersect1d(src[a], src[b]).size)
              for a, b in (("train", "val"), ("train", "test"), ("val", "test"))}
    total = int(np.unique(np.concatenate([np.intersect1d(src["train"], src["val"]),
                                          np.intersect1d(src["train"], src["test"]),
                                          np.intersect1d(src["val"], src["test"])])).size)
    out.update(leaked_sources=total, shared_sources_by_split_pair=shared, ids_available=True,
               leak_message="no source appears in two splits" if total == 0 else
               f"WARNING: {total} source ids appear in more than one split: results would be optimistic")
    return out


def make_leakage_table(leak: dict[str, Any]) -> pd.DataFrame:
    """Per pair of splits: sources shared (by id) and pairs with identical content."""
    shared = leak.get("shared_sources_by_split_pair") or {}
    rows = [{"splits": k, "shared sources": shared.get(k, "no ids"), "duplicate pairs": v}
            for k, v in leak["duplicates_by_split_pair"].items()]
    return pd.DataFrame(rows).set_index("splits")


def make_digit_frequency(splits: PairSplits) -> pd.DataFrame | None:
    """How often each digit appears among pair members, per split (built-in pairs only)."""
    if "digit_a" not in splits.train.extras:
        return None
    rows = {}
    for split, s in splits.items():
        digits = np.concatenate([s.extras["digit_a"], s.extras["digit_b"]])
        rows[split] = np.bincount(digits, minlength=10) / len(digits)
    return pd.DataFrame(rows, index=pd.Index(range(10), name="digit"))


def make_dataset_card(splits: PairSplits, leak: dict[str, Any]) -> dict[str, Any]:
    """The `dataset` section of config.json (M3): samples and sources per split, split method, leakage."""
    card: dict[str, Any] = {"name": splits.name, "source": splits.source, "generated": splits.generated,
                            "kind": splits.kind, "input_shape": list(splits.train.xa.shape[1:])}
    for split, s in splits.items():
        card[f"{split}_samples"] = len(s)
        card[f"{split}_sources"] = None if s.sources is None else int(len(s.sources))
    card["total_samples"] = sum(len(s) for _, s in splits.items())
    card["random_seed"] = splits.meta.get("settings", {}).get("seed")
    card["split_method"] = splits.meta.get("split_method", "as provided by the user")
    card["data_leakage_prevention"] = leak.get("leaked_sources") == 0
    card["leakage_check"] = {k: v for k, v in leak.items() if k != "leak_message"} | {"message": leak["leak_message"]}
    return card
