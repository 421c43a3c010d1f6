"""The typed parameter contract.

A notebook declares its parameters in its one cell tagged ``parameters``::

    epochs = 10  # training epochs; range 1..1000
    balance = "oversample"  # class balance; one of oversample|undersample|none

The literal gives the type, the comment may give a range or a set of choices. Profile files
(``params/<profile>/<stem>.yaml``) and ``--set`` overrides are checked against that declaration
before any kernel starts: papermill alone would only warn about unknown names and inject them.
"""
from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.core import paths
from helpers.core.errors import ParameterError


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` as a string; learning rates are written that way, so read it as a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


_RANGE = re.compile(r"\brange\s+(?P<lo>[-+0-9.eE_*]*)\.\.(?P<hi>[-+0-9.eE_*]*)")


_CHOICES = re.compile(r"\bone of\s+(?P<choices>[^\s;,]+(?:\|[^\s;,]+)+)")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    comment: str = ""
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None

    @property
    def type_name(self) -> str:
        return _type_name(self.default)


@dataclass
class NotebookSpec:
    stem: str
    params: dict[str, ParamSpec] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        return {k: s.default for k, s in self.params.items()}


def _type_name(value: Any) -> str:
    if value is None:
        return "any"
    if isinstance(value, list):
        inner = {_type_name(v) for v in value}
        if inner == {"int", "float"}:
            inner = {"float"}
        return f"list of {inner.pop()}" if len(inner) == 1 else "list"
    return type(value).__name__


def _number(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(eval(text, {"__builtins__": {}}, {}))  # only digits, e, ., +, -, * reach here
    except Exception:  # noqa: BLE001 - a malformed bound is a declaration bug
        raise ParameterError(f"cannot read range bound {text!r}") from None


def parse_parameters_source(source: str, stem: str = "<notebook>") -> NotebookSpec:
    """Read the declarations of a parameters cell: `name = literal  # comment` per line."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ParameterError(f"{stem}: the parameters cell is not valid Python: {e}") from None
    lines = source.splitlines()
    spec = NotebookSpec(stem)
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ParameterError(f"{stem}: the parameters cell may hold only `name = literal` lines "
                                 f"(line {node.lineno})")
        name = node.targets[0].id
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            raise ParameterError(f"{stem}: parameter {name!r} must be a literal value (line {node.lineno})") from None
        line = lines[node.end_lineno - 1]
        rest = line[node.end_col_offset:]
        comment = rest.split("#", 1)[1].strip() if "#" in rest else ""
        if "=" in comment:
            # papermill gives up on a line with two "=" and then treats the name as unknown.
            raise ParameterError(f"{stem}: the comment of parameter {name!r} contains '='; reword it "
                                 f"(line {node.lineno}: {line.strip()!r})")
        lo = hi = None
        m = _RANGE.search(comment)
        if m:
            lo, hi = _number(m["lo"]), _number(m["hi"])
        c = _CHOICES.search(comment)
        choices = tuple(c["choices"].split("|")) if c else None
        spec.params[name] = ParamSpec(name, value, comment, lo, hi, choices)
    return spec


def load_notebook_spec(stem: str, notebook: Path | None = None) -> NotebookSpec:
    """Parse the parameters cell of ``notebooks/<stem>.ipynb``."""
    path = notebook or paths.notebook_path(stem)
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParameterError(f"no notebook {path}") from None
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    src = cells[0]["source"]
    return parse_parameters_source("".join(src) if isinstance(src, list) else src, stem)


def check_value(spec: ParamSpec, value: Any, where: str) -> Any:
    """Return `value` if it satisfies `spec`, else raise a ParameterError naming `where`."""
    d = spec.default
    expected = spec.type_name

    def bad(why: str) -> ParameterError:
        return ParameterError(f"{where}: {spec.name} = {value!r} {why} (declared: {spec.comment or expected})")

    if d is None:
        return value
    if isinstance(d, bool):
        if not isinstance(value, bool):
            raise bad("is not a bool: expected true or false")
    elif isinstance(d, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("is not an int")
    elif isinstance(d, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("is not a number")
        value = float(value)
    elif isinstance(d, str):
        if not isinstance(value, str):
            raise bad("is not a string")
    elif isinstance(d, list):
        if not isinstance(value, list):
            raise bad(f"is not a list: expected {expected}")
        if d:
            inner = ParamSpec(spec.name, d[0], spec.comment, spec.lo, spec.hi, spec.choices)
            if isinstance(d[0], int) and any(isinstance(x, float) for x in d):
                inner = ParamSpec(spec.name, float(d[0]), spec.comment, spec.lo, spec.hi, spec.choices)
            return [check_value(inner, v, where) for v in value]
        return value
    elif isinstance(d, dict):
        if not isinstance(value, dict):
            raise bad("is not a mapping")
    if spec.choices is not None and isinstance(value, str) and value not in spec.choices:
        raise bad(f"is not one of {'|'.join(spec.choices)}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if spec.lo is not None and value < spec.lo:
            raise bad(f"is out of range: expected {_fmt_range(spec)}")
        if spec.hi is not None and value > spec.hi:
            raise bad(f"is out of range: expected {_fmt_range(spec)}")
    return value


def _fmt_range(spec: ParamSpec) -> str:
    lo = "" if spec.lo is None else f"{spec.lo:g}"
    hi = "" if spec.hi is None else f"{spec.hi:g}"
    return f"{lo}..{hi}"


def validate(spec: NotebookSpec, overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """Check overrides against the declarations; return the fully resolved parameters."""
    resolved = spec.defaults()
    for key, value in overrides.items():
        if key not in spec.params:
            hint = difflib.get_close_matches(key, list(spec.params), n=1, cutoff=0.5)
            did = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ParameterError(f"{where}: unknown parameter {key!r} for notebook {spec.stem}{did} "
                                 f"(declared: {', '.join(spec.params)})")
        resolved[key] = check_value(spec.params[key], value, where)
    return resolved


def load_profile_file(profile: str, stem: str) -> tuple[dict[str, Any], Path]:
    """Read ``params/<profile>/<stem>.yaml``; a missing file means no overrides."""
    path = paths.params_path(profile, stem)
    if not (paths.PARAMS / profile).is_dir():
        known = sorted(p.name for p in paths.PARAMS.iterdir() if p.is_dir()) if paths.PARAMS.is_dir() else []
        hint = difflib.get_close_matches(profile, known, n=1)
        did = f"; did you mean {hint[0]!r}?" if hint else ""
        raise ParameterError(f"unknown profile {profile!r}: no folder {paths.PARAMS / profile}{did} "
                             f"(profiles: {', '.join(known)})")
    if not path.exists():
        return {}, path
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParameterError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}, path
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter: value, got {type(data).__name__}")
    return data, path


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["02_stage1.epochs=3", "00.seed=1"]`` -> ``{"02_stage1": {"epochs": 3}, "00": {"seed": 1}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ParameterError(f"--set {item!r}: expected NOTEBOOK.KEY=VALUE, e.g. 02_stage1.epochs=3")
        lhs, raw = item.split("=", 1)
        nb, key = lhs.split(".", 1)
        try:
            value = load_yaml(raw)
        except yaml.YAMLError as e:
            raise ParameterError(f"--set {item!r}: value is not valid YAML: {e}") from None
        out.setdefault(nb, {})[key] = value
    return out
