"""Data contract (docs/ARCHITECTURE.md, Contracts): both input layouts, up-front validation with one clear error per bad
case."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from pathosynth.data.cases import load_cases
from pathosynth.data.errors import DatasetError
from pathosynth.data.labels import EMIDEC_LABELS

LESIONS = ["MI", "PMO"]


@pytest.fixture()
def dataset(phantom_dir, tmp_path):
    """A private copy of the phantom data that a test may damage."""
    out = tmp_path / "data"
    shutil.copytree(phantom_dir, out)
    return out


def _files(root, case):
    return root / case / "Images" / f"{case}.nii.gz", root / case / "Contours" / f"{case}.nii.gz"


def _rewrite(path, data):
    img = nib.load(path)
    nib.save(nib.Nifti1Image(data, img.affine, img.header), path)


def test_emidec_layout_and_selection(phantom_dir):
    every = load_cases(phantom_dir, labels=EMIDEC_LABELS, lesion_classes=LESIONS)
    lesion = load_cases(phantom_dir, labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="with_lesion")
    normal = load_cases(phantom_dir, labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="normal")
    assert len(every) == 6
    assert [c["case_id"] for c in lesion] == ["Case_P001", "Case_P002", "Case_P003", "Case_P004"]
    assert [c["case_id"] for c in normal] == ["Case_N001", "Case_N002"]


def test_decathlon_datalist_with_relative_paths(phantom_dir, tmp_path):
    entries = [
        {"image": str(_files(phantom_dir, c)[0]), "label": str(_files(phantom_dir, c)[1])}
        for c in ("Case_P001", "Case_P002")
    ]
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": entries}))
    cases = load_cases(datalist=str(path), labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="with_lesion")
    assert [c["case_id"] for c in cases] == ["Case_P001", "Case_P002"]


def _problem(dataset, **kwargs):
    with pytest.raises(DatasetError) as info:
        load_cases(dataset, labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="with_lesion", **kwargs)
    return str(info.value)


def test_missing_file_is_named(dataset):
    image, _ = _files(dataset, "Case_P002")
    image.unlink()
    message = _problem(dataset)
    assert "Case_P002" in message and "does not exist" in message and str(image) in message


def test_shape_mismatch_is_named(dataset):
    _, label = _files(dataset, "Case_P003")
    data = np.asanyarray(nib.load(label).dataobj)
    _rewrite(label, np.ascontiguousarray(data[:-2]))
    message = _problem(dataset)
    assert "Case_P003" in message and "shape" in message


def test_unknown_label_value_is_named(dataset):
    _, label = _files(dataset, "Case_P001")
    data = np.asanyarray(nib.load(label).dataobj).copy()
    data[0, 0, 0] = 9
    _rewrite(label, data)
    message = _problem(dataset)
    assert "Case_P001" in message and "[9]" in message


def test_pathological_case_without_lesion_is_named(dataset):
    _, label = _files(dataset, "Case_P004")
    data = np.asanyarray(nib.load(label).dataobj).copy()
    data[np.isin(data, [3, 4])] = 2
    _rewrite(label, data)
    message = _problem(dataset)
    assert "Case_P004" in message and "no MI/PMO voxels" in message


def test_nan_is_named(dataset):
    image, _ = _files(dataset, "Case_P002")
    data = np.asanyarray(nib.load(image).dataobj).astype(np.float32)
    data[1, 1, 1] = np.nan
    img = nib.load(image)
    nib.save(nib.Nifti1Image(data, img.affine), image)
    message = _problem(dataset)
    assert "Case_P002" in message and "NaN" in message


def test_unreadable_nifti_is_named(dataset):
    image, _ = _files(dataset, "Case_P001")
    image.write_bytes(b"this is not a nifti file")
    message = _problem(dataset)
    assert "Case_P001" in message and "not a readable NIfTI" in message


def test_all_problems_in_one_error(dataset):
    _files(dataset, "Case_P001")[0].unlink()
    _files(dataset, "Case_P002")[1].unlink()
    message = _problem(dataset)
    assert "2 problem(s)" in message and "Case_P001" in message and "Case_P002" in message


def test_datalist_case_without_lesion_is_an_error(phantom_dir, tmp_path):
    """A user's explicit list for lesion inpainting must only hold cases with lesions."""
    image, label = _files(phantom_dir, "Case_N001")
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": str(image), "label": str(label)}]}))
    with pytest.raises(DatasetError, match="Case_N001.*no MI/PMO voxels"):
        load_cases(datalist=str(path), labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="with_lesion")


def test_missing_dataset_dir_explains_the_layout(tmp_path):
    with pytest.raises(DatasetError, match="EMIDEC layout"):
        load_cases(tmp_path / "nope", labels=EMIDEC_LABELS, lesion_classes=LESIONS)


def test_unknown_class_name_is_a_config_error(phantom_dir):
    with pytest.raises(KeyError, match="scar"):
        load_cases(phantom_dir, labels=EMIDEC_LABELS, lesion_classes=["scar"])


def test_validation_never_writes(dataset):
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}
    load_cases(dataset, labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="with_lesion")
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == before


@pytest.mark.realdata
def test_real_emidec_passes_validation(emidec_dir):
    cases = load_cases(emidec_dir, labels=EMIDEC_LABELS, lesion_classes=LESIONS, select="with_lesion")
    assert len(cases) > 0 and all(c["case_id"].startswith("Case_P") for c in cases)
