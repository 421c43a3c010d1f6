"""Stacking without leakage: out-of-fold LightGBM and logistic-regression meta-learners trained on the
base models' validation probabilities, and the comparison on test against fair references (the best single
model and the average of the top-k models, both chosen on validation; majority vote; the logistic-regression
meta-learner), with paired tests over the data's independent unit. The leakage proof is in
`helpers.evaluation.leakage`, the distillation in `helpers.evaluation.distillation`, the ensemble's inference
cost in `helpers.evaluation.ensemble_inference`."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats as st

from helpers.core.errors import WorkbookError
from helpers.data.predictions import BasePredictions
from helpers.evaluation.baselines import make_pair_features
from helpers.evaluation.leakage import check_no_leakage, make_split_keys
from helpers.evaluation.metrics import correct
from helpers.evaluation.stats import (compare, compare_to_references, dyadic_variance, interval, P_FLOOR, ROWS,
                                      unit_of, unit_weights, Unit)


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
                    max_rounds: int = 500, early_stopping_rounds: int = 30, *, threshold: float) -> MetaResult:
    """Choose a LightGBM meta-learner by 5-fold stratified CV on the validation split, refit it there.

    Every candidate of `grid` gets out-of-fold predictions (`make_oof_predictions`); the one with the
    lowest out-of-fold log-loss wins, and is refitted on all validation rows for the median of its
    folds' early-stopped round counts. Nothing here looks at the test split. ``threshold`` only scores the
    table's out-of-fold accuracy (the choice is by log-loss).
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
        rows.append({"candidate": i, **cand, "oof_acc": float(correct(res.oof, y_val, threshold).mean()),
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


# The references LightGBM stacking is tested against (paired, Holm-adjusted), in the table's order.
BEST, TOPK, MAJORITY, LOGREG, STACK = ("best single (chosen on val)", "top-k average (k chosen on val)",
                                       "majority vote", "logistic-regression meta", "LightGBM stacking")
REFERENCES = (BEST, TOPK, MAJORITY, LOGREG)


@dataclass
class StackingResult:
    """Everything notebook 05 shows for one dataset."""
    dataset: str
    base: BasePredictions
    leakage: pd.DataFrame
    base_table: pd.DataFrame         # per base model: val/test accuracy, ranked by validation
    meta: MetaResult
    comparison: pd.DataFrame         # per method: test accuracy with its interval over the unit
    paired: pd.DataFrame             # stacking vs each reference: paired tests over the unit, Holm-adjusted
    best_single: str
    test_pred: dict[str, np.ndarray] = field(default_factory=dict)   # method -> test P(y=1)
    topk: pd.DataFrame = field(default_factory=pd.DataFrame)         # k -> val accuracy of the top-k average
    error_ratio: dict[str, Any] = field(default_factory=dict)        # stacking / best single, with interval
    unit: str = "row"

    @property
    def threshold(self) -> float:
        """The threshold every method is scored at: the one the base models' notebooks declared."""
        return self.base.threshold

    @property
    def topk_k(self) -> int:
        return int(self.topk.loc[self.topk["chosen"], "k"].iloc[0]) if len(self.topk) else 0

    def headline(self, goal_ratio: float = 0.8) -> dict[str, Any]:
        c = self.comparison.set_index("method")
        p = self.paired.set_index("reference")
        stack, recal = c.loc[STACK], c.loc["best single, recalibrated on val"]
        r = self.error_ratio
        verdict = goal_verdict(r["ci_low"], r["ci_high"], goal_ratio)
        out = {
            "n_base_models": self.base.n_models,
            "best_single_name": self.best_single,
            "best_single_test_acc": float(c.loc[BEST, "test_acc"]),
            "best_single_recalibrated_test_acc": float(recal["test_acc"]),
            "mean_prob_test_acc": float(c.loc["mean of probabilities", "test_acc"]),
            "topk_average_test_acc": float(c.loc[TOPK, "test_acc"]),
            "topk_k": self.topk_k,
            "majority_vote_test_acc": float(c.loc[MAJORITY, "test_acc"]),
            "logreg_meta_test_acc": float(c.loc[LOGREG, "test_acc"]),
            "stacking_test_acc": float(stack["test_acc"]),
            "stacking_ci_low": float(stack["ci_low"]),
            "stacking_ci_high": float(stack["ci_high"]),
            "stacking_oof_val_acc": float(stack["val_acc"]),
            # Holm-adjusted p of the paired test over the unit (the verdict's p); the unadjusted one beside it.
            "stacking_vs_best_p_value": float(p.loc[BEST, "p_holm"]),
            "stacking_vs_best_bootstrap_p_value": float(p.loc[BEST, "p_value"]),
            "stacking_vs_topk_p": float(p.loc[TOPK, "p_holm"]),
            "stacking_vs_majority_p": float(p.loc[MAJORITY, "p_holm"]),
            "stacking_vs_logreg_meta_p": float(p.loc[LOGREG, "p_holm"]),
            "error_ratio": float(r["ratio"]),
            "error_ratio_ci_low": float(r["ci_low"]),
            "error_ratio_ci_high": float(r["ci_high"]),
            "goal_verdict": verdict,
            "goal_met": verdict == "met",
            "error_ratio_vs_recalibrated": float(stack["test_error"] / recal["test_error"])
            if recal["test_error"] > 0 else float("nan"),
        }
        if "sklearn StackingClassifier (classical)" in c.index:
            out["sklearn_stacking_test_acc"] = float(c.loc["sklearn StackingClassifier (classical)", "test_acc"])
        return out


def goal_verdict(ci_low: float, ci_high: float, goal_ratio: float) -> str:
    """"met" when the whole interval of the error ratio lies below the goal, "missed" when it lies above,
    else "undecided" (the point estimate alone never decides)."""
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        return "undecided"
    return "met" if ci_high < goal_ratio else "missed" if ci_low > goal_ratio else "undecided"


def evaluate_error_ratio(err_ref: np.ndarray, err_new: np.ndarray, unit: Unit = ROWS, n_boot: int = 2000,
                         seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """err_new.mean() / err_ref.mean() (0/1 errors on the same rows) with an interval that respects the unit:
    for two ids per row (source images) the delta method with the dyadic cluster-robust variance of the
    linearised ratio (a bootstrap over crossed units overstates the variance, see stats.py); otherwise a
    bootstrap over the unit's clusters (or rows) of the ratio itself."""
    a, b = np.asarray(err_ref, np.float64), np.asarray(err_new, np.float64)
    ratio = float(b.mean() / a.mean()) if a.mean() > 0 else float("nan")
    out = {"ratio": ratio, "ci_low": float("nan"), "ci_high": float("nan"), "unit": unit.name}
    if not np.isfinite(ratio):
        return {**out, "method": "the reference makes no error: no ratio"}
    if len(unit.ids) == 2:
        # Linearised ratio: (b_i - r a_i) / mean(a) has mean 0 and the ratio's variance (first order).
        se = float(np.sqrt(dyadic_variance((b - ratio * a) / a.mean(), *unit.ids)))
        z = float(st.norm.ppf(0.5 + confidence / 2))
        return {**out, "ci_low": max(0.0, ratio - z * se), "ci_high": ratio + z * se,
                "method": f"delta method, dyadic cluster-robust variance over {unit.describe(a.size)}"}
    w = unit_weights(list(unit.ids), a.size, n_boot, seed)                     # [B, N]
    ea, eb = w @ a, w @ b
    ratios = eb[ea > 0] / ea[ea > 0]
    lo, hi = np.quantile(ratios, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {**out, "ci_low": float(lo), "ci_high": float(hi),
            "method": f"{'cluster' if unit.ids else 'row'} bootstrap over {unit.describe(a.size)}, {n_boot:,} resamples"}


def _acc_row(method: str, test_prob: np.ndarray, y: np.ndarray, threshold: float, val_acc: float, note: str,
             unit: Unit = ROWS, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    a = interval(correct(test_prob, y, threshold), unit, n_boot=n_boot, seed=seed)
    return {"method": method, "val_acc": val_acc, "test_acc": a["mean"], "ci_low": a["ci_low"],
            "ci_high": a["ci_high"], "test_error": 1 - a["mean"], "n_test": a["n"], "how": note}


def _majority(prob: np.ndarray, thresholds: np.ndarray, threshold: float) -> np.ndarray:
    """Majority vote [N] in {0, 1} of probabilities [N, M], each model voting at its own threshold; a tie falls
    back to the mean probability at the ensemble's ``threshold``."""
    votes = (prob >= thresholds).mean(axis=1)
    tie = np.isclose(votes, 0.5)
    out = (votes > 0.5).astype(np.float64)
    out[tie] = (prob[tie].mean(axis=1) >= threshold).astype(np.float64)
    return out


def make_comparison_table(rows: list[dict[str, Any]], best_error: float) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["error_vs_best_single"] = df["test_error"] / best_error if best_error > 0 else np.nan
    return df


def rank_by_validation(base: BasePredictions) -> np.ndarray:
    """Base-model column indices, best first: highest validation accuracy, then lowest validation log-loss."""
    val_acc = correct(base.val_prob, base.val_y[:, None], base.thresholds).mean(axis=0)
    val_ll = np.array([_logloss(base.val_prob[:, j], base.val_y) for j in range(base.n_models)])
    return np.lexsort((val_ll, -val_acc))


def make_base_table(base: BasePredictions, leakage: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Level 0 on its own: accuracy of every base model, ranked on validation only (`rank_by_validation`),
    and the index of the best one. Returns (table, best index)."""
    yv, yt = base.val_y, base.test_y
    order = rank_by_validation(base)
    best = int(order[0])
    base_table = pd.DataFrame({"model": base.names,
                               "val_acc": correct(base.val_prob, yv[:, None], base.thresholds).mean(axis=0),
                               "val_logloss": [_logloss(base.val_prob[:, j], yv) for j in range(base.n_models)],
                               "test_acc": correct(base.test_prob, yt[:, None], base.thresholds).mean(axis=0),
                               "trained_on": leakage["trained_on"].values,
                               "selected_on": leakage["selected_on"].values})
    base_table["chosen_as_best"] = np.arange(base.n_models) == best
    base_table["val_rank"] = np.argsort(order) + 1
    return base_table.sort_values("val_rank", ignore_index=True), best


def choose_topk(base: BasePredictions) -> pd.DataFrame:
    """The average of the k best base models by validation, for every k: its validation accuracy and
    log-loss, and the k chosen (highest validation accuracy, then lowest log-loss, then fewest models).
    Chosen on validation only: the test split never enters."""
    order = rank_by_validation(base)
    csum = np.cumsum(base.val_prob[:, order], axis=1) / np.arange(1, base.n_models + 1)   # [N, M] top-k means
    acc = correct(csum, base.val_y[:, None], base.threshold).mean(axis=0)     # an average: the shared threshold
    ll = np.array([_logloss(csum[:, k], base.val_y) for k in range(base.n_models)])
    table = pd.DataFrame({"k": np.arange(1, base.n_models + 1), "val_acc": acc, "val_logloss": ll,
                          "added_model": [base.names[j] for j in order]})
    table["chosen"] = np.arange(base.n_models) == int(np.lexsort((table["k"], ll, -acc))[0])
    return table


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
    meta = train_lgbm_meta(base.val_prob, yv, base.names, grid, n_folds, seed, max_rounds, early_stopping_rounds,
                           threshold=base.threshold)
    logreg = train_logreg_meta(base.val_prob, yv, n_folds, seed)
    # Its out-of-fold validation accuracy, for the val column.
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


def _method_predictions(base: BasePredictions, best: int, topk: pd.DataFrame, metas: _MetaLearners
                        ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[str, str]]:
    """Per method: test P(y=1), validation accuracy (out-of-fold where fitted on val), how it was made. Every
    method's output is a probability of the same label as the base models', so it is scored at the threshold
    their notebooks declared (`BasePredictions.threshold`), never at a literal 0.5."""
    yv, meta, thr = base.val_y, metas.lgbm, base.threshold
    acc = lambda p: float(correct(p, yv, thr).mean())      # noqa: E731
    k = int(topk.loc[topk["chosen"], "k"].iloc[0])
    top = rank_by_validation(base)[:k]
    preds = {
        BEST: base.test_prob[:, best],
        "best single, recalibrated on val": metas.recal.predict_proba(base.test_prob[:, [best]])[:, 1],
        TOPK: base.test_prob[:, top].mean(axis=1),
        "mean of probabilities": base.test_prob.mean(axis=1),
        MAJORITY: _majority(base.test_prob, base.thresholds, thr),
        LOGREG: metas.logreg.predict_proba(base.test_prob)[:, 1],
        STACK: meta.predict(base.test_prob),
    }
    val_side = {
        BEST: float(correct(base.val_prob[:, best], yv, base.thresholds[best]).mean()),
        "best single, recalibrated on val": acc(metas.recal_oof),
        TOPK: float(topk.loc[topk["chosen"], "val_acc"].iloc[0]),
        "mean of probabilities": acc(base.val_prob.mean(1)),
        MAJORITY: acc(_majority(base.val_prob, base.thresholds, thr)),
        LOGREG: acc(metas.logreg_oof),
        STACK: acc(meta.oof.oof),
    }
    how = {
        BEST: base.names[best],
        "best single, recalibrated on val": "Platt scaling of its logit fitted on val (val_acc = out-of-fold)",
        TOPK: f"mean probability of the {k} best models by val accuracy; k chosen on val (val_acc in-sample)",
        "mean of probabilities": f"average of all {base.n_models} models, threshold {thr:g}",
        MAJORITY: "thresholded votes of all models; ties -> mean probability",
        LOGREG: "on standardised logits, fitted on val (val_acc = out-of-fold)",
        STACK: f"{meta.n_rounds} rounds, {meta.params} (val_acc = out-of-fold)",
    }
    return preds, val_side, how


def make_paired_table(preds: dict[str, np.ndarray], y: np.ndarray, threshold: float, unit: Unit = ROWS,
                      n_boot: int = 2000, seed: int = 0, references: Sequence[str] = REFERENCES,
                      alpha: float = 0.05) -> pd.DataFrame:
    """LightGBM stacking against each reference on the same test examples: `compare` over the data's
    independent unit (difference, 95% interval, p), Holm-adjusted over the references, and the verdict.
    A bootstrap that saw no replicate on the other side of zero gives p < 1/n_boot: it enters Holm at
    that bound, so the adjusted value is an upper bound. McNemar's exact p (rows as independent) is kept
    for reference only. Every method is scored at the declared ``threshold``."""
    refs = {ref: correct(preds[ref], y, threshold) for ref in references}
    return _paired_frame(correct(preds[STACK], y, threshold), refs, "stacking_minus_reference", unit, n_boot, seed,
                         alpha)


def _paired_frame(model: np.ndarray, refs: dict[str, np.ndarray], diff_col: str, unit: Unit, n_boot: int, seed: int,
                  alpha: float) -> pd.DataFrame:
    """`compare_to_references` as a table: the difference, its 95% interval, the Holm-adjusted interval beside
    the adjusted p and verdict, the raw p (at least its floor; ``p_is_bound`` when it is the floor) and McNemar's."""
    tests = compare_to_references(model, refs, unit, n_boot=n_boot, seed=seed, alpha=alpha)
    return make_comparison_frame(tests, {k: float(v.mean()) for k, v in refs.items()}, diff_col)


def make_comparison_frame(tests: dict, ref_acc: dict[str, float], diff_col: str) -> pd.DataFrame:
    """Comparisons against references as one table: the difference, its 95% interval, the Holm-adjusted interval
    beside the adjusted p and verdict, the raw p (at least its method's floor; ``p_is_bound`` when it is) and
    McNemar's (rows as independent) where the comparison kept one."""
    floor = {ref: t.spread.p_floor if t.spread is not None else P_FLOOR for ref, t in tests.items()}
    rows = [{"reference": ref, "reference_test_acc": ref_acc[ref], diff_col: t.estimate,
             "ci_low": t.ci_low, "ci_high": t.ci_high, "ci_low_adjusted": t.ci_low_adjusted,
             "ci_high_adjusted": t.ci_high_adjusted, "p_value": max(t.p, floor[ref]) if np.isfinite(t.p) else t.p,
             "p_is_bound": bool(t.p < floor[ref]), "p_holm": t.p_adjusted,
             "mcnemar_p_rows": t.extra.get("mcnemar_p", float("nan")), "method": t.method, "verdict": t.verdict}
            for ref, t in tests.items()]
    return pd.DataFrame(rows, columns=["reference", "reference_test_acc", diff_col, "ci_low", "ci_high",
                                       "ci_low_adjusted", "ci_high_adjusted", "p_value", "p_is_bound", "p_holm",
                                       "mcnemar_p_rows", "method", "verdict"])


def evaluate_stacking(base: BasePredictions, split_keys: dict[str, np.ndarray] | None = None,
                      grid: str | list[dict[str, Any]] = "small", n_folds: int = 5, seed: int = 42,
                      max_rounds: int = 500, early_stopping_rounds: int = 30, n_boot: int = 2000,
                      splits=None, sklearn_stacking: bool = True, sklearn_max_train: int = 0,
                      unit: Unit | None = None) -> StackingResult:
    """The whole comparison for one dataset (notebook 05's core). Test labels are used only to score.

    split_keys: example keys of the dataset's splits for the leakage check (computed from `splits`
    when omitted); the check runs first and raises `LeakageError` on any leak. unit: the test split's
    independent unit (`helpers.evaluation.stats.unit_of(splits.test)`; rows when neither is given).
    """
    if split_keys is None:
        if splits is None:
            raise WorkbookError("evaluate_stacking needs split_keys or splits for the leakage check")
        split_keys = make_split_keys(splits)
    unit = unit if unit is not None else (unit_of(splits.test) if splits is not None else ROWS)
    leakage = check_no_leakage(base, split_keys)
    base_table, best = make_base_table(base, leakage)
    topk = choose_topk(base)
    metas = _fit_meta_learners(base, best, grid, n_folds, seed, max_rounds, early_stopping_rounds)
    preds, val_side, how = _method_predictions(base, best, topk, metas)
    if sklearn_stacking and splits is not None:
        _, preds["sklearn StackingClassifier (classical)"] = train_sklearn_stacking(splits, seed, n_folds, sklearn_max_train)
        val_side["sklearn StackingClassifier (classical)"] = float("nan")
        how["sklearn StackingClassifier (classical)"] = "logreg + LightGBM on pair features, refit on train"
    yt, thr = base.test_y, base.threshold
    rows = [_acc_row(m, p, yt, thr, val_side[m], how[m], unit, n_boot, seed) for m, p in preds.items()]
    comparison = make_comparison_table(rows, 1 - float(correct(preds[BEST], yt, thr).mean()))
    paired = make_paired_table(preds, yt, thr, unit, n_boot, seed)
    ratio = evaluate_error_ratio(1 - correct(preds[BEST], yt, thr), 1 - correct(preds[STACK], yt, thr), unit, n_boot,
                                 seed)
    return StackingResult(base.dataset, base, leakage, base_table, metas.lgbm, comparison, paired,
                          base.names[best], preds, topk, ratio, unit.name)


def make_error_correlation(base: BasePredictions, split: str = "val") -> pd.DataFrame:
    """Pearson correlation of the base models' 0/1 error indicators on one split (diversity).

    Low correlation = models err on different examples = room for an ensemble to help.
    A model with no errors (constant indicator) gets NaN correlations.
    """
    prob, y = (base.val_prob, base.val_y) if split == "val" else (base.test_prob, base.test_y)
    err = 1 - correct(prob, y[:, None], base.thresholds)     # [N, M], each model at its declared threshold
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(err, rowvar=False)
    corr = np.atleast_2d(corr)
    return pd.DataFrame(corr, index=base.names, columns=base.names)
