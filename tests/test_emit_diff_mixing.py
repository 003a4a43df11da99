"""EMIT-Diff Algorithm 1: segmentation training that mixes each real image with one of its synthetic variants by a
random patch mask (paper Sec. 4.4; the official code's prediction mixing), and the text_edge_controlnet bundle config
train_segmentation.json that runs it -- or, without synthetic datalists, the plain baseline."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import AttentionUnet
from monai.utils import set_determinism

from conftest import bundle_configs, run_bundle
from pathosynth.data.acdc import ACDC_LABELS
from pathosynth.data.cases import load_cases
from pathosynth.data.errors import DatasetError
from pathosynth.data.patch_mixing import (
    PatchMixingInferer,
    RandPatchMaskd,
    RandSyntheticVariantd,
    pair_synthetic_variants,
    prepare_patch_mixing_batch,
    random_patch_mask,
)
from pathosynth.engines.synthesis import SynthesisRunner
from pathosynth.io.datalists import export_datalist
from pathosynth.synthesis.results import SynthesisResult, read_case

CONFIG = "train_segmentation.json"
# CPU-sized keys of train_segmentation.json (what configs/smoke.json should carry for it)
SMOKE = {
    "in_plane_size": "[64, 64]",
    "segmenter_channels": "[4, 8, 16]",
    "patch_size": 16,
    "slices_per_volume": 2,
    "batch_size": 4,
    "max_steps": 4,
    "steps_per_epoch": 2,
    "num_workers": 0,
}


# --- the patch mask ------------------------------------------------------------------------------------------------


def _blocks(mask: torch.Tensor, patch: int):
    for i in range(0, mask.shape[0], patch):
        for j in range(0, mask.shape[1], patch):
            yield mask[i : i + patch, j : j + patch]


def test_patch_mask_is_constant_on_every_patch_aligned_block_and_not_coarser():
    generator = torch.Generator().manual_seed(0)
    masks = [random_patch_mask((40, 70), 16, 0.5, generator) for _ in range(300)]  # 3 x 5 grid, edge blocks cropped
    assert all(m.shape == (40, 70) and set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    assert all(block.unique().numel() == 1 for m in masks for block in _blocks(m, 16))
    # neighbouring 16-px blocks are independent draws: they differ with probability 2*alpha*(1-alpha) = 0.5; a mask of
    # 32-px patches would keep pairs (0,1), (2,3) equal and fail this
    differ = np.mean([float(m[0, 16 * k] != m[0, 16 * (k + 1)]) for m in masks for k in (0, 2)])
    assert abs(differ - 0.5) < 0.1
    per_axis = random_patch_mask((8, 12), (4, 3), 0.5, torch.Generator().manual_seed(1))
    assert all(per_axis[i : i + 4, j : j + 3].unique().numel() == 1 for i in range(0, 8, 4) for j in range(0, 12, 3))


def test_patch_mask_real_fraction_is_alpha_over_many_draws():
    # 2000 draws x 36 patches = 72,000 Bernoulli(alpha) patches: standard error <= 0.0019, tolerance 0.01 (> 5 sigma)
    for alpha in (0.2, 0.6, 0.9):
        generator = torch.Generator().manual_seed(int(alpha * 10))
        fraction = torch.stack([random_patch_mask((96, 96), 16, alpha, generator) for _ in range(2000)]).mean().item()
        assert abs(fraction - alpha) < 0.01, (alpha, fraction)


def test_alpha_one_keeps_only_real_pixels_and_alpha_zero_only_synthetic():
    generator = torch.Generator().manual_seed(2)
    assert all(bool((random_patch_mask((64, 64), 8, 1.0, generator) == 1).all()) for _ in range(50))
    assert all(bool((random_patch_mask((64, 64), 8, 0.0, generator) == 0).all()) for _ in range(50))
    with pytest.raises(ValueError, match="alpha"):
        random_patch_mask((64, 64), 8, 1.5)
    with pytest.raises(ValueError, match="alpha"):
        RandPatchMaskd(keys="image", patch_size=8, alpha=-0.1)  # refused while a config is parsed


def test_same_seed_gives_the_same_mask():
    first = random_patch_mask((64, 64), 16, 0.6, torch.Generator().manual_seed(5))
    assert torch.equal(first, random_patch_mask((64, 64), 16, 0.6, torch.Generator().manual_seed(5)))
    masker = RandPatchMaskd(keys="image", patch_size=16, alpha=0.6)
    masker.set_random_state(3)
    a = [masker({"image": torch.zeros(1, 64, 64)})["mix_mask"] for _ in range(3)]
    masker.set_random_state(3)
    b = [masker({"image": torch.zeros(1, 64, 64)})["mix_mask"] for _ in range(3)]
    assert a[0].shape == (1, 64, 64) and all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], a[1])


# --- the mixing step -----------------------------------------------------------------------------------------------


def _batch(reuse_label: bool):
    g = torch.Generator().manual_seed(4)
    image, variant = torch.randn(3, 1, 32, 32, generator=g), torch.randn(3, 1, 32, 32, generator=g) + 5.0
    label = torch.randint(0, 4, (3, 1, 32, 32), generator=g).float()
    variant_label = label.clone() if reuse_label else torch.randint(0, 4, (3, 1, 32, 32), generator=g).float()
    mask = torch.stack([random_patch_mask((32, 32), 8, 0.5, g)[None] for _ in range(3)])
    assert 0 < mask.mean() < 1
    return {"image": image, "variant": variant, "label": label, "variant_label": variant_label, "mix_mask": mask}


class Recorder(torch.nn.Module):
    """A fixed per-pixel network (2 output channels) that remembers what it was shown."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.cat([2.0 * x + 1.0, x * x], dim=1)


def test_image_mixing_feeds_m_x0_plus_1_minus_m_xi_and_targets_the_mixed_label():
    batch = _batch(reuse_label=False)
    m = batch["mix_mask"]
    inputs, target, args, kwargs = prepare_patch_mixing_batch(batch)
    assert torch.equal(target, m * batch["label"] + (1 - m) * batch["variant_label"])
    network = Recorder()
    prediction = PatchMixingInferer("image")(inputs, network, *args, **kwargs)
    expected_input = m * batch["image"] + (1 - m) * batch["variant"]
    assert len(network.seen) == 1 and torch.equal(network.seen[0], expected_input)
    assert torch.equal(prediction, Recorder()(expected_input))


def test_prediction_mixing_mixes_the_two_predictions_pixel_by_pixel():
    batch = _batch(reuse_label=False)
    m = batch["mix_mask"]
    inputs, target, args, kwargs = prepare_patch_mixing_batch(batch)
    network = Recorder()
    prediction = PatchMixingInferer("prediction")(inputs, network, *args, **kwargs)
    assert (
        len(network.seen) == 2
        and torch.equal(network.seen[0], batch["image"])
        and torch.equal(network.seen[1], batch["variant"])
    )
    reference = Recorder()
    expected = m * reference(batch["image"]) + (1 - m) * reference(batch["variant"])  # m broadcast over both channels
    assert prediction.shape == (3, 2, 32, 32) and torch.equal(prediction, expected)
    assert torch.equal(target, m * batch["label"] + (1 - m) * batch["variant_label"])


def test_with_the_label_reused_the_mixed_label_is_the_real_label():
    batch = _batch(reuse_label=True)
    assert torch.equal(prepare_patch_mixing_batch(batch)[1], batch["label"])


def test_unknown_mix_mode_is_refused_and_plain_calls_pass_through():
    with pytest.raises(ValueError, match="mix must be one of"):
        PatchMixingInferer("loss")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(PatchMixingInferer("prediction")(x, Recorder()), Recorder()(x))  # scoring / baseline


# --- pairing real cases with their variants ------------------------------------------------------------------------


def _perturbed_copy(record, seed):
    """A stand-in for a ControlNet variant: same grid and label, other intensities (gain, offset, noise)."""
    image, label = read_case(record)
    rng = np.random.default_rng(seed % 2**32)
    scale = float(image.std())
    values = image.astype(np.float32) * rng.uniform(0.6, 1.4) + scale * (
        rng.uniform(-0.5, 0.5) + rng.normal(0, 0.05, image.shape)
    )
    return SynthesisResult(
        values.astype(image.dtype), label.copy(), np.ones(image.shape, bool), {"perturbation": "gain+offset+noise"}
    )


@pytest.fixture(scope="module")
def acdc_sets(acdc_phantom_dir, tmp_path_factory):
    """Real train/test datalists of the ACDC phantom (patients 1-3 / 4) and two synthetic variants per training case,
    written by SynthesisRunner in its datalist format."""
    root = tmp_path_factory.mktemp("emit_diff_sets")
    cases = load_cases(dataset_dir=str(acdc_phantom_dir), labels=ACDC_LABELS)
    train = [c for c in cases if c["patient"] != "patient004"]
    export_datalist([("train", train)], root / "train.json")
    export_datalist([("test", [c for c in cases if c["patient"] == "patient004"])], root / "test.json")
    SynthesisRunner(
        train,
        _perturbed_copy,
        root / "synthetic",
        num_samples_per_case=2,
        seed=0,
        bundle={"name": "test", "version": "0"},
        preview_cases=0,
        progress=False,
    ).run()
    return {
        "root": root,
        "train": str(root / "train.json"),
        "test": str(root / "test.json"),
        "synthetic": str(root / "synthetic" / "datalist.json"),
        "dataset": acdc_phantom_dir,
    }


def test_pairing_picks_only_variants_of_the_same_source(acdc_sets, caplog):
    real = load_cases(datalist=acdc_sets["train"], labels=ACDC_LABELS)
    paired = pair_synthetic_variants(real, [acdc_sets["synthetic"]], ACDC_LABELS)
    written = json.loads((acdc_sets["root"] / "synthetic" / "datalist.json").read_text())["training"]
    source_of = {str(acdc_sets["root"] / "synthetic" / e["image"]): e["source_image"] for e in written}
    assert [p["case_id"] for p in paired] == [r["case_id"] for r in real] and all(
        len(p["variants"]) == 2 for p in paired
    )
    for case in paired:  # each real case holds exactly the variants whose source_image is its own image
        assert sorted(v["image"] for v in case["variants"]) == sorted(
            i for i, s in source_of.items() if s == case["image"]
        )
    chooser = RandSyntheticVariantd()
    chooser.set_random_state(0)
    picks = [chooser(paired[0])["variant"] for _ in range(40)]
    assert set(picks) == {v["image"] for v in paired[0]["variants"]}  # i ~ 1..n, only this case's variants
    chooser.set_random_state(0)
    assert [chooser(paired[0])["variant"] for _ in range(40)] == picks  # seeded
    first_only = pair_synthetic_variants(
        real, acdc_sets["synthetic"], ACDC_LABELS, variants_per_case=1
    )  # Sec. 6.1 ratio n = 1
    assert [p["variants"] for p in first_only] == [p["variants"][:1] for p in paired]
    with caplog.at_level(logging.WARNING, logger="pathosynth.data.patch_mixing"):  # variants of images not trained on
        subset = pair_synthetic_variants(real[:2], acdc_sets["synthetic"], ACDC_LABELS)
    assert [p["variants"] for p in subset] == [p["variants"] for p in paired[:2]]
    assert "8 synthetic variant(s) of 4 image(s) that are not real training cases are not used" in caplog.text


def _write_like(path, array, reference, shift=0.0):
    affine = reference.affine.copy()
    affine[0, 3] += shift
    nib.save(nib.Nifti1Image(array, affine, reference.header), str(path))
    return str(path)


def test_pairing_refuses_a_misaligned_variant_and_a_case_without_variants(acdc_sets, tmp_path):
    real = load_cases(datalist=acdc_sets["train"], labels=ACDC_LABELS)
    entries = json.loads((acdc_sets["root"] / "synthetic" / "datalist.json").read_text())["training"]
    image_ref, label_ref = nib.load(real[0]["image"]), nib.load(real[0]["label"])
    image, label = read_case(real[0])
    misaligned = [  # each variant's own image and label agree; only the grid of its source differs
        {
            "image": _write_like(tmp_path / "cropped.nii.gz", image[8:, 8:], image_ref),
            "label": _write_like(tmp_path / "cropped_gt.nii.gz", label[8:, 8:], label_ref),
            "source_image": real[0]["image"],
        },
        {
            "image": _write_like(tmp_path / "shifted.nii.gz", image, image_ref, shift=3.0),
            "label": _write_like(tmp_path / "shifted_gt.nii.gz", label, label_ref, shift=3.0),
            "source_image": real[0]["image"],
        },
    ]
    synthetic = acdc_sets["root"] / "synthetic"
    others = [
        {**e, "image": str(synthetic / e["image"]), "label": str(synthetic / e["label"])}
        for e in entries
        if e["source_image"] != real[1]["image"]
    ]  # no variant of the second case
    (tmp_path / "bad.json").write_text(json.dumps({"training": misaligned + others}))
    with pytest.raises(DatasetError) as error:
        pair_synthetic_variants(real, [str(tmp_path / "bad.json")], ACDC_LABELS)
    message = str(error.value)
    assert (
        f"synthetic variant {tmp_path / 'cropped.nii.gz'} (datalist {tmp_path / 'bad.json'}) has shape (88, 88, 6)"
        in message
    )
    assert (
        f"synthetic variant {tmp_path / 'shifted.nii.gz'} (datalist {tmp_path / 'bad.json'}) has another affine"
        in message
    )
    assert "pixel-aligned" in message and message.startswith("3 problem(s)")
    assert f"real case {real[1]['case_id']}: no synthetic variant has source_image {real[1]['image']}" in message
    with pytest.raises(DatasetError, match="no synthetic datalist given"):
        pair_synthetic_variants(real, [], ACDC_LABELS)


# --- the bundle ----------------------------------------------------------------------------------------------------


def test_slice_sampling_and_augmentation_keep_real_variant_and_label_aligned(acdc_sets):
    """Real image, variant and labels share every spatial transform: the reused label stays equal to the real one
    and the (intensity-perturbed) variant stays correlated with the image; a variant flipped on its own would not."""
    parser = ConfigParser()
    parser.read_config(bundle_configs("text_edge_controlnet", CONFIG))
    parser.update(
        {
            "real_datalist": acdc_sets["train"],
            "synthetic_datalists": [acdc_sets["synthetic"]],
            "test_datalist": acdc_sets["test"],
            "in_plane_size": [64, 64],
            "patch_size": 16,
            "num_workers": 0,
            "augment": True,
            "slices_per_volume": 8,
        }
    )
    set_determinism(0)
    try:
        dataset = parser.get_parsed_content("train#dataset")
        samples = [sample for index in range(len(dataset)) for sample in dataset[index]]
    finally:
        set_determinism(None)
    assert len(samples) == 48 and set(samples[0]) == {"image", "variant", "label", "variant_label", "mix_mask"}
    aligned, flipped = [], []
    for s in samples:
        assert torch.equal(torch.as_tensor(s["label"]), torch.as_tensor(s["variant_label"]))
        x, v = np.asarray(s["image"]).ravel(), np.asarray(s["variant"])
        aligned.append(np.corrcoef(x, v.ravel())[0, 1])
        flipped.append(np.corrcoef(x, v[:, ::-1].ravel())[0, 1])
    assert min(aligned) > 0.9 and np.median(flipped) < 0.9, (min(aligned), np.median(flipped))


def test_defaults_are_the_official_ones_and_emidec_labels_work_by_key_override():
    parser = ConfigParser()
    parser.read_config(bundle_configs("text_edge_controlnet", CONFIG))
    assert (parser["alpha"], parser["patch_size"], parser["mix"], parser["labels"]) == (0.6, 64, "image", ACDC_LABELS)
    network = parser.get_parsed_content("network_def")
    assert isinstance(network, AttentionUnet) and network.out_channels == 4
    emidec = {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}
    parser.update({"labels": emidec, "scored_classes": ["LV", "myocardium", "MI", "PMO"]})
    assert parser.get_parsed_content("network_def").out_channels == 5
    assert parser.get_parsed_content("class_sampling_ratios") == [1] * 5


# --- the bundle run ------------------------------------------------------------------------------------------------


def test_bundle_mixes_trains_and_scores_and_the_baseline_runs_from_the_same_config(acdc_sets, tmp_path):
    dataset_files = {p: p.stat().st_mtime_ns for p in acdc_sets["dataset"].rglob("*.nii.gz")}
    mixed, baseline = tmp_path / "mixed", tmp_path / "baseline"
    common = {**SMOKE, "real_datalist": acdc_sets["train"], "test_datalist": acdc_sets["test"]}
    run_bundle(
        "run",
        "text_edge_controlnet",
        [CONFIG],
        {
            **common,
            "synthetic_datalists": json.dumps([acdc_sets["synthetic"]]),
            "mix": "prediction",
            "alpha": 0.5,
            "output_dir": str(mixed),
        },
    )
    run_bundle(
        "run", "text_edge_controlnet", [CONFIG], {**common, "synthetic_datalists": "[]", "output_dir": str(baseline)}
    )
    for out in (mixed, baseline):
        scores = json.loads((out / "scores.json").read_text())
        assert scores["classes"] == ["RV", "myocardium", "LV"] and set(scores["summary"]) == {"RV", "myocardium", "LV"}
        assert scores["network"] == "AttentionUnet (MONAI, 2D)" and scores["augment"] is False
        saved = torch.load(out / "segmenter.pt", weights_only=True)
        assert saved["metadata"]["iteration"] == 4 and saved["metadata"]["labels"] == ACDC_LABELS
    scores = json.loads((mixed / "scores.json").read_text())
    assert (scores["mixing"], scores["alpha"], scores["patch_size"], scores["mix"]) == (True, 0.5, 16, "prediction")
    assert [d["path"] for d in scores["synthetic_datalists"]] == [acdc_sets["synthetic"]]
    scores = json.loads((baseline / "scores.json").read_text())
    recorded = (scores["mixing"], scores["alpha"], scores["patch_size"], scores["mix"], scores["synthetic_datalists"])
    assert recorded == (False, None, None, None, [])
    assert {
        p: p.stat().st_mtime_ns for p in acdc_sets["dataset"].rglob("*.nii.gz")
    } == dataset_files  # inputs untouched


@pytest.mark.slow
def test_two_processes_train_algorithm_1_with_the_multi_gpu_overlay(acdc_sets, tmp_path):
    """torchrun, 2 CPU processes (gloo), multi_gpu_train_segmentation.json: DDP Algorithm 1 training writes one
    unwrapped checkpoint after the requested steps and rank 0 scores the test cases."""
    overrides = {
        **SMOKE,
        "real_datalist": acdc_sets["train"],
        "test_datalist": acdc_sets["test"],
        "max_steps": 2,
        "synthetic_datalists": json.dumps([acdc_sets["synthetic"]]),
        "output_dir": str(tmp_path),
    }
    run_bundle("run", "text_edge_controlnet", [CONFIG, "multi_gpu_train_segmentation.json"], overrides, nproc=2)
    saved = torch.load(tmp_path / "segmenter.pt", weights_only=True)
    assert saved["metadata"]["iteration"] == 2 and not any(k.startswith("module.") for k in saved["network"])
    assert json.loads((tmp_path / "scores.json").read_text())["mixing"] is True
