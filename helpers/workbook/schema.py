"""The declared shape of the nested parameters: mappings and lists whose entries the parameters cell's
literal cannot describe (``architectures``, ``grid``, ``sources``, ``pretrained_files``, ``tasks``, ...).

Checked with the other parameters before any kernel starts, so a misspelled key inside a mapping or an
entry of an unknown kind is an error naming it, not a traceback minutes into a run (or a silent default).
"""
from __future__ import annotations

import difflib
import inspect
import re
from pathlib import Path
from typing import Any, Callable

from helpers.core import paths
from helpers.core.errors import ParameterError, WorkbookError
from helpers.core.taskspec import make_task_specs

RECIPES = ("02_stage1", "03_stage2")
_ARCH_KEYS = ("recipe", "model", "vector_model", "start")
_DEVICE = re.compile(r"auto|cpu|cuda(?::[0-9]{1,2})?|mps")


def _fail(where: str, name: str, value: Any, why: str) -> ParameterError:
    return ParameterError(f"{where}: {name} = {value!r}: {why}")


def _model_arguments() -> tuple[list[str], set[str]]:
    """The registered model names, and every keyword argument their builders name."""
    import helpers.models  # noqa: F401 - registers the built-in models
    from helpers.models.registry import MODELS  # deferred with the models (torch): only 04's check needs them

    names = {p.name for fn in MODELS.values() for p in inspect.signature(fn).parameters.values()
             if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return sorted(MODELS), names


def _architectures(value: Any, where: str) -> None:
    models, kwargs = _model_arguments()
    for arch, entry in value.items():
        name = f"architectures[{arch!r}]"
        if not isinstance(entry, dict):
            raise _fail(where, name, entry, "expected a mapping such as {'recipe': '02_stage1'} or {'model': NAME}")
        if entry.get("recipe", "") not in ("", *RECIPES):
            raise _fail(where, name, entry, f"recipe {entry['recipe']!r} is not one of {', '.join(RECIPES)}")
        for key in ("model", "vector_model"):
            if entry.get(key) and entry[key] not in models:
                raise _fail(where, name, entry, f"{key} {entry[key]!r} is not a registered model ({', '.join(models)})")
        for key in entry:
            if key not in _ARCH_KEYS and key not in kwargs:
                hint = difflib.get_close_matches(key, [*_ARCH_KEYS, *kwargs], n=1)
                raise _fail(where, name, entry, f"unknown key {key!r}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                            + f" (keys: {', '.join(_ARCH_KEYS)}, or a model argument)")
        if not entry.get("recipe") and not entry.get("model") and arch not in models:
            raise _fail(where, name, entry, "names neither a recipe nor a registered model")


def _grid(value: Any, where: str) -> None:
    if not value:
        raise _fail(where, "grid", value, "expected at least one architecture -> seeds")
    for arch, seeds in value.items():
        seeds = [seeds] if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
        ok = isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                       and 0 <= s < 2**32 for s in seeds)
        if not ok:
            raise _fail(where, f"grid[{arch!r}]", value[arch], "expected a non-empty list of seeds (whole numbers "
                        "0..4294967295)")
        if len(set(seeds)) != len(seeds):
            raise _fail(where, f"grid[{arch!r}]", seeds, "lists a seed twice")


def _names(value: Any, where: str, name: str = "datasets") -> None:
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise _fail(where, f"{name}[{i}]", v, "expected a non-empty name")
    repeated = sorted({v for v in value if value.count(v) > 1})
    if repeated:
        raise _fail(where, name, value, f"names {', '.join(map(repr, repeated))} more than once")


def _sources(value: Any, where: str) -> None:
    _names(value, where, "sources")
    known = sorted(p.stem for p in paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    for v in value:
        if v not in known:
            raise _fail(where, "sources", value, f"{v!r} is not a notebook stem ({', '.join(known)})")


def _pretrained_files(value: Any, where: str) -> None:
    for name, file in value.items():
        if not isinstance(file, str) or not file.strip():
            raise _fail(where, f"pretrained_files[{name!r}]", file, "expected the path of a local weight file")
        p = Path(file).expanduser()
        p = p if p.is_absolute() else paths.PROJ_ROOT / p
        if not p.is_file():
            raise _fail(where, f"pretrained_files[{name!r}]", file, f"no such file ({p}); weights are never "
                                                                    "downloaded: give a local file")


def _device(value: Any, where: str) -> None:
    if not isinstance(value, str) or not _DEVICE.fullmatch(value):
        raise _fail(where, "device", value, "expected auto, cpu, cuda or cuda:N")


def _tasks(value: Any, where: str) -> None:
    try:
        make_task_specs(value)
    except WorkbookError as e:
        raise ParameterError(f"{where}: {e}") from None


def _search_range(name: str) -> Callable[[Any, str], None]:
    def check(value: Any, where: str) -> None:
        if len(value) != 2 or not value[0] < value[1]:
            raise _fail(where, name, value, "expected a range [lo, hi] with lo < hi")
    return check


def _fractions(value: Any, where: str) -> None:
    for i, v in enumerate(value):
        if not 0 < v <= 1:
            raise _fail(where, f"learning_curve_fractions[{i}]", v, "expected a share in (0, 1]")


# (notebook stem or "*" for every notebook, parameter) -> check of its value (type and range already checked).
SCHEMA: dict[tuple[str, str], Callable[[Any, str], None]] = {
    ("04_multi_seed", "architectures"): _architectures,
    ("04_multi_seed", "grid"): _grid,
    ("04_multi_seed", "search_lr"): _search_range("search_lr"),
    ("04_multi_seed", "search_weight_decay"): _search_range("search_weight_decay"),
    ("05_stacking", "sources"): _sources,
    ("06_backbones", "pretrained_files"): _pretrained_files,
    ("06_backbones", "tasks"): _tasks,
    ("07_plateau_diagnosis", "learning_curve_fractions"): _fractions,
    ("*", "device"): _device,
    ("*", "datasets"): _names,
}


def check_nested(stem: str, name: str, value: Any, where: str) -> None:
    """Check one parameter's value against its declared shape, when it has one."""
    check = SCHEMA.get((stem, name)) or SCHEMA.get(("*", name))
    if check is not None:
        check(value, where)


def check_together(stem: str, resolved: dict[str, Any], where: str) -> None:
    """What only the parameters together can say: 04's grid names declared architectures (or models),
    06's task weights match its tasks."""
    if stem == "04_multi_seed" and isinstance(resolved.get("grid"), dict):
        models = _model_arguments()[0]
        arch = resolved.get("architectures") or {}
        unknown = [a for a in resolved["grid"] if a not in arch and a not in models]
        if unknown:
            raise ParameterError(f"{where}: grid names {unknown}, which are neither in architectures "
                                 f"({', '.join(arch)}) nor registered models")
    if stem == "06_backbones" and isinstance(resolved.get("tasks"), list):
        try:
            make_task_specs(resolved["tasks"], resolved.get("task_weights") or None)
        except WorkbookError as e:
            raise ParameterError(f"{where}: {e}") from None
