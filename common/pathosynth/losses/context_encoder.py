"""The context-encoder pretext task (Pathak et al., CVPR 2016) as pieces of a MONAI ``SupervisedTrainer``.

The network sees an image with a region blanked (:class:`pathosynth.data.transforms.RandRectangleMaskd`) and is
scored on reconstructing that region only: Pathak's reconstruction loss, a squared error masked to the removed
region. Their adversarial term (a discriminator on the filled region, weight 0.001) is left out: the pretrained
network is used for its features, not its inpaintings.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["MaskedMSELoss", "prepare_masked_reconstruction_batch"]


class MaskedMSELoss(torch.nn.Module):
    """Mean squared error over the masked pixels only: errors outside ``mask`` cost nothing.

    ``input``, ``target``: (B, C, ...); ``mask``: (B, 1, ...) or (B, C, ...), 1 = scored. ``target`` may also be
    the ``{"target", "mask"}`` dict of :func:`prepare_masked_reconstruction_batch` (a ``SupervisedTrainer`` passes
    the loss one target). An all-zero mask gives 0.
    """

    def forward(
        self, input: torch.Tensor, target: torch.Tensor | Mapping, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if isinstance(target, Mapping):
            target, mask = target["target"], target["mask"]
        if mask is None:
            raise ValueError("MaskedMSELoss needs a mask (the reconstructed region)")
        mask = mask.to(input.dtype).expand_as(input)
        return ((input - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


def prepare_masked_reconstruction_batch(batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
    """``SupervisedTrainer`` ``prepare_batch``: the masked ``image`` is the input, ``{"target", "mask"}`` the target."""

    def move(key):
        return torch.as_tensor(batchdata[key]).to(device=device, non_blocking=non_blocking, **kwargs)

    return move("image"), {"target": move("target"), "mask": move("mask")}
