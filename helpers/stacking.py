"""Stacking (notebook 05): a LightGBM meta-learner over the base models' probabilities.

The rules (``../shared/reference/methods.md``, source note 001 stage 4):

- level 0: every base model wrote ``<run>/<stem>/<dataset>/predictions/<model>.npz`` with its
  P(y=1) on the validation and test splits (`write_predictions`), and what it trained on;
- level 1: the meta-learner is trained on the *validation* probabilities only (no base model
  trained on that split — `check_no_leakage` proves it or raises), its settings are chosen by
  5-fold stratified cross-validation on that split, and any early stopping uses an inner split
  carved from the folds being fitted, never the fold whose out-of-fold predictions are kept;
- it is scored once on the test split, which neither level touched, next to the best single
  model (chosen on validation), the mean of probabilities, majority vote, a logistic-regression
  meta-learner and scikit-learn's ``StackingClassifier`` over the classical baselines.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .errors import DataError, WorkbookError
from .io import atomic_savez

__all__ = [
    "LeakageError",
    "BasePredictions",
    "FoldRecord",
    "OOFResult",
    "MetaResult",
    "StackingResult",
    "make_example_keys",
    "make_split_keys",
    "make_goal_table",
    "describe_leakage",
    "describe_diversity",
    "describe_goal",
    "write_predictions",
    "load_base_predictions",
    "check_no_leakage",
    "make_oof_predictions",
    "train_lgbm_meta",
    "make_logreg_meta",
    "train_logreg_meta",
    "train_sklearn_stacking",
    "evaluate_stacking",
    "make_comparison_table",
    "make_error_correlation",
    "make_claims_table",
    "plot_error_correlation",
    "plot_meta_importance",
    "plot_method_comparison",
    "META_GRIDS",
    "NOTE_001_STACKING_CLAIM",
]

# What note 001 reports for stage 4 on its own data (validation accuracy, 10 base models).
NOTE_001_STACKING_CLAIM = {"stacking_val_acc": 0.9309, "best_single_val_acc": 0.8875, "n_base_models": 10}

# Candidate LightGBM settings the 5-fold CV chooses from. Small trees: the meta-learner sees only
# as many rows as the validation split holds, with one column per base model.
META_GRIDS: dict[str, list[dict[str, Any]]] = {
    "tiny": [
        {"num_leaves": 4, "min_data_in_leaf": 20, "learning_rate": 0.1, "lambda_l2": 1.0},
    ],
    "small": [
        {"num_leaves": 4, "min_data_in_leaf": 20, "learning_rate": 0.05, "lambda_l2": 1.0},
        {"num_leaves": 8, "min_data_in_leaf": 20, "learning_rate": 0.05, "lambda_l2": 1.0},
        {"num_leaves": 4, "min_data_in_leaf": 50, "learning_rate": 0.05, "lambda_l2": 10.0},
        {"num_leaves": 15, "min_data_in_leaf": 10, "learning_rate": 0.05, "lambda_l2": 1.0},
    ],
    "full": [
        {"num_leaves": nl, "min_data_in_leaf": md, "learning_rate": lr, "lambda_l2": l2}
        for nl, md, lr, l2 in itertools.product((4, 8, 15, 31), (10, 20, 50), (0.03, 0.1), (0.0, 1.0, 10.0))
    ],
}


class LeakageError(WorkbookError):
    """An example the meta-learner trains on (or is scored on) was seen by a base model in training."""


# ------------------------------------------------------------------------------- example identity
_HASH_SEED = 0x5EED_5AC4


def _row_hash(x: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each row's exact bytes, vectorised: x [N, ...] -> [N] uint64.

    The row's 32-bit words are combined with fixed random odd multipliers (wrapping uint64
    arithmetic), so equal rows hash equally and different rows collide with negligible odds.
    """
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    n = x.shape[0]
    words = x.reshape(n, -1).view(np.uint32).astype(np.uint64)          # [N, W]
    rng = np.random.default_rng(_HASH_SEED + words.shape[1])
    mult = rng.integers(1, 2**63, size=words.shape[1], dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    mixed = words * mult[None, :]                                        # wraps mod 2**64
    h = mixed.sum(axis=1, dtype=np.uint64)
    # A final avalanche step (splitmix64) so similar rows do not give nearby hashes.
    h ^= h >> np.uint64(30)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(27)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(31)
    return h


def make_example_keys(xa: np.ndarray, xb: np.ndarray, pair: np.ndarray | None = None) -> np.ndarray:
    """One uint64 key per pair example, from its content: the two inputs (order-free) and the
    pair features when present. Equal keys = the same example, whatever split it sits in.
    """
    xa = np.asarray(xa)
    xb = np.asarray(xb)
    if xa.shape[0] != xb.shape[0]:
        raise WorkbookError(f"make_example_keys: xa has {xa.shape[0]} rows, xb {xb.shape[0]}")
    with np.errstate(over="ignore"):
        ha, hb = _row_hash(xa), _row_hash(xb)
        lo, hi = np.minimum(ha, hb), np.maximum(ha, hb)   # (A, B) and (B, A) are the same example
        key = lo * np.uint64(0x9E3779B97F4A7C15) + (hi ^ (hi >> np.uint64(29)))
        if pair is not None:
            key = key ^ (_row_hash(pair) * np.uint64(0xD6E8FEB86659FD93))
    return key


# --------------------------------------------------------------------------- prediction files
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

    @property
    def n_models(self) -> int:
        return len(self.names)

    def subset(self, keep: Sequence[int]) -> "BasePredictions":
        keep = list(keep)
        return BasePredictions(self.dataset, [self.names[i] for i in keep], [self.files[i] for i in keep],
                               self.val_prob[:, keep], self.test_prob[:, keep], self.val_y, self.test_y,
                               [self.trained_on[i] for i in keep], [self.selected_on[i] for i in keep],
                               [self.train_keys[i] for i in keep])


def load_base_predictions(run_dir: str | Path, dataset: str, sources: Sequence[str] = (),
                          exclude: Sequence[str] = ("05_stacking",)) -> BasePredictions:
    """Collect ``<run_dir>/<stem>/<dataset>/predictions/*.npz`` from the source notebooks.

    sources: notebook stems to read (empty = every folder of the run that has such files, except
    `exclude`). Every file must hold val_prob, test_prob, val_y, test_y, and all files must agree
    on the labels (same split order), else a DataError names the file.
    """
    run_dir = Path(run_dir)
    ds = Path(str(dataset)).name   # outputs live under the built-in name or the pair folder's name
    if sources:
        stems = list(sources)
        for s in stems:
            if not (run_dir / s).is_dir():
                raise DataError(f"sources: notebook {s!r} has no output folder {run_dir / s}; run it first")
    else:
        stems = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name not in exclude) \
            if run_dir.is_dir() else []
    files = [f for s in stems for f in sorted((run_dir / s / ds / "predictions").glob("*.npz"))]
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
    return BasePredictions(ds, names, files, np.stack(vp, 1), np.stack(tp, 1), val_y, test_y,
                           tr_on, sel_on, keys)


# -------------------------------------------------------------------------------- leakage check
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
    """Example keys (`make_example_keys`) of each split of a `helpers.digits.PairSplits`."""
    out = {}
    for name in ("train", "val", "test"):
        s = getattr(splits, name)
        out[name] = make_example_keys(s.xa, s.xb, s.extras.get("pair") if s.extras else None)
    return out


# ---------------------------------------------------------------------------- the meta-learner
@dataclass
class FoldRecord:
    """Which rows one outer fold used: fit on `fit_idx`, early-stopped on `stop_idx`, predicted `oof_idx`."""
    fold: int
    fit_idx: np.ndarray
    stop_idx: np.ndarray
    oof_idx: np.ndarray
    best_iteration: int


@dataclass
class OOFResult:
    oof: np.ndarray                  # [N] P(y=1) for each row, from the model that never saw its fold
    folds: list[FoldRecord]

    @property
    def best_iterations(self) -> list[int]:
        return [f.best_iteration for f in self.folds]


def _lgb_params(params: dict[str, Any], seed: int) -> dict[str, Any]:
    base = {"objective": "binary", "metric": "binary_logloss", "verbosity": -1, "num_threads": 1,
            "seed": seed, "deterministic": True, "force_col_wise": True, "feature_fraction": 1.0,
            "bagging_fraction": 1.0, "min_sum_hessian_in_leaf": 1e-3}
    base.update(params)
    return base


def make_oof_predictions(X: np.ndarray, y: np.ndarray, params: dict[str, Any], n_folds: int = 5,
                         seed: int = 42, stop_frac: float = 0.2, max_rounds: int = 500,
                         early_stopping_rounds: int = 30) -> OOFResult:
    """Out-of-fold LightGBM predictions with early stopping on an inner split.

    For each outer fold k (stratified): the other folds are split again (stratified, `stop_frac`)
    into a fitting part and an early-stopping part; the booster is fitted, stopped, and then
    predicts fold k, which it never saw in any role.
    """
    import lightgbm as lgb
    from sklearn.model_selection import StratifiedKFold, train_test_split

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    _check_binary(y, n_folds, "make_oof_predictions")
    oof = np.full(y.shape[0], np.nan)
    folds = []
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (outer_fit, oof_idx) in enumerate(skf.split(X, y)):
        fit_idx, stop_idx = train_test_split(outer_fit, test_size=stop_frac, stratify=y[outer_fit],
                                             random_state=seed + k)
        booster = lgb.train(_lgb_params(params, seed), lgb.Dataset(X[fit_idx], y[fit_idx]),
                            num_boost_round=max_rounds,
                            valid_sets=[lgb.Dataset(X[stop_idx], y[stop_idx])],
                            callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)])
        best = int(booster.best_iteration or max_rounds)
        oof[oof_idx] = booster.predict(X[oof_idx], num_iteration=best)
        folds.append(FoldRecord(k, np.sort(fit_idx), np.sort(stop_idx), np.sort(oof_idx), best))
    return OOFResult(oof, folds)


def _check_binary(y: np.ndarray, n_folds: int, where: str) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if not set(classes.tolist()) <= {0, 1} or classes.size < 2:
        raise WorkbookError(f"{where}: labels must contain both 0 and 1 (got classes {classes.tolist()})")
    if counts.min() < n_folds:
        raise WorkbookError(f"{where}: the rarer class has {counts.min()} rows, fewer than n_folds={n_folds}")


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class MetaResult:
    """The chosen LightGBM meta-learner, refitted on the whole validation split."""
    params: dict[str, Any]
    n_rounds: int
    booster: Any
    cv_table: pd.DataFrame           # one row per candidate: OOF accuracy and log-loss
    oof: OOFResult                   # of the chosen candidate
    feature_names: list[str]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.booster.predict(np.asarray(X, dtype=np.float64), num_iteration=self.n_rounds)

    def importance(self) -> pd.DataFrame:
        gain = self.booster.feature_importance(importance_type="gain")
        split = self.booster.feature_importance(importance_type="split")
        df = pd.DataFrame({"model": self.feature_names, "gain": gain, "splits": split})
        df["gain_share"] = df["gain"] / max(df["gain"].sum(), 1e-12)
        return df.sort_values("gain", ascending=False, ignore_index=True)


def train_lgbm_meta(X_val: np.ndarray, y_val: np.ndarray, feature_names: Sequence[str],
                    grid: str | list[dict[str, Any]] = "small", n_folds: int = 5, seed: int = 42,
                    max_rounds: int = 500, early_stopping_rounds: int = 30) -> MetaResult:
    """Choose a LightGBM meta-learner by 5-fold stratified CV on the validation split, refit it there.

    Every candidate of `grid` gets out-of-fold predictions (`make_oof_predictions`); the one with the
    lowest out-of-fold log-loss wins, and is refitted on all validation rows for the median of its
    folds' early-stopped round counts. Nothing here looks at the test split.
    """
    import lightgbm as lgb

    if isinstance(grid, str) and grid not in META_GRIDS:
        raise WorkbookError(f"meta_grid={grid!r}; expected one of {'|'.join(META_GRIDS)}")
    candidates = META_GRIDS[grid] if isinstance(grid, str) else list(grid)
    y_val = np.asarray(y_val, dtype=np.int64)
    rows, results = [], []
    for i, cand in enumerate(candidates):
        res = make_oof_predictions(X_val, y_val, cand, n_folds, seed, max_rounds=max_rounds,
                                   early_stopping_rounds=early_stopping_rounds)
        results.append(res)
        rows.append({"candidate": i, **cand, "oof_acc": float(((res.oof >= 0.5) == y_val).mean()),
                     "oof_logloss": _logloss(res.oof, y_val),
                     "median_rounds": int(np.median(res.best_iterations))})
    cv = pd.DataFrame(rows)
    best = int(cv.sort_values(["oof_logloss", "candidate"]).iloc[0]["candidate"])
    cv["chosen"] = cv["candidate"] == best
    n_rounds = max(1, int(cv.loc[best, "median_rounds"]))
    booster = lgb.train(_lgb_params(candidates[best], seed), lgb.Dataset(np.asarray(X_val, np.float64), y_val),
                        num_boost_round=n_rounds)
    return MetaResult(dict(candidates[best]), n_rounds, booster, cv, results[best], list(feature_names))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def make_logreg_meta(n_folds: int = 5, seed: int = 42):
    """An unfitted logistic-regression meta-learner on the base models' logits (standardised, C = 1).

    With one column per base model and thousands of rows the regularisation strength barely
    matters, so it is fixed rather than searched (a CV search cost 10x the time for no change).
    `n_folds` and `seed` are kept for call compatibility.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    return make_pipeline(FunctionTransformer(_logit), StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def train_logreg_meta(X_val: np.ndarray, y_val: np.ndarray, n_folds: int = 5, seed: int = 42):
    """Fit `make_logreg_meta` on the validation probabilities."""
    return make_logreg_meta(n_folds, seed).fit(np.asarray(X_val, np.float64), np.asarray(y_val, np.int64))


def train_sklearn_stacking(splits, seed: int = 42, n_folds: int = 5, max_train: int = 0):
    """scikit-learn's StackingClassifier where it applies: over the *classical* baselines (logistic
    regression and LightGBM on pair features), refitted on the training split with its internal
    5-fold `cross_val_predict`, final estimator a logistic regression. The neural base models
    cannot be refitted inside sklearn, so they are not part of it. Returns (model, test P(y=1)).
    """
    from lightgbm import LGBMClassifier
    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .baselines import make_pair_features  # the same features as notebook 02's baselines

    tr, te = splits.train, splits.test
    X = make_pair_features(tr.xa, tr.xb, tr.extras.get("pair") if tr.extras else None)
    y = np.asarray(tr.y, np.int64)
    if max_train and X.shape[0] > max_train:
        keep = np.random.default_rng(seed).choice(X.shape[0], max_train, replace=False)
        X, y = X[np.sort(keep)], y[np.sort(keep)]
    Xt = make_pair_features(te.xa, te.xb, te.extras.get("pair") if te.extras else None)
    model = StackingClassifier(
        # liblinear with C = 0.1: the same accuracy as lbfgs here, ~10x faster on these collinear features
        estimators=[("logreg", make_pipeline(StandardScaler(), LogisticRegression(C=0.1, solver="liblinear"))),
                    ("lgbm", LGBMClassifier(n_estimators=150, num_leaves=15, learning_rate=0.05,
                                            n_jobs=1, random_state=seed, verbose=-1))],
        final_estimator=LogisticRegression(max_iter=2000),
        cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed), stack_method="predict_proba", n_jobs=1)
    model.fit(X, y)
    return model, model.predict_proba(Xt)[:, 1]


# ------------------------------------------------------------------------------ the comparison
@dataclass
class StackingResult:
    """Everything notebook 05 shows for one dataset."""
    dataset: str
    base: BasePredictions
    leakage: pd.DataFrame
    base_table: pd.DataFrame         # per base model: val/test accuracy
    meta: MetaResult
    comparison: pd.DataFrame         # per method: test accuracy with Wilson interval
    paired: pd.DataFrame             # stacking vs best single: McNemar and bootstrap
    best_single: str
    test_pred: dict[str, np.ndarray] = field(default_factory=dict)   # method -> test P(y=1)

    def headline(self, goal_ratio: float = 0.8) -> dict[str, Any]:
        c = self.comparison.set_index("method")
        best = c.loc["best single (chosen on val)"]
        stack = c.loc["LightGBM stacking"]
        p = self.paired.set_index("test")
        ratio = stack["test_error"] / best["test_error"] if best["test_error"] > 0 else float("nan")
        recal = c.loc["best single, recalibrated on val"]
        out = {
            "n_base_models": self.base.n_models,
            "best_single_name": self.best_single,
            "best_single_test_acc": float(best["test_acc"]),
            "best_single_recalibrated_test_acc": float(recal["test_acc"]),
            "mean_prob_test_acc": float(c.loc["mean of probabilities", "test_acc"]),
            "majority_vote_test_acc": float(c.loc["majority vote", "test_acc"]),
            "logreg_meta_test_acc": float(c.loc["logistic-regression meta", "test_acc"]),
            "stacking_test_acc": float(stack["test_acc"]),
            "stacking_ci_low": float(stack["ci_low"]),
            "stacking_ci_high": float(stack["ci_high"]),
            "stacking_oof_val_acc": float(stack["val_acc"]),
            "stacking_vs_best_p_value": float(p.loc["McNemar exact", "p_value"]),
            "stacking_vs_best_bootstrap_p_value": float(p.loc["paired bootstrap", "p_value"]),
            "error_ratio": float(ratio),
            "goal_met": bool(ratio <= goal_ratio) if np.isfinite(ratio) else False,
            "error_ratio_vs_recalibrated": float(stack["test_error"] / recal["test_error"])
            if recal["test_error"] > 0 else float("nan"),
        }
        if "sklearn StackingClassifier (classical)" in c.index:
            out["sklearn_stacking_test_acc"] = float(c.loc["sklearn StackingClassifier (classical)", "test_acc"])
        return out


def _acc_row(method: str, test_prob: np.ndarray, y: np.ndarray, val_acc: float, note: str) -> dict[str, Any]:
    from .stats import accuracy_with_ci

    correct = (np.asarray(test_prob) >= 0.5).astype(np.int64) == y
    a = accuracy_with_ci(correct)
    return {"method": method, "val_acc": val_acc, "test_acc": a["acc"], "ci_low": a["ci_low"],
            "ci_high": a["ci_high"], "test_error": 1 - a["acc"], "n_test": a["n"], "how": note}


def _majority(prob: np.ndarray) -> np.ndarray:
    """Majority vote of thresholded probabilities [N, M] -> [N] in {0, 0.5, 1}; ties fall back to the mean."""
    votes = (prob >= 0.5).mean(axis=1)
    tie = np.isclose(votes, 0.5)
    out = (votes > 0.5).astype(np.float64)
    out[tie] = (prob[tie].mean(axis=1) >= 0.5).astype(np.float64)
    return out


def make_comparison_table(rows: list[dict[str, Any]], best_error: float) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["error_vs_best_single"] = df["test_error"] / best_error if best_error > 0 else np.nan
    return df


def evaluate_stacking(base: BasePredictions, split_keys: dict[str, np.ndarray] | None = None,
                      grid: str | list[dict[str, Any]] = "small", n_folds: int = 5, seed: int = 42,
                      max_rounds: int = 500, early_stopping_rounds: int = 30, n_boot: int = 2000,
                      splits=None, sklearn_stacking: bool = True, sklearn_max_train: int = 0) -> StackingResult:
    """The whole comparison for one dataset (notebook 05's core). Test labels are used only to score.

    split_keys: example keys of the dataset's splits for the leakage check (computed from `splits`
    when omitted); the check runs first and raises `LeakageError` on any leak.
    """
    from .stats import mcnemar_test, paired_bootstrap

    if split_keys is None:
        if splits is None:
            raise WorkbookError("evaluate_stacking needs split_keys or splits for the leakage check")
        split_keys = make_split_keys(splits)
    leakage = check_no_leakage(base, split_keys)
    yv, yt = base.val_y, base.test_y

    # Level 0 on its own: accuracy of every base model; the best is picked on validation only.
    val_acc = ((base.val_prob >= 0.5) == yv[:, None]).mean(axis=0)
    test_acc = ((base.test_prob >= 0.5) == yt[:, None]).mean(axis=0)
    val_ll = np.array([_logloss(base.val_prob[:, j], yv) for j in range(base.n_models)])
    order = np.lexsort((val_ll, -val_acc))          # highest val accuracy, then lowest val log-loss
    best = int(order[0])
    base_table = pd.DataFrame({"model": base.names, "val_acc": val_acc, "val_logloss": val_ll,
                               "test_acc": test_acc, "trained_on": leakage["trained_on"].values,
                               "selected_on": leakage["selected_on"].values})
    base_table["chosen_as_best"] = np.arange(base.n_models) == best
    base_table = base_table.sort_values("val_acc", ascending=False, ignore_index=True)

    # Level 1: meta-learners fitted on validation probabilities only.
    meta = train_lgbm_meta(base.val_prob, yv, base.names, grid, n_folds, seed, max_rounds, early_stopping_rounds)
    logreg = train_logreg_meta(base.val_prob, yv, n_folds, seed)
    # Its out-of-fold validation accuracy, for the val column (nested CV: C is re-chosen per fold).
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    logreg_oof = cross_val_predict(make_logreg_meta(n_folds, seed), base.val_prob, yv,
                                   cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed),
                                   method="predict_proba")[:, 1]

    # The meta-learners see validation data; so does this fairer single-model reference: the best
    # model's logit recalibrated (Platt) on validation. It separates recalibration from ensembling.
    recal = make_logreg_meta(n_folds, seed).fit(base.val_prob[:, [best]], yv)
    recal_oof = cross_val_predict(make_logreg_meta(n_folds, seed), base.val_prob[:, [best]], yv,
                                  cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed),
                                  method="predict_proba")[:, 1]

    preds = {
        "best single (chosen on val)": base.test_prob[:, best],
        "best single, recalibrated on val": recal.predict_proba(base.test_prob[:, [best]])[:, 1],
        "mean of probabilities": base.test_prob.mean(axis=1),
        "majority vote": _majority(base.test_prob),
        "logistic-regression meta": logreg.predict_proba(base.test_prob)[:, 1],
        "LightGBM stacking": meta.predict(base.test_prob),
    }
    val_side = {
        "best single (chosen on val)": float(val_acc[best]),
        "best single, recalibrated on val": float(((recal_oof >= 0.5) == yv).mean()),
        "mean of probabilities": float(((base.val_prob.mean(1) >= 0.5) == yv).mean()),
        "majority vote": float(((_majority(base.val_prob) >= 0.5) == yv).mean()),
        "logistic-regression meta": float(((logreg_oof >= 0.5) == yv).mean()),
        "LightGBM stacking": float(((meta.oof.oof >= 0.5) == yv).mean()),
    }
    how = {
        "best single (chosen on val)": base.names[best],
        "best single, recalibrated on val": "Platt scaling of its logit fitted on val (val_acc = out-of-fold)",
        "mean of probabilities": f"average of {base.n_models} models, threshold 0.5",
        "majority vote": "thresholded votes; ties -> mean probability",
        "logistic-regression meta": "on standardised logits, fitted on val (val_acc = out-of-fold)",
        "LightGBM stacking": f"{meta.n_rounds} rounds, {meta.params} (val_acc = out-of-fold)",
    }
    if sklearn_stacking and splits is not None:
        _, p_sk = train_sklearn_stacking(splits, seed, n_folds, sklearn_max_train)
        preds["sklearn StackingClassifier (classical)"] = p_sk
        val_side["sklearn StackingClassifier (classical)"] = float("nan")
        how["sklearn StackingClassifier (classical)"] = "logreg + LightGBM on pair features, refit on train"
    rows = [_acc_row(m, p, yt, val_side[m], how[m]) for m, p in preds.items()]
    comparison = make_comparison_table(rows, 1 - float(test_acc[best]))

    # Paired tests on the same test examples: stacking vs the best single model.
    c_best = (preds["best single (chosen on val)"] >= 0.5) == yt
    c_stack = (preds["LightGBM stacking"] >= 0.5) == yt
    mc = mcnemar_test(c_best, c_stack)
    bs = paired_bootstrap(c_best, c_stack, n_boot=n_boot, seed=seed)
    paired = pd.DataFrame([
        {"test": "McNemar exact", "stacking_minus_best": float(c_stack.mean() - c_best.mean()),
         "ci_low": np.nan, "ci_high": np.nan, "p_value": mc["p_value"],
         "detail": f"best right & stacking wrong: {mc['b']}, best wrong & stacking right: {mc['c']}"},
        {"test": "paired bootstrap", "stacking_minus_best": bs["diff"], "ci_low": bs["ci_low"],
         "ci_high": bs["ci_high"], "p_value": bs["p_value"], "detail": f"{n_boot} resamples, seed {seed}"},
    ])
    return StackingResult(base.dataset, base, leakage, base_table, meta, comparison, paired,
                          base.names[best], preds)


def make_error_correlation(base: BasePredictions, split: str = "val") -> pd.DataFrame:
    """Pearson correlation of the base models' 0/1 error indicators on one split (diversity).

    Low correlation = models err on different examples = room for an ensemble to help.
    A model with no errors (constant indicator) gets NaN correlations.
    """
    prob, y = (base.val_prob, base.val_y) if split == "val" else (base.test_prob, base.test_y)
    err = ((prob >= 0.5) != y[:, None]).astype(np.float64)     # [N, M]
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(err, rowvar=False)
    corr = np.atleast_2d(corr)
    return pd.DataFrame(corr, index=base.names, columns=base.names)


def make_claims_table(result: StackingResult) -> pd.DataFrame:
    """Note 001's stage-4 claim next to what this run measured (their data vs this data)."""
    h = result.headline()
    claim = NOTE_001_STACKING_CLAIM
    return pd.DataFrame([
        {"quantity": "base models", "note 001 (their data)": claim["n_base_models"], "this run": h["n_base_models"]},
        {"quantity": "best single accuracy", "note 001 (their data)": claim["best_single_val_acc"],
         "this run": h["best_single_test_acc"]},
        {"quantity": "stacking accuracy", "note 001 (their data)": claim["stacking_val_acc"],
         "this run": h["stacking_test_acc"]},
        {"quantity": "error ratio stacking / best single",
         "note 001 (their data)": (1 - claim["stacking_val_acc"]) / (1 - claim["best_single_val_acc"]),
         "this run": h["error_ratio"]},
    ])


def make_goal_table(result: StackingResult, goal_ratio: float = 0.8, n_boot: int = 2000,
                    seed: int = 42) -> pd.DataFrame:
    """The goal "stacking's test error <= goal_ratio x the best single model's", and what limits it.

    Rows: the two errors, their ratio with a paired-bootstrap 95% interval, the error stacking would
    have needed, the gap in test examples, the same ratio against the best single model
    recalibrated on validation (what ensembling adds beyond recalibration), and two limits: the share of test examples that *every*
    base model gets wrong (no combination of their votes can fix those) and the base models' mean
    pairwise error correlation on validation (high = little diversity to exploit).
    """
    yt = result.base.test_y
    err_b = (result.test_pred["best single (chosen on val)"] >= 0.5) != yt
    err_s = (result.test_pred["LightGBM stacking"] >= 0.5) != yt
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, yt.size, size=(n_boot, yt.size))          # (n_boot, N) resampled rows
    eb, es = err_b[idx].mean(1), err_s[idx].mean(1)
    ratios = es[eb > 0] / eb[eb > 0]
    lo, hi = (np.quantile(ratios, [0.025, 0.975]) if ratios.size else (np.nan, np.nan))
    e_b, e_s = float(err_b.mean()), float(err_s.mean())
    ratio = e_s / e_b if e_b > 0 else float("nan")
    need = goal_ratio * e_b
    e_cal = float(((result.test_pred["best single, recalibrated on val"] >= 0.5) != yt).mean())
    all_wrong = float(((result.base.test_prob >= 0.5) != yt[:, None]).all(axis=1).mean())
    corr = make_error_correlation(result.base).to_numpy()
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    mean_corr = float(np.nanmean(off)) if off.size and np.isfinite(off).any() else float("nan")
    rows = [
        ("best single model: test error", e_b),
        ("stacking: test error", e_s),
        ("error ratio stacking / best single", ratio),
        ("error ratio, 95% bootstrap interval low", float(lo)),
        ("error ratio, 95% bootstrap interval high", float(hi)),
        ("goal: ratio at most", goal_ratio),
        ("goal met", bool(np.isfinite(ratio) and ratio <= goal_ratio)),
        ("stacking error needed for the goal", need),
        ("test examples short of the goal", max(0, int(np.ceil((e_s - need) * yt.size - 1e-9)))),
        ("best single recalibrated on val: test error", e_cal),
        ("error ratio stacking / recalibrated best single", e_s / e_cal if e_cal > 0 else float("nan")),
        ("limit: share of test examples every base model gets wrong", all_wrong),
        ("limit: mean pairwise error correlation (val)", mean_corr),
        ("base models", result.base.n_models),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


def describe_leakage(table: pd.DataFrame) -> str:
    """One line on the leakage check's outcome (it raised if anything leaked)."""
    assumed = int((table["record"] != "recorded").sum())
    keyed = int((table["checked_with"] == "train_keys").sum())
    on_val = int((table["selected_on"] == "val").sum())
    text = (f"Leakage check passed for {len(table)} base models: none trained on a validation or test example "
            f"({keyed} checked against their recorded training examples, {len(table) - keyed} against their "
            f"training split; {assumed} did not record what they trained on and were assumed to use 'train').")
    if on_val:
        text += (f" Note: {on_val} of them used the validation split for early stopping or checkpoint choice "
                 "(selection, not training): their validation probabilities can be slightly optimistic.")
    return text


def describe_diversity(corr: pd.DataFrame) -> str:
    c = corr.to_numpy()
    off = c[~np.eye(c.shape[0], dtype=bool)]
    if not off.size or not np.isfinite(off).any():
        return "Fewer than two base models with errors: no diversity to measure."
    i, j = np.unravel_index(np.nanargmin(np.where(np.eye(c.shape[0], dtype=bool), np.nan, c)), c.shape)
    return (f"Mean pairwise error correlation {np.nanmean(off):.3f} (range {np.nanmin(off):.3f} to {np.nanmax(off):.3f}); "
            f"the most complementary pair is {corr.index[i]} / {corr.columns[j]}.")


def describe_goal(goal: pd.DataFrame) -> str:
    v = goal["value"]
    ratio, target = float(v["error ratio stacking / best single"]), float(v["goal: ratio at most"])
    verdict = "MET" if bool(v["goal met"]) else "MISSED"
    text = (f"Goal {verdict}: stacking's test error {float(v['stacking: test error']):.4f} vs the best single "
            f"model's {float(v['best single model: test error']):.4f} — ratio {ratio:.3f} "
            f"(95% interval {float(v['error ratio, 95% bootstrap interval low']):.3f}–"
            f"{float(v['error ratio, 95% bootstrap interval high']):.3f}), goal ≤ {target:g}.")
    r_cal = float(v["error ratio stacking / recalibrated best single"])
    text += (f" Against the best single model recalibrated on validation (test error "
             f"{float(v['best single recalibrated on val: test error']):.4f}) the ratio is {r_cal:.3f}: "
             + ("most of the gain is ensembling, not recalibration." if r_cal <= (1 + ratio) / 2 else
                "much of the gain is recalibration to the unseen images of val/test, not ensembling."))
    if verdict == "MISSED":
        text += (f" Short by {int(v['test examples short of the goal'])} test examples "
                 f"(needed error ≤ {float(v['stacking error needed for the goal']):.4f}). Limits: "
                 f"{float(v['limit: share of test examples every base model gets wrong']):.4f} of test examples are "
                 f"wrong for every base model, mean error correlation "
                 f"{float(v['limit: mean pairwise error correlation (val)']):.3f}.")
    return text


# ------------------------------------------------------------------------------------- plots
def plot_error_correlation(corr: pd.DataFrame, ax=None):
    """Heatmap of the base models' error correlations."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    n = corr.shape[0]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n))
    sns.heatmap(corr, ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", annot=n <= 16, fmt=".2f",
                annot_kws={"size": 7}, square=True, cbar_kws={"shrink": 0.7, "label": "error correlation"})
    ax.set_title("Error correlation of the base models (validation split)")
    ax.tick_params(axis="x", labelrotation=90, labelsize=7)
    ax.tick_params(axis="y", labelsize=7)
    return ax.figure


def plot_meta_importance(importance: pd.DataFrame, ax=None):
    """Horizontal bars: share of the LightGBM meta-learner's split gain per base model."""
    import matplotlib.pyplot as plt

    df = importance.sort_values("gain_share")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.3 * len(df)))
    ax.barh(df["model"], df["gain_share"], color="tab:blue")
    ax.set_xlabel("share of total split gain")
    ax.set_title("LightGBM meta-learner: which base models it relies on")
    ax.tick_params(axis="y", labelsize=7)
    return ax.figure


def plot_method_comparison(comparison: pd.DataFrame, ax=None):
    """Test accuracy of each method with its 95% Wilson interval; dashed line = best single model."""
    import matplotlib.pyplot as plt

    df = comparison.reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.8 + 0.45 * len(df)))
    y = np.arange(len(df))
    err = np.vstack([df["test_acc"] - df["ci_low"], df["ci_high"] - df["test_acc"]])
    colors = ["tab:red" if m == "LightGBM stacking" else "tab:gray" for m in df["method"]]
    ax.errorbar(df["test_acc"], y, xerr=err, fmt="none", ecolor="black", capsize=3)
    ax.scatter(df["test_acc"], y, c=colors, zorder=3)
    best = df.loc[df["method"] == "best single (chosen on val)", "test_acc"]
    if len(best):
        ax.axvline(float(best.iloc[0]), ls="--", color="tab:gray", lw=1)
    ax.set_yticks(y, df["method"])
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (95% Wilson interval)")
    ax.set_title("Ensembles vs the best single model, same test split")
    return ax.figure
