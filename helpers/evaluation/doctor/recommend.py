"""Ranked recommendations: one small rule per remedy, each mapped to M4's parameter changes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from helpers.evaluation.doctor.history import NOTE004_BASELINE
from helpers.evaluation.doctor.learning import describe_learning_curve
from helpers.evaluation.doctor.results import Diagnosis, Finding, Recommendation


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class _Advice:
    """The ranked list being built, and the settings its values are computed from."""
    diag: Diagnosis
    base: dict[str, Any]                # M4's baseline overlaid with this run's settings
    given: dict[str, Any]               # this run's own settings
    found: dict[str, Finding]           # the findings by kind
    ceiling: float | None = None        # the best achievable score, when known
    recs: list[Recommendation] = field(default_factory=list)
    config_given: bool = False          # a run config came with the history (else: a foreign log)

    def add(self, name: str, plan: str, params: dict[str, Any], reason: str) -> None:
        """Append a change stated as "key old → new" (the first recommendation of a name wins)."""
        if any(r.name == name for r in self.recs):
            return
        change = ", ".join(self.change(k, v) for k, v in params.items())
        if self.config_given and any(k not in self.given for k in params):
            change += " (M4's values; this run's own are unknown: scale them the same way)"
        self.recs.append(Recommendation(change, reason, params, plan, name))

    def change(self, key: str, new: Any) -> str:
        """"key old → new" from this run's value; for a foreign log without the value, the factor M4's rule
        applies ("epochs ×1.5 (not in the log)"), never M4's own numbers as if they were this run's."""
        if key in self.given or self.config_given:
            return f"{key} {_fmt(self.base.get(key, '?'))} → {_fmt(new)}"
        if key == "cosine_eta_min" and "lr" in self.given:
            return f"cosine_eta_min → {_fmt(new)} (a tenth of the logged lr)"
        if key == "dropout":                    # a target rate, not a factor of an unknown one
            return f"dropout → {_fmt(new)} (not in the log)"
        old = NOTE004_BASELINE.get(key)
        if isinstance(old, (int, float)) and isinstance(new, (int, float)) and old:
            return f"{key} ×{new / old:.3g} (not in the log)"
        return f"{key} → {_fmt(new)}"

    def capacity(self) -> dict[str, Any]:
        """M4 plan B: width and depth ×1.5 (width a multiple of nhead), feed-forward 4·d_model."""
        base = self.base
        nhead = int(base.get("nhead", 8))
        d = int(round(base["d_model"] * 1.5 / nhead)) * nhead
        return {"d_model": d, "num_layers": int(math.ceil(base["num_layers"] * 1.5)),
                "dim_feedforward": 4 * d, "dropout": max(0.2, float(base["dropout"]))}

    def schedule(self) -> dict[str, Any]:
        """M4 plan C: warm-up ×2, epochs ×1.5, eta_min at least lr/10."""
        base = self.base
        return {"warmup_epochs": int(max(2 * base["warmup_epochs"], 1)),
                "epochs": int(math.ceil(base["epochs"] * 1.5)),
                "cosine_eta_min": max(float(base["cosine_eta_min"]), float(base["lr"]) / 10)}


def _start(diag: Diagnosis, config: dict[str, Any] | None, ceiling: float | None) -> _Advice:
    given = {k: v for k, v in (config or {}).items() if v is not None}
    # The history's own values: its peak learning rate before any divergence, the epochs it ran.
    for key, col in (("lr", "lr_logged_peak"), ("lr", "lr_peak"), ("epochs", "epochs_logged")):
        if key not in given and isinstance(diag.summary.get(col), (int, float)):
            given[key] = diag.summary[col]
    base = dict(NOTE004_BASELINE)
    base.update(given)
    return _Advice(diag, base, given, {x.kind: x for x in diag.findings}, ceiling, config_given=bool(config))


def _lower_lr(a: _Advice) -> None:
    if "divergence" not in a.found:
        return
    lr = a.base["lr"]
    step = (f"lr {_fmt(lr)} → {_fmt(float(f'{lr / 10:.3g}'))}" if "lr" in a.given
            else "lr ×0.1 (the log has no learning rate: a tenth of the run's own)")
    a.recs.append(Recommendation(
        f"{step}, max_grad_norm 1.0, check inputs for NaN",
        f"divergence: {a.found['divergence'].message}", {"lr": lr / 10, "max_grad_norm": 1.0},
        "stability", "lower_lr"))


def _monitor_a_loss(a: _Advice) -> None:
    f = a.found.get("saturated_monitor")
    if f is None:
        return
    a.recs.append(Recommendation(
        f"monitor val_loss (or a larger, harder holdout) instead of {a.diag.metric} for early stopping and "
        "checkpoints", f"saturated_monitor: {f.message}; every epoch at the maximum ties for 'best'",
        {}, "monitoring", "monitor_loss"))


def _longer_schedule(a: _Advice) -> None:
    f = a.found.get("schedule_ended")
    if f is not None:
        a.add("longer_schedule", "C", a.schedule(),
              f"schedule_ended: {f.message}; M4 plan C keeps a longer high-LR phase and a higher floor "
              "(train longer or keep the rate up before adding capacity)")


def _learning_curve(a: _Advice) -> dict[str, Any] | None:
    return a.diag.summary.get("learning_curve")


def _more_data_measured(a: _Advice) -> None:
    """Ranks high when a learning-curve probe shows the score still rising with data."""
    lc = _learning_curve(a)
    if lc is None or not lc["rises"]:
        return
    a.recs.append(Recommendation(
        "more training data (2× the training set, same settings)",
        describe_learning_curve(lc), {"train_data_factor": 2.0}, "data", "more_data",
        "evidence"))


def _more_data_candidate(a: _Advice) -> None:
    """Without a probe, more data stays a candidate for a stalled or overfitting curve."""
    stalled = any(k in a.found for k in ("plateau", "overfitting", "underfitting", "schedule_ended"))
    if _learning_curve(a) is not None or not stalled:
        return
    a.recs.append(Recommendation(
        "more training data (candidate: train the same model on ½ and ¼ of the data first; if the score "
        "still rises from ½ to all, more data will likely help)",
        "no learning-curve probe was given, so whether the data size limits this curve is untested",
        {"train_data_factor": 2.0}, "data", "more_data", "candidate"))


def _regularise(a: _Advice) -> None:
    if "overfitting" in a.found:
        a.add("regularise", "M4 §2 option 1",
              {"dropout": round(max(0.2, float(a.base["dropout"]) + 0.05), 3),
               # x2, and at least 1e-4: doubling a weight decay of 0 changes nothing
               "weight_decay": max(float(a.base["weight_decay"]) * 2, 1e-4)},
              f"overfitting: {a.found['overfitting'].message}")


def _calmer_steps(a: _Advice) -> None:
    if "oscillation" in a.found:
        a.add("calmer_steps", "M4 §4", {"lr": a.base["lr"] / 3, "batch_size": int(a.base["batch_size"]) * 2},
              f"oscillation: {a.found['oscillation'].message}; a smaller LR and a larger batch (steadier gradients)")


def _linear_warmup(a: _Advice) -> None:
    if "warmup_not_linear" in a.found:
        a.add("linear_warmup", "C", {"warmup_epochs": int(max(2 * a.base["warmup_epochs"], 1)),
                                     "warmup_lr": 1e-6},
              f"warmup_not_linear: {a.found['warmup_not_linear'].message}; M4: warm-up must be linear")


def _plateau_to_fix(a: _Advice) -> Finding | None:
    """The plateau finding unless it is at the ceiling (then there is nothing to fix)."""
    pl = a.found.get("plateau") or a.found.get("underfitting")      # underfitting carries its plateau's evidence
    return None if pl is None or pl.evidence.get("at_ceiling") else pl


def _plateau_plans(a: _Advice) -> None:
    """M4's plans A (loss weights), B (capacity), C (longer cosine) for a plateau."""
    pl = _plateau_to_fix(a)
    if pl is None:
        return
    below = pl.evidence.get("gap_to_ceiling")
    tail = f" and is {below:.3g} below the best achievable" if isinstance(below, (int, float)) else ""
    lvl = f"{a.diag.metric} stalled at {pl.evidence['level']:.4g} from epoch {pl.epoch}{tail}"
    ratio = a.diag.summary.get("overfit_ratio")
    ratio_txt = f"; val/train ratio {ratio:.3g}" if isinstance(ratio, (int, float)) else ""
    b_reason = (f"plateau: {lvl}{ratio_txt}; M4's rule: still stalled after 20 epochs → more "
                "capacity (plan B)")
    if "underfitting" in a.found:
        b_reason = f"underfitting: {a.found['underfitting'].message}; {b_reason}"
    # Ranking: with evidence of underfitting, capacity first; otherwise M4's order A, B, C.
    plans = {"A": lambda: _plan_a(a, f"plateau: {lvl}"), "B": lambda: _plan_b(a, b_reason),
             "C": lambda: _plan_c(a, lvl)}
    for plan in (["B", "A", "C"] if "underfitting" in a.found else ["A", "B", "C"]):
        plans[plan]()


def _gap_plans(a: _Advice) -> None:
    """When the schedule ran out below a known ceiling: plans A and B come after the longer schedule."""
    f, gap = a.found.get("schedule_ended"), _gap_to_ceiling(a)
    if f is None or gap is None or gap <= float(a.diag.summary.get("noise_tolerance") or 0.0):
        return
    lvl = f"{a.diag.metric} is {gap:.3g} below the best achievable"
    _plan_a(a, f"schedule_ended: {lvl}; once the schedule no longer limits it")
    _plan_b(a, f"{lvl}; once the schedule no longer limits it, M4 plan B (more capacity)")


def _gap_to_ceiling(a: _Advice) -> float | None:
    best, ceiling = a.diag.summary.get("best"), a.ceiling
    if not isinstance(best, (int, float)) or ceiling is None or not math.isfinite(ceiling):
        return None
    return (ceiling - best) if a.diag.greater_is_better else (best - ceiling)


def _plan_a(a: _Advice, why: str) -> None:
    # Only where the loss mixes MSE and cosine: a cosine score or a config with mse_weight.
    if float(a.base.get("mse_weight", 0.2)) > 0.1 and ("cos" in a.diag.metric.lower() or "mse_weight" in a.given):
        a.add("loss_weights", "A", {"mse_weight": 0.1, "cosine_weight": 0.9},
              f"{why}; the score is cosine similarity but the loss gives MSE weight "
              f"{_fmt(a.base.get('mse_weight'))}; M4 plan A (first to try: cheapest)")


def _plan_b(a: _Advice, reason: str) -> None:
    if "d_model" in a.given or not a.given and "cos" in a.diag.metric.lower():
        a.add("capacity", "B", a.capacity(), reason)
    elif not any(r.name == "capacity" for r in a.recs):   # not a transformer config: M4's rule as factors
        a.recs.append(Recommendation(
            "more capacity: width ×1.5, depth ×1.5, dropout 0.2 (M4 plan B: d_model 512 → 768, "
            "num_layers 4 → 6, dim_feedforward 3072)", reason, a.capacity(), "B", "capacity"))


def _plan_c(a: _Advice, lvl: str) -> None:
    # Only when the cosine floor is low or the LR had already decayed when the curve stalled.
    base = a.base
    lr_frac = a.diag.summary.get("lr_at_plateau_fraction")
    decayed = isinstance(lr_frac, float) and lr_frac < 0.5
    if float(base["cosine_eta_min"]) < float(base["lr"]) / 10 or decayed:
        a.add("longer_cosine", "C", a.schedule(),
              f"plateau: {lvl}; eta_min {_fmt(base['cosine_eta_min'])} is below lr/10 "
              f"({_fmt(base['lr'] / 10)}): M4 plan C (longer cosine, warm-up 10, "
              "eta_min 1e-5)" + (f"; the LR was already down to {100 * lr_frac:.0f}% of its peak when it "
                                 "stalled" if decayed else ""))


def _less_regularisation(a: _Advice) -> None:
    ratio = a.diag.summary.get("overfit_ratio")
    if isinstance(ratio, (int, float)) and ratio < 1.2 and "overfitting" not in a.found \
            and _plateau_to_fix(a) is not None:
        a.add("less_regularisation", "M4 §2 rule",
              {"dropout": round(max(0.0, float(a.base["dropout"]) - 0.05), 3),
               "weight_decay": float(a.base["weight_decay"]) / 2},
              f"val/train loss ratio {ratio:.3g} < 1.2: M4 — regularisation can be reduced")


def _early_stopping(a: _Advice) -> None:
    es = a.diag.rules.get("early_stopping", {})
    if es.get("verdict") == "too eager" and not {"schedule_ended", "divergence"} & set(a.found):
        a.add("more_epochs", "C", {"epochs": int(math.ceil(a.base["epochs"] * 1.5))},
              f"early stopping too eager: {es['note']}")
    elif es.get("verdict") == "too lax":
        a.recs.append(Recommendation(
            f"early_stopping_patience {es['patience']}, early_stopping_min_delta {es['min_delta']:g} "
            "(M4's early stopping)", f"early stopping too lax: {es['note']}",
            {"early_stopping_patience": es["patience"], "early_stopping_min_delta": es["min_delta"]},
            "M4 early stopping", "early_stopping"))


def _judge_against_noise(a: _Advice) -> None:
    f = a.found.get("noise")
    if f is None:
        return
    tol = f.evidence["noise_tolerance"]
    a.recs.append(Recommendation(
        f"judge changes against the noise: a validation split 4× larger (its noise halves), early-stopping "
        f"min_delta ≥ {tol:.2g} with a patience of several epochs, or average the last epochs before comparing runs",
        f"noise: {f.message}", {"validation_size_factor": 4.0}, "monitoring", "judge_against_noise"))


def _train_longer(a: _Advice) -> None:
    # Only when nothing else is advised for a healthy curve that still improves.
    imp = a.diag.summary.get("still_improving_per_epoch")
    if "healthy" in a.found and not a.recs and a.diag.summary.get("still_improving"):
        a.add("more_epochs", "C", {"epochs": int(math.ceil(a.base["epochs"] * 1.5))},
              f"healthy and still improving ({imp:+.2g}/epoch at the end): train longer")


def _too_short(a: _Advice) -> None:
    if "too_short" in a.found:
        a.recs.append(Recommendation("train longer before judging", a.found["too_short"].message, {}, "",
                                     "too_short"))


# Most promising first: a remedy for a cause before one for the symptom it explains; measured evidence
# for more data ranks right after the schedule, an untested "more data" comes after the model changes.
_REMEDIES = (_lower_lr, _monitor_a_loss, _longer_schedule, _more_data_measured, _regularise, _gap_plans,
             _calmer_steps, _linear_warmup, _plateau_plans, _less_regularisation, _early_stopping,
             _judge_against_noise, _more_data_candidate, _train_longer, _too_short)


def make_recommendations(diag: Diagnosis, config: dict[str, Any] | None = None,
                         ceiling: float | None = None) -> list[Recommendation]:
    """Ranked recommendations (most promising first) with M4's concrete parameter changes.

    Values are computed from ``config`` (the run's hyperparameters) when given, else from note
    004's baseline: loss weights → 0.1/0.9; capacity d_model ×1.5, layers ×1.5, feed-forward
    4·d_model, dropout 0.2; warm-up ×2, epochs ×1.5, eta_min = lr/10; batch ×2. ``ceiling`` (the
    best achievable score, when known) adds M4's plans A and B after a schedule that ran out below it.
    """
    advice = _start(diag, config, ceiling)
    for remedy in _REMEDIES:
        remedy(advice)
    return advice.recs
