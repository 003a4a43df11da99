"""Whole-volume lesion synthesis: windows cover every lesion, channels route to their classes, the
background is bit-identical — on phantom cases and on every real EMIDEC pathological case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from pathosynth.data.cases import load_cases
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.data.transforms import LesionMasksd
from pathosynth.diffusion.inpainting import LesionInpaintingSampler
from pathosynth.io.nifti import read_nifti
from pathosynth.synthesis.lesion_texture import LesionTextureSynthesizer, TextureModel
from pathosynth.synthesis.windows import covering_windows, pad_to


class ConstantTexture(torch.nn.Module):
    """An oracle denoiser whose clean-image prediction is a fixed value per channel (e.g. +0.8 for the MI
    channel, -0.8 for the PMO channel), so the output reveals which channel filled which voxel."""

    def __init__(self, scheduler, values):
        super().__init__()
        self.alpha_bar = scheduler.alphas_cumprod
        self.values = torch.tensor(values).view(1, -1, 1, 1, 1)

    def forward(self, x, timesteps):
        a = self.alpha_bar[timesteps].view(-1, 1, 1, 1, 1)
        return (x - a.sqrt() * self.values[:, : x.shape[1]]) / (1 - a).sqrt()


def _synthesizer(values=(0.8, -0.8), channels=(("MI",), ("PMO",)), roi=(72, 72, 10)):
    scheduler = DDPMScheduler(20, schedule="cosine")
    sampler = LesionInpaintingSampler(scheduler, 5, 1, 1)
    model = TextureModel(ConstantTexture(scheduler, list(values)), [list(c) for c in channels])
    return LesionTextureSynthesizer([model], sampler, EMIDEC_LABELS, roi)


def _check_case(image, label, synth, seed=0):
    result = synth.synthesize(image, label, seed)
    lesion = np.isin(label, [3, 4])
    assert result.image.dtype == image.dtype
    assert np.array_equal(result.image[~lesion], image[~lesion]), "background must be bit-identical"
    assert np.array_equal(result.changed, lesion)
    low, high = float(image.min()), float(image.max())
    expected_mi = (0.8 + 1) / 2 * (high - low) + low  # +-1 for rounding to the integer dtype
    expected_pmo = (-0.8 + 1) / 2 * (high - low) + low
    assert np.all(np.abs(result.image[label == 3] - expected_mi) <= 1), "MI voxels come from the MI channel"
    assert np.all(np.abs(result.image[label == 4] - expected_pmo) <= 1), "PMO voxels come from the PMO channel"
    return result


def test_joint_model_routes_each_class_to_its_channel(phantom_dir):
    synth = _synthesizer()
    for case in load_cases(phantom_dir, labels=EMIDEC_LABELS, lesion_classes=["MI", "PMO"], select="with_lesion"):
        image, _ = read_nifti(case["image"])
        label, _ = read_nifti(case["label"])
        _check_case(np.asarray(image), np.asarray(label), synth)


@pytest.mark.realdata
def test_every_real_pathological_case_keeps_its_background(emidec_dir):
    """All real EMIDEC pathological cases (256x256, 4-10 slices): background bit-exact, classes routed."""
    synth = _synthesizer()
    cases = load_cases(emidec_dir, labels=EMIDEC_LABELS, lesion_classes=["MI", "PMO"], select="with_lesion")
    assert len(cases) > 50
    for case in cases:
        image, _ = read_nifti(case["image"])
        label, _ = read_nifti(case["label"])
        _check_case(np.asarray(image), np.asarray(label), synth)


def test_lesions_larger_than_a_crop_are_covered_by_several_windows():
    label = np.zeros((200, 180, 14), np.uint8)
    label[20:170, 30:50, 2:13] = 3  # 150 px tall and 11 slices: needs several windows in H and D
    label[100:110, 40:45, 5] = 4
    image = (np.arange(label.size) % 251).reshape(label.shape).astype(np.int16)
    windows = covering_windows(np.isin(label, [3, 4]), (72, 72, 10))
    assert len(windows) >= 4
    covered = np.zeros(label.shape, bool)
    for window in windows:
        covered[window] = True
        assert tuple(s.stop - s.start for s in window) == (72, 72, 10)
    assert covered[label > 0].all()
    _check_case(image, label, _synthesizer())


def test_volumes_smaller_than_the_crop_are_padded_and_cut_back():
    label = np.zeros((40, 50, 4), np.uint8)
    label[10:20, 10:20, 1:3] = 3
    image = np.random.default_rng(0).integers(0, 255, label.shape).astype(np.uint8)
    assert pad_to(label, (72, 72, 10), 0).shape == (72, 72, 10)
    _check_case(image, label, _synthesizer())


def test_mask_transform_keeps_class_order():
    """LeFusion-J training: mask channel 0 is MI (label 3), channel 1 PMO (label 4), the union covers both."""
    label = torch.tensor([0, 1, 2, 3, 4, 3]).view(1, 6, 1, 1)
    out = LesionMasksd("label", EMIDEC_LABELS, [["MI"], ["PMO"]])({"label": label})
    assert out["lesion_mask"][0].flatten().tolist() == [0, 0, 0, 1, 0, 1]
    assert out["lesion_mask"][1].flatten().tolist() == [0, 0, 0, 0, 1, 0]
    assert out["lesion_union"][0].flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_separate_models_run_in_turn():
    """LeFusion-S: an MI model then a PMO model, each filling only its class."""
    scheduler = DDPMScheduler(20, schedule="cosine")
    sampler = LesionInpaintingSampler(scheduler, 4, 1, 1)
    models = [
        TextureModel(ConstantTexture(scheduler, [0.8]), [["MI"]], name="mi"),
        TextureModel(ConstantTexture(scheduler, [-0.8]), [["PMO"]], name="pmo"),
    ]
    synth = LesionTextureSynthesizer(models, sampler, EMIDEC_LABELS)
    label = np.zeros((80, 80, 6), np.uint8)
    label[30:40, 30:40, 2:4] = 3
    label[33:36, 33:36, 2:4] = 4
    image = np.full(label.shape, 100, np.int16)
    image[0, 0, 0] = 0
    image[1, 1, 1] = 200
    _check_case(image, label, synth)
