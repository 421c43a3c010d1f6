"""The baselines a reviewer expects next to a pair model, each tuned on the validation split only (no
choice ever sees a test label: the functions are not given any).

- **classify-then-compare** (pairs whose members carry a class, ``ca``/``cb``): a class classifier
  trained on the training split's distinct images — an RBF-SVM (C and γ on a grid) or a small CNN —
  is applied to both members and P(same) = Σ_k p_a,k · p_b,k from the two predicted class
  distributions. The distributions are softmax(scores / T) with one temperature T fitted on the
  validation images' classes: the SVM's own Platt probabilities (an internal 5-fold split of as few as
  100 images) are so flat that Σ p_a·p_b rarely reaches 0.5, although the two predicted classes agree.
- **1-nearest-neighbour on the raw inputs**: with classes, each member takes the class of its nearest
  training image and P(same) is 1 when the two classes agree, else 0; without classes, a pair takes
  the label of its nearest training pair, the distance of (a, b) to (a', b') taken in the closer of the
  two orders (a pair is unordered). Vectors are z-scored on the training split first (mixed units);
  images are compared as raw pixels.
- **logistic regression** (C on a grid) and **LightGBM** (num_leaves × learning rate on a grid, rounds
  early-stopped on validation) on hand-made symmetric pair features: |a − b|, a ⊙ b, a + b, the L1 / L2
  distances and the cosine similarity, plus the pair-level features when the data has them.

A grid's winner is the setting with the best validation accuracy at the stated threshold, ties broken
by the lower validation log-loss.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from helpers.core.errors import WorkbookError
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.loop import predict, train_model
from helpers.training.tasks import MulticlassTask


@dataclass
class BaselineResult:
    name: str
    val_prob: np.ndarray       # P(y = 1) on val, float64
    test_prob: np.ndarray
    fit_s: float
    n_features: int
    info: dict
    selected_on: str = "val"   # the split its settings (or early stopping, temperature) were chosen on


@dataclass
class ClassImages:
    """Distinct images of one split with their classes: x [M, ...] float32, c [M] int64."""
    x: np.ndarray
    c: np.ndarray


Pairs = tuple  # (xa, xb): the two members of each pair, [N, ...] each


# ----------------------------------------------------------------------------- pair features
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


# ---------------------------------------------------------------------------- choosing on val
def _log_loss(y: np.ndarray, prob: np.ndarray) -> float:
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def pick_on_val(candidates: Sequence[dict], y_val: np.ndarray, threshold: float) -> int:
    """Index of the candidate (each with ``val_prob``) with the best validation accuracy at
    ``threshold``; ties go to the lower validation log-loss, then to the earlier candidate."""
    if not candidates:
        raise WorkbookError("pick_on_val: no candidates; give a grid with at least one setting")
    y = np.asarray(y_val)
    keys = [(-np.mean((c["val_prob"] >= threshold) == (y == 1)), _log_loss(y, c["val_prob"]), i)
            for i, c in enumerate(candidates)]
    return min(keys)[2]


def val_accuracy(prob: np.ndarray, y: np.ndarray, threshold: float) -> float:
    return float(np.mean((np.asarray(prob) >= threshold) == (np.asarray(y) == 1)))


# ----------------------------------------------------------------------- classify, then compare
def make_class_images(xa: np.ndarray, xb: np.ndarray, ca: np.ndarray, cb: np.ndarray,
                      ida: np.ndarray | None = None, idb: np.ndarray | None = None) -> ClassImages:
    """The distinct member images of a split with their classes: one row per id when ids are given,
    else per distinct content (an image met in many pairs is one training example, not many)."""
    x = np.concatenate([xa, xb]).astype(np.float32, copy=False)
    c = np.concatenate([ca, cb]).astype(np.int64)
    if ida is not None and idb is not None:
        _, first = np.unique(np.concatenate([ida, idb]), return_index=True)
    else:
        _, first = np.unique(x.reshape(len(x), -1), axis=0, return_index=True)
    first = np.sort(first)
    return ClassImages(x[first], c[first])


def fit_temperature(scores: np.ndarray, target: np.ndarray) -> float:
    """The T > 0 that minimises the negative log-likelihood of softmax(scores / T) on ``target``
    (class indices; rows < 0 ignored). One number: it changes how sure the classifier is, never
    which class it picks."""
    keep = np.asarray(target) >= 0
    s, t = np.asarray(scores, dtype=np.float64)[keep], np.asarray(target)[keep]
    if not len(t):
        return 1.0

    def nll(log_t: float) -> float:
        return float(-log_softmax(s / np.exp(log_t), axis=1)[np.arange(len(t)), t].mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-5.0, 5.0), method="bounded").x))


def compare_probs(scores_a: np.ndarray, scores_b: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(same class) = Σ_k p_a,k · p_b,k with p = softmax(scores / T), the two members independent."""
    pa = softmax(np.asarray(scores_a, dtype=np.float64) / temperature, axis=1)
    pb = softmax(np.asarray(scores_b, dtype=np.float64) / temperature, axis=1)
    return np.clip((pa * pb).sum(1), 0.0, 1.0)


def _class_index(classes: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Index of each class in the classifier's ``classes``; -1 for a class the training split lacks."""
    pos = np.clip(np.searchsorted(classes, c), 0, len(classes) - 1)
    return np.where(classes[pos] == c, pos, -1).astype(np.int64)


def _check_classes(train: ClassImages, what: str) -> np.ndarray:
    classes = np.unique(train.c)
    if len(classes) < 2:
        raise WorkbookError(f"{what}: the training images hold {len(classes)} class(es) in 'ca'/'cb'; a "
                            "classify-then-compare baseline needs at least 2")
    return classes


def _calibrated_compare(scores: Callable[[np.ndarray], np.ndarray], classes: np.ndarray, val_img: ClassImages,
                        val_pairs: Pairs) -> dict:
    """A fitted classifier's temperature on the validation images and its P(same) on the validation pairs."""
    target = _class_index(classes, val_img.c)
    sv = scores(val_img.x)
    temp = fit_temperature(sv, target)
    known = target >= 0
    return {"scores": scores, "temperature": temp,
            "val_image_acc": float(np.mean(sv[known].argmax(1) == target[known])) if known.any() else float("nan"),
            "val_prob": compare_probs(scores(val_pairs[0]), scores(val_pairs[1]), temp)}


def _svm_scores(clf, x: np.ndarray) -> np.ndarray:
    d = clf.decision_function(np.asarray(x, dtype=np.float64).reshape(len(x), -1))
    return np.stack([-d / 2, d / 2], 1) if d.ndim == 1 else d   # two classes: one margin -> two scores


def train_svm_compare_baseline(train: ClassImages, val_img: ClassImages, val_pairs: Pairs, test_pairs: Pairs,
                               y_val: np.ndarray, c_grid: Sequence[float] = (1.0, 10.0, 100.0),
                               gamma_grid: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
                               threshold: float = 0.5, standardize: bool = False) -> BaselineResult:
    """RBF-SVM class classifier, then compare. γ is given as multiples of 1 / (D · var(x)) (sklearn's
    "scale"), so one grid fits inputs of any range; C and γ are chosen on the validation pairs.
    ``standardize`` z-scores each input feature on the training images first (vectors of mixed units)."""
    from sklearn.pipeline import make_pipeline  # deferred: scikit-learn is slow to import
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    t0 = time.perf_counter()
    classes = _check_classes(train, "SVM classify-then-compare")
    x = train.x.reshape(len(train.x), -1).astype(np.float64)
    scale = 1.0 / (x.shape[1] * (1.0 if standardize else max(float(x.var()), 1e-12)))
    cands = []
    for c in c_grid:
        for g in gamma_grid:
            svc = SVC(C=float(c), gamma=float(g) * scale, decision_function_shape="ovr")
            clf = (make_pipeline(StandardScaler(), svc) if standardize else svc).fit(x, train.c)
            cands.append({**_calibrated_compare(partial(_svm_scores, clf), classes, val_img, val_pairs),
                          "C": float(c), "gamma_x_scale": float(g)})
    best = cands[pick_on_val(cands, y_val, threshold)]
    test_prob = compare_probs(best["scores"](test_pairs[0]), best["scores"](test_pairs[1]), best["temperature"])
    info = {k: best[k] for k in ("C", "gamma_x_scale", "temperature", "val_image_acc")}
    info.update(gamma=best["gamma_x_scale"] * scale, grid_size=len(cands), n_train_images=len(x))
    return BaselineResult("svm_compare", best["val_prob"], test_prob, time.perf_counter() - t0, x.shape[1], info)


@dataclass
class CNNSettings:
    """The small CNN classifier of the classify-then-compare baseline (a ResNet encoder + linear head)."""
    epochs: int = 60
    layers: Sequence[int] = (2, 2)
    width_mult: float = 0.5
    feat_dim: int = 64
    lr: float = 3e-3
    batch_size: int = 32
    patience: int = 15
    augment: bool = True
    seed: int = 0
    num_threads: int = 0


def _cnn_scores(model, task, device: str, x: np.ndarray) -> np.ndarray:
    # log-probabilities: softmax(log p / T) is p^(1/T) renormalised, the same as scaling the logits
    return np.log(np.clip(predict(model, task, (np.asarray(x, dtype=np.float32),), device=device), 1e-12, None))


def train_cnn_compare_baseline(train: ClassImages, val_img: ClassImages, val_pairs: Pairs, test_pairs: Pairs,
                               settings: CNNSettings | None = None, device: str = "cpu") -> BaselineResult:
    """A small CNN class classifier (images [M, C, H, W]), early-stopped on the validation images'
    class accuracy, then compare."""
    t0 = time.perf_counter()
    if train.x.ndim != 4:
        raise WorkbookError(f"CNN classify-then-compare: inputs have shape {train.x.shape[1:]}; expected images "
                            "[C, H, W] (use the SVM for vector data)")
    classes = _check_classes(train, "CNN classify-then-compare")
    s = settings or CNNSettings()
    torch.manual_seed(int(s.seed))
    model = create_model("resnet", in_channels=int(train.x.shape[1]), layers=list(s.layers), width_mult=s.width_mult,
                         feat_dim=s.feat_dim, num_classes=len(classes))
    task = MulticlassTask(len(classes), primary="accuracy")    # rows of unknown class (-1) are ignored
    cfg = TrainConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=5e-4,
                      warmup_epochs=min(2, s.epochs - 1), patience=s.patience, monitor="accuracy", augment=s.augment,
                      seed=s.seed, num_threads=s.num_threads, log_every=0, checkpoint=False, resume=False)
    res = train_model(model, task, (train.x, _class_index(classes, train.c)),
                      (val_img.x, _class_index(classes, val_img.c)), cfg, out_dir=None, device=device)
    best = _calibrated_compare(partial(_cnn_scores, model, task, device), classes, val_img, val_pairs)
    test_prob = compare_probs(best["scores"](test_pairs[0]), best["scores"](test_pairs[1]), best["temperature"])
    info = {"temperature": best["temperature"], "val_image_acc": best["val_image_acc"], "epochs_run": res.epochs_run,
            "max_epochs": s.epochs,
            "layers": list(s.layers), "width_mult": s.width_mult, "n_train_images": len(train.x)}
    return BaselineResult("cnn_compare", best["val_prob"], test_prob, time.perf_counter() - t0,
                          int(np.prod(train.x.shape[1:])), info)


# ------------------------------------------------------------------------------- nearest neighbour
def nearest_rows(query: np.ndarray, ref: np.ndarray, max_cells: int = 20_000_000) -> np.ndarray:
    """Index of each query row's nearest ``ref`` row (squared Euclidean), in chunks of query rows so
    that a distance block stays under ``max_cells`` numbers."""
    q = np.asarray(query, dtype=np.float64).reshape(len(query), -1)
    r = np.asarray(ref, dtype=np.float64).reshape(len(ref), -1)
    r2 = (r ** 2).sum(1)
    step = max(1, max_cells // max(len(r), 1))
    out = np.empty(len(q), np.int64)
    for s in range(0, len(q), step):             # chunks, each one matrix product
        block = q[s:s + step]
        out[s:s + step] = np.argmin(r2[None, :] - 2.0 * block @ r.T, axis=1)   # |q|^2 is the same per row
    return out


def _zscore(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    return [(x - mu) / sd for x in (train, *others)]


def train_1nn_compare_baseline(train: ClassImages, val_pairs: Pairs, test_pairs: Pairs,
                               standardize: bool = False) -> BaselineResult:
    """Each member takes the class of its nearest training image; P(same) = 1 when the classes agree."""
    t0 = time.perf_counter()
    flat = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in (train.x, *val_pairs, *test_pairs)]
    if standardize:
        flat = _zscore(*flat)
    ref, va, vb, ta, tb = flat
    va, vb, ta, tb = (train.c[nearest_rows(x, ref)] for x in (va, vb, ta, tb))   # the neighbours' classes
    return BaselineResult("1nn", (va == vb).astype(np.float64), (ta == tb).astype(np.float64),
                          time.perf_counter() - t0, ref.shape[1],
                          {"mode": "class of the nearest training image", "n_train_images": len(ref),
                           "standardized": standardize}, selected_on="none")


def _pair_rows(xa: np.ndarray, xb: np.ndarray, pair: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b, pair) and (b, a, pair) as flat rows: the two orders of one unordered pair."""
    a, b = (np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in (xa, xb))
    p = np.zeros((len(a), 0)) if pair is None else np.asarray(pair, dtype=np.float64).reshape(len(a), -1)
    return np.concatenate([a, b, p], 1), np.concatenate([b, a, p], 1)


def train_1nn_pair_baseline(train: tuple, y_train: np.ndarray, val: tuple, test: tuple,
                            standardize: bool = False) -> BaselineResult:
    """Without classes: a pair takes the label of its nearest training pair, in either order. ``train``,
    ``val``, ``test``: (xa, xb, pair or None)."""
    t0 = time.perf_counter()
    fwd, rev = _pair_rows(*train)
    ref, y_ref = np.concatenate([fwd, rev]), np.concatenate([y_train, y_train])   # both orders of each pair
    queries = [_pair_rows(*val)[0], _pair_rows(*test)[0]]
    if standardize:
        ref, *queries = _zscore(ref, *queries)
    v, t = (y_ref[nearest_rows(q, ref)].astype(np.float64) for q in queries)
    return BaselineResult("1nn", v, t, time.perf_counter() - t0, fwd.shape[1],
                          {"mode": "label of the nearest training pair (either order)", "n_train_pairs": len(fwd),
                           "standardized": standardize}, selected_on="none")


# ------------------------------------------------------------------------ models on pair features
def _fit_logreg(x_train, y_train, x_val, x_test, c: float, seed: int) -> dict:
    from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn is slow to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    clf.fit(x_train, y_train)
    return {"C": float(c), "val_prob": clf.predict_proba(x_val)[:, 1].astype(np.float64),
            "test_prob": clf.predict_proba(x_test)[:, 1].astype(np.float64)}


def train_logreg_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                          x_test: np.ndarray, c_grid: Sequence[float] = (0.01, 0.1, 1.0, 10.0),
                          threshold: float = 0.5, seed: int = 0) -> BaselineResult:
    """Standardised features + L2 logistic regression, C chosen on validation."""
    t0 = time.perf_counter()
    cands = [_fit_logreg(x_train, y_train, x_val, x_test, float(c), seed) for c in c_grid]
    best = cands[pick_on_val(cands, y_val, threshold)]
    return BaselineResult("logreg", best["val_prob"], best["test_prob"], time.perf_counter() - t0, x_train.shape[1],
                          {"C": best["C"], "grid_size": len(cands)})


def _fit_lgbm(x_train, y_train, x_val, y_val, x_test, n_estimators: int, learning_rate: float, num_leaves: int,
              seed: int, num_threads: int) -> dict:
    import lightgbm as lgb  # deferred: only this baseline needs LightGBM

    clf = lgb.LGBMClassifier(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                             subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=seed,
                             n_jobs=num_threads, verbose=-1)
    # Newer LightGBM names the validation data eval_X/eval_y (eval_set is deprecated there).
    fit_params = inspect.signature(clf.fit).parameters
    val = {"eval_X": (x_val,), "eval_y": (y_val,)} if "eval_X" in fit_params else {"eval_set": [(x_val, y_val)]}
    clf.fit(x_train, y_train, eval_metric="binary_logloss", callbacks=[lgb.early_stopping(50, verbose=False)], **val)
    best = int(clf.best_iteration_ or n_estimators)
    return {"num_leaves": int(num_leaves), "learning_rate": float(learning_rate), "best_iteration": best,
            "val_prob": clf.predict_proba(x_val, num_iteration=best)[:, 1].astype(np.float64),
            "test_prob": clf.predict_proba(x_test, num_iteration=best)[:, 1].astype(np.float64)}


def train_lgbm_baseline(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                        x_test: np.ndarray, n_estimators: int = 400, leaves_grid: Sequence[int] = (15, 63),
                        lr_grid: Sequence[float] = (0.03, 0.1), threshold: float = 0.5, seed: int = 0,
                        num_threads: int = 1) -> BaselineResult:
    """LightGBM, num_leaves × learning rate chosen on validation, each setting's rounds early-stopped on
    validation (50 rounds); the chosen setting and its rounds are in ``info``."""
    t0 = time.perf_counter()
    cands = [_fit_lgbm(x_train, y_train, x_val, y_val, x_test, n_estimators, float(lr), int(nl), seed, num_threads)
             for nl in leaves_grid for lr in lr_grid]
    best = cands[pick_on_val(cands, y_val, threshold)]
    info = {k: best[k] for k in ("num_leaves", "learning_rate", "best_iteration")}
    info.update(n_estimators=n_estimators, grid_size=len(cands))
    return BaselineResult("lgbm", best["val_prob"], best["test_prob"], time.perf_counter() - t0, x_train.shape[1], info)
