"""lesion_mask_diffusion end to end through `python -m monai.bundle run` (smoke scale): DiffMask training and
sampling, and the normal -> pathological pipeline with DiffMask / hand-crafted masks and LeFusion / hand-crafted
textures, exported for nnU-Net."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import run_bundle
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.masks.postprocess import label_to_masks, pmo_inside_mi_voxels

BUNDLE = "lesion_mask_diffusion"


def _arrays(path):
    return np.asanyarray(nib.load(path).dataobj)


def _run(workflow, config, dataset, out, overlays=(), nproc=None, **overrides):
    return run_bundle(
        workflow,
        BUNDLE,
        [config, *overlays, "smoke.json"],
        {"dataset_dir": dataset, "output_dir": out, **overrides},
        nproc=nproc,
    )


@pytest.fixture(scope="module")
def trained(phantom_dir, tmp_path_factory):
    """Smoke-trained DiffMask and LeFusion-J checkpoints on the phantom data."""
    ckpt = tmp_path_factory.mktemp("mask_ckpt")
    texture = tmp_path_factory.mktemp("texture_ckpt")
    _run("training", "train.json", phantom_dir, ckpt / "logs", ckpt_dir=ckpt)
    run_bundle(
        "training",
        "lesion_inpainting",
        ["train.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": texture, "output_dir": texture / "logs"},
    )
    return ckpt, texture


def check_masks(out: Path, image_unchanged: bool):
    """Every output: lesions inside the source's M_m, PMO inside MI, anatomy and outside-M_m labels kept;
    the image unchanged (mask generation) or changed only inside the new lesions (pipeline)."""
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert entries and (out / "preview.png").exists()
    for entry in entries:
        record = json.loads((out / entry["provenance"]).read_text())
        source_label = _arrays(record["source_label"])
        label = _arrays(out / entry["label"])
        mi_extent, pmo, _ = label_to_masks(label, EMIDEC_LABELS)
        _, _, region = label_to_masks(source_label, EMIDEC_LABELS)
        assert mi_extent.any(), entry["case_id"]
        assert not (mi_extent & ~region).any(), "every generated lesion voxel lies in the anatomy mask"
        assert np.array_equal(label[~region], source_label[~region]), "labels outside M_m are kept"
        assert pmo_inside_mi_voxels(mi_extent, pmo, region)[pmo].all(), "PMO inside MI"
        source = _arrays(entry["source_image"])
        image = _arrays(out / entry["image"])
        if image_unchanged:
            assert np.array_equal(image, source)
        else:
            assert np.array_equal(image[~mi_extent], source[~mi_extent]), (
                "the image changes only inside the new lesions"
            )
            assert not np.array_equal(image[mi_extent], source[mi_extent])
    return entries


def test_diffmask_training_and_mask_generation(phantom_dir, trained, tmp_path):
    ckpt, _ = trained
    assert (ckpt / "diffmask.pt").exists() and (ckpt / "diffmask_latest.pt").exists()
    out = tmp_path / "masks"
    _run("inference", "inference.json", phantom_dir, out, ckpt_dir=ckpt)
    entries = check_masks(out, image_unchanged=True)
    assert sorted(e["source_case_id"] for e in entries) == ["Case_N001", "Case_N002"]


@pytest.mark.slow
def test_two_processes_generate_the_masks_of_one(phantom_dir, trained, tmp_path):
    """torchrun, 2 CPU processes (gloo) with multi_gpu_inference.json: each rank generates a disjoint share, rank 0
    merges one datalist, and every mask is bitwise the single-process mask of the same case and seed."""
    ckpt, _ = trained
    one, two = tmp_path / "one", tmp_path / "two"
    _run("inference", "inference.json", phantom_dir, one, ckpt_dir=ckpt)
    proc = _run(
        "inference", "inference.json", phantom_dir, two, overlays=["multi_gpu_inference.json"], ckpt_dir=ckpt, nproc=2
    )
    assert "rank 1/2" in proc.stdout + proc.stderr
    entries = check_masks(two, image_unchanged=True)
    assert sorted(e["case_id"] for e in entries) == sorted(
        e["case_id"] for e in json.loads((one / "datalist.json").read_text())["training"]
    )
    for entry in entries:
        assert np.array_equal(_arrays(two / entry["label"]), _arrays(one / entry["label"])), entry["case_id"]


def test_target_burden_is_met_where_feasible(phantom_dir, trained, tmp_path):
    """Requested lesion burden (fraction of M_m): the post-processed masks land near it."""
    ckpt, _ = trained
    out = tmp_path / "masks"
    _run("inference", "inference.json", phantom_dir, out, ckpt_dir=ckpt, target_burden=0.2)
    for entry in check_masks(out, image_unchanged=True):
        record = json.loads((out / entry["provenance"]).read_text())
        assert abs(record["synthesis"]["lesion_burden"] - 0.2) < 0.08, record["synthesis"]


def test_pipeline_normal_to_pathological_and_nnunet_export(phantom_dir, trained, tmp_path, monkeypatch, capfd):
    """DiffMask + LeFusion-J on normal cases; the result plus real pathological cases is a valid nnU-Net dataset."""
    ckpt, texture = trained
    out = tmp_path / "n2"
    _run("run", "pipeline.json", phantom_dir, out, ckpt_dir=ckpt, texture_ckpt_dir=texture, num_samples_per_case=2)
    entries = check_masks(out, image_unchanged=False)
    assert len(entries) == 4
    record = json.loads((out / entries[0]["provenance"]).read_text())
    assert set(record["checkpoints"]) == {str(ckpt / "diffmask.pt"), str(texture / "lefusion_j.pt")}
    pytest.importorskip("nnunetv2", reason="nnunetv2 is a test-only dependency (requirements-dev.txt)")
    from pathosynth.data.exports import export

    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    sources = [
        {"name": "P", "dataset_dir": str(phantom_dir), "select": "with_lesion"},
        {"name": "N2", "datalist": str(out / "datalist.json")},
    ]
    export(str(tmp_path / "nnUNet_raw"), format="nnunet", sources=sources, dataset_id=503, dataset_name="PplusN2")
    verify_dataset_integrity(str(tmp_path / "nnUNet_raw" / "Dataset503_PplusN2"), num_processes=1)
    assert "verify_dataset_integrity Done" in capfd.readouterr().out


def test_pipeline_with_handcrafted_masks_and_texture(phantom_dir, tmp_path):
    """The hand-crafted baseline needs no checkpoint at all."""
    out = tmp_path / "hc"
    _run(
        "run",
        "pipeline.json",
        phantom_dir,
        out,
        overlays=["pipeline_handcrafted_masks.json", "pipeline_handcrafted_texture.json"],
    )
    entries = check_masks(out, image_unchanged=False)
    record = json.loads((out / entries[0]["provenance"]).read_text())
    assert record["checkpoints"] == {} and record["synthesis"]["mask"]["mask_source"] == "handcrafted"


def test_pipeline_p_prime_keeps_real_masks(phantom_dir, trained, tmp_path):
    """P': real masks of pathological cases, new LeFusion texture, one per case, labels unchanged."""
    _, texture = trained
    out = tmp_path / "p_prime"
    _run("run", "pipeline.json", phantom_dir, out, overlays=["pipeline_real_masks.json"], texture_ckpt_dir=texture)
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert len(entries) == 4
    for entry in entries:
        record = json.loads((out / entry["provenance"]).read_text())
        assert np.array_equal(_arrays(out / entry["label"]), _arrays(record["source_label"]))
    check_masks(out, image_unchanged=False)


@pytest.mark.slow
@pytest.mark.realdata
def test_real_emidec_masks_stay_in_the_myocardium(emidec_dir, tmp_path):
    """DiffMask trained (smoke scale) on real pathological cases, sampled on real normal cases."""
    ckpt = tmp_path / "ckpt"
    _run("training", "train.json", emidec_dir, tmp_path / "logs", ckpt_dir=ckpt, max_cases=6)
    out = tmp_path / "masks"
    _run("inference", "inference.json", emidec_dir, out, ckpt_dir=ckpt, max_cases=3)
    assert len(check_masks(out, image_unchanged=True)) == 3
