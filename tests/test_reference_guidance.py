"""Multi-reference ILVR guidance (Krishna et al. Eqs. 3-5): the claims of the paper and of ILVR, checked on analytic
denoisers so that every number is known. The denoiser is the exact posterior mean of a Gaussian data distribution
N(z, sigma^2 I) (z a smooth image different from the reference): the "model" has its own idea of the image and the
guidance decides how much of the reference it must keep."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from pathosynth.diffusion.reference_guidance import (
    GuidanceReference,
    ReferenceGuidedSampler,
    low_pass,
    refine,
    resize_matrix,
)

T = 60
SCHEDULER = DDPMScheduler(num_train_timesteps=T, schedule="cosine")


class GaussianPriorDenoiser(torch.nn.Module):
    """eps of the exact posterior mean E[x0 | x_t] for x0 ~ N(z, sigma^2 I); it acts pixel by pixel."""

    def __init__(self, z: torch.Tensor, sigma: float = 0.3) -> None:
        super().__init__()
        self.z, self.var = z, sigma**2
        self.abar = SCHEDULER.alphas_cumprod

    def forward(self, x, t):
        a = self.abar[t].view(-1, *[1] * (x.ndim - 1)).to(x)
        x0 = self.z + self.var * a.sqrt() / (a * self.var + 1 - a) * (x - a.sqrt() * self.z)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()


def smooth(shape, seed):
    return low_pass(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), 2).clamp(-1, 1)


def downsample(x, factor):
    """The anti-aliased cubic downsampling by ``factor`` along every spatial axis."""
    for axis in range(2, x.ndim):
        length = x.shape[axis]
        x = torch.movedim(torch.movedim(x, axis, -1) @ resize_matrix(length, round(length / factor)).T, -1, axis)
    return x


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(1, 1, 48, 40), (1, 1, 12, 24, 24)])
def test_low_pass_is_an_antialiased_projection_in_2d_and_3d(shape):
    x = torch.randn(shape, dtype=torch.float64)
    for factor in (2, 4):
        once = low_pass(x, factor)
        assert torch.allclose(low_pass(once, factor), once, atol=1e-9)  # phi_N o phi_N = phi_N
        assert torch.allclose(
            low_pass(torch.full(shape, 0.7, dtype=torch.float64), factor), torch.tensor(0.7, dtype=torch.float64)
        )
        # the finest checkerboard is what aliasing would fold back; the anti-aliased filter removes it
        grids = torch.meshgrid(*[torch.arange(s) for s in shape[2:]], indexing="ij")
        checker = (-1.0) ** sum(grids).double()
        assert float(low_pass(checker[None, None], factor).abs().max()) < 0.05  # point subsampling would keep 1.0
        # the anti-aliased low-resolution image of phi_N(x) is exactly that of x
        assert torch.allclose(downsample(once, factor), downsample(x, factor), atol=1e-9)
    assert float(low_pass(x, 4).norm()) < float(low_pass(x, 2).norm()) < float(x.norm())  # larger N keeps less


@pytest.mark.parametrize("shape,factors", [((1, 1, 32, 32), (2, 4, 8)), ((1, 1, 8, 16, 16), (2, [1, 4, 4]))])
def test_one_reference_with_stop_step_0_shares_its_low_pass(shape, factors):
    """ILVR's defining property: guided down to the last step, phi_N(x_0) = phi_N(y). Tolerance: 1e-4 relative L2
    (float32 arithmetic; the plain down-then-up resizer of upstream ILVR misses by ~30 %, see low_pass_matrix)."""
    y, z = smooth(shape, 1), smooth(shape, 2)
    sampler = ReferenceGuidedSampler(SCHEDULER)
    for factor in factors:
        out = sampler(GaussianPriorDenoiser(z), shape, [GuidanceReference(y, factor, stop_step=0)], gens(3))
        assert relative(low_pass(out, factor), low_pass(y, factor)) < 1e-4
        assert relative(out, y) > 0.05  # ... while the detail is the model's own, not a copy of y


def test_a_reference_has_no_influence_where_its_weight_is_zero():
    """Eq. 5: W_s = 0 outside the patch. One refinement step with [anatomy, patch] differs from [anatomy] only inside
    the patch; over a whole sampling run with a network that mixes no pixels, swapping the patch image for another
    leaves every pixel outside the patch bit-identical and changes the inside."""
    shape = (1, 1, 32, 32)
    weight = torch.zeros(shape)
    weight[..., 8:20, 10:22] = 1.0
    inside = weight > 0
    x, anatomy, patch = torch.randn(shape), smooth(shape, 4), smooth(shape, 5)
    anatomy_ref = GuidanceReference(anatomy, 4)
    patch_ref = GuidanceReference(patch, 2, weight=weight)
    delta = refine(x, [(anatomy_ref, anatomy), (patch_ref, patch)]) - refine(x, [(anatomy_ref, anatomy)])
    assert torch.all(delta[~inside] == 0) and float(delta[inside].abs().max()) > 0.01

    sampler = ReferenceGuidedSampler(SCHEDULER, num_inference_steps=20)
    denoiser = GaussianPriorDenoiser(smooth(shape, 6))
    a = sampler(denoiser, shape, [GuidanceReference(patch, 2, weight=weight)], gens(7))
    b = sampler(denoiser, shape, [GuidanceReference(-patch, 2, weight=weight)], gens(7))
    assert torch.equal(a[~inside], b[~inside])
    assert float((a - b)[inside].abs().mean()) > 0.1


def test_larger_low_pass_factor_and_later_stop_step_give_weaker_adherence():
    """Measured: relative L2 distance of the output to the reference, N_s = 1, 2, 4, 8, 16 with a_s = 0, grows
    strictly (0.00, 0.47, 1.27, 1.42, 1.46 of ||y|| here); with N_s = 4 it grows with a_s = 0, 10, 30, T + 1
    (1.27, 1.33, 1.44, 1.47); a_s = T + 1 is unguided."""
    shape = (1, 1, 64, 64)
    y, z = smooth(shape, 11), smooth(shape, 12)
    sampler = ReferenceGuidedSampler(SCHEDULER)
    denoiser = GaussianPriorDenoiser(z)
    by_factor = [relative(sampler(denoiser, shape, [GuidanceReference(y, n, 0)], gens(5)), y) for n in (1, 2, 4, 8, 16)]
    assert by_factor[0] < 1e-5
    assert all(a < b for a, b in zip(by_factor, by_factor[1:])), by_factor
    by_stop = [relative(sampler(denoiser, shape, [GuidanceReference(y, 4, a)], gens(5)), y) for a in (0, 10, 30, T + 1)]
    assert all(a < b for a, b in zip(by_stop, by_stop[1:])), by_stop
    unguided = sampler(denoiser, shape, [GuidanceReference(y, 4, T + 1)], gens(5))
    assert torch.equal(
        unguided, sampler(denoiser, shape, [GuidanceReference(y, 4, 0, weight=torch.zeros(shape))], gens(5))
    )


def test_stop_step_convention_follows_eq_4():
    """Paper t = 1..T, scheduler index k = t - 1: the step from index k is guided when t = k + 1 >= a_s."""
    reference = GuidanceReference(torch.zeros(1, 1, 4, 4), 2, stop_step=10)
    assert reference.guides(9) and not reference.guides(8)
    assert all(GuidanceReference(torch.zeros(1, 1, 4, 4), 2, stop_step=0).guides(k) for k in range(T))


def test_a_sample_does_not_depend_on_its_batch():
    shape = (1, 1, 24, 24)
    refs = [smooth(shape, 20), smooth(shape, 21)]
    sampler = ReferenceGuidedSampler(SCHEDULER, num_inference_steps=15)
    denoiser = GaussianPriorDenoiser(smooth(shape, 22))
    alone = [sampler(denoiser, shape, [GuidanceReference(r, 4, 5)], gens(s)) for r, s in zip(refs, (1, 2))]
    together = sampler(denoiser, (2, 1, 24, 24), [GuidanceReference(torch.cat(refs), 4, 5)], gens(1, 2))
    assert torch.allclose(together, torch.cat(alone), atol=1e-6)
    with pytest.raises(ValueError, match="generator per sample"):
        sampler(denoiser, (2, 1, 24, 24), [], gens(1))
