"""The package's shape: no import cycle inside ``syncd/``, and no module a reader cannot hold in mind.

Imports are read from the source (``ast``), including those inside functions: a function-level import
hides a cycle from Python's import machinery but not from a reader following the code. Imports under
``if TYPE_CHECKING:`` are left out: they name a type for the checker (a handler module naming the emulator
class that calls it) and are never executed, so they order nothing at runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "syncd"

MAX_LINES = 600
# Modules kept over MAX_LINES, each with the reason (the sandbox is held to the same bar).
KEPT_LARGER: dict[str, str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``syncd`` modules ``name`` imports. ``from syncd.x import y`` is ``syncd.x.y`` when that is a
    module, else ``syncd.x``; a relative import is resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:`` (its ``else:`` branch is kept)."""
    out: list[ast.AST] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_no_import_cycle_inside_syncd() -> None:
    graph = import_graph()
    assert graph["syncd.cli"], "the graph must see imports (syncd.cli imports other syncd modules)"
    found = cycles(graph)
    detail = [
        " -> ".join(c) + "  (" + "; ".join(f"{m} imports {sorted(graph[m] & set(c))}" for m in c) + ")"
        for c in found
    ]
    assert not found, "import cycles inside syncd/:\n" + "\n".join(detail)


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    source = tmp_path / "web.py"
    source.write_text("def page():\n    from syncd.cli import status_data\n    return status_data\n")
    assert imports_of("syncd.web", source, {"syncd.cli", "syncd.web"}) == {"syncd.cli"}
    typed = tmp_path / "handlers.py"
    typed.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from syncd.emulator import E\n"
    )
    assert imports_of("syncd.handlers", typed, {"syncd.emulator", "syncd.handlers"}) == set()


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_600_lines(name: str) -> None:
    lines = len(modules()[name].read_text().splitlines())
    if name in KEPT_LARGER:
        pytest.skip(f"{name}: {lines} lines, kept: {KEPT_LARGER[name]}")
    assert lines <= MAX_LINES, (
        f"{name} has {lines} lines: split it by concern (or name it in KEPT_LARGER, why)"
    )
