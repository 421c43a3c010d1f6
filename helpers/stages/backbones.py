"""Notebook 06: timm backbones on a multi-task head, compared on score, speed and memory."""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from scipy import stats as _st

from helpers.core.errors import DataError
from helpers.core.taskspec import make_task_specs, TaskSpec
from helpers.data.tables import (evaluate_split, evaluate_task_redundancy, load_default_or_user_table,
                                 load_table_tensors, make_subject_split, TableTensors, TaskTable)
from helpers.evaluation.plots import plot_training_curves
from helpers.evaluation.stats import compare_seed_scores
from helpers.evaluation.speed import evaluate_backbone_speed
from helpers.models.multitask import count_multitask_params
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.loop import evaluate_model, predict, train_model, train_samples_per_s
from helpers.training.multitask import metric_key, MultiTask, task_score_names
from helpers.stages.words import markdown, render_answer  # noqa: F401 (markdown: the notebook shows words with it)

# What notebook 06 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["REFERENCE_STEP", "TrainConfig", "WORKBOOK_STEP", "describe_answer", "describe_chance", "describe_pareto_ranking", "describe_redundancy", "describe_resolution", "describe_seeds", "describe_tasks", "evaluate_backbones_speed", "evaluate_split", "evaluate_task_redundancy", "load_default_or_user_table", "load_table_tensors", "make_answer_headline", "make_bench_table", "make_chance_table", "make_claims_table", "make_comparison_table", "make_dataset_card", "make_finetune_table", "make_metrics", "make_seed_table", "make_subject_split", "make_task_specs", "plot_finetune_curves", "plot_memory", "plot_pareto", "plot_seed_scores", "pretrained_note", "retrain_top_models", "summarize_comparison", "summarize_seeds", "train_backbones"]



# Reference figures (docs/method.md, M2): timm results CSVs (params M with the 1000-class head, GMACs at
# 224 px, ImageNet-1k top-1) and a 2-core CPU's fwd+bwd throughput (batch 8, fp32, img/s).
TIMM_REFERENCE = {
    "convnext_tiny": (28.59, 4.47, 82.07), "convnext_small": (50.22, 8.71, 83.14),
    "convnext_base": (88.59, 15.38, 83.84), "convnext_large": (197.77, 34.40, 84.30),
    "swin_tiny_patch4_window7_224": (28.29, 4.51, 81.39), "swin_base_patch4_window7_224": (87.77, 15.47, 83.60),
    "vit_base_patch16_224": (86.57, 17.58, None), "vit_large_patch16_224": (304.33, 61.60, None),
}


CPU_REFERENCE = {("convnext_tiny", 64): 27.0, ("convnext_tiny", 224): 4.0,
                 ("swin_tiny_patch4_window7_224", 224): 4.5, ("vit_tiny_patch16_224", 224): 17.0,
                 ("convnext_base", 224): 1.5, ("convnext_large", 224): 0.7, ("resnet18", 64): 81.0}


# What one timed training step is here (evaluation/speed.py) and in the CPU reference figures.
WORKBOOK_STEP = "forward + loss + backward + AdamW step"


REFERENCE_STEP = "forward + backward only"


# M2, a 12 GB card: model -> (batch, claimed GB).
NOTE002_MEMORY = {"convnext_base": (16, 8.0), "convnext_large": (8, 10.0),
                  "swin_base_patch4_window7_224": (16, 9.0), "swin_large_patch4_window7_224": (4, 11.0),
                  "vit_base_patch16_224": (16, 9.0), "vit_large_patch16_224": (2, 11.0)}


def make_lr_groups(model, lr_backbone: float) -> dict[str, float]:
    """`TrainConfig.lr_groups` for a multi-task model: every backbone's parameters get `lr_backbone`
    (the heads take `TrainConfig.lr`)."""
    names = {n.split("backbone.")[0] + "backbone." for n, _ in model.named_parameters() if "backbone." in n}
    return {prefix: float(lr_backbone) for prefix in sorted(names)}


def choose_lrs(pretrained: bool, lr_backbone: float, lr_head: float, lr_scratch: float) -> tuple[float, float]:
    """(backbone lr, head lr): M2's fine-tuning rates for a pretrained backbone; a randomly
    initialised one learns from scratch, where rates like 2e-5 barely move it, so both take `lr_scratch`."""
    return (lr_backbone, lr_head) if pretrained else (lr_scratch, lr_scratch)


def make_resolution_info(model, img_size: int) -> dict[str, Any]:
    """What running at `img_size` does to each backbone, from timm's own configuration.

    A fixed-size model (ViT, Swin: timm's ``fixed_input_size``) is built for its native size
    (224 px); below it, its token grid shrinks (ViT-16 at 64 px: 4 x 4 = 16 tokens instead of
    14 x 14), so it is handicapped at this size. A convolutional backbone runs at any size; its
    last feature map shrinks with the input. Returns native_px, resolution_handicap (fixed-size
    and below native), resolution (a short label) and resolution_note (one clause per member, joined by " | ").
    """
    members = list(getattr(model, "members", [model]))
    notes, native, handicap = [], [], False
    for m in members:
        cfg = getattr(m.backbone, "pretrained_cfg", None) or {}
        px = int((cfg.get("input_size") or (3, img_size, img_size))[-1])
        native.append(px)
        pe = getattr(m.backbone, "patch_embed", None)
        if cfg.get("fixed_input_size") and pe is not None and img_size < px:
            g = tuple(int(v) for v in pe.grid_size)
            n = tuple(int(round(v * px / img_size)) for v in g)
            notes.append(f"{m.backbone_name}: fixed-size transformer built for {px} px; at {img_size} px its token "
                         f"grid is {g[0]}x{g[1]} instead of {n[0]}x{n[1]}: HANDICAPPED at this size")
            handicap = True
        elif img_size < px:
            info = getattr(m.backbone, "feature_info", None)
            red = int(info[-1]["reduction"]) if info else 32
            notes.append(f"{m.backbone_name}: convolutional, any input size (built for {px} px); last feature map "
                         f"{max(img_size // red, 1)}x{max(img_size // red, 1)} at {img_size} px instead of "
                         f"{px // red}x{px // red}")
        else:
            notes.append(f"{m.backbone_name}: at or above its native {px} px")
    px = max(native)
    short = (f"HANDICAPPED: fixed-size, built for {px} px, run at {img_size} px" if handicap else
             f"size-agnostic, built for {px} px, run at {img_size} px" if img_size < px else "native size")
    return {"native_px": px, "resolution_handicap": handicap, "resolution": short,
            "resolution_note": " | ".join(notes)}


def _evaluate_split_scores(model, task: MultiTask, x, y, prefix: str, device: str, batch: int,
                           n_boot: int, seed: int) -> dict[str, Any]:
    """Loss, `task.metrics` and 95% bootstrap intervals over the split's images of ``combined``
    and of each task's normalised score (``<task>_norm_ci_low/high``), keys prefixed."""
    res = evaluate_model(model, task, (x, y), device, batch)
    pred = predict(model, task, (x,), device, batch)
    boot = task.bootstrap_scores(pred, y, n_boot, seed) if n_boot else {}
    for name in [f"{t.name}_norm" for t in task.specs] + ["combined"]:
        lo, hi = np.quantile(boot[name], [0.025, 0.975]) if name in boot else (np.nan, np.nan)
        res[f"{name}_ci_low"], res[f"{name}_ci_high"] = float(lo), float(hi)
    return {f"{prefix}_{k}": v for k, v in res.items()}


def train_backbone(name: str, data: TableTensors, config, lr_backbone: float = 2e-5, lr_head: float = 1e-4,
                   lr_scratch: float = 1e-3, pretrained_files: dict | None = None, freeze_backbone: bool = False,
                   img_size: int | None = None, dropout: float = 0.0, channels_last: bool = False,
                   out_dir: str | Path | None = None, device: str = "cpu", seed: int = 0,
                   n_boot: int = 1000) -> dict:
    """Fine-tune one backbone (or "a+b" ensemble) on the table with the shared loop.

    `config` is a `helpers.training.config.TrainConfig`; its ``lr`` is replaced by the heads' rate,
    its ``seed`` by `seed` (initialisation and batch order), and the backbone's rate goes in
    through ``lr_groups`` (see `choose_lrs`); ``grad_accum_steps`` keeps the effective batch.
    Returns val/test loss, per-task scores with chance levels, the chance-normalised
    ``val_combined`` with a 95% bootstrap interval over validation images (`n_boot` resamples),
    the resolution note, the history and fit time.
    """
    torch.manual_seed(seed)
    model = create_model("timm_multitask", backbone=name, tasks=data.tasks, pretrained_files=pretrained_files,
                         freeze_backbone=freeze_backbone, img_size=img_size, dropout=dropout,
                         channels_last=channels_last)
    pretrained = bool(getattr(model, "pretrained", False))
    lr_b, lr_h = choose_lrs(pretrained, lr_backbone, lr_head, lr_scratch)
    task = MultiTask(list(data.tasks), data.reg_mean, data.reg_std)
    cfg = dataclasses.replace(config, lr=lr_h, seed=seed,
                              lr_groups={**make_lr_groups(model, lr_b), **config.lr_groups})
    t0 = time.perf_counter()
    res = train_model(model, task, (data.x["train"], data.y["train"]), (data.x["val"], data.y["val"]),
                      cfg, out_dir, device)
    fit_s = time.perf_counter() - t0
    ebs = cfg.eval_batch_size or 4 * cfg.batch_size
    scores = {**_evaluate_split_scores(model, task, data.x["val"], data.y["val"], "val", device, ebs, n_boot, seed),
              **_evaluate_split_scores(model, task, data.x["test"], data.y["test"], "test", device, ebs, n_boot, seed)}
    return {"model": name, "seed": seed, "pretrained": pretrained, "freeze_backbone": freeze_backbone,
            "lr_backbone": lr_b, "lr_head": lr_h, **count_multitask_params(model),
            **make_resolution_info(model, img_size or int(data.x["train"].shape[-1])), **scores,
            "epochs_run": res.epochs_run, "fit_s": fit_s,
            "effective_batch": cfg.batch_size * cfg.grad_accum_steps,
            "fit_samples_per_s": train_samples_per_s(res.history), "history": res.history}


def train_backbones(names: Sequence[str], data: TableTensors, config, out_dir: str | Path | None = None,
                    seeds: Sequence[int] = (0,), **kwargs: Any) -> list[dict]:
    """`train_backbone` for each name and seed (history.json under ``out_dir/<name>/seed_<seed>/``)."""
    out = []
    for name in names:
        for seed in seeds:
            print(f"--- fine-tuning {name}, seed {seed}", flush=True)
            folder = Path(out_dir) / metric_key(name) / f"seed_{seed}" if out_dir is not None else None
            out.append(train_backbone(name, data, config, out_dir=folder, seed=int(seed), **kwargs))
    return out


def make_seeds(seed: int, n: int) -> list[int]:
    """`n` seeds starting at `seed` (wrapping within 0..2**32-1, the declared seed range)."""
    return [(int(seed) + i) % 2**32 for i in range(n)]


def pick_top_models(results: Sequence[dict], n_top: int, score: str = "val_combined") -> list[str]:
    """The `n_top` model names with the highest `score` (ties keep the listed order)."""
    ranked = sorted(results, key=lambda r: -r[score] if math.isfinite(r[score]) else math.inf)
    return list(dict.fromkeys(r["model"] for r in ranked))[:n_top]


def retrain_top_models(results: Sequence[dict], data: TableTensors, config, n_top: int, n_seeds: int, seed: int,
                       out_dir: str | Path | None = None, **kwargs: Any) -> list[dict]:
    """The screening runs plus `n_seeds` - 1 more seeds for each of the `n_top` best models by
    validation score; every other model keeps its single screening run."""
    top = pick_top_models(results, n_top)
    print(f"re-training the top {len(top)} by validation combined {top} over seeds {make_seeds(seed, n_seeds)}",
          flush=True)
    extra = train_backbones(top, data, config, out_dir, seeds=make_seeds(seed, n_seeds)[1:], **kwargs)
    return list(results) + extra


def make_finetune_table(results: Sequence[dict], tasks: Sequence[TaskSpec]):
    """One row per fine-tuned model and seed: initialisation, learning rates, loss, per-task scores,
    the chance-normalised ``val_combined`` with its bootstrap interval, the test combined."""
    import pandas as pd

    score_cols = [f"val_{c}" for c in task_score_names(tasks)]
    cols = ["model", "seed", "pretrained", "lr_backbone", "lr_head", "epochs_run", "val_loss", *score_cols,
            "val_combined", "val_combined_ci_low", "val_combined_ci_high", "test_combined", "fit_s"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in results])


def make_chance_table(results: Sequence[dict], tasks: Sequence[TaskSpec]):
    """Per task: its score, and the chance level of that score on the validation and test splits
    (what a predictor ignoring the image can expect; it depends only on the labels)."""
    import pandas as pd

    r = results[0]
    how = {"regression": "R² as is"}
    return pd.DataFrame([{"task": t.name, "kind": t.kind, "score": s, "val_chance": r.get(f"val_{t.name}_chance"),
                          "test_chance": r.get(f"test_{t.name}_chance"),
                          "normalised": how.get(t.kind, "(score − chance) / (1 − chance)")}
                         for t, s in zip(tasks, task_score_names(tasks))])


def evaluate_backbones_speed(names: Sequence[str], img_size: int, batch: int, tasks: Sequence[TaskSpec],
                             **kwargs: Any) -> list[dict]:
    """`evaluate_backbone_speed` for each name, each in a fresh process; prints one line per model."""
    rows = []
    for name in names:
        r = evaluate_backbone_speed(name, img_size, batch, tasks, **kwargs)
        print(f"{name}: batch {r['batch']} train {r['train_samples_per_s']:.1f}/s infer "
              f"{r['infer_samples_per_s']:.1f}/s peak {r['peak_mem_mb']:.0f} MB"
              + (f" (out of memory at {r['oom_batches']})" if r["oom_batches"] else ""), flush=True)
        rows.append(r)
    return rows


def make_bench_table(rows: Sequence[dict]):
    """The benchmark as timm prints it, plus memory."""
    import pandas as pd

    cols = ["model", "params_m", "gmacs", "batch", "infer_samples_per_s", "infer_step_ms", "train_samples_per_s",
            "train_step_ms", "peak_mem_mb", "model_mem_mb", "oom_batches"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows])


def describe_tasks(table: TaskTable, data: TableTensors):
    """Per task: kind, classes, loss weight, labelled training rows and the class counts."""
    import pandas as pd

    rows = []
    for j, t in enumerate(table.tasks):
        y = data.y["train"][:, j]
        y = y[~torch.isnan(y)]
        if t.kind == "regression":
            dist = f"mean {float(y.mean()):.3f}, sd {float(y.std()):.3f}"
        else:
            counts = torch.bincount(y.long(), minlength=t.out_dim if t.kind == "multiclass" else 2).tolist()
            dist = ", ".join(f"{lab}: {c}" for lab, c in zip(table.classes.get(t.name, range(len(counts))), counts))
        rows.append({"task": t.name, "kind": t.kind, "classes": t.out_dim if t.kind == "multiclass" else
                     (2 if t.kind == "binary" else None), "weight": t.weight, "train_labelled": int(y.numel()),
                     "train distribution": dist, "score": task_score_names([t])[0]})
    return pd.DataFrame(rows)


def pretrained_note(names: Sequence[str], pretrained_files: dict | None) -> str:
    """One plain sentence per backbone saying where its weights come from; a listed file that
    does not exist is an error here, before anything is measured."""
    files = pretrained_files or {}
    missing = {k: v for k, v in files.items() if v and not Path(v).expanduser().is_file()}
    if missing:
        raise DataError(f"pretrained_files: file(s) not found {missing}; weights are never downloaded, "
                        "give local .pth/.safetensors files or remove the entries")
    unknown = sorted(set(files) - {p for n in names for p in n.split("+")})
    lines = []
    for n in names:
        for p in n.split("+"):
            lines.append(f"{p}: weights from local file {files[p]}" if files.get(p) else
                         f"{p}: RANDOMLY INITIALISED (no local weight file given; nothing is downloaded)")
    if unknown:
        lines.append(f"pretrained_files names backbones not in the list: {unknown}")
    return "\n".join(dict.fromkeys(lines))


def make_dataset_card(table: TaskTable, split: np.ndarray, data: TableTensors, seed: int) -> dict:
    """Dataset section of config.json (M3): samples and subjects per split, split method, and the result of
    the leakage check that ran (`evaluate_split`: subjects found in more than one split)."""
    df = table.frame.assign(split=split)
    shared = int(evaluate_split(table, split)["subjects_in_other_splits"].sum())
    leakage = {"check": "subject ids of each split against the other two splits", "shared_subject_entries": shared,
               "verdict": "no subject in two splits" if shared == 0 else f"{shared} subject entries shared: LEAK"}
    card = {"source": table.source, "table": str(table.path), "generated": table.generated,
            "total_samples": int(len(df)), "total_subjects": int(df["subject"].nunique()),
            "split_method": "by_subject_id", "data_leakage_prevention": leakage, "random_seed": seed,
            "tasks": [asdict(t) for t in table.tasks]}
    for name in ("train", "val", "test"):
        part = df[df.split == name]
        card[f"{name}_samples"] = int(len(part))
        card[f"{name}_subjects"] = int(part["subject"].nunique())
        card[f"{name}_samples_used"] = int(data.x[name].shape[0])
    return card


def mean_sd_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean, sample sd and the t-interval of the mean of a few values (e.g. one score per seed)."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def make_seed_table(results: Sequence[dict]):
    """Per model over its seeds: n_seeds, the seeds, validation combined (chance-normalised) mean,
    sd and 95% t-interval, the test combined mean; highest mean first."""
    import pandas as pd

    rows = []
    for name in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == name]
        st = mean_sd_interval([r["val_combined"] for r in runs])
        rows.append({"model": name, "n_seeds": st["n"], "seeds": [r["seed"] for r in runs],
                     "val_combined_mean": st["mean"], "val_combined_sd": st["sd"],
                     "val_combined_ci_low": st["ci_low"], "val_combined_ci_high": st["ci_high"],
                     "test_combined_mean": float(np.mean([r["test_combined"] for r in runs]))})
    return pd.DataFrame(rows).sort_values("val_combined_mean", ascending=False, kind="stable").reset_index(drop=True)


def summarize_seeds(seed_table, results: Sequence[dict]) -> dict[str, Any]:
    """The best re-trained model by mean validation combined over its seeds, its spread and
    interval, and its difference to the runner-up on the test split, paired by seed (``best_model_separated``:
    that interval excludes 0)."""
    multi = seed_table[seed_table["n_seeds"] >= 2].reset_index(drop=True)
    if multi.empty:
        return {"best_model": None}
    best = multi.iloc[0]
    out = {"best_model": str(best["model"]), "best_model_seeds": int(best["n_seeds"]),
           "best_model_mean": float(best["val_combined_mean"]), "best_model_sd": float(best["val_combined_sd"]),
           "best_model_ci_low": float(best["val_combined_ci_low"]),
           "best_model_ci_high": float(best["val_combined_ci_high"]),
           "best_model_test_mean": float(best["test_combined_mean"])}
    if len(multi) > 1:
        second = multi.iloc[1]
        # Chosen on validation; compared on the untouched test split, paired by seed.
        d = compare_seed_scores(_on_test(results, second["model"]), _on_test(results, best["model"]))
        out.update({"runner_up": str(second["model"]), "runner_up_mean": float(second["val_combined_mean"]),
                    "runner_up_sd": float(second["val_combined_sd"]),
                    "best_minus_runner_up": d.estimate, "best_minus_runner_up_ci_low": d.ci_low,
                    "best_minus_runner_up_ci_high": d.ci_high, "best_minus_runner_up_p": d.p,
                    "best_minus_runner_up_test": d.method, "best_minus_runner_up_verdict": d.verdict,
                    "runner_up_test_mean": float(second["test_combined_mean"]),
                    "best_model_separated": d.verdict == "better"})
    return {**out, **_fresh_test_headline(results, out["best_model"])}


def _on_test(results: Sequence[dict], name: str) -> dict[int, float]:
    return {r["seed"]: r["test_combined"] for r in results if r["model"] == name}


def _fresh_test_headline(results: Sequence[dict], name: str) -> dict[str, Any]:
    """The best model's test combined over the seeds that did not select it: its screening run (the first,
    whose validation score put it among the re-trained) is left out; the test split chose nothing. A t-interval
    over those seeds (NaN with fewer than two)."""
    runs = [r for r in results if r["model"] == name]
    fresh = [r["test_combined"] for r in runs[1:]]
    st = mean_sd_interval(fresh)
    return {"best_model_test_fresh_seeds": [int(r["seed"]) for r in runs[1:]], "best_model_test_fresh_mean": st["mean"],
            "best_model_test_fresh_ci_low": st["ci_low"], "best_model_test_fresh_ci_high": st["ci_high"],
            "best_model_screening_seed": int(runs[0]["seed"])}


_MODEL_METRICS = ("params_m", "train_samples_per_s", "infer_samples_per_s", "peak_mem_mb", "val_loss", "combined",
                  "combined_chance_normalised", "combined_ci_low", "combined_ci_high", "n_seeds", "combined_mean",
                  "combined_sd", "seed_ci_low", "seed_ci_high", "above_chance", "pareto_front", "train_s_per_1k",
                  "test_combined", "batch", "native_px", "resolution_handicap")


def _metric_value(v):
    """A table cell as a metrics.json value: bool/int kept, numbers as float, NaN/None as None."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    return float(v)


def make_metrics(table, summary: dict, seed_summary: dict | None = None,
                 tasks: Sequence[TaskSpec] = (), chance: dict | None = None) -> dict:
    """metrics.json: per model the `_MODEL_METRICS` columns, its validation score per task (raw and
    normalised, ``<task>_norm``) and ``n_tasks_at_chance``;
    the named winners (`summarize_comparison`), the seed summary (`summarize_seeds`) and the
    validation chance level of each task's score."""
    out: dict[str, Any] = {}
    scores = [f"val_{c}" for c in task_score_names(tasks)]
    for _, r in table.iterrows():
        row = {c: _metric_value(r.get(c)) for c in _MODEL_METRICS if c in r}
        row.update({c[4:]: _metric_value(r.get(c)) for c in scores if c in r})
        row.update({f"{t.name}_norm": _metric_value(r.get(f"val_{t.name}_norm")) for t in tasks
                    if f"val_{t.name}_norm" in r})
        if "tasks_at_chance" in r:
            row["n_tasks_at_chance"] = len([t for t in str(r["tasks_at_chance"] or "").split(", ") if t])
        if row.get("batch") is not None:
            row["batch"] = int(row["batch"])
        out[metric_key(str(r["model"]))] = row
    out.update(summary)
    out.update(seed_summary or {})
    if chance:
        out["chance"] = dict(chance)
    out["n_models"] = int(len(table))
    return out


def make_comparison_table(bench: Sequence[dict], finetune: Sequence[dict], seed_table=None):
    """M2's table: model | params (M) | val loss | combined | train/infer samples/s | peak memory |
    batch, sorted by validation loss.

    ``combined``: validation, chance-normalised, of the screening run (each model's first run),
    with ``combined_ci_low/high`` its 95% bootstrap interval over validation images;
    ``combined_mean``/``_sd``/``seed_ci_low/high``: over the seeds of a re-trained model (else the
    screening run). ``above_chance``: every interval the model has lies above 0. Only those, and only
    with no task at chance, are ranked: ``pareto_front`` is True where no other ranked model has both a
    higher ``combined_mean`` and a shorter training time (``train_s_per_1k``), False where one does, and
    missing for the models not ranked. ``tasks_at_chance``: tasks whose own normalised
    score's interval reaches 0 although the model may be above chance overall.
    """
    import pandas as pd

    keys = ("model", "params_m", "train_samples_per_s", "infer_samples_per_s", "train_step_ms", "peak_mem_mb",
            "model_mem_mb", "mem_kind", "batch", "gmacs", "oom_batches", "threads", "load_avg_1m", "cpu_count")
    b = pd.DataFrame([{k: r.get(k) for k in keys} for r in bench])
    f = pd.DataFrame([{k: v for k, v in r.items() if k not in ("history", "params_m")} for r in finetune])
    f = f.drop_duplicates("model", keep="first")
    df = b.merge(f, on="model", how="outer").rename(columns={"val_combined": "combined",
                                                              "val_combined_ci_low": "combined_ci_low",
                                                              "val_combined_ci_high": "combined_ci_high"})
    df["combined_chance_normalised"] = df["combined"]
    df["tasks_at_chance"] = [", ".join(t for t, *_ in _tasks_at_chance(r)) for _, r in df.iterrows()]
    df = _add_seed_columns(df, seed_table)
    first = ["model", "params_m", "val_loss", "combined", "combined_ci_low", "combined_ci_high", "n_seeds",
             "combined_mean", "combined_sd", "seed_ci_low", "seed_ci_high", "above_chance", "test_combined",
             "tasks_at_chance", "train_samples_per_s", "infer_samples_per_s", "train_s_per_1k", "pareto_front", "peak_mem_mb", "batch", "pretrained", "resolution"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].sort_values("val_loss", kind="stable").reset_index(drop=True)


def _tasks_at_chance(row) -> list[tuple[str, float, float, float]]:
    """(task, normalised score, interval) of each task whose validation interval (screening run)
    reaches 0: a model can beat chance overall while one task is still at chance."""
    out = []
    for col in row.index:
        m = re.fullmatch(r"val_(.+)_norm_ci_low", str(col))
        if m and row[col] is not None and row[col] <= 0:
            t = m.group(1)
            out.append((t, float(row[f"val_{t}_norm"]), float(row[col]), float(row[f"val_{t}_norm_ci_high"])))
    return out


def _add_seed_columns(df, seed_table):
    """Seed statistics, the above-chance flag and the Pareto front of score against training time (see
    `make_comparison_table`)."""
    import pandas as pd

    if seed_table is not None and len(seed_table):
        st = seed_table.rename(columns={"val_combined_mean": "combined_mean", "val_combined_sd": "combined_sd",
                                        "val_combined_ci_low": "seed_ci_low", "val_combined_ci_high": "seed_ci_high"})
        df = df.merge(st[["model", "n_seeds", "combined_mean", "combined_sd", "seed_ci_low", "seed_ci_high"]],
                      on="model", how="left")
    else:
        df = df.assign(n_seeds=1, combined_mean=df["combined"], combined_sd=np.nan, seed_ci_low=np.nan,
                       seed_ci_high=np.nan)
    seed_ok = (df["n_seeds"].fillna(1) < 2) | (df["seed_ci_low"] > 0)
    df["above_chance"] = (df["combined_ci_low"] > 0) & seed_ok
    # Ranked per second only when above chance overall AND on every task: a model that cannot do the
    # digit task (say) is not "second best per second" because its regressions carry its combined score.
    # Ranked by the Pareto front of score against training time (a product of score and speed would put a
    # fast model near chance first): on it, no other qualifying model is both better and faster.
    every_task = np.array([not _tasks_at_chance(r) for _, r in df.iterrows()], dtype=bool)
    ok = (df["above_chance"].fillna(False).astype(bool) & every_task & df["combined_mean"].notna()
          & df["train_samples_per_s"].notna()).to_numpy()
    df["train_s_per_1k"] = 1000.0 / df["train_samples_per_s"]
    front = np.zeros(len(df), bool)
    front[ok] = pareto_front(df["combined_mean"][ok], df["train_samples_per_s"][ok])
    df["pareto_front"] = pd.Series(front, index=df.index).where(ok)      # NaN: not ranked (at chance)
    return df


def summarize_comparison(table) -> dict[str, Any]:
    """Names of the lowest-loss, fastest-training and best-combined models, the best per second
    among the above-chance models only (None when none is above chance), and how many are above chance."""
    def pick(col: str, largest: bool) -> str | None:
        s = table[col].dropna() if col in table else []
        if len(s) == 0:
            return None
        return str(table.loc[s.idxmax() if largest else s.idxmin(), "model"])

    above = table["above_chance"].fillna(False).astype(bool) if "above_chance" in table else None
    return {"lowest_loss": pick("val_loss", False), "fastest": pick("train_samples_per_s", True),
            "best_combined": pick("combined", True), "pareto_front": _front_names(table),
            "n_above_chance": int(above.sum()) if above is not None else None}


def _front_names(table) -> list[str]:
    """The models on the Pareto front of score against training time, best score first."""
    if "pareto_front" not in table:
        return []
    f = table[table["pareto_front"].eq(True)].sort_values("combined_mean", ascending=False)
    return [str(m) for m in f["model"]]


def _interval_text(lo, hi) -> str:
    return f"[{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) and math.isfinite(hi) else "[no interval]"


def describe_redundancy(red) -> str:
    """One clause per task pair of `evaluate_task_redundancy`: how much one task repeats the other."""
    import pandas as pd

    if red.empty:
        return "No categorical task to compare the other tasks with."
    parts = []
    for _, r in red.iterrows():
        if pd.notna(r["eta_squared"]):
            parts.append(f"{r['vs']} explains {r['eta_squared']:.0%} of {r['task']}'s variance (η² "
                         f"{r['eta_squared']:.3f}, Pearson r {r['pearson_r']:+.3f}), so a model that knew only "
                         f"{r['vs']} could reach R² {r['eta_squared']:.2f} on {r['task']}, no more")
        elif pd.notna(r["cramers_v"]):
            parts.append(f"{r['task']} vs {r['vs']}: Cramér's V {r['cramers_v']:.3f}"
                         + (" (a function of it: redundant)" if r["cramers_v"] > 0.95 else ""))
        else:
            parts.append(f"{r['task']} vs {r['vs']}: Pearson r {r['pearson_r']:+.3f}")
    return "; ".join(parts) + "."


def _above(table):
    return table["above_chance"].fillna(False).astype(bool)


def describe_chance(table) -> str:
    """Which models are above chance (every interval of their chance-normalised validation combined
    lies above 0) and which are not, with the numbers."""
    lo, hi = _interval_bounds(table)
    cell = {str(r["model"]): f"{r['combined_mean']:.3f} {_interval_text(lo[i], hi[i])}"
            for i, (_, r) in enumerate(table.iterrows())}
    flags = list(zip(table["model"].astype(str), _above(table), hi))
    above = [m for m, a, _ in flags if a]
    at = [m for m, a, h in flags if not a and not h < 0]
    below = [m for m, a, h in flags if not a and h < 0]
    text = ("Above chance (validation combined, chance-normalised, mean over its seeds, with its widest 95% "
            "interval): " + (", ".join(f"{m} {cell[m]}" for m in above) if above else "none") + ".")
    if at:
        text += " At chance (the interval includes 0), so not ranked: " + ", ".join(f"{m} {cell[m]}" for m in at) + "."
    if below:
        text += (" Below chance (the whole interval under 0), not ranked: "
                 + ", ".join(f"{m} {cell[m]}" for m in below) + ".")
    weak = [(str(r["model"]), _tasks_at_chance(r)) for _, r in table.iterrows()]
    weak = [f"{m} ({'; '.join(f'{t} {v:.3f} {_interval_text(lo_, hi_)}' for t, v, lo_, hi_ in ts)})"
            for m, ts in weak if ts]
    if weak:
        text += (" Still at chance on a task (that task's normalised score and interval, screening run): "
                 + ", ".join(weak) + ".")
    return text


def describe_pareto_ranking(table) -> str:
    """The Pareto front of score against training time among the above-chance models, who it dominates, and who
    is left out and why."""
    ranked = table[table["pareto_front"].eq(True)].sort_values("combined_mean", ascending=False)
    dominated = table[table["pareto_front"].eq(False)]
    left = [str(m) for m, a in zip(table["model"], _above(table)) if not a]
    on_task = [f"{r['model']} ({r['tasks_at_chance']})" for (_, r), above in zip(table.iterrows(), _above(table))
               if above and r.get("tasks_at_chance")]
    text = ("Pareto front of chance-normalised validation combined (mean over its seeds) against training time "
            "(benchmark s per 1,000 samples), models above chance overall and on every task only — on it, no other "
            "is both better and faster: "
            + ("; ".join(f"{r['model']} ({r['combined_mean']:.3f}, {r['train_s_per_1k']:.1f} s)"
                         for _, r in ranked.iterrows()) if len(ranked) else "no model qualifies, so none is ranked")
            + ".")
    if len(dominated):
        text += " Dominated (another is better and faster): " + ", ".join(
            f"{r['model']} ({r['combined_mean']:.3f}, {r['train_s_per_1k']:.1f} s)" for _, r in dominated.iterrows()) + "."
    if left:
        text += " Not ranked (interval includes or lies below chance): " + ", ".join(left) + "."
    if on_task:
        text += " Not ranked (at chance on a task): " + ", ".join(on_task) + "."
    return text


def _p_text(p: float | None) -> str:
    return "p not computable" if p is None or not math.isfinite(p) else f"p = {p:.2g}"


def describe_seeds(summary: dict, n_val: int, epochs: int) -> str:
    """The ranking statement from the seed runs: the best model's mean ± sd and interval, and
    whether it is separated from the runner-up."""
    if not summary.get("best_model"):
        return "No model was re-trained over several seeds, so no ranking is claimed."
    b, n = summary["best_model"], summary["best_model_seeds"]
    text = (f"Over {n} seeds ({epochs} epoch(s), {n_val} validation images), the best by mean validation "
            f"combined (chance-normalised) is {b}: {summary['best_model_mean']:.3f} ± {summary['best_model_sd']:.3f} "
            f"(sd), 95% interval {_interval_text(summary['best_model_ci_low'], summary['best_model_ci_high'])}; "
            f"test mean {summary['best_model_test_mean']:.3f}.")
    if summary.get("runner_up"):
        r = summary["runner_up"]
        verdict = {"better": f"{b} is ahead at {n} seeds", "worse": f"{b} is behind at {n} seeds"}.get(
            summary.get("best_minus_runner_up_verdict", ""), f"{b} and {r} are not distinguishable at {n} seeds")
        text += (f" Runner-up {r}: {summary['runner_up_mean']:.3f} ± {summary['runner_up_sd']:.3f}. On the test "
                 f"split ({summary['best_model_test_mean']:.3f} vs {summary['runner_up_test_mean']:.3f}) the difference is "
                 f"{summary['best_minus_runner_up']:+.3f}, 95% interval "
                 f"{_interval_text(summary['best_minus_runner_up_ci_low'], summary['best_minus_runner_up_ci_high'])}"
                 f" ({summary['best_minus_runner_up_test']}, {_p_text(summary.get('best_minus_runner_up_p'))}): "
                 f"{verdict}.")
    return text


def describe_answer(seed_summary: dict, table) -> str:
    """The notebook's answer (template block ``answer``): the best backbone over seeds, its test score over
    the seeds that did not select it and whether it is separated from the runner-up, the Pareto front of
    score against training time, the models at chance on a task and those handicapped by the image size."""
    s = seed_summary
    best = None
    if s.get("best_model"):
        best = {"model": s["best_model"], "seeds": s["best_model_seeds"], "val_mean": s["best_model_mean"],
                "test_seeds": len(s["best_model_test_fresh_seeds"]),
                "test_mean": s["best_model_test_fresh_mean"] if s["best_model_test_fresh_seeds"] else None,
                "test_low": s["best_model_test_fresh_ci_low"], "test_high": s["best_model_test_fresh_ci_high"],
                "runner_up": s.get("runner_up"), "verdict": s.get("best_minus_runner_up_verdict", ""),
                "diff": s.get("best_minus_runner_up"), "diff_low": s.get("best_minus_runner_up_ci_low"),
                "diff_high": s.get("best_minus_runner_up_ci_high")}
    weak = [f"{r['model']} ({r['tasks_at_chance']})" for _, r in table.iterrows() if r.get("tasks_at_chance")]
    hand = [str(r["model"]) for _, r in table.iterrows() if r.get("resolution_handicap") is True
            or r.get("resolution_handicap") is np.True_]
    return render_answer("06_backbones", best=best, front=_front_names(table), at_chance=weak, handicapped=hand)


def make_answer_headline(seed_summary: dict, best: dict) -> dict[str, Any]:
    """The answer's headline numbers: the best backbone over seeds, its validation mean and interval, its test
    figure over the seeds that did not select it, and the Pareto front of score against training time."""
    s = seed_summary
    out: dict[str, Any] = {"best backbone (over seeds)": s.get("best_model")}
    if s.get("best_model"):
        out["its mean validation combined (chance-normalised)"] = round(s["best_model_mean"], 4)
        out["95% interval over seeds"] = (f"{s['best_model_ci_low']:.3f} to {s['best_model_ci_high']:.3f}"
                                          f" ({s['best_model_seeds']} seeds)")
        out["its test combined over the seeds that did not select it"] = (
            round(s["best_model_test_fresh_mean"], 4) if math.isfinite(s["best_model_test_fresh_mean"]) else None)
        out["test 95% interval over those seeds"] = _interval_text(s["best_model_test_fresh_ci_low"],
                                                                   s["best_model_test_fresh_ci_high"])
    out["Pareto front, score vs training time (above chance only)"] = ", ".join(best.get("pareto_front") or []) or None
    return out


def describe_resolution(results: Sequence[dict]) -> str:
    """What the chosen image size does to each backbone (one line each; handicapped ones flagged)."""
    # One line per backbone: an ensemble's note repeats its members' clauses.
    notes = dict.fromkeys(c for r in results if r.get("resolution_note") for c in r["resolution_note"].split(" | "))
    hand = sorted({r["model"] for r in results if r.get("resolution_handicap")})
    tail = (f"\nHandicapped at this size: {', '.join(hand)}; their scores say how they do at this size, not how "
            "they would rank at their native size." if hand else "")
    return "\n".join(notes) + tail


def _base_name(name: str) -> str:
    return name.split(".")[0]   # timm "model.tag" -> architecture


def _params_row(name: str, r) -> dict | None:
    """Parameter count (backbone + a 1000-class head, as timm counts) vs timm's results CSV."""
    import pandas as pd

    base = _base_name(name)
    if base not in TIMM_REFERENCE or not pd.notna(r.get("backbone_params_m")):
        return None
    nf = _num_features(r)
    meas = float(r["backbone_params_m"]) + (nf * 1000 + 1000) / 1e6 if nf else float("nan")
    ref = TIMM_REFERENCE[base][0]
    return {"model": name, "what": "params (M) with a 1000-class head", "source": "timm results CSV",
            "claimed": ref, "measured": meas,
            "verdict": "matches" if abs(meas - ref) / ref < 0.01 else f"differs by {meas - ref:+.2f} M"}


def _cpu_speed_row(name: str, r, img_size: int) -> dict | None:
    """Benchmark training img/s vs the 2-core CPU reference: a ratio of unlike steps, labelled so."""
    import pandas as pd

    key = (_base_name(name), img_size)
    if key not in CPU_REFERENCE or not pd.notna(r.get("train_samples_per_s")):
        return None
    ref, meas = CPU_REFERENCE[key], float(r["train_samples_per_s"])
    load = (f"; 1-min load average {float(r['load_avg_1m']):.1f} on {_int_or(r.get('cpu_count'), '?')} CPUs "
            "while measuring" if pd.notna(r.get("load_avg_1m")) else "")
    return {"model": name, "what": f"train img/s on CPU at {img_size} px (measured: {WORKBOOK_STEP}; "
                                   f"claimed: {REFERENCE_STEP})",
            "source": "docs/method.md, M2 (2-core CPU, batch 8, fwd+bwd)", "claimed": ref, "measured": meas,
            "verdict": f"ratio {meas / ref:.2f}x of unlike steps (full training step / forward + backward "
                       f"only; batch {int(r['batch'])}, {_int_or(r.get('threads'), '?')} thread(s){load})"}


def _gpu_memory_row(name: str, r, img_size: int) -> dict | None:
    """Peak CUDA memory vs M2's 12 GB card figures, comparable only at the same batch."""
    import pandas as pd

    base = _base_name(name)
    if base not in NOTE002_MEMORY or not pd.notna(r.get("peak_mem_mb")):
        return None
    cb, gb = NOTE002_MEMORY[base]
    meas = float(r["peak_mem_mb"]) / 1024
    same = int(r["batch"]) == cb
    return {"model": name, "what": f"GPU memory (GB) at batch {cb}", "source": "M2 (12 GB card)",
            "claimed": gb, "measured": meas,
            "verdict": ("within 12 GB" if meas <= 12 else "above 12 GB") if same else
            f"not comparable: measured at batch {int(r['batch'])} at {img_size} px"}


def _m2_pair_rows(by: dict) -> list[dict]:
    """M2's Large-vs-Base and Swin-vs-ConvNeXt expectations (score gain, time ratio) where both ran."""
    rows = []
    for big, small, claim_comb, claim_time in (("convnext_large", "convnext_base", 0.03, 1.5),
                                               ("swin_base_patch4_window7_224", "convnext_base", 0.03, 1.2)):
        a = next((r for n, r in by.items() if _base_name(n) == big), None)
        b = next((r for n, r in by.items() if _base_name(n) == small), None)
        if a is None or b is None:
            continue
        col = "combined_mean" if "combined_mean" in a else "combined"
        d = float(a[col] - b[col])
        rows.append({"model": f"{big} vs {small}", "source": "M2", "claimed": claim_comb, "measured": d,
                     "what": "combined score gain (measured: chance-normalised, validation; M2's: a raw mean "
                             "of F1 scores)",
                     "verdict": ("met" if d >= claim_comb else f"missed by {claim_comb - d:.3f}")
                     + " (unlike score definitions)"})
        t = float(b["train_samples_per_s"] / a["train_samples_per_s"])
        rows.append({"model": f"{big} vs {small}", "what": "training time ratio", "source": "M2",
                     "claimed": claim_time, "measured": t,
                     "verdict": f"{'slower' if t > claim_time else 'faster'} than claimed ({t:.2f}x vs {claim_time}x)"})
    return rows


def make_claims_table(table, img_size: int, device: str, tasks: Sequence[TaskSpec]):
    """Reference figures next to what this run measured, with a verdict computed here.

    Rows: parameter count vs timm's results CSV; on CPU, training throughput vs the 2-core
    reference (docs/method.md, M2: batch 8 fp32), which times forward + backward only while this
    workbook times `WORKBOOK_STEP`, so the ratio is labelled as one of unlike steps; on CUDA,
    M2's GPU memory on a 12 GB card; M2's Large-vs-Base and Swin-vs-ConvNeXt expectations.
    A model with no reference gets a row saying so.
    """
    import pandas as pd

    by = {str(r["model"]): r for _, r in table.iterrows()}
    rows = []
    for name, r in by.items():
        rows += [_params_row(name, r), _cpu_speed_row(name, r, img_size) if device == "cpu" else None,
                 _gpu_memory_row(name, r, img_size) if device.startswith("cuda") else None]
    rows = [x for x in rows if x is not None] + _m2_pair_rows(by)
    covered = {r["model"] for r in rows}
    for name in by:   # say so plainly where no reference applies, rather than leave the table silent
        if name not in covered and not any(name in str(m) for m in covered):
            rows.append({"model": name, "what": "-", "source": "-", "claimed": None, "measured": None,
                         "verdict": f"no reference figure for this model at {img_size} px on {device}"})
    return pd.DataFrame(rows, columns=["model", "what", "source", "claimed", "measured", "verdict"])


def _int_or(v, default: str) -> str:
    try:
        return str(int(v))
    except (TypeError, ValueError):
        return default


def _num_features(row) -> int:
    v = row.get("num_features")
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def pareto_front(score: Sequence[float], speed: Sequence[float]) -> np.ndarray:
    """Boolean mask of points no other point beats on both score and speed (higher is better)."""
    s, v = np.asarray(score, float), np.asarray(speed, float)
    keep = np.ones(len(s), bool)
    for i in range(len(s)):
        dominated = (s >= s[i]) & (v >= v[i]) & ((s > s[i]) | (v > v[i]))
        keep[i] = not dominated.any()
    return keep


def _interval_bounds(t) -> tuple[np.ndarray, np.ndarray]:
    """The widest interval each model has (bootstrap over images; over seeds where re-trained)."""
    lo = t["combined_ci_low"].to_numpy(float)
    hi = t["combined_ci_high"].to_numpy(float)
    if "seed_ci_low" in t:
        lo = np.fmin(lo, t["seed_ci_low"].to_numpy(float))
        hi = np.fmax(hi, t["seed_ci_high"].to_numpy(float))
    return lo, hi


def _handicapped(table) -> np.ndarray:
    """Boolean per row: a fixed-size backbone run below its native size (see `make_resolution_info`)."""
    if "resolution_handicap" not in table:
        return np.zeros(len(table), bool)
    return np.array([v is True or v is np.True_ for v in table["resolution_handicap"]], bool)


def _scatter_models(ax, t, x: str, y: np.ndarray, above: np.ndarray, front: np.ndarray) -> None:
    """Filled markers above chance (red on the Pareto front), hollow ones not; diamonds = handicapped."""
    sizes = 30 + 6 * t["params_m"].fillna(1).to_numpy()
    colours = np.where(front, "tab:red", "tab:blue")
    hand = _handicapped(t)
    for i in range(len(t)):
        style = dict(c=colours[i], alpha=0.7) if above[i] else dict(facecolors="none")
        ax.scatter(t[x][i], y[i], s=sizes[i], marker="D" if hand[i] else "o", edgecolors="k", **style)
    # Legend entries for the marker meanings, drawn empty so the legend does not repeat per model.
    if hand.any():
        ax.scatter([], [], marker="D", facecolors="none", edgecolors="k", label="fixed-size, handicapped at this size")
    if (~above).any():
        ax.scatter([], [], marker="o", facecolors="none", edgecolors="k", label="at chance overall or on a task: not ranked")


def plot_pareto(table, ax=None, score: str = "combined_mean", speed: str = "train_samples_per_s"):
    """Validation score (chance-normalised, with its interval) vs benchmark training throughput
    (log x), marker area ~ params; the chance line at 0; hollow markers = not above chance;
    diamonds = fixed-size backbones handicapped at this size; the Pareto front is joined among the
    models above chance overall and on every task only."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.4))
    t = table.dropna(subset=[score, speed]).reset_index(drop=True)
    above = t["above_chance"].fillna(False).to_numpy(bool) if "above_chance" in t else np.ones(len(t), bool)
    # The front, like the per-second ranking, takes only models above chance overall AND on every task.
    above = above & np.array([not _tasks_at_chance(r) for _, r in t.iterrows()], dtype=bool)
    front = np.zeros(len(t), bool)
    front[above] = pareto_front(t[score][above], t[speed][above])
    lo, hi = _interval_bounds(t)
    y = t[score].to_numpy(float)
    ax.errorbar(t[speed], y, yerr=[y - lo, hi - y], fmt="none", ecolor="grey", elinewidth=1, capsize=3)
    _scatter_models(ax, t, speed, y, above, front)
    lx = np.log(t[speed].to_numpy(float))
    for i in range(len(t)):   # a name goes below its point when a close neighbour (in x) scores higher
        below = ((np.abs(lx - lx[i]) < np.log(1.7)) & (y > y[i])).any()
        ax.annotate(str(t["model"][i]), (t[speed][i], y[i]), textcoords="offset points",
                    xytext=(6, -12 if below else 5), fontsize=7)
    f = t[front].sort_values(speed)
    ax.plot(f[speed], f[score], "--", color="tab:red", lw=1, label="Pareto front (above chance on every task only)")
    ax.axhline(0.0, color="k", lw=1, ls=":", label="chance (0 after normalising)")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    span = t[speed].max() / max(t[speed].min(), 1e-12) if len(t) else 1.0
    ax.xaxis.set_minor_formatter(plain if span < 10 else NullFormatter())   # label minor ticks within a decade only
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.3, y=0.1)
    ax.set_xlabel("training samples/s (benchmark on random inputs, full AdamW step; log scale)")
    ax.set_ylabel("validation combined, chance-normalised")
    ax.set_title("validation score (95% interval) vs training throughput; marker area ~ params", fontsize=10)
    ax.legend(loc="best", fontsize=7)
    return fig


def plot_seed_scores(results: Sequence[dict], ax=None):
    """Per re-trained model: each seed's validation combined (chance-normalised), the mean and
    its 95% t-interval over seeds, and the chance line."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 3.8))
    st = make_seed_table(results)
    st = st[st["n_seeds"] >= 2].reset_index(drop=True)
    for i, r in st.iterrows():
        vals = [x["val_combined"] for x in results if x["model"] == r["model"]]
        ax.scatter(np.full(len(vals), i), vals, color="tab:blue", alpha=0.6, zorder=3,
                   label="one seed" if i == 0 else None)
        m = r["val_combined_mean"]
        ax.errorbar(i + 0.15, m, yerr=[[m - r["val_combined_ci_low"]], [r["val_combined_ci_high"] - m]],
                    fmt="o", color="tab:red", capsize=4, label="mean, 95% t-interval" if i == 0 else None)
    ax.axhline(0.0, color="k", lw=1, ls=":", label="chance")
    ax.set_xticks(range(len(st)), [f"{m}\n({n} seeds)" for m, n in zip(st["model"], st["n_seeds"])], fontsize=8)
    ax.set_xlim(-0.5, max(len(st), 1) - 0.5)
    ax.set_ylabel("validation combined, chance-normalised")
    ax.set_title("top models re-trained over seeds (validation split)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_memory(table, ax=None):
    """Peak memory vs parameter count (filled), and on CPU the growth over the runtime's own
    resident memory once the model exists (hollow); labels give the batch that fitted."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.0))
    t = table.dropna(subset=["peak_mem_mb", "params_m"])
    cpu = len(t) and str(t["mem_kind"].iloc[0]) == "cpu_peak_rss"
    ax.scatter(t["params_m"], t["peak_mem_mb"], color="tab:purple", label="peak" + (" RSS" if cpu else " allocated"))
    if cpu and "model_mem_mb" in t:
        ax.scatter(t["params_m"], t["model_mem_mb"], facecolors="none", edgecolors="tab:purple",
                   label="growth over torch+timm runtime")
    for _, r in t.iterrows():
        ax.annotate(f"{r['model']} (batch {int(r['batch'])})", (r["params_m"], r["peak_mem_mb"]),
                    textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("memory (MB)")
    ax.set_title("training memory, benchmark on random inputs (no data split): "
                 + ("CPU, measuring process" if cpu else "CUDA max_memory_allocated"), fontsize=9)
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_finetune_curves(results: Sequence[dict], metric: str = "combined"):
    """Per epoch, for each model's screening run: train (dashed) and validation loss, and the
    validation `metric` (chance-normalised for ``combined``)."""
    first = {}
    for r in results:
        first.setdefault(r["model"], r)
    fig = plot_training_curves({f"{m} (seed {r['seed']})": r["history"] for m, r in first.items()}, ("loss", metric))
    fig.axes[0].set_title("loss: validation (solid), train (dashed)", fontsize=10)
    fig.axes[1].set_title(f"validation {metric}" + (", chance-normalised" if metric == "combined" else ""),
                          fontsize=10)
    fig.axes[1].axhline(0.0, color="k", lw=1, ls=":")
    return fig
