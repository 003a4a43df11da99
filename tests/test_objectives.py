"""Lesion-focus loss (paper Eq. 2/3): only errors inside each channel's own lesion mask count."""

from __future__ import annotations

import torch
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDPMScheduler

from pathosynth.diffusion.objectives import LesionFocusPrepareBatch, MaskedNoiseLoss


def _batch():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(2, 2, 8, 8, 3, generator=gen)
    mask = torch.zeros_like(image)
    mask[:, 0, 2:5, 2:5, 1] = 1  # MI channel
    mask[:, 1, 5:7, 5:7, 2] = 1  # PMO channel
    return {"image": image, "lesion_mask": mask}


def test_loss_ignores_any_change_outside_the_masks():
    """Changing the prediction (or the noise target) outside the lesion masks leaves the loss bit-identical."""
    batch = _batch()
    prepare = LesionFocusPrepareBatch(num_train_timesteps=10)
    torch.manual_seed(0)
    _, target, _, _ = prepare(batch)
    prediction = torch.randn_like(batch["image"])
    loss = MaskedNoiseLoss()
    outside = batch["lesion_mask"] == 0
    changed = prediction.clone()
    changed[outside] = torch.randn(int(outside.sum())) * 100
    changed_target = target.clone()
    changed_target[:, :2][outside] = 7.0
    assert torch.equal(loss(prediction, target), loss(changed, target))
    assert torch.equal(loss(prediction, target), loss(prediction, changed_target))
    inside = prediction.clone()
    inside[batch["lesion_mask"] == 1] += 1.0
    assert not torch.equal(loss(prediction, target), loss(inside, target))


def test_each_channel_is_supervised_only_on_its_own_class():
    """LeFusion-J: the MI channel's error counts on MI voxels only, the PMO channel's on PMO voxels only."""
    batch = _batch()
    torch.manual_seed(0)
    _, target, _, _ = LesionFocusPrepareBatch(num_train_timesteps=10)(batch)
    prediction = torch.zeros_like(batch["image"], requires_grad=True)
    MaskedNoiseLoss()(prediction, target).backward()
    grad = prediction.grad
    assert torch.all(grad[:, 0][batch["lesion_mask"][:, 0] == 0] == 0)
    assert torch.all(grad[:, 1][batch["lesion_mask"][:, 1] == 0] == 0)
    assert grad[:, 0][batch["lesion_mask"][:, 0] == 1].abs().sum() > 0
    assert grad[:, 1][batch["lesion_mask"][:, 1] == 1].abs().sum() > 0


def test_global_loss_is_plain_mse():
    """Baselines (RePaint, Cond-Diffusion): the same mechanism with weight 1 is the ordinary MSE."""
    batch = _batch()
    torch.manual_seed(0)
    _, target, _, _ = LesionFocusPrepareBatch(num_train_timesteps=10, lesion_focus=False)(batch)
    prediction = torch.randn_like(batch["image"])
    expected = torch.nn.functional.mse_loss(prediction, target[:, :2])
    assert torch.allclose(MaskedNoiseLoss()(prediction, target), expected)


def test_prepare_batch_works_with_monai_diffusion_inferer():
    """The prepare-batch output plugs into MONAI's DiffusionInferer unchanged (incl. a concatenated condition)."""
    batch = _batch()
    batch["condition"] = torch.rand(2, 2, 8, 8, 3)
    prepare = LesionFocusPrepareBatch(num_train_timesteps=10, condition_name="condition")
    images, target, args, kwargs = prepare(batch)
    seen = {}

    def net(x, timesteps, context=None):
        seen["channels"] = x.shape[1]
        return x[:, :2]

    out = DiffusionInferer(DDPMScheduler(10))(images, net, *args, **kwargs)
    assert seen["channels"] == 4 and out.shape == images.shape and target.shape[1] == 4
