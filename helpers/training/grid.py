"""The multi-seed grid (notebook 04): which models are retrained with which seeds, each member following the
recipe of the notebook that reports it (`load_recipe`: its model, training, loss, declared threshold and start
weights), or a registry model given with its own settings. Only the seed changes between members of one
architecture."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from helpers.core.errors import WorkbookError
from helpers.core.paths import unique_slugs
from helpers.data.pairs import dataset_labels
from helpers.models.registry import list_models
from helpers.training.search import load_recipe, RECIPE_STEMS


EARLY_STOP_SPLITS = ("val", "source_holdout")


@dataclass
class MemberSpec:
    """One member of the grid: an architecture (a recipe or a registry name) trained with one seed."""
    name: str                      # "<arch slug>_s<seed>", unique; also the folder and prediction-file name
    arch: str                      # the grid's label (e.g. "stage1")
    seed: int
    model: str = ""                # registry name ("" = the label itself)
    dataset: str = ""              # built-in name or folder
    label: str = ""                # the dataset's folder name (dataset_labels)
    run_dir: str = ""              # where the dataset's notebook wrote it
    out_dir: str = ""              # this member's folder
    predictions_path: str = ""     # <run>/04_multi_seed/<label>/predictions/<name>.npz
    recipe: str = ""               # notebook stem the model and training come from ("" = given here)
    vector_model: str = ""         # registry name used instead when the dataset holds vectors (no recipe)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)   # TrainConfig fields
    loss: str = "bce"
    threshold: float | None = None  # the recipe's notebook's declared threshold (a registry model: given)
    focal_alpha: float = -1.0
    focal_gamma: float = 2.0
    start_checkpoint: str = ""     # weights the member starts from where names and shapes match ("" = none)
    early_stop_split: str = "val"  # val | source_holdout
    holdout_frac: float = 0.3      # source_holdout: share of training source images held out
    max_train: int = 0
    max_epochs: int = 0            # cap on the recipe's epochs (0 = the recipe's own)
    device: str = "cpu"
    crash: str = ""                # testing aid: "raise" | "exit" | "segv" makes this member fail


def load_recipes(run_dir: str | Path, label: str, architectures: dict[str, dict] | None) -> dict[str, dict]:
    """`load_recipe` of every notebook the architectures name (``{"recipe": "02_stage1"}``), by stem."""
    stems = sorted({e["recipe"] for e in (architectures or {}).values() if isinstance(e, dict) and e.get("recipe")})
    bad = [s for s in stems if s not in RECIPE_STEMS]
    if bad:
        raise WorkbookError(f"architectures name recipe(s) {bad}; expected one of {', '.join(RECIPE_STEMS)}")
    return {s: load_recipe(run_dir, s, label) for s in stems}


def _check_seeds(arch: str, seeds) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise WorkbookError(f"grid[{arch!r}] = {seeds!r}: expected a non-empty list of non-negative int seeds")
    if len(set(seeds)) != len(seeds):
        raise WorkbookError(f"grid[{arch!r}] lists a seed twice: {seeds}")
    return [int(s) for s in seeds]


def resolve_architecture(arch: str, entry: Any, recipes: dict[str, dict], common: dict[str, Any]) -> dict[str, Any]:
    """MemberSpec fields of one architecture: from its recipe (entry keys override the model and its
    kwargs; ``start: ""`` trains from scratch), else the registry model with the common training settings."""
    if not isinstance(entry, dict):
        raise WorkbookError(f"architectures[{arch!r}] = {entry!r}: expected a mapping with a 'recipe' or 'model' key")
    entry = dict(entry)
    stem = entry.pop("recipe", "")
    if stem and stem not in recipes:
        raise WorkbookError(f"architectures[{arch!r}] names recipe {stem!r}, which was not loaded "
                            f"(loaded: {sorted(recipes) or 'none'}; known: {', '.join(RECIPE_STEMS)})")
    r = recipes.get(stem, {})
    # One threshold per model: a recipe's is the one its notebook declared; a registry model's is given here.
    given = entry.pop("threshold", None)
    if stem and given is not None:
        raise WorkbookError(f"architectures[{arch!r}] sets threshold {given!r}, but its recipe {stem} declared one: "
                            f"set it in {stem}'s parameters")
    threshold = r["threshold"] if stem else (given if given is not None else common.get("threshold"))
    start = entry.pop("start", r.get("start", ""))
    model = entry.pop("model", r.get("model", arch))
    fields = {"recipe": stem, "model": model, "vector_model": entry.pop("vector_model", ""),
              "model_kwargs": {**r.get("kwargs", {}), **entry}, "start_checkpoint": str(start or ""), **common,
              "threshold": None if threshold is None else float(threshold)}
    if stem:   # the recipe's training and loss; the common train dict may only shorten or adjust it
        fields.update(train={**r["train"], **common.get("train", {})}, loss=r["loss"],
                      focal_alpha=r["focal_alpha"], focal_gamma=r["focal_gamma"])
    registry = list_models()
    for m in (fields["model"], fields["vector_model"]):
        if m and m not in registry:
            raise WorkbookError(f"grid/architectures: {arch!r} names model {m!r}, which is not in the registry "
                                f"({', '.join(registry)}); add an architectures entry "
                                f"{{{arch!r}: {{'recipe': '02_stage1'}}}} or {{{arch!r}: {{'model': <registry name>}}}}")
    if threshold is None:
        raise WorkbookError(f"architectures[{arch!r}] is a registry model, and no notebook declared its decision "
                            f"threshold: give one, e.g. {{{arch!r}: {{'model': ..., 'threshold': 0.5}}}}")
    return fields


def make_grid(grid: dict[str, Sequence[int]], dataset: str, run_dir: str | Path, out_dir: str | Path,
              architectures: dict[str, dict] | None = None, label: str | None = None,
              recipes: dict[str, dict] | None = None, **common: Any) -> list[MemberSpec]:
    """Expand ``{"label": [seed, ...], ...}`` into member specs (one folder each).

    Member folders: ``out_dir/<dataset label>/members/<arch slug>_s<seed>/``; prediction files for
    stacking: ``out_dir/<dataset label>/predictions/<arch slug>_s<seed>.npz``. ``label`` defaults to
    `dataset_labels` of the dataset alone.

    architectures: ``{"label": {"recipe": "02_stage1" | "03_stage2", [model, kwargs, start overrides]}}``
    (the recipe of the notebook that reports the model, `load_recipes`), or ``{"label": {"model":
    registry name, "vector_model": name for vector data, **create_model kwargs}}``; a label without an
    entry must itself be a registry name. recipes: `load_recipes` output (loaded from ``run_dir`` when
    omitted). common: MemberSpec fields shared by all members (train=..., early_stop_split=..., device=...).
    """
    if not isinstance(grid, dict) or not grid:
        raise WorkbookError(f"grid = {grid!r}: expected a non-empty mapping of architecture -> list of seeds, "
                            'e.g. {"stage1": [42, 2023]}')
    label = label or dataset_labels([str(dataset)])[0]
    architectures = architectures or {}
    if recipes is None:
        recipes = load_recipes(run_dir, label, {a: architectures.get(a, {}) for a in grid})
    # Labels become folder and file names: safe, unique slugs (the table shows label and name side by side).
    slugs = dict(zip(grid, unique_slugs([str(a) for a in grid])))
    root = Path(out_dir) / label
    specs = []
    for arch, seeds in grid.items():
        fields = resolve_architecture(arch, architectures.get(arch, {}), recipes, common)
        for s in _check_seeds(arch, seeds):
            name = f"{slugs[arch]}_s{s}"
            specs.append(MemberSpec(name=name, arch=arch, seed=s, dataset=str(dataset), label=label,
                                    run_dir=str(run_dir), out_dir=str(root / "members" / name),
                                    predictions_path=str(root / "predictions" / f"{name}.npz"), **fields))
    return specs
