"""The one reverse step every sampler takes: respaced DDPM posterior or DDIM, from any prediction type.

A chain visits a subsequence ``t_0 = 0 < t_1 < ... < t_{n-1}`` of the T training timesteps (all of them, or
MONAI's ``set_timesteps`` spacing) and walks it downwards; position ``i`` of the chain has ᾱ_i = ``alphas_cumprod[t_i]``
and position -1 is the clean image, ᾱ = 1. Any such subsequence is a valid Markov chain through its ᾱ values
(improved-DDPM respacing, Nichol & Dhariwal 2021), so one step function serves the full T-step DDPM chain, a respaced
chain and DDIM (Song et al. 2021, Eq. 12):

    x̂0, ε̂ from the network output (ε, x0 or v prediction, the scheduler's ``prediction_type``)
    x̂0 <- clip(x̂0) (the scheduler's ``clip_sample`` and range), then ε̂ <- (x_t - √ᾱ_t x̂0) / √(1 - ᾱ_t)
    DDPM: x_s = posterior mean of q(x_s | x_t, x̂0) + σ z,  σ² = β̃ (fixed_small) or β (fixed_large), β = 1 - ᾱ_t/ᾱ_s
    DDIM: x_s = √ᾱ_s x̂0 + √(1 - ᾱ_s - σ²) ε̂ + σ z,  σ = η √((1 - ᾱ_s)/(1 - ᾱ_t) · β)

ε̂ is re-derived from the clipped x̂0 (as in the DDIM step of guided-diffusion) so that x_t = √ᾱ_t x̂0 + √(1-ᾱ_t) ε̂
holds exactly: DDIM with η = 1 is then the DDPM posterior step even where clipping acts, and x̂0 and ε̂ never
disagree. (MONAI's ``DDIMScheduler.step`` keeps the network's ε next to the clipped x̂0; without clipping both agree.)

ᾱ = 1 (MONAI 1.4's cosine schedule has ᾱ_0 = 1 exactly) means no noise is left: x̂0 = x_t, ε̂ = 0 and the step
returns x̂0, where the textbook formulas would divide 0 by 0. All arithmetic is float64.

Noise comes from one CPU generator per sample (:func:`sample_noise`), so a sample depends on its own generator only,
whatever the batch it is drawn in, the device or the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
VARIANCE_TYPES = ("fixed_small", "fixed_large")


def respaced_timesteps(num_train_timesteps: int, num_inference_steps: int | None) -> list[int]:
    """The visited training timesteps, ascending: MONAI's ``set_timesteps`` spacing ``round(linspace(T-1, 0, n))``
    (duplicates dropped), so 0 and T-1 are always visited. None (or n >= T) = all T."""
    num_train_timesteps = int(num_train_timesteps)
    if num_inference_steps is None or int(num_inference_steps) >= num_train_timesteps:
        return list(range(num_train_timesteps))
    if int(num_inference_steps) < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    steps = torch.linspace(num_train_timesteps - 1, 0, int(num_inference_steps)).round().long().tolist()
    return sorted(set(steps))


def sample_noise(template: torch.Tensor, generators: Sequence[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like ``template`` (B, ...), item b drawn on the CPU from ``generators[b]``.

    One generator per batch item makes a case's result independent of batch size, batch position, device and
    process count, the reproducibility contract of every bundle. None draws from the global generator.
    """
    if generators is None:
        return torch.randn_like(template)
    if len(generators) != template.shape[0]:
        raise ValueError(f"need one generator per batch item ({template.shape[0]}), got {len(generators)}")
    noise = [torch.randn(template.shape[1:], generator=g, dtype=torch.float32) for g in generators]
    return torch.stack(noise).to(device=template.device, dtype=template.dtype)


def _ratio(num: float, den: float) -> float:
    """num / den with 0 / 0 = 0 (both vanish together only where no noise is left)."""
    return 0.0 if den <= 0.0 else num / den


def x0_and_eps(model_output: torch.Tensor, x: torch.Tensor, alpha_bar: float, prediction_type: str = "epsilon"):
    """(x̂0, ε̂) from a network output of the given prediction type at noise level ᾱ (MONAI's conversions)."""
    a = float(alpha_bar)
    if prediction_type == "epsilon":
        if a <= 0.0:
            raise ValueError("an epsilon prediction carries no information about x0 at alpha_bar = 0")
        return (x - (1 - a) ** 0.5 * model_output) / a**0.5, model_output
    if prediction_type == "v_prediction":
        return a**0.5 * x - (1 - a) ** 0.5 * model_output, a**0.5 * model_output + (1 - a) ** 0.5 * x
    if prediction_type == "sample":
        return model_output, eps_from_x0(x, model_output, a)
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def eps_from_x0(x: torch.Tensor, x0: torch.Tensor, alpha_bar: float) -> torch.Tensor:
    """The noise that takes x0 to x at level ᾱ: (x - √ᾱ x0) / √(1 - ᾱ); 0 at ᾱ = 1 (no noise left)."""
    a = float(alpha_bar)
    if a >= 1.0:
        return torch.zeros_like(x)
    return (x - a**0.5 * x0) / (1 - a) ** 0.5


def ddpm_coefficients(alpha_bar_t: float, alpha_bar_s: float, variance_type: str = "fixed_small"):
    """(c_x0, c_xt, σ) of the posterior q(x_s | x_t, x0) = N(c_x0 x0 + c_xt x_t, σ²) for ᾱ_s >= ᾱ_t.

    With β = 1 - ᾱ_t/ᾱ_s (one step of the respaced chain): c_x0 = √ᾱ_s β/(1-ᾱ_t), c_xt = √(1-β)(1-ᾱ_s)/(1-ᾱ_t),
    σ² = β(1-ᾱ_s)/(1-ᾱ_t) ("fixed_small") or β ("fixed_large"). At ᾱ_t = 1 the posterior is x0 itself.
    """
    a_t, a_s = float(alpha_bar_t), float(alpha_bar_s)
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
    if a_t >= 1.0:
        return 1.0, 0.0, 0.0
    beta = 1.0 - a_t / a_s
    c_x0 = a_s**0.5 * beta / (1 - a_t)
    c_xt = (1 - beta) ** 0.5 * (1 - a_s) / (1 - a_t)
    variance = beta * (1 - a_s) / (1 - a_t) if variance_type == "fixed_small" else beta
    return c_x0, c_xt, max(variance, 0.0) ** 0.5


def ddim_sigma(alpha_bar_t: float, alpha_bar_s: float, eta: float) -> float:
    """σ_t(η) of DDIM Eq. 16: η √((1-ᾱ_s)/(1-ᾱ_t)) √(1 - ᾱ_t/ᾱ_s); 0 at ᾱ_t = 1."""
    a_t, a_s = float(alpha_bar_t), float(alpha_bar_s)
    return float(eta) * max(_ratio(1 - a_s, 1 - a_t) * (1 - a_t / a_s), 0.0) ** 0.5


def scheduler_clip_range(scheduler) -> tuple[float, float] | None:
    """The scheduler's x̂0 clip range (MONAI's ``clip_sample`` + ``clip_sample_values``), None when it does not clip."""
    if not getattr(scheduler, "clip_sample", False):
        return None
    low, high = getattr(scheduler, "clip_sample_values", (-1.0, 1.0))
    return float(low), float(high)


class ReverseChain:
    """The reverse chain of a MONAI scheduler over ``num_inference_steps`` of its timesteps, DDPM or DDIM.

    The scheduler contributes its noise schedule (``alphas_cumprod``), ``prediction_type``, ``clip_sample`` (and
    range) and ``variance_type``; it knows nothing of networks, and neither does this class.

    Args:
        scheduler: a MONAI ``DDPMScheduler`` or ``DDIMScheduler``.
        num_inference_steps: respace the T training steps to this many (None = all T).
        eta: None = DDPM posterior steps; a float = DDIM steps with that stochasticity (0 = deterministic).
        timesteps: any strictly increasing training timesteps to visit instead of ``num_inference_steps``.
    """

    def __init__(
        self,
        scheduler,
        num_inference_steps: int | None = None,
        eta: float | None = None,
        timesteps: Sequence[int] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.num_train_timesteps = int(scheduler.num_train_timesteps)
        if timesteps is None:
            self.timesteps = respaced_timesteps(self.num_train_timesteps, num_inference_steps)
        else:
            self.timesteps = [int(t) for t in timesteps]
            if (
                not self.timesteps
                or any(b <= a for a, b in zip(self.timesteps, self.timesteps[1:]))
                or self.timesteps[0] < 0
                or self.timesteps[-1] >= self.num_train_timesteps
            ):
                raise ValueError(
                    f"timesteps must increase strictly within [0, {self.num_train_timesteps}), got {timesteps}"
                )
        alphas_cumprod = torch.as_tensor(scheduler.alphas_cumprod).double()
        if not bool(((alphas_cumprod > 0) & (alphas_cumprod <= 1)).all()) or bool((alphas_cumprod.diff() > 0).any()):
            raise ValueError("the scheduler's alphas_cumprod must be non-increasing and lie in (0, 1]")
        self.alpha_bar = torch.cat([alphas_cumprod[self.timesteps], torch.ones(1, dtype=torch.float64)])  # [-1] = 1
        self.prediction_type = str(getattr(scheduler, "prediction_type", "epsilon"))
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"scheduler prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        self.variance_type = str(getattr(scheduler, "variance_type", "fixed_small"))
        if self.variance_type not in VARIANCE_TYPES:
            raise ValueError(f"scheduler variance_type must be one of {VARIANCE_TYPES}, got {self.variance_type!r}")
        self.clip_range = scheduler_clip_range(scheduler)
        if eta is not None and float(eta) < 0:
            raise ValueError(f"eta must be >= 0 (or None for DDPM steps), got {eta}")
        self.eta = None if eta is None else float(eta)

    def __len__(self) -> int:
        return len(self.timesteps)

    def settings(self) -> dict:
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "num_inference_steps": len(self.timesteps),
            "step": "ddpm" if self.eta is None else "ddim",
            "eta": self.eta,
            "prediction_type": self.prediction_type,
            "clip_sample": None if self.clip_range is None else list(self.clip_range),
        }

    def timestep(self, index: int, batch_size: int, device=None) -> torch.Tensor:
        """(B,) training timestep of chain position ``index``, the network's time input."""
        return torch.full((int(batch_size),), self.timesteps[index], device=device, dtype=torch.long)

    def denoise(self, model_output: torch.Tensor, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂0, ε̂) in float64 at chain position ``index``: converted, x̂0 clipped, ε̂ re-derived from it."""
        a_t = float(self.alpha_bar[index])
        x = x.double()
        x0, eps = x0_and_eps(model_output.double(), x, a_t, self.prediction_type)
        if a_t >= 1.0:  # nothing left to remove: the sample is the clean image
            return x, torch.zeros_like(x)
        if self.clip_range is not None:
            x0 = x0.clamp(*self.clip_range)
            eps = eps_from_x0(x, x0, a_t)
        return x0, eps

    def step(
        self,
        model_output: torch.Tensor,
        x: torch.Tensor,
        index: int,
        noise: torch.Tensor | None = None,
        to_index: int | None = None,
    ) -> torch.Tensor:
        """x at chain position ``index`` -> position ``to_index`` (default ``index - 1``; -1 is the clean image).

        ``noise`` is z, needed when the step is stochastic (DDPM, or DDIM with η > 0) and ignored at the last step.
        """
        x0, eps = self.denoise(model_output, x, index)
        return self.step_from(x0, eps, x, index, noise, to_index)

    def step_from(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        x: torch.Tensor,
        index: int,
        noise: torch.Tensor | None = None,
        to_index: int | None = None,
    ) -> torch.Tensor:
        """:meth:`step` from an (x̂0, ε̂) pair instead of a network output: for samplers that edit x̂0 first (the
        inpainting sampler imposing the known image on x̂0 re-derives ε̂ with :func:`eps_from_x0`)."""
        to_index = index - 1 if to_index is None else int(to_index)
        if not -1 <= to_index < index:
            raise ValueError(f"a reverse step goes to a lower chain position, got {index} -> {to_index}")
        a_t, a_s = float(self.alpha_bar[index]), float(self.alpha_bar[to_index])
        x0, eps = x0.double(), eps.double()
        if self.eta is None:
            c_x0, c_xt, sigma = ddpm_coefficients(a_t, a_s, self.variance_type)
            out = c_x0 * x0 + c_xt * x.double()
        else:
            sigma = ddim_sigma(a_t, a_s, self.eta)
            out = a_s**0.5 * x0 + max(1 - a_s - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0 and to_index >= 0:
            if noise is None:
                raise ValueError("this step is stochastic: give its noise")
            out = out + sigma * noise.double()
        return out.to(x.dtype)

    def forward_noise(self, x0: torch.Tensor, index: int, noise: torch.Tensor) -> torch.Tensor:
        """q(x | x0) at chain position ``index``: √ᾱ x0 + √(1-ᾱ) noise; x0 itself at -1."""
        a = float(self.alpha_bar[index])
        if a >= 1.0:
            return x0.clone()
        return (a**0.5 * x0.double() + (1 - a) ** 0.5 * noise.double()).to(x0.dtype)

    def renoise(self, x: torch.Tensor, index: int, noise: torch.Tensor, to_index: int | None = None) -> torch.Tensor:
        """q(x_to | x_index) of the chain, to a higher position (default ``index + 1``): RePaint's jump back in time."""
        to_index = index + 1 if to_index is None else int(to_index)
        if not index < to_index < len(self.timesteps):
            raise ValueError(f"re-noising goes to a higher chain position, got {index} -> {to_index}")
        ratio = float(self.alpha_bar[to_index] / self.alpha_bar[index])
        return (ratio**0.5 * x.double() + max(1 - ratio, 0.0) ** 0.5 * noise.double()).to(x.dtype)
