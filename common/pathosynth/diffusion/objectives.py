"""Training objectives as MONAI prepare-batch + loss pieces.

LeFusion's lesion-focus loss (paper Eq. 2/3) counts the noise-prediction error only inside the
lesion masks, one mask per image channel. The baselines (RePaint, Cond-Diffusion) use the usual
global loss. Both fit MONAI's ``SupervisedTrainer`` + ``DiffusionInferer`` unchanged: the
prepare-batch returns as *target* the noise with a per-voxel weight map stacked behind it on the
channel axis, and :class:`MaskedNoiseLoss` splits them again. With an all-ones weight the loss is
exactly the plain MSE, so "global" and "lesion-focus" are one mechanism. How the classes are weighed
against each other (pooled as in Eq. 3, or per class) is the loss's ``normalisation`` setting.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines.utils import DiffusionPrepareBatch


class LesionFocusPrepareBatch(DiffusionPrepareBatch):
    """Noise, timesteps and (optionally) a concatenated condition, plus the loss weight map.

    Args:
        num_train_timesteps: T of the noise schedule.
        mask_key: batch key of the (B, C, ...) lesion masks, one channel per image channel.
        lesion_focus: True = weight is the lesion mask (LeFusion); False = weight 1 everywhere (baselines).
        condition_name: batch key of a condition passed to the inferer (Cond-Diffusion's mask + healthy image).
        condition_mode: how MONAI's DiffusionInferer uses it; "concat" stacks it onto the noisy image, as
            the Cond-Diffusion baseline and our sampler do.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        mask_key: str = "lesion_mask",
        lesion_focus: bool = True,
        condition_name: str | None = None,
        condition_mode: str = "concat",
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps, condition_name=condition_name)
        self.condition_mode = condition_mode
        self.mask_key = mask_key
        self.lesion_focus = lesion_focus

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        images, noise, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if "condition" in infer_kwargs:
            infer_kwargs["mode"] = self.condition_mode
        if self.lesion_focus:
            weight = torch.as_tensor(batchdata[self.mask_key]).to(device=noise.device, dtype=noise.dtype)
            if weight.shape != noise.shape:
                raise ValueError(
                    f"lesion mask '{self.mask_key}' has shape {tuple(weight.shape)} but the image batch has "
                    f"{tuple(noise.shape)}: texture channels and image channels must match one-to-one"
                )
        else:
            weight = torch.ones_like(noise)
        return images, torch.cat([noise, weight], dim=1), args, infer_kwargs


LOSS_NORMALISATIONS = ("pooled", "per_class")
LOSS_TYPES = ("l2", "l1")


class MaskedNoiseLoss(torch.nn.Module):
    """Noise-prediction error over the voxels whose weight is non-zero (paper Eq. 2/3).

    ``target`` is (B, 2C, ...): the true noise in the first C channels, the weight map in the last C.

    Args:
        normalisation: ``"pooled"`` (default, the paper's Eq. 3): the error summed over every channel's
            mask divided by one total, the mask voxels of all channels and the whole batch. Every
            masked voxel weighs the same, so a class weighs in proportion to its voxel count: with 90 MI
            and 10 PMO voxels the PMO channel gets 10 % of the gradient. ``"per_class"``: each channel's
            error is divided by that channel's own mask total (over the batch) and the channels present in
            the batch are averaged, so every lesion class weighs the same whatever its size (90/10 → 50 %
            each); a channel whose mask is empty in the batch drops out of the average.
        loss_type: ``"l2"`` (default, the paper's squared error) or ``"l1"`` (absolute error, what the
            official LeFusion code trains with).

    Dividing by mask totals (not the voxel count) keeps the loss scale independent of how much
    background a crop holds; with an all-ones weight both normalisations equal
    ``torch.nn.functional.mse_loss`` (``l1_loss`` for ``"l1"``).
    """

    def __init__(self, normalisation: str = "pooled", loss_type: str = "l2") -> None:
        super().__init__()
        if normalisation not in LOSS_NORMALISATIONS:
            raise ValueError(f"loss_normalisation must be one of {LOSS_NORMALISATIONS}, got {normalisation!r}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        self.normalisation = normalisation
        self.loss_type = loss_type

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        channels = prediction.shape[1]
        if target.shape[1] != 2 * channels:
            raise ValueError(f"target must stack noise and weight ({2 * channels} channels), got {target.shape[1]}")
        noise, weight = target[:, :channels], target[:, channels:]
        error = (prediction - noise).pow(2) if self.loss_type == "l2" else (prediction - noise).abs()
        # where() rather than a product: a non-finite prediction outside the mask must not leak in as NaN
        weighted = torch.where(weight > 0, error * weight, torch.zeros_like(prediction))
        if self.normalisation == "pooled":
            return weighted.sum() / weight.sum().clamp_min(1.0)
        reduce_dims = [0, *range(2, prediction.ndim)]
        per_channel_total = weight.sum(dim=reduce_dims)
        per_channel = weighted.sum(dim=reduce_dims) / per_channel_total.clamp_min(1.0)
        present = per_channel_total > 0
        return per_channel.sum() / present.sum().clamp_min(1)
