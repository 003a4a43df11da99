"""Training batches for EMIT-Diff's two stages, shaped for MONAI's ``SupervisedTrainer``.

Stage 1 (text-conditioned DDPM, Eq. 11 with c = the prompt): x0 is the slice in the diffusion space, the condition
is the prompt's token ids, replaced by the empty prompt with probability ``p_uncond`` so the same network also
learns the unconditional prediction that classifier-free guidance needs. MONAI's ``DiffusionInferer`` noises x0
and calls the :class:`~pathosynth.networks.text_controlnet.TextConditionedUNet` with ``context`` = the ids.

Stage 2 (ControlNet on edges): the prompt is encoded once by the frozen stage-1 encoder, the edge map
(:class:`~pathosynth.networks.edge_maps.EdgeCondition`) is the ControlNet's ``cn_cond``, and
:class:`FrozenUNetControlNetInferer` runs MONAI's ``ControlNetDiffusionInferer`` with the frozen UNet, so the
trainer's ``network`` (and optimizer) is the ControlNet alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import ControlNetDiffusionInferer

from ..distributed import unwrap
from .latent import DiffusionSpace, _plain_tensor

NULL_PROMPT = ""


def drop_prompts(prompts: Sequence[str], p_uncond: float) -> list[str]:
    """Each prompt replaced by the null prompt with probability ``p_uncond`` (global torch RNG: seeded by the
    bundle)."""
    prompts = [str(p) for p in prompts]
    if p_uncond <= 0:
        return prompts
    drop = torch.rand(len(prompts)) < float(p_uncond)
    return [NULL_PROMPT if d else p for p, d in zip(prompts, drop.tolist())]


def _prompts_of(batchdata: Mapping, key: str) -> list[str]:
    prompts = batchdata[key]
    return [prompts] if isinstance(prompts, str) else list(prompts)


class TextConditionedPrepareBatch(DiffusionPrepareBatch):
    """(x0, noise) and the inferer's ``condition`` = token ids of the (possibly dropped) prompts.

    Args:
        num_train_timesteps: T.
        space: the diffusion space (pixel: [0, 1] -> [-1, 1]).
        text_encoder: has ``tokenize(prompts) -> (B, L) ids``.
        p_uncond: probability that a prompt is replaced by the null prompt "" (classifier-free guidance training).
        image_key, prompt_key: batch keys.
    """

    def __init__(
        self,
        num_train_timesteps: int,
        space: DiffusionSpace,
        text_encoder,
        p_uncond: float = 0.1,
        image_key: str = "image",
        prompt_key: str = "prompt",
    ) -> None:
        super().__init__(num_train_timesteps=num_train_timesteps)
        if not 0.0 <= float(p_uncond) <= 1.0:
            raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
        self.space = space
        self.text_encoder = text_encoder
        self.p_uncond = float(p_uncond)
        self.image_key = image_key
        self.prompt_key = prompt_key

    def _x0_noise_t(self, batchdata, device, non_blocking):
        images = _plain_tensor(batchdata[self.image_key]).to(device=device, non_blocking=non_blocking)
        x0 = self.space.encode(images)
        return images, x0, self.get_noise(x0), self.get_timesteps(x0)

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        _, x0, noise, timesteps = self._x0_noise_t(batchdata, device, non_blocking)
        prompts = drop_prompts(_prompts_of(batchdata, self.prompt_key), self.p_uncond)
        ids = unwrap(self.text_encoder).tokenize(prompts).to(x0.device)
        return x0, noise, (), {"noise": noise, "timesteps": timesteps, "condition": ids, "mode": "crossattn"}


class EdgeControlPrepareBatch(TextConditionedPrepareBatch):
    """Stage 2: also the edge map of each (image, label) slice as ``cn_cond``; the prompt encoded by the frozen model.

    Args:
        denoiser: the frozen stage-1 :class:`~pathosynth.networks.text_controlnet.TextConditionedUNet`.
        edge_condition: (image, label) -> edge map, the same object inference uses.
        label_key: batch key of the label slices.
        (others as :class:`TextConditionedPrepareBatch`; ``p_uncond`` 0.5 is the ControlNet paper's rate.)
    """

    def __init__(
        self,
        num_train_timesteps: int,
        space: DiffusionSpace,
        denoiser,
        edge_condition,
        p_uncond: float = 0.5,
        image_key: str = "image",
        label_key: str = "label",
        prompt_key: str = "prompt",
    ) -> None:
        super().__init__(num_train_timesteps, space, unwrap(denoiser).text_encoder, p_uncond, image_key, prompt_key)
        self.denoiser = denoiser
        self.edge_condition = edge_condition
        self.label_key = label_key

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        images, x0, noise, timesteps = self._x0_noise_t(batchdata, device, non_blocking)
        label = _plain_tensor(batchdata[self.label_key]).to(device=device, non_blocking=non_blocking)
        edges = self.edge_condition(images, label)
        prompts = drop_prompts(_prompts_of(batchdata, self.prompt_key), self.p_uncond)
        denoiser = unwrap(self.denoiser)
        with torch.no_grad():
            context = denoiser.encode_text(denoiser.tokenize(prompts).to(x0.device))
        return (
            x0,
            noise,
            (),
            {"noise": noise, "timesteps": timesteps, "cn_cond": edges, "condition": context, "mode": "crossattn"},
        )


class FrozenUNetControlNetInferer(ControlNetDiffusionInferer):
    """MONAI's ``ControlNetDiffusionInferer`` with the (frozen) diffusion model bound, so a ``SupervisedTrainer`` whose
    ``network`` is the ControlNet can call it as
    ``inferer(inputs, controlnet, noise=..., timesteps=..., cn_cond=...)``."""

    def __init__(self, scheduler, diffusion_model: torch.nn.Module) -> None:
        super().__init__(scheduler)
        self.diffusion_model = diffusion_model

    def __call__(self, inputs, controlnet, noise, timesteps, cn_cond, condition=None, mode="crossattn", seg=None):
        self.diffusion_model.eval()  # frozen: the trainer only puts the ControlNet in train mode
        return super().__call__(
            inputs, self.diffusion_model, controlnet, noise, timesteps, cn_cond, condition, mode, seg
        )
