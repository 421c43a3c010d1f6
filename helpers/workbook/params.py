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
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from helpers.core import paths
from helpers.core.errors import ParameterError
from helpers.workbook.schema import check_nested


_MAX_YAML_BYTES = 1 << 20     # a parameter file or --set value larger than this is not a parameter
_MAX_DEPTH = 32               # lists and mappings nested deeper are refused before they are built
_MAX_INT_DIGITS = 30          # plenty for seeds and counts; 5000 digits would only slow everything down


class _Loader(yaml.SafeLoader):
    """Plain YAML read by the YAML 1.2 core schema: what a person means, not YAML 1.1's surprises.

    ``1:00`` stays a string (YAML 1.1 reads base 60: 60), ``010`` is ten (not octal 8), ``0x10`` and ``0o10``
    are refused (write the number in decimal), ``yes``/``no``/``on``/``off`` stay strings, ``1e-4`` is a float,
    ``~``/``null`` is null and an empty value is the empty string. Dates stay strings, a key given twice is an
    error, and a list or mapping as a key is an error.
    """

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ParameterError(f"a {'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'} is "
                                     f"used as a key (line {key_node.start_mark.line + 1}); keys are plain names")
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ParameterError(f"key {key!r} is given twice (line {seen[key] + 1} and line "
                                     f"{key_node.start_mark.line + 1}); give each key once")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if re.fullmatch(r"[-+]?0[xXoObB][0-9a-fA-F_]*", text):
            raise ParameterError(f"{text!r} (line {node.start_mark.line + 1}): write numbers in decimal "
                                 "(hexadecimal, octal and binary literals are not read as parameters)")
        if len(text.lstrip("+-")) > _MAX_INT_DIGITS:
            raise ParameterError(f"an integer of {len(text.lstrip('+-'))} digits (line {node.start_mark.line + 1}); "
                                 f"at most {_MAX_INT_DIGITS} digits")
        return int(text, 10)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_CORE_SCHEMA = [   # (tag, pattern, first characters), in the order tried: the YAML 1.2 core schema
    ("tag:yaml.org,2002:null", r"~|null|Null|NULL", "~nN"),
    ("tag:yaml.org,2002:bool", r"true|True|TRUE|false|False|FALSE", "tTfF"),
    ("tag:yaml.org,2002:int", r"[-+]?[0-9]+|0[xXoObB][0-9a-fA-F_]*", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", "-+0123456789."),
]
_Loader.yaml_implicit_resolvers = {}
for _tag, _rx, _first in _CORE_SCHEMA:
    _Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_rx})$"), list(_first))


def _scan(text: str) -> list:
    """The YAML tokens of `text`, refusing tags, anchors, aliases and nesting deeper than _MAX_DEPTH:
    parameter files hold plain data, nothing a loader would construct into objects, expand or recurse on."""
    tokens, depth = [], 0
    opening = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken, yaml.BlockSequenceStartToken,
               yaml.BlockMappingStartToken)
    closing = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    for token in yaml.scan(text, Loader=_Loader):
        if isinstance(token, yaml.TagToken):
            handle, suffix = token.value
            raise ParameterError(f"YAML tag {(handle or '') + (suffix or '')!r} (line {token.start_mark.line + 1}) "
                                 "is not allowed: parameter values are plain scalars, lists and mappings")
        if isinstance(token, (yaml.AnchorToken, yaml.AliasToken)):
            raise ParameterError(f"YAML anchor or alias {token.value!r} (line {token.start_mark.line + 1}) "
                                 "is not allowed: write the value out")
        depth += isinstance(token, opening) - isinstance(token, closing)
        if depth > _MAX_DEPTH:
            raise ParameterError(f"lists or mappings nested more than {_MAX_DEPTH} deep (line "
                                 f"{token.start_mark.line + 1}); parameters are shallow data")
        tokens.append(token)
    return tokens


def load_yaml(text: str) -> Any:
    """Plain YAML -> plain JSON data (dict with str keys, list, str, int, float, bool, None)."""
    if len(text) > _MAX_YAML_BYTES:
        raise ParameterError(f"{len(text)} characters; a parameter value or file is at most {_MAX_YAML_BYTES}")
    _scan(text)
    value = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass, and no tags got this far
    check_plain(value, "value")
    return value


def cut_comment(raw: str) -> str | None:
    """The part of a one-line value that YAML would drop as a comment (`` #...`` outside quotes), or None.

    On a command line nobody means a comment: ``--set nb.dir=/data/my data #2`` must not quietly become
    ``/data/my data``, which may be another existing folder."""
    try:
        tokens = _scan(raw)
    except yaml.YAMLError:
        return None
    spans = [(t.start_mark.index, t.end_mark.index) for t in tokens if isinstance(t, yaml.ScalarToken)]
    for i, ch in enumerate(raw):
        if ch == "#" and (i == 0 or raw[i - 1] in " \t") and not any(a <= i < b for a, b in spans):
            return raw[i:]
    return None


def check_plain(value: Any, where: str) -> None:
    """Raise unless `value` is plain JSON data: what a parameter may hold and what reaches papermill."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"{where}: {value!r} is not a finite number")
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ParameterError(f"{where}: key {k!r} is not a string")
            check_plain(v, f"{where}[{k!r}]")
        return
    raise ParameterError(f"{where}: {type(value).__name__} {value!r} is not plain data "
                         "(expected a string, number, true/false, null, list or mapping)")


_RANGE = re.compile(r"\brange\s+(?P<lo>[-+0-9.eE_]*)\.\.(?P<hi>[-+0-9.eE_]*)")


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
    """A range bound as written in a comment: a plain number (`1e-7`, `4294967295`), or empty."""
    text = text.strip().replace("_", "")
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ParameterError(f"cannot read range bound {text!r}: expected a number such as 1e-7") from None


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
    """Return `value` if it satisfies `spec` (nested values included), else raise a ParameterError
    naming `where`, the key, the value and what was expected."""
    d = spec.default
    if d is None:                                   # declared as None: any plain value
        _check_plain_param(spec, value, where)
        return value
    if isinstance(d, list):
        return _check_list(spec, value, where)
    if isinstance(d, dict):
        if not isinstance(value, dict):
            raise _bad(spec, value, where, "is not a mapping")
        _check_plain_param(spec, value, where)
        return value
    value = _check_scalar(spec, value, where)
    if spec.choices is not None and isinstance(value, str) and value not in spec.choices:
        raise _bad(spec, value, where, f"is not one of {'|'.join(spec.choices)}")
    _check_bounds(spec, value, where)
    return value


def _bad(spec: ParamSpec, value: Any, where: str, why: str) -> ParameterError:
    return ParameterError(f"{where}: {spec.name} = {value!r} {why} (declared: {spec.comment or spec.type_name})")


def _check_plain_param(spec: ParamSpec, value: Any, where: str) -> None:
    try:
        check_plain(value, spec.name)
    except ParameterError as e:
        raise ParameterError(f"{where}: {e} (declared: {spec.comment or spec.type_name})") from None


def _check_scalar(spec: ParamSpec, value: Any, where: str) -> Any:
    d = spec.default
    if isinstance(d, bool):
        if not isinstance(value, bool):
            raise _bad(spec, value, where, "is not a bool: expected true or false")
    elif isinstance(d, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(spec, value, where, "is not an int")
    elif isinstance(d, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(spec, value, where, "is not a number")
        if not math.isfinite(value):
            raise _bad(spec, value, where, "is not a finite number")
        value = float(value)
    elif isinstance(d, str):
        if value is None:
            raise _bad(spec, value, where, "is null (~): this parameter has no 'none'; write \"\" for an empty "
                                           "string, or leave the key out for the default")
        if not isinstance(value, str):
            raise _bad(spec, value, where, "is not a string")
    return value


def _check_list(spec: ParamSpec, value: Any, where: str) -> list:
    d = spec.default
    if not isinstance(value, list):
        raise _bad(spec, value, where, f"is not a list: expected {spec.type_name}")
    if not d:                                       # declared empty: elements of any plain type
        _check_plain_param(spec, value, where)
        return value
    if not value:
        raise _bad(spec, value, where, f"is an empty list: expected at least one element ({spec.type_name})")
    first = float(d[0]) if isinstance(d[0], int) and any(isinstance(x, float) for x in d) else d[0]
    inner = ParamSpec(spec.name, first, spec.comment, spec.lo, spec.hi, spec.choices)
    return [check_value(inner, v, f"{where}, element {i}") for i, v in enumerate(value)]


def _check_bounds(spec: ParamSpec, value: Any, where: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
            raise _bad(spec, value, where, f"is out of range: expected {_fmt_range(spec)}")


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
        check_nested(spec.stem, key, resolved[key], where)
    return resolved


_PROFILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_profile_name(profile: object) -> str:
    """A profile is one plain name of a folder under params/: never a path (``/``, ``..``, empty,
    absolute), since it also names the run folder and the files read."""
    root = paths.PARAMS
    known = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []
    if isinstance(profile, str) and _PROFILE.fullmatch(profile) and profile in known:
        return profile
    hint = difflib.get_close_matches(str(profile), known, n=1)
    did = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ParameterError(f"unknown profile {profile!r}: expected the plain name of a folder under {root}{did} "
                         f"(profiles: {', '.join(known) or 'none'})")


def load_profile_file(profile: str, stem: str) -> tuple[dict[str, Any], Path]:
    """Read ``params/<profile>/<stem>.yaml``; a missing file means no overrides."""
    check_profile_name(profile)
    path = paths.params_path(profile, stem)
    if not path.exists() and not path.is_symlink():
        return {}, path
    if not path.is_file():
        raise ParameterError(f"{path}: not a readable YAML file (a folder, a broken link or a device); the profile "
                             f"folder may hold only <notebook>.yaml files")
    if path.stat().st_size > _MAX_YAML_BYTES:
        raise ParameterError(f"{path}: {path.stat().st_size} bytes; a parameter file is at most {_MAX_YAML_BYTES}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ParameterError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason}); save the file as UTF-8") from None
    except yaml.YAMLError as e:
        raise ParameterError(f"{path}: invalid YAML: {e}") from None
    except ParameterError as e:
        raise ParameterError(f"{path}: {e}") from None
    if data is None:
        return {}, path
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping of parameter: value, got {type(data).__name__}")
    return data, path


def parse_set(items: list[str], stem_of=lambda nb: nb) -> dict[str, dict[str, Any]]:
    """``["02_stage1.epochs=3", "00.seed=1"]`` -> ``{"02_stage1": {"epochs": 3}, "00": {"seed": 1}}``.

    ``stem_of`` maps what the user wrote before the dot to a notebook (``00`` -> ``00_data_audit``), so
    that the same key given twice under either spelling is caught: that is an error naming both values.
    """
    out: dict[str, dict[str, Any]] = {}
    given: dict[tuple[str, str], str] = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ParameterError(f"--set {item!r}: expected NOTEBOOK.KEY=VALUE, e.g. 02_stage1.epochs=3")
        lhs, raw = item.split("=", 1)
        nb, key = lhs.split(".", 1)
        nb = stem_of(nb)
        if (nb, key) in given:
            raise ParameterError(f"--set gives {nb}.{key} twice ({given[(nb, key)]!r} and {item!r}); give it once")
        given[(nb, key)] = item
        comment = cut_comment(raw)
        if comment is not None:
            raise ParameterError(f"--set {item!r}: {comment!r} would be read as a YAML comment and cut from the "
                                 f"value; quote the value to keep it, e.g. {lhs}='\"{raw}\"'")
        try:
            value = load_yaml(raw) if raw.strip() else ""     # `--set nb.key=`: the empty string
        except yaml.YAMLError as e:
            raise ParameterError(f"--set {item!r}: value is not valid YAML: {e}") from None
        except ParameterError as e:
            raise ParameterError(f"--set {item!r}: {e}") from None
        out.setdefault(nb, {})[key] = value
    return out
