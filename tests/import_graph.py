"""The import graph of ``synchuman_core`` and ``nodes``, read from the source with :mod:`ast` (nothing is imported).

Every ``import``/``from ... import`` counts, at module level and inside functions (a lazy import is still a
dependency and still closes a cycle), except those under ``if TYPE_CHECKING:``. ``from pkg import name``
is an edge to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``). Importing a module
also runs its parent packages' ``__init__``; that implicit edge is not counted (a package's ``__init__``
re-exporting its submodules would otherwise make every package a cycle).

``python tests/import_graph.py`` prints a compact summary: for each module, the project modules it imports.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synchuman_core", "nodes")


@dataclass
class ImportGraph:
    """``edges[module]`` = the project modules it imports, with the line numbers."""

    modules: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    external: dict[str, set[str]] = field(default_factory=dict)

    def imports(self, module: str) -> set[str]:
        return set(self.edges.get(module, {}))

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (or a module importing itself)."""
        return [c for c in _tarjan(self.modules, self.edges) if len(c) > 1 or c[0] in self.edges.get(c[0], {})]

    def path(self, src: str, dst_prefixes: tuple[str, ...]) -> list[str] | None:
        """A shortest import chain from ``src`` to a module under one of ``dst_prefixes`` (None: none)."""
        prev: dict[str, str | None] = {src: None}
        queue = [src]
        while queue:
            cur = queue.pop(0)
            if cur != src and in_any(cur, dst_prefixes):
                chain = [cur]
                while prev[chain[-1]] is not None:
                    chain.append(prev[chain[-1]])  # type: ignore[arg-type]
                return chain[::-1]
            for nxt in sorted(self.edges.get(cur, {})):
                if nxt not in prev:
                    prev[nxt] = cur
                    queue.append(nxt)
        return None

    def summary(self, depth: int = 2) -> str:
        """One line per group (module path cut to ``depth`` parts): the groups it imports."""
        groups: dict[str, set[str]] = {}
        for m, targets in self.edges.items():
            g = _group(m, depth)
            groups.setdefault(g, set())
            groups[g] |= {_group(t, depth) for t in targets if _group(t, depth) != g}
        for m in self.modules:
            groups.setdefault(_group(m, depth), set())
        return "\n".join(f"{g} -> {', '.join(sorted(ts)) or '(nothing)'}" for g, ts in sorted(groups.items()))


def in_any(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _group(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def build_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> ImportGraph:
    g = ImportGraph()
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            g.modules[module_name(path, root)] = path
    known = set(g.modules)
    for mod, path in g.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        out = g.edges.setdefault(mod, {})
        ext = g.external.setdefault(mod, set())

        def add(target: str, line: int, out: dict[str, list[int]] = out, ext: set[str] = ext) -> None:
            if target in known:
                out.setdefault(target, []).append(line)
            elif target.split(".")[0] not in PACKAGES:
                ext.add(target.split(".")[0])

        for node in _import_nodes(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    add(_closest_known(alias.name, known), node.lineno)
                continue
            base = _resolve_from(node, mod, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                add(sub if sub in known else _closest_known(base, known), node.lineno)
    return g


def _closest_known(name: str, known: set[str]) -> str:
    """``a.b.c`` -> the longest known prefix (``import a.b.c`` runs ``a.b.c``; an unknown tail is an attribute)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        cand = ".".join(parts[:i])
        if cand in known:
            return cand
    return name


def _tarjan(nodes: Iterable[str], edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    graph = build_graph()
    depth = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    sys.stdout.write(graph.summary(depth) + "\n")
    cyc = graph.cycles()
    sys.stdout.write(f"cycles: {len(cyc)}\n" + "".join(f"  {' <-> '.join(c)}\n" for c in cyc))
