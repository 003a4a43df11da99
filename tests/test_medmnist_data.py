"""MedMNIST npz data: the paper's stratified 20 % per class, validation that names the file, MedMNIST-style output
that reads back unchanged, and labelled-image datalists read like npz files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pathosynth.data.errors import DatasetError
from pathosynth.data.medmnist import (
    medmnist_records,
    read_labelled_images,
    read_medmnist_split,
    stratified_fraction,
    write_medmnist_npz,
)


def _toy(path, n=(10, 25)):
    labels = np.concatenate([np.full(k, c) for c, k in enumerate(n)])
    images = (np.arange(len(labels))[:, None, None] * np.ones((1, 6, 6))).astype(np.uint8)
    write_medmnist_npz(path, {"train": (images, labels), "val": (images[:4], labels[:4])})
    return images, labels


def test_stratified_fraction_takes_twenty_percent_of_every_class_reproducibly():
    labels = np.repeat([0, 1, 2], [100, 50, 3])
    chosen = stratified_fraction(labels, 0.2, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [20, 10, 1]  # a rare class keeps at least one image
    assert np.array_equal(chosen, stratified_fraction(labels, 0.2, seed=3))
    assert not np.array_equal(chosen, stratified_fraction(labels, 0.2, seed=4))
    assert np.bincount(labels[stratified_fraction(labels, 0.2, seed=3, max_per_class=5)]).tolist() == [5, 5, 1]
    with pytest.raises(ValueError, match="fraction"):
        stratified_fraction(labels, 0.0)


def test_written_npz_reads_back_and_leaves_no_temporary_file(tmp_path):
    images, labels = _toy(tmp_path / "toy.npz")
    read_images, read_labels = read_medmnist_split(tmp_path, "train")  # a folder with one npz is accepted
    assert np.array_equal(read_images, images) and np.array_equal(read_labels, labels)
    assert [p.name for p in tmp_path.iterdir()] == ["toy.npz"]
    records = medmnist_records(tmp_path / "toy.npz", "train", fraction=0.2, seed=0)
    assert [r["label"] for r in records].count(0) == 2 and [r["label"] for r in records].count(1) == 5
    assert records[0]["image"].shape == (1, 6, 6) and records[0]["image"].dtype == np.float32
    assert max(r["image"].max() for r in records) <= 1.0


def test_bad_files_raise_one_error_naming_the_file(tmp_path):
    np.savez(tmp_path / "bad.npz", train_images=np.zeros((3, 4, 4), np.uint8), train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DatasetError, match=r"bad\.npz.*3 train_images but 2 train_labels"):
        read_medmnist_split(tmp_path / "bad.npz")
    with pytest.raises(DatasetError, match=r"bad\.npz.*no split 'test'"):
        read_medmnist_split(tmp_path / "bad.npz", "test")
    np.savez(tmp_path / "other.npz", x=np.zeros(1))
    with pytest.raises(DatasetError, match="exactly one.*bad.npz.*other.npz"):
        read_medmnist_split(tmp_path)
    _toy(tmp_path / "three" / "t.npz", n=(2, 2, 2))
    with pytest.raises(DatasetError, match=r"t\.npz.*classes \[0, 1, 2\] but only 2 class names"):
        medmnist_records(tmp_path / "three", num_classes=2)


def test_datalist_of_pngs_reads_like_an_npz(tmp_path):
    entries = []
    for k, value in enumerate((0, 255)):
        Image.fromarray(np.full((5, 5), value, np.uint8)).save(tmp_path / f"{k}.png")
        entries.append({"image": f"{k}.png", "label": k})
    (tmp_path / "datalist.json").write_text(json.dumps({"training": entries}))
    images, labels = read_labelled_images(tmp_path / "datalist.json")
    assert images.shape == (2, 1, 5, 5) and labels.tolist() == [0, 1]
    assert images[0].max() == 0.0 and images[1].min() == 1.0
    (tmp_path / "broken.json").write_text(json.dumps({"training": [{"image": "0.png", "label": "normal"}]}))
    with pytest.raises(DatasetError, match=r"broken\.json.*0\.png.*integer class"):
        read_labelled_images(tmp_path / "broken.json")


@pytest.mark.slow
@pytest.mark.realdata
def test_pneumoniamnist_subset_is_twenty_percent_of_each_class(pneumoniamnist_dir):
    """Our copy: train 1214 + 1214, val 135 + 135 (the held-out split, as it has no test split)."""
    images, labels = read_medmnist_split(pneumoniamnist_dir, "train")
    assert images.shape[1:] == (28, 28) and np.bincount(labels).tolist() == [1214, 1214]
    records = medmnist_records(pneumoniamnist_dir, "train", fraction=0.2, seed=0, num_classes=2)
    assert [r["label"] for r in records].count(0) == [r["label"] for r in records].count(1) == 243
    assert np.bincount(read_medmnist_split(pneumoniamnist_dir, "val")[1]).tolist() == [135, 135]


def test_volume_slices_take_their_case_group_as_class_and_are_drawn_by_case(phantom_dir, acdc_phantom_dir):
    from pathosynth.data.slice_classes import class_image_records

    records = class_image_records(phantom_dir, ["normal", "pathological"], [16, 16], fraction=0.5, seed=0)
    cases = {r["case_id"].rsplit("_z", 1)[0]: r["label"] for r in records}
    assert cases == {
        c: 0 if c.startswith("Case_N") else 1 for c in cases
    }  # EMIDEC: Case_N* normal, Case_P* pathological
    assert sorted(cases.values()) == [
        0,
        1,
        1,
    ]  # half of the 2 normal and of the 4 pathological hearts, every slice of each
    assert all(r["image"].shape == (1, 16, 16) and 0 <= r["image"].min() and r["image"].max() <= 1 for r in records)
    with pytest.raises(DatasetError, match="group 'NOR'.*not one of the configured class_names"):
        class_image_records(acdc_phantom_dir, ["normal", "pathological"], [16, 16])
