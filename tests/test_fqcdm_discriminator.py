"""FQCDM dual-branch discriminator (Sec. 3.4, Eqs. 11-17), its Canny edges, and the adaptive lambda (Eq. 7)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from pathosynth.losses.adversarial import adaptive_adversarial_weight, hinge_discriminator_loss, hinge_generator_loss
from pathosynth.networks.discriminators import DualBranchDiscriminator
from pathosynth.networks.edges import canny_edges


def _square(size: int = 64, lo: int = 16, hi: int = 48) -> torch.Tensor:
    image = torch.zeros(1, 1, size, size)
    image[..., lo:hi, lo:hi] = 1.0
    return image


def _smooth_phantom(size: int = 96) -> np.ndarray:
    """A blurred heart-like phantom: an ellipse, a brighter disc, a gentle intensity ramp."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    image = 0.8 * ((((yy - 50) / 30) ** 2 + ((xx - 44) / 20) ** 2) < 1)
    image = image + 0.5 * (((yy - 40) ** 2 + (xx - 60) ** 2) < 15**2)
    image = image + 0.2 * np.sin(xx / 7.0)
    return ndi.gaussian_filter(image, 1.5)


def _small_discriminator(**kwargs) -> DualBranchDiscriminator:
    torch.manual_seed(0)
    return DualBranchDiscriminator(channels=8, edge_features=8, edge_channels=4, **kwargs).eval()


# --- Canny -------------------------------------------------------------------------------------------


def test_canny_finds_the_square_boundary_and_nothing_in_flat_regions():
    edges = canny_edges(_square(), 0.1, 0.2)
    assert edges.shape == (1, 1, 64, 64) and edges.dtype == torch.float32
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    e = edges[0, 0]
    boundary_band = torch.zeros_like(e, dtype=torch.bool)
    boundary_band[14:50, 14:50] = True
    boundary_band[18:46, 18:46] = False
    assert e[~boundary_band].sum() == 0, "edges away from the boundary (flat inside or outside)"
    # every side of the square is traced along its whole straight part
    for side in (e[15:17, 20:44], e[47:49, 20:44], e[20:44, 15:17].t(), e[20:44, 47:49].t()):
        assert (side.sum(dim=0) >= 1).all()
    # thin: one pixel across each side
    assert e[20:44, 10:32].sum(dim=1).eq(1).all() and e[10:32, 20:44].sum(dim=0).eq(1).all()


def test_canny_agrees_with_skimage_on_a_smooth_image():
    """Same smoothing/Sobel as skimage; only NMS differs (4 directions vs interpolation) -> a pixel at most."""
    skimage_feature = pytest.importorskip("skimage.feature")
    image = _smooth_phantom()
    for sigma in (1.0, 2.0):
        reference = skimage_feature.canny(image, sigma=sigma, low_threshold=0.05, high_threshold=0.15)
        ours = canny_edges(torch.from_numpy(image)[None, None].float(), 0.05, 0.15, sigma, relative=False)
        ours = ours[0, 0].numpy().astype(bool)
        dice = 2 * (reference & ours).sum() / (reference.sum() + ours.sum())
        near = ndi.binary_dilation(ours, np.ones((3, 3)))
        near_reference = ndi.binary_dilation(reference, np.ones((3, 3)))
        assert dice > 0.95
        assert (reference & near).sum() / reference.sum() > 0.99
        assert (ours & near_reference).sum() / ours.sum() > 0.99


def test_relative_thresholds_ignore_the_intensity_range():
    """A [0, 1] slice and its [-1, 1] copy have the same edges (the default convention)."""
    image = torch.from_numpy(_smooth_phantom(64)).float()[None, None]
    image = (image - image.min()) / (image.max() - image.min())
    assert torch.equal(canny_edges(image, 0.1, 0.3), canny_edges(2 * image - 1, 0.1, 0.3))


def test_hysteresis_keeps_weak_edges_only_when_connected_to_strong_ones():
    """A boundary fading from strong to weak is traced to its end; an equally weak lone boundary is not."""
    rows = torch.arange(64, dtype=torch.float32)
    contrast = 1.0 - 0.7 * ((rows - 8) / 48).clamp(0, 1)  # 1.0 above row 8, 0.3 below row 56
    image = torch.zeros(1, 1, 64, 64)
    image[..., :, 20:] = contrast[:, None]
    image[..., :, 45:] += 0.3  # a lone step as weak as the faded end of the first one
    edges = canny_edges(image, 0.1, 0.5)[0, 0]
    assert edges[2:62, 18:22].sum(dim=1).ge(1).all(), "weak part connected to the strong part must survive"
    assert edges[:, 40:].sum() == 0, "isolated weak edge must be dropped"
    assert edges[:, 23:40].sum() == 0
    lowered = canny_edges(image, 0.1, 0.25)[0, 0]  # the lone step becomes strong
    assert lowered[2:62, 43:47].sum(dim=1).ge(1).all()


def test_canny_is_per_image_and_per_channel_in_a_batch():
    square, phantom = _square(), torch.from_numpy(_smooth_phantom(64)).float()[None, None]
    batch = torch.cat([torch.cat([square, 5 * phantom], 1), torch.cat([phantom, square], 1)])
    edges = canny_edges(batch, 0.1, 0.2)
    for b in range(2):
        for c in range(2):
            assert torch.equal(edges[b : b + 1, c : c + 1], canny_edges(batch[b : b + 1, c : c + 1], 0.1, 0.2))


def test_flat_images_have_no_edges():
    flat = torch.cat([torch.zeros(1, 1, 32, 32), torch.full((1, 1, 32, 32), 0.7)])
    assert canny_edges(flat, 0.0, 0.0).sum() == 0
    assert canny_edges(flat, 0.1, 0.2, relative=False).sum() == 0


def test_canny_input_checks():
    with pytest.raises(ValueError, match="B, C, H, W"):
        canny_edges(torch.zeros(32, 32), 0.1, 0.2)
    with pytest.raises(ValueError, match="low_threshold"):
        canny_edges(torch.zeros(1, 1, 32, 32), 0.3, 0.2)


# --- Dual-branch discriminator ---------------------------------------------------------------------


@pytest.mark.parametrize("size, expected", [(64, 6), (128, 14)])
def test_output_is_a_patch_map(size, expected):
    """PatchGAN: one logit per patch, not one per image (70-px receptive field with num_layers=3)."""
    model = _small_discriminator()
    image = torch.rand(2, 1, size, size)
    logits = model(image, image)
    assert logits.shape == (2, 1, expected, expected)


def test_logits_depend_on_the_real_images_edges_and_only_on_them():
    model = _small_discriminator()
    judged = torch.rand(1, 1, 64, 64)
    real = _square()
    other_real = _square(lo=10, hi=40)
    same_edges_other_intensities = 2 * real - 1  # relative Canny: identical edge map
    with torch.no_grad():
        base = model(judged, real)
        assert not torch.allclose(base, model(judged, other_real))
        assert torch.equal(base, model(judged, same_edges_other_intensities))
        assert torch.equal(base, model(judged, edges=model.edges(real)))


def test_gradients_reach_the_judged_image_and_both_branches():
    model = _small_discriminator().train()
    judged = torch.rand(2, 1, 64, 64, requires_grad=True)
    real = torch.rand(2, 1, 64, 64, requires_grad=True)
    model(judged, real).mean().backward()
    assert judged.grad is not None and judged.grad.abs().sum() > 0
    assert real.grad is None, "the real image's edges are a fixed condition, not a gradient path"
    for branch in (model.patch_branch, model.edge_branch, model.head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch.parameters())


def test_edge_branch_sees_the_judged_image_too():
    """Eq. 12 fuses the judged image with the edges: zeroing the PatchGAN path leaves an image-dependent output."""
    model = _small_discriminator()
    with torch.no_grad():
        patch_features = model.head.in_channels - model.edge_branch[-1].out_channels
        model.head.weight[:, :patch_features].zero_()
        real = _square()
        a = model(torch.rand(1, 1, 64, 64), real)
        b = model(torch.rand(1, 1, 64, 64), real)
    assert not torch.allclose(a, b)


def test_discriminator_input_checks():
    model = _small_discriminator()
    image = torch.rand(1, 1, 64, 64)
    with pytest.raises(ValueError, match="exactly one"):
        model(image)
    with pytest.raises(ValueError, match="exactly one"):
        model(image, image, edges=model.edges(image))
    with pytest.raises(ValueError, match="must match"):
        model(image, torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="smaller"):
        model(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16))


# --- Adaptive lambda and hinge losses ---------------------------------------------------------------


def _toy_decoder_losses():
    """Linear decoder x = W z: grad_W ||x - t||^2 = 2 (x - t) z^T, grad_W (-a.x) = -a z^T."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 3, generator=gen, requires_grad=True)
    z, target, a = torch.randn(3, generator=gen), torch.randn(5, generator=gen), torch.randn(5, generator=gen)
    x = weight @ z
    return weight, z, target, a, x


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    weight, z, target, a, x = _toy_decoder_losses()
    rec, adv = ((x - target) ** 2).sum(), -(a * x).sum()
    lam = adaptive_adversarial_weight(rec, adv, weight, eps=1e-4)
    by_hand = (2 * (x - target)).norm() * z.norm() / ((a.norm() * z.norm()) + 1e-4)
    assert torch.allclose(lam, by_hand.detach())
    assert not lam.requires_grad
    (rec + lam * adv).backward()  # graphs are retained for the real backward
    assert weight.grad is not None


def test_adaptive_weight_is_clamped():
    weight, z, target, a, x = _toy_decoder_losses()
    rec = ((x - target) ** 2).sum()
    assert adaptive_adversarial_weight(rec, -(1e-12 * a * x).sum(), weight, max_weight=50.0) == 50.0
    assert adaptive_adversarial_weight(0 * rec, -(a * x).sum(), weight) == 0.0
    with torch.no_grad():
        frozen = ((weight @ z - target) ** 2).sum()
    with pytest.raises(ValueError, match="no autograd graph"):
        adaptive_adversarial_weight(frozen, -(a * x).sum(), weight)


def test_hinge_losses_have_a_margin_on_raw_logits():
    confident_real, confident_fake = torch.full((2, 1, 6, 6), 1.5), torch.full((2, 1, 6, 6), -2.0)
    assert hinge_discriminator_loss(confident_real, confident_fake) == 0.0
    assert hinge_discriminator_loss(torch.zeros(1, 1, 6, 6), torch.zeros(1, 1, 6, 6)) == 1.0
    logits = torch.full((1, 1, 6, 6), -5.0, requires_grad=True)
    hinge_generator_loss(logits).backward()
    assert torch.allclose(logits.grad, torch.full_like(logits, -1 / 36))  # no saturation


def test_one_vq_generator_step_wires_decoder_discriminator_and_lambda():
    """Eq. 7 in miniature: L_rec + lambda * L_GAN, lambda from the decoder's last conv, D judging with real edges."""
    torch.manual_seed(0)
    decoder = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 3, padding=1)
    )
    discriminator = _small_discriminator().train()
    real = torch.from_numpy(_smooth_phantom(64)).float()[None, None]
    reconstruction = decoder(torch.randn(1, 4, 64, 64))
    rec_loss = (reconstruction - real).abs().mean()
    gan_loss = hinge_generator_loss(discriminator(reconstruction, real))
    lam = adaptive_adversarial_weight(rec_loss, gan_loss, decoder[-1].weight)
    assert torch.isfinite(lam) and lam > 0
    (rec_loss + lam * gan_loss).backward()
    assert decoder[0].weight.grad.abs().sum() > 0
