"""Exports for downstream training (P + N'' for nnU-Net / MONAI): layouts are exact, copies are byte-identical,
reruns are no-ops, nothing is overwritten or written into a source dataset, and nnU-Net accepts what we write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pathosynth.data.cases import load_cases
from pathosynth.data.errors import DatasetError
from pathosynth.data.exports import export, export_emidec, export_nnunet, sets_from_sources
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.data.layouts import discover_emidec, read_datalist
from pathosynth.io.datalists import export_datalist

LESIONS = ["MI", "PMO"]


def _real(phantom_dir, select="all"):
    return load_cases(str(phantom_dir), labels=EMIDEC_LABELS, lesion_classes=LESIONS, select=select)


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: a rename or rewrite changes one of them."""
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def synthetic_dir(phantom_dir, tmp_path_factory) -> Path:
    """A fake synthetic output folder (images/, labels/, datalist.json as SynthesisRunner writes it) from the lesion
    cases.

    Files are uncompressed ``.nii`` so the nnU-Net export has to re-save them as ``.nii.gz``.
    """
    out = tmp_path_factory.mktemp("synthetic")
    entries = []
    (out / "images").mkdir()
    (out / "labels").mkdir()
    for case in _real(phantom_dir, "with_lesion"):
        image, label = nib.load(case["image"]), nib.load(case["label"])
        output_id = f"{case['case_id']}_syn00"
        data = np.asanyarray(image.dataobj)
        brighter = np.where(data < 255, data + 1, data).astype(data.dtype)  # differs from its source, same geometry
        nib.save(nib.Nifti1Image(brighter, image.affine, image.header), out / "images" / f"{output_id}.nii")
        nib.save(label, out / "labels" / f"{output_id}.nii")
        entries.append(
            {
                "image": f"images/{output_id}.nii",
                "label": f"labels/{output_id}.nii",
                "source_image": case["image"],
                "case_id": output_id,
                "source_case_id": case["case_id"],
            }
        )
    (out / "datalist.json").write_text(json.dumps({"name": "fake", "training": entries}))
    return out


@pytest.fixture()
def p_and_n2(phantom_dir, synthetic_dir):
    """The LeFusion training mix: real pathological cases P plus synthetic N''."""
    return sets_from_sources(
        [
            {"name": "P", "dataset_dir": str(phantom_dir), "select": "with_lesion"},
            {"name": "N2", "datalist": str(synthetic_dir / "datalist.json")},
        ]
    )


def test_emidec_export_is_the_emidec_layout_with_byte_identical_files(phantom_dir, tmp_path):
    real = _real(phantom_dir)
    exported = export_emidec(real, tmp_path / "out")
    found = discover_emidec(tmp_path / "out")
    assert [c["case_id"] for c in found] == [f"Case_S{i:04d}" for i in range(1, len(real) + 1)]
    assert [(c["image"], c["label"]) for c in found] == [(c["image"], c["label"]) for c in exported]
    for source, copy in zip(real, found):
        assert Path(copy["image"]) == tmp_path / "out" / copy["case_id"] / "Images" / f"{copy['case_id']}.nii.gz"
        assert Path(copy["image"]).read_bytes() == Path(source["image"]).read_bytes()
        assert Path(copy["label"]).read_bytes() == Path(source["label"]).read_bytes()
    sources = json.loads((tmp_path / "out" / "sources.json").read_text())
    assert sources["Case_S0001"] == {
        "case_id": real[0]["case_id"],
        "image": real[0]["image"],
        "label": real[0]["label"],
        "group": real[0]["group"],
    }
    assert load_cases(
        str(tmp_path / "out"), labels=EMIDEC_LABELS, lesion_classes=LESIONS
    )  # the copy validates like the source


def test_emidec_export_rerun_changes_nothing(phantom_dir, tmp_path):
    real = _real(phantom_dir)
    export_emidec(real, tmp_path / "out")
    before = _tree(tmp_path / "out")
    export_emidec(real, tmp_path / "out")
    assert _tree(tmp_path / "out") == before


def test_emidec_export_refuses_different_content_and_writes_nothing(phantom_dir, tmp_path):
    real = _real(phantom_dir)
    export_emidec(real, tmp_path / "out")
    before = _tree(tmp_path / "out")
    with pytest.raises(FileExistsError, match="Case_S0001"):
        export_emidec(real[::-1], tmp_path / "out")  # same ids, other sources
    assert _tree(tmp_path / "out") == before


def test_no_export_writes_into_a_source_folder(phantom_dir, synthetic_dir, tmp_path):
    dataset = tmp_path / "data"  # a private copy: a broken guard must not damage the shared fixture
    shutil.copytree(phantom_dir, dataset)
    real = _real(dataset)
    before = _tree(dataset)
    for out in (dataset, dataset / "Case_P001" / "Images" / "exported", tmp_path):
        with pytest.raises(ValueError, match="source"):
            export_emidec(real, out)
    with pytest.raises(ValueError, match="inside source folder"):
        export_nnunet([("P", real)], dataset, 501, "X", EMIDEC_LABELS)
    sets = sets_from_sources([{"name": "N2", "datalist": str(synthetic_dir / "datalist.json")}])
    with pytest.raises(ValueError, match="inside source folder"):
        export_datalist(sets, synthetic_dir / "combined.json")  # would sit in the synthetic dataset's own folder
    with pytest.raises(ValueError, match="inside source folder"):
        export_emidec(sets[0][1], synthetic_dir / "emidec")
    assert (
        _tree(dataset) == before
        and not (synthetic_dir / "combined.json").exists()
        and not (synthetic_dir / "emidec").exists()
    )


def test_datalist_export_is_read_by_monai_and_by_read_datalist(phantom_dir, synthetic_dir, tmp_path):
    from monai.data import load_decathlon_datalist

    shutil.copytree(synthetic_dir, tmp_path / "synthetic")  # below the JSON's folder: its paths become relative
    sets = sets_from_sources(
        [
            {"name": "P", "dataset_dir": str(phantom_dir), "select": "with_lesion"},
            {"name": "N2", "datalist": str(tmp_path / "synthetic" / "datalist.json")},
        ]
    )
    written = export_datalist(sets, tmp_path / "combined.json")
    entries = written["training"]
    assert len(entries) == sum(len(r) for _, r in sets) and len({e["case_id"] for e in entries}) == len(entries)
    synthetic = [e for e in entries if e["set"] == "N2"]
    assert all(e["image"].startswith("synthetic/") and e["source_image"] for e in synthetic)
    assert all(Path(e["image"]).is_absolute() and "source_image" not in e for e in entries if e["set"] == "P")
    monai_items = load_decathlon_datalist(str(tmp_path / "combined.json"))
    records = sets[0][1] + sets[1][1]
    assert [str(Path(i["image"]).resolve()) for i in monai_items] == [str(Path(r["image"]).resolve()) for r in records]
    assert [str(Path(i["label"]).resolve()) for i in monai_items] == [str(Path(r["label"]).resolve()) for r in records]
    ours = read_datalist(tmp_path / "combined.json")
    assert [r["case_id"] for r in ours] == [e["case_id"] for e in entries]
    assert [r["image"] for r in ours] == [str(Path(r["image"]).resolve()) for _, records in sets for r in records]


def _nnunet(p_and_n2, root, **kwargs) -> Path:
    return export_nnunet(p_and_n2, root, 501, "Pathosynth", EMIDEC_LABELS, **kwargs)


def test_nnunet_export_structure_and_dataset_json(p_and_n2, tmp_path):
    folder = _nnunet(p_and_n2, tmp_path)
    assert folder == tmp_path / "Dataset501_Pathosynth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset501_Pathosynth"]  # no staging folder left behind
    meta = json.loads((folder / "dataset.json").read_text())
    images, labels = sorted((folder / "imagesTr").iterdir()), sorted((folder / "labelsTr").iterdir())
    assert meta["numTraining"] == len(images) == len(labels) == sum(len(r) for _, r in p_and_n2)
    assert (
        meta["channel_names"] == {"0": "LGE"} and meta["file_ending"] == ".nii.gz" and meta["labels"] == EMIDEC_LABELS
    )
    assert [p.name.replace("_0000", "") for p in images] == [p.name for p in labels]
    real_first = p_and_n2[0][1][0]
    copy = folder / "imagesTr" / f"P_{real_first['case_id']}_0000.nii.gz"
    assert copy.read_bytes() == Path(real_first["image"]).read_bytes()  # .nii.gz source: byte copy
    synthetic_first = p_and_n2[1][1][0]
    resaved = nib.load(folder / "imagesTr" / f"N2_{synthetic_first['case_id']}_0000.nii.gz")  # .nii source: re-saved
    source = nib.load(synthetic_first["image"])
    assert np.array_equal(np.asanyarray(resaved.dataobj), np.asanyarray(source.dataobj)) and np.allclose(
        resaved.affine, source.affine
    )
    sources = json.loads((folder / "sources.json").read_text())
    assert sources[f"N2_{synthetic_first['case_id']}"]["source_image"] == synthetic_first["source_image"]
    assert set(sources) == {p.name[: -len(".nii.gz")] for p in labels}


def test_nnunet_export_refuses_an_existing_dataset_unless_told(p_and_n2, tmp_path):
    folder = _nnunet(p_and_n2, tmp_path)
    with pytest.raises(FileExistsError, match="Dataset501_Pathosynth"):
        _nnunet(p_and_n2, tmp_path)
    (folder / "imagesTr" / "stale_0000.nii.gz").write_bytes(b"old")
    _nnunet(p_and_n2[:1], tmp_path, overwrite=True)
    assert not (folder / "imagesTr" / "stale_0000.nii.gz").exists()
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == len(
        list((folder / "imagesTr").iterdir())
    )


def test_nnunet_case_ids_are_unique_across_sets(phantom_dir, p_and_n2, tmp_path):
    ids = {p.name for p in (_nnunet(p_and_n2, tmp_path / "ok") / "labelsTr").iterdir()}
    assert len(ids) == sum(len(r) for _, r in p_and_n2)  # the same case id in two sets stays two cases
    with pytest.raises(ValueError, match="not unique"):
        _nnunet(
            [("a b", p_and_n2[0][1]), ("a_b", p_and_n2[0][1])], tmp_path / "clash"
        )  # both sanitise to a_b_Case_P001
    with pytest.raises(ValueError, match="distinct names"):
        sets_from_sources(
            [{"name": "P", "dataset_dir": str(phantom_dir)}, {"name": "P", "dataset_dir": str(phantom_dir)}]
        )
    assert not (tmp_path / "clash").exists()


@pytest.mark.parametrize(
    "labels", [{"LV": 1, "myocardium": 2}, {"background": 0, "LV": 1, "MI": 3}, {"background": 0, "LV": 1.0}]
)
def test_nnunet_labels_must_be_background_zero_and_consecutive(p_and_n2, tmp_path, labels):
    with pytest.raises(ValueError, match="0..K-1"):
        export_nnunet(p_and_n2, tmp_path, 501, "Pathosynth", labels)
    assert not list(tmp_path.iterdir())


def _damaged_label(case, tmp_path, value=None, shift=0.0):
    """A copy of a case whose label holds an undeclared value, or sits on a shifted grid."""
    label = nib.load(case["label"])
    data = np.asanyarray(label.dataobj).copy()
    if value is not None:
        data[data == 4] = value  # the PMO core becomes an undeclared class
        data[0, 0, 0] = value
    affine = label.affine.copy()
    affine[0, 3] += shift
    path = tmp_path / "bad" / "bad_label.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine, label.header), path)
    return {**case, "label": str(path)}


@pytest.mark.parametrize("damage, message", [({"value": 7}, r"values \[7\]"), ({"shift": 2.0}, "affines differ")])
def test_nnunet_export_rejects_bad_labels_before_nnunet_sees_them(p_and_n2, tmp_path, damage, message):
    bad = _damaged_label(p_and_n2[0][1][0], tmp_path, **damage)
    with pytest.raises(DatasetError, match=message) as info:
        _nnunet([("P", [bad])], tmp_path / "raw")
    assert bad["label"] in str(info.value)  # names the user's file, not an exported copy
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())


def test_nnunet_integrity_check_passes_on_real_plus_synthetic(phantom_dir, synthetic_dir, tmp_path, monkeypatch, capfd):
    pytest.importorskip("nnunetv2", reason="nnunetv2 is a test-only dependency (requirements-dev.txt)")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    sources = [
        {"name": "P", "dataset_dir": str(phantom_dir), "select": "with_lesion"},
        {"name": "N2", "datalist": str(synthetic_dir / "datalist.json")},
    ]
    message = export(
        str(tmp_path / "nnUNet_raw"), format="nnunet", sources=json.dumps(sources), dataset_id=502
    )  # the CLI path
    folder = tmp_path / "nnUNet_raw" / "Dataset502_Pathosynth"
    assert message.endswith(str(folder))
    verify_dataset_integrity(str(folder), num_processes=1)  # raises (AssertionError/RuntimeError) on any problem
    output = capfd.readouterr().out  # its worker process prints mismatches (some only as warnings) to fd 1
    assert "Error" not in output and "Warning" not in output and "verify_dataset_integrity Done" in output, output
