"""Stacking without leakage: out-of-fold LightGBM and logistic-regression meta-learners trained on the
base models' validation probabilities, the leakage proof, and the comparison on test."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from helpers.core.errors import WorkbookError
from helpers.core.hashing import make_example_keys
from helpers.data.predictions import BasePredictions
from helpers.evaluation.baselines import make_pair_features
from helpers.evaluation.stats import accuracy_with_ci, mcnemar_test, paired_bootstrap


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


def make_base_table(base: BasePredictions, leakage: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Level 0 on its own: accuracy of every base model, and the index of the best one, picked on
    validation only (highest val accuracy, then lowest val log-loss). Returns (table, best index)."""
    yv, yt = base.val_y, base.test_y
    val_acc = ((base.val_prob >= 0.5) == yv[:, None]).mean(axis=0)
    test_acc = ((base.test_prob >= 0.5) == yt[:, None]).mean(axis=0)
    val_ll = np.array([_logloss(base.val_prob[:, j], yv) for j in range(base.n_models)])
    order = np.lexsort((val_ll, -val_acc))          # highest val accuracy, then lowest val log-loss
    best = int(order[0])
    base_table = pd.DataFrame({"model": base.names, "val_acc": val_acc, "val_logloss": val_ll,
                               "test_acc": test_acc, "trained_on": leakage["trained_on"].values,
                               "selected_on": leakage["selected_on"].values})
    base_table["chosen_as_best"] = np.arange(base.n_models) == best
    return base_table.sort_values("val_acc", ascending=False, ignore_index=True), best


@dataclass
class _MetaLearners:
    """Level 1, fitted on validation probabilities only, with out-of-fold validation probabilities."""
    lgbm: MetaResult
    logreg: Any
    logreg_oof: np.ndarray
    recal: Any                       # the best model's logit recalibrated (Platt) on validation
    recal_oof: np.ndarray


def _fit_meta_learners(base: BasePredictions, best: int, grid, n_folds: int, seed: int, max_rounds: int,
                       early_stopping_rounds: int) -> _MetaLearners:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    yv = base.val_y
    meta = train_lgbm_meta(base.val_prob, yv, base.names, grid, n_folds, seed, max_rounds, early_stopping_rounds)
    logreg = train_logreg_meta(base.val_prob, yv, n_folds, seed)
    # Its out-of-fold validation accuracy, for the val column (nested CV: C is re-chosen per fold).
    logreg_oof = cross_val_predict(make_logreg_meta(n_folds, seed), base.val_prob, yv,
                                   cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed),
                                   method="predict_proba")[:, 1]
    # The meta-learners see validation data; so does this fairer single-model reference: the best
    # model's logit recalibrated (Platt) on validation. It separates recalibration from ensembling.
    recal = make_logreg_meta(n_folds, seed).fit(base.val_prob[:, [best]], yv)
    recal_oof = cross_val_predict(make_logreg_meta(n_folds, seed), base.val_prob[:, [best]], yv,
                                  cv=StratifiedKFold(n_folds, shuffle=True, random_state=seed),
                                  method="predict_proba")[:, 1]
    return _MetaLearners(meta, logreg, logreg_oof, recal, recal_oof)


def _method_predictions(base: BasePredictions, best: int, metas: _MetaLearners
                        ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """Per method: test P(y=1), validation accuracy (out-of-fold where fitted on val), how it was made."""
    yv, meta = base.val_y, metas.lgbm
    preds = {
        "best single (chosen on val)": base.test_prob[:, best],
        "best single, recalibrated on val": metas.recal.predict_proba(base.test_prob[:, [best]])[:, 1],
        "mean of probabilities": base.test_prob.mean(axis=1),
        "majority vote": _majority(base.test_prob),
        "logistic-regression meta": metas.logreg.predict_proba(base.test_prob)[:, 1],
        "LightGBM stacking": meta.predict(base.test_prob),
    }
    val_side = {
        "best single (chosen on val)": float(((base.val_prob[:, best] >= 0.5) == yv).mean()),
        "best single, recalibrated on val": float(((metas.recal_oof >= 0.5) == yv).mean()),
        "mean of probabilities": float(((base.val_prob.mean(1) >= 0.5) == yv).mean()),
        "majority vote": float(((_majority(base.val_prob) >= 0.5) == yv).mean()),
        "logistic-regression meta": float(((metas.logreg_oof >= 0.5) == yv).mean()),
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
    return preds, val_side, how


def make_paired_table(best_prob: np.ndarray, stack_prob: np.ndarray, y: np.ndarray, n_boot: int,
                      seed: int) -> pd.DataFrame:
    """Paired tests on the same test examples: stacking vs the best single model (McNemar, bootstrap)."""
    c_best = (best_prob >= 0.5) == y
    c_stack = (stack_prob >= 0.5) == y
    mc = mcnemar_test(c_best, c_stack)
    bs = paired_bootstrap(c_best, c_stack, n_boot=n_boot, seed=seed)
    return pd.DataFrame([
        {"test": "McNemar exact", "stacking_minus_best": float(c_stack.mean() - c_best.mean()),
         "ci_low": np.nan, "ci_high": np.nan, "p_value": mc["p_value"],
         "detail": f"best right & stacking wrong: {mc['b']}, best wrong & stacking right: {mc['c']}"},
        {"test": "paired bootstrap", "stacking_minus_best": bs["diff"], "ci_low": bs["ci_low"],
         "ci_high": bs["ci_high"], "p_value": bs["p_value"], "detail": f"{n_boot} resamples, seed {seed}"},
    ])


def evaluate_stacking(base: BasePredictions, split_keys: dict[str, np.ndarray] | None = None,
                      grid: str | list[dict[str, Any]] = "small", n_folds: int = 5, seed: int = 42,
                      max_rounds: int = 500, early_stopping_rounds: int = 30, n_boot: int = 2000,
                      splits=None, sklearn_stacking: bool = True, sklearn_max_train: int = 0) -> StackingResult:
    """The whole comparison for one dataset (notebook 05's core). Test labels are used only to score.

    split_keys: example keys of the dataset's splits for the leakage check (computed from `splits`
    when omitted); the check runs first and raises `LeakageError` on any leak.
    """
    if split_keys is None:
        if splits is None:
            raise WorkbookError("evaluate_stacking needs split_keys or splits for the leakage check")
        split_keys = make_split_keys(splits)
    leakage = check_no_leakage(base, split_keys)
    base_table, best = make_base_table(base, leakage)
    metas = _fit_meta_learners(base, best, grid, n_folds, seed, max_rounds, early_stopping_rounds)
    preds, val_side, how = _method_predictions(base, best, metas)
    if sklearn_stacking and splits is not None:
        _, p_sk = train_sklearn_stacking(splits, seed, n_folds, sklearn_max_train)
        preds["sklearn StackingClassifier (classical)"] = p_sk
        val_side["sklearn StackingClassifier (classical)"] = float("nan")
        how["sklearn StackingClassifier (classical)"] = "logreg + LightGBM on pair features, refit on train"
    yt = base.test_y
    rows = [_acc_row(m, p, yt, val_side[m], how[m]) for m, p in preds.items()]
    best_error = 1 - float(((base.test_prob[:, best] >= 0.5) == yt).mean())
    comparison = make_comparison_table(rows, best_error)
    paired = make_paired_table(preds["best single (chosen on val)"], preds["LightGBM stacking"], yt, n_boot, seed)
    return StackingResult(base.dataset, base, leakage, base_table, metas.lgbm, comparison, paired,
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
