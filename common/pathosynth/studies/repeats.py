"""Aggregation over repeated trainings, shared by the study reports.

Downstream numbers are aggregated in two stages, as repeated trainings should be: the mean over a run's test cases
gives one number per (training mix, seed) (:func:`seed_summary`); a table shows the mean ± sample std of those over
the repeats (:func:`repeat_summary`: seeds, or folds of a cross-validation), so the spread is the run-to-run variation
of training on that mix, not the case-to-case one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["repeat_summary", "seed_summary"]


def repeat_summary(values: Sequence[float], unit: str = "seed") -> dict:
    """``{"mean", "std", "n_<unit>s", "per_<unit>"}`` of one number per repeat (``std`` is the sample std, NaN below
    two repeats; ``mean`` NaN with none)."""
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)) if values else math.nan,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
        f"n_{unit}s": len(values),
        f"per_{unit}": values,
    }


def seed_summary(
    score_files: Sequence[Path],
    metric: str,
    classes: Sequence[str],
    group: str | None = None,
) -> dict[str, dict]:
    """Per class: :func:`repeat_summary` over seeds (one scores file each) of each seed's mean of ``metric`` over its
    test cases (only cases of ``group``, e.g. "pathological", when given; undefined values left out)."""
    per_seed_cases = [
        [c for c in json.loads(Path(p).read_text())["cases"] if group is None or c.get("group") == group]
        for p in score_files
    ]
    result = {}
    for cls in classes:
        values = []
        for cases in per_seed_cases:
            defined = [float(c[cls][metric]) for c in cases if cls in c and c[cls][metric] is not None]
            if defined:
                values.append(float(np.mean(defined)))
        result[cls] = repeat_summary(values)
    return result
