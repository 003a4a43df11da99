"""Results JSON: the numbers a report is rendered from, written so that the file alone renders the same report.

JSON has no NaN or infinity: :func:`finite` writes them as null and "inf" / "-inf" (``markdown_tables.number`` reads
them back); :func:`as_results` is a result exactly as it reads back from its file, so a report rendered from the
numbers in memory equals the one rendered from the file. :func:`write_results` keeps key order, which is the order of
a report's rows and columns (``io.atomic.write_json`` sorts keys, which would reorder the tables).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping

from .atomic import atomic_path

__all__ = ["as_results", "finite", "write_results"]


def finite(value):
    """``value`` with every NaN as None and every infinity as "inf" / "-inf" (in dicts, lists and tuples)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def as_results(results: Mapping) -> dict:
    """``results`` exactly as it reads back from its JSON file (NaN → null, inf → "inf", tuples → lists)."""
    return json.loads(json.dumps(finite(results)))


def write_results(path: str | os.PathLike, results: Mapping) -> None:
    """Write a results JSON atomically, keys in the order given."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
