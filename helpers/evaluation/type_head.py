"""Notebook 03's interaction types (M0 stage 2): the type task's data, a K-class head on the stage-1 encoder
with one balancing mechanism, a tuned LightGBM and the majority class beside it, per-class scores with
cluster-bootstrap intervals over person pairs and the head's paired macro-F1 differences
(`helpers.stages.stage2.run_stage2` calls `run_types`)."""
from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_text
from helpers.data.pairs import _uses_pair, make_inputs
from helpers.data.scenes import TYPE_NAMES
from helpers.evaluation.baselines import make_pair_features
from helpers.evaluation.metrics import make_multiclass_report
from helpers.evaluation.stats import adjust, ALPHA, make_comparison, Spread, Unit, unit_of, unit_weights
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model
from helpers.training.loop import predict, train_model
from helpers.training.recipes import make_train_config
from helpers.training.tasks import make_class_weights, MulticlassTask


N_BOOT = 2000                # bootstrap resamples of every interval and paired bootstrap test


TYPE_BALANCES = ("oversample", "class_weights", "none")


# LightGBM type baseline: its main hyper-parameters, chosen on validation macro-F1 (rounds early-stopped).
LGBM_GRID = {"num_leaves": (7, 31), "min_child_samples": (20, 100)}


def adjusted_record(t, better: str, worse: str) -> dict:
    """A comparison's flat record whose ``ci_low`` / ``ci_high`` are the Holm-adjusted interval (the one beside
    the adjusted verdict everywhere 03 shows it); the unadjusted 95% interval is kept as ``ci_*_95``."""
    d = t.as_dict(better, worse)
    return {**d, "ci_low_95": d["ci_low"], "ci_high_95": d["ci_high"], "ci_low": d["ci_low_adjusted"],
            "ci_high": d["ci_high_adjusted"]}


@dataclass
class TypeData:
    """The interacting pairs with a type label, per split: model inputs, LightGBM features, labels, units."""
    names: list[str]
    inputs: dict[str, tuple]
    features: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    units: dict[str, Unit]
    groups: np.ndarray              # [3, K] groups of each class per split (train, val, test)
    pairs: np.ndarray               # [3, K] rows of each class per split

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def min_groups(self) -> int:
        return int(self.groups.min())


def count_type_groups(seq: np.ndarray, track_a: np.ndarray, track_b: np.ndarray, typ: np.ndarray, k: int) -> np.ndarray:
    """Groups of each class [k] among interacting pairs: a group is a connected set of people (within a
    sequence) linked by interacting pairs, counted once per class its pairs carry."""
    if len(typ) == 0:
        return np.zeros(k, np.int64)
    na = (np.asarray(seq, np.int64) << 32) + np.asarray(track_a, np.int64)
    nb = (np.asarray(seq, np.int64) << 32) + np.asarray(track_b, np.int64)
    uniq, inv = np.unique(np.concatenate([na, nb]), return_inverse=True)
    n = len(na)
    graph = coo_matrix((np.ones(n), (inv[:n], inv[n:])), shape=(len(uniq), len(uniq)))
    _, label = connected_components(graph, directed=False)
    keys = np.unique(label[inv[:n]].astype(np.int64) * k + np.asarray(typ, np.int64))
    return np.bincount(keys % k, minlength=k)


def _type_names(splits) -> list[str]:
    return list(splits.meta.get("type_names", TYPE_NAMES)) if isinstance(splits.meta, dict) else list(TYPE_NAMES)


def _subset_unit(unit: Unit, rows: np.ndarray) -> Unit:
    return Unit(unit.name, tuple(np.asarray(a)[rows] for a in unit.ids), unit.conditional)


def make_type_data(splits) -> TypeData | None:
    """The type task's data (None when the data has no ``type`` labels); errors name the dataset."""
    if any("type" not in s.extras for _, s in splits.items()):
        return None
    names, use_pair = _type_names(splits), _uses_pair(splits)
    sel = {split: np.flatnonzero((s.extras["type"] >= 0) & (s.y == 1)) for split, s in splits.items()}
    if any(len(v) == 0 for v in sel.values()):
        raise WorkbookError(f"dataset {splits.name!r}: 'type' labels present but no interacting pair with a type "
                            f"in some split ({ {k_: len(v) for k_, v in sel.items()} })")
    y = {split: s.extras["type"][sel[split]].astype(np.int64) for split, s in splits.items()}
    top = max(int(v.max()) for v in y.values())
    if top >= len(names):
        raise WorkbookError(f"dataset {splits.name!r}: type label {top} but only {len(names)} type names {names}")
    has_groups = all(c in splits.train.extras for c in ("seq", "track_a", "track_b"))
    groups = np.stack([count_type_groups(*(s.extras[c][sel[split]] for c in ("seq", "track_a", "track_b")),
                                         y[split], len(names)) if has_groups else np.zeros(len(names), np.int64)
                       for split, s in splits.items()])
    return TypeData(names=names,
                    inputs={split: tuple(a[sel[split]] for a in make_inputs(s, use_pair))
                            for split, s in splits.items()},
                    features={split: make_pair_features(s.xa[sel[split]], s.xb[sel[split]],
                                                        s.extras["pair"][sel[split]] if use_pair else None)
                              for split, s in splits.items()},
                    y=y, units={split: _subset_unit(unit_of(s), sel[split]) for split, s in splits.items()},
                    groups=groups, pairs=np.stack([np.bincount(y[s], minlength=len(names)) for s in y]))


def make_type_training(y: np.ndarray, balance: str, k: int, seed: int = 0) -> tuple[np.ndarray, list[float] | None]:
    """(training rows, class weights) for ONE balancing mechanism: ``oversample`` (rows drawn up to the
    largest class, no weights), ``class_weights`` (all rows, inverse-frequency weights) or ``none``."""
    if balance not in TYPE_BALANCES:
        raise WorkbookError(f"type_balance = {balance!r}; expected one of {'|'.join(TYPE_BALANCES)}")
    if balance == "oversample":
        return make_balanced_indices(y, "oversample", seed), None
    weights = make_class_weights(y, k).tolist() if balance == "class_weights" else None
    return np.arange(len(y)), weights


def make_balanced_indices(y: np.ndarray, strategy: str, seed: int = 0) -> np.ndarray:
    """Training rows after class balancing: ``oversample`` (every class drawn up to the largest,
    with replacement), ``undersample`` (every class cut to the smallest present), ``none``."""
    y = np.asarray(y)
    if strategy == "none":
        return np.arange(len(y))
    if strategy not in ("oversample", "undersample"):
        raise WorkbookError(f"balance strategy = {strategy!r}; expected one of oversample|undersample|none")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    target = counts.max() if strategy == "oversample" else counts.min()
    parts = []
    for c, n in zip(classes, counts):
        rows = np.flatnonzero(y == c)
        if strategy == "oversample":
            extra = rng.choice(rows, size=target - n, replace=True) if target > n else rows[:0]
            parts.append(np.concatenate([rows, extra]))
        else:
            parts.append(rng.choice(rows, size=target, replace=False))
    return np.sort(np.concatenate(parts))


def train_type_head(td: TypeData, stage1_model, kind: str, params: Mapping[str, Any], out: Path, device: str) -> dict:
    """The K-class head: encoder, fusion and hidden layer from stage 1, new last layer; trained with one
    balancing mechanism and early-stopped on validation macro-F1 (the kept weights are its best epoch)."""
    seed, balance = int(params["seed"]), str(params["type_balance"])
    rows, weights = make_type_training(td.y["train"], balance, td.k, seed)
    spec = copy.deepcopy(stage1_model.spec)
    spec["kwargs"].update(num_classes=td.k, dropout=float(params["type_dropout"]))
    torch.manual_seed(seed)
    model = create_model(spec["name"], **spec["kwargs"])
    transfer = transfer_weights(model, stage1_model.state_dict())   # encoder, fusion; head's last layer differs
    if params["freeze_backbone"]:
        for n_, p in model.named_parameters():
            if n_.startswith("encoder."):
                p.requires_grad_(False)
    task = MulticlassTask(td.k, loss_name="ce", class_weights=weights)
    cfg = make_train_config(params, kind, epochs=int(params["type_epochs"]), lr=float(params["type_lr"]),
                            weight_decay=float(params["type_weight_decay"]), patience=int(params["type_patience"]),
                            monitor="f1", amp=False, augment=False, checkpoint=False, log_every=0,
                            warmup_epochs=min(float(params["warmup_epochs"]), float(params["type_epochs"]) - 1))
    res = train_model(model, task, (*[a[rows] for a in td.inputs["train"]], td.y["train"][rows]),
                      (*td.inputs["val"], td.y["val"]), cfg, out_dir=out, device=device)
    best = res.best.get("monitor") or {}
    kept = next((h for h in res.history if h["epoch"] == best.get("epoch")), res.history[-1])
    val_prob = predict(model, task, td.inputs["val"], device=device)
    return {"val_prob": val_prob, "val_macro_f1": _macro_f1(td.y["val"], val_prob.argmax(1), td.k),
            "test_prob": predict(model, task, td.inputs["test"], device=device), "history": res.history,
            "epochs_run": res.epochs_run, "stopped_early": bool(res.stopped_early), "best_epoch": kept["epoch"],
            "kept_train_loss": kept["train_loss"], "kept_val_loss": kept["val_loss"], "transfer": transfer,
            "train_rows": int(len(rows)), "class_weights": weights, "balance": balance, "spec": spec,
            "frozen": bool(params["freeze_backbone"])}


def _lgbm_fit(x: dict, y: dict, k: int, setting: dict, params: Mapping[str, Any]):
    """One LightGBM fit with balanced class weights, rounds early-stopped on validation log-loss; returns
    (val and test probabilities [N, k], rounds used)."""
    import lightgbm as lgb  # deferred: a heavy import only this baseline needs

    clf = lgb.LGBMClassifier(n_estimators=int(params["lgbm_estimators"]), learning_rate=0.05, class_weight="balanced",
                             subsample=0.8, subsample_freq=1, colsample_bytree=0.8, random_state=int(params["seed"]),
                             n_jobs=int(params.get("num_threads", 0)) or torch.get_num_threads(), verbose=-1,
                             **setting)
    seen = np.isin(y["val"], np.unique(y["train"]))   # early stopping can only score classes seen in training
    fit_kw: dict[str, Any] = {}
    if seen.any():
        xv, yv = x["val"][seen], y["val"][seen]
        # Newer LightGBM names the validation data eval_X/eval_y (eval_set is deprecated there).
        fit_kw = ({"eval_X": (xv,), "eval_y": (yv,)} if "eval_X" in inspect.signature(clf.fit).parameters
                  else {"eval_set": [(xv, yv)]})
        fit_kw["callbacks"] = [lgb.early_stopping(30, verbose=False)]
    clf.fit(x["train"], y["train"], **fit_kw)
    best = int(clf.best_iteration_ or clf.n_estimators) if fit_kw else clf.n_estimators

    def full(p: np.ndarray) -> np.ndarray:            # classes absent from training get probability 0
        out = np.zeros((len(p), k))
        out[:, clf.classes_.astype(int)] = p
        return out
    return (full(clf.predict_proba(x["val"], num_iteration=best)), full(clf.predict_proba(x["test"], num_iteration=best)),
            best)


def train_type_lgbm(td: TypeData, params: Mapping[str, Any]) -> dict | None:
    """LightGBM on the same pairs' symmetric features, balanced class weights, ``num_leaves`` x
    ``min_child_samples`` chosen on validation macro-F1; None when training holds a single class."""
    if len(np.unique(td.y["train"])) < 2:
        return None
    grid, fits = [], []
    for nl in LGBM_GRID["num_leaves"]:
        for mcs in LGBM_GRID["min_child_samples"]:
            setting = {"num_leaves": nl, "min_child_samples": mcs}
            val_prob, test_prob, rounds = _lgbm_fit(td.features, td.y, td.k, setting, params)
            f1 = _macro_f1(td.y["val"], val_prob.argmax(1), td.k)
            grid.append({**setting, "rounds": rounds, "val_macro_f1": f1})
            fits.append((val_prob, test_prob))
    best = int(np.argmax([g["val_macro_f1"] for g in grid]))
    return {"val_prob": fits[best][0], "test_prob": fits[best][1], "chosen": grid[best],
            "grid": pd.DataFrame(grid).rename_axis("setting")}


def _class_stats(w: np.ndarray, y: np.ndarray, pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-class precision / recall / F1 [R, k], macro-F1 and accuracy [R] under row weights ``w`` [R, N]
    (one row of ones is the plain estimate; bootstrap weights give the replicates). Macro-F1 averages the
    classes present in each replicate, as `evaluate_multiclass` does."""
    onehot_y, onehot_p = np.eye(k, dtype=w.dtype)[y], np.eye(k, dtype=w.dtype)[pred]
    tp, sup, pp = w @ (onehot_y * onehot_p), w @ onehot_y, w @ onehot_p
    with np.errstate(invalid="ignore", divide="ignore"):
        prec = np.where(pp > 0, tp / pp, 0.0)
        rec = np.where(sup > 0, tp / sup, 0.0)
        f1 = np.where(pp + sup > 0, 2 * tp / (pp + sup), 0.0)     # = 2PR / (P + R)
    present = sup > 0
    macro = (f1 * present).sum(1) / np.maximum(present.sum(1), 1)
    acc = (w @ (y == pred).astype(w.dtype)) / np.maximum(w.sum(1), 1e-12)
    return {"precision": prec, "recall": rec, "f1": f1, "support": sup, "macro_f1": macro, "accuracy": acc}


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    return float(_class_stats(np.ones((1, len(y))), y, pred, k)["macro_f1"][0])


def evaluate_type_predictions(y: np.ndarray, preds: Mapping[str, np.ndarray], k: int, unit: Unit,
                              n_boot: int = N_BOOT, seed: int = 0) -> dict[str, dict]:
    """Per model: per-class precision / recall / F1, macro-F1 and accuracy with 95% cluster-bootstrap
    intervals over ``unit`` (the same resamples for every model, so differences are paired)."""
    w = np.vstack([np.ones((1, len(y)), np.float32), unit_weights(list(unit.ids), len(y), n_boot, seed)])
    out = {}
    for name, pred in preds.items():
        s = _class_stats(w, np.asarray(y), np.asarray(pred), k)
        lo = {m: np.quantile(v[1:], 0.025, axis=0) for m, v in s.items()}
        hi = {m: np.quantile(v[1:], 0.975, axis=0) for m, v in s.items()}
        out[name] = {"point": {m: v[0] for m, v in s.items()}, "low": lo, "high": hi,
                     "boot": {m: s[m][1:] for m in ("macro_f1", "accuracy")}}
    return out


def evaluate_types(td: TypeData, head: dict, lgbm: dict | None, n_boot: int = N_BOOT) -> dict:
    """Head, LightGBM and the majority class on the test pairs: scores with intervals, and the head's
    macro-F1 minus each other model's (paired bootstrap over the unit, Holm-adjusted)."""
    y = td.y["test"]
    major = int(np.bincount(td.y["train"], minlength=td.k).argmax())
    preds = {"type head": head["test_prob"].argmax(1)}
    if lgbm is not None:
        preds["LightGBM"] = lgbm["test_prob"].argmax(1)
    preds["majority class"] = np.full(len(y), major)
    scores = evaluate_type_predictions(y, preds, td.k, td.units["test"], n_boot)
    h = scores["type head"]
    unit = td.units["test"]
    what = (f"paired {'cluster' if unit.ids else 'row'} bootstrap of macro-F1 over {unit.describe(len(y))}, "
            f"{n_boot:,} resamples; one training seed each")
    tests = adjust({name: make_comparison(Spread(h["point"]["macro_f1"] - s["point"]["macro_f1"],
                                                 draws=h["boot"]["macro_f1"] - s["boot"]["macro_f1"]),
                                          unit.name, unit.n_units or len(y), what, ALPHA)
                    for name, s in scores.items() if name != "type head"})
    tests = {k: adjusted_record(t, "type head better", "type head worse") for k, t in tests.items()}
    return {"scores": scores, "tests": tests, "majority_class": td.names[major], "preds": preds}


def run_types(splits, stage1_model, params: Mapping[str, Any], out: Path, device: str) -> dict | None:
    """The type head, the tuned LightGBM and their evaluation; None when the data has no type labels."""
    td = make_type_data(splits)
    if td is None:
        return None
    head = train_type_head(td, stage1_model, splits.kind, params, out, device)
    lgbm = train_type_lgbm(td, params)
    ev = evaluate_types(td, head, lgbm)
    s = ev["scores"]["type head"]["point"]
    table = pd.DataFrame({m: s[m] for m in ("precision", "recall", "f1")}, index=pd.Index(td.names, name="class"))
    table["support"] = td.pairs[2]
    summary = {"n": int(len(td.y["test"])), "accuracy": float(s["accuracy"]), "macro_f1": float(s["macro_f1"]),
               "class_names": td.names, "confusion": _confusion(td.y["test"], ev["preds"]["type head"], td.k)}
    atomic_write_text(out / "evaluation_report.txt", make_multiclass_report(
        f"Stage 2 interaction types: {splits.name} (test, interacting pairs)",
        {**summary, "acc_ci_low": float(ev["scores"]["type head"]["low"]["accuracy"]),
         "acc_ci_high": float(ev["scores"]["type head"]["high"]["accuracy"])}, table)
        + f"\ntype_balance {head['balance']} (one mechanism), freeze_backbone {head['frozen']}; training rows "
          f"{head['train_rows']}; early stopping on validation macro-F1: epoch {head['best_epoch']} of "
          f"{head['epochs_run']} kept\nintervals: cluster bootstrap over {td.units['test'].describe(summary['n'])}\n")
    return {"data": td, "head": head, "lgbm": lgbm, "eval": ev, "summary": summary, "table": table,
            "names": td.names}


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    return np.bincount(np.asarray(y) * k + np.asarray(pred), minlength=k * k).reshape(k, k).tolist()
