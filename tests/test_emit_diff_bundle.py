"""text_edge_controlnet bundle, run as a user would (``python -m monai.bundle run`` with smoke.json) on the ACDC
phantom: stage 1 (text diffusion), stage 2 (ControlNet), inference; then the output contract: n variants per case in the
datalist, labels bitwise equal to the source labels, images on the label grid, provenance with the prompt and sampler
settings."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLES, bundle_configs, run_bundle
from pathosynth.data.acdc import read_info_cfg
from pathosynth.io.atomic import sha256_file

BUNDLE = "text_edge_controlnet"
CONFIGS = BUNDLES / BUNDLE / "configs"
SMOKE = json.loads((CONFIGS / "smoke.json").read_text())
CATEGORY = {
    "NOR": "normal",
    "DCM": "dilated cardiomyopathy",
    "HCM": "hypertrophic cardiomyopathy",
    "MINF": "myocardial infarction",
}


@pytest.fixture(scope="module")
def run(acdc_phantom_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("emit_diff")
    ckpt, out = root / "ckpt", root / "synthetic"
    common = {"dataset_dir": acdc_phantom_dir, "ckpt_dir": ckpt}
    run_bundle("training", BUNDLE, ["train_diffusion.json", "smoke.json"], {**common, "output_dir": ckpt / "logs"})
    run_bundle("training", BUNDLE, ["train_controlnet.json", "smoke.json"], {**common, "output_dir": ckpt / "logs"})
    run_bundle("inference", BUNDLE, ["inference.json", "smoke.json"], {**common, "output_dir": out})
    return {"data": acdc_phantom_dir, "ckpt": ckpt, "out": out}


def test_checkpoints_carry_the_vocabulary_and_the_stage1_hash(run):
    stage1 = torch.load(run["ckpt"] / "text_diffusion.pt", weights_only=True)
    meta = stage1["metadata"]
    assert meta["vocabulary"][:2] == ["<pad>", "<bos>"] and {"mri", "heart", "normal", "enhanced", "resolution"} <= set(
        meta["vocabulary"]
    )
    assert meta["text_encoder"]["text_encoder"] == "learned" and meta["p_uncond"] == 0.1
    assert any(k.startswith("text_encoder.") for k in stage1["network"])  # the prompt encoder is trained with the UNet
    stage2 = torch.load(run["ckpt"] / "controlnet.pt", weights_only=True)["metadata"]
    assert stage2["diffusion_checkpoint"]["sha256"] == sha256_file(run["ckpt"] / "text_diffusion.pt")
    assert stage2["edge_condition"]["image_edges"] and stage2["edge_condition"]["mask_boundaries"]


def test_inference_writes_n_variants_per_case_with_unchanged_labels_and_provenance(run):
    out = run["out"]
    entries = json.loads((out / "datalist.json").read_text())["training"]
    n, cases = SMOKE["num_samples_per_case"], SMOKE["max_cases"]
    assert len(entries) == n * cases
    by_case = {}
    for entry in entries:
        by_case.setdefault(entry["source_case_id"], []).append(entry)
    assert len(by_case) == cases and all(len(v) == n for v in by_case.values())
    images = []
    for entry in entries:
        record = json.loads((out / entry["provenance"]).read_text())
        source_label = nib.load(record["source_label"])
        label, image = nib.load(out / entry["label"]), nib.load(out / entry["image"])
        assert np.array_equal(np.asanyarray(label.dataobj), np.asanyarray(source_label.dataobj))
        assert np.asanyarray(label.dataobj).dtype == np.asanyarray(source_label.dataobj).dtype
        assert image.shape == source_label.shape and np.allclose(image.affine, source_label.affine)
        assert entry["source_image"] == record["source_image"] and entry["source_image"].endswith(
            entry["source_case_id"] + ".nii.gz"
        )
        patient = entry["source_case_id"].split("_")[0]
        group = read_info_cfg(run["data"] / patient / "Info.cfg")["Group"]
        synthesis = record["synthesis"]
        assert synthesis["prompt"] == f"MRI, heart, {CATEGORY[group]}"
        assert len(synthesis["slice_prompts"]) == image.shape[2]
        assert {p.rsplit(", ", 1)[1] for p in synthesis["slice_prompts"]} <= {"enhanced contrast", "high resolution"}
        assert synthesis["guidance_scale"] == 9.0 and synthesis["num_inference_steps"] == SMOKE["num_inference_steps"]
        assert synthesis["sampler"] == "ddim" and synthesis["controlnet"] is True and isinstance(record["seed"], int)
        assert set(record["checkpoints"]) == {
            str(run["ckpt"] / "text_diffusion.pt"),
            str(run["ckpt"] / "controlnet.pt"),
        }
        images.append(np.asanyarray(image.dataobj))
    assert not np.array_equal(images[0], images[1])  # two variants of one case differ
    assert (out / "preview.png").stat().st_size > 0


def test_inference_refuses_an_augmentation_word_the_model_never_learned(run):
    parser = ConfigParser()
    parser.read_config(bundle_configs(BUNDLE, "inference.json", "smoke.json"))
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update(
        {
            "dataset_dir": str(run["data"]),
            "ckpt_dir": str(run["ckpt"]),
            "output_dir": str(run["ckpt"] / "never"),
            "augmentation_phrases": ["purple contrast"],
        }
    )
    parser.parse()
    parser.get_parsed_content(
        "initialize"
    )  # needs no dataset (monai.bundle load); the prompts are checked first in run
    with pytest.raises(Exception) as err:
        parser.get_parsed_content("run")
    chain, cause = [], err.value
    while cause is not None:  # MONAI wraps the error of a config expression; ours is its cause
        chain.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    assert any("'purple'" in text and "known words" in text for text in chain)
    assert not (run["ckpt"] / "never").exists()  # nothing was synthesised


def _torchrun(workflow: str, configs: list[str], overrides: dict) -> None:
    run_bundle(workflow, BUNDLE, configs, overrides, nproc=2)


@pytest.mark.slow
def test_two_processes_train_both_stages_and_synthesise_the_same_cases(run, tmp_path):
    """torchrun, 2 CPU processes (gloo): stage 1 and stage 2 with their multi_gpu overlays write checkpoints the
    single-process configs load; 2-process sharded inference (multi_gpu_inference.json) from the single-process
    checkpoints writes bit-identical cases, merged into one datalist."""
    common = {"dataset_dir": run["data"], "ckpt_dir": tmp_path / "ckpt", "output_dir": tmp_path / "logs"}
    _torchrun("training", ["train_diffusion.json", "multi_gpu_train_diffusion.json", "smoke.json"], common)
    _torchrun("training", ["train_controlnet.json", "multi_gpu_train_controlnet.json", "smoke.json"], common)
    for name in ("text_diffusion.pt", "controlnet.pt"):
        weights = torch.load(tmp_path / "ckpt" / name, weights_only=True)
        assert weights["metadata"]["iteration"] == SMOKE["max_steps"]
        assert not any(k.startswith("module.") for k in weights["network"])  # saved unwrapped

    out = tmp_path / "synthetic"
    _torchrun(
        "inference",
        ["inference.json", "multi_gpu_inference.json", "smoke.json"],
        {"dataset_dir": run["data"], "ckpt_dir": run["ckpt"], "output_dir": out},
    )
    entries = json.loads((out / "datalist.json").read_text())["training"]
    assert len(entries) == SMOKE["num_samples_per_case"] * SMOKE["max_cases"]
    for entry in entries:
        assert np.array_equal(
            np.asanyarray(nib.load(out / entry["image"]).dataobj),
            np.asanyarray(nib.load(run["out"] / entry["image"]).dataobj),
        )
