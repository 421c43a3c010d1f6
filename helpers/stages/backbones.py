"""Notebook 06: timm backbones on a multi-task head, compared on score, speed and memory."""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from helpers.core.errors import DataError
from helpers.core.taskspec import make_task_specs, TaskSpec
from helpers.data.tables import (evaluate_split, load_default_or_user_table, load_table_tensors,
                                 make_subject_split, TableTensors, TaskTable)
from helpers.evaluation.plots import plot_training_curves
from helpers.evaluation.speed import evaluate_backbone_speed
from helpers.models.multitask import count_multitask_params
from helpers.models.registry import create_model
from helpers.training.config import TrainConfig
from helpers.training.loop import evaluate_model, train_model, train_samples_per_s
from helpers.training.multitask import metric_key, MultiTask, task_score_names

# What notebook 06 calls; lower-layer functions are imported above so the notebook needs this module only.
__all__ = ["TrainConfig", "describe_tasks", "evaluate_backbones_speed", "evaluate_split", "load_default_or_user_table", "load_table_tensors", "make_bench_table", "make_claims_table", "make_comparison_table", "make_dataset_card", "make_finetune_table", "make_metrics", "make_subject_split", "make_task_specs", "plot_memory", "plot_pareto", "plot_finetune_curves", "pretrained_note", "summarize_comparison", "train_backbones"]



# Reference figures (methods.md): timm results CSVs (params M with the 1000-class head, GMACs at
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


def train_backbone(name: str, data: TableTensors, config, lr_backbone: float = 2e-5, lr_head: float = 1e-4,
                   lr_scratch: float = 1e-3, pretrained_files: dict | None = None, freeze_backbone: bool = False,
                   img_size: int | None = None, dropout: float = 0.0, channels_last: bool = False,
                   out_dir: str | Path | None = None, device: str = "cpu", seed: int = 0) -> dict:
    """Fine-tune one backbone (or "a+b" ensemble) on the table with the shared loop.

    `config` is a `helpers.training.config.TrainConfig`; its ``lr`` is replaced by the heads' rate and the
    backbone's rate goes in through ``lr_groups`` (see `choose_lrs`); ``grad_accum_steps`` keeps
    the effective batch. Returns val/test loss and per-task scores, the history and fit time.
    """
    import dataclasses

    torch.manual_seed(seed)
    model = create_model("timm_multitask", backbone=name, tasks=data.tasks, pretrained_files=pretrained_files,
                         freeze_backbone=freeze_backbone, img_size=img_size, dropout=dropout,
                         channels_last=channels_last)
    pretrained = bool(getattr(model, "pretrained", False))
    lr_b, lr_h = choose_lrs(pretrained, lr_backbone, lr_head, lr_scratch)
    task = MultiTask(list(data.tasks), data.reg_mean, data.reg_std)
    cfg = dataclasses.replace(config, lr=lr_h, lr_groups={**make_lr_groups(model, lr_b), **config.lr_groups})
    t0 = time.perf_counter()
    res = train_model(model, task, (data.x["train"], data.y["train"]), (data.x["val"], data.y["val"]),
                      cfg, out_dir, device)
    fit_s = time.perf_counter() - t0
    ebs = cfg.eval_batch_size or 4 * cfg.batch_size
    val = evaluate_model(model, task, (data.x["val"], data.y["val"]), device, ebs)
    test = evaluate_model(model, task, (data.x["test"], data.y["test"]), device, ebs)
    return {"model": name, "pretrained": pretrained, "freeze_backbone": freeze_backbone,
            "lr_backbone": lr_b, "lr_head": lr_h, **count_multitask_params(model),
            "val_loss": val["loss"], "val_combined": val["combined"], "test_loss": test["loss"],
            "test_combined": test["combined"],
            **{f"val_{k}": v for k, v in val.items() if k not in ("loss", "combined")},
            **{f"test_{k}": v for k, v in test.items() if k not in ("loss", "combined")},
            "epochs_run": res.epochs_run, "fit_s": fit_s,
            "effective_batch": cfg.batch_size * cfg.grad_accum_steps,
            "fit_samples_per_s": train_samples_per_s(res.history),
            "history": res.history}


def train_backbones(names: Sequence[str], data: TableTensors, config, out_dir: str | Path | None = None,
                    **kwargs: Any) -> list[dict]:
    """`train_backbone` for each name (history.json per model under ``out_dir/<name>/``)."""
    out = []
    for name in names:
        print(f"--- fine-tuning {name}", flush=True)
        folder = Path(out_dir) / metric_key(name) if out_dir is not None else None
        out.append(train_backbone(name, data, config, out_dir=folder, **kwargs))
    return out


def make_finetune_table(results: Sequence[dict], tasks: Sequence[TaskSpec]):
    """One row per fine-tuned model: initialisation, learning rates, losses, per-task and combined scores."""
    import pandas as pd

    score_cols = [f"val_{c}" for c in task_score_names(tasks)]
    cols = ["model", "pretrained", "lr_backbone", "lr_head", "epochs_run", "val_loss", *score_cols, "val_combined",
            "test_loss", "test_combined", "fit_s"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in results])


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
    """Dataset section of config.json (M3): samples and subjects per split, split method."""
    df = table.frame.assign(split=split)
    card = {"source": table.source, "table": str(table.path), "generated": table.generated,
            "total_samples": int(len(df)), "total_subjects": int(df["subject"].nunique()),
            "split_method": "by_subject_id", "data_leakage_prevention": True, "random_seed": seed,
            "tasks": [asdict(t) for t in table.tasks]}
    for name in ("train", "val", "test"):
        part = df[df.split == name]
        card[f"{name}_samples"] = int(len(part))
        card[f"{name}_subjects"] = int(part["subject"].nunique())
        card[f"{name}_samples_used"] = int(data.x[name].shape[0])
    return card


def make_metrics(table, summary: dict) -> dict:
    """metrics.json: per model params_m, train/infer samples/s, peak_mem_mb, val_loss, combined,
    test_combined, batch; plus the names of the lowest-loss / fastest / best models."""
    out: dict[str, Any] = {}
    for _, r in table.iterrows():
        key = metric_key(str(r["model"]))
        out[key] = {c: (None if r.get(c) is None or (isinstance(r.get(c), float) and not math.isfinite(r.get(c)))
                        else (int(r[c]) if c == "batch" else float(r[c])))
                    for c in ("params_m", "train_samples_per_s", "infer_samples_per_s", "peak_mem_mb", "val_loss",
                              "combined", "test_combined", "batch") if c in r}
    out.update(summary)
    out["n_models"] = int(len(table))
    return out


def make_comparison_table(bench: Sequence[dict], finetune: Sequence[dict]):
    """M2's table: model | params (M) | val loss | combined | train/infer samples/s | peak
    memory | batch, sorted by validation loss; ``combined_x_samples_per_s`` = combined score ×
    training samples/s (score-weighted throughput)."""
    import pandas as pd

    b = pd.DataFrame([{k: r.get(k) for k in ("model", "params_m", "train_samples_per_s", "infer_samples_per_s",
                                               "train_step_ms", "peak_mem_mb", "model_mem_mb", "mem_kind", "batch",
                                               "gmacs", "oom_batches", "threads", "load_avg_1m", "cpu_count")}
                       for r in bench])
    f = pd.DataFrame([{k: v for k, v in r.items() if k != "history" and k != "params_m"} for r in finetune])
    df = b.merge(f, on="model", how="outer")
    df = df.rename(columns={"val_combined": "combined"})
    df["combined_x_samples_per_s"] = df["combined"] * df["train_samples_per_s"]
    first = ["model", "params_m", "val_loss", "combined", "test_combined", "train_samples_per_s",
             "infer_samples_per_s", "peak_mem_mb", "batch", "pretrained", "combined_x_samples_per_s"]
    cols = [c for c in first if c in df.columns] + [c for c in df.columns if c not in first]
    return df[cols].sort_values("val_loss", kind="stable").reset_index(drop=True)


def summarize_comparison(table) -> dict[str, Any]:
    """Names of the lowest-loss, fastest-training, best-combined and best combined×samples/s models."""
    def pick(col: str, largest: bool) -> str | None:
        s = table[col].dropna() if col in table else []
        if len(s) == 0:
            return None
        return str(table.loc[s.idxmax() if largest else s.idxmin(), "model"])

    return {"lowest_loss": pick("val_loss", False), "fastest": pick("train_samples_per_s", True),
            "best_combined": pick("combined", True), "best_combined_per_s": pick("combined_x_samples_per_s", True)}


def _base_name(name: str) -> str:
    return name.split(".")[0]   # timm "model.tag" -> architecture


def make_claims_table(table, img_size: int, device: str, tasks: Sequence[TaskSpec]):
    """Reference figures next to what this run measured, with a verdict computed here.

    Rows: parameter count vs timm's results CSV (backbone + a 1000-class head, as timm counts);
    2-core CPU throughput reference (methods.md, batch 8 fp32) where model and size match; note
    002's GPU memory on a 12 GB card; M2's Large-vs-Base and Swin-vs-ConvNeXt expectations.
    """
    import pandas as pd

    rows = []
    by = {str(r["model"]): r for _, r in table.iterrows()}
    for name, r in by.items():
        base = _base_name(name)
        if base in TIMM_REFERENCE and pd.notna(r.get("backbone_params_m")):
            nf = _num_features(r)
            meas = float(r["backbone_params_m"]) + (nf * 1000 + 1000) / 1e6 if nf else float("nan")
            ref = TIMM_REFERENCE[base][0]
            rows.append({"model": name, "what": "params (M) with a 1000-class head", "source": "timm results CSV",
                         "claimed": ref, "measured": meas,
                         "verdict": "matches" if abs(meas - ref) / ref < 0.01 else f"differs by {meas - ref:+.2f} M"})
        key = (base, img_size)
        if device == "cpu" and key in CPU_REFERENCE and pd.notna(r.get("train_samples_per_s")):
            ref, meas = CPU_REFERENCE[key], float(r["train_samples_per_s"])
            rows.append({"model": name, "what": f"train img/s on CPU at {img_size} px", "source": "methods.md (2-core, batch 8)",
                         "claimed": ref, "measured": meas,
                         "verdict": f"{meas / ref:.2f}x the reference (batch {int(r['batch'])}, "
                                    f"{_int_or(r.get('threads'), '?')} thread(s), multi-task loss"
                                    + (f"; 1-min load average {float(r['load_avg_1m']):.1f} on "
                                       f"{_int_or(r.get('cpu_count'), '?')} CPUs while measuring)"
                                       if pd.notna(r.get("load_avg_1m")) else ")")})
        if device.startswith("cuda") and base in NOTE002_MEMORY and pd.notna(r.get("peak_mem_mb")):
            cb, gb = NOTE002_MEMORY[base]
            meas = float(r["peak_mem_mb"]) / 1024
            same = int(r["batch"]) == cb
            rows.append({"model": name, "what": f"GPU memory (GB) at batch {cb}", "source": "M2 (12 GB card)",
                         "claimed": gb, "measured": meas,
                         "verdict": ("within 12 GB" if meas <= 12 else "above 12 GB") if same else
                         f"not comparable: measured at batch {int(r['batch'])} at {img_size} px"})
    for big, small, claim_comb, claim_time, label in (
            ("convnext_large", "convnext_base", 0.03, 1.5, "ConvNeXt Large vs Base"),
            ("swin_base_patch4_window7_224", "convnext_base", 0.03, 1.2, "Swin-B vs ConvNeXt-B")):
        a = next((r for n, r in by.items() if _base_name(n) == big), None)
        b = next((r for n, r in by.items() if _base_name(n) == small), None)
        if a is None or b is None:
            continue
        d = float(a["combined"] - b["combined"])
        rows.append({"model": f"{big} vs {small}", "what": "combined score gain", "source": "M2",
                     "claimed": claim_comb, "measured": d,
                     "verdict": "met" if d >= claim_comb else f"missed by {claim_comb - d:.3f}"})
        t = float(b["train_samples_per_s"] / a["train_samples_per_s"])
        rows.append({"model": f"{big} vs {small}", "what": "training time ratio", "source": "M2",
                     "claimed": claim_time, "measured": t,
                     "verdict": f"{'slower' if t > claim_time else 'faster'} than claimed ({t:.2f}x vs {claim_time}x)"})
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


def plot_pareto(table, ax=None, score: str = "combined", speed: str = "train_samples_per_s"):
    """Score vs training throughput (log x), marker area ~ params, the Pareto front joined."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6.5, 4.2))
    t = table.dropna(subset=[score, speed])
    front = pareto_front(t[score], t[speed])
    sizes = 30 + 6 * t["params_m"].fillna(1).to_numpy()
    ax.scatter(t[speed], t[score], s=sizes, c=np.where(front, "tab:red", "tab:blue"), alpha=0.7, edgecolor="k")
    for _, r in t.iterrows():
        ax.annotate(str(r["model"]), (r[speed], r[score]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    f = t[front].sort_values(speed)
    ax.plot(f[speed], f[score], "--", color="tab:red", lw=1, label="Pareto front")
    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.margins(x=0.2, y=0.1)
    ax.set_xlabel("training samples/s (log)")
    ax.set_ylabel(f"validation {score}")
    ax.set_title("score vs throughput (marker area ~ params)")
    ax.legend(loc="best", fontsize=8)
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
    ax.set_title("training memory: " + ("CPU, measuring process" if cpu else "CUDA max_memory_allocated"))
    ax.legend(fontsize=8, loc="best")
    return fig


def plot_finetune_curves(results: Sequence[dict], metric: str = "combined"):
    """Per epoch and fine-tuned model: train (dashed) and validation loss, and the validation `metric`."""
    fig = plot_training_curves({r["model"]: r["history"] for r in results}, ("loss", metric))
    fig.axes[1].set_title(f"validation {metric}", fontsize=10)
    return fig
