"""Prediction files: what notebooks 02-04 write and notebook 05 stacks (``predictions/<model>.npz``).

Each file holds val/test probabilities and labels, the threshold the writing notebook declared for the
model (every later scoring of these probabilities uses it, never a literal 0.5), the splits the model trained
on and was selected on, and optionally the content keys of its training examples for the exact leakage check."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from helpers.core import paths
from helpers.core.errors import DataError, WorkbookError
from helpers.core.io import atomic_savez
from helpers.data.pairs import dataset_labels


def write_prediction_file(out_dir: Path, model_name: str, val_prob, test_prob, val_y, test_y, *, threshold: float,
                          selected_on: str = "val") -> Path:
    """``<out_dir>/predictions/<model_name>.npz`` in notebook 05's format."""
    path = Path(out_dir) / "predictions" / f"{model_name}.npz"
    return write_predictions(path, val_prob, test_prob, val_y, test_y, threshold=threshold, trained_on=["train"],
                             selected_on=selected_on)


def check_threshold(threshold, where: str) -> float:
    """The declared decision threshold as a float in (0, 1), else an error naming ``where`` it came from."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        t = float("nan")
    if not 0.0 < t < 1.0:
        raise DataError(f"{where}: threshold {threshold!r}; expected a number strictly between 0 and 1 (the "
                        "threshold the notebook that scored the model declared)")
    return t


def write_predictions(path: str | Path, val_prob: np.ndarray, test_prob: np.ndarray, val_y: np.ndarray,
                      test_y: np.ndarray, *, threshold: float, trained_on: Sequence[str] = ("train",),
                      selected_on: str = "val", train_keys: np.ndarray | None = None) -> Path:
    """Write one base model's prediction file (the stacking contract), atomically.

    threshold: the decision threshold the notebook declared for this model (read back by whoever re-scores it).
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
        "threshold": np.asarray(check_threshold(threshold, str(path)), dtype=np.float64),
    }
    if train_keys is not None:
        arrays["train_keys"] = np.asarray(train_keys, dtype=np.uint64)
    return atomic_savez(path, **arrays)


def load_threshold(path: str | Path) -> float:
    """The threshold a prediction file records (the one its notebook declared for the model), else a
    DataError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if "threshold" not in z.files:
                raise DataError(f"{path}: no 'threshold' recorded; a prediction file states the threshold its "
                                "notebook declared (rerun the notebook that wrote it)")
            value = z["threshold"]
    except OSError as e:
        raise DataError(f"{path}: cannot read prediction file: {e}") from None
    return check_threshold(value, str(path))


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
    thresholds: np.ndarray           # [M] the threshold each model's notebook declared (recorded in its file)
    duplicates: dict[str, str] = field(default_factory=dict)   # dropped model -> the identical one kept

    @property
    def n_models(self) -> int:
        return len(self.names)

    @property
    def threshold(self) -> float:
        """The one threshold the base models share. An ensemble's probability is one of the same label, so it
        is scored at the threshold its members declared; members that declared different ones have none."""
        values = np.unique(self.thresholds)
        if values.size != 1:
            declared = ", ".join(f"{n}: {t:g}" for n, t in zip(self.names, self.thresholds))
            raise DataError(f"dataset {self.dataset!r}: the base models declared different thresholds ({declared}); "
                            "an ensemble of one label needs one: set the same threshold in the notebooks that "
                            "wrote them")
        return float(values[0])

    def subset(self, keep: Sequence[int]) -> "BasePredictions":
        keep = list(keep)
        return BasePredictions(self.dataset, [self.names[i] for i in keep], [self.files[i] for i in keep],
                               self.val_prob[:, keep], self.test_prob[:, keep], self.val_y, self.test_y,
                               [self.trained_on[i] for i in keep], [self.selected_on[i] for i in keep],
                               [self.train_keys[i] for i in keep], self.thresholds[keep], dict(self.duplicates))


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
    names, vp, tp, tr_on, sel_on, keys, thr = [], [], [], [], [], [], []
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
        thr.append(load_threshold(f))
    return drop_identical(BasePredictions(ds, names, files, np.stack(vp, 1), np.stack(tp, 1), val_y, test_y,
                                          tr_on, sel_on, keys, np.asarray(thr, np.float64)))
