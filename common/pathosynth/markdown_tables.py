"""Markdown tables and number cells: the one formatting every report uses.

Reports are rendered from results JSON, which has no NaN or infinity: :func:`pathosynth.io.results.finite` writes them
as null and "inf" / "-inf", and every cell reads its numbers through :func:`number`, so a table comes out the same
whether it is rendered from the numbers in memory or from the JSON file read back (``pathosynth.cli report``).

Cells: :func:`fixed` (one number), :func:`mean_std` ("mean ± std", as written), :func:`spread_cell` (a summary over
repeats -- seeds, folds, cases -- shown as "–" with none, the mean alone with one, "mean ± std" with more);
:func:`markdown_table` puts header and rows together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["DASH", "fixed", "markdown_table", "mean_std", "number", "spread_cell"]

DASH = "–"  # an empty cell: nothing to show (no repeats, undefined value)


def number(value) -> float:
    """A number of a results JSON: null is NaN (undefined), "inf" / "-inf" are infinite."""
    return math.nan if value is None else float(value)


def fixed(value, digits: int = 2, scale: float = 1.0) -> str:
    """``value × scale`` with ``digits`` decimals; "–" when undefined, "∞" / "-∞" when infinite."""
    x = number(value) * scale
    if math.isnan(x):
        return DASH
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:.{digits}f}"


def mean_std(mean, std, digits: int = 2, scale: float = 1.0) -> str:
    """``"mean ± std"``, both ``× scale`` with ``digits`` decimals, written as they are (an undefined std reads "nan",
    so a missing spread is visible rather than hidden)."""
    return f"{number(mean) * scale:.{digits}f} ± {number(std) * scale:.{digits}f}"


def spread_cell(stats: Mapping | None, count: str = "n", digits: int = 2, scale: float = 1.0) -> str:
    """A summary over repeats (``{"mean", "std", count}``): "–" with no repeat, the mean alone with one (a single
    repeat has no spread), ``"mean ± std"`` with more."""
    if not stats or not stats[count]:
        return DASH
    if stats[count] == 1:
        return f"{number(stats['mean']) * scale:.{digits}f}"
    return mean_std(stats["mean"], stats["std"], digits, scale)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """The lines of a Markdown table: ``header``, the ``|---|`` rule, one line per row (cells already formatted, or
    anything ``str`` shows as meant)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines
