"""FQCDM's dual-branch discriminator (DBD, paper Sec. 3.4, Eqs. 6 and 11-17).

A PatchGAN judges local realism but, the paper argues, misses the fine edge texture that makes a cardiac
slice look real. The DBD adds an edge branch ("EageGAN" in the paper, EdgeGAN here) that sees the judged
image next to the Canny edges of the *real* slice, so the patch logits can ask "are the real anatomy's
boundaries where this image puts them, and do they look right there?". The edge features are resized to
the PatchGAN's last feature map and concatenated before the final 4x4 convolution (Eq. 17).

Reading of the equations used here (2D only; FQCDM works on 2D cardiac MRI slices):

- PatchGAN (Eqs. 15-16): pix2pix's ``NLayerDiscriminator`` on the judged image alone (Eq. 15's
  ``I_syn(real)``): 4x4 conv stride 2 + LeakyReLU(0.2) without norm, then ``num_layers`` blocks of 4x4
  conv + BatchNorm + LeakyReLU(0.2), stride 2 except the last (stride 1), channels doubling from
  ``channels`` up to 8x.
- EdgeGAN (Eqs. 12-14): ``I_fuse = judged || Canny(real)``; ``edge_layers`` blocks
  ``ReLU(Conv3x3(x) || Conv1x1(x))`` (|| = channel concatenation); a 3x3 conv gives ``edge_channels``
  maps ``O``. Eq. 14's "Reshape" is an area resize of ``O`` to the PatchGAN feature size: averaging
  keeps the evidence of every one-pixel-wide edge, where nearest/bilinear sampling would skip most.
- Head (Eq. 17): 4x4 conv, stride 1, padding 1, on ``I_n || O`` -> one logit per patch (no activation;
  pair it with ``monai.losses.PatchAdversarialLoss`` or :mod:`pathosynth.losses.adversarial`).

When the discriminator judges a real slice its edges come from that slice; when it judges a
reconstruction they come from the real slice being reconstructed, so real and fake see the same edges
and only the judged image differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .edges import canny_edges

__all__ = ["DualBranchDiscriminator"]


class _EdgeBlock(nn.Module):
    """Eq. 13: ``ReLU(Conv3x3(x) || Conv1x1(x))`` -- a wide and a pointwise view of the same input."""

    def __init__(self, in_channels: int, features: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(in_channels, features, kernel_size=3, padding=1)
        self.conv1 = nn.Conv2d(in_channels, features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(torch.cat([self.conv3(x), self.conv1(x)], dim=1))


class DualBranchDiscriminator(nn.Module):
    """PatchGAN + Canny-edge branch discriminator of FQCDM (2D).

    Args:
        in_channels: channels of the judged image (1 for cardiac MRI); the edge branch gets twice that
            (image and its Canny map, channel by channel).
        channels: width of the first PatchGAN convolution (pix2pix's ``ndf``, 64).
        num_layers: PatchGAN conv+BN+LeakyReLU blocks after the first conv (pix2pix's ``n_layers``, 3:
            70-pixel receptive field; 64x64 input -> 6x6 logits, 128x128 -> 14x14, 256x256 -> 30x30).
            Inputs must be at least ``2 ** (num_layers + 2)`` pixels on a side.
        edge_channels: maps in the edge branch's output ``O`` (Eq. 14), concatenated to the PatchGAN features.
        edge_layers: number of Eq. 13 blocks in the edge branch.
        edge_features: output channels of each of the 3x3 and 1x1 convolutions in an Eq. 13 block (the
            block outputs twice that). The paper gives no width; 32 keeps the full-resolution branch cheap.
        canny_low, canny_high, canny_sigma, canny_relative: passed to
            :func:`pathosynth.networks.edges.canny_edges`. By default thresholds are fractions of each
            slice's maximum gradient magnitude, so the edges do not depend on the intensity range.

    Call ``model(image, real_image)`` -> patch logits ``(B, 1, h, w)``. ``real_image`` is the real slice
    whose Canny edges condition the edge branch (the judged image itself when judging real data, the
    slice being reconstructed when judging a reconstruction). Pass ``edges=`` instead to reuse maps
    computed once per batch (e.g. with :meth:`edges`) for both the real and the fake call.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 64,
        num_layers: int = 3,
        edge_channels: int = 16,
        edge_layers: int = 3,
        edge_features: int = 32,
        canny_low: float = 0.1,
        canny_high: float = 0.2,
        canny_sigma: float = 1.0,
        canny_relative: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1 or edge_layers < 1:
            raise ValueError(f"num_layers and edge_layers must be >= 1, got {num_layers}, {edge_layers}")
        if not 0 <= canny_low <= canny_high:
            raise ValueError(f"need 0 <= canny_low <= canny_high, got {canny_low}, {canny_high}")
        self.in_channels = in_channels
        self.num_layers = num_layers
        self.canny_low, self.canny_high = canny_low, canny_high
        self.canny_sigma, self.canny_relative = canny_sigma, canny_relative

        # PatchGAN branch, Eqs. 15-16 (pix2pix NLayerDiscriminator without its last conv).
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = channels
        for n in range(1, num_layers + 1):
            out = channels * min(2**n, 8)
            stride = 1 if n == num_layers else 2
            layers += [
                nn.Conv2d(width, out, kernel_size=4, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            width = out
        self.patch_branch = nn.Sequential(*layers)

        # Edge branch, Eqs. 12-14.
        blocks: list[nn.Module] = []
        edge_in = 2 * in_channels
        for _ in range(edge_layers):
            blocks.append(_EdgeBlock(edge_in, edge_features))
            edge_in = 2 * edge_features
        blocks.append(nn.Conv2d(edge_in, edge_channels, kernel_size=3, padding=1))
        self.edge_branch = nn.Sequential(*blocks)

        # Eq. 17: patch logits from PatchGAN features || resized edge features.
        self.head = nn.Conv2d(width + edge_channels, 1, kernel_size=4, stride=1, padding=1)
        self.apply(_init_weights)

    def edges(self, real_image: Tensor) -> Tensor:
        """Canny maps of ``real_image`` with this discriminator's settings (no gradient, same device)."""
        return canny_edges(
            real_image, self.canny_low, self.canny_high, sigma=self.canny_sigma, relative=self.canny_relative
        )

    def forward(self, image: Tensor, real_image: Tensor | None = None, edges: Tensor | None = None) -> Tensor:
        """Patch logits ``(B, 1, h, w)`` for ``image`` given the real slice's edges (see the class docstring)."""
        if (real_image is None) == (edges is None):
            raise ValueError("pass exactly one of real_image (edges computed here) or edges (precomputed)")
        if image.ndim != 4 or image.shape[1] != self.in_channels:
            raise ValueError(f"image must be (B, {self.in_channels}, H, W), got {tuple(image.shape)}")
        min_size = 2 ** (self.num_layers + 2)
        if min(image.shape[-2:]) < min_size:
            raise ValueError(
                f"image {tuple(image.shape)} is smaller than {min_size} px (the minimum for num_layers="
                f"{self.num_layers})"
            )
        if edges is None:
            if real_image.shape != image.shape:
                raise ValueError(f"real_image {tuple(real_image.shape)} must match image {tuple(image.shape)}")
            edges = self.edges(real_image)
        elif edges.shape != image.shape:
            raise ValueError(f"edges {tuple(edges.shape)} must match image {tuple(image.shape)}")

        edge_features = self.edge_branch(torch.cat([image, edges.detach().to(image.dtype)], dim=1))
        features = self.patch_branch(image)
        edge_features = F.interpolate(edge_features, size=features.shape[-2:], mode="area")
        return self.head(torch.cat([features, edge_features], dim=1))


def _init_weights(module: nn.Module) -> None:
    """pix2pix/VQGAN discriminator initialisation: conv N(0, 0.02), BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
