"""Every dotted ``pathosynth.…`` name the Markdown docs give a reader resolves to a module or an attribute of one.

Why: sub-package ``__init__`` files do not re-export (docs/ARCHITECTURE.md), so a doc naming
``pathosynth.data.load_cases`` instead of ``pathosynth.data.cases.load_cases`` points at nothing; a reader copying it
into a config override gets an AttributeError. Names are resolved by import, no network or data involved.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = re.compile(r"(?<![\w/.])pathosynth(?:\.[A-Za-z_]\w*)+")


def _docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bundles").glob("*/**/*.md"))]


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attribute in parts[cut:]:
                target = getattr(target, attribute)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_pathosynth_name_in_the_docs_resolves():
    broken = []
    for doc in _docs():
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for match in NAME.finditer(line):
                name = match.group(0).rstrip(".")
                if not _resolves(name):
                    broken.append(f"{doc.relative_to(ROOT)}:{number}: {name}")
    assert broken == []
