"""One rule per finding kind: each looks at a prepared curve and returns a Finding or None."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from helpers.evaluation.doctor.curve import Curve, LossRatio, Measures, rounded, tail_median
from helpers.evaluation.doctor.results import Finding


def divergence_finding(c: Curve) -> Finding | None:
    """Non-finite losses or metric, else a training loss that ends above where it started."""
    return _nonfinite(c) or _rising_train_loss(c)


def _nonfinite(c: Curve) -> Finding | None:
    for col, arr in (("train_loss", c.train_loss), ("val_loss", c.val_loss), (c.metric, c.y)):
        if arr is not None and not np.isfinite(arr).all():
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            bad = int((~np.isfinite(arr)).sum())
            return Finding("divergence", col, c.epoch_at(i),
                           {"first_nonfinite_epoch": c.epoch_at(i), "nonfinite_rows": bad, "rows": c.n},
                           f"{col} is NaN/Inf from epoch {c.epoch_at(i)} on ({bad} of {c.n} rows)")
    return None


def _rising_train_loss(c: Curve) -> Finding | None:
    tr = c.train_loss
    if tr is None or c.n < 4:
        return None
    tmin_i = int(np.nanargmin(tr))
    end = tail_median(tr, max(2, c.window // 2))
    if not (tmin_i < c.n - 2 and end > max(tr[0], 2.0 * tr[tmin_i])):
        return None
    return Finding("divergence", "train_loss", c.epoch_at(tmin_i),
                   {"min_train_loss": rounded(tr[tmin_i]), "min_epoch": c.epoch_at(tmin_i),
                    "end_train_loss": rounded(end), "first_train_loss": rounded(tr[0])},
                   f"train_loss fell to {tr[tmin_i]:.4g} at epoch {c.epoch_at(tmin_i)}, "
                   f"then climbed to {end:.4g} (above its start {tr[0]:.4g})")


def too_short_finding(c: Curve, min_epochs: int) -> Finding | None:
    if c.n >= min_epochs:
        return None
    return Finding("too_short", c.metric, c.epoch_at(c.n - 1), {"rows": c.n, "needed": min_epochs},
                   f"only {c.n} epochs: at least {min_epochs} are needed to judge a trend")


def plateau_finding(c: Curve, m: Measures) -> Finding | None:
    """Where the metric's trend test says it stopped improving, judged against the ceiling if known."""
    pl, w, ceiling = m.plateau, c.window, m.ceiling
    if pl is None:
        return None
    ev = {"start_epoch": c.epoch_at(pl["start"]), "flagged_epoch": c.epoch_at(pl["flagged"]),
          "level": rounded(pl["level"]), "best": rounded(pl["best"]),
          "window_gain": rounded(pl["window_gain"]), "tolerance": rounded(pl["tolerance"]),
          "window": w, "epochs_on_plateau": int(c.n - pl["start"]),
          "reduce_lr_first_cut_epoch": m.reduce_lr_first_cut_epoch}
    msg = (f"{c.metric} stopped improving at epoch {ev['start_epoch']} (level {pl['level']:.4g}, best "
           f"{pl['best']:.4g}); the trend over the next {w} epochs gains {pl['window_gain']:.2g}, "
           f"less than the tolerance {pl['tolerance']:.2g}")
    if ceiling is not None and math.isfinite(ceiling):
        gap = (ceiling - pl["best"]) if c.gib else (pl["best"] - ceiling)
        ev.update({"ceiling": rounded(ceiling), "gap_to_ceiling": rounded(gap),
                   "fraction_of_ceiling": rounded(pl["best"] / ceiling) if ceiling else None})
        at_ceiling = gap <= 0.01 * abs(ceiling)
        ev.update({"ceiling_is_implicit": m.ceiling_is_implicit, "at_ceiling": at_ceiling})
        msg += (f"; the best achievable is {ceiling:.4g}" + (" (the score's maximum)" if m.ceiling_is_implicit else "")
                + (": converged at the ceiling, nothing to fix" if at_ceiling else f", {gap:.3g} away"))
    return Finding("plateau", c.metric, ev["start_epoch"], ev, msg)


# M4's val/train loss ratio: > 1.5 overfitting, < 1.2 room to fit more, ≈ 1.4 its baseline.
def _ratio_too_high(r: LossRatio) -> bool:
    return r.late > 1.5


def _val_rising(c: Curve, r: LossRatio) -> bool:
    """val_loss rose > 10 % from a minimum a window before the end while train_loss kept falling."""
    return r.val_min_i < c.n - c.window and r.val_rise > 0.10 and r.train_end < c.train_loss[r.val_min_i]


def _ratio_evidence(c: Curve, r: LossRatio) -> dict[str, Any]:
    return {"ratio_first": rounded(r.first), "ratio_mid": rounded(r.mid), "ratio_end": rounded(r.late),
            "ratio_slope_per_epoch": rounded(r.slope), "val_loss_min": rounded(c.val_loss[r.val_min_i]),
            "val_loss_min_epoch": c.epoch_at(r.val_min_i), "val_loss_end": rounded(r.val_end),
            "val_loss_rise": rounded(r.val_rise), "train_loss_end": rounded(r.train_end)}


def overfitting_finding(c: Curve, m: Measures) -> Finding | None:
    r = m.ratio
    if r is None or not (_ratio_too_high(r) or _val_rising(c, r)):
        return None
    why = []
    if _ratio_too_high(r):
        why.append(f"val/train loss ratio {r.late:.3g} > 1.5 (M4's threshold)")
    if _val_rising(c, r):
        why.append(f"val_loss rose {100 * r.val_rise:.0f}% from its minimum at epoch "
                   f"{c.epoch_at(r.val_min_i)} while train_loss kept falling")
    return Finding("overfitting", "val_loss/train_loss", c.epoch_at(r.val_min_i), _ratio_evidence(c, r),
                   "; ".join(why) + f" (ratio trend {r.slope:+.3g}/epoch)")


def underfitting_finding(c: Curve, m: Measures) -> Finding | None:
    """A plateau below the ceiling while val/train loss ratio < 1.2 (and no overfitting)."""
    r, pl, ceiling = m.ratio, m.plateau, m.ceiling
    if r is None or _ratio_too_high(r) or _val_rising(c, r) or pl is None or not r.late < 1.2:
        return None
    gap_ok = ceiling is None or not math.isfinite(ceiling) or \
        ((ceiling - pl["best"]) if c.gib else (pl["best"] - ceiling)) > 0.02 * abs(ceiling)
    if not gap_ok:
        return None
    return Finding("underfitting", c.metric, c.epoch_at(pl["start"]), _ratio_evidence(c, r),
                   f"{c.metric} plateaued while val/train loss ratio is only {r.late:.3g} (< 1.2): "
                   "the model does not even fit the training data better than held-out data")


def oscillation_finding(c: Curve, m: Measures) -> Finding | None:
    """Large epoch-to-epoch swings around the trend that keep changing direction (LR too high)."""
    s = m.swings
    if s is None or not (s.amplitude > s.threshold and s.flip_rate > 0.5):
        return None
    return Finding("oscillation", s.column, c.epoch_at(s.start),
                   {"relative_amplitude": rounded(s.amplitude), "threshold": s.threshold,
                    "direction_flip_rate": rounded(s.flip_rate)},
                   f"{s.column} swings by {100 * s.amplitude:.0f}% of its level around its trend "
                   f"and changes direction on {100 * s.flip_rate:.0f}% of epochs")


def warmup_not_linear_finding(c: Curve, m: Measures) -> Finding | None:
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


def lr_decayed_early_finding(c: Curve, m: Measures) -> Finding | None:
    """The plateau starts after the LR's peak with the LR already at ≤ 20 % of it."""
    lr, pl = m.lr, m.plateau
    if lr is None or pl is None or not (pl["start"] > lr.peak_i and lr.at_plateau_fraction <= 0.2):
        return None
    frac, start = lr.at_plateau_fraction, c.epoch_at(pl["start"])
    return Finding("lr_decayed_early", "lr", start,
                   {"lr_at_plateau": rounded(lr.at_plateau), "lr_peak": rounded(lr.peak),
                    "fraction_of_peak": rounded(frac), "lr_final": rounded(lr.final),
                    "final_fraction_of_peak": rounded(lr.final / lr.peak),
                    "plateau_start_epoch": start, "rows": c.n},
                   f"when {c.metric} stalled (epoch {start}) the LR was already "
                   f"{lr.at_plateau:.2g}, {100 * frac:.0f}% of its peak {lr.peak:.2g}; it ends at "
                   f"{lr.final:.2g} ({100 * lr.final / lr.peak:.1g}% of peak)")


# The rules that need a history long enough to judge a trend, in the order they are reported
# before sorting by severity.
TREND_RULES = (plateau_finding, overfitting_finding, underfitting_finding, oscillation_finding,
               warmup_not_linear_finding, lr_decayed_early_finding)


def healthy_finding(c: Curve, summary: dict[str, Any]) -> Finding:
    """The finding when no rule fired: where the metric is best and whether it still improves."""
    y, best_i = c.y, c.best_i
    return Finding("healthy", c.metric, c.epoch_at(best_i),
                   {"best": rounded(y[best_i]) if best_i is not None else None,
                    "best_epoch": c.epoch_at(best_i),
                    "still_improving_per_epoch": summary.get("still_improving_per_epoch"),
                    "overfit_ratio": summary.get("overfit_ratio")},
                   f"no plateau, divergence, oscillation or overfitting in {c.metric}; "
                   f"best {y[best_i]:.4g} at epoch {c.epoch_at(best_i)}")
