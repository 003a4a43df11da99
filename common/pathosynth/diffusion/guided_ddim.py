"""Few-step DDIM sampling with classifier-free guidance and an optional ControlNet (EMIT-Diff synthesis).

The official EMIT-Diff code samples Stable Diffusion + ControlNet with DDIM, 20 steps, guidance scale 9. Guidance
follows the usual convention (Ho & Salimans 2022; diffusers, MONAI, ControlNet):

    eps = eps(x, null) + w * (eps(x, prompt) - eps(x, null))

so ``guidance_scale`` w = 1 is the plain conditional prediction, w = 0 the unconditional one, w > 1 pushes away
from the unconditional. The null condition is the encoded empty prompt, as learned with condition dropout. The
ControlNet sees the edge map in both branches (as in ControlNet's own sampler). The class-conditional DDPM
(``class_conditional_ddpm``) uses the same sampler with class indices as the condition and an extra null class.

The step is the shared :class:`~pathosynth.diffusion.steps.ReverseChain` (DDIM with ``eta``; the scheduler's
``prediction_type`` and ``clip_sample``); guidance combines the network outputs, which for every prediction type is
the same as combining the ε they imply. All randomness comes from one CPU generator per sample, so a sample depends
only on its generator, not on the batch it is drawn in. Timesteps are MONAI's ``round(linspace(T-1, 0, n))``; each
step goes to the next listed timestep and the last one to ᾱ = 1 (x0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .steps import ReverseChain, sample_noise


class GuidedDDIMSampler:
    """DDIM (Song et al. 2021, Eq. 12) over ``num_inference_steps`` timesteps with classifier-free guidance.

    Args:
        scheduler: a MONAI DDPM/DDIM scheduler (noise schedule, ``prediction_type``, ``clip_sample`` and its range).
        num_inference_steps: DDIM steps n (official code: 20).
        guidance_scale: w (official code: 9); see the module docstring.
        eta: DDIM stochasticity (0 = deterministic after the initial noise, as the official code). With
            ``num_inference_steps`` = T and eta = 1 the update is DDPM ancestral sampling (posterior variance β̃_t).
        condition_key: the network keyword the condition goes to: ``"context"`` (encoded prompt, cross-attention) or
            ``"class_labels"`` (class index of a ``DiffusionModelUNet`` with ``num_class_embeds``).
    """

    def __init__(
        self,
        scheduler,
        num_inference_steps: int = 20,
        guidance_scale: float = 9.0,
        eta: float = 0.0,
        condition_key: str = "context",
    ) -> None:
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.num_train_timesteps)
        self.num_inference_steps = int(num_inference_steps)
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must lie in [1, {self.num_train_timesteps}] (the training T), "
                f"got {num_inference_steps}"
            )
        self.chain = ReverseChain(scheduler, self.num_inference_steps, float(eta))
        self.guidance_scale = float(guidance_scale)
        self.eta = float(eta)
        if condition_key not in ("context", "class_labels"):
            raise ValueError(f"condition_key must be 'context' or 'class_labels', got {condition_key!r}")
        self.condition_key = condition_key
        self.last_network_evaluations = 0

    def timesteps(self) -> list[int]:
        """The visited training timesteps, descending."""
        return self.chain.timesteps[::-1]

    @property
    def calls_per_step(self) -> int:
        return 1 if self.guidance_scale in (0.0, 1.0) else 2

    def settings(self) -> dict:
        return {
            "sampler": "ddim",
            **self.chain.settings(),
            "guidance_scale": self.guidance_scale,
            "guidance": "out_null + w * (out_prompt - out_null)",
            "condition_key": self.condition_key,
        }

    @staticmethod
    def predict(network, x, t, context, controlnet=None, cn_cond=None, condition_key: str = "context") -> torch.Tensor:
        """The network output at (x_t, t, context[, ControlNet(edges)]); ``context`` goes in as ``condition_key``."""
        timesteps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if controlnet is None:
            return network(x, timesteps, **{condition_key: context})
        down, mid = controlnet(x=x, timesteps=timesteps, controlnet_cond=cn_cond, context=context)
        return network(
            x, timesteps, context=context, down_block_additional_residuals=down, mid_block_additional_residual=mid
        )

    def guided_noise(self, network, x, t, context, null_context, controlnet=None, cn_cond=None) -> torch.Tensor:
        """The guided output; one network call for w in {0, 1}, else the null and prompt branches in one batch."""
        w, key = self.guidance_scale, self.condition_key
        if w == 1.0:
            return self.predict(network, x, t, context, controlnet, cn_cond, key)
        if w == 0.0:
            return self.predict(network, x, t, null_context, controlnet, cn_cond, key)
        both = self.predict(
            network,
            torch.cat([x, x]),
            t,
            torch.cat([null_context, context]),
            controlnet,
            None if cn_cond is None else torch.cat([cn_cond, cn_cond]),
            key,
        )
        out_null, out_prompt = both.chunk(2)
        return out_null + w * (out_prompt - out_null)

    @torch.no_grad()
    def __call__(
        self,
        network: torch.nn.Module,
        context: torch.Tensor,
        null_context: torch.Tensor,
        shape: Sequence[int],
        generators: Sequence[torch.Generator],
        controlnet: torch.nn.Module | None = None,
        cn_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Samples (B, *shape); ``context``/``null_context``: (B, L, D) encoded prompts or (B,) class indices;
        ``generators``: one per sample."""
        if len(generators) != context.shape[0]:
            raise ValueError(f"need one generator per sample: {context.shape[0]} prompts, {len(generators)} generators")
        template = torch.empty((context.shape[0], *(int(s) for s in shape)), device=context.device)
        x = sample_noise(template, generators)
        chain = self.chain
        for index in range(len(chain) - 1, -1, -1):
            out = self.guided_noise(network, x, chain.timesteps[index], context, null_context, controlnet, cn_cond)
            noise = sample_noise(template, generators) if (self.eta > 0 and index > 0) else None
            x = chain.step(out, x, index, noise)
        self.last_network_evaluations = len(chain) * self.calls_per_step
        return x
