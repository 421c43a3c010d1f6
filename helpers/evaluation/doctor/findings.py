"""One rule per finding kind: each looks at a prepared curve (and the findings already made) and returns a
Finding or None. Thresholds are in units of the curve's own epoch-to-epoch noise (`Measures.late`)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from helpers.evaluation.doctor.curve import (Curve, Divergence, LossRatio, LOW_LR_FRACTION, Measures, rounded)
from helpers.evaluation.doctor.results import Finding
from helpers.evaluation.doctor.rules import estimate_noise, noise_tolerance, smooth, smoothing_rows, trend_slope


# The noise is "material" when one epoch's swing is at least this share of the curve's whole range:
# then it moves the best epoch and what patience-based rules see. 8 % (was 5 %): set on the dev split of
# the public logs, where swings of 5-8 % of the range were not called noise by the labeller.
NOISE_SHARE = 0.08


# A monitor "sits" at its maximum when at least this share of the epochs since it first got there are there.
SATURATED_SHARE = 0.25


def divergence_finding(c: Curve, d: Divergence) -> Finding:
    """NaN/Inf, a loss explosion or return to its start, a score collapsing to its start; the rows from it
    on are not used by any other finding. The message cites each value at the epoch it names."""
    ev = {**d.detail, "findings_use_epochs_up_to": c.epoch_at(d.keep - 1) if d.keep > 0 else None}
    e, x = c.epoch_at(d.row), d.detail
    if d.kind == "nonfinite":
        msg = (f"{d.column} is NaN/Inf (or missing) from epoch {e} on ({x['nonfinite_rows']} of {c.n} rows); "
               f"nothing from epoch {e} on is judged")
    elif d.kind == "collapse":
        chance = (f", chance for {x['classes_if_cross_entropy']:.0f} classes is {x['chance_if_cross_entropy']:.3g}"
                  if "chance_if_cross_entropy" in x else "")
        msg = (f"{d.column} rose from {x['start_value']:.4g} to {x['best']:.4g} at epoch {x['best_epoch']}, then "
               f"collapsed to {x['collapsed_value']:.4g} at epoch {x['collapsed_epoch']} and ends at "
               f"{x['end_value']:.4g}: back at its starting level{chance}; nothing after epoch {e} is judged")
    else:
        how = ("climbed back towards its starting level" if d.kind == "returned" else "exploded")
        msg = (f"{d.column} fell from {x['first_loss']:.4g} to {x['min_loss']:.4g} at epoch {e}, then {how}: "
               f"{x['exploded_loss']:.4g} at epoch {x['exploded_epoch']}, ending at {x['end_loss']:.4g}; "
               f"nothing after epoch {e} is judged")
    return Finding("divergence", d.column, e, ev, msg)


def too_short_finding(c: Curve, min_epochs: int) -> Finding | None:
    if c.n >= min_epochs:
        return None
    return Finding("too_short", c.metric, c.epoch_at(c.n - 1), {"rows": c.n, "needed": min_epochs},
                   f"only {c.n} epoch{'s' if c.n != 1 else ''}: at least {min_epochs} are needed to judge a trend")


# A monitor "does not move" when one exact value repeats over at least this many rows and this share of them.
FROZEN_ROWS, FROZEN_SHARE = 5, 0.3
REPEAT_RTOL = 1e-6


def saturated_monitor_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """The judged score sits at its natural maximum (accuracy 1.0 / 100 %) on several epochs, or one exact
    value repeats over many epochs (the monitor does not move): every such epoch ties for "best", so early
    stopping and checkpointing on it choose by accident."""
    top = m.top
    at = np.flatnonzero(np.isfinite(c.y) & (c.y >= top * (1 - 1e-9))) if top is not None else np.zeros(0, int)
    if len(at) < 2 or len(at) / (c.n - at[0]) < SATURATED_SHARE:
        frozen = _longest_repeat(c.y)
        if frozen is not None and frozen[1] >= max(FROZEN_ROWS, FROZEN_SHARE * c.n) and _loss_moves(c, *frozen):
            i, k = frozen
            return Finding("saturated_monitor", c.metric, c.epoch_at(i),
                           {"value": rounded(c.y[i]), "first_epoch": c.epoch_at(i), "epochs_unchanged": int(k), "rows": c.n},
                           f"{c.metric} stays at {c.y[i]:.6g} on {k} consecutive epochs from epoch {c.epoch_at(i)} "
                           "(the monitor does not move): the stopping signal carries no information")
        return None
    first = c.epoch_at(int(at[0]))
    return Finding("saturated_monitor", c.metric, first,
                   {"maximum": top, "first_epoch_at_maximum": first, "epochs_at_maximum": int(len(at)),
                    "epochs_since_first": int(c.n - at[0])},
                   f"{c.metric} reaches its maximum {top:g} at epoch {first} and is there on {len(at)} of the "
                   f"{c.n - at[0]} epochs since: the stopping signal carries no information")


def _loss_moves(c: Curve, i: int, k: int) -> bool:
    """The training loss (else the validation loss) changes beyond its noise over rows [i, i+k): the model
    moves while the monitor does not. A run whose losses are flat too learns nothing -- not a monitor issue."""
    arr = c.train_loss if c.train_loss is not None else c.val_loss
    if arr is None:
        return True
    seg = arr[i:i + k]
    seg = seg[np.isfinite(seg)]
    if len(seg) < 3:
        return False
    return float(np.max(seg) - np.min(seg)) > max(4.0 * estimate_noise(seg), 0.02 * float(np.max(np.abs(seg))))


def _longest_repeat(y: np.ndarray) -> tuple[int, int] | None:
    """(first row, length) of the longest run of one finite value, vectorised; values within `REPEAT_RTOL` of
    the previous one count as the same (float32 rounding: 0.9866071343 and 0.9866071939 are one value)."""
    if len(y) < 2:
        return None
    fin = y[np.isfinite(y)]
    tol = REPEAT_RTOL * (float(np.max(np.abs(fin))) if len(fin) else 0.0)
    change = np.concatenate([[True], ~(np.abs(y[1:] - y[:-1]) <= tol)])
    starts = np.flatnonzero(change)
    lengths = np.diff(np.concatenate([starts, [len(y)]]))
    k = int(np.argmax(lengths))
    return (int(starts[k]), int(lengths[k])) if np.isfinite(y[starts[k]]) else None


def overfitting_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """val_loss rises from its minimum beyond its noise while train_loss keeps falling beyond its own, or
    the val/train loss ratio is above M4's 1.5 and still widening beyond the ratio's noise."""
    r = m.ratio
    if r is None:
        return None
    rising, widening = _val_rising(c, r), _gap_widening(c, r)
    if not (rising or widening):
        return None
    why = []
    if rising:
        why.append(f"val_loss rose {r.val_rise:.3g} from its minimum at epoch {c.epoch_at(r.val_min_i)} "
                   f"(noise tolerance {r.val_tol:.2g}) while train_loss fell {r.train_drop:.3g} more")
    if widening:
        why.append(f"val/train loss ratio {r.late:.3g} > 1.5 (M4's threshold) and widening from "
                   f"{r.mid:.3g} mid-run")
    return Finding("overfitting", "val_loss/train_loss", c.epoch_at(r.val_min_i), _ratio_evidence(c, r),
                   "; ".join(why))


# A validation loss "rises" when it climbs at least this share of its minimum (and beyond its noise): a rise of
# a fraction of a percent is the loss sitting flat, not a model starting to memorise; a widening gap needs the
# validation loss to have turned up at least `WIDENING_RISE_SHARE` of its minimum.
VAL_RISE_SHARE, WIDENING_RISE_SHARE = 0.03, 0.01


def _val_rising(c: Curve, r: LossRatio) -> bool:
    return (r.val_min_i <= c.n - 1 - max(2, c.window // 2) and r.val_rise > r.val_tol and r.train_drop > r.train_tol
            and r.val_rise >= VAL_RISE_SHARE * abs(c.val_loss[r.val_min_i]))


def _gap_widening(c: Curve, r: LossRatio) -> bool:
    return (r.late > 1.5 and r.late - r.mid > noise_tolerance(r.noise, c.window, 0.0)
            and r.val_rise >= WIDENING_RISE_SHARE * abs(c.val_loss[r.val_min_i]))


def _ratio_evidence(c: Curve, r: LossRatio) -> dict[str, Any]:
    return {"ratio_first": rounded(r.first), "ratio_mid": rounded(r.mid), "ratio_end": rounded(r.late),
            "ratio_slope_per_epoch": rounded(r.slope), "val_loss_min": rounded(c.val_loss[r.val_min_i]),
            "val_loss_min_epoch": c.epoch_at(r.val_min_i), "val_loss_end": rounded(r.val_end),
            "val_loss_rise": rounded(r.val_rise), "val_loss_noise_tolerance": rounded(r.val_tol),
            "train_loss_end": rounded(r.train_end)}


def schedule_ended_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """The learning rate decayed to <= 25 % of its peak and the score still made new bests beyond its
    noise after that: it still improves at the end, or froze only once the rate had run out (unless
    overfitting explains a curve that no longer improves). This merges the former ``lr_decayed_early``: same cause
    (too little learning rate left), same remedy (train longer or keep the rate up)."""
    lr, late, pl = m.lr, m.late, m.plateau
    if lr is None or not lr.decayed or lr.low_i is None:
        return None
    # Improving means new bests: a recovery from a dip after the rate fell is not the schedule's loss.
    gain_low = _gain_after(c, lr.low_i)
    # New bests beyond the noise after the rate fell, or still improving as it reaches its floor: the trend
    # test says so, or the best epoch is among the last rows after a gain of at least one noise step.
    best_at_end = c.best_i is not None and c.best_i >= c.n - max(3, int(0.05 * c.n)) and gain_low > late.noise
    improving = late.improving or best_at_end
    if (gain_low <= late.tol and not improving) or ("overfitting" in found and not improving):
        return None
    froze = pl is not None and not improving
    ev = {"lr_peak": rounded(lr.peak), "lr_final": rounded(lr.final), "final_fraction_of_peak": rounded(lr.final / lr.peak),
          "low_lr_epoch": c.epoch_at(lr.low_i), "gain_after_low_lr": rounded(gain_low), "late_gain": rounded(late.gain),
          "noise": rounded(late.noise), "noise_tolerance": rounded(late.tol), "best": c.best,
          "best_epoch": c.epoch_at(c.best_i), "still_improving_at_end": late.improving,
          "stall_epoch": c.epoch_at(pl["start"]) if froze else None}
    low = (f"the learning rate was below {LOW_LR_FRACTION:.0%} of its peak {lr.peak:.2g} from epoch "
           f"{c.epoch_at(lr.low_i)} (ending at {lr.final:.2g})")
    gained = f"{c.metric} gained {_signed(c, gain_low)} after that (noise tolerance {late.tol:.2g})"
    if froze:
        msg = f"{low}; {gained} and froze only at epoch {c.epoch_at(pl['start'])}: the schedule ran out"
        return Finding("schedule_ended", "lr", c.epoch_at(pl["start"]), ev, msg)
    msg = f"{low}; {gained} and was still improving when the run ended: the schedule ran out before the model did"
    return Finding("schedule_ended", "lr", c.epoch_at(lr.low_i), ev, msg)


def _gain_after(c: Curve, row: int) -> float:
    """How far the smoothed score (up = better) rose above its best so far after ``row``: a recovery to
    an earlier level is not an improvement."""
    up = np.where(np.isfinite(c.y), c.up, np.nan)
    ys = smooth(up, smoothing_rows(c.n))
    if not (np.isfinite(ys[row:]).any() and np.isfinite(ys[:row + 1]).any()):
        return 0.0
    return float(np.nanmax(ys[row:]) - np.nanmax(ys[:row + 1]))


def _signed(c: Curve, gain_up: float) -> str:
    """A gain in the metric's own direction (a loss falls when it improves)."""
    return f"{gain_up if c.gib else -gain_up:+.3g}"


def plateau_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """The score stopped improving beyond its noise while the learning rate was still high (or not logged),
    and neither a saturated monitor nor the schedule explains it."""
    pl, lr = m.plateau, m.lr
    # A stall that a cause already found explains (the schedule, a saturated monitor, overfitting) is not
    # reported again as a plateau.
    if pl is None or {"schedule_ended", "saturated_monitor", "overfitting"} & set(found):
        return None
    frac = lr.at_plateau_fraction if lr is not None else None
    # A stall that starts after the peak with the rate already low is the schedule's doing, not a
    # plateau; during a warm-up the rate is low but rising, so that stall still counts.
    if frac is not None and math.isfinite(frac) and frac <= LOW_LR_FRACTION and pl["start"] > lr.peak_i:
        return None
    ev = {"start_epoch": c.epoch_at(pl["start"]), "flagged_epoch": c.epoch_at(pl["flagged"]),
          "level": rounded(pl["level"]), "best": rounded(pl["best"]), "window_gain": rounded(pl["window_gain"]),
          "tolerance": rounded(pl["tolerance"]), "noise": rounded(pl["noise"]), "window": c.window,
          "epochs_on_plateau": int(c.n - pl["start"]), "lr_fraction_of_peak_at_start": rounded(frac),
          "reduce_lr_first_cut_epoch": m.reduce_lr_first_cut_epoch}
    lr_txt = (f"the learning rate still {100 * frac:.0f}% of its peak" if frac is not None and math.isfinite(frac)
              else "no learning rate logged")
    msg = (f"{c.metric} stopped improving at epoch {ev['start_epoch']} (level {pl['level']:.4g}, best "
           f"{pl['best']:.4g}; the trend over the next {c.window} epochs gains {pl['window_gain']:.2g}, within the "
           f"noise tolerance {pl['tolerance']:.2g}) with {lr_txt}")
    return Finding("plateau", c.metric, ev["start_epoch"], ev, msg + _ceiling_text(c, m, pl, ev))


def _ceiling_text(c: Curve, m: Measures, pl: dict[str, Any], ev: dict[str, Any]) -> str:
    """Adds the gap to a known ceiling to the evidence; the sentence that says it."""
    ceiling = m.ceiling
    if ceiling is None or not math.isfinite(ceiling):
        return ""
    gap = (ceiling - pl["best"]) if c.gib else (pl["best"] - ceiling)
    at_ceiling = gap <= pl["tolerance"]
    ev.update({"ceiling": rounded(ceiling), "gap_to_ceiling": rounded(gap), "ceiling_is_implicit": m.ceiling_is_implicit,
               "fraction_of_ceiling": rounded(pl["best"] / ceiling) if ceiling else None, "at_ceiling": at_ceiling})
    return (f"; the best achievable is {ceiling:.4g}" + (" (the score's maximum)" if m.ceiling_is_implicit else "")
            + (": converged at the ceiling, nothing to fix" if at_ceiling else f", {gap:.3g} away"))


def underfitting_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """A plateau below the ceiling while val/train loss ratio < 1.2 (M4) and train_loss itself has stopped
    falling beyond its noise (and no overfitting)."""
    r, pl = m.ratio, found.get("plateau")
    if r is None or pl is None or "overfitting" in found or not r.late < 1.2 or pl.evidence.get("at_ceiling"):
        return None
    tr = c.train_loss[np.isfinite(c.train_loss)]
    tail = tr[-c.window:]
    drop = -trend_slope(tail)[0] * (len(tail) - 1)
    tol = noise_tolerance(estimate_noise(tr), smoothing_rows(len(tr)), float(np.max(tr) - np.min(tr)))
    fell = 1.0 - float(np.median(tr[-max(2, c.window // 2):])) / float(tr[0]) if tr[0] > 0 else 1.0
    # stopped falling, or barely fell at all (a model stuck near its starting loss: chance)
    if drop > tol and fell > UNDERFIT_FALL:
        return None
    how = (f"train_loss itself has stopped falling ({drop:.2g} over the last {c.window} epochs, tolerance {tol:.2g})"
           if drop <= tol else f"train_loss fell only {100 * fell:.0f}% from its start")
    return Finding("underfitting", c.metric, pl.epoch, {**pl.evidence, **_ratio_evidence(c, r),
                                                        "train_loss_late_drop": rounded(drop),
                                                        "train_loss_noise_tolerance": rounded(tol),
                                                        "train_loss_fall_share": rounded(fell)},
                   f"{c.metric} plateaued while val/train loss ratio is only {r.late:.3g} (< 1.2) and {how}: "
                   "the model does not fit the training data better than held-out data")


# A training loss that fell less than this share of its first value "barely fell".
UNDERFIT_FALL = 0.3


def noise_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """One epoch's swing is a material share of the curve's range and the late changes are inside it."""
    late = m.late
    if late.span <= 0 or late.noise < NOISE_SHARE * late.span or late.improving or late.noise < resolution(c, m):
        return None
    return Finding("noise", c.metric, c.epoch_at(c.n - 1),
                   {"noise": rounded(late.noise), "range": rounded(late.span), "noise_share": rounded(late.noise / late.span),
                    "late_gain": rounded(late.gain), "noise_tolerance": rounded(late.tol)},
                   f"{c.metric} moves by ~{late.noise:.2g} from one epoch to the next ({100 * late.noise / late.span:.0f}% "
                   f"of its whole range {late.span:.3g}) and changed {_signed(c, late.gain)} over the last {c.window} "
                   f"epochs: differences under {late.tol:.2g} (the best epoch, 'stopped improving') are noise")


# Swings below this share of the score's scale (its maximum, else its level) are float rounding, not noise.
RESOLUTION_SHARE = 1e-4


def resolution(c: Curve, m: Measures) -> float:
    """The smallest swing that counts as the metric moving: `RESOLUTION_SHARE` of its scale."""
    fin = c.y[np.isfinite(c.y)]
    scale = m.top if m.top is not None else (float(np.max(np.abs(fin))) if len(fin) else 0.0)
    return RESOLUTION_SHARE * scale


def oscillation_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """Large epoch-to-epoch swings around the trend that keep changing direction (LR too high)."""
    s = m.swings
    if s is None or not (s.amplitude > s.threshold and s.flip_rate > 0.5):
        return None
    return Finding("oscillation", s.column, c.epoch_at(s.start),
                   {"relative_amplitude": rounded(s.amplitude), "threshold": s.threshold,
                    "direction_flip_rate": rounded(s.flip_rate)},
                   f"{s.column} swings by {100 * s.amplitude:.0f}% of its level around its trend "
                   f"and changes direction on {100 * s.flip_rate:.0f}% of epochs")


def warmup_not_linear_finding(c: Curve, m: Measures, found: dict[str, Finding]) -> Finding | None:
    """The LR's warm-up deviates from a straight line by more than 10 % of its range."""
    wu = m.warmup
    if wu is None or not wu.deviation > 0.1:
        return None
    return Finding("warmup_not_linear", "lr", c.epoch_at(0),
                   {"warmup_rows": wu.rows, "max_deviation_from_line": rounded(wu.deviation),
                    "first_step": rounded(wu.steps[0]), "last_step": rounded(wu.steps[-1]),
                    "lr_start": rounded(wu.lr[0]), "lr_end": rounded(wu.lr[-1])},
                   f"the LR rises over {wu.rows} epochs but deviates from a straight line by "
                   f"{100 * wu.deviation:.0f}% of its range (steps {wu.steps[0]:.2g} … {wu.steps[-1]:.2g})")


# The rules that need a history long enough to judge a trend, in the order they run: a later rule can
# see what an earlier one found (a plateau is not called one when the schedule or a saturated monitor
# explains the stall; underfitting needs a plateau).
TREND_RULES = (saturated_monitor_finding, overfitting_finding, schedule_ended_finding, plateau_finding,
               underfitting_finding, oscillation_finding, noise_finding, warmup_not_linear_finding)


def healthy_finding(c: Curve, summary: dict[str, Any]) -> Finding:
    """The finding when no rule fired: where the metric is best and whether it still improves."""
    y, best_i = c.y, c.best_i
    best = f"best {y[best_i]:.4g} at epoch {c.epoch_at(best_i)}" if best_i is not None else "no finite value"
    # a short history's summary has no noise estimate: only the divergence rules ran on it
    short = f"only {c.n} epochs: too few for the trend rules, and no divergence; " if "noise" not in summary else ""
    return Finding("healthy", c.metric, c.epoch_at(best_i),
                   {"best": rounded(y[best_i]) if best_i is not None else None,
                    "best_epoch": c.epoch_at(best_i),
                    "still_improving_per_epoch": summary.get("still_improving_per_epoch"),
                    "overfit_ratio": summary.get("overfit_ratio")},
                   f"{short}no plateau, divergence or overfitting in {c.metric}; {best}")
