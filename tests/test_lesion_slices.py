"""Slice-level lesion classes for the reference-guided study's classifier (paper Tab. 1: cancer vs no cancer).

Claims checked: a slice is class 1 exactly when its label map holds an MI or PMO voxel (myocardium alone is 0, even
in a pathological case); the exported datalist is what the MONAI classifiers read; the dataset is only read and an
output inside it is refused.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import tree_digest
from pathosynth.data.cases import load_cases
from pathosynth.data.medmnist import read_labelled_images
from pathosynth.data.slice_classes import lesion_slice_classes, write_lesion_slices

EMIDEC = {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}


def test_a_slice_is_a_lesion_slice_when_it_holds_mi_or_pmo():
    label = np.zeros((8, 8, 4), dtype=np.uint8)
    label[2:4, 2:4, :] = 2  # myocardium everywhere: not a lesion
    label[3, 3, 1] = 3  # MI in slice 1
    label[5, 5, 3] = 4  # PMO in slice 3
    assert lesion_slice_classes(label, [3, 4]).tolist() == [0, 1, 0, 1]
    assert lesion_slice_classes(label, [4]).tolist() == [0, 0, 0, 1]
    assert lesion_slice_classes(label[..., 1], [3, 4]).tolist() == [1]  # a 2D label map is one slice


def test_export_writes_classified_png_slices_outside_the_dataset(phantom_dir, tmp_path):
    before = tree_digest(phantom_dir)
    cases = load_cases(str(phantom_dir), None, labels=EMIDEC, lesion_classes=["MI", "PMO"], select="all")
    datalist = write_lesion_slices(cases, tmp_path / "slices", [3, 4], [32, 32])
    entries = json.loads(datalist.read_text())["training"]
    expected = np.concatenate(
        [lesion_slice_classes(np.asanyarray(nib.load(c["label"]).dataobj), [3, 4]) for c in cases]
    )
    assert [e["label"] for e in entries] == expected.tolist()
    assert 0 < expected.sum() < len(expected)  # both classes present in the phantom
    normal = {c["case_id"] for c in cases if c.get("group") == "normal"}
    assert normal and all(e["label"] == 0 for e in entries if e["source_case_id"] in normal)
    images, labels = read_labelled_images(datalist)
    assert images.shape == (len(entries), 1, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert labels.tolist() == expected.tolist()
    with pytest.raises(ValueError, match="inside source folder"):
        write_lesion_slices(cases, phantom_dir / "slices", [3, 4], [32, 32])
    assert tree_digest(phantom_dir) == before


def test_field_of_view_crop_hides_what_lies_outside_it():
    """Real and synthetic slices must show the same region: a synthetic image is empty outside the generative
    model's field of view, so with ``fov_size`` a real slice and its copy blanked outside that centred field of
    view give identical classifier inputs (without it, the empty frame would tell synthetic slices apart)."""
    from pathosynth.data.slice_classes import unit_slices

    rng = np.random.default_rng(0)
    real = rng.uniform(10, 200, size=(48, 40, 3)).astype(np.float32)
    blanked = np.zeros_like(real)
    blanked[12:36, 10:30] = real[12:36, 10:30]  # centred 24 x 20 field of view kept, zero outside
    assert np.array_equal(
        unit_slices(real, [12, 10], fov_size=[24, 20]), unit_slices(blanked, [12, 10], fov_size=[24, 20])
    )
    assert not np.allclose(unit_slices(real, [12, 10]), unit_slices(blanked, [12, 10]))
    padded = unit_slices(real[..., 0], [30, 30], fov_size=[60, 60])  # a field of view larger than the slice pads
    assert padded.shape == (1, 1, 30, 30) and padded[0, 0, 0, 0] == 0.0
