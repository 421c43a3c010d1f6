"""The training-curve doctor: why a curve stalls and what to change (notebook 07, `python -m helpers diagnose`).

Input: a training log as its tool writes it (`formats`: the workbook's ``history.json`` and TensorBoard files,
Ultralytics YOLOv5/v8 ``results.csv``, timm ``summary.csv``, Keras CSVLogger, Lightning ``metrics.csv``,
Hugging Face ``trainer_state.json``; also a DataFrame or a list of dicts). The monitor is chosen by a stated
rule per format and named in the output. Output: a `Diagnosis` with

- findings, each with numeric evidence, most severe first: ``divergence`` (NaN/Inf, a loss explosion or return
  to its starting level, a score collapsing to its start; nothing after it is judged), ``saturated_monitor``
  (at its maximum, or not moving), ``schedule_ended`` (the learning rate ran out while the score still
  improved), ``overfitting``, ``oscillation``, ``plateau`` (no improvement beyond the curve's noise with the
  learning rate still high and no other cause), ``underfitting``, ``noise``, ``warmup_not_linear``,
  ``healthy``; thresholds are in units of the curve's own epoch-to-epoch noise. A log with nothing to judge
  (no validation values, fewer than 3 points) gets no finding: ``Diagnosis.judged`` is False and the summary's
  ``reason`` names the columns read; 3 to 7 points are judged for divergence only;
- ranked recommendations with concrete parameter changes computed from the run's own values (its config, else
  the learning rate and epochs in the log; M4's values only for the workbook's own runs), "more data" ranked
  by a learning-curve probe when one is given;
- the epochs at which PyTorch ``ReduceLROnPlateau`` (patience 10, threshold 1e-4 rel) and
  Lightning ``EarlyStopping`` (patience 20, min_delta 1e-4) would have acted on the same curve.

Everything here is plain numpy/pandas and linear in rows (a 1M-row step log in seconds): no torch, no plotting
(the plots live in `helpers.stages.plateau`).

Modules: ``formats`` (each tool's file, the monitor rule), ``history`` (normalising columns, picking the
monitor), ``rules`` (the standard rules, the noise estimate and the plateau trend test), ``curve`` (arrays,
divergence and measurements prepared once), ``findings`` (one rule per finding kind), ``learning`` (the
learning-curve probe as evidence), ``recommend`` (one rule per remedy), ``diagnose`` (`diagnose_history`),
``synthetic`` (generated labelled curves), ``external`` (the first hand-labelled public histories),
``validation`` (dev / held-out scoring with intervals over repositories, the SageMaker and Keras baselines),
``seedtest`` (the paired test over seeds of the planted-fault benchmark), ``tables`` (tables and text).
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
