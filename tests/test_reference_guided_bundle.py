"""reference_guided_ddpm bundle, run as a user would (``python -m monai.bundle run`` with smoke.json) on the EMIDEC
phantom: unconditional DDPM training, then guided synthesis from normal cases (anatomy references) with lesion patches
cut from the pathological cases. Checked: the output contract (datalist, images on the source grid, provenance with
every N_s / a_s / W setting, rerun skips finished cases), that each label is the reference's anatomy plus the placed
lesion (a training pair), that patches are placed inside the configured anatomy, and that a sample does not depend
on the slice batch it was drawn in. Multi-process training/synthesis and resuming are marked slow."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLES, ROOT, bundle_configs, run_bundle
from pathosynth.synthesis.reference_guided import model_grid, model_items

BUNDLE = "reference_guided_ddpm"
CONFIGS = BUNDLES / BUNDLE / "configs"
SMOKE = json.loads((CONFIGS / "smoke.json").read_text())
LESION, MYOCARDIUM = [3, 4], 2


def arrays(path):
    return np.asanyarray(nib.load(path).dataobj)


@pytest.fixture(scope="module")
def run(phantom_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference_guided")
    ckpt, out = root / "ckpt", root / "synthetic"
    run_bundle(
        "training",
        BUNDLE,
        ["train.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "output_dir": ckpt / "logs"},
    )
    run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "output_dir": out},
    )
    return {"data": phantom_dir, "ckpt": ckpt, "out": out}


def test_training_writes_a_checkpoint_with_its_schedule(run):
    state = torch.load(run["ckpt"] / "ddpm.pt", weights_only=True)
    assert state["metadata"]["noise_schedule"] == "cosine" and state["metadata"]["iteration"] == SMOKE["max_steps"]
    assert (run["ckpt"] / "ddpm_latest.pt").exists()


def test_each_output_is_the_reference_anatomy_plus_a_placed_lesion(run):
    out = run["out"]
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert len(entries) == SMOKE["num_samples_per_case"] * SMOKE["max_cases"]
    images = {}
    for entry in entries:
        record = json.loads((out / entry["provenance"]).read_text())
        source_image, source_label = nib.load(record["source_image"]), arrays(record["source_label"])
        assert "Case_N" in entry["source_case_id"]  # anatomy references are the normal cases
        image, label = nib.load(out / entry["image"]), arrays(out / entry["label"])
        assert image.shape == source_image.shape and np.allclose(image.affine, source_image.affine)
        assert label.dtype == source_label.dtype and set(np.unique(label)) <= {0, 1, 2, 3, 4}
        lesion = np.isin(label, LESION)
        assert lesion.sum() > 0 and not np.isin(source_label, LESION).any()
        assert np.array_equal(
            label[~lesion], source_label[~lesion]
        )  # anatomy labels kept wherever no lesion was placed
        synthesis = record["synthesis"]
        assert synthesis["anatomy_reference"] == {"factor": 8, "stop_step": 0}
        assert synthesis["pathology_reference"] == {"factor": 4, "stop_step": 0}
        assert (
            "zero outside the patch" in synthesis["weight"]
            and synthesis["num_train_timesteps"] == SMOKE["num_train_timesteps"]
        )
        # every placement centre lies in the myocardium of its slice on the model grid, patches come from lesion cases
        grid = model_grid(source_label.shape, SMOKE["fov_size"], SMOKE["image_size"])
        _, model_labels = model_items(np.asarray(source_image.dataobj), source_label, grid)
        placed = [p for p in synthesis["placements"] if p is not None]
        assert placed and len(synthesis["placements"]) == source_label.shape[2]
        for p in placed:
            assert model_labels[p["slice"]][tuple(p["centre"])] == MYOCARDIUM and p["patch"].startswith("Case_P")
            assert 0.975 <= p["quantile"] <= 0.995
        images[entry["case_id"]] = np.asanyarray(image.dataobj)
    first = sorted(images)[:2]
    assert not np.array_equal(images[first[0]], images[first[1]])  # two samples of one reference differ
    assert (out / "preview.png").stat().st_size > 0


def test_a_sample_does_not_depend_on_the_slice_batch(run):
    """Same seed -> same synthetic case: re-synthesise one case in process, one slice at a time."""
    entry = json.loads((run["out"] / "datalist.json").read_text())["training"][0]
    record = json.loads((run["out"] / entry["provenance"]).read_text())
    parser = ConfigParser()
    parser.read_config(bundle_configs(BUNDLE, "inference.json", "smoke.json"))
    parser.update(
        {"dataset_dir": str(run["data"]), "ckpt_dir": str(run["ckpt"]), "slice_batch_size": 1, "bundle_root": str(ROOT)}
    )
    synthesizer = parser.get_parsed_content("synthesizer")
    case = next(c for c in parser.get_parsed_content("cases") if c["case_id"] == record["case_id"])
    again = synthesizer.synthesize_case(case, record["seed"])
    written = arrays(run["out"] / entry["image"]).astype(np.int64)
    assert np.abs(again.image.astype(np.int64) - written).max() <= 1  # uint8 rounding of float32 batch arithmetic
    assert np.array_equal(again.label, arrays(run["out"] / entry["label"]))


def test_rerun_skips_finished_cases(run):
    records = sorted((run["out"] / "provenance").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in records}
    proc = run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", "smoke.json"],
        {"dataset_dir": run["data"], "ckpt_dir": run["ckpt"], "output_dir": run["out"]},
    )
    assert f"{len(records)} already finished" in proc.stdout + proc.stderr
    assert {p.name: p.stat().st_mtime_ns for p in sorted((run["out"] / "provenance").glob("*.json"))} == before


def test_guidance_grid_measures_fidelity_and_diversity(run, tmp_path):
    """The docs figure tool: with N_s = 1 and a_s = 0 the anatomy reference is imposed whole, so samples are closer to
    it and to each other than with N_s = 4 and the anatomy unguided (a_s = T + 1), whatever the model."""
    from pathosynth.studies.reference_guidance_grid import guidance_grid

    out = tmp_path / "grid.png"
    never = SMOKE["num_train_timesteps"] + 1
    summary = guidance_grid(
        out,
        run["data"],
        run["ckpt"],
        factors=(1, 4),
        stop_steps=(0, never),
        seeds=(0, 1),
        configs=("inference.json", "smoke.json"),
    )
    cells = {(c["factor"], c["stop_step"]): c for c in summary["cells"]}
    assert (
        out.stat().st_size > 0 and json.loads(out.with_name("grid.png.json").read_text())["cells"] == summary["cells"]
    )
    assert cells[(1, 0)]["distance"] < cells[(4, never)]["distance"]
    assert cells[(1, 0)]["diversity"] < cells[(4, never)]["diversity"]


def _torchrun(workflow, configs, overrides):
    return run_bundle(workflow, BUNDLE, configs, overrides, nproc=2)


@pytest.mark.slow
def test_two_processes_train_resume_and_shard_synthesis_like_one(run, tmp_path):
    """torchrun, 2 CPU processes (gloo): DDP training writes one checkpoint and resumes from it; sharded synthesis
    gives bitwise the cases one process gave with the same seeds."""
    ckpt = tmp_path / "ckpt"
    common = {"dataset_dir": run["data"], "ckpt_dir": ckpt, "output_dir": tmp_path / "logs"}
    _torchrun("training", ["train.json", "multi_gpu_train.json", "smoke.json"], common)
    assert torch.load(ckpt / "ddpm_latest.pt", weights_only=True)["iteration"] == SMOKE["max_steps"]
    proc = _torchrun(
        "training",
        ["train.json", "multi_gpu_train.json", "smoke.json"],
        {**common, "max_steps": 2 * SMOKE["max_steps"]},
    )
    assert "at epoch 2" in proc.stdout + proc.stderr
    assert torch.load(ckpt / "ddpm_latest.pt", weights_only=True)["iteration"] == 2 * SMOKE["max_steps"]
    two = tmp_path / "two"
    proc = _torchrun(
        "inference",
        ["inference.json", "multi_gpu_inference.json", "smoke.json"],
        {"dataset_dir": run["data"], "ckpt_dir": run["ckpt"], "output_dir": two},
    )
    assert "rank 1/2" in proc.stdout + proc.stderr
    entries = json.loads((two / "datalist.json").read_text())["training"]
    assert len(entries) == SMOKE["num_samples_per_case"] * SMOKE["max_cases"]
    for entry in entries:
        assert np.array_equal(arrays(two / entry["image"]), arrays(run["out"] / entry["image"])), entry["case_id"]
        assert np.array_equal(arrays(two / entry["label"]), arrays(run["out"] / entry["label"]))


@pytest.mark.slow
def test_real_emidec_patches_from_mi_regions_into_normal_myocardium(emidec_dir, tmp_path):
    """Real EMIDEC (smoke-sized model): anatomy references are real normal cases, every patch comes from an MI/PMO
    region of a real pathological case, each output label is the reference's anatomy plus the placed lesion."""
    ckpt, out = tmp_path / "ckpt", tmp_path / "synthetic"
    common = {"dataset_dir": emidec_dir, "ckpt_dir": ckpt, "fov_size": [128, 128]}
    run_bundle("training", BUNDLE, ["train.json", "smoke.json"], {**common, "output_dir": ckpt / "logs"})
    run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", "smoke.json"],
        {**common, "output_dir": out, "max_cases": 1, "num_samples_per_case": 1},
    )
    (entry,) = json.loads((out / "datalist.json").read_text())["training"]
    record = json.loads((out / entry["provenance"]).read_text())
    source_label, label = arrays(record["source_label"]), arrays(out / entry["label"])
    lesion = np.isin(label, LESION)
    assert entry["source_case_id"].startswith("Case_N") and lesion.any() and not np.isin(source_label, LESION).any()
    assert np.array_equal(label[~lesion], source_label[~lesion])
    placed = [p for p in record["synthesis"]["placements"] if p]
    assert placed and all(p["patch"].startswith("Case_P") for p in placed)
    assert record["synthesis"]["patch_bank"]["patches"] >= 2


@pytest.mark.slow
def test_3d_model_trains_and_synthesises_whole_volumes(phantom_dir, tmp_path):
    """volumes_3d.json: a 3-D DDPM on whole volumes, 3-D patches and a 3-D phi_N (per-axis factors); the outputs keep
    the contract."""
    common = {
        "dataset_dir": phantom_dir,
        "ckpt_dir": tmp_path / "ckpt",
        "image_size": [16, 16, 8],
        "patch_size": [6, 6, 3],
        "batch_size": 2,
    }
    configs = ["volumes_3d.json", "smoke.json"]
    run_bundle("training", BUNDLE, ["train.json", *configs], {**common, "output_dir": tmp_path / "logs"})
    assert torch.load(tmp_path / "ckpt" / "ddpm_3d.pt", weights_only=True)["metadata"]["spatial_dims"] == 3
    out = tmp_path / "synthetic"
    run_bundle(
        "inference", BUNDLE, ["inference.json", *configs], {**common, "output_dir": out, "anatomy_factor": [4, 4, 1]}
    )
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert len(entries) == SMOKE["num_samples_per_case"] * SMOKE["max_cases"]
    for entry in entries:
        record = json.loads((out / entry["provenance"]).read_text())
        source_label, label = arrays(record["source_label"]), arrays(out / entry["label"])
        lesion = np.isin(label, LESION)
        assert arrays(out / entry["image"]).shape == source_label.shape and lesion.any()
        assert np.array_equal(label[~lesion], source_label[~lesion])
        assert record["synthesis"]["anatomy_reference"]["factor"] == [4, 4, 1]  # no low-pass across thick slices
        placed = record["synthesis"]["placements"]
        assert len(placed) == 2 and all(len(p["centre"]) == 3 for p in placed)  # two 3-D patches per volume
