"""Notebook 07's check of the curve doctor on real logs: the hand-labelled public logs split by repository
into dev (rules tuned there) and held-out (scored once, after the rules were frozen), with intervals clustered
by repository, the fixed-rule baselines on the same files, and the record of when the rules were frozen."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.core.paths import PROJ_ROOT
from helpers.evaluation.doctor.validation import (evaluate_split, load_labelled_logs, predict, scores_table,
                                                  SCORED_KINDS)

# The files that hold the doctor's rules: frozen at the recorded commit before the held-out split was scored.
RULE_FILES = ("curve.py", "diagnose.py", "findings.py", "formats.py", "history.py", "recommend.py", "rules.py")


def _folder(folder: str | Path) -> Path:
    p = Path(folder)
    return p if p.is_absolute() else PROJ_ROOT / p


def validate_on_public_logs(folder: str | Path) -> dict[str, Any]:
    """The doctor and each baseline on every labelled log; dev and held-out scores, the doctor's per-kind table
    per split, the paired comparisons and one row per file."""
    logs = load_labelled_logs(_folder(folder))
    preds = predict(logs)
    results = [evaluate_split(logs, preds, split) for split in ("heldout", "dev")]
    per_file = pd.DataFrame([{"file": x.name, "repo": x.repo, "split": x.split, "labels": ", ".join(sorted(x.kinds)),
                              "ambiguous": ", ".join(sorted(x.ambiguous)), "doctor": ", ".join(sorted(p))}
                             for x, p in zip(logs, preds["doctor"])])
    return {"results": {r["split"]: r for r in results}, "scores": scores_table(results), "per_file": per_file,
            "logs": logs}


def per_kind_both(validation: dict[str, Any]) -> pd.DataFrame:
    """The doctor's per-kind precision and recall, held-out beside dev."""
    h, d = (validation["results"][s]["per_kind"].set_index("kind") for s in ("heldout", "dev"))
    out = h[["labelled", "found", "tp", "precision", "recall"]].join(
        d[["labelled", "tp", "precision", "recall"]], lsuffix="_heldout", rsuffix="_dev")
    return out.reindex(list(SCORED_KINDS)).reset_index()


def heldout_sources(folder: str | Path) -> pd.DataFrame:
    """The held-out logs' provenance: repository, path and commit, from the manifest."""
    man = _folder(folder) / "public" / "manifest.json"
    rows = [e for e in json.loads(man.read_text(encoding="utf-8")) if e["split"] == "heldout"]
    return pd.DataFrame([{"repo": e["repo"], "path": e["path"], "commit": e["commit"][:12], "format": e["format"]}
                         for e in rows])


def frozen_record(folder: str | Path) -> dict[str, Any]:
    """When the rules were frozen (``rules_frozen.json`` beside the labels) and whether the rule files are
    unchanged since that commit (git diff; None where git or the commit is not available)."""
    path = _folder(folder) / "rules_frozen.json"
    if not path.is_file():
        return {"commit": None, "utc": None, "unchanged": None}
    rec = json.loads(path.read_text(encoding="utf-8"))
    files = [str(Path("helpers/evaluation/doctor") / f) for f in RULE_FILES]
    try:
        r = subprocess.run(["git", "diff", "--quiet", rec["commit"], "--", *files], cwd=PROJ_ROOT,
                           capture_output=True, timeout=30)
        unchanged = {0: True, 1: False}.get(r.returncode)
    except (OSError, subprocess.SubprocessError):
        unchanged = None
    return {**rec, "unchanged": unchanged}


