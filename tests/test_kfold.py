"""k-fold cross-validation by case (EMIT-Diff's 3-fold protocol): every heart is tested exactly once, both ACDC frames
of a heart stay in one fold, each clinical group is spread evenly over the folds, the folds follow from the seed, and
the written fold datalists point into the dataset without touching it."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from pathosynth.data.splits import kfold_by_case, stratified_subset, write_kfold


def _records(n_patients=40, groups=("NOR", "DCM", "HCM", "MINF", "RV")):
    return [
        {
            "case_id": f"patient{p:03d}_frame{f:02d}",
            "image": "",
            "label": "",
            "group": groups[p % len(groups)],
            "patient": f"patient{p:03d}",
            "phase": phase,
        }
        for p in range(1, n_patients + 1)
        for f, phase in ((1, "ED"), (12, "ES"))
    ]


def _patients(records):
    return {r["patient"] for r in records}


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_patient_is_tested_exactly_once_with_both_frames(k, seed):
    records = _records(43)
    folds = kfold_by_case(records, k, seed, group_key="patient")
    assert len(folds) == k
    tested = [p for _, test in folds for p in _patients(test)]
    assert sorted(tested) == sorted(_patients(records))  # covering, and no patient in two test folds
    for train, test in folds:
        assert not _patients(train) & _patients(test)
        assert len(train) + len(test) == len(records)
        for part in (train, test):
            assert all(sorted(r["phase"] for r in part if r["patient"] == p) == ["ED", "ES"] for p in _patients(part))
    sizes = [len(_patients(test)) for _, test in folds]
    assert max(sizes) - min(sizes) <= 1


def test_each_group_is_spread_evenly_over_the_folds():
    records = _records(80)  # 16 patients per ACDC group
    folds = kfold_by_case(records, 3, 0, group_key="patient")
    for group in ("NOR", "DCM", "HCM", "MINF", "RV"):
        counts = [len({r["patient"] for r in test if r["group"] == group}) for _, test in folds]
        assert sum(counts) == 16 and max(counts) - min(counts) <= 1, (group, counts)


def test_folds_depend_on_the_seed_not_on_the_record_order():
    records = _records(30)
    folds = kfold_by_case(records, 3, 4, group_key="patient")
    assert kfold_by_case(list(reversed(records)), 3, 4, group_key="patient") == folds
    assert kfold_by_case(records, 3, 5, group_key="patient") != folds


def test_without_group_key_every_record_is_a_unit():
    records = [{"case_id": f"Case_{i:03d}", "group": "normal" if i % 3 else "pathological"} for i in range(12)]
    folds = kfold_by_case(records, 3, 0)
    assert sorted(r["case_id"] for _, test in folds for r in test) == sorted(r["case_id"] for r in records)
    for _, test in folds:  # 8 normal and 4 pathological cases: 4 cases per fold, 1-2 of them pathological
        groups = Counter(r["group"] for r in test)
        assert sum(groups.values()) == 4 and 1 <= groups["pathological"] <= 2


def test_too_few_units_or_folds_are_refused():
    with pytest.raises(ValueError, match="k >= 2"):
        kfold_by_case(_records(4), 1, group_key="patient")
    with pytest.raises(ValueError, match="2 patient"):
        kfold_by_case(_records(2), 3, group_key="patient")
    records = _records(4)
    del records[0]["patient"]
    with pytest.raises(ValueError, match="no 'patient'"):
        kfold_by_case(records, 2, group_key="patient")


def test_stratified_subset_keeps_whole_patients_and_balances_groups():
    records = _records(80)
    subset = stratified_subset(records, 30, 0, group_key="patient")
    assert len(_patients(subset)) == 30 and len(subset) == 60
    assert set(Counter(r["group"] for r in subset).values()) == {12}  # 6 patients (12 frames) of each of the 5 groups
    assert stratified_subset(list(reversed(records)), 30, 0, group_key="patient") == subset
    assert stratified_subset(records, 500, 0, group_key="patient") == sorted(records, key=lambda r: r["case_id"])


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_written_acdc_folds_are_by_patient_and_leave_the_dataset_untouched(acdc_phantom_dir, tmp_path):
    before = _digest(acdc_phantom_dir)
    paths = write_kfold(acdc_phantom_dir, tmp_path / "split", k=2, seed=0)
    folds = json.loads((tmp_path / "split" / "folds.json").read_text())
    assert folds["group_key"] == "patient" and len(folds["cases"]) == 8 and len(paths) == 2
    tested = []
    for fold, part in zip(folds["folds"], paths):
        train = json.loads(Path(part["train"]).read_text())["training"]
        test = json.loads(Path(part["test"]).read_text())["training"]
        assert [e["source_case_id"] for e in test] == fold["test"] and [e["source_case_id"] for e in train] == fold[
            "train"
        ]
        assert all(
            Path(tmp_path / "split" / "fold0" / e["image"]).resolve().is_relative_to(acdc_phantom_dir.resolve())
            for e in test
        )
        assert not {c.split("_")[0] for c in fold["train"]} & {c.split("_")[0] for c in fold["test"]}
        tested += fold["test"]
    assert sorted(tested) == folds["cases"]
    write_kfold(acdc_phantom_dir, tmp_path / "split", k=2, seed=0)  # a rerun writes the same folds
    assert _digest(acdc_phantom_dir) == before


def test_written_emidec_folds_are_by_case_and_stratified(phantom_dir, tmp_path):
    write_kfold(phantom_dir, tmp_path / "split", k=2, seed=0)
    folds = json.loads((tmp_path / "split" / "folds.json").read_text())
    assert folds["group_key"] is None and len(folds["cases"]) == 6
    for fold in folds["folds"]:  # 2 normal + 4 pathological cases: one normal and two pathological per test fold
        test = json.loads((tmp_path / "split" / f"fold{folds['folds'].index(fold)}" / "test.json").read_text())[
            "training"
        ]
        assert Counter(e["group"] for e in test) == Counter(normal=1, pathological=2)
