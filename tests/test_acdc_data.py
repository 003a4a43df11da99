"""ACDC support (docs/ARCHITECTURE.md, Contracts: "Data in", "Validation first"): the native layout becomes one record
per labelled frame, frames of one heart stay together in splits, and the ACDC-like phantom looks like cine MRI of real
hearts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from pathosynth.data.acdc import ACDC_LABELS, discover_acdc
from pathosynth.data.cases import load_cases
from pathosynth.data.errors import DatasetError
from pathosynth.data.layouts import detect_layout, discover
from pathosynth.data.phantom import generate_acdc_like_dataset
from pathosynth.data.splits import split_by_case
from pathosynth.data.validation import validate_cases

N_PATIENTS, SEED = 6, 0
GROUPS = ["NOR", "DCM", "HCM", "MINF", "RV", "NOR"]
CROSS = ndi.generate_binary_structure(2, 1)
RV, MYO, LV = ACDC_LABELS["RV"], ACDC_LABELS["myocardium"], ACDC_LABELS["LV"]


@pytest.fixture(scope="module")
def acdc_phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acdc_phantom")
    generate_acdc_like_dataset(out, n_patients=N_PATIENTS, seed=SEED, in_plane=96, n_slices=6)
    return out


@pytest.fixture()
def acdc_copy(acdc_phantom, tmp_path) -> Path:
    """A private copy of the phantom that a test may damage."""
    out = tmp_path / "acdc"
    shutil.copytree(acdc_phantom, out)
    return out


@pytest.fixture(scope="module")
def frames(acdc_phantom):
    """case_id -> (record, image, label) of every phantom frame."""
    out = {}
    for record in discover_acdc(acdc_phantom):
        out[record["case_id"]] = (
            record,
            np.asarray(nib.load(record["image"]).dataobj),
            np.asarray(nib.load(record["label"]).dataobj),
        )
    return out


# --- discovery --------------------------------------------------------------------------------------------------------


def test_phantom_discovers_one_record_per_frame_with_patient_group_and_phase(acdc_phantom):
    records = discover_acdc(acdc_phantom)
    assert len(records) == 2 * N_PATIENTS
    assert [r["case_id"] for r in records] == sorted(r["case_id"] for r in records)
    for i, group in enumerate(GROUPS, start=1):
        patient = f"patient{i:03d}"
        mine = [r for r in records if r["patient"] == patient]
        assert [r["phase"] for r in mine] == ["ED", "ES"], patient
        assert {r["group"] for r in mine} == {group}
        es = int((acdc_phantom / patient / "Info.cfg").read_text().split("ES:")[1].split()[0])
        assert [r["case_id"] for r in mine] == [f"{patient}_frame01", f"{patient}_frame{es:02d}"]
        for r in mine:
            assert set(r) == {"case_id", "image", "label", "group", "patient", "phase"}
            assert Path(r["image"]).is_absolute() and r["image"].endswith(f"{r['case_id']}.nii.gz")
            assert r["label"].endswith(f"{r['case_id']}_gt.nii.gz")
    validate_cases(records, ACDC_LABELS)


def test_phases_follow_info_cfg_or_frame_order(acdc_copy):
    """Info.cfg's ED/ES lines decide; without them (the re-exported data) the earlier frame is ED."""
    folder = acdc_copy / "patient002"
    es = sorted(folder.glob("*_gt.nii.gz"))[1].name.split("_frame")[1][:2]
    (folder / "Info.cfg").write_text(f"ED: {int(es)}\nES: 1\nGroup: DCM\n")  # swapped on purpose
    (acdc_copy / "patient003" / "Info.cfg").write_text("Group: HCM\n")
    (acdc_copy / "patient004" / "Info.cfg").write_bytes(b"\xff\xfe\x00garbage")  # unreadable: group None, order
    (acdc_copy / "patient005" / "Info.cfg").unlink()
    (acdc_copy / "patient006" / "Info.cfg").write_text("ED: 1\nES: 99\nGroup: NOR\n")  # renumbered frames: by order
    by_id = {r["case_id"]: r for r in discover_acdc(acdc_copy)}
    assert by_id["patient002_frame01"]["phase"] == "ES" and by_id[f"patient002_frame{es}"]["phase"] == "ED"
    p3 = sorted((r for r in by_id.values() if r["patient"] == "patient003"), key=lambda r: r["case_id"])
    assert [r["phase"] for r in p3] == ["ED", "ES"] and {r["group"] for r in p3} == {"HCM"}
    for patient in ("patient004", "patient005", "patient006"):
        mine = sorted((r for r in by_id.values() if r["patient"] == patient), key=lambda r: r["case_id"])
        assert [r["phase"] for r in mine] == ["ED", "ES"], patient
        assert {r.get("group") for r in mine} == (
            {"NOR"} if patient == "patient006" else {None}
        )  # unknown: absent, not None


def test_discover_detects_both_layouts(acdc_phantom, phantom_dir):
    assert detect_layout(acdc_phantom) == "acdc" and detect_layout(phantom_dir) == "emidec"
    assert discover(dataset_dir=str(acdc_phantom)) == discover_acdc(acdc_phantom)
    emidec = discover(dataset_dir=str(phantom_dir))
    assert [r["case_id"] for r in emidec][:2] == ["Case_N001", "Case_N002"] and "patient" not in emidec[0]
    cases = load_cases(str(acdc_phantom), labels=ACDC_LABELS)
    assert len(cases) == 2 * N_PATIENTS


def test_acdc_detected_by_frame_files_alone(acdc_copy):
    for cfg in acdc_copy.glob("patient*/Info.cfg"):
        cfg.unlink()
    assert detect_layout(acdc_copy) == "acdc"
    assert len(discover(dataset_dir=str(acdc_copy))) == 2 * N_PATIENTS


def test_unknown_layout_names_both_expected_layouts(tmp_path):
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans" / "a.nii.gz").write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        discover(dataset_dir=str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and "EMIDEC layout" in message and "ACDC layout" in message
    assert "Case_X/Images/Case_X.nii.gz" in message and "patientXXX_frameYY_gt.nii.gz" in message
    with pytest.raises(DatasetError, match="EMIDEC layout.*ACDC layout"):
        discover(dataset_dir=str(tmp_path / "missing"))


def test_nested_acdc_archive_points_to_the_right_folder(acdc_phantom, tmp_path):
    shutil.copytree(acdc_phantom, tmp_path / "training")
    with pytest.raises(DatasetError, match=r"did you mean --dataset_dir .*training"):
        discover(dataset_dir=str(tmp_path))
    with pytest.raises(DatasetError, match="no ACDC patient folders.*did you mean"):
        discover_acdc(tmp_path)


def test_image_without_label_is_named(acdc_copy):
    label = acdc_copy / "patient003" / "patient003_frame01_gt.nii.gz"
    label.unlink()
    with pytest.raises(DatasetError) as info:
        discover(dataset_dir=str(acdc_copy))
    message = str(info.value)
    assert "patient003_frame01" in message and "has no label" in message and str(label) in message


def test_every_layout_problem_in_one_error(acdc_copy):
    (acdc_copy / "patient001" / "patient001_frame01.nii.gz").unlink()  # label without image
    for f in (acdc_copy / "patient002").glob("*.nii.gz"):  # folder without frames
        f.unlink()
    shutil.copy(
        acdc_copy / "patient004" / "patient004_frame01.nii.gz", acdc_copy / "patient004" / "patient009_frame01.nii.gz"
    )
    with pytest.raises(DatasetError) as info:
        discover_acdc(acdc_copy)
    message = str(info.value)
    assert "3 problem(s)" in message
    assert "patient001_frame01: label" in message and "has no image" in message
    assert "patient002: folder" in message and "holds no patient002_frameYY.nii.gz" in message
    assert "patient009_frame01.nii.gz is named for 'patient009'" in message


def test_validation_names_a_bad_acdc_label(acdc_copy):
    label = acdc_copy / "patient005" / "patient005_frame01_gt.nii.gz"
    img = nib.load(label)
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(data, img.affine, img.header), label)
    with pytest.raises(DatasetError, match=r"patient005_frame01: label .* values \[4\]"):
        load_cases(str(acdc_copy), labels=ACDC_LABELS)


# --- splits by patient ------------------------------------------------------------------------------------------------


def _fake_acdc_records(n_patients=40):
    groups = ["NOR", "DCM", "HCM", "MINF", "RV"]
    return [
        {
            "case_id": f"patient{p:03d}_frame{f:02d}",
            "image": "",
            "label": "",
            "group": groups[p % 5],
            "patient": f"patient{p:03d}",
            "phase": phase,
        }
        for p in range(1, n_patients + 1)
        for f, phase in ((1, "ED"), (12, "ES"))
    ]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.2, 0.25, 0.5])
def test_patient_split_keeps_both_frames_of_a_heart_together(seed, fraction):
    records = _fake_acdc_records()
    train, test = split_by_case(records, fraction, seed=seed, group_key="patient")
    assert len(train) + len(test) == len(records)
    assert not {r["patient"] for r in train} & {r["patient"] for r in test}
    for part in (train, test):
        for patient in {r["patient"] for r in part}:
            assert sorted(r["phase"] for r in part if r["patient"] == patient) == ["ED", "ES"]
    for group in {r["group"] for r in records}:  # stratified: each group split by patients in the same proportion
        assert len({r["patient"] for r in test if r["group"] == group}) == round(fraction * 8)
    again = split_by_case(list(reversed(records)), fraction, seed=seed, group_key="patient")
    assert again == (train, test)


def test_patient_split_needs_the_key():
    records = _fake_acdc_records(4)
    del records[3]["patient"]
    with pytest.raises(ValueError, match="no 'patient'"):
        split_by_case(records, 0.5, group_key="patient")


def test_default_split_is_still_by_case_record():
    """Without group_key nothing changes: every record is its own unit (EMIDEC's behaviour)."""
    records = _fake_acdc_records(10)
    train, test = split_by_case(records, 0.5, seed=0)
    assert len(test) == 10 and len(train) == 10


def test_groups_of_one_patient_are_pooled_so_the_test_set_is_not_empty():
    records = [
        r for r in _fake_acdc_records(5) if r["patient"] in ("patient001", "patient002", "patient003", "patient004")
    ]
    assert len({r["group"] for r in records}) == 4  # one patient per group
    train, test = split_by_case(records, 0.25, seed=0, group_key="patient")
    assert len({r["patient"] for r in test}) == 1 and len({r["patient"] for r in train}) == 3


def test_written_acdc_split_is_by_patient_with_acdc_labels(acdc_phantom, tmp_path):
    """``write_split`` on an ACDC folder: train/test datalists only (no EMIDEC normal/pathological parts), both
    frames of each heart on one side, every case once, the dataset untouched."""
    from pathosynth.data.splits import write_split

    paths = write_split(acdc_phantom, tmp_path / "split", test_fraction=0.25, seed=0)
    assert sorted(paths) == ["test", "train"]
    split = json.loads((tmp_path / "split" / "split.json").read_text())
    assert split["group_key"] == "patient"
    patients = {part: {case.split("_frame")[0] for case in split[part]} for part in ("train", "test")}
    assert patients["test"] and not patients["train"] & patients["test"]
    assert len(split["train"]) == 2 * len(patients["train"]) and len(split["test"]) == 2 * len(patients["test"])
    records = load_cases(datalist=paths["test"], labels=ACDC_LABELS)
    assert sorted(r["case_id"].split("_", 1)[1] for r in records) == sorted(split["test"])


# --- the ACDC-like phantom --------------------------------------------------------------------------------------------


def test_phantom_layout_and_readme(acdc_phantom):
    patients = sorted(p.name for p in acdc_phantom.iterdir() if p.is_dir())
    assert patients == [f"patient{i:03d}" for i in range(1, N_PATIENTS + 1)]
    for patient in patients:
        names = sorted(p.name for p in (acdc_phantom / patient).iterdir())
        assert len(names) == 5 and "Info.cfg" in names and f"{patient}_frame01_gt.nii.gz" in names
        info = (acdc_phantom / patient / "Info.cfg").read_text()
        assert info.startswith("ED: 1\nES: ") and "Group: " in info
    assert "synthetic" in (acdc_phantom / "README.txt").read_text().lower()
    assert not list(acdc_phantom.rglob("*.tmp"))


def test_phantom_same_seed_same_bytes_other_seed_differs(acdc_phantom, tmp_path):
    generate_acdc_like_dataset(tmp_path / "again", n_patients=N_PATIENTS, seed=SEED)
    generate_acdc_like_dataset(tmp_path / "other", n_patients=N_PATIENTS, seed=SEED + 1)
    generate_acdc_like_dataset(tmp_path / "fewer", n_patients=2, seed=SEED)
    files = sorted(p.relative_to(acdc_phantom) for p in acdc_phantom.rglob("*") if p.is_file())
    assert len(files) == 5 * N_PATIENTS + 1
    for rel in files:
        data = (acdc_phantom / rel).read_bytes()
        assert (tmp_path / "again" / rel).read_bytes() == data, rel
        if rel.name.endswith(".nii.gz") and rel.parts[0] <= "patient002":
            assert (tmp_path / "fewer" / rel).read_bytes() == data, f"{rel}: a patient must not depend on n_patients"
    nifti = [rel for rel in files if rel.name.endswith("_frame01.nii.gz")]
    assert all((tmp_path / "other" / rel).read_bytes() != (acdc_phantom / rel).read_bytes() for rel in nifti)


def test_phantom_refuses_to_overwrite_differing_files(acdc_copy):
    target = acdc_copy / "patient001" / "patient001_frame01_gt.nii.gz"
    target.write_bytes(b"hand-edited")
    with pytest.raises(FileExistsError, match="patient001_frame01_gt"):
        generate_acdc_like_dataset(acdc_copy, n_patients=N_PATIENTS, seed=SEED)
    assert target.read_bytes() == b"hand-edited"


def test_phantom_dtypes_values_and_affine(frames):
    for cid, (_, img, lab) in frames.items():
        assert img.dtype == np.float32 and lab.dtype == np.uint8 and img.shape == lab.shape == (96, 96, 6), cid
        assert img.min() == 0.0 and img.max() == 1.0, f"{cid}: not min-max normalised like the real re-export"
        assert set(np.unique(lab)) == {0, 1, 2, 3}, cid
    record = next(iter(frames.values()))[0]
    np.testing.assert_array_equal(nib.load(record["image"]).affine, np.diag([1.0, 1.0, 10.0, 1.0]))


def test_myocardium_surrounds_the_lv_and_rv_touches_the_myocardium(frames):
    for cid, (_, _, lab) in frames.items():
        for z in range(lab.shape[2]):
            sl = lab[..., z]
            lv = sl == LV
            assert lv.any(), f"{cid} z={z}: no LV cavity"
            around = ndi.binary_dilation(lv, CROSS)
            assert np.isin(sl[around], [LV, MYO]).all(), f"{cid} z={z}: LV has a non-myocardial 4-neighbour"
            assert ndi.label(sl == MYO)[1] == 1, f"{cid} z={z}: myocardium is not one ring"
            np.testing.assert_array_equal(ndi.binary_fill_holes(sl == MYO) & (sl != MYO), lv, err_msg=f"{cid} z={z}")
            if (sl == RV).any():
                assert (ndi.binary_dilation(sl == RV, CROSS) & (sl == MYO)).any(), (
                    f"{cid} z={z}: RV apart from the septum"
                )
        assert (lab[..., 0] == RV).any() and not (lab[..., -1] == RV).any(), f"{cid}: RV should end above the LV apex"


def test_end_diastole_has_the_larger_lv_and_rv(frames):
    by_patient = {}
    for record, _, lab in frames.values():
        by_patient.setdefault(record["patient"], {})[record["phase"]] = lab
    for patient, phases in by_patient.items():
        ed, es = phases["ED"], phases["ES"]
        assert (ed == LV).sum() > 1.05 * (es == LV).sum(), patient
        assert (ed == RV).sum() > (es == RV).sum(), patient
        myo_ed, myo_es = (ed == MYO).sum(), (es == MYO).sum()
        assert abs(myo_ed - myo_es) < 0.15 * myo_ed, f"{patient}: myocardial volume should be about constant"


def test_phantom_groups_differ_like_the_diagnoses(frames):
    ef = {}
    for record, _, lab in frames.values():
        ef.setdefault(record["group"], {}).setdefault(record["patient"], {})[record["phase"]] = (lab == LV).sum()
    ef = {g: np.mean([1 - v["ES"] / v["ED"] for v in ps.values()]) for g, ps in ef.items()}
    assert ef["DCM"] < 0.35 < ef["NOR"] and ef["HCM"] > ef["DCM"] and ef["MINF"] < ef["NOR"], ef


def test_cine_contrast_blood_bright_myocardium_dark(frames):
    """Per-label means near the real ACDC development data (0.14 background, 0.35 RV, 0.19 myocardium, 0.43 LV)."""
    pooled = {k: [] for k in range(4)}
    for cid, (_, img, lab) in frames.items():
        mean = {k: float(img[lab == k].mean()) for k in range(4)}
        for k in pooled:
            pooled[k].append(mean[k])
        assert mean[LV] > mean[MYO] + 0.1 and mean[RV] > mean[MYO] + 0.05, (cid, mean)
        assert img[lab == 0].std() > 0.05, f"{cid}: background has no texture"
    for k, real in {0: 0.14, 1: 0.35, 2: 0.19, 3: 0.43}.items():
        assert abs(np.mean(pooled[k]) - real) < 0.08, (k, np.mean(pooled[k]), real)


# --- the real data, when present --------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_acdc_discovers_and_validates(acdc_dir):
    records = discover(dataset_dir=str(acdc_dir))
    assert len({r["patient"] for r in records}) == 80 and len(records) == 160
    assert {r["group"] for r in records} == {"NOR", "DCM", "HCM", "MINF", "RV"}
    for patient in {r["patient"] for r in records}:
        assert sorted(r["phase"] for r in records if r["patient"] == patient) == ["ED", "ES"]
    values = validate_cases(records, ACDC_LABELS, source=f"dataset_dir {acdc_dir}")
    assert set().union(*values) <= {0, 1, 2, 3}
    train, test = split_by_case(records, 0.25, seed=0, group_key="patient")
    assert len(test) == 40 and not {r["patient"] for r in train} & {r["patient"] for r in test}
