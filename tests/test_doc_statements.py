"""Numbers the bundle docs state about the code's maths, recomputed from the code.

- label_guided_latent_diffusion: with T = 100 and the cosine schedule, an ε error at the first reverse step enters x̂0
  multiplied by √((1 − ᾱ_T)/ᾱ_T) ≈ 2,000 and x_{T−1} by ≈ 32 (the 1/√(1 − β_T) ≈ 32 factor is the last one only).
- reference_guided_ddpm: ILVR's plain down-then-up resizer U D misses the reference's low-resolution image by
  28–34 % on 64 × 64 white noise for N = 2–16; our projection φ_N = U (D U)⁻¹ D hits it exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from pathosynth.diffusion.reference_guidance import low_pass_matrix, resize_matrix


def test_first_reverse_step_amplification_of_the_fqcdm_schedule():
    scheduler = DDPMScheduler(100, schedule="cosine")
    abar, beta = scheduler.alphas_cumprod.double(), scheduler.betas.double()
    t = 99
    assert beta[t].item() == pytest.approx(0.999)
    assert abar[t].item() == pytest.approx(2.4e-7, rel=0.05)
    eps_to_x0 = math.sqrt((1 - abar[t]) / abar[t])
    assert 1900 < eps_to_x0 < 2100  # "≈ 2,000"
    posterior_x0_coefficient = beta[t] * abar[t - 1].sqrt() / (1 - abar[t])
    assert 30 < (posterior_x0_coefficient * eps_to_x0).item() < 34  # "x_{T−1} by ≈ 32"


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_plain_resizer_misses_the_low_resolution_image_on_white_noise(factor):
    length = 64
    down, up = resize_matrix(length, length // factor), resize_matrix(length // factor, length)
    noise = torch.randn(20, length, length, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def low_res_error(projection):
        filtered = projection @ noise @ projection.T
        target = down @ noise @ down.T
        return (
            ((down @ filtered @ down.T - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1)).mean().item()
        )

    assert 0.275 <= low_res_error(up @ down) <= 0.345  # "28–34 %"
    assert low_res_error(low_pass_matrix(length, factor)) < 1e-10
