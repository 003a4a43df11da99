"""Train/test splits by case (never by slice), stratified by clinical group, reproducible from a seed.

Slices of one heart are strongly correlated; a slice-level split would leak the test patients into
training. EMIDEC declares each case normal or pathological, so both groups are split in the same
proportion and every test set holds both kinds of heart. ACDC stores two frames (ED, ES) of each heart as
two cases: ``group_key="patient"`` splits by heart, so both frames land on the same side.

Cross-validation (:func:`kfold_by_case`) follows the same rules: each unit (case, or heart) is in exactly one
test fold, and every clinical group is dealt over the folds as evenly as its size allows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import write_json
from .acdc import ACDC_LABELS
from .cases import load_cases
from .labels import EMIDEC_LABELS

__all__ = ["SPLIT_DEFAULTS", "kfold_by_case", "split_by_case", "stratified_subset", "write_kfold", "write_split"]

# layout -> how its cases are split: EMIDEC stratifies normal / pathological hearts (one case each); ACDC
# stratifies by diagnostic group and keeps both frames (ED, ES) of a patient on one side.
SPLIT_DEFAULTS = {
    "emidec": {"labels": EMIDEC_LABELS, "lesion_classes": ("MI", "PMO"), "group_key": None},
    "acdc": {"labels": ACDC_LABELS, "lesion_classes": (), "group_key": "patient"},
}


def _units_and_strata(
    records: Sequence[Mapping], group_key: str | None, stratify_key: str
) -> tuple[dict[object, list[dict]], dict[str, list[object]]]:
    """(unit key -> its records in case id order, stratum -> its unit keys in case id order). A unit is one record,
    or with ``group_key`` all records sharing that key's value; the records of one unit must share one stratum."""
    ordered = sorted((dict(r) for r in records), key=lambda r: r["case_id"])
    units: dict[object, list[dict]] = {}
    for index, record in enumerate(ordered):
        if group_key is None:
            units[index] = [record]  # one unit per record, in case id order (the historic behaviour)
            continue
        if record.get(group_key) is None:
            raise ValueError(f"case {record['case_id']} has no '{group_key}' to group by (group_key={group_key!r})")
        units.setdefault(str(record[group_key]), []).append(record)
    strata: dict[str, list[object]] = {}
    for key, members in units.items():
        values = sorted({str(r.get(stratify_key)) for r in members})
        if len(values) > 1:
            raise ValueError(
                f"{group_key} {key} has cases in several '{stratify_key}' strata {values}; they cannot stay together"
            )
        strata.setdefault(values[0], []).append(key)
    for group, members in strata.items():
        members.sort(key=lambda k: (units[k][0]["case_id"], str(k)))
    return units, strata


def _flatten(units: Mapping[object, list[dict]], keys) -> list[dict]:
    return sorted((r for key in keys for r in units[key]), key=lambda r: r["case_id"])


def split_by_case(
    records: Sequence[Mapping],
    test_fraction: float = 0.25,
    seed: int = 0,
    group_key: str | None = None,
    stratify_key: str = "group",
) -> tuple[list[dict], list[dict]]:
    """(train, test) records; within each stratum (value of ``stratify_key``, the clinical group) a seeded shuffle
    of the sorted units picks ``round(test_fraction * n)`` test units (at least one when the stratum has two or more).
    Strata of a single unit are pooled into one stratum when there are several (a tiny dataset, e.g. one patient per
    ACDC group, still gets a test set).

    A unit is one case, or with ``group_key`` (e.g. "patient") all records sharing that key's value: they always land
    on the same side. Every record then needs the key, and the records of one unit must share one stratum.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    units, strata = _units_and_strata(records, group_key, stratify_key)
    singletons = sorted(group for group, members in strata.items() if len(members) == 1)
    if (
        len(singletons) > 1
    ):  # a stratum of one unit cannot be split: pool those (tiny datasets) so some reach the test set
        strata[" + ".join(singletons)] = [strata.pop(group)[0] for group in singletons]
    train, test = [], []
    groups = sorted(strata)
    for group in groups:
        members = sorted(strata[group], key=lambda k: (units[k][0]["case_id"], k))
        order = np.random.default_rng([int(seed), groups.index(group)]).permutation(len(members))
        n_test = max(1, round(test_fraction * len(members))) if len(members) > 1 else 0
        chosen = set(order[:n_test].tolist())
        for index, key in enumerate(members):
            (test if index in chosen else train).extend(units[key])
    return sorted(train, key=lambda r: r["case_id"]), sorted(test, key=lambda r: r["case_id"])


def kfold_by_case(
    records: Sequence[Mapping], k: int = 3, seed: int = 0, group_key: str | None = None, stratify_key: str = "group"
) -> list[tuple[list[dict], list[dict]]]:
    """``k`` (train, test) record lists for k-fold cross-validation by case: every unit (a case, or with ``group_key``
    all records of e.g. one patient) is in exactly one test fold and in the training part of the others.

    Stratified: the strata (values of ``stratify_key``) are taken in sorted order, the units of each in a seeded
    shuffle, and the units are dealt to the folds round robin, the count running on from one stratum to the next. So
    each stratum is spread over the folds as evenly as its size allows and fold sizes differ by at most one unit. The
    result depends on the seed and the set of records, not on their order.
    """
    k = int(k)
    if k < 2:
        raise ValueError(f"k-fold cross-validation needs k >= 2, got {k}")
    units, strata = _units_and_strata(records, group_key, stratify_key)
    if len(units) < k:
        raise ValueError(f"{len(units)} {'case' if group_key is None else group_key}(s) cannot fill {k} folds")
    folds: list[list[object]] = [[] for _ in range(k)]
    dealt = 0
    for index, group in enumerate(sorted(strata)):
        members = strata[group]
        for position in np.random.default_rng([int(seed), index]).permutation(len(members)):
            folds[dealt % k].append(members[position])
            dealt += 1
    return [
        (
            _flatten(units, [key for other in range(k) if other != fold for key in folds[other]]),
            _flatten(units, folds[fold]),
        )
        for fold in range(k)
    ]


def stratified_subset(
    records: Sequence[Mapping], n_units: int, seed: int = 0, group_key: str | None = None, stratify_key: str = "group"
) -> list[dict]:
    """The records of ``n_units`` units (cases, or e.g. patients with ``group_key``) drawn in a seeded shuffle within
    each stratum and taken round robin over the sorted strata, so the groups stay as balanced as the data allow (a
    smaller study, e.g. at CPU scale). All records when ``n_units`` covers every unit."""
    units, strata = _units_and_strata(records, group_key, stratify_key)
    queues = [
        [strata[g][i] for i in np.random.default_rng([int(seed), index, 7]).permutation(len(strata[g]))]
        for index, g in enumerate(sorted(strata))
    ]
    chosen: list[object] = []
    while len(chosen) < min(int(n_units), len(units)):
        for queue in queues:
            if queue and len(chosen) < int(n_units):
                chosen.append(queue.pop(0))
    return _flatten(units, chosen)


def _layout_records(
    dataset_dir: str | os.PathLike,
    labels: Mapping[str, int] | None,
    lesion_classes: Sequence[str] | None,
    group_key: str | None,
) -> tuple[list[dict], dict[str, int], list[str], str | None]:
    """Validated records of a dataset folder, with the layout's defaults (:data:`SPLIT_DEFAULTS`) for settings left
    None."""
    from .layouts import detect_layout

    defaults = SPLIT_DEFAULTS.get(detect_layout(dataset_dir) or "emidec", SPLIT_DEFAULTS["emidec"])
    labels = dict(labels or defaults["labels"])
    lesion_classes = list(defaults["lesion_classes"] if lesion_classes is None else lesion_classes)
    group_key = group_key or defaults["group_key"]
    records = load_cases(str(dataset_dir), None, labels=labels, lesion_classes=list(lesion_classes), select="all")
    return records, labels, lesion_classes, group_key


def _semantics(dataset_dir: str | os.PathLike, labels: Mapping[str, int]) -> dict:
    """What a written datalist records about its labels: the validated map and the layout's name (e.g. "ACDC")."""
    from .layouts import dataset_labels

    declared = dataset_labels(dataset_dir)
    return {"labels": labels, "dataset": declared[0] if declared else None}


def write_split(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    test_fraction: float = 0.25,
    seed: int = 0,
    labels: Mapping[str, int] | None = None,
    lesion_classes: Sequence[str] | None = None,
    group_key: str | None = None,
) -> dict[str, str]:
    """Validate a dataset and write its split as datalists (paths point into the dataset; nothing is copied):
    ``train.json``, ``test.json`` and ``split.json`` (case ids, seed, fraction, grouping); for lesion datasets
    (``lesion_classes`` not empty, EMIDEC) also ``train_pathological.json``, ``train_normal.json`` and
    ``test_pathological.json``. ``group_key="patient"`` keeps the frames of one ACDC heart together.
    Settings left None take the dataset layout's defaults (:data:`SPLIT_DEFAULTS`). Returns name -> datalist path."""
    from ..io.datalists import export_datalist

    records, labels, lesion_classes, group_key = _layout_records(dataset_dir, labels, lesion_classes, group_key)
    train, test = split_by_case(records, test_fraction, seed, group_key=group_key)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": ("train", train), "test": ("test", test)}
    if lesion_classes:
        parts.update(
            {
                "train_pathological": ("P", [r for r in train if r.get("group") != "normal"]),
                "train_normal": ("N", [r for r in train if r.get("group") == "normal"]),
                "test_pathological": ("testP", [r for r in test if r.get("group") != "normal"]),
            }
        )
    paths = {}
    semantics = _semantics(dataset_dir, labels)
    for name, (set_name, members) in parts.items():
        if members:
            export_datalist([(set_name, members)], out / f"{name}.json", **semantics)
            paths[name] = str(out / f"{name}.json")
    write_json(
        out / "split.json",
        {
            "dataset_dir": str(Path(dataset_dir).resolve()),
            "seed": int(seed),
            "test_fraction": test_fraction,
            "group_key": group_key,
            "train": [r["case_id"] for r in train],
            "test": [r["case_id"] for r in test],
        },
    )
    return paths


def write_kfold(
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    k: int = 3,
    seed: int = 0,
    labels: Mapping[str, int] | None = None,
    lesion_classes: Sequence[str] | None = None,
    group_key: str | None = None,
    max_units: int | None = None,
) -> list[dict[str, str]]:
    """Validate a dataset and write its k folds as datalists (paths point into the dataset; nothing is copied):
    ``fold<i>/train.json`` and ``fold<i>/test.json`` for i in 0..k-1, and ``folds.json`` (case ids per fold, seed,
    grouping). ``max_units`` first keeps a stratified seeded subset of that many units (:func:`stratified_subset`).
    Settings left None take the dataset layout's defaults (ACDC: by patient, stratified by group; EMIDEC: by case,
    stratified normal / pathological). Returns, per fold, ``{"train": path, "test": path}``."""
    from ..io.datalists import export_datalist

    records, labels, lesion_classes, group_key = _layout_records(dataset_dir, labels, lesion_classes, group_key)
    if max_units is not None:
        records = stratified_subset(records, int(max_units), seed, group_key=group_key)
    folds = kfold_by_case(records, k, seed, group_key=group_key)
    out, semantics = Path(out_dir), _semantics(dataset_dir, labels)
    paths = []
    for index, (train, test) in enumerate(folds):
        fold_dir = out / f"fold{index}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        export_datalist([("train", train)], fold_dir / "train.json", **semantics)
        export_datalist([("test", test)], fold_dir / "test.json", **semantics)
        paths.append({"train": str(fold_dir / "train.json"), "test": str(fold_dir / "test.json")})
    write_json(
        out / "folds.json",
        {
            "dataset_dir": str(Path(dataset_dir).resolve()),
            "k": int(k),
            "seed": int(seed),
            "group_key": group_key,
            "max_units": max_units,
            "cases": sorted(r["case_id"] for r in records),
            "folds": [
                {"train": [r["case_id"] for r in train], "test": [r["case_id"] for r in test]} for train, test in folds
            ],
        },
    )
    return paths
