"""EMIT-Diff stage 2 and synthesis: the ControlNet starts as the stage-1 encoder and leaves its prediction unchanged,
learns to follow the edge map (image edges OR label boundaries) with the UNet frozen, classifier-free guidance keeps its
convention, and whole-volume synthesis depends on the seed only. Tiny networks on phantom slices; seconds on one
core."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from pathosynth.data.acdc import ACDC_LABELS
from pathosynth.data.cases import load_cases
from pathosynth.diffusion.guided_ddim import GuidedDDIMSampler
from pathosynth.diffusion.latent import PIXEL_STATS, DiffusionSpace
from pathosynth.diffusion.text_edge import EdgeControlPrepareBatch, FrozenUNetControlNetInferer
from pathosynth.io.nifti import read_nifti
from pathosynth.networks.edge_maps import EdgeCondition, label_boundaries
from pathosynth.networks.edges import canny_edges
from pathosynth.networks.text_controlnet import TextConditionedUNet, controlnet_from_unet, encoder_tensor_names, freeze
from pathosynth.synthesis.slice_grid import SliceGrid
from pathosynth.synthesis.text_edge import TextEdgeSynthesizer
from pathosynth.text.encoders import build_text_encoder
from pathosynth.text.prompts import CasePrompts
from pathosynth.text.vocabulary import PromptVocabulary

FOV, SIZE = (64, 64), (32, 32)
SIZES = dict(
    spatial_dims=2,
    in_channels=1,
    channels=[16, 32],
    attention_levels=[False, True],
    num_res_blocks=1,
    num_head_channels=8,
    norm_num_groups=8,
    with_conditioning=True,
    cross_attention_dim=16,
)
PROMPTS = [
    "MRI, heart, normal",
    "MRI, heart, dilated cardiomyopathy",
    "MRI, heart, hypertrophic cardiomyopathy",
    "MRI, heart, myocardial infarction",
]
PHRASES = ["enhanced contrast", "high resolution"]


def _denoiser(seed: int = 0) -> TextConditionedUNet:
    """A stand-in for a trained stage-1 model: every layer re-initialised (MONAI zero-initialises the UNet's output
    convolution, so a fresh UNet predicts exactly 0 whatever its inputs)."""
    torch.manual_seed(seed)
    vocab = PromptVocabulary.build(PROMPTS, PHRASES)
    network = TextConditionedUNet(
        DiffusionModelUNet(out_channels=1, **SIZES), build_text_encoder(vocab, dim=16, num_layers=1, num_heads=2)
    )
    for module in network.modules():
        if module is not network and callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
    return freeze(network)


def _controlnet(denoiser) -> ControlNet:
    torch.manual_seed(1)
    return controlnet_from_unet(
        ControlNet(conditioning_embedding_in_channels=1, conditioning_embedding_num_channels=[8], **SIZES), denoiser
    )


@pytest.fixture(scope="module")
def slices(acdc_phantom_dir):
    """Phantom (image in [0, 1], label, prompt) slices on the 32x32 model grid, as training preprocesses them."""
    images, labels, prompts = [], [], []
    for case in load_cases(acdc_phantom_dir, labels=ACDC_LABELS):
        image, label = read_nifti(case["image"])[0], read_nifti(case["label"])[0]
        grid = SliceGrid(image.shape[:2], FOV, SIZE)
        images.append(grid.to_model((image - image.min()) / (image.max() - image.min()), "area"))
        labels.append(grid.to_model(label, "nearest"))
        prompts += [CasePrompts()(case)] * image.shape[2]
    return torch.cat(images), torch.cat(labels), prompts


def test_controlnet_starts_as_a_copy_of_the_unet_encoder():
    denoiser = _denoiser()
    controlnet = _controlnet(denoiser)
    unet_state, cn_state = denoiser.unet.state_dict(), controlnet.state_dict()
    copied = encoder_tensor_names(controlnet)
    assert any(k.startswith("down_blocks.1.attentions") for k in copied) and any(
        k.startswith("middle_block") for k in copied
    )
    assert {"conv_in.conv.weight", "time_embed.0.weight"} <= set(copied)
    assert all(torch.equal(cn_state[k], unet_state[k]) for k in copied)
    # what is not copied is the ControlNet's own: its condition embedding and the zero convolutions
    zero = [
        k
        for k in cn_state
        if k.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out"))
    ]
    assert zero and all(not cn_state[k].any() for k in zero)
    with pytest.raises(ValueError, match="does not match the UNet"):
        controlnet_from_unet(
            ControlNet(**{**SIZES, "channels": [16, 48]}, conditioning_embedding_num_channels=[8]), denoiser
        )


def test_zero_initialised_controlnet_leaves_the_stage1_prediction_unchanged(slices):
    denoiser = _denoiser()
    controlnet = _controlnet(denoiser)
    images, labels, prompts = slices
    torch.manual_seed(2)
    x = torch.randn(4, 1, *SIZE)
    context = denoiser.encode_text(denoiser.tokenize(prompts[:4]))
    edges = EdgeCondition()(images[:4], labels[:4])
    with torch.no_grad():
        alone = GuidedDDIMSampler.predict(denoiser, x, 15, context)
        with_control = GuidedDDIMSampler.predict(denoiser, x, 15, context, controlnet, edges)
    assert alone.abs().mean() > 0.05  # the stand-in stage-1 model predicts something
    assert torch.equal(alone, with_control)


def _train_controlnet(denoiser, controlnet, slices, steps: int = 4):
    """A few stage-2 steps through the bundle's pieces (prepare-batch, inferer, MSE on the noise)."""
    scheduler = DDPMScheduler(num_train_timesteps=20)
    space = DiffusionSpace(None, **{"shift": PIXEL_STATS["latent_shift"], "scale": PIXEL_STATS["latent_scale"]})
    prepare = EdgeControlPrepareBatch(20, space, denoiser, EdgeCondition(), p_uncond=0.5)
    inferer = FrozenUNetControlNetInferer(scheduler, denoiser)
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-3)
    images, labels, prompts = slices
    torch.manual_seed(3)
    controlnet.train()
    for _ in range(steps):
        pick = torch.randint(0, len(images), (8,))
        batch = {"image": images[pick], "label": labels[pick], "prompt": [prompts[i] for i in pick]}
        x0, noise, args, kwargs = prepare(batch)
        loss = torch.nn.functional.mse_loss(inferer(x0, controlnet, *args, **kwargs), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return freeze(controlnet)


def test_trained_controlnet_follows_the_edge_map_and_the_unet_stays_frozen(slices):
    denoiser = _denoiser()
    before = {k: v.clone() for k, v in denoiser.state_dict().items()}
    controlnet = _controlnet(denoiser).eval()
    images, labels, prompts = slices
    edges = EdgeCondition()(images[:2], labels[:2])
    other = edges.flip(-1)  # the same edges, mirrored: another structure to follow
    sampler = GuidedDDIMSampler(DDPMScheduler(num_train_timesteps=20), num_inference_steps=4, guidance_scale=3.0)
    context = denoiser.encode_text(denoiser.tokenize(prompts[:2]))
    null = denoiser.encode_text(denoiser.tokenize(["", ""]))

    def sample(cond):
        gens = [torch.Generator().manual_seed(k) for k in range(2)]
        return sampler(denoiser, context, null, (1, *SIZE), gens, controlnet, cond)

    assert torch.equal(sample(edges), sample(other))  # zero-initialised: the edges have no effect yet
    controlnet = _train_controlnet(denoiser, controlnet, slices)
    assert all(torch.equal(v, before[k]) for k, v in denoiser.state_dict().items())  # UNet and text encoder frozen
    first = sample(edges)
    assert torch.equal(first, sample(edges))  # same generators, same edges: the same sample, bit for bit
    assert (first - sample(other)).abs().mean() > 1e-5  # another edge map: another sample (0 if the edges were ignored)


def test_guidance_scale_one_is_the_conditional_and_zero_the_unconditional_prediction(slices):
    denoiser = _denoiser()
    controlnet = _train_controlnet(denoiser, _controlnet(denoiser), slices, steps=2)
    images, labels, prompts = slices
    x, t = torch.randn(2, 1, *SIZE, generator=torch.Generator().manual_seed(4)), 11
    context = denoiser.encode_text(denoiser.tokenize(prompts[:2]))
    null = denoiser.encode_text(denoiser.tokenize(["", ""]))
    edges = EdgeCondition()(images[:2], labels[:2])
    scheduler = DDPMScheduler(num_train_timesteps=20)
    with torch.no_grad():
        conditional = GuidedDDIMSampler.predict(denoiser, x, t, context, controlnet, edges)
        unconditional = GuidedDDIMSampler.predict(denoiser, x, t, null, controlnet, edges)

        def guided(w):
            return GuidedDDIMSampler(scheduler, 4, guidance_scale=w).guided_noise(
                denoiser, x, t, context, null, controlnet, edges
            )

        assert not torch.allclose(conditional, unconditional)  # the prompt matters
        assert torch.equal(guided(1.0), conditional)
        assert torch.equal(guided(0.0), unconditional)
        # w > 1 evaluates both branches in one batch: the formula holds exactly on that batch's predictions, and
        # batching changes the predictions only by float rounding (oneDNN picks kernels by batch size)
        eps_null, eps_prompt = GuidedDDIMSampler.predict(
            denoiser, torch.cat([x, x]), t, torch.cat([null, context]), controlnet, torch.cat([edges, edges])
        ).chunk(2)
        assert torch.allclose(guided(9.0), eps_null + 9.0 * (eps_prompt - eps_null), atol=1e-6)
        assert torch.allclose(eps_null, unconditional, atol=1e-4) and torch.allclose(eps_prompt, conditional, atol=1e-4)


def test_edge_condition_is_canny_edges_or_every_class_boundary():
    label = torch.zeros(1, 1, 16, 16)
    label[..., 4:12, 4:12] = 1
    label[..., 6:10, 6:10] = 3
    boundary = label_boundaries(label)
    assert boundary[0, 0, 3:13, 3:13].any() and not boundary[0, 0, :2].any()  # far from any class border: no edge
    assert boundary[0, 0, 8, 4] == 1 and boundary[0, 0, 8, 3] == 1  # both sides of the 0|1 border
    assert boundary[0, 0, 8, 6] == 1 and boundary[0, 0, 8, 5] == 1  # both sides of the 1|3 border
    assert boundary[0, 0, 8, 8] == 0  # inside the LV
    image = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    canny = canny_edges(image, 0.1, 0.2, 1.0)
    both = EdgeCondition(0.1, 0.2, 1.0)(image, label)
    assert torch.equal(both, torch.maximum(canny, boundary))
    assert torch.equal(EdgeCondition(image_edges=False)(image, label), boundary)
    assert torch.equal(EdgeCondition(0.1, 0.2, 1.0, mask_boundaries=False)(image, None), canny)


def test_synthesis_depends_on_the_seed_not_on_the_slice_batch(acdc_phantom_dir, slices):
    denoiser = _denoiser()
    controlnet = _train_controlnet(denoiser, _controlnet(denoiser), slices, steps=2)
    case = load_cases(acdc_phantom_dir, labels=ACDC_LABELS, max_cases=1)[0]
    image, label = read_nifti(case["image"])[0], read_nifti(case["label"])[0]

    def synthesizer(batch):
        return TextEdgeSynthesizer(
            denoiser,
            controlnet,
            GuidedDDIMSampler(DDPMScheduler(num_train_timesteps=20), 3, 9.0),
            EdgeCondition(),
            CasePrompts(),
            PHRASES,
            DiffusionSpace(None, 0.5, 2.0),
            FOV,
            SIZE,
            slice_batch_size=batch,
        )

    one = synthesizer(1).synthesize(image, label, "MRI, heart, normal", seed=5)
    four = synthesizer(4).synthesize(image, label, "MRI, heart, normal", seed=5)
    other = synthesizer(4).synthesize(image, label, "MRI, heart, normal", seed=6)
    assert one.image.shape == label.shape and one.image.dtype == image.dtype
    assert np.allclose(one.image, four.image, atol=1e-5) and one.info["slice_prompts"] == four.info["slice_prompts"]
    assert not np.allclose(one.image, other.image, atol=1e-3)
    assert np.array_equal(one.label, label)  # the label is reused unchanged
    assert all(p.startswith("MRI, heart, normal, ") and p.split(", ")[-1] in PHRASES for p in one.info["slice_prompts"])
    assert one.info["network_evaluations"] == label.shape[2] * 3 * 2  # slices x DDIM steps x (prompt + null branch)
