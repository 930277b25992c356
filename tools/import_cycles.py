"""Find import cycles between the modules of the given packages; `make lint` runs it.

    python tools/import_cycles.py [--root DIR] PACKAGE...

An import counts as a run-time edge when it executes while its module is being imported: at
module level, in a class body, or under any `if`/`try` there. Imports inside functions and under
`if TYPE_CHECKING:` do not, so cycles that need them are listed as notes only. Exit status is 1
when a run-time cycle exists (each is printed as `a -> b -> a`), 0 otherwise.

Only `import` statements are seen: `importlib.import_module` and `__import__` calls are not.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

RUNTIME, TYPE_CHECKING, DEFERRED = "at run time", "under TYPE_CHECKING", "inside a function"

Graph = dict[str, set[str]]


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Map each dotted module name under `packages` (directories of `root`) to its file."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Yield every import statement in `node` with when it runs (RUNTIME, ...)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, kind
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        kind = DEFERRED
    elif isinstance(node, ast.If) and kind == RUNTIME and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _imports(stmt, TYPE_CHECKING)
        for stmt in node.orelse:
            yield from _imports(stmt, kind)
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports(child, kind)


def _targets(stmt: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> Iterator[str]:
    """The dotted names `stmt`, found in `module`, may load: modules or package attributes."""
    if isinstance(stmt, ast.Import):
        yield from (alias.name for alias in stmt.names)
        return
    base = stmt.module or ""
    if stmt.level:
        # A relative import counts from the module's package; `level` dots climb level - 1 more.
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - stmt.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    yield base
    yield from (f"{base}.{alias.name}" for alias in stmt.names)


def build_graphs(modules: dict[str, Path]) -> dict[str, Graph]:
    """Edges between `modules`, one graph per kind of import (RUNTIME, TYPE_CHECKING, ...)."""
    graphs: dict[str, Graph] = {
        kind: {m: set() for m in modules} for kind in (RUNTIME, TYPE_CHECKING, DEFERRED)
    }
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for stmt, kind in _imports(tree, RUNTIME):
            for name in _targets(stmt, module, path.name == "__init__.py"):
                # `import a.b.c` runs a and a.b first but reads nothing from them, so only the
                # module it names is an edge.
                if name in modules and name != module:
                    graphs[kind][module].add(name)
    return graphs


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components with more than one module, each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def shortest_cycle(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as a closed path."""
    start, members = component[0], set(component)
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for succ in sorted(graph[node] & members):
            if succ == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if succ not in parent:
                parent[succ] = node
                queue.append(succ)
    raise ValueError(f"{component} is not strongly connected")


def _union(*graphs: Graph) -> Graph:
    return {node: set().union(*(g[node] for g in graphs)) for node in graphs[0]}


def report(graphs: dict[str, Graph]) -> tuple[list[str], list[str]]:
    """(errors, notes): run-time cycles, then cycles that also need imports of other kinds."""
    runtime = graphs[RUNTIME]
    cycles = strongly_connected(runtime)
    errors = ["import cycle: " + " -> ".join(shortest_cycle(runtime, c)) for c in cycles]
    notes = []
    # Cycles overlapping a run-time one are left out: they mostly restate it.
    known = {frozenset(c) for c in cycles}
    in_runtime_cycle = set().union(*known)
    with_more = runtime
    for kind in (TYPE_CHECKING, DEFERRED):
        with_more = _union(with_more, graphs[kind])
        for component in strongly_connected(with_more):
            if frozenset(component) not in known and in_runtime_cycle.isdisjoint(component):
                known.add(frozenset(component))
                cycle = " -> ".join(shortest_cycle(with_more, component))
                members = ", ".join(component)
                notes.append(f"cycle only with imports {kind}: {cycle} (among {members})")
    return errors, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", help="top-level package directories")
    parser.add_argument("--root", type=Path, default=Path("."), help="the directory holding them")
    args = parser.parse_args(argv)
    modules = find_modules(args.root, args.packages)
    errors, notes = report(build_graphs(modules))
    for line in notes:
        print(line)
    for line in errors:
        print(line, file=sys.stderr)
    print(
        f"{len(modules)} modules, {len(errors)} import cycles",
        file=sys.stderr if errors else sys.stdout,
    )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
