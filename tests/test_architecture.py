"""The package's layering (docs/ARCHITECTURE.md): no import cycles between the modules or sub-packages of pathosynth.

A cycle makes a module impossible to read, test or pack on its own (``pack`` ships the modules a bundle's configs reach,
so a cycle drags unrelated code into every archive). Imports are read from the source, including those inside
functions, so a late import that hides a cycle at run time is still found.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "common"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def _imported(module: str, node: ast.AST, modules: dict[str, Path]) -> set[str]:
    """pathosynth modules one import statement of ``module`` names."""
    package = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join(parts + ([node.module] if node.module else []))
        if not base.startswith("pathosynth"):
            return set()
        return {f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names}
    found = set()
    for alias in node.names:
        name = alias.name
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        if name in modules:
            found.add(name)
    return found


def _graph(level) -> dict[str, set[str]]:
    modules, graph = _modules(), defaultdict(set)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(module, node, modules):
                    source, dest = level(module), level(target)
                    if source != dest and dest != "pathosynth":
                        graph[source].add(dest)
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    return {tuple(sorted((a, b))) for a in graph for b in graph[a] if a in reachable(b)}


def _subpackage(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / parts[0] / parts[1]).is_dir() else module


def test_no_import_cycles_between_subpackages():
    assert _cycles(_graph(_subpackage)) == set()


def test_no_import_cycles_between_modules():
    assert _cycles(_graph(lambda module: module)) == set()


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b"), ("b", "c"), ("a", "c")}


def test_the_studies_sit_on_top_only_the_command_line_imports_them():
    """Studies run bundles and measure with evaluation/; nothing below them (and no bundle config, so no packed
    archive) may depend on them: only ``pathosynth.cli`` and the studies themselves import ``pathosynth.studies``."""
    graph = _graph(_subpackage)
    importers = {source for source, targets in graph.items() if "pathosynth.studies" in targets}
    assert importers == {"pathosynth.cli"}
    assert "pathosynth.evaluation" in graph["pathosynth.studies"]  # the studies measure with evaluation/
