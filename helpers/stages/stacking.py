"""Notebook 05: the stacking report: fair references, paired tests over the unit, the goal verdict from the
interval of the error ratio, trimmed tables and figures, and the computed answer; then the ensemble distilled
into one model (M1's loss), with the leak-free design below, and the ensemble's inference cost against it.

Distillation without leakage: every base model trained on the training pairs, so their probabilities there are
in-sample and the meta-learner (fitted on validation probabilities) applied to them would return targets that
repeat the labels. The teacher's soft targets are therefore the LightGBM meta-learner's out-of-fold predictions on
the validation pairs (`make_teacher_targets`), out of sample at both levels; the student fits the training pairs
on their labels alone and the validation pairs on labels and soft targets, early-stops on validation pairs of
held-out validation source images (`make_val_holdout`), and is scored once on test. Its undistilled twin is the
same recipe on the same pairs with the soft weight at 0."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.core import paths
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_savez, atomic_torch_save, atomic_write_json, read_json
from helpers.data.pairs import (_uses_pair, dataset_labels, load_pair_dataset, make_inputs, make_source_holdout,
                                source_groups)
from helpers.data.predictions import BasePredictions, load_base_predictions
from helpers.evaluation.distillation import (DistillResult, evaluate_distillation, make_teacher_targets,
                                             STUDENT_REFERENCES)
from helpers.evaluation.ensemble_inference import (BasePredictor, check_agreement, make_baseline_predictor,
                                                   make_checkpoint_predictor, measure_speed, SpeedResult)
from helpers.evaluation.leakage import check_no_leakage, evaluate_fit_leakage, make_split_keys
from helpers.evaluation.metrics import correct
from helpers.evaluation.stacking import (BEST, evaluate_stacking, goal_verdict, make_error_correlation, STACK,
                                         StackingResult)
from helpers.evaluation.stats import unit_of
from helpers.models.pair import transfer_weights
from helpers.models.registry import create_model
from helpers.training.checkpoints import read_checkpoint_file
from helpers.training.config import TrainConfig
from helpers.training.distill import DistillTask, make_distill_targets
from helpers.training.loop import predict, train_model
from helpers.training.search import load_recipe
from helpers.training.workers import resolve_workers, run_in_workers

# What notebook 05 calls here (its tables, figures and words are in helpers.reports.stacking); lower-layer
# functions are imported above so the notebook needs this module and its report only.
__all__ = ["check_no_leakage", "dataset_labels", "evaluate_distillation", "evaluate_stacking", "load_base_predictions",
           "load_pair_dataset", "load_seed_sd", "make_base_predictors", "make_distill_card", "make_distill_headline",
           "make_error_correlation", "make_goal_table", "make_leakage_record", "make_split_keys", "make_student_specs",
           "make_teacher_targets", "measure_speed", "train_students", "unit_of"]


def make_leakage_record(table: pd.DataFrame) -> dict[str, Any]:
    """The run card's record of the leakage check that ran (`check_no_leakage` raises on any leak): what was
    compared, the counts, and the verdict."""
    return {"checked": "every base model's training examples (its recorded content keys, else its training "
                       "split's) against the validation rows the meta-learner trains on and the test rows it is "
                       "scored on, by order-free content keys",
            "base_models": int(len(table)), "checked_with_train_keys": int((table["checked_with"] == "train_keys").sum()),
            "assumed_train_split": int((table["record"] != "recorded").sum()),
            "val_rows_seen": int(table["val_rows_seen"].sum()), "test_rows_seen": int(table["test_rows_seen"].sum()),
            "selected_on_val": int((table["selected_on"] == "val").sum()),
            "verdict": "passed" if table["val_rows_seen"].sum() == 0 and table["test_rows_seen"].sum() == 0 else "FAILED"}


def make_goal_table(result: StackingResult, goal_ratio: float = 0.8) -> pd.DataFrame:
    """The goal "stacking's test error <= goal_ratio x the best single model's", and what limits it.

    Rows: the two errors, their ratio with its 95% interval over the data's independent unit
    (`evaluate_error_ratio`), the verdict from that interval (met / missed / undecided), the error stacking
    would have needed, the same ratio against the best single model recalibrated on validation (what
    ensembling adds beyond recalibration), and two limits: the share of test examples *every* base model
    gets wrong (no combination of their votes fixes those) and the mean pairwise error correlation on
    validation (high = little diversity to exploit).
    """
    yt, thr = result.base.test_y, result.threshold
    r = result.error_ratio
    e_b, e_s, e_cal = (1 - float(correct(result.test_pred[m], yt, thr).mean()) for m in
                       (BEST, STACK, "best single, recalibrated on val"))
    corr = make_error_correlation(result.base).to_numpy()
    off = corr[~np.eye(corr.shape[0], dtype=bool)]
    rows = [
        ("best single model: test error", e_b),
        ("stacking: test error", e_s),
        ("error ratio stacking / best single", r["ratio"]),
        ("error ratio, 95% interval low", r["ci_low"]),
        ("error ratio, 95% interval high", r["ci_high"]),
        ("interval method", r.get("method", "")),
        ("goal: ratio at most", goal_ratio),
        ("goal verdict (from the interval)", goal_verdict(r["ci_low"], r["ci_high"], goal_ratio)),
        ("stacking error needed for the goal", goal_ratio * e_b),
        ("test examples short of the goal (point estimate)",
         max(0, int(np.ceil((e_s - goal_ratio * e_b) * yt.size - 1e-9)))),
        ("best single recalibrated on val: test error", e_cal),
        ("error ratio stacking / recalibrated best single", e_s / e_cal if e_cal > 0 else float("nan")),
        ("limit: share of test examples every base model gets wrong",
         float((correct(result.base.test_prob, yt[:, None], result.base.thresholds) == 0).all(axis=1).mean())),
        ("limit: mean pairwise error correlation (val)",
         float(np.nanmean(off)) if off.size and np.isfinite(off).any() else float("nan")),
        ("base models", result.base.n_models),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


# ------------------------------------------------------------------------------ distillation
STUDENT_ROWS = ("train+val", "val")
HARD_LOSSES = ("bce", "recipe")
STUDENT_RECIPE = "03_stage2"


@dataclass
class StudentSpec:
    """One student: the stage-2 recipe (model, kwargs, TrainConfig, stage-1 start) trained on the distillation
    loss; ``soft_weight = 0`` is the same student without the teacher."""
    name: str                      # "distilled" | "undistilled"; also the folder name
    dataset: str
    label: str
    run_dir: str
    out_dir: str                   # <05>/<label>/students/<name>
    teacher_file: str              # soft_targets.npz: the teacher's out-of-fold P(y=1) on the validation pairs
    model: str
    kwargs: dict[str, Any]
    train: dict[str, Any]          # TrainConfig fields of the recipe
    start: str = ""                # stage-1 weights the recipe starts from
    temperature: float = 3.0
    soft_weight: float = 0.7
    hard_weight: float = 0.3
    hard_loss: str = "bce"
    threshold: float | None = None  # the decision threshold the recipe's notebook (03) declared
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0
    rows: str = "train+val"
    holdout_frac: float = 0.3
    seed: int = 42
    max_epochs: int = 0
    device: str = "cpu"


def make_student_specs(run_dir: str | Path, dataset: str, label: str, out_dir: str | Path, teacher_val: np.ndarray,
                       temperature: float = 3.0, soft_weight: float = 0.7, hard_weight: float = 0.3,
                       hard_loss: str = "bce", rows: str = "train+val", holdout_frac: float = 0.3, seed: int = 42,
                       max_epochs: int = 0, device: str = "cpu", n_seeds: int = 1) -> list[StudentSpec]:
    """The distilled student and its undistilled twin (same recipe, rows, start, seed and stopping; soft weight
    0 and hard weight ``soft_weight + hard_weight``), each with seeds ``seed .. seed + n_seeds - 1`` (folders
    ``students/<name>/seed_<seed>``) so that their comparison counts seed noise. The recipe is 03's
    (`load_recipe`); the teacher's soft targets are written to ``<out>/<label>/students/soft_targets.npz``."""
    if n_seeds < 1:
        raise WorkbookError(f"student_seeds = {n_seeds}; expected at least 1 (3 or more to count seed noise)")
    if rows not in STUDENT_ROWS:
        raise WorkbookError(f"student_rows = {rows!r}; expected one of {'|'.join(STUDENT_ROWS)}")
    if hard_loss not in HARD_LOSSES:
        raise WorkbookError(f"distill_hard_loss = {hard_loss!r}; expected one of {'|'.join(HARD_LOSSES)}")
    DistillTask(temperature, soft_weight, hard_weight)          # checks the settings before any training
    recipe = load_recipe(run_dir, STUDENT_RECIPE, label)
    folder = Path(out_dir) / label / "students"
    atomic_savez(folder / "soft_targets.npz", val_teacher_prob=np.asarray(teacher_val, np.float64))
    loss = recipe["loss"] if hard_loss == "recipe" else "bce"
    common = dict(dataset=str(dataset), label=label, run_dir=str(run_dir), teacher_file=str(folder / "soft_targets.npz"),
                  model=recipe["model"], kwargs=recipe["kwargs"], train=recipe["train"], start=recipe["start"],
                  temperature=float(temperature), hard_loss=loss, threshold=recipe["threshold"],
                  focal_alpha=recipe["focal_alpha"],
                  focal_gamma=recipe["focal_gamma"], rows=rows, holdout_frac=float(holdout_frac),
                  max_epochs=int(max_epochs), device=str(device))
    weights = {"distilled": (float(soft_weight), float(hard_weight)), "undistilled": (0.0, float(soft_weight + hard_weight))}
    return [StudentSpec(name, out_dir=str(folder / name / f"seed_{sd}"), soft_weight=sw, hard_weight=hw, seed=sd,
                        **common)
            for sd in range(int(seed), int(seed) + int(n_seeds)) for name, (sw, hw) in weights.items()]


def make_val_holdout(val, frac: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, early-stopping rows) of the validation split: a share ``frac`` of its source images held out
    (`make_source_holdout`), so the stopping pairs show the student no image it fits on. Rows without source
    ids: a random share."""
    n = len(val.y)
    if source_groups(val) is None:
        stop = np.sort(np.random.default_rng(seed).choice(n, max(2, int(round(frac * n))), replace=False))
        return np.setdiff1d(np.arange(n), stop), stop
    return make_source_holdout(val, np.arange(n), frac, seed, "student_holdout_frac")


def train_student(spec: StudentSpec | dict) -> dict[str, Any]:
    """Train one student and write its folder: history.json and TensorBoard event files (the loop),
    ``model.pt``, ``predictions.npz`` (validation and test P(y=1)), ``metrics.json`` and ``config.json``.
    A worker entry point (module level, so worker processes import it by name)."""
    spec = spec if isinstance(spec, StudentSpec) else StudentSpec(**spec)
    t0 = time.perf_counter()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_pair_dataset(spec.dataset, spec.run_dir, label=spec.label)
    tr, va, te = splits.train, splits.val, splits.test
    pair = _uses_pair(splits)
    with np.load(spec.teacher_file) as z:
        teacher = z["val_teacher_prob"]
    if teacher.shape != va.y.shape:
        raise WorkbookError(f"{spec.teacher_file}: {teacher.shape[0]} teacher probabilities for {len(va.y)} validation pairs")
    fit_val, stop = make_val_holdout(va, spec.holdout_frac, spec.seed)
    # What the student fits (training pairs and/or validation fitting pairs) against the test and stopping pairs.
    leakage = evaluate_fit_leakage(([(tr, None)] if spec.rows == "train+val" else []) + [(va, fit_val)],
                                   {"test": (te, None), "stop": (va, stop)}, pair)
    if not leakage["verdict"].startswith("passed"):
        raise WorkbookError(f"student {spec.name}: leakage check {leakage}")
    vin = make_inputs(va, pair)
    parts = [(*make_inputs(tr, pair), make_distill_targets(tr.y))] if spec.rows == "train+val" else []
    parts.append((*[a[fit_val] for a in vin], make_distill_targets(va.y[fit_val], teacher[fit_val])))
    fit = tuple(np.concatenate(cols) for cols in zip(*parts))
    stop_data = (*[a[stop] for a in vin], make_distill_targets(va.y[stop], teacher[stop]))
    torch.manual_seed(spec.seed)
    kw = {"in_channels": int(tr.xa.shape[1])} if splits.kind == "image" else {"in_features": int(tr.xa.shape[1])}
    kw.update(spec.kwargs)
    model = create_model(spec.model, **kw)
    transfer = transfer_weights(model, read_checkpoint_file(spec.start)["model_state_dict"]) if spec.start else None
    task = DistillTask(spec.temperature, spec.soft_weight, spec.hard_weight, spec.hard_loss, spec.focal_alpha,
                       spec.focal_gamma, threshold=spec.threshold)
    train = {**spec.train, "seed": spec.seed, "log_every": 0, "num_threads": 0, "checkpoint": False,
             "resume": False, "tensorboard": True}
    if spec.max_epochs:
        train["epochs"] = min(int(train.get("epochs", spec.max_epochs)), spec.max_epochs)
    train["amp"] = bool(train.get("amp", False)) and str(spec.device).startswith("cuda")
    cfg = TrainConfig(**train)
    res = train_model(model, task, fit, stop_data, cfg, out_dir=out, device=spec.device)
    val_prob = predict(model, task, vin, device=spec.device).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, pair), device=spec.device).astype(np.float64)
    atomic_savez(out / "predictions.npz", val_prob=val_prob, test_prob=test_prob, val_y=va.y, test_y=te.y,
                 fit_val_rows=fit_val, stop_rows=stop, threshold=np.float64(spec.threshold))
    atomic_torch_save({"model_state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "model_spec": getattr(model, "spec", None), "config": res.config}, out / "model.pt")
    n_soft = int(np.isfinite(fit[-1][:, 1]).sum())
    metrics = {"name": spec.name, "test_acc": float(correct(test_prob, te.y, spec.threshold).mean()),
               "stop_acc": float(correct(val_prob[stop], va.y[stop], spec.threshold).mean()),
               "n_fit": int(len(fit[-1])), "n_fit_train": int(len(tr.y)) if spec.rows == "train+val" else 0,
               "n_fit_val": int(fit_val.size), "n_with_teacher": n_soft, "n_stop": int(stop.size),
               "n_val_dropped": int(len(va.y) - fit_val.size - stop.size), "epochs_run": res.epochs_run,
               "best_epoch": res.best.get("monitor", {}).get("epoch"), "stopped_early": res.stopped_early,
               "params": int(sum(p.numel() for p in model.parameters())), "seconds": time.perf_counter() - t0,
               "leakage": leakage, "threads": torch.get_num_threads()}
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "config.json", {
        "student": asdict(spec), "model": {"architecture": spec.model, "kwargs": kw, "spec": getattr(model, "spec", None),
                                           "recipe": STUDENT_RECIPE, "pretrained": (
                                               f"{spec.start} ({transfer['copied']} of {transfer['total']} tensors)"
                                               if transfer else False)},
        "training": res.config, "task": asdict(task),
        "dataset": {"name": splits.name, "generated": splits.generated, "source": splits.source,
                    "rows": spec.rows, "fit_rows": metrics["n_fit"], "with_teacher_targets": n_soft,
                    "early_stop_rows": int(stop.size), "early_stop_split": "validation pairs of held-out source images",
                    "data_leakage_prevention": leakage},
        "torch": torch.__version__, "device": spec.device})
    return metrics


def train_students(specs: Sequence[StudentSpec], workers: int = 0, verbose: bool = True) -> pd.DataFrame:
    """Train the students in parallel worker processes (`helpers.training.workers`); one row per student.
    A student that fails raises: the comparison needs both."""
    n_workers, threads = resolve_workers(len(specs), workers, specs[0].device if specs else "cpu")
    if verbose:
        print(f"{len(specs)} students on {n_workers} worker process(es) × {threads} torch thread(s)", flush=True)
    outcomes = run_in_workers(train_student, [asdict(s) for s in specs], n_workers, threads)
    bad = [f"{specs[o.index].name}: {o.error.strip().splitlines()[0] if o.error else 'failed'}" for o in outcomes if not o.ok]
    if bad:
        raise WorkbookError("student training failed: " + "; ".join(bad))
    rows = []
    for s, o in zip(specs, outcomes):
        m = o.value
        rows.append({"student": s.name, "seed": s.seed, "soft_weight": s.soft_weight, "hard_weight": s.hard_weight,
                     "temperature": s.temperature, "hard_loss": s.hard_loss, "test_acc": m["test_acc"],
                     "stop_acc": m["stop_acc"], "n_fit": m["n_fit"], "n_with_teacher": m["n_with_teacher"],
                     "n_stop": m["n_stop"], "epochs_run": m["epochs_run"], "best_epoch": m["best_epoch"],
                     "leakage": m["leakage"]["verdict"], "seconds": round(o.seconds, 1), "folder": s.out_dir})
    return pd.DataFrame(rows)


def make_base_predictors(base: BasePredictions, run_dir: str | Path, splits, label: str, seed: int = 42,
                         threads: int = 1, device: str = "cpu") -> list[BasePredictor]:
    """Every base model of the ensemble rebuilt for timing, in the meta-learner's column order: 04's members
    from their ``model.pt``; 02's and 03's reported models from their scored checkpoints; 03's ablation
    variants from a checkpoint in their folder where one was kept (else their architecture from a sibling
    checkpoint, fresh weights); 02's classical baselines refitted with their recorded settings. Each gets
    the share of test rows on which it reproduces its prediction file (`check_agreement`)."""
    out = []
    cards: dict[str, dict] = {}
    for i, name in enumerate(base.names):
        stem, model = name.split("/", 1)
        folder = paths.upstream(run_dir, stem) / label
        if stem not in cards:
            cards[stem] = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
        p = _locate_predictor(name, stem, model, folder, cards[stem], splits, seed, threads, device)
        out.append(check_agreement(p, base.test_prob[:, i], float(base.thresholds[i])))
    return out


def _scored(folder: Path, card: dict) -> Path:
    monitor = str(card.get("training", {}).get("monitor", "accuracy")).removeprefix("val_")
    return folder / f"best_{monitor}.pt"


def _locate_predictor(name: str, stem: str, model: str, folder: Path, card: dict, splits, seed: int, threads: int,
                      device: str) -> BasePredictor:
    if model.startswith("baseline_"):
        info = card.get("baselines", {}).get(model.removeprefix("baseline_"))
        if not isinstance(info, dict):
            return BasePredictor(name, "not rebuilt", f"{folder / 'config.json'} records no setting for {model}")
        return make_baseline_predictor(name, info, splits, int(card.get("training", {}).get("seed", seed)), threads,
                                       device)
    candidates = [folder / "members" / model / "model.pt", folder / model / "model.pt"]
    if model.startswith("ablation_"):
        sub = folder / "ablation" / model.removeprefix("ablation_")
        candidates += [sub / "model.pt", sub / "best_accuracy.pt", sub / "best_f1.pt", sub / "best_loss.pt",
                       sub / "final.pt"]
    if model in ("stage1", "stage2"):
        candidates.append(_scored(folder, card))
    found = next((c for c in candidates if c.is_file()), None)
    if found is not None:
        return make_checkpoint_predictor(name, found, splits, device)
    # The weights were not kept: the reported model's architecture, with the change an ablation variant's name
    # states, times the same inference.
    sibling = _scored(folder, card)
    if sibling.is_file():
        return make_checkpoint_predictor(name, sibling, splits, device, fresh=True, changes=_variant_changes(model))
    return BasePredictor(name, "not rebuilt", f"no checkpoint for {name} under {folder}")


def _variant_changes(model: str) -> dict[str, Any]:
    """The architecture change an ablation variant's file name states (03's variants: ``ablation_no_SE``,
    ``ablation_layers_1_1_1``); none for a change of loss or precision."""
    name = model.removeprefix("ablation_")
    if name == "no_SE":
        return {"attention": "none"}
    m = re.fullmatch(r"layers_(\d+(?:_\d+)*)", name)
    return {"layers": [int(v) for v in m.group(1).split("_")]} if m else {}


def load_seed_sd(run_dir: str | Path, label: str, arch: str = "stage2") -> float:
    """Notebook 04's seed sd of the stage-2 recipe's test accuracy on this dataset (NaN when not measured)."""
    f = paths.upstream(run_dir, "04_multi_seed") / "metrics.json"
    v = read_json(f).get(f"{label}.{arch}.std_test_acc") if f.is_file() else None
    return float(v) if isinstance(v, (int, float)) else float("nan")


def make_distill_headline(d: DistillResult, speed: SpeedResult | None) -> dict[str, Any]:
    """metrics.json keys of the distillation and the speed comparison."""
    acc = d.accuracy.set_index("model")
    p = d.paired.set_index("reference")
    s = d.students[d.students["student"] == "distilled"].sort_values("seed").iloc[0]      # its first seed
    t, b, u = STUDENT_REFERENCES
    out = {"student_test_acc": float(acc.loc["distilled student", "test_acc"]),
           "student_ci_low": float(acc.loc["distilled student", "ci_low"]),
           "student_ci_high": float(acc.loc["distilled student", "ci_high"]),
           "undistilled_test_acc": float(acc.loc[u, "test_acc"]), "teacher_test_acc": float(acc.loc[t, "test_acc"]),
           "student_vs_teacher_diff": float(p.loc[t, "student_minus_reference"]),
           "student_vs_teacher_p": float(p.loc[t, "p_holm"]),
           "student_vs_best_single_diff": float(p.loc[b, "student_minus_reference"]),
           "student_vs_best_single_p": float(p.loc[b, "p_holm"]),
           "student_vs_undistilled_diff": float(p.loc[u, "student_minus_reference"]),
           "student_vs_undistilled_p": float(p.loc[u, "p_holm"]),
           "gain_kept": d.gain_kept["kept"], "gain_kept_ci_low": d.gain_kept["ci_low"],
           "gain_kept_ci_high": d.gain_kept["ci_high"], "teacher_gain_over_best_single": d.gain_kept["teacher_gain"],
           "student_seeds": int(acc.loc["distilled student", "n_seeds"]),
           "student_epochs_run": int(s["epochs_run"]), "student_n_with_teacher_targets": int(s["n_with_teacher"]),
           "student_n_fit": int(s["n_fit"])}
    if speed is not None:
        out.update(student_samples_per_s=speed.student_samples_per_s, ensemble_samples_per_s=speed.ensemble_samples_per_s,
                   student_speedup=speed.speedup, ensemble_models_timed=speed.n_timed,
                   ensemble_models_exact=speed.n_exact, ensemble_pipeline_agreement=speed.pipeline_agreement)
    return out


def make_distill_card(d: DistillResult, speed: SpeedResult | None = None) -> dict[str, Any]:
    """The run card's record of the distillation: the leak-free design, both students, the share of the gain
    kept (with its method) and how the inference was timed."""
    card: dict[str, Any] = {
        "teacher": "LightGBM stacking over the base models; soft targets = the chosen meta-learner's out-of-fold "
                   "probabilities on the validation pairs (no base model trained on them; no booster saw its own row)",
        "training_pairs": "labels only: every base model trained on them, so teacher probabilities there are in-sample",
        "student_recipe": STUDENT_RECIPE, "early_stopping": "validation pairs of held-out validation source images",
        "students": d.students.drop(columns=["folder"]).to_dict(orient="records"),
        "folders": d.students["folder"].tolist(), "gain_kept": d.gain_kept,
        "tests": f"paired over {d.unit}s, Holm over {len(d.paired)} references"}
    if speed is not None:
        card["inference"] = {"test_rows": speed.n_rows, "threads": speed.threads, "ensemble_seconds": speed.ensemble_seconds,
                             "student_seconds": speed.student_seconds, "base_models": speed.n_models,
                             "base_models_timed": speed.n_timed, "base_models_exact": speed.n_exact,
                             "pipeline_agreement": speed.pipeline_agreement,
                             "rebuilt_as": speed.steps.set_index("step")["kind"].to_dict()}
    return card
