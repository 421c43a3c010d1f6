"""The baselines a user would try first: hand-made pair features + logistic regression / LightGBM.

Features are symmetric in the two members (swapping a and b gives the same row), like the pair
models' fusion: |a − b|, a ⊙ b, a + b, and the scalar L1 / L2 distances and cosine similarity,
plus the pair-level features when the data has them.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass

import numpy as np


@dataclass
class BaselineResult:
    name: str
    val_prob: np.ndarray       # P(y = 1) on val, float64
    test_prob: np.ndarray
    fit_s: float
    n_features: int
    info: dict


def make_pair_features(xa: np.ndarray, xb: np.ndarray, pair: np.ndarray | None = None) -> np.ndarray:
    """[N, 3·D + 3 (+ G)] float32 features from two inputs [N, ...] (flattened to D) and optional
    pair features [N, G]."""
    a = np.asarray(xa, dtype=np.float32).reshape(len(xa), -1)
    b = np.asarray(xb, dtype=np.float32).reshape(len(xb), -1)
    diff = np.abs(a - b)
    l1 = diff.sum(1, keepdims=True)
    l2 = np.sqrt((diff ** 2).sum(1, keepdims=True))
    cos = (a * b).sum(1, keepdims=True) / np.maximum(
        np.linalg.norm(a, axis=1, keepdims=True) * np.linalg.norm(b, axis=1, keepdims=True), 1e-8)
    parts = [diff, a * b, a + b, l1, l2, cos]
    if pair is not None:
        parts.append(np.asarray(pair, dtype=np.float32).reshape(len(a), -1))
    return np.concatenate(parts, axis=1).astype(np.float32)


def train_logreg_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, x_test: np.ndarray,
                          c: float = 1.0, seed: int = 0) -> BaselineResult:
    """Standardised features + L2 logistic regression (C = ``c``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    clf.fit(x_train, y_train)
    return BaselineResult("logreg", clf.predict_proba(x_val)[:, 1].astype(np.float64),
                          clf.predict_proba(x_test)[:, 1].astype(np.float64), time.perf_counter() - t0,
                          x_train.shape[1], {"C": c})


def train_lgbm_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        x_test: np.ndarray, n_estimators: int = 400, learning_rate: float = 0.05,
                        num_leaves: int = 31, seed: int = 0, num_threads: int = 1) -> BaselineResult:
    """LightGBM with early stopping on the validation split (50 rounds); the number of rounds used
    is in ``info["best_iteration"]``."""
    import lightgbm as lgb

    t0 = time.perf_counter()
    clf = lgb.LGBMClassifier(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                             subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                             n_jobs=num_threads, verbose=-1)
    # Newer LightGBM names the validation data eval_X/eval_y (eval_set is deprecated there).
    fit_params = inspect.signature(clf.fit).parameters
    val = {"eval_X": (x_val,), "eval_y": (y_val,)} if "eval_X" in fit_params else {"eval_set": [(x_val, y_val)]}
    clf.fit(x_train, y_train, eval_metric="binary_logloss", callbacks=[lgb.early_stopping(50, verbose=False)], **val)
    best = int(clf.best_iteration_ or n_estimators)
    return BaselineResult("lgbm", clf.predict_proba(x_val, num_iteration=best)[:, 1].astype(np.float64),
                          clf.predict_proba(x_test, num_iteration=best)[:, 1].astype(np.float64),
                          time.perf_counter() - t0, x_train.shape[1],
                          {"best_iteration": best, "n_estimators": n_estimators, "learning_rate": learning_rate,
                           "num_leaves": num_leaves})
