"""Prediction files: what notebooks 02-04 write and notebook 05 stacks (``predictions/<model>.npz``).

Each file holds val/test probabilities and labels, the splits the model trained on and was selected
on, and optionally the content keys of its training examples for the exact leakage check."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_savez
from helpers.data.pairs import dataset_labels


def write_prediction_file(out_dir: Path, model_name: str, val_prob, test_prob, val_y, test_y,
                          selected_on: str = "val") -> Path:
    """``<out_dir>/predictions/<model_name>.npz`` in notebook 05's format."""
    path = Path(out_dir) / "predictions" / f"{model_name}.npz"

    return write_predictions(path, val_prob, test_prob, val_y, test_y, trained_on=["train"], selected_on=selected_on)


def write_predictions(path: str | Path, val_prob: np.ndarray, test_prob: np.ndarray, val_y: np.ndarray,
                      test_y: np.ndarray, trained_on: Sequence[str] = ("train",),
                      selected_on: str = "val", train_keys: np.ndarray | None = None) -> Path:
    """Write one base model's prediction file (the stacking contract), atomically.

    trained_on: the split(s) whose examples the model's weights were fitted on.
    selected_on: the split used for early stopping / checkpoint choice ("val", "train_holdout", "none").
    train_keys: `make_example_keys` of every example the model trained on (optional, exact check).
    """
    val_prob = np.asarray(val_prob, dtype=np.float64).reshape(-1)
    test_prob = np.asarray(test_prob, dtype=np.float64).reshape(-1)
    if val_prob.shape[0] != np.asarray(val_y).shape[0] or test_prob.shape[0] != np.asarray(test_y).shape[0]:
        raise WorkbookError(f"{path}: probabilities and labels differ in length "
                            f"(val {val_prob.shape[0]} vs {np.asarray(val_y).shape[0]}, "
                            f"test {test_prob.shape[0]} vs {np.asarray(test_y).shape[0]})")
    arrays: dict[str, np.ndarray] = {
        "val_prob": val_prob, "test_prob": test_prob,
        "val_y": np.asarray(val_y, dtype=np.int64), "test_y": np.asarray(test_y, dtype=np.int64),
        "trained_on": np.asarray(list(trained_on), dtype=str),
        "selected_on": np.asarray(selected_on, dtype=str),
    }
    if train_keys is not None:
        arrays["train_keys"] = np.asarray(train_keys, dtype=np.uint64)
    return atomic_savez(path, **arrays)


@dataclass
class BasePredictions:
    """The base models' probabilities side by side (columns in `names` order)."""
    dataset: str
    names: list[str]                 # "<stem>/<model>"
    files: list[Path]
    val_prob: np.ndarray             # [N_val, M] float64
    test_prob: np.ndarray            # [N_test, M] float64
    val_y: np.ndarray                # [N_val] int64
    test_y: np.ndarray               # [N_test] int64
    trained_on: list[list[str] | None]   # None = the file does not say
    selected_on: list[str | None]
    train_keys: list[np.ndarray | None]
    duplicates: dict[str, str] = field(default_factory=dict)   # dropped model -> the identical one kept

    @property
    def n_models(self) -> int:
        return len(self.names)

    def subset(self, keep: Sequence[int]) -> "BasePredictions":
        keep = list(keep)
        return BasePredictions(self.dataset, [self.names[i] for i in keep], [self.files[i] for i in keep],
                               self.val_prob[:, keep], self.test_prob[:, keep], self.val_y, self.test_y,
                               [self.trained_on[i] for i in keep], [self.selected_on[i] for i in keep],
                               [self.train_keys[i] for i in keep], dict(self.duplicates))


def drop_identical(bp: BasePredictions) -> BasePredictions:
    """Keep one of each group of models whose validation and test probabilities are bit-identical (e.g. 04's
    tuned members when the search's best configuration is the hand-set one): stacked, averaged or voted,
    a copy would count the same model twice."""
    seen: dict[bytes, int] = {}
    keep, dropped = [], {}
    for i in range(bp.n_models):
        key = bp.val_prob[:, i].tobytes() + bp.test_prob[:, i].tobytes()
        if key in seen:
            dropped[bp.names[i]] = bp.names[seen[key]]
        else:
            seen[key] = i
            keep.append(i)
    out = bp.subset(keep) if dropped else bp
    out.duplicates = {**bp.duplicates, **dropped}
    return out


# The notebooks whose prediction files notebook 05 stacks by default.
BASE_MODEL_NOTEBOOKS = ("02_stage1", "03_stage2", "04_multi_seed")


def load_base_predictions(run_dir: str | Path, dataset: str, sources: Sequence[str] = (),
                          label: str | None = None) -> BasePredictions:
    """Collect ``<run_dir>/<stem>/<label>/predictions/*.npz`` from the source notebooks.

    label: the folder the dataset's outputs live under, as `dataset_labels` gives it for the notebooks'
    list of datasets (default: the label of ``dataset`` on its own).
    sources: notebook stems to read (empty = those of `BASE_MODEL_NOTEBOOKS` that ran). Every file must
    hold val_prob, test_prob, val_y, test_y, and all files must agree on the labels (same split order),
    else a DataError names the file. Bit-identical models are kept once (`drop_identical`).
    """
    run_dir = Path(run_dir)
    ds = label or dataset_labels([str(dataset)])[0]   # the folder name 02-04 write the dataset's outputs under
    folders = {s: paths.upstream(run_dir, s) for s in (sources or BASE_MODEL_NOTEBOOKS)}
    for s in sources:
        if not folders[s].is_dir():
            raise DataError(f"sources: notebook {s!r} has no output folder {folders[s]}; run it first")
    stems = [s for s, f in folders.items() if f.is_dir()]
    files = [f for s in stems for f in sorted((folders[s] / ds / "predictions").glob("*.npz"))]
    if not files:
        raise DataError(f"no prediction files for dataset {ds!r} under {run_dir}/<stem>/{ds}/predictions/ "
                        f"(looked in {', '.join(stems) or 'no notebook folders'}): run notebooks 02-04 first")
    names, vp, tp, tr_on, sel_on, keys = [], [], [], [], [], []
    val_y = test_y = None
    ref_file = None
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001 - any unreadable file is a data error naming it
            raise DataError(f"{f}: cannot read prediction file: {e}") from None
        missing = [k for k in ("val_prob", "test_prob", "val_y", "test_y") if k not in d]
        if missing:
            raise DataError(f"{f}: missing key(s) {missing}; a prediction file needs val_prob, test_prob, val_y, test_y")
        v, t = d["val_prob"].astype(np.float64).reshape(-1), d["test_prob"].astype(np.float64).reshape(-1)
        if v.shape[0] != d["val_y"].shape[0] or t.shape[0] != d["test_y"].shape[0]:
            raise DataError(f"{f}: val_prob/test_prob lengths {v.shape[0]}/{t.shape[0]} do not match "
                            f"val_y/test_y {d['val_y'].shape[0]}/{d['test_y'].shape[0]}")
        if not (np.isfinite(v).all() and np.isfinite(t).all()) or v.min() < 0 or v.max() > 1 \
                or t.min() < 0 or t.max() > 1:
            raise DataError(f"{f}: probabilities must be finite and within [0, 1]")
        if val_y is None:
            val_y, test_y, ref_file = d["val_y"].astype(np.int64), d["test_y"].astype(np.int64), f
        elif not (np.array_equal(val_y, d["val_y"]) and np.array_equal(test_y, d["test_y"])):
            raise DataError(f"{f}: val_y/test_y differ from those of {ref_file}; all base models must "
                            "predict the same validation and test splits in the same order")
        stem = f.parent.parent.parent.name
        names.append(f"{stem}/{f.stem}")
        vp.append(v)
        tp.append(t)
        tr_on.append([str(s) for s in d["trained_on"].reshape(-1)] if "trained_on" in d else None)
        sel_on.append(str(d["selected_on"]) if "selected_on" in d else None)
        keys.append(d["train_keys"].astype(np.uint64) if "train_keys" in d else None)
    return drop_identical(BasePredictions(ds, names, files, np.stack(vp, 1), np.stack(tp, 1), val_y, test_y,
                                          tr_on, sel_on, keys))
