"""What a run will do, decided before any kernel starts: the notebooks (with what they need), their
validated parameters, each result's cache key, and whether it runs or reuses an earlier result and why."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.core import paths
from helpers.core.errors import ParameterError
from helpers.workbook import cache
from helpers.workbook.graph import make_graph, Reads, with_needs
from helpers.workbook.schema import check_together
from helpers.workbook.params import load_notebook_spec, load_profile_file, parse_set, validate


def list_notebooks() -> list[str]:
    """Stems of the workbook's notebooks, in order (file names start with two digits)."""
    return sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def stem_of(key: str) -> str:
    """``00`` or ``00_data_audit`` -> ``00_data_audit``; an unknown notebook is an error naming the choices."""
    known = list_notebooks()
    match = [s for s in known if key == s or key == s.split("_", 1)[0]]
    if not match:
        raise ParameterError(f"no notebook {key!r} (have: {', '.join(known)})")
    return match[0]


def select_notebooks(only: list[str] | None) -> list[str]:
    """The notebooks named by ``--only`` (all when empty), in order."""
    if not only:
        return list_notebooks()
    chosen = []
    for key in only:
        try:
            stem = stem_of(key)
        except ParameterError as e:
            raise ParameterError(f"--only {key!r}: {e}") from None
        if stem not in chosen:
            chosen.append(stem)
    return [s for s in list_notebooks() if s in chosen]


def _set_stem(key: str) -> str:
    try:
        return stem_of(key)
    except ParameterError as e:
        raise ParameterError(f"--set {key}.…: {e}") from None


def _profile_overrides(profile: str, stem: str, spec) -> dict[str, Any]:
    overrides, path = load_profile_file(profile, stem)
    where = str(path.relative_to(paths.PROJ_ROOT)) if path.is_relative_to(paths.PROJ_ROOT) else str(path)
    if "out_dir" in overrides:
        raise ParameterError(f"{where}: out_dir is set by the runner (use --out for the run folder)")
    validate(spec, overrides, where)
    return overrides


def _check_sets(by_nb: dict[str, dict[str, Any]], stems: list[str]) -> None:
    """Every --set is validated, also for a notebook outside this run (then refused: it would not apply)."""
    for stem, values in by_nb.items():
        spec = load_notebook_spec(stem)
        if "out_dir" in values:
            raise ParameterError(f"--set {stem}.out_dir: out_dir is set by the runner (use --out for the run folder)")
        for key, value in values.items():
            validate(spec, {key: value}, f"--set {stem}.{key}")
        if stem not in stems:
            keys = ", ".join(f"{stem}.{k}" for k in values)
            raise ParameterError(f"--set {keys}: notebook {stem} is not part of this run (it runs "
                                 f"{' '.join(s[:2] for s in stems)}); add it with --only or drop the --set")


def resolve_parameters(profile: str, stems: list[str], sets: list[str] | None = None
                       ) -> dict[str, dict[str, dict[str, Any]]]:
    """Validate every notebook's profile file and every --set override, before any kernel starts.

    Returns {stem: {"overrides": {...}, "resolved": {...}}}; raises ParameterError naming the file or
    the --set, the key, the value and what was expected.
    """
    by_nb = parse_set(sets or [], stem_of=_set_stem)
    _check_sets(by_nb, stems)
    out = {}
    for stem in stems:
        spec = load_notebook_spec(stem)
        overrides = {**_profile_overrides(profile, stem, spec), **by_nb.get(stem, {})}
        resolved = validate(spec, overrides, stem)
        check_together(stem, resolved, stem)
        out[stem] = {"overrides": overrides, "resolved": resolved}
    return out


@dataclass
class Job:
    """One notebook of a run: its parameters, the key of its result, and what the run does with it."""
    stem: str
    overrides: dict[str, Any]
    resolved: dict[str, Any]
    reads: Reads
    key: cache.ResultKey
    action: str = "run"                  # run | reuse | keep (resume: already finished in this folder)
    source: Path | None = None           # the earlier result reused
    reason: str = ""

    def describe(self) -> str:
        if self.action == "reuse":
            return f"reused from {self.source.parent.name if self.source else '?'}"
        if self.action == "keep":
            return "kept (finished before the resume)"
        return f"runs: {self.reason}"


def make_plan(profile: str, only: list[str] | None, sets: list[str] | None, threads: int, run_dir: Path,
              force: list[str] | None = None, use_cache: bool = True) -> list[Job]:
    """The notebooks to run (the selected ones and what they need), in order, each with its decision."""
    known = list_notebooks()
    graph = make_graph(known)
    stems = with_needs(select_notebooks(only), graph)
    params = resolve_parameters(profile, stems, sets)
    forced = {stem_of(f) for f in (force or [])}
    if forced - set(stems):
        raise ParameterError(f"--force {' '.join(sorted(forced - set(stems)))}: not part of this run (it runs "
                             f"{' '.join(s[:2] for s in stems)}); add it with --only, or drop the --force")
    device, helpers = cache.device_kind(), cache.helpers_hash()
    jobs: list[Job] = []
    keys: dict[str, str] = {}
    for stem in stems:
        upstream = {r: keys[r] for r in graph[stem].all if r in keys}
        key = cache.result_key(stem, params[stem]["resolved"], upstream, run_dir, device, threads, helpers)
        keys[stem] = key.key
        job = Job(stem, params[stem]["overrides"], params[stem]["resolved"], graph[stem], key)
        _decide(job, forced, use_cache, run_dir)
        jobs.append(job)
    return jobs


def _decide(job: Job, forced: set[str], use_cache: bool, run_dir: Path) -> None:
    if job.stem in forced:
        job.reason = "--force"
    elif not use_cache:
        job.reason = "--no-cache"
    else:
        found, why = cache.lookup(job.stem, job.key, exclude=run_dir)
        if found is not None:
            job.action, job.source = "reuse", found
        else:
            job.reason = why
