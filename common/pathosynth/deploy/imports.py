"""Which pathosynth modules a bundle's configs need, and which installed packages those modules import.

Why: a packed bundle carries only the code it runs and must declare every package that code imports, or it
fails in a user's fresh environment far from here. Both answers come from reading the source (``ast``), not
from importing it: every ``import`` statement counts, also inside functions, except those guarded by
``try: ... except ImportError`` — those are optional by construction (e.g. LIME with an occlusion fallback).
MONAI networks that import a package lazily (``optional_import``) and fail only when built are listed in
:data:`MONAI_LAZY_REQUIREMENTS`: a bundle whose configs or code use one needs that package as well.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "pathosynth"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_CONFIG_NAME = re.compile(r"\bpathosynth(?:\.[A-Za-z_]\w*)*")
_CONFIG_MONAI_NAME = re.compile(r"\bmonai(?:\.[A-Za-z_]\w*)+")
_CONFIG_TARGET = re.compile(r'"_target_"\s*:\s*"([A-Za-z_]\w*)"')  # bare names, which MONAI looks up in its own modules

# MONAI classes -> packages they import lazily and need at construction. Read from MONAI 1.6's source: these
# networks build ``SABlock`` / ``CrossAttentionBlock``, whose ``einops`` import is an ``optional_import`` that fails
# only when a network with attention (or cross-attention conditioning) is instantiated, so neither the import
# analysis nor a small smoke network without attention sees it. tests/test_fresh_install.py is the proof that the
# list is complete for the bundles: it builds every network of every base config in a venv made from the
# declared requirements only.
MONAI_LAZY_REQUIREMENTS = {
    "DiffusionModelUNet": "einops",
    "SPADEDiffusionModelUNet": "einops",
    "ControlNet": "einops",
}


@dataclass
class ModuleImports:
    """Imports of one module: pathosynth modules it needs, third-party top-level names (required / optional)."""

    internal: set[str] = field(default_factory=set)
    required: set[str] = field(default_factory=set)
    optional: set[str] = field(default_factory=set)
    monai_names: set[str] = field(default_factory=set)  # names imported from monai (``from monai.x import Name``)


def module_file(name: str) -> Path | None:
    """Source file of pathosynth module ``name`` (a package's ``__init__.py``), or None if it is no module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if len(parts) > 1 and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _with_parents(name: str) -> set[str]:
    """Importing ``a.b.c`` executes ``a`` and ``a.b`` first."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def defining_module(name: str) -> str:
    """The longest prefix of a dotted pathosynth name that is a module (``pathosynth.engines.checkpoint.load_weights``
    -> ``pathosynth.engines.checkpoint``)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if module_file(candidate) is not None:
            return candidate
    raise ValueError(f"{name} names no module of {PACKAGE}")


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """True inside ``try:`` whose handlers catch ImportError / ModuleNotFoundError (or everything)."""
    while node in parents:
        child, node = node, parents[node]
        if isinstance(node, ast.Try) and child in node.body:
            for handler in node.handlers:
                names = [handler.type] if not isinstance(handler.type, ast.Tuple) else handler.type.elts
                if handler.type is None or any(
                    isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
                    for n in names
                ):
                    return True
    return False


def module_imports(name: str) -> ModuleImports:
    """Parse pathosynth module ``name`` and classify its imports."""
    path = module_file(name)
    tree = ast.parse(path.read_text(), filename=str(path))
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = ModuleImports()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if (node.module or "").split(".")[0] == "monai" and not node.level:
                found.monai_names |= {alias.name for alias in node.names}
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            # ``from pkg import x``: x may be a submodule or an attribute of pkg
            targets = (
                [f"{base}.{alias.name}" if module_file(f"{base}.{alias.name}") else base for alias in node.names]
                if base.split(".")[0] == PACKAGE
                else [base]
            )
        else:
            continue
        for target in targets:
            top = target.split(".")[0]
            if top == PACKAGE:
                found.internal |= _with_parents(defining_module(target))
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                (found.optional if _guarded(node, parents) else found.required).add(top)
    found.internal.discard(name)
    return found


def config_modules(config_files: Iterable[str | Path]) -> set[str]:
    """pathosynth modules named in bundle configs (``$import pathosynth.x``, ``_target_`` paths, expressions)."""
    names: set[str] = set()
    for path in config_files:
        text = Path(path).read_text()
        json.loads(text)  # a broken config is reported here, naming the file, not later inside a zip
        names |= {defining_module(match) for match in _CONFIG_NAME.findall(text)}
    return set().union(*(_with_parents(n) for n in names)) if names else set()


def config_monai_names(config_files: Iterable[str | Path]) -> set[str]:
    """Last components of the MONAI names configs use (``monai.networks.nets.ControlNet`` -> ``ControlNet``) and
    bare ``_target_`` names."""
    names: set[str] = set()
    for path in config_files:
        text = Path(path).read_text()
        names |= {match.rsplit(".", 1)[-1] for match in _CONFIG_MONAI_NAME.findall(text)}
        names |= set(_CONFIG_TARGET.findall(text))
    return names


@dataclass
class CodeClosure:
    """The pathosynth modules a set of configs needs (transitively) and the third-party names they import."""

    modules: set[str]
    required: dict[str, set[str]]  # import name -> modules importing it unguarded
    optional: dict[str, set[str]]

    def files(self) -> list[Path]:
        return sorted(module_file(m) for m in self.modules)


def code_closure(config_files: Iterable[str | Path]) -> CodeClosure:
    """Follow pathosynth imports from the modules the configs name until nothing new appears."""
    config_files = list(config_files)
    todo = sorted(config_modules(config_files))
    seen: set[str] = set()
    required: dict[str, set[str]] = {}
    optional: dict[str, set[str]] = {}
    for monai_name in sorted(config_monai_names(config_files) & set(MONAI_LAZY_REQUIREMENTS)):
        required.setdefault(MONAI_LAZY_REQUIREMENTS[monai_name], set()).add(f"monai {monai_name} (a config)")
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        imports = module_imports(name)
        todo.extend(sorted(imports.internal - seen))
        for top in imports.required:
            required.setdefault(top, set()).add(name)
        for top in imports.optional:
            optional.setdefault(top, set()).add(name)
        for monai_name in sorted(imports.monai_names & set(MONAI_LAZY_REQUIREMENTS)):
            required.setdefault(MONAI_LAZY_REQUIREMENTS[monai_name], set()).add(f"monai {monai_name} ({name})")
    return CodeClosure(seen, required, optional)


@functools.lru_cache(maxsize=1)
def _providers() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()  # scans every installed distribution: once per process


def distribution_of(import_name: str) -> str:
    """The installed distribution that provides top-level module ``import_name`` (``PIL`` -> ``pillow``)."""
    providers = _providers().get(import_name)
    if not providers:
        raise ValueError(f"no installed distribution provides the module {import_name!r}")
    return canonical(providers[0])


def canonical(distribution: str) -> str:
    """PEP 503 normalised name, so ``PyYAML`` and ``pyyaml`` compare equal."""
    return re.sub(r"[-_.]+", "-", distribution).lower()
