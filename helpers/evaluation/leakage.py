"""Leakage checks: whether a model saw, in training, an example it is later stopped, stacked or scored on.
By content (order-free example keys) and, where the data records them, by source images (sequences for scene
pairs): a base model's recorded training examples against the rows a meta-learner trains and is scored on
(`check_no_leakage`), and the rows a model is fitted on against every other set it meets (`evaluate_fit_leakage`)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.data.pairs import source_groups
from helpers.data.predictions import BasePredictions


class LeakageError(WorkbookError):
    """An example the meta-learner trains on (or is scored on) was seen by a base model in training."""


def check_no_leakage(base: BasePredictions, split_keys: dict[str, np.ndarray],
                     meta_split: str = "val", test_split: str = "test") -> pd.DataFrame:
    """Prove that no base model trained on an example the meta-learner trains or is scored on.

    split_keys: `make_example_keys` of each split of the dataset ("train", "val", "test").
    A model's training examples are its recorded ``train_keys`` when present, else the keys of the
    splits it says it ``trained_on``; a file that says neither is assumed to have trained on
    "train" (and the table says "assumed"). Raises `LeakageError` listing every offending model;
    otherwise returns one row per model with what was checked.
    """
    for s in (meta_split, test_split):
        if s not in split_keys:
            raise WorkbookError(f"check_no_leakage: split_keys has no {s!r} split (has {sorted(split_keys)})")
    meta_keys, test_keys = split_keys[meta_split], split_keys[test_split]
    if meta_keys.shape[0] != base.val_y.shape[0] or test_keys.shape[0] != base.test_y.shape[0]:
        raise LeakageError(f"dataset {base.dataset!r}: the prediction files hold {base.val_y.shape[0]} val / "
                           f"{base.test_y.shape[0]} test rows but the dataset's splits have {meta_keys.shape[0]} / "
                           f"{test_keys.shape[0]}: the predictions are not of this dataset's splits")
    rows, problems = [], []
    for i, name in enumerate(base.names):
        record = "recorded"
        trained_on = base.trained_on[i]
        if trained_on is None:
            trained_on, record = ["train"], "assumed train"
        bad_splits = [s for s in trained_on if s in (meta_split, test_split)]
        if base.train_keys[i] is not None:
            seen = base.train_keys[i]
            source = "train_keys"
        else:
            unknown = [s for s in trained_on if s not in split_keys]
            if unknown:
                raise WorkbookError(f"{base.files[i]}: trained_on names split(s) {unknown}; known: {sorted(split_keys)}")
            seen = np.concatenate([split_keys[s] for s in trained_on]) if trained_on else np.zeros(0, np.uint64)
            source = "split keys"
        n_meta = int(np.isin(meta_keys, seen).sum())
        n_test = int(np.isin(test_keys, seen).sum())
        rows.append({"model": name, "trained_on": "+".join(trained_on), "record": record,
                     "selected_on": base.selected_on[i] or "not recorded", "checked_with": source,
                     "n_seen": int(seen.shape[0]), f"{meta_split}_rows_seen": n_meta, f"{test_split}_rows_seen": n_test})
        if bad_splits or n_meta or n_test:
            problems.append(f"{name} ({base.files[i]}): trained_on={trained_on}, {n_meta} of {meta_keys.shape[0]} "
                            f"{meta_split} rows and {n_test} of {test_keys.shape[0]} {test_split} rows were in its training data")
    if problems:
        raise LeakageError("LEAKAGE: the meta-learner's data was seen by base models in training:\n  "
                           + "\n  ".join(problems))
    return pd.DataFrame(rows)


def make_split_keys(splits) -> dict[str, np.ndarray]:
    """Example keys (`make_example_keys`) of each split of a `helpers.data.pairs.PairSplits`."""
    out = {}
    for name in ("train", "val", "test"):
        s = getattr(splits, name)
        out[name] = make_example_keys(s.xa, s.xb, s.extras.get("pair") if s.extras else None)
    return out


def make_row_keys(s, rows=None, use_pair: bool = False) -> np.ndarray:
    """Example keys (`make_example_keys`) of ``rows`` of one split (all rows when None), with its pair features
    when the model uses them."""
    r = slice(None) if rows is None else rows
    return make_example_keys(s.xa[r], s.xb[r], s.extras["pair"][r] if use_pair else None)


def evaluate_fit_leakage(fit: Sequence[tuple[Any, Any]], against: Mapping[str, tuple[Any, Any]],
                         use_pair: bool = False) -> dict[str, Any]:
    """What a model was fitted on, ``fit`` as (split, rows or None for all), held against each set in ``against``
    (name -> (split, rows)) it is stopped or scored on: pairs with the same content (order-free keys) and shared
    source ids (sequences for scene pairs). Returns what was compared, the counts and a verdict; nothing here
    trusts the split names."""
    fit_keys = np.concatenate([make_row_keys(s, r, use_pair) for s, r in fit])
    src = [np.concatenate([x if r is None else x[r] for x in g]) for s, r in fit if (g := source_groups(s)) is not None]
    fit_src = np.unique(np.concatenate(src)) if src else None
    sizes = ", ".join(f"{k} ({len(s.y) if r is None else len(r):,} pairs)" for k, (s, r) in against.items())
    out: dict[str, Any] = {"compared": f"{len(fit_keys):,} fitted pairs (content keys"
                                       + (", source ids)" if fit_src is not None else ")") + f" against {sizes}"}
    for name, (s, r) in against.items():
        out[f"{name}_pairs_shared"] = int(np.isin(make_row_keys(s, r, use_pair), fit_keys).sum())
        g = source_groups(s)
        if fit_src is not None and g is not None:
            other = np.unique(np.concatenate([x if r is None else x[r] for x in g]))
            out[f"{name}_sources_shared"] = int(np.intersect1d(other, fit_src).size)
    shared = sum(v for k, v in out.items() if k.endswith("_shared"))
    out["verdict"] = ("passed: no pair and no source image shared" if shared == 0
                      else f"FAILED: {shared} shared pairs/sources")
    return out
