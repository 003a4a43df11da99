"""Inpainting sampler: LeFusion's reverse process (paper Eq. 1) with RePaint resampling.

At every reverse step the lesion voxels come from the network's denoising step and all other
voxels from the original image forward-diffused to the same noise level:

    x_{t-1} = l_{t-1} * M_f + q(x̂_0, t-1) * M_b

so the background carries no information the network invented; at the last step q(x̂_0, -1) is
x̂_0 itself. RePaint's resampling ("jumps") re-noises the current sample ``jump_length`` steps and
denoises again, ``jump_n_sample - 1`` times per jump point, which harmonises lesion and context.

The schedule can be respaced to fewer steps (improved-DDPM respacing): any subsequence of the
training timesteps defines a valid chain through its ᾱ values, so the same code runs the full
T-step DDPM chain, a respaced DDPM chain or DDIM (``eta``) steps, with or without jumps on the
respaced chain. The noise schedule comes from a MONAI scheduler; the sampler knows nothing about
the network beyond ``network(x, timesteps)``.

Where the known image enters (``known_region``), the few-step candidates of issue 18:

- ``"noised"`` (default, Eq. 1 above): the background of x_t is the known image forward-noised with
  fresh noise at every step.
- ``"x0"``: the background of the network's x̂0 is replaced by the known image before each step
  (ε̂ re-derived from it), and x_t's background follows the chain: its noise stays coherent from
  step to step (deterministic under DDIM η = 0) instead of being redrawn, the null-space projection
  of DDNM-style samplers. Imposing on x̂0 *and* x_t would equal ``"noised"`` for the lesion voxels,
  since a step acts voxel by voxel, so it is not offered.
- ``"clean"``: for a model trained with a clean background (:mod:`~pathosynth.diffusion.clean_context`):
  the background stays the clean known image, the masks are concatenated to the network input.

Whatever the mode, the last step returns the known image outside the mask, and the synthesiser
pastes only lesion voxels, so the written background is bit-exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from monai.inferers import Inferer

from .clean_context import clean_context_input
from .steps import ReverseChain, eps_from_x0, sample_noise

KNOWN_REGIONS = ("noised", "x0", "clean")


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
        known_region: where the known image is imposed: ``"noised"`` (x_t, Eq. 1), ``"x0"`` (x̂0 before each
            step) or ``"clean"`` (a clean-context model's input); see the module docstring.
        progress: show a progress bar over the network calls.

    Network calls per crop: :attr:`network_evaluations_per_sample` before sampling, :attr:`last_network_evaluations`
    counted during the last call.
    """

    def __init__(
        self,
        scheduler,
        num_inference_steps: int | None = None,
        jump_length: int = 5,
        jump_n_sample: int = 5,
        eta: float | None = None,
        replace_background: bool = True,
        known_region: str = "noised",
        progress: bool = False,
    ) -> None:
        super().__init__()
        if known_region not in KNOWN_REGIONS:
            raise ValueError(f"known_region must be one of {KNOWN_REGIONS}, got {known_region!r}")
        if known_region != "noised" and not replace_background:
            raise ValueError(f"known_region={known_region!r} imposes the known image; it needs replace_background")
        self.known_region = known_region
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
            "known_region": self.known_region,
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
        mode = self.known_region
        x = sample_noise(x0, generators)
        if mode == "clean":
            x = x * lesion + x0 * keep
        elif mode == "x0":  # the background starts on the known image's trajectory, with the same noise
            x = x * lesion + chain.forward_noise(x0, path[0], x) * keep
        calls = 0
        iterator = pairwise(path)
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(list(iterator), desc="sampling", leave=False)
        for index, target in iterator:
            noise = sample_noise(x0, generators)
            if target > index:
                x = chain.renoise(x, index, noise, target)
                if mode == "clean":
                    x = x * lesion + x0 * keep
                continue
            net_in = clean_context_input(x, x0, mask) if mode == "clean" else x
            net_in = net_in if condition is None else torch.cat([net_in, condition.to(x)], dim=1)
            model_output = network(net_in, chain.timestep(index, x.shape[0], x.device))
            calls += 1
            if mode == "x0":
                x0_hat, _ = chain.denoise(model_output, x, index)
                x0_hat = x0_hat * lesion + x0.double() * keep
                eps = eps_from_x0(x.double(), x0_hat, float(chain.alpha_bar[index]))
                x = chain.step_from(x0_hat, eps, x, index, noise, target)
            else:
                x = chain.step(model_output, x, index, noise, target)
            if not self.replace_background:
                continue
            if mode == "noised" and target >= 0:
                x = x * lesion + chain.forward_noise(x0, target, sample_noise(x0, generators)) * keep
            elif mode == "clean" or target < 0:
                x = x * lesion + x0 * keep
        self.last_network_evaluations = calls
        return x
