"""A lesion-focus model that sees the clean background: per-voxel noise level, background at t = 0, lesion at t.

Why: LeFusion's sampler (paper Eq. 1) shows the network a background forward-noised to the lesion's noise level, with
fresh noise at every step, so the lesion and its context only agree after RePaint's resampling loop (1,480 network
calls per crop at the official (5, 5) jumps). Region-aware inpainting models (RAD, TD-Paint) give every voxel its own
noise level during training, known voxels at t = 0; the network then reads the exact context at every step and a plain
reverse chain of few steps inpaints. Here the per-voxel level is the lesion mask times t, so the network input is

    [x_t inside the lesion, the clean image outside] ++ [the lesion masks]   (channels concatenated)

with the scalar t as the time input. Training keeps the lesion-focus loss (the error counts inside the masks only),
and sampling (``LesionInpaintingSampler(known_region="clean")``) builds the same input at every step, so train and
sample share :func:`clean_context_input`.
"""

from __future__ import annotations

import torch
from monai.inferers import DiffusionInferer


def clean_context_input(x: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The network input of a clean-context model: ``x`` inside ``mask``, ``known`` outside, then ``mask`` itself
    (all (B, C, ...); the result has 2C channels)."""
    if not x.shape == known.shape == mask.shape:
        raise ValueError(f"x {tuple(x.shape)}, known {tuple(known.shape)} and mask {tuple(mask.shape)} must agree")
    inside = (mask > 0.5).to(x.dtype)
    return torch.cat([x * inside + known.to(x.dtype) * (1 - inside), inside], dim=1)


class CleanContextDiffusionInferer(DiffusionInferer):
    """MONAI's ``DiffusionInferer`` for training a clean-context model: the batch's lesion masks arrive as the
    ``condition`` (``LesionFocusPrepareBatch(condition_name="lesion_mask")``); the image is noised to t, its
    background put back clean, and the masks concatenated (:func:`clean_context_input`)."""

    def __call__(
        self,
        inputs: torch.Tensor,
        diffusion_model,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: torch.Tensor | None = None,
        mode: str = "concat",
        seg=None,
        **kwargs,
    ):  # type: ignore[override]
        if condition is None:
            raise ValueError(
                "a clean-context model needs the lesion masks as its condition "
                "(LesionFocusPrepareBatch condition_name='lesion_mask')"
            )
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        return diffusion_model(clean_context_input(noisy, inputs, condition), timesteps=timesteps)
