"""The compiler's modules import each other without a cycle, and the stages in pipeline order.

Every module under compiler/ is parsed with `ast`; an import anywhere in it counts, also one
inside a function (a cycle hidden that way still ties the modules together), except under
`if TYPE_CHECKING:` (never run). One kind of edge is left out: a package's `__init__` importing
its own submodules inside a function (checks.run_checks): Python loads a package before any of
its submodules, so a submodule reading its package (`from . import Context`) cannot meet a
half-loaded package there.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPILER = ROOT / "compiler"


def _modules() -> dict[str, tuple[Path, bool]]:
    """compiler.x.y -> (file, is a package's __init__)."""
    found = {}
    for path in sorted(COMPILER.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:`."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def _in_function(tree: ast.AST) -> set[int]:
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return inside


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module -> the compiler modules it imports (a name imported from a package that is one of
    its submodules counts as that submodule)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        skip, local = _type_checking_blocks(tree), _in_function(tree)
        deps: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import compiler.x.y` names a module or its package
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                if package and target.startswith(name + ".") and id(node) in local:
                    continue  # the package's registry of its own submodules (module docstring)
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component that has one."""
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
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_path_within(graph, component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path_within(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle in {component}")


def test_the_graph_sees_function_level_imports():
    """The parser is the thing under test: imports inside functions are edges too."""
    graph = import_graph()
    assert "compiler.pipeline" in graph["compiler.cli"]          # `from .pipeline import check_file` in cmd_check
    assert "compiler.render.luks" in graph["compiler.secrets"]    # inside needed()
    assert "compiler.diagnostics" in graph["compiler.media.medium"]
    assert "compiler.load" not in graph["compiler.diagnostics"]   # only under TYPE_CHECKING


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_compilers_modules():
    found = cycles(import_graph())
    assert not found, "import cycles among compiler's modules:\n" + "\n".join("  " + " -> ".join(c) for c in found)


def _imports_of(prefix: str) -> dict[str, set[str]]:
    return {m: deps for m, deps in import_graph().items() if m == prefix or m.startswith(prefix + ".")}


def _offending(prefix: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(f"{m} imports {d}" for m, deps in _imports_of(prefix).items() for d in deps
                  if any(d == f or d.startswith(f + ".") for f in forbidden) and d not in allowed)


@pytest.mark.parametrize("stage, later, allowed", [
    # render makes the bundle: the media, the secrets directory and the store come after it; of
    # the media it reads only their layout (what %post finds where)
    ("compiler.render", ("compiler.media", "compiler.secrets", "compiler.store", "compiler.pipeline", "compiler.cli",
                         "compiler.vps_archive"), ("compiler.media.layout",)),
    # the checks judge the model: nothing rendered, assembled or stored yet
    ("compiler.checks", ("compiler.render", "compiler.media", "compiler.secrets", "compiler.store", "compiler.pipeline",
                         "compiler.cli", "compiler.derive"), ("compiler.media.layout",)),
    # the media read a bundle, never the blueprint's compilation or the CLI
    ("compiler.media", ("compiler.render", "compiler.pipeline", "compiler.secrets", "compiler.cli",
                        "compiler.checks", "compiler.derive"), ()),
])
def test_stages_import_only_earlier_stages(stage, later, allowed):
    assert not _offending(stage, later, allowed)


def test_the_layout_is_a_leaf():
    """Kickstart, cloud-init, media and secrets all read it: it reads nothing of moat's."""
    assert import_graph()["compiler.media.layout"] == set()
    assert import_graph()["compiler.media"] == set()  # reading the layout loads no other media module
