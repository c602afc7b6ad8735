"""The package's shape, read from the source (every import, those inside functions too): no
import circle; sub-packages in layers, each importing only those below it (a few known
exceptions, listed); imports inside functions only where they defer a heavy library; a short
top level and no long module. docs/layout.md draws the same house."""

from __future__ import annotations

import ast
import functools

from tests.conftest import REPO

PACKAGE = REPO / "sweep"


# Bottom to top: a module may import its own layer and those below it.
LAYERS = [
    {"errors", "files", "secrets", "compat"},  # imports nothing of sweep above it
    {"runtime"},  # how processes start and share work
    {"builtin", "data"},  # the embedded default, preference data
    {"spec"},  # what a sweep is
    {"record"},  # the MLflow record
    {"trial"},  # one trial
    {"reports"},  # reading a sweep
    {"driver"},  # the sweep as a whole
    {"api", "cli", "__main__", ""},  # the front ("" = the package's own __init__)
]


# Imports that point up a layer, each for a reason: the data's loader takes the spec's dataset
# type (the schema imports nothing of sweep); the spec's checks parse the judge's scorers with the
# parser the trial runs them by (scorers.py imports nothing of sweep but its errors).
UPWARD = {("sweep.data", "sweep.spec.schema"), ("sweep.spec.checks", "sweep.trial.scorers")}


# Heavy to import (seconds, or a C extension at start-up): an import inside a function that
# brings one of them in is what lets `--help`, `plan` and a trial's light paths start fast.
HEAVY = {
    "torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "mlflow", "ray",
    "pandas", "numpy", "matplotlib", "optuna", "sklearn", "scipy", "pydantic", "rich", "sqlalchemy",
    "huggingface_hub", "yaml",
}  # fmt: skip


def _module_of(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_of(p): p for p in PACKAGE.rglob("*.py")}


def _target(name: str, node: ast.ImportFrom) -> str:
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return ".".join(p for p in ((base if node.level else ""), node.module or "") if p)


def _imports(name: str, nodes) -> tuple[set[str], set[str]]:
    """(modules of sweep, top-level names of other libraries) imported by `nodes` of module `name`;
    `from . import x` counts as importing x."""
    mine, others = set(), set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            target = _target(name, node)
            if target == "sweep" or target.startswith("sweep."):
                mine |= {f"{target}.{a.name}" if f"{target}.{a.name}" in MODULES else target for a in node.names}
            else:
                others.add(target.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                (mine if alias.name.split(".")[0] == "sweep" else others).add(alias.name.split(".")[0])
    return {m for m in mine if m in MODULES and m != name}, others


def _tree(name: str) -> ast.Module:
    return ast.parse(MODULES[name].read_text())


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of `sweep` it imports, anywhere in it."""
    return {name: _imports(name, ast.walk(_tree(name)))[0] for name in MODULES}


def _top_level(tree: ast.Module):
    """The statements run as the module is imported (those under a top-level if/try too, but
    `if TYPE_CHECKING:`)."""
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        if isinstance(node, (ast.If, ast.Try)):
            yield from _top_level(ast.Module(body=node.body + getattr(node, "orelse", []), type_ignores=[]))


@functools.cache
def _loads(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(sweep modules, heavy libraries) importing module `name` runs at once: its top-level
    imports and its packages' __init__ files."""
    mine, others = _imports(name, _top_level(_tree(name)))
    parts = name.split(".")
    mine |= {".".join(parts[:i]) for i in range(1, len(parts))} - {name}
    return frozenset(mine), frozenset(others & HEAVY)


def heavy(name: str) -> set[str]:
    """The heavy libraries importing module `name` loads, through every module it loads."""
    seen, todo, found = {name}, [name], set()
    while todo:
        mine, libraries = _loads(todo.pop())
        found |= libraries
        todo += [m for m in mine if m not in seen]
        seen |= mine
    return found


def layer(module: str) -> int:
    top = module.removeprefix("sweep").removeprefix(".").split(".")[0]
    return next(i for i, names in enumerate(LAYERS) if top in names)


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
    assert {"sweep.spec.load", "sweep.spec.schema", "sweep.spec.axes", "sweep.spec.checks"} <= set(graph)  # read
    assert "sweep.spec.schema" in graph["sweep.spec.load"] and "sweep.spec.checks" in graph["sweep.spec.axes"]
    assert circles(graph) == []


def test_a_circle_is_found_where_there_is_one():
    """The search itself: a graph with a circle through three modules is caught."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_every_module_belongs_to_a_layer_and_imports_none_above_it_but_the_listed():
    graph = import_graph()
    assert all(isinstance(layer(m), int) for m in graph)  # a new top-level name must be given a layer
    upward = {(m, t) for m, targets in graph.items() for t in targets if layer(t) > layer(m)}
    assert upward == UPWARD
    assert len(UPWARD) <= 5
    # ...and the check does see an import up a layer: the trial's run imports the record, not back
    assert layer("sweep.trial.run") > layer("sweep.record.tracking") > layer("sweep.spec.schema")


def test_the_spec_schema_imports_nothing_of_sweep():
    """Every layer takes the spec's types from it."""
    assert import_graph()["sweep.spec.schema"] == set()


def test_an_import_inside_a_function_defers_a_heavy_library():
    """A module of sweep imported inside a function must bring a heavy library its importer does
    not load (or be one of `sweep.compat`'s doors to another library's internals, imported only
    where used, so another version fails there and not at start-up); otherwise it belongs at the top."""
    lazy = []
    for name in MODULES:
        for fn in ast.walk(_tree(name)):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = [n for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))]
                for target in _imports(name, inner)[0]:
                    if not target.startswith("sweep.compat") and not heavy(target) - heavy(name):
                        lazy.append(f"{name} imports {target} in {fn.name}")
    assert lazy == []
    assert "transformers" in heavy("sweep.trial.callbacks") and heavy("sweep.spec.schema") == {"pydantic"}


def test_a_short_top_level_and_no_long_module():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 10, top
    long = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 420
    }
    assert long == {}


def test_the_folder_decides_a_tests_tier():
    """`-m integration` collects tests/integration and `-m "not integration"` tests/unit, whatever
    fixtures their tests ask for: moving a file moves its tier, renaming a fixture moves none."""
    import subprocess
    import sys

    def files(*marker: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n0", "-p", "no:randomly", *marker, "tests"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=100,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}

    integration, fast = files("-m", "integration"), files("-m", "not integration")
    assert integration == {str(p.relative_to(REPO)) for p in (REPO / "tests" / "integration").glob("test_*.py")}
    assert fast == {str(p.relative_to(REPO)) for p in (REPO / "tests" / "unit").rglob("test_*.py")}


def test_every_test_has_a_time_limit(request):
    """One that hangs fails at its limit with its stack (pytest-timeout) instead of holding CI
    for its 90 minutes: tests/conftest.py gives each collected test its tier's limit."""
    assert request.config.pluginmanager.hasplugin("timeout")
    items = request.session.items
    assert request.node in items  # what was collected, this test among them
    assert [i.nodeid for i in items if i.get_closest_marker("timeout") is None] == []
