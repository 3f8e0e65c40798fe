"""The import graph of pairgen/ and segbench/ (every import statement, function-level ones included, read from
the AST): no cycles, and no product module importing the benchmark apparatus (perf/)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pairgen", "segbench")
# lazy (function-level) cycles tolerated: none
KNOWN_EDGES_IN_CYCLES: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports (`from a import b` counts as a.b when that is a module, else a)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p) for p in paths}
    # a package's __init__ runs before its submodules: importing pairgen.core.x imports pairgen.core too, but that
    # edge is not a dependency of x's code, so only the statements are edges here
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, …, a], or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_on_hand_graphs() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "pairgen.step" in graph and "pairgen.compiled" in graph["pairgen.step"]   # the graph is really read
    for source, target in KNOWN_EDGES_IN_CYCLES:
        graph[source].discard(target)
    assert find_cycle(graph) is None


def test_product_modules_do_not_import_perf() -> None:
    graph = import_graph()
    offenders = {m: sorted(t for t in targets if ".perf" in t) for m, targets in graph.items() if ".perf" not in m}
    assert {m: t for m, t in offenders.items() if t} == {}
