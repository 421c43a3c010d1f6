"""The training-curve doctor: why a curve stalls and what to change (notebook 07, `python -m helpers diagnose`).

Input: any per-epoch training history (the workbook's ``history.json``, a Keras CSVLogger file, a
timm ``summary.csv``, an Ultralytics YOLO ``results.csv``, a list of dicts). Output: a `Diagnosis` with

- findings, each with numeric evidence, most severe first: ``divergence`` (NaN/Inf or a loss explosion;
  nothing after it is judged), ``saturated_monitor``, ``schedule_ended`` (the learning rate ran out
  while the score still improved), ``overfitting``, ``oscillation``, ``plateau`` (no improvement beyond
  the curve's noise with the learning rate still high), ``underfitting``, ``noise``,
  ``warmup_not_linear``, ``too_short``, ``healthy``; thresholds are in units of the curve's own
  epoch-to-epoch noise;
- ranked recommendations mapped to M4's concrete parameter changes (each with the reason drawn from
  the findings and a ``params`` dict a follow-up run can apply), "more data" ranked by a learning-curve
  probe when one is given;
- the epochs at which PyTorch ``ReduceLROnPlateau`` (patience 10, threshold 1e-4 rel) and
  Lightning ``EarlyStopping`` (patience 20, min_delta 1e-4) would have acted on the same curve.

Everything here is plain numpy/pandas: no torch, no plotting (the plots live in `helpers.stages.plateau`).

Modules: ``history`` (reading and normalising histories, picking the metric), ``rules`` (the
standard rules, the noise estimate and the plateau trend test), ``curve`` (arrays, divergence and
measurements prepared once), ``findings`` (one rule per finding kind), ``learning`` (the learning-curve
probe as evidence), ``recommend`` (one rule per remedy), ``diagnose`` (`diagnose_history`), ``synthetic``
(generated labelled curves), ``external`` (hand-labelled public histories), ``tables`` (tables and text).
"""
from __future__ import annotations

from helpers.evaluation.doctor.diagnose import diagnose_history
from helpers.evaluation.doctor.external import (diagnose_labelled_histories, evaluate_labelled_histories,
                                                LABELLED_KINDS, load_labels)
from helpers.evaluation.doctor.history import (load_history, load_run_config, metric_direction,
                                               normalise_columns, NOTE004_BASELINE, pick_metric)
from helpers.evaluation.doctor.learning import describe_learning_curve, evaluate_learning_curve
from helpers.evaluation.doctor.recommend import make_recommendations
from helpers.evaluation.doctor.results import Diagnosis, Finding, KINDS, Recommendation
from helpers.evaluation.doctor.rules import (estimate_noise, evaluate_early_stopping, evaluate_reduce_lr_on_plateau,
                                             find_plateau)
from helpers.evaluation.doctor.synthetic import (evaluate_synthetic_set, make_synthetic_history,
                                                 SYNTHETIC_KINDS)
from helpers.evaluation.doctor.tables import describe_rules, make_findings_table, make_recommendations_table

__all__ = ["describe_learning_curve", "describe_rules", "diagnose_history", "diagnose_labelled_histories",
           "Diagnosis", "estimate_noise", "evaluate_early_stopping", "evaluate_labelled_histories",
           "evaluate_learning_curve", "evaluate_reduce_lr_on_plateau", "evaluate_synthetic_set", "find_plateau",
           "Finding", "KINDS", "LABELLED_KINDS", "load_history", "load_labels", "load_run_config",
           "make_findings_table", "make_recommendations", "make_recommendations_table", "make_synthetic_history",
           "metric_direction", "normalise_columns", "NOTE004_BASELINE", "pick_metric", "Recommendation",
           "SYNTHETIC_KINDS"]
