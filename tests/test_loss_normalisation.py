"""How the lesion-focus loss weighs lesion classes against each other, and its L1 variant (official code).

Paper Eq. 3 sums the squared error over every class mask, so each masked voxel weighs the same ("pooled");
"per_class" gives every class the same weight whatever its size.
"""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigParser

from conftest import bundle_configs
from pathosynth.diffusion.objectives import MaskedNoiseLoss


def _ninety_ten_split():
    """One sample, 2 channels (MI, PMO), 90 MI voxels and 10 PMO voxels, the same error everywhere."""
    weight = torch.zeros(1, 2, 10, 10)
    weight[0, 0].view(-1)[:90] = 1
    weight[0, 1].view(-1)[90:] = 1
    noise = torch.zeros(1, 2, 10, 10)
    return torch.cat([noise, weight], dim=1)


def _gradient_share_of_pmo(loss: MaskedNoiseLoss) -> float:
    target = _ninety_ten_split()
    prediction = torch.ones(1, 2, 10, 10, requires_grad=True)
    loss(prediction, target).backward()
    grad = prediction.grad.abs()
    return float(grad[0, 1].sum() / grad.sum())


@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_pooled_normalisation_weighs_classes_by_voxel_count(loss_type):
    """Eq. 3 (default): with 90 MI and 10 PMO voxels the PMO channel gets 10 % of the gradient."""
    assert _gradient_share_of_pmo(MaskedNoiseLoss(loss_type=loss_type)) == pytest.approx(0.10)


@pytest.mark.parametrize("loss_type", ["l2", "l1"])
def test_per_class_normalisation_weighs_classes_equally(loss_type):
    """per_class: the same 90/10 split gives each channel 50 % of the gradient."""
    assert _gradient_share_of_pmo(MaskedNoiseLoss("per_class", loss_type)) == pytest.approx(0.50)


def test_per_class_values_are_the_mean_of_each_class_mean():
    """per_class = mean over classes of each class's masked mean error; pooled = mean over all masked voxels."""
    target = _ninety_ten_split()
    prediction = torch.zeros(1, 2, 10, 10)
    prediction[0, 0] = 1.0  # MI error 1 on each MI voxel
    prediction[0, 1] = 3.0  # PMO error 3 → squared 9
    assert MaskedNoiseLoss("per_class")(prediction, target) == pytest.approx((1 + 9) / 2)
    assert MaskedNoiseLoss("pooled")(prediction, target) == pytest.approx((90 * 1 + 10 * 9) / 100)
    assert MaskedNoiseLoss("pooled", "l1")(prediction, target) == pytest.approx((90 * 1 + 10 * 3) / 100)


def test_per_class_ignores_a_class_absent_from_the_batch():
    """A batch without PMO: the MI channel alone is the loss, not halved by an empty channel."""
    target = _ninety_ten_split()
    target[:, 3] = 0
    prediction = torch.full((1, 2, 10, 10), 2.0)
    assert MaskedNoiseLoss("per_class")(prediction, target) == pytest.approx(4.0)


def test_all_ones_weight_gives_plain_mse_and_l1_in_both_modes():
    """Global (baseline) weight: both normalisations reduce to torch's mse_loss / l1_loss."""
    gen = torch.Generator().manual_seed(0)
    prediction = torch.randn(2, 2, 6, 5, generator=gen)
    noise = torch.randn(2, 2, 6, 5, generator=gen)
    target = torch.cat([noise, torch.ones_like(noise)], dim=1)
    for mode in ("pooled", "per_class"):
        assert torch.allclose(
            MaskedNoiseLoss(mode)(prediction, target), torch.nn.functional.mse_loss(prediction, noise)
        )
        assert torch.allclose(
            MaskedNoiseLoss(mode, "l1")(prediction, target), torch.nn.functional.l1_loss(prediction, noise)
        )


def test_unknown_settings_are_refused_by_key_name():
    with pytest.raises(ValueError, match="loss_normalisation"):
        MaskedNoiseLoss("per_voxel")
    with pytest.raises(ValueError, match="loss_type"):
        MaskedNoiseLoss(loss_type="huber")


def test_train_config_keys_reach_the_loss():
    """`loss_normalisation` / `loss_type` in lesion_inpainting's train.json configure the trainer's loss;
    the default is the paper's (pooled, squared error)."""
    parser = ConfigParser()
    parser.read_config(bundle_configs("lesion_inpainting", "train.json"))
    default = parser.get_parsed_content("train#trainer#loss_function")
    assert (default.normalisation, default.loss_type) == ("pooled", "l2")
    parser["loss_normalisation"] = "per_class"
    parser["loss_type"] = "l1"
    parser.parse(reset=True)
    changed = parser.get_parsed_content("train#trainer#loss_function")
    assert (changed.normalisation, changed.loss_type) == ("per_class", "l1")
