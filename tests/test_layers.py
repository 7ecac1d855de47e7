"""The package's imports follow its layers (docs/architecture.md, "Layers").

Read from the source with the standard library's ``ast``, so nothing is imported: every
``import`` and ``from ... import`` counts, also those inside functions and under
``if TYPE_CHECKING:`` (a lazy or type-only import still ties two modules together).

Three rules, each checked on its own so a failure names what broke:

1. **Layers point down.** Every module belongs to a layer through its top-level package; a
   module may import its own layer and the layers below it, never one above.
2. **Named boundaries** that the layers alone would allow: the engine sees the database only
   through the port it is handed (``engine.port``); what runs in a Ray job (tasks, ml,
   runner) never touches the database or the server's logic.
3. **No import circles** anywhere inside ``clowder_ml``.

A new top-level package must be given a layer here before its first import can pass.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "clowder_ml"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

# Highest first. "" is the top-level package itself (``clowder_ml/__init__.py``).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("interfaces", frozenset({"", "__main__", "cli", "api", "clowder", "demo"})),
    ("sdk", frozenset({"client"})),
    ("logic", frozenset({"services", "registry"})),
    ("node", frozenset({"runner", "tasks", "ml"})),
    ("parts", frozenset({"engine", "sandbox", "storage", "db"})),
    ("base", frozenset({"settings", "errors", "logs"})),
)

# (importing package, imported package): forbidden although the layers would allow it.
BOUNDARIES: dict[tuple[str, str], str] = {
    ("engine", "db"): "the engine learns about jobs only through engine.port.JobStore",
    **{(node, below): "code that runs in a Ray job talks to the server only through "
                      "the runner's API client"
       for node in ("tasks", "ml", "runner") for below in ("db", "storage")},
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, dotted
    target: str  # imported module, dotted (the nearest module for ``from m import name``)
    line: int


def module_name(root: Path, path: Path) -> str:
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def collect_modules(root: Path) -> dict[str, Path]:
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def _resolve_relative(source: str, is_package: bool, level: int, module: str | None) -> str:
    base = source.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def collect_imports(root: Path) -> tuple[dict[str, Path], list[Import]]:
    """Every import from one module of the package to another."""
    modules = collect_modules(root)
    found: dict[Import, None] = {}  # insertion-ordered set
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (_resolve_relative(name, path.name == "__init__.py", node.level,
                                          node.module) if node.level else node.module or "")
                # ``from pkg import sub`` imports the module pkg.sub; ``from m import f``, m.
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    found[Import(name, target, node.lineno)] = None
    return modules, list(found)


def top_package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int | None:
    top = top_package(module)
    for rank, (_, packages) in enumerate(LAYERS):
        if top in packages:
            return rank
    return None


def layer_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is None or dst is None:
            continue  # reported by unplaced_modules
        if dst < src:
            bad.append(f"{imp.source}:{imp.line} imports {imp.target}: layer "
                       f"{LAYERS[src][0]!r} must not import the higher layer {LAYERS[dst][0]!r}")
    return bad


def boundary_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        why = BOUNDARIES.get((top_package(imp.source), top_package(imp.target)))
        if why:
            bad.append(f"{imp.source}:{imp.line} imports {imp.target}: {why}")
    return bad


def unplaced_modules(modules: dict[str, Path]) -> list[str]:
    return sorted({top_package(m) for m in modules if layer_of(m) is None})


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Each strongly connected group of two or more modules (Tarjan), as one cycle in it."""
    graph: dict[str, set[str]] = defaultdict(set)
    for imp in imports:
        graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:  # recursion depth is bounded by the number of modules
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
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, group) for group in groups]


def _one_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    return [*paths[v], start]
                if w not in paths:
                    paths[w] = [*paths[v], w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # impossible for an SCC


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, Path], list[Import]]:
    return collect_imports(ROOT)


def test_every_top_level_package_has_a_layer(package: tuple[dict[str, Path], list[Import]]
                                             ) -> None:
    modules, _ = package
    assert unplaced_modules(modules) == [], "give each new package a layer in LAYERS"


def test_layers_point_down(package: tuple[dict[str, Path], list[Import]]) -> None:
    assert layer_violations(package[1]) == []


def test_named_boundaries_hold(package: tuple[dict[str, Path], list[Import]]) -> None:
    assert boundary_violations(package[1]) == []


def test_no_import_circles(package: tuple[dict[str, Path], list[Import]]) -> None:
    assert [" -> ".join(c) for c in import_cycles(package[1])] == []


def test_the_reader_sees_every_kind_of_import(package: tuple[dict[str, Path], list[Import]]
                                              ) -> None:
    """Guards the guard: lazy, type-only, relative and ``from pkg import module`` imports of
    the real package are all found (so an empty violation list means something)."""
    _, imports = package
    edges = {(i.source, i.target) for i in imports}
    assert ("clowder_ml.__main__", "clowder_ml.cli") in edges
    assert len(edges) > 200


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_rules_catch_what_they_forbid(tmp_path: Path) -> None:
    """A made-up package with one of each fault: the checks must report exactly those."""
    root = _write(tmp_path / PACKAGE, {
        "__init__.py": "",
        "errors.py": "",
        "engine/__init__.py": "",
        # lazy upward import + the engine reaching the database
        "engine/dispatcher.py": "def f():\n    from clowder_ml.services import jobs\n"
                                "from clowder_ml.db import models\n",
        "services/__init__.py": "",
        # a circle through a relative, type-only import
        "services/jobs.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                            "    from .runs import X\n",
        "services/runs.py": "from clowder_ml.services import jobs\nimport clowder_ml.errors\n",
        "db/__init__.py": "",
        "db/models.py": "",
        "tasks/__init__.py": "",
        "tasks/train.py": "from clowder_ml.db.models import Job\n",
        "mystery/__init__.py": "",
    })
    modules, imports = collect_imports(root)
    assert unplaced_modules(modules) == ["mystery"]
    assert layer_violations(imports) == [
        "clowder_ml.engine.dispatcher:2 imports clowder_ml.services.jobs: layer 'parts' must "
        "not import the higher layer 'logic'"]
    assert [v.split(":")[0] for v in boundary_violations(imports)] == [
        "clowder_ml.engine.dispatcher", "clowder_ml.tasks.train"]
    assert import_cycles(imports) == [
        ["clowder_ml.services.jobs", "clowder_ml.services.runs", "clowder_ml.services.jobs"]]
