"""Notebook 00 (data audit): what the later notebooks train and test on, and whether anything leaks.
The words and figures are in `helpers.reports.audit`."""
from __future__ import annotations

from typing import Any

from helpers.data.audit import (evaluate_leakage, make_dataset_card as make_pair_card, make_digit_frequency,
                                make_split_summary)
from helpers.data.digits import load_audit_pairs
from helpers.data.jrdb import load_scenes
from helpers.data.pairs import PairSplits
from helpers.data.scene_stats import make_scene_stats_table
from helpers.data.scenes import select_keyframes

# What notebook 00 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["evaluate_leakage", "load_audit_pairs", "load_scenes", "make_dataset_card", "make_digit_frequency",
           "make_leak_scope", "make_scene_stats_table", "make_split_summary", "select_keyframes"]


# scikit-learn's digits are the UCI test set: 1,797 images written by 13 people (load_digits().DESCR),
# with no writer id, so a split by source image cannot keep writers apart.
DIGIT_WRITERS = 13


def make_leak_scope(splits: PairSplits, leak: dict[str, Any]) -> dict[str, Any]:
    """What the leakage check compared and on how many pairs and sources, and what it cannot see."""
    compared = ("source ids (ida, idb) of every pair, and every pair's content (order-free hash), between each two "
                "splits" if leak.get("ids_available") else "every pair's content (order-free hash) between each two "
                "splits; no ids, so shared sources were not compared")
    if splits.name == "digit_pairs":
        unchecked = (f"writers: the split by source image keeps images apart but not writers (the 1,797 UCI digits "
                     f"come from {DIGIT_WRITERS} writers and carry no writer id), so test digits are new images by "
                     "writers also seen in training")
    else:
        unchecked = "anything coarser than a source id (the same person, writer or scene under different ids)"
    return {"compared": compared, "pairs_per_split": {k: len(s) for k, s in splits.items()},
            "sources_per_split": {k: None if s.sources is None else int(len(s.sources)) for k, s in splits.items()},
            "not_checked": unchecked}


def make_dataset_card(splits: PairSplits, leak: dict[str, Any]) -> dict[str, Any]:
    """The run card's dataset section (M3); its leakage check says what was compared, the counts per split
    and shared between splits, and what the split does not keep apart. ``data_leakage_prevention`` is the
    check's result (no source shared), not a promise."""
    card = make_pair_card(splits, leak)
    card["leakage_check"] = {**card["leakage_check"], **make_leak_scope(splits, leak)}
    return card


