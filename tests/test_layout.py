"""The package reads as the pipeline: commands -> tasks/engines -> stages -> scoring -> model,
with no import running back up, and no module grown past ~400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "codescaler_cli"

# Lower layers never import higher ones (modules of one layer may import each other).
LAYERS = [
    {"errors", "_version", "config", "progress", "fields", "tiny_model", "exactness", "provenance"},
    {"io", "extract", "shaping", "rank", "tables"},
    {"model", "cache"},
    {"scoring"},
    {"stages"},
    {"engines", "serve"},
    {"tasks", "api", "client"},
    {"cli", "__main__"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module_path: Path) -> str:
    rel = module_path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def _imported_tops(path: Path) -> set[str]:
    """Top-level package modules imported by ``path`` (relative or absolute imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    depth = len(path.relative_to(PACKAGE).parts) - 1  # package levels below codescaler_cli
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb to the package root, then the named module
                up = node.level - 1
                parts = (
                    list(path.relative_to(PACKAGE).parts[:-1])[: depth - up] if up <= depth else []
                )
                target = parts + (node.module.split(".") if node.module else [])
                if not target:  # "from . import x" at the root
                    target = [alias.name for alias in node.names]
                found.add(target[0])
            elif node.module and node.module.startswith("codescaler_cli."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("codescaler_cli."):
                    found.add(alias.name.split(".")[1])
    return found


def test_no_import_runs_back_up_the_pipeline():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = _top(path)
        if top == "__init__.py" or top == "__init__":
            continue
        for imported in _imported_tops(path):
            if LAYER_OF.get(imported, 0) > LAYER_OF[top]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert not wrong, wrong


def test_every_package_module_has_a_layer():
    tops = {_top(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert tops <= set(LAYER_OF), tops - set(LAYER_OF)


def test_no_module_over_400_lines_except_extraction():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420 and p.name != "extract.py"
    }
    assert not long, long
