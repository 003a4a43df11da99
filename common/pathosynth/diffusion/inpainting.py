"""Inpainting sampler: LeFusion's reverse process (paper Eq. 1) with RePaint resampling.

At every reverse step the lesion voxels come from the network's denoising step and all other
voxels from the original image forward-diffused to the same noise level:

    x_{t-1} = l_{t-1} * M_f + q(x̂_0, t-1) * M_b

so the background carries no information the network invented; at the last step q(x̂_0, -1) is
x̂_0 itself. RePaint's resampling ("jumps") re-noises the current sample ``jump_length`` steps and
denoises again, ``jump_n_sample - 1`` times per jump point, which harmonises lesion and context.

The schedule can be respaced to fewer steps (improved-DDPM respacing): any subsequence of the
training timesteps defines a valid chain through its ᾱ values, so the same code runs the full
T-step DDPM chain, a respaced DDPM chain or DDIM (``eta``) steps. The noise schedule comes from a
MONAI scheduler; the sampler knows nothing about the network beyond ``network(x, timesteps)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.inferers import Inferer


def resampling_schedule(num_steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> list[int]:
    """Step indices visited by RePaint's resampling, from ``num_steps - 1`` down to -1 (the clean image).

    A jump point every ``jump_length`` steps (except the last ``jump_length``) is revisited
    ``jump_n_sample - 1`` times: the chain goes back up ``jump_length`` steps and down again.
    ``jump_length = jump_n_sample = 1`` is the plain reverse chain.
    """
    if num_steps < 1 or jump_length < 1 or jump_n_sample < 1:
        raise ValueError("num_steps, jump_length and jump_n_sample must be >= 1")
    remaining = {j: jump_n_sample - 1 for j in range(0, num_steps - jump_length, jump_length)}
    step = num_steps
    visited = []
    while step >= 1:
        step -= 1
        visited.append(step)
        if remaining.get(step, 0) > 0:
            remaining[step] -= 1
            for _ in range(jump_length):
                step += 1
                visited.append(step)
    visited.append(-1)
    return visited


def network_evaluations(num_steps: int, jump_length: int = 1, jump_n_sample: int = 1) -> int:
    """Network calls per sample: one per downward move of the resampling schedule."""
    path = resampling_schedule(num_steps, jump_length, jump_n_sample)
    return sum(1 for a, b in zip(path[:-1], path[1:]) if b < a)


def respaced_timesteps(num_train_timesteps: int, num_inference_steps: int | None) -> list[int]:
    """Evenly spaced training timesteps (ascending), always including 0 and T-1."""
    if num_inference_steps is None or num_inference_steps >= num_train_timesteps:
        return list(range(num_train_timesteps))
    if num_inference_steps < 1:
        raise ValueError("num_inference_steps must be >= 1")
    return sorted({int(round(v)) for v in np.linspace(0, num_train_timesteps - 1, num_inference_steps)})


def _noise_like(x: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Per-sample noise drawn on the CPU from each sample's own generator.

    One generator per batch item makes a case's result independent of batch size, batch position,
    device and process count — the reproducibility contract of every bundle.
    """
    if generators is None:
        return torch.randn_like(x)
    if len(generators) != x.shape[0]:
        raise ValueError(f"need one generator per batch item ({x.shape[0]}), got {len(generators)}")
    noise = [torch.randn(x.shape[1:], generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(noise).to(device=x.device, dtype=x.dtype)


class LesionInpaintingSampler(Inferer):
    """Reverse diffusion that synthesises only inside ``mask``; an Inferer-shaped sampler.

    Args:
        scheduler: a MONAI scheduler; only its ``alphas_cumprod`` (the noise schedule) is used.
        num_inference_steps: respace the T training steps to this many (None = all T).
        jump_length, jump_n_sample: RePaint resampling (official LeFusion EMIDEC default 5, 5).
        eta: None = DDPM posterior steps (stochastic, the paper's sampler); a float = DDIM steps
            with that stochasticity (0 = deterministic), useful with few respaced steps.
        replace_background: False disables Eq. 1's background replacement (the Cond-Diffusion baseline
            generates the whole crop from its conditioning).
        clip_denoised: clamp the predicted clean image to [-1, 1], the training intensity range.
        progress: show a progress bar over the network calls.
    """

    def __init__(
        self,
        scheduler,
        num_inference_steps: int | None = None,
        jump_length: int = 5,
        jump_n_sample: int = 5,
        eta: float | None = None,
        replace_background: bool = True,
        clip_denoised: bool = True,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.timesteps = respaced_timesteps(scheduler.num_train_timesteps, num_inference_steps)
        self.jump_length = int(jump_length)
        self.jump_n_sample = int(jump_n_sample)
        self.eta = eta
        self.replace_background = replace_background
        self.clip_denoised = clip_denoised
        self.progress = progress
        # ᾱ of every visited index; index -1 (the clean image) has ᾱ = 1
        alphas = scheduler.alphas_cumprod.double()[self.timesteps]
        self.alpha_bar = torch.cat([alphas, torch.ones(1, dtype=torch.float64)])  # alpha_bar[-1] == 1
        self.last_network_evaluations = 0

    @property
    def network_evaluations_per_sample(self) -> int:
        return network_evaluations(len(self.timesteps), self.jump_length, self.jump_n_sample)

    def settings(self) -> dict:
        """Sampler settings for provenance records."""
        return {
            "sampler": type(self).__name__,
            "num_train_timesteps": int(self.scheduler.num_train_timesteps),
            "num_inference_steps": len(self.timesteps),
            "jump_length": self.jump_length,
            "jump_n_sample": self.jump_n_sample,
            "eta": self.eta,
            "replace_background": self.replace_background,
            "network_evaluations_per_sample": self.network_evaluations_per_sample,
        }

    def forward_noise(self, x0: torch.Tensor, index: int, noise: torch.Tensor) -> torch.Tensor:
        """q(x_index | x_0): the original image at the noise level of step ``index`` (x_0 itself at -1)."""
        a = self.alpha_bar[index]
        return (a.sqrt() * x0 + (1 - a).sqrt() * noise).to(x0.dtype)

    def _jump_up(self, x: torch.Tensor, index: int, noise: torch.Tensor) -> torch.Tensor:
        """q(x_{index+1} | x_index): re-noise the current sample by one (respaced) step."""
        alpha = self.alpha_bar[index + 1] / self.alpha_bar[index]
        return (alpha.sqrt() * x + (1 - alpha).sqrt() * noise).to(x.dtype)

    def step_down(self, x: torch.Tensor, eps: torch.Tensor, index: int, noise: torch.Tensor) -> torch.Tensor:
        """One reverse step from ``index`` to ``index - 1`` given the predicted noise."""
        a_t, a_s = self.alpha_bar[index], self.alpha_bar[index - 1]
        x = x.double()
        eps = eps.double()
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        if self.eta is None:  # DDPM posterior q(x_s | x_t, x0) of the (respaced) chain, fixed small variance
            beta = 1 - a_t / a_s
            mean = a_s.sqrt() * beta / (1 - a_t) * x0 + (1 - beta).sqrt() * (1 - a_s) / (1 - a_t) * x
            sigma = (beta * (1 - a_s) / (1 - a_t)).sqrt()
        else:  # DDIM
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            sigma = self.eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)).sqrt()
            mean = a_s.sqrt() * x0 + (1 - a_s - sigma**2).clamp_min(0).sqrt() * eps
        if index == 0:
            return mean.float()
        return (mean + sigma * noise.double()).float()

    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: torch.nn.Module,
        mask: torch.Tensor,
        condition: torch.Tensor | None = None,
        generators: Sequence[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """Sample lesion texture inside ``mask`` given the original image ``inputs`` (both (B, C, ...), in [-1, 1]).

        ``condition`` is concatenated to the network input on the channel axis (Cond-Diffusion).
        Returns x_0; outside ``mask`` it equals ``inputs`` exactly when ``replace_background``.
        """
        if mask.shape != inputs.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal the image shape {tuple(inputs.shape)}")
        x0 = inputs.float()
        keep = (mask <= 0.5).to(x0.dtype)
        lesion = 1 - keep
        path = resampling_schedule(len(self.timesteps), self.jump_length, self.jump_n_sample)
        x = _noise_like(x0, generators)
        calls = 0
        iterator = zip(path[:-1], path[1:])
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(list(iterator), desc="sampling", leave=False)
        for index, target in iterator:
            noise = _noise_like(x0, generators)
            if target > index:
                x = self._jump_up(x, index, noise)
                continue
            t = torch.full((x.shape[0],), self.timesteps[index], device=x.device, dtype=torch.long)
            net_in = x if condition is None else torch.cat([x, condition.to(x)], dim=1)
            eps = network(net_in, t)
            calls += 1
            x = self.step_down(x, eps, index, noise)
            if self.replace_background:
                known = self.forward_noise(x0, target, _noise_like(x0, generators)) if target >= 0 else x0
                x = x * lesion + known * keep
        self.last_network_evaluations = calls
        return x
