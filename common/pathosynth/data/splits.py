"""Train/test splits by case (never by slice), stratified by clinical group, reproducible from a seed.

Slices of one heart are strongly correlated; a slice-level split would leak the test patients into
training. EMIDEC declares each case normal or pathological, so both groups are split in the same
proportion and every test set holds both kinds of heart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import write_json
from .cases import load_cases
from .labels import EMIDEC_LABELS

__all__ = ["split_by_case", "write_split"]


def split_by_case(records: Sequence[Mapping], test_fraction: float = 0.25, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, test) records; within each group a seeded shuffle of the sorted case ids picks
    ``round(test_fraction * n)`` test cases (at least one when the group has two or more)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    train, test = [], []
    groups = sorted({str(r.get("group")) for r in records})
    for group in groups:
        members = sorted((dict(r) for r in records if str(r.get("group")) == group), key=lambda r: r["case_id"])
        order = np.random.default_rng([int(seed), groups.index(group)]).permutation(len(members))
        n_test = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
        chosen = set(order[:n_test].tolist())
        for index, record in enumerate(members):
            (test if index in chosen else train).append(record)
    return sorted(train, key=lambda r: r["case_id"]), sorted(test, key=lambda r: r["case_id"])


def write_split(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, test_fraction: float = 0.25, seed: int = 0,
                labels: Mapping[str, int] | None = None, lesion_classes: Sequence[str] = ("MI", "PMO")) -> dict[str, str]:
    """Validate a dataset and write its split as datalists (paths point into the dataset; nothing is copied):
    ``train_pathological.json``, ``train_normal.json``, ``test.json``, ``test_pathological.json`` and
    ``split.json`` (case ids, seed, fraction). Returns name -> datalist path."""
    from ..io.exports import export_datalist

    labels = dict(labels or EMIDEC_LABELS)
    records = load_cases(str(dataset_dir), None, labels=labels, lesion_classes=list(lesion_classes), select="all")
    train, test = split_by_case(records, test_fraction, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = {
        "train_pathological": ("P", [r for r in train if r.get("group") != "normal"]),
        "train_normal": ("N", [r for r in train if r.get("group") == "normal"]),
        "test": ("test", test),
        "test_pathological": ("testP", [r for r in test if r.get("group") != "normal"]),
    }
    paths = {}
    for name, (set_name, members) in parts.items():
        if members:
            export_datalist([(set_name, members)], out / f"{name}.json")
            paths[name] = str(out / f"{name}.json")
    write_json(out / "split.json", {"dataset_dir": str(Path(dataset_dir).resolve()), "seed": int(seed), "test_fraction": test_fraction,
                                    "train": [r["case_id"] for r in train], "test": [r["case_id"] for r in test]})
    return paths
