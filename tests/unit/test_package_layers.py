"""The package's layers: imports run one way, stage modules do not import each other, no circles.

Layers, lowest first: core <- data, models <- training <- evaluation <- stages <- reports <- workbook <- bench
and the entry modules (helpers/__main__.py, helpers/distributed.py). A module may import from its own
sub-package and from any lower layer; data and models are siblings (neither imports the other).
Evaluation sits above training because measuring a training step's speed needs a task's loss.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "helpers"
RANK = {"core": 0, "data": 1, "models": 1, "training": 2, "evaluation": 3, "stages": 4, "reports": 5, "workbook": 6,
        "bench": 7, "__main__": 7, "distributed": 7, "__init__": 7}


# The one module every stage module may import: the report words (templates and their phrases), no stage logic.
SHARED_STAGE_MODULES = {"helpers.stages.words"}


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def own_imports(path: Path, root: Path = ROOT) -> list[tuple[str, int, bool]]:
    """(imported helpers module, line, at module level) for every import of the package's own code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = module_name(path, root).split(".")
    is_pkg = path.name == "__init__.py"
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = me if is_pkg else me[:-1]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] if node.module is None or not node.module else [mod]
            if mod == "helpers" or node.module is None:
                names = [f"{mod}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for n in names:
            if n == "helpers" or n.startswith("helpers."):
                out.append((n, node.lineno, id(node) in top))
    return out


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(root: Path = ROOT) -> list[str]:
    """Every import that breaks the layer rules, as 'file:line: why'."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        me = module_name(path, root)
        mine = layer_of(me)
        for target, line, _ in own_imports(path, root):
            theirs = layer_of(target)
            where = f"{path.relative_to(root.parent)}:{line}"
            if theirs not in RANK:
                bad.append(f"{where}: imports {target}, which is in no layer")
            elif mine == theirs:
                if mine in ("stages", "reports") and target.split(".")[:3] != me.split(".")[:3] \
                        and target not in SHARED_STAGE_MODULES:
                    bad.append(f"{where}: {mine[:-1]} module {me} imports another {mine[:-1]} module {target}")
            elif RANK[theirs] >= RANK[mine] and mine not in ("__init__",):
                bad.append(f"{where}: {mine} (layer {RANK[mine]}) imports {target} ({theirs}, layer {RANK[theirs]})")
            elif mine == "__init__" and theirs not in ("core", "workbook"):
                bad.append(f"{where}: the package's __init__ imports {target}")
    return bad


def test_imports_follow_the_layers():
    assert violations() == []


def test_no_circular_imports_at_module_level():
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        graph[module_name(path)] = {t for t, _, top in own_imports(path) if top}
    known = set(graph)

    def resolve(t: str) -> str | None:  # `from helpers.core import io` names the module helpers.core.io
        while t and t not in known:
            t = t.rpartition(".")[0]
        return t or None

    edges = {m: {r for t in ts if (r := resolve(t)) and r != m} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if n.startswith(m + ".") or m.startswith(n + ".") and n.count(".") == 1:
                continue  # a package and its own modules
            if state.get(n) == 1:
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]) if n in stack else f"{m} -> {n}")
            elif n not in state:
                visit(n, stack + [n])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_the_layer_check_catches_a_forbidden_import(tmp_path):
    # A copy of the rule on a tiny fake package: a data module importing a stage module must be flagged,
    # and so must one stage module importing another.
    pkg = tmp_path / "helpers"
    for sub in ("core", "data", "stages"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "errors.py").write_text("X = 1\n")
    (pkg / "data" / "pairs.py").write_text("from helpers.core.errors import X\nfrom helpers.stages.stage1 import Y\n")
    (pkg / "stages" / "stage1.py").write_text("Y = 2\n")
    (pkg / "stages" / "stage2.py").write_text("from helpers.stages.stage1 import Y\n")
    found = violations(pkg)
    assert any("helpers/data/pairs.py:2" in v and "stages" in v for v in found), found
    assert any("helpers/stages/stage2.py:1" in v and "another stage module" in v for v in found), found
    assert not any("pairs.py:1" in v for v in found)


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_own_imports_inside_functions_say_why(path):
    """A function-level import of the package's own code is allowed only to defer a heavy import,
    with a comment on the line above or at the end of the line saying so."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for target, line, top in own_imports(path):
        if top:
            continue
        here, above = lines[line - 1], lines[line - 2] if line >= 2 else ""
        assert "#" in here or above.strip().startswith("#"), f"{path.name}:{line}: import of {target} inside a function without a reason"
