"""No function in helpers/ is longer than a screen (80 lines, decorators excluded), so each reads top to bottom."""
import ast
from pathlib import Path

HELPERS = Path(__file__).resolve().parents[2] / "helpers"
MAX_LINES = 80


def function_lengths(root: Path) -> list[tuple[int, str]]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root.parent)}:{node.lineno} {node.name}"))
    return out


def test_no_function_is_longer_than_a_screen():
    long = sorted(((n, where) for n, where in function_lengths(HELPERS) if n > MAX_LINES), reverse=True)
    assert not long, f"functions over {MAX_LINES} lines: {long}"


def test_the_count_sees_a_long_function(tmp_path):
    pkg = tmp_path / "helpers"
    pkg.mkdir()
    (pkg / "m.py").write_text("def f():\n" + "    x = 1\n" * (MAX_LINES + 1))
    assert function_lengths(pkg) == [(MAX_LINES + 2, "helpers/m.py:1 f")]
