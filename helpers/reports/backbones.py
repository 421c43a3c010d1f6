"""Notebook 06's report (backbone comparison): the tables, figures and words made from what
`helpers.stages.backbones` measured, and the reference figures (timm's results CSVs, docs/method.md M2)
the measurements are set beside."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from helpers.core.taskspec import TaskSpec
from helpers.data.tables import TableTensors, TaskTable
from helpers.evaluation.plots import plot_training_curves
from helpers.evaluation.stats import format_p
from helpers.stages.backbones import (base_name, front_names, make_seed_table, pareto_front, tasks_at_chance,
                                      WORKBOOK_STEP)
from helpers.stages.words import markdown, render, render_answer
from helpers.training.multitask import task_score_names

# What notebook 06 shows; `markdown` is imported above so the notebook needs this module and the stage only.
__all__ = ["REFERENCE_STEP", "describe_answer", "describe_chance", "describe_pareto_ranking", "describe_redundancy",
           "describe_resolution", "describe_seeds", "describe_steps", "describe_weights", "describe_winners",
           "make_answer_headline", "make_bench_table", "make_chance_table", "make_claims_table",
           "make_finetune_table", "make_task_table", "markdown", "plot_finetune_curves", "plot_memory",
           "plot_pareto", "plot_seed_scores"]

NOTEBOOK = "06_backbones"

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

# What one timed step is in the CPU reference figures (the workbook's is `backbones.WORKBOOK_STEP`).
REFERENCE_STEP = "forward + backward only"

# M2, a 12 GB card: model -> (batch, claimed GB).
NOTE002_MEMORY = {"convnext_base": (16, 8.0), "convnext_large": (8, 10.0),
                  "swin_base_patch4_window7_224": (16, 9.0), "swin_large_patch4_window7_224": (4, 11.0),
                  "vit_base_patch16_224": (16, 9.0), "vit_large_patch16_224": (2, 11.0)}


# ------------------------------------------------------------------------------------------ tables
def make_task_table(table: TaskTable, data: TableTensors) -> pd.DataFrame:
    """Per task: kind, classes, loss weight, labelled training rows and the class counts."""
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


def make_finetune_table(results: Sequence[dict], tasks: Sequence[TaskSpec]) -> pd.DataFrame:
    """One row per fine-tuned model and seed: initialisation, learning rates, loss, per-task scores,
    the chance-normalised ``val_combined`` with its bootstrap interval, the test combined."""
    score_cols = [f"val_{c}" for c in task_score_names(tasks)]
    cols = ["model", "seed", "pretrained", "lr_backbone", "lr_head", "epochs_run", "val_loss", *score_cols,
            "val_combined", "val_combined_ci_low", "val_combined_ci_high", "test_combined", "fit_s"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in results])


def make_chance_table(results: Sequence[dict], tasks: Sequence[TaskSpec]) -> pd.DataFrame:
    """Per task: its score, and the chance level of that score on the validation and test splits
    (what a predictor ignoring the image can expect; it depends only on the labels)."""
    r = results[0]
    how = {"regression": "R² as is"}
    return pd.DataFrame([{"task": t.name, "kind": t.kind, "score": s, "val_chance": r.get(f"val_{t.name}_chance"),
                          "test_chance": r.get(f"test_{t.name}_chance"),
                          "normalised": how.get(t.kind, "(score − chance) / (1 − chance)")}
                         for t, s in zip(tasks, task_score_names(tasks))])


def make_bench_table(rows: Sequence[dict]) -> pd.DataFrame:
    """The benchmark as timm prints it, plus memory."""
    cols = ["model", "params_m", "gmacs", "batch", "infer_samples_per_s", "infer_step_ms", "train_samples_per_s",
            "train_step_ms", "peak_mem_mb", "model_mem_mb", "oom_batches"]
    return pd.DataFrame([{c: r.get(c) for c in cols} for r in rows])


# ------------------------------------------------------------------------------------------ words
def describe_weights(sources: dict[str, str | None], unknown: Sequence[str]) -> str:
    """Where each backbone's weights come from (`backbones.check_pretrained_files`), one line each."""
    return render(NOTEBOOK, "weights", sources=sources, unknown=list(unknown))


def describe_redundancy(red: pd.DataFrame) -> str:
    """One sentence per task pair of `evaluate_task_redundancy`: how much one task repeats the other."""
    return render(NOTEBOOK, "redundancy", pairs=red.to_dict("records"))


def describe_resolution(results: Sequence[dict]) -> str:
    """What the chosen image size does to each backbone (one line each; handicapped ones named)."""
    # One line per backbone: an ensemble's note repeats its members' clauses.
    notes = dict.fromkeys(c for r in results if r.get("resolution_note") for c in r["resolution_note"].split(" | "))
    hand = sorted({r["model"] for r in results if r.get("resolution_handicap")})
    return render(NOTEBOOK, "resolution", notes=list(notes), handicapped=hand)


def _interval_bounds(t: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The widest interval each model has (bootstrap over images; over seeds where re-trained)."""
    lo = t["combined_ci_low"].to_numpy(float)
    hi = t["combined_ci_high"].to_numpy(float)
    if "seed_ci_low" in t:
        lo = np.fmin(lo, t["seed_ci_low"].to_numpy(float))
        hi = np.fmax(hi, t["seed_ci_high"].to_numpy(float))
    return lo, hi


def _above(table: pd.DataFrame) -> pd.Series:
    return table["above_chance"].fillna(False).astype(bool)


def describe_chance(table: pd.DataFrame) -> str:
    """Which models are above chance (every interval of their chance-normalised validation combined
    lies above 0), at chance or below it, with the numbers; and the tasks still at chance."""
    lo, hi = _interval_bounds(table)
    models = [{"model": str(r["model"]), "mean": float(r["combined_mean"]), "low": lo[i], "high": hi[i],
               "where": "above" if a else ("below" if hi[i] < 0 else "at")}
              for i, ((_, r), a) in enumerate(zip(table.iterrows(), _above(table)))]
    weak = [{"model": str(r["model"]), "tasks": [dict(zip(("task", "score", "low", "high"), t))
                                                 for t in tasks_at_chance(r)]} for _, r in table.iterrows()]
    return render(NOTEBOOK, "chance", models=models, weak=[w for w in weak if w["tasks"]])


def describe_pareto_ranking(table: pd.DataFrame) -> str:
    """The Pareto front of score against training time among the above-chance models, who it dominates, and who
    is left out and why."""
    def point(r) -> dict:
        return {"model": str(r["model"]), "score": float(r["combined_mean"]), "seconds": float(r["train_s_per_1k"])}

    ranked = table[table["pareto_front"].eq(True)].sort_values("combined_mean", ascending=False)
    return render(NOTEBOOK, "pareto", front=[point(r) for _, r in ranked.iterrows()],
                  dominated=[point(r) for _, r in table[table["pareto_front"].eq(False)].iterrows()],
                  not_above=[str(m) for m, a in zip(table["model"], _above(table)) if not a],
                  on_task=[(str(r["model"]), r["tasks_at_chance"]) for (_, r), a in zip(table.iterrows(), _above(table))
                           if a and r.get("tasks_at_chance")])


def describe_seeds(summary: dict, n_val: int, epochs: int) -> str:
    """The ranking statement from the seed runs (`backbones.summarize_seeds`): the best model's mean, sd and
    interval over seeds, and whether it is separated from the runner-up on the test split."""
    p = summary.get("best_minus_runner_up_p")
    return render(NOTEBOOK, "seeds", s=summary, n_val=n_val, epochs=epochs,
                  p_text=format_p(p) if p is not None else "p n/a")


def describe_winners(best: dict) -> str:
    """The lowest-loss, fastest and best single-run models and the Pareto front (`backbones.summarize_comparison`)."""
    return render(NOTEBOOK, "winners", best=best)


def describe_steps() -> str:
    """What one timed training step holds here and in the CPU reference figures (they are unlike steps)."""
    return render(NOTEBOOK, "steps", workbook_step=WORKBOOK_STEP, reference_step=REFERENCE_STEP)


def describe_answer(seed_summary: dict, table: pd.DataFrame) -> str:
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
    return render_answer(NOTEBOOK, best=best, front=front_names(table), at_chance=weak, handicapped=hand)


def _interval_text(lo: float, hi: float) -> str:
    return f"{lo:.3f} to {hi:.3f}" if np.isfinite(lo) and np.isfinite(hi) else "no interval"


def make_answer_headline(seed_summary: dict, best: dict) -> dict[str, Any]:
    """The answer's headline numbers: the best backbone over seeds, its validation mean and interval, its test
    figure over the seeds that did not select it, and the Pareto front of score against training time."""
    s = seed_summary
    out: dict[str, Any] = {"best backbone (over seeds)": s.get("best_model")}
    if s.get("best_model"):
        out["its mean validation combined (chance-normalised)"] = round(s["best_model_mean"], 4)
        out["95% interval over seeds"] = (f"{_interval_text(s['best_model_ci_low'], s['best_model_ci_high'])}"
                                          f" ({s['best_model_seeds']} seeds)")
        fresh = s["best_model_test_fresh_mean"]
        out["its test combined over the seeds that did not select it"] = (
            round(fresh, 4) if np.isfinite(fresh) else None)
        out["test 95% interval over those seeds"] = _interval_text(s["best_model_test_fresh_ci_low"],
                                                                   s["best_model_test_fresh_ci_high"])
    out["Pareto front, score vs training time (above chance only)"] = ", ".join(best.get("pareto_front") or []) or None
    return out


# ------------------------------------------------------------------------ claims against references
def _params_row(name: str, r) -> dict | None:
    """Parameter count (backbone + a 1000-class head, as timm counts) vs timm's results CSV."""
    base = base_name(name)
    if base not in TIMM_REFERENCE or not pd.notna(r.get("backbone_params_m")):
        return None
    nf = _int_or(r.get("num_features"), 0)
    meas = float(r["backbone_params_m"]) + (nf * 1000 + 1000) / 1e6 if nf else float("nan")
    ref = TIMM_REFERENCE[base][0]
    return {"model": name, "what": "params (M) with a 1000-class head", "source": "timm results CSV",
            "claimed": ref, "measured": meas,
            "verdict": "matches" if abs(meas - ref) / ref < 0.01 else f"differs by {meas - ref:+.2f} M"}


def _cpu_speed_row(name: str, r, img_size: int) -> dict | None:
    """Benchmark training img/s vs the 2-core CPU reference: a ratio of unlike steps, labelled so."""
    key = (base_name(name), img_size)
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
    base = base_name(name)
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
        a = next((r for n, r in by.items() if base_name(n) == big), None)
        b = next((r for n, r in by.items() if base_name(n) == small), None)
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


def make_claims_table(table: pd.DataFrame, img_size: int, device: str) -> pd.DataFrame:
    """Reference figures next to what this run measured, with a verdict computed here.

    Rows: parameter count vs timm's results CSV; on CPU, training throughput vs the 2-core
    reference (docs/method.md, M2: batch 8 fp32), which times forward + backward only while this
    workbook times `WORKBOOK_STEP`, so the ratio is labelled as one of unlike steps; on CUDA,
    M2's GPU memory on a 12 GB card; M2's Large-vs-Base and Swin-vs-ConvNeXt expectations.
    A model with no reference gets a row saying so.
    """
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


def _int_or(v, default):
    """``v`` as an int, or ``default`` where it is missing or not a number."""
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


# ------------------------------------------------------------------------------------------ figures
def _handicapped(table: pd.DataFrame) -> np.ndarray:
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


def _log_axis(ax, values: pd.Series) -> None:
    """A log x axis labelled in plain numbers, minor ticks labelled only within a decade."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    span = values.max() / max(values.min(), 1e-12) if len(values) else 1.0
    ax.xaxis.set_minor_formatter(plain if span < 10 else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)


def plot_pareto(table: pd.DataFrame, ax=None, score: str = "combined_mean", speed: str = "train_samples_per_s"):
    """Validation score (chance-normalised, with its interval) vs benchmark training throughput
    (log x), marker area ~ params; the chance line at 0; hollow markers = not above chance;
    diamonds = fixed-size backbones handicapped at this size; the Pareto front is joined among the
    models above chance overall and on every task only."""
    import matplotlib.pyplot as plt

    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7, 4.4))
    t = table.dropna(subset=[score, speed]).reset_index(drop=True)
    above = t["above_chance"].fillna(False).to_numpy(bool) if "above_chance" in t else np.ones(len(t), bool)
    # The front, like the per-second ranking, takes only models above chance overall AND on every task.
    above = above & np.array([not tasks_at_chance(r) for _, r in t.iterrows()], dtype=bool)
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
    _log_axis(ax, t[speed])
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


def plot_memory(table: pd.DataFrame, ax=None):
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
    first: dict[str, dict] = {}
    for r in results:
        first.setdefault(r["model"], r)
    fig = plot_training_curves({f"{m} (seed {r['seed']})": r["history"] for m, r in first.items()}, ("loss", metric))
    fig.axes[0].set_title("loss: validation (solid), train (dashed)", fontsize=10)
    fig.axes[1].set_title(f"validation {metric}" + (", chance-normalised" if metric == "combined" else ""),
                          fontsize=10)
    fig.axes[1].axhline(0.0, color="k", lw=1, ls=":")
    return fig
