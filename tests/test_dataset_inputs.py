"""Dataset inputs as users give them (issue 17, defects 2, 4, 9, 10): the README's minimal datalist trains, labels that
mean something else are refused before any work with a message naming both meanings, malformed inputs give one clear
error naming the file or config key, and degenerate data is warned about by file name."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigParser
from monai.data import list_data_collate

from conftest import bundle_configs, run_bundle
from pathosynth.cli import validate
from pathosynth.data.cases import load_cases, path_list
from pathosynth.data.errors import DatasetError
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.data.layouts import read_datalist
from pathosynth.data.medmnist import medmnist_records, read_medmnist_split, write_medmnist_npz
from pathosynth.data.splits import write_split

ACDC_AS_EMIDEC = "label 3 is the LV cavity in ACDC but the config calls 3 'MI'"


def readme_datalist(
    phantom_dir: Path, out: Path, cases=("Case_P001", "Case_P002", "Case_P003", "Case_P004"), **extra
) -> Path:
    """The README's datalist format: decathlon entries with only ``image`` and ``label`` (no group, no case_id)."""
    entries = [
        {
            "image": str(phantom_dir / c / "Images" / f"{c}.nii.gz"),
            "label": str(phantom_dir / c / "Contours" / f"{c}.nii.gz"),
        }
        for c in cases
    ]
    out.write_text(json.dumps({**extra, "training": entries}))
    return out


def _config(bundle: str, configs: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(bundle_configs(bundle, *configs))
    parser.update(overrides)
    return parser


def _refusal(parser: ConfigParser, id: str) -> DatasetError:
    """The DatasetError that resolving config item ``id`` raises (MONAI wraps it in RuntimeErrors)."""
    with pytest.raises(Exception) as failure:
        parser.get_parsed_content(id)
    error = failure.value
    while not isinstance(error, DatasetError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, DatasetError), failure.value
    return error


# ---- defect 2: the README's datalist trains ---


def test_minimal_datalist_records_hold_no_none_and_collate(phantom_dir, tmp_path):
    records = read_datalist(readme_datalist(phantom_dir, tmp_path / "list.json"))
    assert all(value is not None for record in records for value in record.values())
    assert "group" not in records[0] and records[0]["case_id"] == "Case_P001"
    batch = list_data_collate([dict(r) for r in records[:2]])  # what the DataLoader does with the records' keys
    assert batch["case_id"] == ["Case_P001", "Case_P002"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "bundle, checkpoint", [("lesion_inpainting", "lefusion_j.pt"), ("lesion_mask_diffusion", "diffmask.pt")]
)
def test_readme_datalist_trains_the_lesion_bundles(bundle, checkpoint, phantom_dir, tmp_path):
    datalist = readme_datalist(phantom_dir, tmp_path / "list.json")
    assert "passed validation" in validate(datalist=str(datalist))  # validate and training agree
    run_bundle(
        "training",
        bundle,
        ["train.json", "smoke.json"],
        {
            "datalist": datalist,
            "dataset_dir": tmp_path / "absent",
            "ckpt_dir": tmp_path / "ckpt",
            "output_dir": tmp_path / "logs",
        },
    )
    assert (tmp_path / "ckpt" / checkpoint).is_file()


# ---- defect 4: label semantics ---


def test_emidec_labels_on_acdc_are_refused_naming_both_meanings(acdc_phantom_dir):
    with pytest.raises(DatasetError, match=f"dataset_dir {acdc_phantom_dir}: .*{ACDC_AS_EMIDEC}") as error:
        load_cases(str(acdc_phantom_dir), labels=EMIDEC_LABELS, lesion_classes=["MI", "PMO"], select="with_lesion")
    assert "label 1 is the RV cavity in ACDC but the config calls 1 'LV'" in str(error.value)


def test_names_are_compared_by_meaning(phantom_dir, acdc_phantom_dir):
    synonyms = {"Background": 0, "LV_cavity": 1, "healthy myocardium": 2, "myocardial infarction": 3, "MVO": 4}
    assert len(load_cases(str(phantom_dir), labels=synonyms)) == 6
    assert (
        len(load_cases(str(acdc_phantom_dir), labels={"background": 0, "right ventricle": 1, "myo": 2, "LV": 3})) == 8
    )
    with pytest.raises(DatasetError, match="the config calls 7 'myocardium' but the myocardium is label 2 in EMIDEC"):
        load_cases(str(phantom_dir), labels={"myocardium": 7})


@pytest.mark.slow
def test_lesion_inpainting_refuses_acdc_before_any_work(acdc_phantom_dir, tmp_path):
    with pytest.raises(AssertionError) as failure:
        run_bundle(
            "training",
            "lesion_inpainting",
            ["train.json", "smoke.json"],
            {"dataset_dir": acdc_phantom_dir, "ckpt_dir": tmp_path / "ckpt", "output_dir": tmp_path / "logs"},
        )
    assert ACDC_AS_EMIDEC in str(failure.value)
    assert not list((tmp_path / "ckpt").glob("*.pt")) and not (tmp_path / "logs").exists()


def test_split_datalists_record_their_labels_and_downstream_refuses_them_under_other_labels(acdc_phantom_dir, tmp_path):
    paths = write_split(acdc_phantom_dir, tmp_path / "split")
    written = json.loads(Path(paths["test"]).read_text())
    assert (
        written["labels"] == {"0": "background", "1": "RV", "2": "myocardium", "3": "LV"} and written["name"] == "ACDC"
    )
    emidec = _config(
        "downstream_segmentation", ["train.json"], test_datalist=paths["test"], train_datalists=[paths["train"]]
    )
    error = _refusal(emidec, "test#cases")  # downstream_segmentation scoring ACDC cases under its default EMIDEC labels
    assert f"label 1 is the RV cavity in datalist {paths['test']} (ACDC) but the config calls 1 'LV'" in str(error)
    acdc = _config("downstream_segmentation", ["train.json", "acdc.json"], test_datalist=paths["test"])
    assert len(acdc.get_parsed_content("test#cases")) == len(written["training"])


def test_msd_style_labels_of_a_datalist_are_used(phantom_dir, tmp_path):
    msd = {"0": "background", "1": "RV", "2": "myocardium", "3": "LV", "4": "PMO"}
    datalist = readme_datalist(phantom_dir, tmp_path / "list.json", labels=msd)
    with pytest.raises(
        DatasetError, match=rf"label 3 is the LV cavity in datalist {datalist} but the config calls 3 'MI'"
    ):
        load_cases(datalist=str(datalist), labels=EMIDEC_LABELS)
    ours = readme_datalist(phantom_dir, tmp_path / "ours.json", labels=EMIDEC_LABELS)
    assert len(load_cases(datalist=str(ours), labels=EMIDEC_LABELS)) == 4


def test_validate_checks_each_layout_against_its_own_labels(phantom_dir, acdc_phantom_dir):
    assert "of ACDC" in validate(dataset_dir=str(acdc_phantom_dir)) and "'RV': 1" in validate(
        dataset_dir=str(acdc_phantom_dir)
    )
    assert "of EMIDEC" in validate(dataset_dir=str(phantom_dir))
    with pytest.raises(DatasetError, match=ACDC_AS_EMIDEC):
        validate(dataset_dir=str(acdc_phantom_dir), labels=EMIDEC_LABELS)


def _npz(path: Path, labels=(0, 0, 1, 1), constant=False) -> Path:
    rng = np.random.default_rng(0)
    images = (
        np.full((len(labels), 8, 8), 7, np.uint8)
        if constant
        else rng.integers(0, 255, (len(labels), 8, 8), dtype=np.uint8)
    )
    return write_medmnist_npz(path, {"train": (images, np.asarray(labels))})


def test_medmnist_class_names_must_match_the_dataset(tmp_path):
    path = _npz(tmp_path / "pneumoniamnist.npz")
    with pytest.raises(
        DatasetError,
        match=r"pneumoniamnist\.npz: class 1 is 'pneumonia' in pneumoniamnist but the config calls 1 "
        r"'pathological'",
    ):
        medmnist_records(path, class_names=["normal", "pathological"])
    assert len(medmnist_records(path, class_names=["Normal", "pneumonia"])) == 4
    assert "per class {'normal': 2, 'pneumonia': 2}" in validate(dataset_dir=str(path))


# ---- defect 9: malformed inputs give one clear error ---


def test_datalist_that_is_a_folder_is_named(tmp_path):
    with pytest.raises(DatasetError, match=f"datalist {tmp_path} is a folder, not a JSON file"):
        read_datalist(tmp_path)


def test_non_string_image_path_is_named(phantom_dir, tmp_path):
    datalist = readme_datalist(phantom_dir, tmp_path / "list.json")
    content = json.loads(datalist.read_text())
    content["training"][1]["image"] = 5
    datalist.write_text(json.dumps(content))
    with pytest.raises(
        DatasetError, match=rf"datalist {datalist}: entry 1 of 'training' has 'image': 5; it must be a file path"
    ):
        load_cases(datalist=str(datalist), labels=EMIDEC_LABELS)


def test_truncated_npz_is_named(tmp_path):
    path = _npz(tmp_path / "toy.npz")
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=r"toy\.npz: cannot be read as a MedMNIST npz \(BadZipFile"):
        read_medmnist_split(path)


def test_a_datalist_given_as_a_string_is_one_file(phantom_dir, tmp_path):
    datalist = str(readme_datalist(phantom_dir, tmp_path / "list.json"))
    assert path_list(datalist, "train_datalists") == [datalist]
    with pytest.raises(
        DatasetError, match=r"`train_datalists` must be a file path or a non-empty list of file paths, got 5"
    ):
        path_list(5, "train_datalists")
    parser = _config("downstream_segmentation", ["train.json"], train_datalists=datalist)  # --train_datalists FILE
    assert [c["case_id"] for c in parser.get_parsed_content("train#cases")] == [
        "Case_P001",
        "Case_P002",
        "Case_P003",
        "Case_P004",
    ]


# ---- defect 10: degenerate data is warned about, a lesion-less pathological case refused ---


def test_constant_image_is_warned_about_by_file(phantom_dir, tmp_path, caplog):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    image = data / "Case_N001" / "Images" / "Case_N001.nii.gz"
    source = nib.load(image)
    nib.save(nib.Nifti1Image(np.full(source.shape, 5, np.int16), source.affine, source.header), image)
    with caplog.at_level(logging.WARNING, logger="pathosynth.data.validation"):
        load_cases(str(data), labels=EMIDEC_LABELS)
    assert [r.getMessage() for r in caplog.records] == [
        f"Case_N001: image {image.resolve()} is constant (every voxel 5); it holds no structure to learn from"
    ]


def test_single_class_npz_is_warned_about_by_file(tmp_path, caplog):
    path = _npz(tmp_path / "toy.npz", labels=(1, 1, 1))
    with caplog.at_level(logging.WARNING, logger="pathosynth.data.medmnist"):
        read_medmnist_split(path)
    assert any(str(path) in r.getMessage() and "is class 1" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pathosynth.data.medmnist"):
        read_medmnist_split(_npz(tmp_path / "two.npz"))
    assert not caplog.records


def test_reference_guided_training_refuses_a_pathological_case_without_lesion(phantom_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    label = data / "Case_P002" / "Contours" / "Case_P002.nii.gz"
    source = nib.load(label)
    values = np.asanyarray(source.dataobj).copy()
    values[values >= 3] = 2  # the lesion painted over as healthy myocardium
    nib.save(nib.Nifti1Image(values, source.affine, source.header), label)
    parser = _config("reference_guided_ddpm", ["train.json"], dataset_dir=str(data))
    error = str(_refusal(parser, "train#cases"))
    assert "Case_P002: label" in error and "no MI/PMO voxels, but it is declared pathological" in error
    assert (
        len(
            _config("reference_guided_ddpm", ["train.json"], dataset_dir=str(phantom_dir)).get_parsed_content(
                "train#cases"
            )
        )
        == 6
    )
