"""``python -m helpers diagnose HISTORY``: the curve doctor from a shell."""
from __future__ import annotations

import argparse
import sys

from helpers.core.errors import WorkbookError
from helpers.core.io import to_json
from helpers.evaluation.doctor import (describe_rules, diagnose_history, Diagnosis, load_history,
                                       load_run_config)


def _format_text(diag: Diagnosis, source: str) -> str:
    lines = [f"diagnosis of {source}  (metric: {diag.metric}, {'higher' if diag.greater_is_better else 'lower'} is better)",
             "", "findings:"]
    for f in diag.findings:
        lines.append(f"  [{f.kind}] epoch {f.epoch}: {f.message}")
    lines += ["", "recommendations (ranked):"]
    if not diag.recommendations:
        lines.append("  none")
    for i, r in enumerate(diag.recommendations, 1):
        lines.append(f"  {i}. {r.change}\n     because {r.reason}")
    lines += ["", f"on the same curve ({diag.rules['monitor']}, mode {diag.rules['mode']}):",
              *("  " + line for line in describe_rules(diag).splitlines())]
    return "\n".join(lines)


def diagnose_main(argv: list[str]) -> int:
    """`python -m helpers diagnose HISTORY [--metric NAME] [--json] [--ceiling X]`."""
    ap = argparse.ArgumentParser(prog="python -m helpers diagnose",
                                 description="Diagnose a training history: findings and ranked recommendations.")
    ap.add_argument("history", help="history.json / CSV (Keras CSVLogger, timm summary.csv) / a run folder")
    ap.add_argument("--metric", default=None, help="the score to judge (default: first validation score)")
    ap.add_argument("--ceiling", type=float, default=None, help="best achievable value of the metric, if known")
    ap.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    args = ap.parse_args(argv)
    try:
        df = load_history(args.history)
        diag = diagnose_history(df, metric=args.metric, ceiling=args.ceiling,
                                config=load_run_config(args.history))
    except WorkbookError as e:
        print(f"diagnose: {e}", file=sys.stderr)
        return 2
    if args.json:
        sys.stdout.write(to_json(diag.to_dict()))
    else:
        print(_format_text(diag, args.history))
    return 0
