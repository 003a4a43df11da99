"""Pathology-patch preparation (Krishna et al. Fig. 1b, Eq. 5): intensity range, edge weighting, the weight W, cutting
patches around lesion regions of any labelled dataset, random pose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pathosynth.data.pathology_patches import (
    QUANTILE_RANGE,
    cut_lesion_patches,
    gaussian_window,
    place_patch,
    prepare_patch,
    random_centre,
    random_pose,
)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_prepared_patch_lies_between_the_reference_minimum_and_a_quantile_drawn_in_range():
    reference = rng(1).gamma(2.0, 0.2, size=(64, 64)).astype(np.float32) + 0.1
    patch = rng(2).normal(0.5, 0.2, size=(17, 17)).astype(np.float32)
    drawn = []
    for seed in range(40):
        out, info = prepare_patch(patch, reference, torch.Generator().manual_seed(seed))
        low, high = info["intensity_range"]
        q = info["quantile"]
        drawn.append(q)
        assert QUANTILE_RANGE[0] <= q <= QUANTILE_RANGE[1]
        assert low == pytest.approx(float(reference.min())) and high == pytest.approx(float(np.quantile(reference, q)))
        assert out.min() >= low - 1e-6 and out.max() <= high + 1e-6
        assert out.max() == pytest.approx(high, rel=1e-5)  # equalisation spreads the patch up to the drawn quantile
    assert min(drawn) < 0.98 and max(drawn) > 0.99  # q is drawn, not fixed


def test_edge_weighting_fades_the_patch_into_the_reference():
    canvas = np.full((40, 40), 0.3, np.float32)
    patch = np.full((21, 21), 0.9, np.float32)
    image, weight, _ = place_patch(canvas, patch, np.zeros((21, 21), np.uint8), centre=(20, 20))
    inside = weight > 0
    assert np.all(image[~inside] == 0.3) and image[20, 20] == pytest.approx(0.9)
    ring = np.concatenate([image[10, 10:31], image[30, 10:31], image[10:31, 10], image[10:31, 30]])
    edge_weight = np.exp(-(10**2) / (2 * (21 / 4) ** 2))  # sigma = patch/4: the border is 10 px, ~1.9 sigma, out
    assert np.all(np.abs(ring - 0.3) <= 0.6 * edge_weight + 1e-6) and edge_weight < 0.17
    assert np.all(np.diff(image[20, 20:31]) <= 0)  # monotone fade from the centre to the border


def test_weight_is_a_spherical_gaussian_on_the_patch_and_zero_outside():
    patch, label = np.ones((15, 15), np.float32), np.zeros((15, 15), np.uint8)
    label[6:9, 6:9] = 3
    image, weight, lesion = place_patch(np.zeros((40, 50), np.float32), patch, label, centre=(20, 30))
    inside = np.zeros((40, 50), bool)
    inside[13:28, 23:38] = True
    assert np.all(weight[~inside] == 0) and np.all(image[~inside] == 0) and np.all(weight[inside] > 0)
    assert weight.max() == weight[20, 30] == pytest.approx(1.0)
    for d in range(1, 8):  # spherical: equal at equal distance in every direction
        assert weight[20 + d, 30] == pytest.approx(weight[20, 30 + d]) == pytest.approx(weight[20 - d, 30])
    assert set(np.unique(lesion)) == {0, 3} and lesion[20, 30] == 3 and np.all(lesion[~inside] == 0)
    # at the canvas border the patch is cropped, never wrapped
    _, weight, _ = place_patch(np.zeros((40, 50), np.float32), patch, label, centre=(2, 48))
    assert weight[:10, 41:].sum() == pytest.approx(weight.sum()) and weight[2, 48] == pytest.approx(1.0)
    window3d = gaussian_window((9, 9, 5))
    assert window3d.shape == (9, 9, 5) and window3d[4, 4, 2] == pytest.approx(1.0)


def test_patches_are_cut_around_each_lesion_region_of_any_labelled_image():
    image = rng(4).random((64, 64, 3)).astype(np.float32)
    label = np.zeros((64, 64, 3), np.uint8)
    label[20:40, 20:40, :] = 2  # anatomy, not a lesion
    label[22:27, 22:30, 1] = 3  # region 1 (MI) with a PMO core
    label[24:26, 24:26, 1] = 4
    label[33:37, 2:6, 1] = 3  # region 2, near the border
    label[10:12, 50:52, 2] = 3  # too small with min_voxels=5
    patches = cut_lesion_patches(image, label, [3, 4], (16, 16), min_voxels=5, source="case")
    assert len(patches) == 2 and all(p.image.shape == p.label.shape == (16, 16) for p in patches)
    for patch in patches:
        assert patch.label[8, 8] in (3, 4) and set(np.unique(patch.label)) <= {0, 3, 4}  # centred; anatomy dropped
        assert "slice1" in patch.source
    assert {4} <= set(np.unique(patches[0].label))
    volume = cut_lesion_patches(image, label, [3, 4], (16, 16, 3), min_voxels=5)
    assert len(volume) == 2 and volume[0].image.shape == (16, 16, 3)
    with pytest.raises(ValueError, match="differ"):
        cut_lesion_patches(image, label[..., 0], [3], (8, 8))


def test_random_pose_moves_image_and_label_together_and_varies():
    label = np.zeros((21, 21), np.uint8)
    label[4:10, 8:17] = 3
    image = (label > 0).astype(np.float32)
    poses = set()
    for seed in range(6):
        posed_image, posed_label, info = random_pose(image, label, torch.Generator().manual_seed(seed))
        agree = (posed_image > 0.5) == (posed_label > 0)
        assert agree.mean() > 0.97 and set(np.unique(posed_label)) <= {0, 3}
        poses.add((round(info["angle"]), tuple(info["flips"])))
    assert len(poses) == 6
    centre = random_centre(label == 3, torch.Generator().manual_seed(0))
    assert label[centre] == 3 and random_centre(label == 9, torch.Generator()) is None
