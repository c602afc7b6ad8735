"""The package's import graph, read from the source (every import, those inside functions
too): no circle anywhere, and the spec's schema imports nothing else of sweep, so every
layer can take the spec's types from it."""

from __future__ import annotations

import ast

from .conftest import REPO

PACKAGE = REPO / "sweep"


def _module_of(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of `sweep` it imports (`from . import x` counts as importing x)."""
    modules = {_module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                target = ".".join(p for p in (base, node.module or "") if p)
                for alias in node.names:
                    found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle (one path around each strongly connected part), by depth-first search."""
    found, state = [], {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(trail[trail.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_package_has_no_import_circle():
    graph = import_graph()
    assert {"sweep.spec", "sweep.schema", "sweep.axes", "sweep.checks"} <= set(graph)  # the graph was read
    assert "sweep.schema" in graph["sweep.spec"] and "sweep.checks" in graph["sweep.axes"]
    assert circles(graph) == []


def test_the_spec_schema_imports_nothing_of_sweep():
    assert import_graph()["sweep.schema"] == set()


def test_a_circle_is_found_where_there_is_one():
    """The search itself: a graph with a circle through three modules is caught."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_test_has_a_time_limit(request):
    """One that hangs fails at its limit with its stack (pytest-timeout) instead of holding CI
    for its 90 minutes: tests/conftest.py gives each collected test its tier's limit."""
    assert request.config.pluginmanager.hasplugin("timeout")
    items = request.session.items
    assert request.node in items  # what was collected, this test among them
    assert [i.nodeid for i in items if i.get_closest_marker("timeout") is None] == []
