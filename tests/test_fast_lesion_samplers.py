"""Few-step lesion samplers (issue 18): where the known image enters, what each costs in network calls, and that the
background stays the original bit for bit whatever the sampler."""

from __future__ import annotations

import json

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from pathosynth.diffusion.clean_context import CleanContextDiffusionInferer, clean_context_input
from pathosynth.diffusion.inpainting import LesionInpaintingSampler


class RecordingNet(torch.nn.Module):
    """A denoiser that depends on input and time, counts its calls and keeps every input it saw."""

    def __init__(self, out_channels=None):
        super().__init__()
        self.inputs, self.out_channels = [], out_channels

    def forward(self, x, timesteps):
        self.inputs.append(x.clone())
        x = x[:, : self.out_channels] if self.out_channels else x
        return 0.3 * torch.tanh(x) + 0.01 * timesteps.float().view(-1, *([1] * (x.dim() - 1)))


def _case(channels=2, seed=0, size=(16, 16, 4)):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, channels, *size, generator=gen) * 2 - 1
    mask = torch.zeros_like(image)
    mask[:, 0, 4:9, 4:10, 1:3] = 1
    mask[:, -1, 9:12, 5:8, 2:4] = 1
    return image, mask


def _sample(sampler, image, mask, net=None, seed=1):
    net = net or RecordingNet(image.shape[1])
    return sampler(image, net, mask=mask, generators=[torch.Generator().manual_seed(seed)]), net


@pytest.mark.parametrize(
    "steps,jumps,calls",
    [(25, (1, 1), 25), (50, (1, 1), 50), (20, (2, 2), 38), (None, (2, 2), 598), (None, (5, 5), 1480)],
)
def test_network_calls_per_crop_are_counted(steps, jumps, calls):
    """Issue 18's budget: 25 respaced steps without jumps = 25 calls; the paper's 300 steps with (5, 5) jumps = 1,480,
    (2, 2) = 598; 20 steps with (2, 2) = 38. Declared before sampling, counted while sampling, and equal to the calls
    the network actually received."""
    image, mask = _case(channels=1, size=(4, 4, 2))
    sampler = LesionInpaintingSampler(DDPMScheduler(300, schedule="cosine"), steps, *jumps)
    _, net = _sample(sampler, image, mask)
    assert sampler.network_evaluations_per_sample == sampler.last_network_evaluations == len(net.inputs) == calls
    assert sampler.settings()["network_evaluations_per_sample"] == calls


@pytest.mark.parametrize("known_region", ["noised", "x0", "clean"])
@pytest.mark.parametrize(
    "eta,steps,jumps", [(None, 5, (1, 1)), (0.0, 5, (1, 1)), (0.5, 6, (2, 2)), (1.0, None, (2, 3))]
)
def test_background_is_the_original_for_every_sampler(known_region, eta, steps, jumps):
    """Every few-step candidate returns the known image outside the mask exactly and synthesises inside it."""
    image, mask = _case()
    sampler = LesionInpaintingSampler(
        DDPMScheduler(20, schedule="cosine"), steps, *jumps, eta=eta, known_region=known_region
    )
    out, net = _sample(sampler, image, mask)
    keep = mask == 0
    assert torch.equal(out[keep], image[keep])
    assert not torch.allclose(out[~keep], image[~keep])
    assert len(net.inputs) == sampler.network_evaluations_per_sample


def test_known_x0_keeps_the_background_noise_coherent_under_deterministic_ddim():
    """known_region="x0" replaces x̂0's background by the known image and re-derives ε̂, so under DDIM η = 0 the
    background of every network input is √ᾱ_t·known + √(1-ᾱ_t)·z with z the *initial* noise (one coherent trajectory),
    while Eq. 1 ("noised") draws fresh background noise at every step."""
    image, mask = _case()
    scheduler = DDPMScheduler(20, schedule="cosine")
    keep = mask == 0
    z = torch.randn(image.shape, generator=torch.Generator().manual_seed(1))  # the sampler's first draw
    for known_region, coherent in (("x0", True), ("noised", False)):
        sampler = LesionInpaintingSampler(scheduler, 6, 1, 1, eta=0.0, known_region=known_region)
        _, net = _sample(sampler, image, mask)
        matches = []
        for position, seen in zip(range(len(sampler.timesteps) - 1, -1, -1), net.inputs):
            a = float(sampler.chain.alpha_bar[position])
            expected = a**0.5 * image + (1 - a) ** 0.5 * z
            matches.append(torch.allclose(seen[keep], expected[keep], atol=1e-5))
        assert all(matches) if coherent else not any(matches[1:]), known_region


def test_clean_context_input_is_shared_by_training_and_sampling():
    """The clean-context model sees x_t inside the lesion, the clean image outside, and the masks: the sampler builds
    that input at every step (jumps included) as the training inferer does."""
    image, mask = _case()
    sampler = LesionInpaintingSampler(DDPMScheduler(20, schedule="cosine"), 6, 2, 2, known_region="clean")
    _, net = _sample(sampler, image, mask, RecordingNet(out_channels=2))
    keep = (mask == 0).expand_as(image)
    for seen in net.inputs:
        assert seen.shape[1] == 4
        assert torch.equal(seen[:, :2][keep], image[keep]) and torch.equal(seen[:, 2:], mask)
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(3))
    timesteps = torch.tensor([7])
    recorder = RecordingNet(out_channels=2)
    inferer = CleanContextDiffusionInferer(sampler.scheduler)
    inferer(image, recorder, noise, timesteps, condition=mask, mode="concat")
    noisy = sampler.scheduler.add_noise(image, noise, timesteps)
    assert torch.equal(recorder.inputs[0], clean_context_input(noisy, image, mask))
    assert torch.equal(recorder.inputs[0][:, :2][keep], image[keep])
    with pytest.raises(ValueError, match="lesion masks"):
        inferer(image, recorder, noise, timesteps)


def test_unknown_known_region_is_refused():
    with pytest.raises(ValueError, match="known_region"):
        LesionInpaintingSampler(DDPMScheduler(20), 5, known_region="latent")


def _sampler_of(overlays, **overrides):
    from monai.bundle import ConfigParser

    from conftest import bundle_configs

    parser = ConfigParser()
    parser.read_config(bundle_configs("lesion_inpainting", "inference.json", *overlays))
    parser.update(overrides)
    return parser.get_parsed_content("sampler")


def test_paper_sampler_overlay_selects_1480_calls_and_stays_the_default():
    """inference_paper_sampler.json names the paper's sampler explicitly (300 steps, (5, 5) jumps, DDPM steps, Eq. 1),
    whatever the keys before it; inference.json's default is still that sampler (no measurement has moved it yet)."""
    explicit = _sampler_of(["inference_paper_sampler.json"])
    over_fast = _sampler_of(["inference_clean_context.json", "inference_paper_sampler.json"])
    default = _sampler_of([])
    for sampler in (explicit, default):
        assert sampler.network_evaluations_per_sample == 1480
        assert (sampler.eta, sampler.known_region, len(sampler.timesteps)) == (None, "noised", 300)
    assert over_fast.network_evaluations_per_sample == 1480 and over_fast.known_region == "noised"
    assert _sampler_of(["inference_clean_context.json"]).network_evaluations_per_sample == 25


@pytest.mark.slow
def test_clean_context_variant_trains_and_synthesises_with_the_background_exact(phantom_dir, tmp_path):
    """The trained few-step variant through `python -m monai.bundle run` (smoke scale): training records
    known_region="clean" in the checkpoint, synthesis keeps the output contract with a bit-exact background."""
    from test_lesion_inpainting_bundle import check_synthetic_dataset

    from conftest import run_bundle

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    run_bundle(
        "training",
        "lesion_inpainting",
        ["train.json", "train_clean_context.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": ckpt, "output_dir": ckpt / "logs"},
    )
    saved = torch.load(ckpt / "lefusion_j_clean_context.pt", weights_only=True)["metadata"]
    assert saved["known_region"] == "clean" and saved["variant"] == "lefusion_j_clean_context"
    run_bundle(
        "inference",
        "lesion_inpainting",
        ["inference.json", "inference_clean_context.json", "smoke.json"],
        {
            "dataset_dir": phantom_dir,
            "ckpt_dir": ckpt,
            "output_dir": out,
            "max_cases": 2,
            "num_inference_steps": 5,
            "jump_length": 1,
            "jump_n_sample": 1,
        },
    )
    entries = check_synthetic_dataset(out, phantom_dir)
    record = json.loads((out / entries[0]["provenance"]).read_text())["synthesis"]
    assert record["known_region"] == "clean" and record["network_evaluations_per_sample"] == 5
