"""``python -m helpers diagnose HISTORY``: the curve doctor from a shell."""
from __future__ import annotations

import argparse
import sys

from helpers.core.errors import WorkbookError
from helpers.core.io import to_json
from helpers.evaluation.doctor import (describe_learning_curve, describe_rules, diagnose_history, Diagnosis,
                                       load_history, load_run_config)


def _format_text(diag: Diagnosis, source: str) -> str:
    lines = [f"diagnosis of {source}  (metric: {diag.metric}, {'higher' if diag.greater_is_better else 'lower'} is better)",
             f"read as: {diag.summary.get('format', 'table')}; monitor rule: {diag.summary.get('monitor_rule', '')}"]
    lines += [f"note: {n}" for n in diag.summary.get("reading_notes", [])]
    dup = diag.summary.get("duplicate_epochs") or 0
    if dup:
        lines.append(f"note: {dup} repeated epoch row{'s' if dup != 1 else ''} (a resumed or appended run?): "
                     "the last row of each epoch was kept")
    lines += ["", "findings:"]
    for f in diag.findings:
        lines.append(f"  [{f.kind}] epoch {f.epoch}: {f.message}")
    if diag.summary.get("learning_curve"):
        lines += ["", describe_learning_curve(diag.summary["learning_curve"])]
    lines += ["", "recommendations (ranked):"]
    if not diag.recommendations:
        lines.append("  none")
    for i, r in enumerate(diag.recommendations, 1):
        conf = f" [{r.confidence}]" if r.confidence != "rule" else ""
        lines.append(f"  {i}. {r.change}{conf}\n     because {r.reason}")
    lines += ["", f"on the same curve ({diag.rules['monitor']}, mode {diag.rules['mode']}):",
              *("  " + line for line in describe_rules(diag).splitlines())]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m helpers diagnose",
                                 description="Diagnose a training history: findings and ranked recommendations.")
    ap.add_argument("history", help="history.json / CSV (Keras CSVLogger, timm summary.csv, YOLO results.csv) "
                                    "/ a run folder")
    ap.add_argument("--metric", default=None, help="the score to judge (default: first validation score)")
    ap.add_argument("--ceiling", type=float, default=None, help="best achievable value of the metric, if known")
    ap.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    return ap


def diagnose_main(argv: list[str]) -> int:
    """`python -m helpers diagnose HISTORY [--metric NAME] [--json] [--ceiling X]`; 2 on bad input."""
    args = _parser().parse_args(argv)
    try:
        df = load_history(args.history)
        diag = diagnose_history(df, metric=args.metric, ceiling=args.ceiling,
                                config=load_run_config(args.history))
    except (WorkbookError, OSError) as e:
        # Bad input is one line, never a traceback; OSError covers unreadable paths (permissions, devices).
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not diag.judged:
        # Nothing could be judged: no finding is reported, and the exit status says so.
        print(f"error: {args.history}: {diag.summary['reason']}", file=sys.stderr)
        return 2
    sys.stdout.write(to_json(diag.to_dict()) if args.json else _format_text(diag, args.history) + "\n")
    return 0
