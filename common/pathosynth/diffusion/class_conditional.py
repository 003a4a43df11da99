"""Class-conditional DDPM training pieces: condition dropout to a null class, and the inferer that feeds class indices.

The network is MONAI's ``DiffusionModelUNet`` with ``num_class_embeds = num_classes + 1``: indices ``0..C-1`` are the
dataset's classes and index ``C`` is the learned *null class*. During training each label is replaced by the null
class with probability ``p_uncond`` (condition dropout, Ho & Salimans 2022), so one network learns both eps(x, c) and
the unconditional eps(x, null) that classifier-free guidance needs at sampling
(:class:`~pathosynth.diffusion.guided_ddim.GuidedDDIMSampler` with ``condition_key="class_labels"``).

MONAI's ``DiffusionInferer`` hands its condition to the network as ``context`` (cross-attention);
:class:`ClassConditionedDiffusionInferer` is the same noising step with the condition passed as ``class_labels``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from monai.engines.utils import DiffusionPrepareBatch

from .latent import DiffusionSpace, _plain_tensor

__all__ = ["ClassConditionedDiffusionInferer", "ClassConditionedPrepareBatch", "drop_class_labels", "null_class_labels"]


def null_class_labels(batch_size: int, num_classes: int, device=None) -> torch.Tensor:
    """(B,) filled with the null class index C."""
    return torch.full((int(batch_size),), int(num_classes), dtype=torch.long, device=device)


def drop_class_labels(labels: torch.Tensor, num_classes: int, p_uncond: float) -> torch.Tensor:
    """Each label replaced by the null class C with probability ``p_uncond`` (global torch RNG: seeded by the
    bundle)."""
    labels = labels.long()
    if p_uncond <= 0:
        return labels
    drop = (torch.rand(labels.shape) < float(p_uncond)).to(labels.device)
    return torch.where(drop, torch.full_like(labels, int(num_classes)), labels)


class ClassConditionedPrepareBatch(DiffusionPrepareBatch):
    """(x0, noise) and the inferer's ``condition`` = class indices, dropped to the null class with ``p_uncond``.

    Args:
        num_train_timesteps: T.
        num_classes: C (the null class is C).
        space: the diffusion space (pixel: [0, 1] -> [-1, 1]).
        p_uncond: condition dropout probability (0.1 in Ho & Salimans; 0 trains a purely conditional model).
        image_key, label_key: batch keys.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        num_classes: int,
        space: DiffusionSpace,
        p_uncond: float = 0.1,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps)
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
        self.num_classes = int(num_classes)
        self.space = space
        self.p_uncond = float(p_uncond)
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        images = _plain_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking)
        labels = torch.as_tensor(batchdata[self.label_key]).reshape(-1).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes}), got {sorted(set(labels.tolist()))}")
        x0 = self.space.encode(images)
        noise, timesteps = self.get_noise(x0), self.get_timesteps(x0)
        condition = drop_class_labels(labels, self.num_classes, self.p_uncond).to(x0.device)
        return x0, noise, (), {"noise": noise, "timesteps": timesteps, "condition": condition}


class ClassConditionedDiffusionInferer(torch.nn.Module):
    """Training forward pass: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, then eps_theta(x_t, t, class_labels)."""

    def __init__(self, scheduler) -> None:
        super().__init__()
        self.scheduler = scheduler

    def __call__(
        self,
        inputs: torch.Tensor,
        diffusion_model,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor | None = None,
    ) -> torch.Tensor:
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        return diffusion_model(noisy, timesteps, class_labels=condition)
