"""The inpainting sampler keeps LeFusion's Eq. 1 and RePaint's resampling schedule."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from pathosynth.diffusion.inpainting import LesionInpaintingSampler, network_evaluations, resampling_schedule
from pathosynth.diffusion.steps import respaced_timesteps


class NoisePredictor(torch.nn.Module):
    """A stand-in denoiser that depends on its input and time, and counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, timesteps):
        self.calls += 1
        return 0.3 * torch.tanh(x) + 0.01 * timesteps.float().view(-1, *([1] * (x.dim() - 1)))


def _case(channels=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, channels, 16, 16, 4, generator=gen) * 2 - 1
    mask = torch.zeros_like(image)
    mask[:, 0, 4:9, 4:10, 1:3] = 1
    mask[:, -1, 9:12, 5:8, 2:4] = 1
    return image, mask


def _repaint_schedule_by_blocks(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's visiting order (official ``get_schedule_jump`` with n_sample = 1), re-derived as blocks: the chain
    descends T-1 .. 0 one step at a time; on arriving at a jump point j (j = 0, L, 2L, ... with j < T - L) it climbs
    to j + L and descends back to j, ``jump_n_sample - 1`` times, before going on; -1 is the clean image."""
    points = set(range(0, num_steps - jump_length, jump_length))
    order = []
    for t in range(num_steps - 1, -1, -1):
        order.append(t)
        if t in points:
            for _ in range(jump_n_sample - 1):
                order += list(range(t + 1, t + jump_length + 1)) + list(range(t + jump_length - 1, t - 1, -1))
    return order + [-1]


@pytest.mark.parametrize(
    "num_steps,jump_length,jump_n_sample",
    [(300, 5, 5), (300, 2, 2), (250, 10, 10), (20, 3, 4), (10, 1, 3), (7, 5, 2), (6, 6, 3), (1, 1, 1)],
)
def test_resampling_schedule_is_repaints(num_steps, jump_length, jump_n_sample):
    """Visit order equals the independent re-derivation; calls = T + (jump points) (n - 1) L."""
    path = resampling_schedule(num_steps, jump_length, jump_n_sample)
    assert path == _repaint_schedule_by_blocks(num_steps, jump_length, jump_n_sample)
    points = len(range(0, num_steps - jump_length, jump_length))
    extra = points * (jump_n_sample - 1) * jump_length
    assert network_evaluations(num_steps, jump_length, jump_n_sample) == num_steps + extra


def test_official_network_call_counts():
    """Official code: T=300 with jumps (5,5) costs 1,480 calls per case, (2,2) costs 598, no jumps costs T; RePaint's
    own setting (250 steps, jumps 10/10) costs 2,410."""
    assert network_evaluations(300, 5, 5) == 1480
    assert network_evaluations(300, 2, 2) == 598
    assert network_evaluations(300, 1, 1) == 300
    assert network_evaluations(250, 10, 10) == 2410


def test_respacing_keeps_endpoints():
    steps = respaced_timesteps(300, 25)
    assert steps[0] == 0 and steps[-1] == 299 and len(steps) == 25
    assert respaced_timesteps(300, None) == list(range(300))


@pytest.mark.parametrize("eta", [None, 0.0, 1.0])
@pytest.mark.parametrize("steps,jumps", [(None, (1, 1)), (6, (2, 2))])
def test_background_is_the_original_and_calls_are_counted(eta, steps, jumps):
    """Eq. 1: outside the lesion mask the output is exactly the input; the sampler reports its network calls."""
    image, mask = _case()
    sampler = LesionInpaintingSampler(DDPMScheduler(20, schedule="cosine"), steps, *jumps, eta=eta)
    net = NoisePredictor()
    out = sampler(image, net, mask=mask, generators=[torch.Generator().manual_seed(1)])
    keep = mask == 0
    assert torch.equal(out[keep], image[keep])
    assert not torch.allclose(out[~keep], image[~keep])
    assert net.calls == sampler.last_network_evaluations == sampler.network_evaluations_per_sample


def test_same_generator_same_sample_whatever_the_batch():
    """Reproducibility contract: a case's sample depends on its generator only, not on its batch mates."""
    image, mask = _case()
    other, other_mask = _case(seed=5)
    sampler = LesionInpaintingSampler(DDPMScheduler(20, schedule="cosine"), 5, 2, 2)
    alone = sampler(image, NoisePredictor(), mask=mask, generators=[torch.Generator().manual_seed(3)])
    batch = sampler(
        torch.cat([other, image]),
        NoisePredictor(),
        mask=torch.cat([other_mask, mask]),
        generators=[torch.Generator().manual_seed(9), torch.Generator().manual_seed(3)],
    )
    assert torch.equal(alone[0], batch[1])


def test_without_background_replacement_the_background_changes():
    """Cond-Diffusion baseline: no Eq. 1 replacement, so the whole crop is generated."""
    image, mask = _case(channels=1)
    sampler = LesionInpaintingSampler(DDPMScheduler(20, schedule="cosine"), None, 1, 1, replace_background=False)
    out = sampler(image, NoisePredictor(), mask=mask, generators=[torch.Generator().manual_seed(0)])
    assert not torch.allclose(out[mask == 0], image[mask == 0])


def test_ddpm_step_matches_monai_scheduler():
    """The sampler's full-length DDPM posterior step equals MONAI's DDPMScheduler.step (same noise draw)."""
    scheduler = DDPMScheduler(50, schedule="cosine", clip_sample=True)
    scheduler.set_timesteps(50)
    sampler = LesionInpaintingSampler(scheduler, None, 1, 1)
    x = torch.randn(1, 1, 8, 8, 2, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(1, 1, 8, 8, 2, generator=torch.Generator().manual_seed(1))
    for t in (49, 20, 1):
        expected, _ = scheduler.step(eps, t, x, generator=torch.Generator().manual_seed(2))
        noise = torch.randn(eps.shape, generator=torch.Generator().manual_seed(2))
        ours = sampler.chain.step(eps, x, t, noise)
        assert torch.allclose(ours, expected, atol=1e-5), t


@pytest.mark.parametrize("clip", [True, False])
def test_scheduler_clip_sample_decides_clipping(clip):
    """Issue 18: the bundle's scheduler ``clip_sample`` key had no effect (the sampler always clipped). A denoiser whose
    x̂0 leaves [-1, 1] now gives a clipped DDIM result only when the scheduler clips."""
    scheduler = DDPMScheduler(20, schedule="cosine", clip_sample=clip)
    sampler = LesionInpaintingSampler(scheduler, 5, 1, 1, eta=0.0, replace_background=False)
    image, mask = _case(channels=1)
    out = sampler(image, lambda x, t: -3 * torch.ones_like(x), mask=mask, generators=[torch.Generator().manual_seed(0)])
    assert sampler.settings()["clip_sample"] == ([-1.0, 1.0] if clip else None)
    assert (out.abs().max() <= 1.0) == clip


def test_mask_shape_must_match():
    image, mask = _case()
    sampler = LesionInpaintingSampler(DDPMScheduler(10), None, 1, 1)
    with pytest.raises(ValueError, match="mask shape"):
        sampler(image, NoisePredictor(), mask=mask[:, :1])
