"""The inference cost of a stacked ensemble (notebook 05): every base model rebuilt from its kept weights, its
recorded setting or its recorded architecture and run on the raw test inputs, then the meta-learner on their
probabilities, timed against one distilled student in the same process with the same threads."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.data.pairs import _uses_pair, make_inputs
from helpers.evaluation.baselines import (_pair_rows, _svm_scores, CNNSettings, compare_probs, make_class_images,
                                          make_pair_features, nearest_rows)
from helpers.evaluation.stacking import MetaResult, STACK, StackingResult
from helpers.models.registry import create_model
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.loop import predict
from helpers.training.tasks import BinaryTask, MulticlassTask


@dataclass
class BasePredictor:
    """One base model rebuilt for timing its inference on the test split.

    ``predict()`` computes its test P(y=1) from the raw test inputs (features included); ``how`` says what was
    rebuilt: the kept weights (checkpoint), a refit with the recorded setting, or the recorded architecture
    with fresh weights (inference time does not depend on the weight values, but its predictions then differ
    from the file's, and ``agreement`` shows it)."""
    name: str
    kind: str                       # "checkpoint" | "refit" | "architecture only" | "not rebuilt"
    how: str
    predict: Any = None             # () -> np.ndarray [N_test]
    agreement: float = float("nan")  # share of test rows predicted as the file's, at the model's declared threshold


def measure_seconds(fn, repeats: int = 3) -> tuple[float, Any]:
    """The fastest wall time of ``fn()`` over ``repeats`` calls after one untimed warm-up call (the least
    disturbed by other processes, as ``timeit`` advises), and its last output."""
    out = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times)), out


def measure_ensemble_inference(predictors: Sequence[BasePredictor], meta: MetaResult, n_rows: int,
                               repeats: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """Time every base model's test-split inference and the meta-learner's on their outputs.

    Returns one row per step (base models in ``predictors`` order, then the meta-learner): seconds (the fastest
    of ``repeats``), samples/s, what was timed; and the ensemble's test P(y=1) from this very pipeline."""
    rows, cols = [], []
    for p in predictors:
        if p.predict is None:
            rows.append({"step": p.name, "kind": p.kind, "seconds": float("nan"), "how": p.how,
                         "agreement_with_file": float("nan")})
            cols.append(np.full(n_rows, np.nan))
            continue
        sec, prob = measure_seconds(p.predict, repeats)
        cols.append(np.asarray(prob, np.float64).reshape(-1))
        rows.append({"step": p.name, "kind": p.kind, "seconds": sec, "how": p.how, "agreement_with_file": p.agreement})
    X = np.stack(cols, axis=1)
    sec, prob = measure_seconds(lambda: meta.predict(X), repeats)
    rows.append({"step": "LightGBM meta-learner", "kind": "meta", "seconds": sec,
                 "how": f"{meta.n_rounds} rounds on the {X.shape[1]} base probabilities", "agreement_with_file": np.nan})
    df = pd.DataFrame(rows)
    df["samples_per_s"] = n_rows / df["seconds"]
    df["share_of_time"] = df["seconds"] / df["seconds"].sum()
    return df, np.asarray(prob)


def make_checkpoint_predictor(name: str, path: str | Path, splits, device: str = "cpu", batch_size: int = 512,
                              fresh: bool = False, changes: dict[str, Any] | None = None) -> BasePredictor:
    """A pair model rebuilt from a checkpoint written by `train_model` (or a member's ``model.pt``): its
    ``model_spec``, and its weights unless ``fresh`` (then only the architecture, with ``changes`` to its
    kwargs: the weights were not kept)."""
    ck = read_checkpoint_file(path)
    spec = ck.get("model_spec")
    if not isinstance(spec, dict) or "name" not in spec:
        return BasePredictor(name, "not rebuilt", f"{path} holds no model_spec")
    model = create_model(spec["name"], **{**(spec.get("kwargs") or {}), **((changes or {}) if fresh else {})})
    if not fresh:
        model.load_state_dict(ck["model_state_dict"])
    model.eval()
    inputs = make_inputs(splits.test, _uses_pair(splits))
    task = BinaryTask()
    torch_inputs = tuple(torch.as_tensor(np.ascontiguousarray(a)) for a in inputs)

    def run() -> np.ndarray:
        return predict(model, task, torch_inputs, device=device, batch_size=batch_size)

    where = Path(path)
    how = (f"{spec['name']} from {where.parent.name}/{where.name}" if not fresh else
           f"{spec['name']} as recorded in {where.parent.name}/{where.name}"
           + (f" with {changes}" if changes else "") + ", fresh weights (the trained ones are not kept)")
    return BasePredictor(name, "architecture only" if fresh else "checkpoint", how, run)


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def make_baseline_predictor(name: str, info: dict[str, Any], splits, seed: int = 42, threads: int = 1,
                            device: str = "cpu") -> BasePredictor:
    """A classical baseline of notebook 02 (``baselines.py``) refitted on the training split with the setting 02
    recorded in its run card (chosen there on validation; nothing is chosen again), for timing its inference:
    SVM / CNN classify-then-compare, 1-NN, logistic regression and LightGBM on pair features. The CNN's trained
    weights are not kept by 02, so it is timed with its recorded architecture and fresh weights."""
    kind = name.rsplit("/", 1)[-1].removeprefix("baseline_")     # "<stem>/baseline_<kind>" or "baseline_<kind>"
    by_class = kind in ("svm_compare", "cnn_compare") or (kind == "1nn" and str(info.get("mode", "")).startswith("class"))
    if by_class:
        tr = splits.train
        if tr.ca is None or tr.cb is None:
            return BasePredictor(name, "not rebuilt", "the pair files have no classes (ca/cb)")
        img = make_class_images(tr.xa, tr.xb, tr.ca, tr.cb, tr.ida, tr.idb)
        build = {"svm_compare": _svm_compare_predictor, "cnn_compare": _cnn_compare_predictor,
                 "1nn": _class_1nn_predictor}[kind]
        return build(name, info, splits, img, seed=seed, device=device)
    if kind == "1nn":
        return _pair_1nn_predictor(name, info, splits)
    if kind in ("logreg", "lgbm"):
        return _tabular_predictor(name, kind, info, splits, seed, threads)
    return BasePredictor(name, "not rebuilt", f"no rebuild rule for baseline {kind!r}")


def _svm_compare_predictor(name: str, info: dict[str, Any], splits, img, **_) -> BasePredictor:
    from sklearn.pipeline import make_pipeline  # deferred: scikit-learn is slow to import
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    te = splits.test
    svc = SVC(C=float(info["C"]), gamma=float(info["gamma"]), decision_function_shape="ovr")
    clf = (make_pipeline(StandardScaler(), svc) if splits.kind == "vector" else svc).fit(_flat(img.x), img.c)
    temp = float(info["temperature"])

    def run() -> np.ndarray:
        return compare_probs(_svm_scores(clf, te.xa), _svm_scores(clf, te.xb), temp)
    return BasePredictor(name, "refit", f"RBF-SVM C={info['C']:g}, gamma={info['gamma']:.3g} refitted on the "
                                        f"{len(img.x)} training images, T={temp:.3g}", run)


def _cnn_compare_predictor(name: str, info: dict[str, Any], splits, img, seed: int = 42,
                           device: str = "cpu") -> BasePredictor:
    te, classes = splits.test, np.unique(img.c)
    torch.manual_seed(seed)
    model = create_model("resnet", in_channels=int(img.x.shape[1]), layers=list(info["layers"]),
                         width_mult=float(info["width_mult"]), feat_dim=CNNSettings().feat_dim,
                         num_classes=len(classes)).eval()
    task = MulticlassTask(len(classes))
    temp = float(info["temperature"])
    xa, xb = (torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)) for x in (te.xa, te.xb))

    def run() -> np.ndarray:
        la = np.log(np.clip(predict(model, task, (xa,), device=device), 1e-12, None))
        lb = np.log(np.clip(predict(model, task, (xb,), device=device), 1e-12, None))
        return compare_probs(la, lb, temp)
    return BasePredictor(name, "architecture only", f"ResNet {list(info['layers'])} ×{info['width_mult']:g} "
                                                    "class CNN as recorded, fresh weights (02 keeps no weights)", run)


def _standardizer(ref: np.ndarray, scale: bool):
    """(reference rows as searched, a function putting query rows on the same scale)."""
    mu, sd = ref.mean(0), np.where(ref.std(0) > 0, ref.std(0), 1.0)
    return ((ref - mu) / sd, lambda q: (q - mu) / sd) if scale else (ref, lambda q: q)


def _class_1nn_predictor(name: str, info: dict[str, Any], splits, img, **_) -> BasePredictor:
    te = splits.test
    ref, on_scale = _standardizer(_flat(img.x), bool(info.get("standardized")))

    def run() -> np.ndarray:
        qa, qb = on_scale(_flat(te.xa)), on_scale(_flat(te.xb))
        return (img.c[nearest_rows(qa, ref)] == img.c[nearest_rows(qb, ref)]).astype(np.float64)
    return BasePredictor(name, "refit", f"class of the nearest of {len(ref)} training images", run)


def _pair_1nn_predictor(name: str, info: dict[str, Any], splits) -> BasePredictor:
    tr, te, use_pair = splits.train, splits.test, _uses_pair(splits)
    fwd, rev = _pair_rows(tr.xa, tr.xb, tr.extras.get("pair") if use_pair else None)
    y_ref = np.concatenate([tr.y, tr.y])
    ref, on_scale = _standardizer(np.concatenate([fwd, rev]), bool(info.get("standardized")))

    def run() -> np.ndarray:
        q = _pair_rows(te.xa, te.xb, te.extras.get("pair") if use_pair else None)[0]
        return y_ref[nearest_rows(on_scale(q), ref)].astype(np.float64)
    return BasePredictor(name, "refit", f"label of the nearest of {len(fwd)} training pairs", run)


def _tabular_predictor(name: str, kind: str, info: dict[str, Any], splits, seed: int,
                       threads: int) -> BasePredictor:
    """Logistic regression or LightGBM on the pair features, refitted with 02's recorded setting."""
    from sklearn.linear_model import LogisticRegression  # deferred: scikit-learn is slow to import
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, te, use_pair = splits.train, splits.test, _uses_pair(splits)
    x_tr = make_pair_features(tr.xa, tr.xb, tr.extras.get("pair") if use_pair else None)
    if kind == "logreg":
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=float(info["C"]), max_iter=2000,
                                                                 random_state=seed)).fit(x_tr, tr.y)
        how = f"logistic regression C={info['C']:g} refitted on the training pair features"
    else:
        import lightgbm as lgb  # deferred: only this baseline needs LightGBM

        clf = lgb.LGBMClassifier(n_estimators=int(info["best_iteration"]), learning_rate=float(info["learning_rate"]),
                                 num_leaves=int(info["num_leaves"]), subsample=0.8, subsample_freq=1,
                                 colsample_bytree=0.8, random_state=seed, n_jobs=threads, verbose=-1).fit(x_tr, tr.y)
        how = (f"LightGBM {info['best_iteration']} rounds, {info['num_leaves']} leaves refitted on the training "
               "pair features")

    def run() -> np.ndarray:
        return clf.predict_proba(make_pair_features(te.xa, te.xb, te.extras.get("pair") if use_pair else None))[:, 1]
    return BasePredictor(name, "refit", how, run)


def check_agreement(p: BasePredictor, file_prob: np.ndarray, threshold: float) -> BasePredictor:
    """Set ``p.agreement``: the share of test rows whose prediction at the model's declared ``threshold``
    equals the prediction file's."""
    if p.predict is not None:
        p.agreement = float(((np.asarray(p.predict()) >= threshold) == (np.asarray(file_prob) >= threshold)).mean())
    return p


@dataclass
class SpeedResult:
    """Test-split inference of the whole ensemble (every base model + the meta-learner) and of the student."""
    steps: pd.DataFrame              # one row per base model and the meta-learner (`measure_ensemble_inference`)
    n_rows: int
    ensemble_seconds: float
    student_seconds: float
    n_models: int
    n_timed: int                     # base models rebuilt and timed
    n_exact: int                     # ... that reproduce their prediction file on every test row
    pipeline_agreement: float        # share of test rows where the timed pipeline's ensemble = the reported one
    threads: int

    @property
    def ensemble_samples_per_s(self) -> float:
        return self.n_rows / self.ensemble_seconds if self.ensemble_seconds > 0 else float("nan")

    @property
    def student_samples_per_s(self) -> float:
        return self.n_rows / self.student_seconds if self.student_seconds > 0 else float("nan")

    @property
    def speedup(self) -> float:
        return self.ensemble_seconds / self.student_seconds if self.student_seconds > 0 else float("nan")


def measure_speed(result: StackingResult, predictors: Sequence[BasePredictor], students: pd.DataFrame, splits,
                  repeats: int = 5, device: str = "cpu") -> SpeedResult:
    """Time the ensemble (`measure_ensemble_inference`: each base model from raw test inputs, then the
    meta-learner on their probabilities) and the distilled student (its kept weights) on the same test split,
    in this process, with the same threads; the fastest of ``repeats`` runs after a warm-up."""
    steps, ens_prob = measure_ensemble_inference(predictors, result.meta, len(splits.test.y), repeats)
    folder = Path(students[students["student"] == "distilled"].sort_values("seed")["folder"].iloc[0])
    student = make_checkpoint_predictor("distilled student", folder / "model.pt", splits, device)
    sec, _ = measure_seconds(student.predict, repeats)
    timed = [p for p in predictors if p.predict is not None]
    thr = result.threshold
    agree = float(((ens_prob >= thr) == (result.test_pred[STACK] >= thr)).mean()) if len(timed) == len(predictors) \
        else float("nan")
    return SpeedResult(steps, len(splits.test.y), float(steps["seconds"].sum()), sec, len(predictors), len(timed),
                       sum(1 for p in timed if p.agreement == 1.0), agree, torch.get_num_threads())
