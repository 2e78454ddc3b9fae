"""The project's first-party source, read as data: which modules exist, what each imports, which string
literals hold SQL. Pure ``ast`` over the files (nothing is imported), so the tests need no server.

First-party packages are the ``src/nattery_*`` folders of the workspace members (shared/contracts,
shared, services/*, edge/*). Tests, benchmarks and infrastructure scripts are not part of them.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_GLOBS = (
    "shared/contracts/src/nattery_*",
    "shared/data/src/nattery_*",
    "shared/src/nattery_*",
    "services/*/src/nattery_*",
    "edge/*/src/nattery_*",
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted: nattery_device.devices.service
    path: Path
    is_package: bool  # an __init__.py

    @property
    def rel(self) -> str:
        return self.path.relative_to(ROOT).as_posix()


@cache
def package_roots() -> tuple[Path, ...]:
    return tuple(sorted(p for pattern in PACKAGE_GLOBS for p in ROOT.glob(pattern) if p.is_dir()))


@cache
def modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for root in package_roots():
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found[".".join(parts)] = Module(".".join(parts), path, is_package)
    return found


@cache
def tree(module: Module) -> ast.Module:
    return ast.parse(module.path.read_text(), filename=str(module.path))


def _resolve(name: str, known: dict[str, Module]) -> str | None:
    """The first-party module ``name`` refers to: itself, or the nearest enclosing module that exists
    (``from pkg import Thing`` imports ``pkg``); None for third-party and standard library."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _relative_base(module: Module, level: int) -> str:
    package = module.name if module.is_package else module.name.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package


def _import_nodes(module_tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth: a lazy import inside a function is still a dependency, and
    one under ``if TYPE_CHECKING:`` too (the design has the cycle even if the run time does not)."""
    for node in ast.walk(module_tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


@cache
def imports_of(name: str) -> frozenset[str]:
    """First-party modules that module ``name`` imports (run-time imports, resolved to modules)."""
    known = modules()
    module = known[name]
    out: set[str] = set()
    for node in _import_nodes(tree(module)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _relative_base(module, node.level) if node.level else ""
            source = ".".join(p for p in (base, node.module or "") if p)
            # ``from pkg import sub`` imports the submodule when there is one, else a name from pkg
            targets = [
                f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                for alias in node.names
            ]
        for target in targets:
            resolved = _resolve(target, known)
            if resolved is not None and resolved != name:
                out.add(resolved)
    return frozenset(out)


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """Module -> the first-party modules it imports. Only explicit imports: importing ``a.b.c`` also
    runs ``a/__init__`` and ``a/b/__init__``, but those implicit edges are not design dependencies."""
    return {name: imports_of(name) for name in modules()}


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One concrete cycle (``[a, b, ..., a]``) per strongly connected component that has one."""
    return [_cycle_in(component, graph) for component in cyclic_components(graph)]


def cyclic_components(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """The strongly connected components that contain a cycle (two modules or more, or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(root: str) -> None:  # Tarjan, iterative (no recursion limit on long chains)
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component: set[str] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, ()):
                    components.append(component)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return components


def _cycle_in(component: set[str], graph: Mapping[str, Iterable[str]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first inside the component)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt: list[str] = []
        for node in frontier:
            for child in sorted(graph.get(node, ())):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child in component and child not in previous:
                    previous[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # unreachable for a strongly connected component


# --- SQL in string literals -------------------------------------------------------------------------
# A string literal "is SQL" when, after leading whitespace, ``(`` and ``--`` comment lines, it begins
# with the keywords of a statement (upper case, as every query in this project is written), or with a
# clause that only a query builder writes (`` WHERE x``, `` ORDER BY``, ``ON CONFLICT``, ...). Upper
# case only, so prose ("select a site", "Update the plan") never counts; docstrings are skipped.
SQL_START = re.compile(
    r"""^(?:\s|\(|--[^\n]*\n)*(?:
        SELECT\s+(?:DISTINCT\s+)?[\w*"(]
      | INSERT\s+INTO\s
      | UPDATE\s+[\w."]+\s+SET\s
      | DELETE\s+FROM\s
      | WITH\s+(?:RECURSIVE\s+)?\w+\s+(?:\([^)]*\)\s+)?AS\s+(?:NOT\s+)?(?:MATERIALIZED\s+)?\(
      | (?:CREATE|ALTER|DROP)\s+(?:UNIQUE\s+|OR\s+REPLACE\s+|TEMP\s+|TEMPORARY\s+)*
            (?:TABLE|INDEX|SCHEMA|VIEW|MATERIALIZED\s+VIEW|SEQUENCE|TYPE|FUNCTION|TRIGGER|EXTENSION)\b
      | TRUNCATE\s
      | (?:WHERE|AND|OR)\s+[\w."]+\s*(?:=|<>|!=|<=|>=|<|>|\bIN\b|\bIS\b|\bLIKE\b|\bILIKE\b|=\s*ANY)
      | (?:ORDER|GROUP)\s+BY\s
      | ON\s+CONFLICT\b
      | RETURNING\s
      | (?:LEFT\s+|INNER\s+)?JOIN\s+[\w."]+\s
      | LIMIT\s+%s
      | PRAGMA\s
    )""",
    re.VERBOSE,
)


def _docstrings(module_tree: ast.Module) -> set[int]:
    ids: set[int] = set()
    for node in ast.walk(module_tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def sql_literals(module: Module) -> list[tuple[int, str]]:
    """(line, first line of the text) of every string literal in ``module`` that is SQL (see above).
    F-strings count by their literal parts."""
    module_tree = tree(module)
    skip = _docstrings(module_tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(module_tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        if SQL_START.match(node.value):
            found.append((node.lineno, node.value.strip().splitlines()[0][:80]))
    return found


def is_sql_home(module: Module) -> bool:
    """Where SQL belongs: a ``repository.py`` (or ``*_repository.py``), a ``repositories/`` package,
    or a ``migrations/`` folder."""
    parts = module.path.relative_to(ROOT).parts
    return (
        module.path.name == "repository.py"
        or module.path.name.endswith("_repository.py")
        or "repositories" in parts
        or "migrations" in parts
    )
