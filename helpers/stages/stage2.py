"""Notebook 03 (stage 2): start from the stage-1 checkpoint, upgrade the binary model, classify
interaction types, and measure what each addition changed.

- Binary upgrade (M1 stage 2): SE-ResNet ``layers`` (3,3,3) + focal loss + mixed precision
  for image pairs; for vector pairs a deeper MLP encoder with the same loss and precision. The
  encoder (and fusion, head, where names and shapes match) starts from the stage-1 weights.
- Type classification (M0 stage 2): a K-class head on the interacting pairs of data with
  ``type`` labels, encoder loaded from stage 1 (required), ``balance_strategy``,
  ``use_class_weights``, ``freeze_backbone``.
- Ablation: small runs on the same split, one change at a time (focal vs BCE, SE vs none,
  deeper vs shallower, mixed precision on vs off), with paired tests against the reference.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from helpers.core import paths
from helpers.core.env import ENV_PROFILE
from helpers.core.errors import WorkbookError
from helpers.core.io import atomic_write_json, atomic_write_text, read_json
from helpers.core.paths import PROJ_ROOT
from helpers.core.progress import progress
from helpers.core.runcard import make_config
from helpers.data.audit import evaluate_leakage, make_dataset_card
from helpers.data.pairs import _uses_pair, dataset_labels, describe_renamed, make_inputs, open_dataset
from helpers.data.predictions import write_prediction_file
from helpers.data.scenes import TYPE_NAMES
from helpers.evaluation.metrics import (evaluate_binary, evaluate_multiclass, make_evaluation_report,
                                        make_multiclass_report)
from helpers.evaluation.plots import (plot_confusion_matrix, plot_probability_distributions,
                                      plot_training_curves)
from helpers.evaluation.stats import mcnemar_test
from helpers.models.pair import transfer_weights
from helpers.models.registry import count_parameters, create_model, create_model_from_spec
from helpers.training.checkpoints import load_checkpoint
from helpers.training.loop import predict, train_model, train_samples_per_s
from helpers.training.recipes import make_train_config
from helpers.training.tasks import BinaryTask, make_class_weights, MulticlassTask

# What notebook 03 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["describe_ablation_all", "describe_runs", "describe_types_all", "make_ablation_tables", "make_metrics",
           "make_summary_table", "make_type_tables", "plot_ablation_curves", "plot_test_errors", "plot_training",
           "plot_type_confusion", "run_stage2_datasets"]




# M1 stage 2 (their data): claimed val accuracy of the full stage-2 model and effects.
STAGE2_CLAIMS = {"val_acc": 0.8875, "val_f1": 0.8872, "resnet_fusion_222_val_acc": 0.8792,
                 "resnet_222_val_acc": 0.8780, "focal_gain": 0.008, "amp_speedup": 2.0}


def _scored_checkpoint(folder: Path) -> str:
    """File name of the weights notebook 02 scored: best_<monitor>.pt per its config.json."""

    monitor = "accuracy"
    if (folder / "config.json").is_file():
        monitor = read_json(folder / "config.json").get("training", {}).get("monitor", monitor)
    return f"best_{monitor.removeprefix('val_')}.pt"


def find_stage1_checkpoint(dataset: str, run_dir: str | Path, stage1_checkpoint: str = "") -> Path:
    """The stage-1 checkpoint for ``dataset``: the weights notebook 02 scored
    (``<run>/02_stage1/<dataset>/best_<monitor>.pt``) by default; ``stage1_checkpoint`` may name a .pt
    file or a folder holding ``<dataset>/`` or the checkpoints themselves."""
    if stage1_checkpoint:

        p = Path(stage1_checkpoint).expanduser()
        p = p if p.is_absolute() else PROJ_ROOT / p   # relative paths mean the project root, as for datasets
        candidates = [p] if p.suffix == ".pt" else [p / dataset / _scored_checkpoint(p / dataset),
                                                     p / _scored_checkpoint(p)]
        where = f"stage1_checkpoint = {stage1_checkpoint!r}"
    else:
        folder = paths.upstream(run_dir, "02_stage1") / dataset
        candidates = [folder / _scored_checkpoint(folder)]
        where = "the default location (notebook 02 in this run folder)"
    for c in candidates:
        if c.is_file():
            return c
    raise WorkbookError(f"stage-1 checkpoint for dataset {dataset!r} not found at {where}: looked for "
                        f"{', '.join(str(c) for c in candidates)}. Run notebook 02 first in the same run folder "
                        "(`python -m helpers run --only 02 03`) or set stage1_checkpoint to a stage-1 .pt file")


def load_stage1_model(path: Path, splits) -> tuple[Any, dict]:
    """Rebuild the stage-1 model from its checkpoint and check that it fits the dataset."""

    ck = load_checkpoint(path)
    spec = ck.get("model_spec")
    if not spec:
        raise WorkbookError(f"checkpoint {path}: no model_spec; expected a checkpoint written by notebook 02")
    kw = spec.get("kwargs", {})
    shape = tuple(splits.train.xa.shape[1:])
    if splits.kind == "image":
        ok = spec["name"] != "siamese_mlp" and int(kw.get("in_channels", 1)) == shape[0]
        want = f"an image model with in_channels {shape[0]}"
    else:
        pair_dim = splits.train.extras["pair"].shape[1] if _uses_pair(splits) else 0
        ok = (spec["name"] == "siamese_mlp" and int(kw.get("in_features", -1)) == int(np.prod(shape))
              and int(kw.get("pair_dim", 0)) == pair_dim)
        want = f"siamese_mlp with in_features {int(np.prod(shape))} and pair_dim {pair_dim}"
    if not ok:
        raise WorkbookError(f"checkpoint {path}: model {spec['name']} {kw} does not match dataset "
                            f"{splits.name!r} (inputs {shape}); expected {want}")
    model = create_model_from_spec(spec)
    load_checkpoint(path, model)
    return model, ck


def make_stage2_model_spec(stage1_spec: dict, params: Mapping[str, Any], **changes) -> dict:
    """Stage-2 binary model: image -> SE-ResNet ``layers`` (width and feat_dim from stage 1, so
    the encoder can start from it); vector -> MLP encoder with ``mlp_hidden``. ``changes``
    override kwargs (ablation)."""
    kw1 = stage1_spec["kwargs"]
    if stage1_spec["name"] == "siamese_mlp":
        kw = {**kw1, "hidden": list(params["mlp_hidden"])}
        name = "siamese_mlp"
    else:
        kw = {"in_channels": kw1.get("in_channels", 1), "width_mult": kw1.get("width_mult", 1.0),
              "feat_dim": kw1.get("feat_dim", 256), "layers": list(params["layers"]), "fusion": "adaptive",
              "attention": "se"}
        name = "siamese_resnet"
    kw.update(changes)
    return {"name": name, "kwargs": kw}


def make_balanced_indices(y: np.ndarray, strategy: str, seed: int = 0) -> np.ndarray:
    """Training rows after class balancing: ``oversample`` (every class drawn up to the largest,
    with replacement), ``undersample`` (every class cut to the smallest present), ``none``."""
    y = np.asarray(y)
    if strategy == "none":
        return np.arange(len(y))
    if strategy not in ("oversample", "undersample"):
        raise WorkbookError(f"balance_strategy = {strategy!r}; expected one of oversample|undersample|none")
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


@dataclass
class Stage2Run:
    name: str
    kind: str
    generated: bool
    source: str
    out_dir: Path
    stage1_path: Path
    stage1_test: dict
    stage1_val: dict
    model_spec: dict
    n_params: int
    transfer: dict
    config: dict
    history: list[dict]
    epochs_run: int
    fit_s: float
    val_y: np.ndarray
    test_y: np.ndarray
    val_prob: np.ndarray
    test_prob: np.ndarray
    eval_val: dict
    eval_test: dict
    ablation: list[dict] = field(default_factory=list)
    types: dict | None = None
    type_note: str = ""
    amp_probe: dict | None = None

    @property
    def train_samples_per_s(self) -> float:
        return train_samples_per_s(self.history)

    @property
    def amp_speedup(self) -> float:
        """Training samples/s with mixed precision / without (the speed probe)."""
        return float(self.amp_probe["speedup"]) if self.amp_probe else float("nan")


def _train_cfg(params: Mapping[str, Any], kind: str, **over):

    return make_train_config(params, kind, **over)


def _binary_task(loss: str, params: Mapping[str, Any]):

    if loss == "focal":
        return BinaryTask(loss_name="focal", alpha=float(params["focal_alpha"]), gamma=float(params["focal_gamma"]),
                          threshold=float(params["threshold"]))
    return BinaryTask(loss_name="bce", threshold=float(params["threshold"]))


def _fit_binary(spec: dict, stage1_state: dict, splits, params: Mapping[str, Any], loss: str, amp: bool,
                out: Path | None, device: str, epochs: int, max_train: int = 0, checkpoint: bool = True,
                log_every: int | None = None) -> dict:
    """Build a stage-2 binary model, start it from stage 1 where shapes allow, train, predict."""
    import torch

    use_pair = _uses_pair(splits)
    tr, va, te = splits.train, splits.val, splits.test
    rows = np.arange(len(tr))
    if 0 < max_train < len(tr):
        rows = np.sort(np.random.default_rng(int(params["seed"])).choice(len(tr), max_train, replace=False))
    torch.manual_seed(int(params["seed"]))
    model = create_model(spec["name"], **spec["kwargs"])
    transfer = transfer_weights(model, stage1_state)
    task = _binary_task(loss, params)
    # Short runs keep at least one epoch after the warm-up.
    over = {"epochs": epochs, "amp": amp, "checkpoint": checkpoint,
            "warmup_epochs": min(float(params["warmup_epochs"]), max(0.0, epochs - 1.0))}
    if log_every is not None:
        over["log_every"] = log_every
    cfg = _train_cfg(params, splits.kind, **over)
    t0 = time.perf_counter()
    res = train_model(model, task, (*[a[rows] for a in make_inputs(tr, use_pair)], tr.y[rows]),
                      (*make_inputs(va, use_pair), va.y), cfg, out_dir=out, device=device)
    fit_s = time.perf_counter() - t0
    val_prob = predict(model, task, make_inputs(va, use_pair), device=device, amp=amp).astype(np.float64)
    test_prob = predict(model, task, make_inputs(te, use_pair), device=device, amp=amp).astype(np.float64)
    thr = float(params["threshold"])
    return {"model": model, "result": res, "transfer": transfer, "config": cfg, "fit_s": fit_s,
            "n_params": count_parameters(model), "val_prob": val_prob, "test_prob": test_prob,
            "eval_val": evaluate_binary(va.y, val_prob, thr), "eval_test": evaluate_binary(te.y, test_prob, thr),
            "samples_per_s": train_samples_per_s(res.history)}


def make_ablation_variants(kind: str, layers: list[int], amp: bool = True) -> list[tuple[str, str, dict]]:
    """(variant, what changed, settings) rows: the reference and one change at a time. Mixed
    precision is measured separately by a speed probe (`measure_amp_speed`): on CPUs bfloat16
    autocast can be an order of magnitude slower, too slow for a full ablation run."""
    ref = {"loss": "focal", "amp": amp, "changes": {}}
    rows = [("reference", "stage-2 recipe retrained with the ablation budget: "
             + (f"SE-ResNet {layers}, " if kind == "image" else "deeper MLP, ")
             + "focal loss, " + ("mixed precision" if amp else "float32"), ref),
            ("BCE instead of focal", "loss: BCE", {**ref, "loss": "bce"})]
    if kind == "image":
        rows.append(("no SE", "attention: none", {**ref, "changes": {"attention": "none"}}))
        shallow = [2] * len(layers) if any(v != 2 for v in layers) else [1] * len(layers)
        rows.append((f"layers {shallow}", f"layers {layers} -> {shallow}", {**ref, "changes": {"layers": shallow}}))
    else:
        rows.append(("stage-1 MLP depth", "hidden layers as in stage 1", {**ref, "changes": "stage1_hidden"}))
    return rows


def measure_amp_speed(splits, spec: dict, stage1_state: dict, params: Mapping[str, Any], device: str) -> dict:
    """Training samples/s of the stage-2 model for one epoch on ``amp_probe_pairs`` pairs, in float32
    and with autocast (float16 + GradScaler on CUDA, bfloat16 on CPU); the same rows and batches."""
    n = int(params["amp_probe_pairs"])
    out = {}
    for amp in (False, True):
        fit = _fit_binary(spec, stage1_state, splits, params, "focal", amp, None, device, 1, n,
                          checkpoint=False, log_every=0)
        out["amp" if amp else "fp32"] = fit["samples_per_s"]
    out["pairs"] = min(n, len(splits.train))
    out["speedup"] = out["amp"] / out["fp32"]
    return out


def run_ablation(splits, stage1_spec: dict, stage1_state: dict, params: Mapping[str, Any], out: Path,
                 device: str) -> list[dict]:
    """Train every variant with ``ablation_epochs`` on (up to) ``ablation_max_train`` pairs."""

    rows = []
    ref_correct = None
    for variant, change, s in make_ablation_variants(splits.kind, list(params["layers"]), bool(params["amp"])):
        changes = s["changes"]
        if changes == "stage1_hidden":
            changes = {"hidden": list(stage1_spec["kwargs"].get("hidden", []))}
        spec = make_stage2_model_spec(stage1_spec, params, **changes)
        folder = out / "ablation" / _key(variant)
        fit = _fit_binary(spec, stage1_state, splits, params, s["loss"], s["amp"], folder, device,
                          int(params["ablation_epochs"]), int(params["ablation_max_train"]), checkpoint=False,
                          log_every=0)
        correct = (fit["test_prob"] >= float(params["threshold"])) == (splits.test.y == 1)
        if ref_correct is None:
            ref_correct = correct
        t = fit["eval_test"]
        rows.append({"variant": variant, "change": change, "val_acc": fit["eval_val"]["accuracy"],
                     "test_acc": t["accuracy"], "ci_low": t["acc_ci_low"], "ci_high": t["acc_ci_high"],
                     "test_f1": t["f1"], "test_auc": t["roc_auc"], "samples_per_s": fit["samples_per_s"],
                     "epochs_run": fit["result"].epochs_run, "fit_s": fit["fit_s"], "n_params": fit["n_params"],
                     "mcnemar_p": 1.0 if variant == "reference" else mcnemar_test(ref_correct, correct)["p_value"],
                     "history": fit["result"].history, "val_prob": fit["val_prob"], "test_prob": fit["test_prob"]})
        write_prediction_file(out, "ablation_" + folder.name, fit["val_prob"], fit["test_prob"], splits.val.y,
                              splits.test.y)
    return rows


def make_ablation_table(run: "Stage2Run") -> pd.DataFrame:
    """One row per variant; deltas are variant minus reference (a negative Δ for a removed
    addition means the addition helped)."""
    if not run.ablation:
        return pd.DataFrame()
    ref = run.ablation[0]
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("history", "val_prob", "test_prob")}
                       for r in run.ablation]).set_index("variant")
    df.insert(df.columns.get_loc("test_acc") + 1, "Δ test acc", df["test_acc"] - ref["test_acc"])
    df["speed vs reference"] = df["samples_per_s"] / ref["samples_per_s"]
    if run.amp_probe:
        p = run.amp_probe
        amp_on = bool(run.config.get("amp"))
        name = "no mixed precision" if amp_on else "mixed precision"
        sps = p["fp32"] if amp_on else p["amp"]
        df.loc[f"{name} (speed probe)"] = pd.Series({
            "change": f"{'float32' if amp_on else 'autocast'} instead of {'autocast' if amp_on else 'float32'}; "
                      f"speed only: 1 epoch on {p['pairs']} pairs each way",
            "samples_per_s": sps, "epochs_run": 1,
            "speed vs reference": sps / (p["amp"] if amp_on else p["fp32"])})
    return df


def train_type_classifier(splits, stage1_model, params: Mapping[str, Any], out: Path, device: str) -> dict | None:
    """K-class interaction-type head on the interacting pairs (rows with ``type`` >= 0), encoder
    loaded from stage 1. Returns None when the data has no type labels."""
    import torch

    if any("type" not in s.extras for _, s in splits.items()):
        return None
    names = list(splits.meta.get("type_names", TYPE_NAMES)) if isinstance(splits.meta, dict) else list(TYPE_NAMES)
    k = len(names)
    use_pair = _uses_pair(splits)
    sel = {split: np.flatnonzero((s.extras["type"] >= 0) & (s.y == 1)) for split, s in splits.items()}
    if any(len(v) == 0 for v in sel.values()):
        raise WorkbookError(f"dataset {splits.name!r}: 'type' labels present but no interacting pair with a type "
                            f"in some split ({ {k_: len(v) for k_, v in sel.items()} })")
    tr, va, te = splits.train, splits.val, splits.test
    ytr = tr.extras["type"][sel["train"]]
    if ytr.max() >= k:
        raise WorkbookError(f"dataset {splits.name!r}: type label {int(ytr.max())} but only {k} type names")
    rows = sel["train"][make_balanced_indices(ytr, str(params["balance_strategy"]), int(params["seed"]))]
    spec = copy.deepcopy(stage1_model.spec)
    spec["kwargs"]["num_classes"] = k
    torch.manual_seed(int(params["seed"]))
    model = create_model(spec["name"], **spec["kwargs"])
    transfer = transfer_weights(model, stage1_model.state_dict())   # encoder, fusion; head's last layer differs
    if params["freeze_backbone"]:
        for n_, p in model.named_parameters():
            if n_.startswith("encoder."):
                p.requires_grad_(False)
    weights = make_class_weights(ytr, k).tolist() if params["use_class_weights"] else None
    task = MulticlassTask(k, loss_name="ce", class_weights=weights)
    cfg = _train_cfg(params, splits.kind, epochs=int(params["type_epochs"]), lr=float(params["type_lr"]),
                     monitor="f1", amp=False, augment=False)
    # The same inputs as the binary model; targets are the type labels.
    train_data = (*[a[rows] for a in make_inputs(tr, use_pair)], tr.extras["type"][rows])
    val_data = (*[a[sel["val"]] for a in make_inputs(va, use_pair)], va.extras["type"][sel["val"]])
    res = train_model(model, task, train_data, val_data, cfg, out_dir=out, device=device)
    prob = predict(model, task, [a[sel["test"]] for a in make_inputs(te, use_pair)], device=device)
    yte = te.extras["type"][sel["test"]]
    summary, table = evaluate_multiclass(yte, prob, names)
    # What "always the majority class" would score: the floor a type classifier must beat.
    major = int(np.bincount(ytr, minlength=k).argmax())
    base_sum, _ = evaluate_multiclass(yte, np.eye(k)[np.full(len(yte), major)], names)
    counts = {split: np.bincount(s.extras["type"][sel[split]], minlength=k).tolist() for split, s in splits.items()}
    atomic_write_text(out / "evaluation_report.txt", make_multiclass_report(
        f"Stage 2 interaction types: {splits.name} (test, interacting pairs)", summary, table)
        + f"\nbalance_strategy {params['balance_strategy']}, use_class_weights {params['use_class_weights']}, "
          f"freeze_backbone {params['freeze_backbone']}; training rows after balancing {len(rows)}\n"
          f"majority-class reference: accuracy {base_sum['accuracy']:.4f}, macro-F1 {base_sum['macro_f1']:.4f}\n")
    return {"summary": summary, "table": table, "history": res.history, "epochs_run": res.epochs_run,
            "transfer": transfer, "names": names, "counts": counts, "train_rows": int(len(rows)),
            "class_weights": weights, "majority": base_sum, "frozen": bool(params["freeze_backbone"])}


def _score_stage1(model, splits, use_pair: bool, params: Mapping[str, Any], device: str) -> tuple[dict, dict]:
    """The stage-1 checkpoint's val and test scores, the reference stage 2 must beat."""
    thr, task = float(params["threshold"]), _binary_task("bce", params)
    return tuple(evaluate_binary(s.y, predict(model, task, make_inputs(s, use_pair), device=device), thr)
                 for s in (splits.val, splits.test))


def _write_stage2_files(run: "Stage2Run", splits, cfg, params: Mapping[str, Any], device: str) -> None:
    """evaluation_report.txt and config.json (the run card) in the dataset's folder."""
    spec, thr = run.model_spec, float(params["threshold"])
    atomic_write_text(run.out_dir / "evaluation_report.txt", make_evaluation_report(
        f"Stage 2 evaluation: {run.name} ({spec['name']} {spec['kwargs']})",
        {"stage 2 model, val": run.eval_val, "stage 2 model, test": run.eval_test,
         "stage 1 checkpoint, test": run.stage1_test},
        notes=[f"stage-1 checkpoint: {run.stage1_path}",
               f"weights started from stage 1: {run.transfer['copied']} of {run.transfer['total']} tensors",
               f"loss: focal (alpha {params['focal_alpha']}, gamma {params['focal_gamma']}; alpha < 0 means no "
               "class weighting); mixed precision: " + (str(params["amp"])),
               f"threshold {thr:.2f} stated in advance (not tuned on test)"]))
    atomic_write_json(run.out_dir / "config.json", make_config(
        notebook="03_stage2", description=f"Stage 2 on {run.name} (stage 2 of docs/method.md)",
        params=dict(params), out_dir=str(run.out_dir), profile=os.environ.get(ENV_PROFILE, "interactive"),
        device=str(device), dataset=make_dataset_card(splits, evaluate_leakage(splits)),
        model={"architecture": spec["name"], "kwargs": spec["kwargs"], "parameters": run.n_params,
               "pretrained": f"stage 1 ({run.stage1_path})", "task": "binary", "output_dim": 1},
        training={"loss_function": "focal", "focal_alpha": params["focal_alpha"], "focal_gamma": params["focal_gamma"],
                  "optimizer": "AdamW", "effective_batch_size": cfg.batch_size * cfg.grad_accum_steps,
                  "workers": 0, **cfg.to_dict()}))


def _add_types_and_ablation(run: "Stage2Run", splits, s1_model, s1_spec: dict, s1_state: dict,
                            params: Mapping[str, Any], device: str) -> None:
    """The type head (where the data has type labels), the ablation and the mixed-precision probe."""
    if params["run_types"]:
        run.types = train_type_classifier(splits, s1_model, params, run.out_dir / "type", device)
        if run.types is None:
            run.type_note = f"{run.name} has no 'type' labels: type classification skipped."
    else:
        run.type_note = "type classification turned off (run_types false)."
    if params["run_ablation"]:
        run.ablation = run_ablation(splits, s1_spec, s1_state, params, run.out_dir, device)
    run.amp_probe = measure_amp_speed(splits, run.model_spec, s1_state, params, device)


def run_stage2(dataset: str, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
               device: str = "cpu", label: str | None = None) -> Stage2Run:
    """Stage 2 on one dataset: binary upgrade, type classifier (when labelled), ablation."""
    splits, out, use_pair = open_dataset(dataset, run_dir, out_dir, label)
    ck_path = find_stage1_checkpoint(splits.name, run_dir, str(params["stage1_checkpoint"]))
    s1_model, ck = load_stage1_model(ck_path, splits)
    s1_spec, s1_state = ck["model_spec"], ck["model_state_dict"]
    s1_val, s1_test = _score_stage1(s1_model, splits, use_pair, params, device)
    spec = make_stage2_model_spec(s1_spec, params)
    fit = _fit_binary(spec, s1_state, splits, params, "focal", bool(params["amp"]), out, device, int(params["epochs"]))
    write_prediction_file(out, "stage2", fit["val_prob"], fit["test_prob"], splits.val.y, splits.test.y)
    res, cfg = fit["result"], fit["config"]
    run = Stage2Run(name=splits.name, kind=splits.kind, generated=splits.generated, source=splits.source,
                    out_dir=out, stage1_path=ck_path, stage1_test=s1_test, stage1_val=s1_val, model_spec=spec,
                    n_params=fit["n_params"], transfer=fit["transfer"], config=cfg.to_dict(), history=res.history,
                    epochs_run=res.epochs_run, fit_s=fit["fit_s"], val_y=splits.val.y, test_y=splits.test.y,
                    val_prob=fit["val_prob"], test_prob=fit["test_prob"], eval_val=fit["eval_val"],
                    eval_test=fit["eval_test"])
    _add_types_and_ablation(run, splits, s1_model, s1_spec, s1_state, params, device)
    _write_stage2_files(run, splits, cfg, params, device)
    return run


def run_stage2_datasets(datasets, run_dir: str | Path, out_dir: str | Path, params: Mapping[str, Any],
                        device: str = "cpu") -> dict[str, Stage2Run]:
    """`run_stage2` for every dataset, keyed by the dataset's name."""
    labels = dataset_labels(list(datasets))     # safe, unique folder names: two folders called x stay apart
    for line in describe_renamed(list(datasets), labels):
        print(line)
    pairs = list(zip(datasets, labels))
    runs = [run_stage2(d, run_dir, out_dir, params, device, label) for d, label in progress(pairs, "stage 2 datasets")]
    return {r.name: r for r in runs}


def make_results_table(run: Stage2Run) -> pd.DataFrame:
    rows = [("stage 1 checkpoint", run.stage1_val, run.stage1_test), ("stage 2 model", run.eval_val, run.eval_test)]
    return pd.DataFrame([{"model": m, "test acc": t["accuracy"], "95% CI low": t["acc_ci_low"],
                          "95% CI high": t["acc_ci_high"], "test F1": t["f1"], "test ROC-AUC": t["roc_auc"],
                          "val acc": v["accuracy"]} for m, v, t in rows]).set_index("model")


def make_summary_table(runs: Mapping[str, Stage2Run]) -> pd.DataFrame:
    """Stage 1 and stage 2 per dataset on the same test split (the method notes' own figure, on other
    data, is quoted by `describe_runs`, not added as a row)."""
    frames = []
    for name, r in runs.items():
        t = make_results_table(r).reset_index()
        t.insert(0, "dataset", name + (" (generated)" if r.generated else ""))
        frames.append(t)
    return pd.concat(frames, ignore_index=True).set_index(["dataset", "model"])


def make_metrics(runs: Mapping[str, Stage2Run]) -> dict[str, dict]:
    out = {}
    for r in runs.values():  # keyed by the dataset name (a folder's name, not its path)
        m = {"test_acc": r.eval_test["accuracy"], "test_acc_ci_low": r.eval_test["acc_ci_low"],
             "test_acc_ci_high": r.eval_test["acc_ci_high"], "test_f1": r.eval_test["f1"],
             "test_auc": r.eval_test["roc_auc"], "val_acc": r.eval_val["accuracy"],
             "stage1_test_acc": r.stage1_test["accuracy"], "stage1_val_acc": r.stage1_val["accuracy"],
             "epochs_run": r.epochs_run, "train_samples_per_s": r.train_samples_per_s,
             "transferred_tensors": r.transfer["copied"], "amp_speedup": r.amp_speedup, "generated": r.generated}
        if r.amp_probe:
            m.update(amp_samples_per_s=r.amp_probe["amp"], fp32_samples_per_s=r.amp_probe["fp32"])
        if r.types is not None:
            m.update(type_macro_f1=r.types["summary"]["macro_f1"], type_acc=r.types["summary"]["accuracy"],
                     type_majority_macro_f1=r.types["majority"]["macro_f1"], type_n_test=r.types["summary"]["n"])
        if r.ablation:
            ref = r.ablation[0]
            m["ablation"] = {_key(a["variant"]): {"test_acc": a["test_acc"],
                                                               "delta": a["test_acc"] - ref["test_acc"]}
                             for a in r.ablation}
        out[r.name] = m
    return out


def _key(text: str) -> str:
    """'layers [2, 2, 2]' -> 'layers_2_2_2' (metric keys)."""
    import re

    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


def describe_run(run: Stage2Run) -> str:
    t, s = run.eval_test, run.stage1_test
    diff = t["accuracy"] - s["accuracy"]
    return (f"{run.name}: stage 2 test accuracy {t['accuracy']:.3f} (95% CI {t['acc_ci_low']:.3f}–{t['acc_ci_high']:.3f}) "
            f"vs stage 1 {s['accuracy']:.3f} ({diff:+.3f}); started from {run.transfer['copied']} of "
            f"{run.transfer['total']} stage-1 tensors; {run.epochs_run} epochs.")


def describe_ablation(run: Stage2Run) -> str:
    if not run.ablation:
        return f"{run.name}: no ablation run."
    ref = run.ablation[0]
    parts = []
    for a in run.ablation[1:]:
        d = a["test_acc"] - ref["test_acc"]
        sig = "significant" if a["mcnemar_p"] < 0.05 else "not significant"
        parts.append(f"{a['variant']}: {d:+.3f} ({sig}, McNemar p {a['mcnemar_p']:.2f})")
    amp = run.amp_speedup
    claim = STAGE2_CLAIMS["amp_speedup"]
    focal = next((a for a in run.ablation if a["variant"] == "BCE instead of focal"), None)
    focal_txt = ""
    if focal is not None:
        gain = ref["test_acc"] - focal["test_acc"]
        focal_txt = (f" Focal over BCE: {gain:+.4f} here vs the +{STAGE2_CLAIMS['focal_gain']:.4f} M1 claims"
                     + (" (goal met)." if gain >= STAGE2_CLAIMS["focal_gain"] else " (claim NOT reproduced)."))
    n_ep = ref["epochs_run"]
    return (f"{run.name}: test accuracy of each variant minus the reference ({n_ep}-epoch runs, one seed) — "
            + "; ".join(parts) + "." + focal_txt
            + f" Mixed precision speed-up {amp:.2f}x on this device (M1 claims {claim:.0f}x on a GPU"
            + ("; here it is SLOWER" if amp < 1 else "") + "). McNemar tests the test pairs, not training "
            "randomness: with one seed and short runs, differences of a few points can be seed noise "
            "(notebook 04 measures the spread over seeds).")


def describe_types(run: Stage2Run) -> str:
    if run.types is None:
        return run.type_note
    s, mj = run.types["summary"], run.types["majority"]
    t = run.types["table"]
    present = t[t["support"] > 0]
    worst = present["f1"].idxmin()
    return (f"{run.name}: type macro-F1 {s['macro_f1']:.3f} over the {len(present)} classes present in "
            f"{s['n']} interacting test pairs (majority-class reference {mj['macro_f1']:.3f}); accuracy "
            f"{s['accuracy']:.3f}; weakest class '{worst}' (F1 {present['f1'].min():.3f}).")


def plot_training(run: Stage2Run):
    """Loss, val accuracy, learning rate and gradient norm per epoch of one dataset's stage-2 run."""
    fig = plot_training_curves(run.history, ("loss", "accuracy", "lr", "grad_norm"))
    fig.suptitle(f"{run.name}: stage 2 training (val = validation split)", fontsize=10, y=1.02)
    return fig


def plot_test_errors(run: Stage2Run) -> dict[str, Any]:
    """The stage-2 test confusion matrix and predicted probabilities by true class."""
    thr = run.eval_test["threshold"]
    return {"confusion_matrix.png": plot_confusion_matrix(run.eval_test["confusion"], ["0", "1"],
                                                          title=f"{run.name}: stage 2, test, threshold {thr:.2f}"),
            "probability_distributions.png": plot_probability_distributions(
                run.test_y, run.test_prob, thr, title=f"{run.name}: stage 2 test P(y = 1)")}


def make_type_tables(runs: Mapping[str, Stage2Run]) -> dict[str, pd.DataFrame]:
    """Per dataset with type labels: per-class precision / recall / F1 / support on test, and the
    interacting pairs of each class per split."""
    out = {}
    for name, r in runs.items():
        if r.types is not None:
            counts = pd.DataFrame(r.types["counts"], index=r.types["names"]).rename_axis("type")
            out[name] = r.types["table"].join(counts.add_prefix("pairs in "))
    return out


def describe_types_all(runs: Mapping[str, Stage2Run]) -> str:
    return "\n".join(describe_types(r) for r in runs.values())


def plot_type_confusion(run: Stage2Run):
    """The type head's test confusion matrix (row-normalised; counts in the type table)."""
    return plot_confusion_matrix(run.types["summary"]["confusion"], run.types["names"], normalize=True,
                                 title=f"{run.name}: interaction type, test")


def make_ablation_tables(runs: Mapping[str, Stage2Run]) -> dict[str, pd.DataFrame]:
    return {name: make_ablation_table(r) for name, r in runs.items() if r.ablation}


def describe_ablation_all(runs: Mapping[str, Stage2Run]) -> str:
    return "\n".join(describe_ablation(r) for r in runs.values())


def plot_ablation_curves(run: Stage2Run):
    """Validation curves of every ablation variant of one dataset, overlaid."""
    fig = plot_training_curves({a["variant"]: a["history"] for a in run.ablation}, ("loss", "accuracy", "samples_per_s"))
    fig.suptitle(f"{run.name}: ablation variants (val = validation split)", fontsize=10, y=1.02)
    return fig


def describe_runs(runs: Mapping[str, Stage2Run]) -> str:
    claim = (f"For reference, the method notes report {STAGE2_CLAIMS['val_acc']:.2%} validation accuracy for "
             "stage 2 on their own 28x28 data: other data, so not a target these runs can replicate.")
    return "\n".join([describe_run(r) for r in runs.values()] + [claim])
