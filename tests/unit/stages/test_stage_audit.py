"""Notebook 00's stage module: the leakage line and run card say what was compared, with counts; the answer."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.data.pairs import PairSet, PairSplits
from helpers.stages import words
from helpers.reports.audit import describe_answer, describe_leakage
from helpers.stages.audit import evaluate_leakage, make_dataset_card, make_split_summary


def _split(ids: np.ndarray, n: int, seed: int) -> PairSet:
    rng = np.random.default_rng(seed)
    ida, idb = rng.choice(ids, n), rng.choice(ids, n)
    x = rng.random((n, 1, 2, 2)).astype(np.float32)
    return PairSet(xa=x, xb=x[::-1].copy(), y=(np.arange(n) % 2).astype(np.int64), ida=ida, idb=idb)


def _splits(name: str = "digit_pairs", shared: int = 0, with_ids: bool = True) -> PairSplits:
    train, val = _split(np.arange(0, 10), 40, 0), _split(np.arange(10, 20), 20, 1)
    test = _split(np.arange(20, 40), 30, 2)
    if shared:
        test.ida[:shared] = np.arange(shared)              # sources 0.. also appear in train
    if not with_ids:
        for s in (train, val, test):
            s.ida = s.idb = None
    return PairSplits(name, "image", False, "UCI handwritten digits (test); pairs", train, val, test,
                      {"split_method": "by_source_image"})


def test_leakage_line_says_what_was_compared_with_counts():
    s = _splits()
    leak = evaluate_leakage(s)
    line = describe_leakage(leak, s)
    n_src = " / ".join(str(len(x.sources)) for _, x in s.items())
    assert "40 / 20 / 30" in line and n_src in line and ": 0 shared" in line
    assert "13 writers" in line and "not writers" in line
    other = _splits(name="my_pairs")
    assert "writers" not in describe_leakage(evaluate_leakage(other), other).split("Not checked:")[0]
    no_ids = _splits(with_ids=False)
    assert "could not be checked" in describe_leakage(evaluate_leakage(no_ids), no_ids)


def test_run_card_carries_the_check():
    s = _splits()
    card = make_dataset_card(s, evaluate_leakage(s))
    assert card["data_leakage_prevention"] is True
    chk = card["leakage_check"]
    assert chk["pairs_per_split"] == {"train": 40, "val": 20, "test": 30}
    assert chk["sources_per_split"] == {k: len(x.sources) for k, x in s.items()}
    assert "source ids" in chk["compared"] and "writers" in chk["not_checked"]
    assert chk["leaked_sources"] == 0 and chk["shared_sources_by_split_pair"] == {"train-val": 0, "train-test": 0,
                                                                                    "val-test": 0}
    bad = _splits(shared=3)
    card = make_dataset_card(bad, evaluate_leakage(bad))
    assert card["data_leakage_prevention"] is False and card["leakage_check"]["leaked_sources"] == 3


def test_answer_is_computed():
    s = _splits()
    leak = evaluate_leakage(s)
    stats = pd.DataFrame({"generated": [25.0, 0.5], "JRDB reference": [24.9, 0.9]}, index=["a", "b"])
    text = describe_answer(make_split_summary(s), leak, s, stats)
    assert "40 pairs" in text and "50.0%" in text and "No source image" in text     # counts, rate, verdict
    assert "13 writers" in text and "1 of their 2" in text
    assert len(words.sentences(text)) <= 4 and len(text.split()) <= 90
    bad = _splits(shared=2)
    assert "2 source images are in two splits" in describe_answer(make_split_summary(bad), evaluate_leakage(bad), bad, stats)
