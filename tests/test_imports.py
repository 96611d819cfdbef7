"""The package's import graph: no cycle, and the CLI is a leaf.

Every import statement counts, inside functions and `if TYPE_CHECKING:` blocks too: an import moved
into a function hides a cycle from Python's loader, not from the design.
"""

import ast
from pathlib import Path

import speechx_cli

ROOT = Path(speechx_cli.__file__).parent
PACKAGE = ROOT.name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package's modules an import statement names (`from . import x` names module x)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
            base = ".".join(base + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    return {n for n in names if n in modules}


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(node, module, path.name == "__init__.py", set(files))
        graph[module] = edges - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

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
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_everywhere():
    graph = import_graph()
    assert f"{PACKAGE}.cli" in graph[f"{PACKAGE}.__main__"]
    assert f"{PACKAGE}.api" in graph[PACKAGE]  # a function-level import, in __getattr__
    assert f"{PACKAGE}.pipeline" in graph[f"{PACKAGE}.api"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_cli_is_a_leaf():
    """Only the entry point imports the command modules; eval's commands share commands.py, not cli.py."""
    graph = import_graph()
    leaves = {f"{PACKAGE}.cli", f"{PACKAGE}.eval.cli"}
    importers = {m: sorted(k for k, v in graph.items() if m in v) for m in leaves}
    assert importers == {f"{PACKAGE}.cli": [f"{PACKAGE}.__main__"], f"{PACKAGE}.eval.cli": [f"{PACKAGE}.cli"]}
