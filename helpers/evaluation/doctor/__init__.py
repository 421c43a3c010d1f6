"""The training-curve doctor: why a curve stalls and what to change (notebook 07, `python -m helpers diagnose`).

Input: any per-epoch training history (the workbook's ``history.json``, a Keras CSVLogger file, a
timm ``summary.csv``, a list of dicts). Output: a `Diagnosis` with

- findings, each with numeric evidence: ``plateau``, ``overfitting``, ``underfitting``,
  ``divergence``, ``oscillation``, ``lr_decayed_early``, ``warmup_not_linear``, ``too_short``,
  ``healthy``;
- ranked recommendations mapped to M4's concrete parameter changes (each with the reason
  drawn from the findings and a ``params`` dict a follow-up run can apply);
- the epochs at which PyTorch ``ReduceLROnPlateau`` (patience 10, threshold 1e-4 rel) and
  Lightning ``EarlyStopping`` (patience 20, min_delta 1e-4) would have acted on the same curve.

Everything here is plain numpy/pandas: no torch, no plotting (the plots live in `helpers.plateau`).

Modules: ``history`` (reading and normalising histories, picking the metric), ``rules`` (the
standard rules and the plateau trend test), ``curve`` (arrays and measurements prepared once),
``findings`` (one rule per finding kind), ``recommend`` (one rule per remedy), ``diagnose``
(`diagnose_history`), ``synthetic`` (labelled curves), ``tables`` (tables and text).
"""
from __future__ import annotations

from helpers.evaluation.doctor.diagnose import diagnose_history
from helpers.evaluation.doctor.history import (load_history, load_run_config, metric_direction,
                                               normalise_columns, NOTE004_BASELINE, pick_metric)
from helpers.evaluation.doctor.recommend import make_recommendations
from helpers.evaluation.doctor.results import Diagnosis, Finding, KINDS, Recommendation
from helpers.evaluation.doctor.rules import (evaluate_early_stopping, evaluate_reduce_lr_on_plateau,
                                             find_plateau)
from helpers.evaluation.doctor.synthetic import (evaluate_synthetic_set, make_synthetic_history,
                                                 SYNTHETIC_KINDS)
from helpers.evaluation.doctor.tables import describe_rules, make_findings_table, make_recommendations_table

__all__ = ["describe_rules", "diagnose_history", "Diagnosis", "evaluate_early_stopping",
           "evaluate_reduce_lr_on_plateau", "evaluate_synthetic_set", "find_plateau", "Finding", "KINDS",
           "load_history", "load_run_config", "make_findings_table", "make_recommendations",
           "make_recommendations_table", "make_synthetic_history", "metric_direction", "normalise_columns",
           "NOTE004_BASELINE", "pick_metric", "Recommendation", "SYNTHETIC_KINDS"]
