"""A condition-vector denoiser seen by samplers as ``network(x, t)``, with classifier-free guidance.

Why: our samplers (:class:`~pathosynth.diffusion.inpainting.LesionInpaintingSampler`) know nothing of conditions;
binding the request (a lesion intensity histogram) to the network keeps them unchanged. With ``guidance_scale`` s != 1
each call is two network passes, eps = eps(x, null) + s * (eps(x, c) - eps(x, null)) (Ho & Salimans 2022), which needs
a network trained with condition dropout (its null embedding).
"""

from __future__ import annotations

import torch

from ..distributed import unwrap
from ..errors import UserInputError


class ConditionedDenoiser(torch.nn.Module):
    """``network(x, t, context=condition)``, guided by ``guidance_scale`` (1.0 = plain conditional, no extra pass).

    Args:
        network: a network taking the condition as ``context`` (``Pseudo3DDiffusionUNet(condition_dim=...)``).
        condition: (condition_dim,) or (1, condition_dim), broadcast over the batch.
        guidance_scale: classifier-free guidance weight.
    """

    def __init__(self, network: torch.nn.Module, condition: torch.Tensor, guidance_scale: float = 1.0) -> None:
        super().__init__()
        check_guidance(network, guidance_scale)
        self.network = network
        self.condition = torch.as_tensor(condition, dtype=torch.float32).reshape(1, -1)
        self.guidance_scale = float(guidance_scale)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        condition = self.condition.to(x.device).expand(x.shape[0], -1)
        conditional = self.network(x, timesteps, context=condition)
        if self.guidance_scale == 1.0:
            return conditional
        unconditional = self.network(x, timesteps, context=None)
        return unconditional + self.guidance_scale * (conditional - unconditional)


def check_guidance(network: torch.nn.Module, guidance_scale: float) -> None:
    """Guidance needs the null embedding that only condition dropout trains: refuse it otherwise, naming the keys."""
    if float(guidance_scale) != 1.0 and not getattr(unwrap(network), "condition_dropout", 0.0):
        raise UserInputError(
            f"`guidance_scale` {guidance_scale} needs a model trained with `histogram_dropout` > 0 (its null "
            "embedding); this one was trained without condition dropout: set guidance_scale 1.0"
        )
