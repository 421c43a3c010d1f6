"""Command line: ``python -m helpers {run,check,diff,strip,bench,diagnose,crops}``."""
from __future__ import annotations

import argparse
import importlib
import sys

from helpers.core.errors import WorkbookError

# `python -m helpers bench NAME ...` -> helpers.bench.NAME.bench_main(argv).
BENCHES = {name: f"helpers.bench.{name}" for name in ("sampling", "train", "backbones", "multiseed", "rerun", "jobs",
                                                     "crops", "scenes", "doctor", "seeds")}


SUBCOMMANDS = (("diagnose", "helpers.workbook.diagnose_cli", "diagnose_main"),
               ("crops", "helpers.workbook.crops_cli", "crops_main"),
               ("figures", "helpers.workbook.figures", "figures_main"))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number; expected 1 or more") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} threads: expected 1 or more")
    return value


def _selection_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--profile", help="params/<profile>/ (smoke, default, gpu; default: default)")
    # "extend": a repeated --only / --set adds to the earlier ones instead of replacing them.
    q.add_argument("--only", nargs="+", action="extend", metavar="NB",
                   help="notebooks by number or stem, e.g. 05 (the notebooks it reads run or are reused too)")
    q.add_argument("--set", nargs="+", action="extend", default=[], metavar="NB.KEY=VALUE", dest="sets",
                   help="override one parameter; VALUE is read as YAML (plain data only)")


def _cache_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("--threads", type=_positive_int,
                   help="torch and BLAS threads of every kernel (default 2, whatever the machine)")
    q.add_argument("--force", nargs="+", action="extend", default=[], metavar="NB",
                   help="run these notebooks even when an identical earlier result exists")
    q.add_argument("--no-cache", action="store_true", help="reuse no earlier result")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers", description="Run and inspect the workbook.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute notebooks with papermill (reusing identical earlier results)")
    c = sub.add_parser("check", help="validate parameters only")
    st = sub.add_parser("status", help="which notebooks a run would execute, and why; runs nothing")
    for q in (r, c, st):
        _selection_args(q)
    for q in (r, st):
        _cache_args(q)
    r.add_argument("--out", help="a new run folder (default reports/<YYYYmmdd-HHMMSS>-<profile>/)")
    r.add_argument("--jobs", type=_positive_int, default=1,
                   help="notebooks run at the same time when their inputs are ready (default 1)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or failed run in its own folder")
    d = sub.add_parser("diff", help="configuration and metric values that differ between two runs")
    d.add_argument("run_a")
    d.add_argument("run_b")
    s = sub.add_parser("strip", help="remove outputs and execution counts from notebooks (before committing)")
    s.add_argument("notebooks", nargs="+")
    b = sub.add_parser("bench", help=f"benchmarks: {', '.join(BENCHES)}")
    b.add_argument("name", choices=sorted(BENCHES))
    g = sub.add_parser("diagnose", help="diagnose a training history (history.json or CSV)", add_help=False)
    g.add_argument("rest", nargs=argparse.REMAINDER)
    f = sub.add_parser("figures", help="the README's measured figures from a run folder", add_help=False)
    f.add_argument("rest", nargs=argparse.REMAINDER)
    k = sub.add_parser("crops", help="write the person crops of a JRDB folder as PNG files", add_help=False)
    k.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def _profile(args) -> str:
    """--profile as given ("" included: an error naming the profiles), else the default profile."""
    return "default" if args.profile is None else args.profile


def _run(args) -> int:
    from helpers.workbook import runner  # deferred: papermill, nbconvert and torch take seconds to import

    if args.resume:
        if args.only or args.sets or args.out or args.force or args.no_cache:
            raise WorkbookError("--resume continues a run exactly as it was planned: give it alone "
                                "(with --jobs at most)")
        return runner.resume(args.resume, args.jobs, args.threads, args.profile)
    return runner.run(_profile(args), args.only, args.out, args.sets, args.threads, args.jobs, args.force,
                      not args.no_cache)


def _diff(args) -> int:
    from helpers.workbook.record import diff_runs  # deferred: see _run

    rows = diff_runs(args.run_a, args.run_b)
    if not rows:
        print("no differences in configuration or metrics")
    width = max((len(k) for k, _, _ in rows), default=0)
    for key, a, b in rows:
        print(f"{key:<{width}}  {a!r:>14} -> {b!r}")
    return 0


def _strip(args) -> int:
    from helpers.workbook.nbtools import strip_outputs  # deferred: see _run

    for path in args.notebooks:
        print(f"{path}: {'stripped' if strip_outputs(path) else 'already clean'}")
    return 0


def _command(args) -> int:
    from helpers.workbook import runner  # deferred: see _run

    if args.cmd == "run":
        return _run(args)
    if args.cmd == "check":
        return runner.check(_profile(args), args.only, args.sets)
    if args.cmd == "status":
        return runner.status(_profile(args), args.only, args.sets, args.threads, args.force, not args.no_cache)
    return {"diff": _diff, "strip": _strip}[args.cmd](args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["bench"] and len(argv) >= 2 and argv[1] in BENCHES:
            return importlib.import_module(BENCHES[argv[1]]).bench_main(argv[2:])
        for name, module, entry in SUBCOMMANDS:   # commands with their own argument parsers
            if argv[:1] == [name]:
                return getattr(importlib.import_module(module), entry)(argv[1:])
        return _command(_parser().parse_args(argv))
    except WorkbookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM during a run: run.json already says "interrupted"
        print(f"interrupted ({e or 'Ctrl-C'}); run.json records which notebook was cut short", file=sys.stderr)
        return 130
    return 1  # pragma: no cover - every command returns above


if __name__ == "__main__":
    sys.exit(main())
