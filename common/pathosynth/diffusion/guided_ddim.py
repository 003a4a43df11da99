"""Few-step DDIM sampling with classifier-free guidance and an optional ControlNet (EMIT-Diff synthesis).

The official EMIT-Diff code samples Stable Diffusion + ControlNet with DDIM, 20 steps, guidance scale 9. Guidance
follows the usual convention (Ho & Salimans 2022; diffusers, MONAI, ControlNet):

    eps = eps(x, null) + w * (eps(x, prompt) - eps(x, null))

so ``guidance_scale`` w = 1 is the plain conditional prediction, w = 0 the unconditional one, w > 1 pushes away
from the unconditional. The null condition is the encoded empty prompt, as learned with condition dropout. The
ControlNet sees the edge map in both branches (as in ControlNet's own sampler). The class-conditional DDPM
(``class_conditional_ddpm``) uses the same sampler with class indices as the condition and an extra null class.

Like :class:`~pathosynth.diffusion.label_guided.LabelGuidedSampler`, all randomness comes from one CPU generator
per sample, so a sample depends only on its generator, not on the batch it is drawn in. Timesteps are
``round(linspace(T-1, 0, n))``; each step goes to the next listed timestep and the last one to ᾱ = 1 (x0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class GuidedDDIMSampler:
    """DDIM (Song et al. 2021, Eq. 12) over ``num_inference_steps`` timesteps with classifier-free guidance.

    Args:
        scheduler: a MONAI DDPM/DDIM scheduler (its ``alphas_cumprod``, ``num_train_timesteps``, ``clip_sample``).
        num_inference_steps: DDIM steps n (official code: 20).
        guidance_scale: w (official code: 9); see the module docstring.
        eta: DDIM stochasticity (0 = deterministic after the initial noise, as the official code). With
            ``num_inference_steps`` = T and eta = 1 the update is DDPM ancestral sampling (posterior variance β̃_t).
        condition_key: the network keyword the condition goes to: ``"context"`` (encoded prompt, cross-attention) or
            ``"class_labels"`` (class index of a ``DiffusionModelUNet`` with ``num_class_embeds``).
    """

    def __init__(self, scheduler, num_inference_steps: int = 20, guidance_scale: float = 9.0, eta: float = 0.0,
                 condition_key: str = "context") -> None:
        if getattr(scheduler, "prediction_type", "epsilon") != "epsilon":
            raise ValueError("GuidedDDIMSampler expects an epsilon-prediction scheduler")
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.num_train_timesteps)
        self.num_inference_steps = int(num_inference_steps)
        if not 1 <= self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must lie in [1, {self.num_train_timesteps}] (the training T), "
                             f"got {num_inference_steps}")
        self.guidance_scale = float(guidance_scale)
        self.eta = float(eta)
        if condition_key not in ("context", "class_labels"):
            raise ValueError(f"condition_key must be 'context' or 'class_labels', got {condition_key!r}")
        self.condition_key = condition_key
        self.last_network_evaluations = 0

    def timesteps(self) -> list[int]:
        steps = torch.linspace(self.num_train_timesteps - 1, 0, self.num_inference_steps).round().long().tolist()
        return list(dict.fromkeys(steps))  # no repeats

    @property
    def calls_per_step(self) -> int:
        return 1 if self.guidance_scale in (0.0, 1.0) else 2

    def settings(self) -> dict:
        return {"sampler": "ddim", "num_train_timesteps": self.num_train_timesteps, "num_inference_steps": self.num_inference_steps,
                "guidance_scale": self.guidance_scale, "eta": self.eta, "clip_sample": bool(getattr(self.scheduler, "clip_sample", False)),
                "guidance": "eps_null + w * (eps_prompt - eps_null)", "condition_key": self.condition_key}

    @staticmethod
    def predict(network, x, t, context, controlnet=None, cn_cond=None, condition_key: str = "context") -> torch.Tensor:
        """eps_theta(x_t, t, context[, ControlNet(edges)]); ``context`` goes to the network as ``condition_key``."""
        timesteps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if controlnet is None:
            return network(x, timesteps, **{condition_key: context})
        down, mid = controlnet(x=x, timesteps=timesteps, controlnet_cond=cn_cond, context=context)
        return network(x, timesteps, context=context, down_block_additional_residuals=down, mid_block_additional_residual=mid)

    def guided_noise(self, network, x, t, context, null_context, controlnet=None, cn_cond=None) -> torch.Tensor:
        """The guided eps; one network call for w in {0, 1}, else the null and prompt branches in one batch."""
        w, key = self.guidance_scale, self.condition_key
        if w == 1.0:
            return self.predict(network, x, t, context, controlnet, cn_cond, key)
        if w == 0.0:
            return self.predict(network, x, t, null_context, controlnet, cn_cond, key)
        both = self.predict(network, torch.cat([x, x]), t, torch.cat([null_context, context]), controlnet,
                            None if cn_cond is None else torch.cat([cn_cond, cn_cond]), key)
        eps_null, eps_prompt = both.chunk(2)
        return eps_null + w * (eps_prompt - eps_null)

    def step(self, eps: torch.Tensor, t: int, t_prev: int | None, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """x_t -> x_{t_prev} (t_prev None: to x0)."""
        s = self.scheduler
        abar = s.alphas_cumprod.to(x.device)
        abar_t = abar[t]
        abar_prev = abar[t_prev] if t_prev is not None else torch.ones((), device=x.device)
        x0 = (x - (1 - abar_t).sqrt() * eps) / abar_t.sqrt()
        if getattr(s, "clip_sample", False):
            x0 = x0.clamp(*getattr(s, "clip_sample_values", (-1.0, 1.0)))
        sigma = self.eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)).clamp(min=0).sqrt()
        out = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma**2).clamp(min=0).sqrt() * eps
        if self.eta > 0 and noise is not None:
            out = out + sigma * noise.to(out)
        return out

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
        device = context.device
        shape = tuple(int(s) for s in shape)

        def draw():
            return torch.stack([torch.randn(shape, generator=g) for g in generators]).to(device)

        x = draw()
        steps = self.timesteps()
        for i, t in enumerate(steps):
            eps = self.guided_noise(network, x, t, context, null_context, controlnet, cn_cond)
            t_prev = steps[i + 1] if i + 1 < len(steps) else None
            x = self.step(eps, t, t_prev, x, draw() if (self.eta > 0 and t_prev is not None) else None)
        self.last_network_evaluations = len(steps) * self.calls_per_step
        return x
