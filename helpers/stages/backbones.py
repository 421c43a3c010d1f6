"""Notebook 06: timm backbones on a multi-task head, compared on score, speed and memory (the tables, figures
and words are made from these results in `helpers.reports.backbones`)."""
from __future__ import annotations

import dataclasses
import math
import re
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from helpers.core.errors import DataError
from helpers.core.io import jsonable
from helpers.core.taskspec import make_task_specs, TaskSpec
from helpers.data.tables import (evaluate_split, evaluate_task_redundancy, load_default_or_user_table,
                                 load_table_tensors, make_subject_split, TableTensors, TaskTable)
from helpers.evaluation.stats import compare_seed_scores, Spread
from helpers.evaluation.speed import evaluate_backbone_speed
from helpers.models.multitask import count_multitask_params
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.loop import evaluate_model, predict, train_model, train_samples_per_s
from helpers.training.multitask import metric_key, MultiTask, task_score_names

# What notebook 06 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["TrainConfig", "WORKBOOK_STEP", "chance_levels", "check_pretrained_files", "evaluate_backbones_speed",
           "evaluate_split", "evaluate_task_redundancy", "load_default_or_user_table", "load_table_tensors",
           "make_comparison_table", "make_dataset_card", "make_metrics", "make_seed_table", "make_subject_split",
           "make_task_specs", "retrain_top_models", "summarize_comparison", "summarize_seeds", "train_backbones"]


# What one timed training step is here (evaluation/speed.py) and in the CPU reference figures.
WORKBOOK_STEP = "forward + loss + backward + AdamW step"


def check_pretrained_files(names: Sequence[str], pretrained_files: dict | None) -> tuple[dict[str, str | None], list[str]]:
    """({backbone: its local weight file, or None where it is randomly initialised}, the backbones
    ``pretrained_files`` names that are not in ``names``); a listed file that does not exist is an error here,
    before anything is measured."""
    files = pretrained_files or {}
    missing = {k: v for k, v in files.items() if v and not Path(v).expanduser().is_file()}
    if missing:
        raise DataError(f"pretrained_files: file(s) not found {missing}; weights are never downloaded, "
                        "give local .pth/.safetensors files or remove the entries")
    members = [p for n in names for p in n.split("+")]
    return {p: files.get(p) or None for p in members}, sorted(set(files) - set(members))


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


def chance_levels(results: Sequence[dict], tasks: Sequence[TaskSpec]) -> dict[str, float | None]:
    """{task score name: its chance level on the validation split} (from the labels; one run holds them all)."""
    return {s: results[0].get(f"val_{t.name}_chance") for t, s in zip(tasks, task_score_names(tasks))}


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
    lo, hi = Spread(mean, se=sd / math.sqrt(n), df=n - 1).interval(confidence) if n > 1 else (math.nan, math.nan)
    return {"n": n, "mean": mean, "sd": sd, "ci_low": lo, "ci_high": hi}


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


def make_metrics(table, summary: dict, seed_summary: dict | None = None,
                 tasks: Sequence[TaskSpec] = (), chance: dict | None = None) -> dict:
    """metrics.json: per model the `_MODEL_METRICS` columns, its validation score per task (raw and
    normalised, ``<task>_norm``) and ``n_tasks_at_chance``;
    the named winners (`summarize_comparison`), the seed summary (`summarize_seeds`) and the
    validation chance level of each task's score."""
    out: dict[str, Any] = {}
    scores = [f"val_{c}" for c in task_score_names(tasks)]
    for _, r in table.iterrows():
        row = {c: jsonable(r.get(c)) for c in _MODEL_METRICS if c in r}
        row.update({c[4:]: jsonable(r.get(c)) for c in scores if c in r})
        row.update({f"{t.name}_norm": jsonable(r.get(f"val_{t.name}_norm")) for t in tasks
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
    df["tasks_at_chance"] = [", ".join(t for t, *_ in tasks_at_chance(r)) for _, r in df.iterrows()]
    df = _add_seed_columns(df, seed_table)
    first = ["model", "params_m", "val_loss", "combined", "combined_ci_low", "combined_ci_high", "n_seeds",
             "combined_mean", "combined_sd", "seed_ci_low", "seed_ci_high", "above_chance", "test_combined",
             "tasks_at_chance", "train_samples_per_s", "infer_samples_per_s", "train_s_per_1k", "pareto_front", "peak_mem_mb", "batch", "pretrained", "resolution"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].sort_values("val_loss", kind="stable").reset_index(drop=True)


def tasks_at_chance(row) -> list[tuple[str, float, float, float]]:
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
    every_task = np.array([not tasks_at_chance(r) for _, r in df.iterrows()], dtype=bool)
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
            "best_combined": pick("combined", True), "pareto_front": front_names(table),
            "n_above_chance": int(above.sum()) if above is not None else None}


def front_names(table) -> list[str]:
    """The models on the Pareto front of score against training time, best score first."""
    if "pareto_front" not in table:
        return []
    f = table[table["pareto_front"].eq(True)].sort_values("combined_mean", ascending=False)
    return [str(m) for m in f["model"]]


def base_name(name: str) -> str:
    return name.split(".")[0]   # timm "model.tag" -> architecture


def pareto_front(score: Sequence[float], speed: Sequence[float]) -> np.ndarray:
    """Boolean mask of points no other point beats on both score and speed (higher is better)."""
    s, v = np.asarray(score, float), np.asarray(speed, float)
    keep = np.ones(len(s), bool)
    for i in range(len(s)):
        dominated = (s >= s[i]) & (v >= v[i]) & ((s > s[i]) | (v > v[i]))
        keep[i] = not dominated.any()
    return keep


