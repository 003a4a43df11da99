"""class_conditional_ddpm bundle, run as a user would (``python -m monai.bundle run`` with smoke.json) on a toy MedMNIST
npz: train the class-conditional DDPM on a stratified subset, synthesise N images per class, train a classifier with
k-fold cross-validation on real + synthetic data and score it on the held-out split with explanations. The multi-process
run (torchrun, gloo, 2 CPU processes) is slow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import BUNDLES, run_bundle, toy_medmnist_npz
from pathosynth.data.medmnist import read_medmnist_split

BUNDLE = "class_conditional_ddpm"
CONFIGS = BUNDLES / BUNDLE / "configs"
SMOKE = json.loads((CONFIGS / "smoke.json").read_text())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("class_ddpm")
    data = toy_medmnist_npz(root / "data").parent
    ckpt, synthetic, evaluation = root / "ckpt", root / "synthetic", root / "evaluation"
    run_bundle(
        "training",
        BUNDLE,
        ["train.json", "smoke.json"],
        {"dataset_dir": data, "ckpt_dir": ckpt, "output_dir": root / "logs"},
    )
    run_bundle("inference", BUNDLE, ["inference.json", "smoke.json"], {"ckpt_dir": ckpt, "output_dir": synthetic})
    common = {
        "dataset_dir": data,
        "synthetic_dir": synthetic,
        "ckpt_dir": ckpt / "classifiers",
        "output_dir": evaluation,
        "training_data": "real+synthetic",
    }
    run_bundle("training", BUNDLE, ["train_classifier.json", "smoke.json"], common)
    run_bundle(
        "evaluating", BUNDLE, ["train_classifier.json", "evaluate.json", "smoke.json"], {**common, "test_split": "val"}
    )
    return {"data": data, "ckpt": ckpt, "synthetic": synthetic, "evaluation": evaluation}


def test_diffusion_trains_on_the_stratified_fraction_with_a_null_class(run):
    saved = torch.load(run["ckpt"] / "class_diffusion.pt", weights_only=True)
    meta = saved["metadata"]
    assert meta["class_names"] == SMOKE["class_names"] and meta["iteration"] == SMOKE["max_steps"]
    assert len(meta["train_case_ids"]) == 2 * round(8 * SMOKE["train_fraction"])  # the same fraction of each class
    assert saved["network"]["class_embedding.weight"].shape[0] == 3  # two classes + the null class
    assert (run["ckpt"] / "class_diffusion_latest.pt").is_file()  # what a rerun resumes from


def test_inference_writes_n_images_per_class_as_datalist_and_npz(run):
    out = run["synthetic"]
    entries = json.loads((out / "datalist.json").read_text())["training"]
    n = SMOKE["num_per_class"]
    assert sorted(e["label"] for e in entries) == [0] * n + [1] * n
    images, labels = read_medmnist_split(out / "synthetic.npz", "train")
    assert images.shape == (2 * n, *SMOKE["image_size"]) and np.bincount(labels).tolist() == [n, n]
    record = json.loads((out / entries[0]["provenance"]).read_text())
    assert record["synthesis"]["sampler"]["num_inference_steps"] == SMOKE["num_inference_steps"]
    assert list(record["checkpoints"].values())[0] and record["seed"] and (out / "preview.png").is_file()


def test_classifier_cross_validation_is_scored_on_the_held_out_split(run):
    report = json.loads((run["evaluation"] / "real+synthetic_resnet18.json").read_text())
    assert report["test_split"] == "val" and report["num_test_images"] == 8 and len(report["folds"]) == SMOKE["folds"]
    assert report["training"]["num_images"] == 16 + 2 * SMOKE["num_per_class"]  # real train split + synthetic set
    for scores in (report["mean"], report["ensemble"], *report["folds"]):
        assert all(0.0 <= scores[k] <= 1.0 for k in ("accuracy", "precision", "recall", "f1", "auc"))
    assert "| real+synthetic | resnet18 |" in (run["evaluation"] / "results.md").read_text()
    assert (run["evaluation"] / "explanations_real+synthetic_resnet18.png").stat().st_size > 1000


@pytest.mark.slow
def test_two_processes_train_the_diffusion_model_and_shard_synthesis_bitwise_equal_to_one(tmp_path):
    """multi_gpu_train.json under torchrun with 2 CPU processes (gloo); rank 0's checkpoint serves inference.json; the
    same synthesis sharded over 2 processes (multi_gpu_inference.json) writes the same images bit for bit."""
    data = toy_medmnist_npz(tmp_path / "data").parent
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    overrides = {"dataset_dir": data, "ckpt_dir": ckpt, "output_dir": tmp_path / "logs"}
    run_bundle("training", BUNDLE, ["train.json", "multi_gpu_train.json", "smoke.json"], overrides, nproc=2)
    weights = torch.load(ckpt / "class_diffusion.pt", weights_only=True)
    assert weights["metadata"]["iteration"] == SMOKE["max_steps"]
    assert not any(k.startswith("module.") for k in weights["network"])  # saved unwrapped: loads without DDP
    run_bundle("inference", BUNDLE, ["inference.json", "smoke.json"], {"ckpt_dir": ckpt, "output_dir": out})
    single = json.loads((out / "datalist.json").read_text())["training"]
    assert len(single) == 2 * SMOKE["num_per_class"]

    sharded = tmp_path / "sharded"
    overrides = {"ckpt_dir": ckpt, "output_dir": sharded}  # noise-only synthesis reads no dataset
    run_bundle("inference", BUNDLE, ["inference.json", "multi_gpu_inference.json", "smoke.json"], overrides, nproc=2)
    both = json.loads((sharded / "datalist.json").read_text())["training"]
    assert [(e["image"], e["label"]) for e in both] == [(e["image"], e["label"]) for e in single]
    for entry in single:
        assert (sharded / entry["image"]).read_bytes() == (out / entry["image"]).read_bytes(), entry["image"]
