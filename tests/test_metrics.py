"""Shared metrics against known values: each test states the claim it checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import SSIMMetric
from monai.metrics.regression import compute_ms_ssim

from pathosynth.metrics.classification import classification_scores
from pathosynth.metrics.image import image_similarity, lesion_region_similarity, per_slice_ssim
from pathosynth.metrics.segmentation import segmentation_scores, summarise_scores

LABELS = {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}


def smooth_image(shape=(192, 192), low=0.3, high=0.7) -> np.ndarray:
    """A structured image in [low, high] (so moderate noise is rarely clipped); 3D shapes repeat it per slice."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    plane = 0.5 + 0.5 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    image = low + (high - low) * plane
    return np.repeat(image[..., None], shape[2], axis=2) if len(shape) == 3 else image


# ---------------------------------------------------------------- image similarity


def test_identical_images_give_infinite_psnr_unit_ssim_zero_error():
    image = smooth_image((192, 192, 3))
    scores = image_similarity(image, image.copy(), data_range=(0, 1))
    assert scores["psnr"] == math.inf
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-6) and scores["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert scores["mae"] == scores["mse"] == scores["rmse"] == 0.0
    assert "reason" not in scores


def test_constant_shift_gives_exact_errors_and_psnr():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 57, size=(64, 64)) / 64.0  # dyadic values: reference + s is exact in binary
    shift = 0.125
    scores = image_similarity(
        reference + shift, reference, data_range=(0.0, 1.0), metrics=("mae", "mse", "rmse", "psnr")
    )
    assert scores["mae"] == shift and scores["mse"] == shift**2 and scores["rmse"] == shift
    assert scores["psnr"] == 10 * math.log10(1 / shift**2)


@pytest.mark.parametrize("data_range, sigma", [((0.0, 1.0), 0.05), ((0.0, 1000.0), 20.0)])
def test_gaussian_noise_gives_psnr_of_its_sigma(data_range, sigma):
    rng = np.random.default_rng(1)
    reference = data_range[0] + (data_range[1] - data_range[0]) * smooth_image((512, 512))
    noisy = reference + rng.normal(0.0, sigma, reference.shape)
    psnr = image_similarity(noisy, reference, data_range, metrics=("psnr",))["psnr"]
    assert psnr == pytest.approx(20 * math.log10((data_range[1] - data_range[0]) / sigma), abs=0.2)


def test_ssim_and_ms_ssim_equal_monai_on_the_whole_image():
    """Our region machinery must not change the standard whole-image values."""
    rng = np.random.default_rng(2)
    reference = smooth_image()
    noisy = reference + rng.normal(0, 0.05, reference.shape)
    scores = image_similarity(noisy, reference, data_range=(0, 1))
    as_tensor = lambda a: torch.as_tensor(np.clip(a, 0, 1), dtype=torch.float32)[None, None]  # noqa: E731
    assert scores["ssim"] == pytest.approx(
        SSIMMetric(spatial_dims=2)(as_tensor(noisy), as_tensor(reference)).item(), abs=1e-5
    )
    assert scores["ms_ssim"] == pytest.approx(
        compute_ms_ssim(as_tensor(noisy), as_tensor(reference), 2).item(), abs=1e-5
    )


def test_ssim_decreases_monotonically_with_noise():
    rng = np.random.default_rng(3)
    reference = smooth_image()
    noise = rng.normal(0.0, 1.0, reference.shape)
    ssim = [
        image_similarity(reference + s * noise, reference, (0, 1), metrics=("ssim",))["ssim"]
        for s in (0.01, 0.02, 0.05, 0.1, 0.2)
    ]
    assert all(a > b for a, b in zip(ssim, ssim[1:])), ssim


def test_noise_inside_region_leaves_background_perfect():
    rng = np.random.default_rng(4)
    reference = smooth_image((96, 96, 4))
    region = np.zeros(reference.shape, bool)
    region[30:60, 30:60, 1:3] = True
    noisy = reference + np.where(region, rng.normal(0, 0.05, reference.shape), 0.0)
    inside = image_similarity(noisy, reference, (0, 1), region=region)
    outside = image_similarity(noisy, reference, (0, 1), region=~region)
    assert math.isfinite(inside["psnr"]) and inside["psnr"] == pytest.approx(26.0, abs=0.5)
    assert outside["psnr"] == math.inf and outside["mae"] == 0.0
    assert inside["ssim"] < outside["ssim"]  # local SSIM only sees noise near the region


def test_empty_region_gives_nan_with_reason_and_no_warning():
    image = smooth_image((32, 32, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy's "mean of empty slice" would be a failure
        scores = image_similarity(image, image + 0.1, (0, 1), region=np.zeros(image.shape, bool))
    assert all(math.isnan(scores[m]) for m in ("psnr", "ssim", "ms_ssim", "mae", "mse", "rmse"))
    assert "empty region" in scores["reason"]


def test_too_small_for_ms_ssim_gives_nan_with_reason_not_a_crash():
    image = smooth_image((96, 96))
    scores = image_similarity(image + 0.01, image, (0, 1))
    assert math.isnan(scores["ms_ssim"]) and "ms_ssim" in scores["reason"]
    assert 0 < scores["ssim"] < 1 and math.isfinite(scores["psnr"])


def test_3d_ssim_is_per_slice_so_one_slice_does_not_affect_the_others():
    rng = np.random.default_rng(5)
    reference = smooth_image((64, 64, 6))
    noisy = reference + rng.normal(0, 0.03, reference.shape)
    changed = noisy.copy()
    changed[..., 3] = rng.uniform(0, 1, changed.shape[:2])
    before, after = per_slice_ssim(noisy, reference, (0, 1)), per_slice_ssim(changed, reference, (0, 1))
    others = [z for z in range(6) if z != 3]
    np.testing.assert_array_equal(before[others], after[others])
    assert after[3] < before[3] - 0.2
    whole = image_similarity(noisy, reference, (0, 1), metrics=("ssim",))["ssim"]
    assert whole == pytest.approx(before.mean(), abs=1e-12)


def test_declared_range_sets_the_scale():
    """Doubling the declared range halves MAE, quarters MSE and adds 20 log10(2) dB to PSNR."""
    rng = np.random.default_rng(6)
    reference = smooth_image((64, 64))
    noisy = reference + rng.normal(0, 0.02, reference.shape)
    narrow = image_similarity(noisy, reference, (0, 1), metrics=("mae", "mse", "psnr"))
    wide = image_similarity(noisy, reference, (0, 2), metrics=("mae", "mse", "psnr"))
    assert wide["mae"] == pytest.approx(narrow["mae"] / 2) and wide["mse"] == pytest.approx(narrow["mse"] / 4)
    assert wide["psnr"] - narrow["psnr"] == pytest.approx(20 * math.log10(2))


def test_lesion_region_similarity_per_class_with_real_range_default():
    rng = np.random.default_rng(7)
    real = 200.0 + 400.0 * smooth_image((64, 64, 4))
    label = np.full(real.shape, LABELS["myocardium"])
    label[20:30, 20:30, 1:3] = LABELS["MI"]
    synthetic = real + np.where(label == LABELS["MI"], rng.normal(0, 10.0, real.shape), 0.0)
    scores = lesion_region_similarity(synthetic, real, label, LABELS)
    assert set(scores) == {"MI", "PMO", "all lesions", "background"}
    assert math.isfinite(scores["MI"]["psnr"]) and scores["all lesions"]["psnr"] == scores["MI"]["psnr"]
    assert scores["background"]["psnr"] == math.inf
    assert math.isnan(scores["PMO"]["ssim"]) and "empty region" in scores["PMO"]["reason"]  # no PMO in this case
    explicit = image_similarity(synthetic, real, (real.min(), real.max()), region=label == LABELS["MI"])
    assert scores["MI"] == explicit


# ---------------------------------------------------------------- segmentation


def test_dice_precision_recall_hand_computed_on_5x5():
    reference = np.zeros((5, 5), int)
    reference[1:4, 1:4] = LABELS["MI"]  # 9 voxels
    prediction = np.zeros((5, 5), int)
    prediction[1:3, 1:5] = LABELS["MI"]  # 8 voxels, 6 of them in the reference
    scores = segmentation_scores(prediction, reference, LABELS, ["MI"])["MI"]
    assert scores["dice"] == pytest.approx(12 / 17) and scores["precision"] == pytest.approx(6 / 8)
    assert scores["recall"] == pytest.approx(6 / 9)


def test_hd_and_assd_of_single_voxels_three_apart_scale_with_spacing():
    reference, prediction = np.zeros((8, 8, 6), int), np.zeros((8, 8, 6), int)
    reference[2, 2, 1] = prediction[5, 2, 1] = LABELS["MI"]  # 3 voxels apart in-plane
    reference[6, 6, 0] = prediction[6, 6, 3] = LABELS["PMO"]  # 3 slices apart
    unit = segmentation_scores(prediction, reference, LABELS, ["MI", "PMO"])
    mm = segmentation_scores(prediction, reference, LABELS, ["MI", "PMO"], spacing=(1.5, 1.5, 10.0))
    assert unit["MI"]["hd95"] == pytest.approx(3) and unit["MI"]["assd"] == pytest.approx(3)
    assert mm["MI"]["hd95"] == pytest.approx(4.5) and mm["MI"]["assd"] == pytest.approx(4.5)
    assert mm["PMO"]["hd95"] == pytest.approx(30) and mm["PMO"]["assd"] == pytest.approx(30)


def test_hd95_and_assd_hand_computed_on_an_asymmetric_pair():
    """Prediction {a, b}, reference {a}, |ab| = 3: directed distances [0, 3] and [0].

    HD95 = max(95th percentile of [0, 3], of [0]) = 0.95 * 3 = 2.85; ASSD = (0 + 3 + 0) / 3 = 1.
    """
    reference, prediction = np.zeros((8, 8), int), np.zeros((8, 8), int)
    reference[2, 2] = prediction[2, 2] = prediction[2, 5] = LABELS["MI"]
    scores = segmentation_scores(prediction, reference, LABELS, ["MI"])["MI"]
    assert scores["hd95"] == pytest.approx(2.85, abs=1e-5) and scores["assd"] == pytest.approx(1.0)
    assert scores["dice"] == pytest.approx(2 / 3) and scores["precision"] == 0.5 and scores["recall"] == 1.0


def test_empty_mask_semantics():
    lesion = np.zeros((16, 16, 4), int)
    lesion[4:8, 4:8, 1] = LABELS["MI"]
    empty = np.zeros_like(lesion)
    both_empty = segmentation_scores(empty, empty, LABELS, ["MI"])["MI"]
    assert both_empty["dice"] == 1.0 and both_empty["hd95"] == 0.0 and both_empty["assd"] == 0.0
    assert math.isnan(both_empty["precision"]) and math.isnan(both_empty["recall"])
    false_alarm = segmentation_scores(lesion, empty, LABELS, ["MI"])["MI"]  # reference empty, prediction not
    assert false_alarm["dice"] == 0.0 and false_alarm["precision"] == 0.0 and math.isnan(false_alarm["recall"])
    assert math.isnan(false_alarm["hd95"]) and math.isnan(false_alarm["assd"])
    missed = segmentation_scores(empty, lesion, LABELS, ["MI"])["MI"]  # prediction empty, reference not
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0 and math.isnan(missed["precision"])
    assert math.isnan(missed["hd95"]) and math.isnan(missed["assd"])


def test_summarise_ignores_and_counts_nan():
    cases = [
        {"MI": {"dice": 0.5, "hd95": 2.0}},
        {"MI": {"dice": 0.7, "hd95": math.nan}},
        {"MI": {"dice": 0.9, "hd95": 4.0}, "PMO": {"dice": 1.0, "reason": "text is skipped"}},
    ]
    summary = summarise_scores(cases)
    assert summary["MI"]["dice"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.2), "n": 3, "n_nan": 0}
    assert summary["MI"]["hd95"] == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "n": 2, "n_nan": 1}
    assert summary["PMO"]["dice"]["n"] == 1 and math.isnan(summary["PMO"]["dice"]["std"])
    assert "reason" not in summary["PMO"]


# ---------------------------------------------------------------- classification


def test_perfect_predictions_score_one_everywhere():
    y_true = np.array([0, 1, 2, 1, 0, 2])
    scores = classification_scores(y_true, np.eye(3)[y_true] * 0.8 + 0.1)
    assert {k: scores[k] for k in ("accuracy", "precision", "recall", "f1", "auc")} == dict.fromkeys(
        ("accuracy", "precision", "recall", "f1", "auc"), 1.0
    )


def test_hand_computed_two_class_confusion_matrix():
    """TP 3, FN 1, FP 2, TN 2: class 1 P 3/5 R 3/4 F1 2/3; class 0 P 2/3 R 2/4 F1 4/7."""
    y_true = [1, 1, 1, 1, 0, 0, 0, 0]
    y_score = [0.9, 0.8, 0.7, 0.2, 0.6, 0.55, 0.1, 0.3]
    binary = classification_scores(y_true, y_score, average="binary")
    assert binary["accuracy"] == pytest.approx(5 / 8)
    assert (binary["precision"], binary["recall"], binary["f1"]) == pytest.approx((3 / 5, 3 / 4, 2 / 3))
    macro = classification_scores(y_true, y_score)
    assert (macro["precision"], macro["recall"], macro["f1"]) == pytest.approx(
        ((3 / 5 + 2 / 3) / 2, (3 / 4 + 2 / 4) / 2, (2 / 3 + 4 / 7) / 2)
    )
    assert classification_scores(y_true, y_score, average="micro")["f1"] == pytest.approx(5 / 8)


def test_hand_computable_auc():
    """Positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of 4 pairs ranked right -> 0.75 (binary or two columns)."""
    assert classification_scores([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])["auc"] == pytest.approx(0.75)
    two_columns = np.stack([1 - np.array([0.1, 0.4, 0.35, 0.8]), [0.1, 0.4, 0.35, 0.8]], axis=1)
    assert classification_scores([0, 0, 1, 1], two_columns)["auc"] == pytest.approx(0.75)


def test_single_class_truth_gives_nan_auc_with_reason():
    scores = classification_scores([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(scores["auc"]) and "auc undefined" in scores["reason"]
    assert scores["accuracy"] == pytest.approx(2 / 3)


def test_never_predicted_class_has_precision_zero_with_note():
    y_true = np.array([0, 1, 2, 2])
    scores = classification_scores(y_true, np.eye(3)[[0, 1, 1, 1]], average="macro")  # class 2 never predicted
    assert scores["precision"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert "[2] never predicted" in scores["note"]
