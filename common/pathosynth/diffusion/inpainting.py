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
from itertools import pairwise

import torch
from monai.inferers import Inferer

from .steps import ReverseChain, sample_noise


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
    return sum(1 for a, b in pairwise(path) if b < a)


class LesionInpaintingSampler(Inferer):
    """Reverse diffusion that synthesises only inside ``mask``; an Inferer-shaped sampler.

    Args:
        scheduler: a MONAI scheduler: its noise schedule, ``prediction_type`` and ``clip_sample`` (x̂0 clipping and
            range) define the step (:class:`~pathosynth.diffusion.steps.ReverseChain`).
        num_inference_steps: respace the T training steps to this many (None = all T).
        jump_length, jump_n_sample: RePaint resampling (official LeFusion EMIDEC default 5, 5).
        eta: None = DDPM posterior steps (stochastic, the paper's sampler); a float = DDIM steps
            with that stochasticity (0 = deterministic), useful with few respaced steps.
        replace_background: False disables Eq. 1's background replacement (the Cond-Diffusion baseline
            generates the whole crop from its conditioning).
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
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.scheduler = scheduler
        self.chain = ReverseChain(scheduler, num_inference_steps, eta)
        self.timesteps = self.chain.timesteps
        self.jump_length = int(jump_length)
        self.jump_n_sample = int(jump_n_sample)
        self.eta = self.chain.eta
        self.replace_background = replace_background
        self.progress = progress
        self.last_network_evaluations = 0

    @property
    def network_evaluations_per_sample(self) -> int:
        return network_evaluations(len(self.timesteps), self.jump_length, self.jump_n_sample)

    def settings(self) -> dict:
        """Sampler settings for provenance records."""
        return {
            "sampler": type(self).__name__,
            **self.chain.settings(),
            "jump_length": self.jump_length,
            "jump_n_sample": self.jump_n_sample,
            "replace_background": self.replace_background,
            "network_evaluations_per_sample": self.network_evaluations_per_sample,
        }

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
        chain = self.chain
        path = resampling_schedule(len(chain), self.jump_length, self.jump_n_sample)
        x = sample_noise(x0, generators)
        calls = 0
        iterator = pairwise(path)
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(list(iterator), desc="sampling", leave=False)
        for index, target in iterator:
            noise = sample_noise(x0, generators)
            if target > index:
                x = chain.renoise(x, index, noise, target)
                continue
            net_in = x if condition is None else torch.cat([x, condition.to(x)], dim=1)
            model_output = network(net_in, chain.timestep(index, x.shape[0], x.device))
            calls += 1
            x = chain.step(model_output, x, index, noise, target)
            if self.replace_background:
                known = chain.forward_noise(x0, target, sample_noise(x0, generators)) if target >= 0 else x0
                x = x * lesion + known * keep
        self.last_network_evaluations = calls
        return x
