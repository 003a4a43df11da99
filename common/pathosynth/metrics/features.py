"""Feature extractors for distribution metrics (FID, KID), behind one small interface, with no hub downloads.

Why a pluggable extractor: FID/KID are only as meaningful as the embedding they are computed in, and the
"standard" one (Inception-v3 trained on ImageNet) is neither available offline on hospital clusters nor
obviously appropriate for single-channel cardiac MRI or chest X-ray slices. So every extractor here

- follows :class:`FeatureExtractor`: ``name``, ``dim`` and ``__call__(images (N, C, H, W) float) -> (N, dim)``;
- never downloads anything: the pretrained ones need a weights file *the user provides* (a state dict loaded
  with ``torch.load(path, map_location="cpu", weights_only=True)``), and :class:`RandomConvFeatures` needs none;
- normalises every image on its own to [0, 1] (min-max over the image) unless an ``intensity_range`` is declared,
  and resizes to a fixed ``input_size``, so MRI in arbitrary units and uint8 X-rays are treated alike;
- carries a ``name`` that identifies the embedding (architecture, and seed or weights file + SHA-256 prefix):
  a distribution score must always be reported together with it, because scores from different extractors
  are not comparable.

Extractors (names for :func:`pathosynth.metrics.extractors.make_extractor`):

=============================  ======  ===============================================================
name                           dim     weights
=============================  ======  ===============================================================
``random-conv``                256*    none (fixed-seed random conv net; *``dim`` is a parameter)
``monai-resnet10/18/34``       512     local state dict for MONAI ``ResNet`` (2D) or torchvision ResNet
``monai-resnet50/101/152/200`` 2048    local state dict for MONAI ``ResNet`` (2D) or torchvision ResNet
``monai-densenet121``          1024    local state dict for MONAI ``DenseNet121`` (2D) or torchvision
``monai-densenet169``          1664    local state dict for MONAI ``DenseNet169`` (2D) or torchvision
``monai-densenet201``          1920    local state dict for MONAI ``DenseNet201`` (2D) or torchvision
``torchvision-inception-v3``   2048    local torchvision ``inception_v3`` state dict (needs torchvision)
=============================  ======  ===============================================================

Even with torchvision's ImageNet Inception weights, the numbers are *not* the published TF-Inception FID
(those use the 2015 TF graph, e.g. ``pt_inception-2015-12-05`` in pytorch-fid, with its own resize).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FeatureExtractor", "RandomConvFeatures", "preprocess_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class FeatureExtractor(Protocol):
    """What distribution metrics need from an embedding.

    ``name`` identifies the embedding in reports (scores from different names are not comparable);
    ``dim`` is the feature length; calling with a float tensor (N, C, H, W) returns (N, dim) features.
    """

    name: str
    dim: int

    def __call__(self, images: Tensor) -> Tensor: ...


# --------------------------------------------------------------------------------------------- preprocessing
def preprocess_images(
    images: Tensor,
    input_size: int | Sequence[int],
    channels: int,
    intensity_range: Sequence[float] | None = None,
) -> Tensor:
    """(N, C, H, W) or (N, H, W) images in any intensity range -> (N, channels, *input_size) float32 in [0, 1].

    - size: bilinear resize (antialiased, so downsampling does not alias) to ``input_size``; non-square images
      are stretched.
    - intensities, after resizing: each image is min-max scaled on its own (over all its channels) to exactly
      [0, 1], so that the arbitrary units of MRI and a generator's output range do not enter the features; a
      constant image becomes all zeros. With ``intensity_range=(lo, hi)`` the fixed mapping
      ``(x - lo) / (hi - lo)``, clipped to [0, 1], is used instead (when absolute intensities matter and the
      range is known, e.g. ``(0, 255)``).
    - channels: a single channel is repeated when the network expects ``channels`` (e.g. 3); any other
      mismatch is an error.
    """
    x = torch.as_tensor(images)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"expected images shaped (N, C, H, W) or (N, H, W), got {tuple(x.shape)}")
    c = x.shape[1]
    if c != channels and c != 1:
        raise ValueError(f"images have {c} channels but the extractor expects {channels} (or 1, repeated)")
    x = x.float()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or Inf; distribution metrics would be meaningless")
    size = (
        (int(input_size), int(input_size))
        if isinstance(input_size, (int, np.integer))
        else tuple(int(s) for s in input_size)
    )
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    if intensity_range is None:
        flat = x.flatten(1)
        lo = flat.amin(dim=1).view(-1, 1, 1, 1)
        span = flat.amax(dim=1).view(-1, 1, 1, 1) - lo
        x = torch.where(span > 0, (x - lo) / span.clamp_min(1e-30), torch.zeros_like(x))
    else:
        lo, hi = (float(v) for v in intensity_range)
        if not hi > lo:
            raise ValueError(f"intensity_range must be (lo, hi) with hi > lo, got {intensity_range!r}")
        x = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    if c != channels:
        x = x.expand(-1, channels, -1, -1)
    return x.contiguous()


# ------------------------------------------------------------------------------------------ random conv net
class RandomConvFeatures(nn.Module):
    """``random-conv-v1``: a fixed-seed, randomly initialised conv net; needs no weights and no download.

    Architecture (version 1; any change to it must bump the version in :attr:`name`): the image is resized to
    ``input_size`` x ``input_size``, scaled to [0, 1] (see :func:`preprocess_images`) and mapped to [-1, 1];
    then 4 stages of ``w = dim / 8`` channels -- stage 1 one 3x3 conv, stages 2-4 two 3x3 convs each (zero
    padding, no bias, each conv followed by ReLU), with 2x2 average pooling before stages 2-4. Every stage's
    maps are pooled globally by average *and* max, and the 8 pooled vectors are concatenated -> ``dim``
    features. Why multi-scale: the early, full-resolution stage sees fine texture and noise, the last stage
    (receptive field 66 px of the resized image) larger structure; average pooling summarises statistics, max
    pooling keeps rare strong responses (small bright structures, artefacts). Why equal widths: with a narrow
    first stage the whole embedding hinges on a handful of random filters, and in our checks (smooth-blob
    images vs. 2 % noise, gamma, blur) its sensitivity varied strongly between seeds; ``dim / 8`` filters at
    every scale made it consistent.

    Weights: He-normal, ``N(0, 2 / fan_in)``, drawn from numpy's legacy ``RandomState(seed)`` in a fixed layer
    order. That stream is frozen by numpy's compatibility policy, so the network is the same on every machine
    and numpy/torch version (features agree to float32 rounding, which can differ in the last bits between CPU
    kernels or thread counts -- far below any reportable precision of FID/KID).

    Why random features at all: untrained convolutional networks are known to produce features that carry
    useful image statistics (the "random features" literature, e.g. work on random-weight CNN features by
    Jarrett et al. 2009 and Saxe et al. 2011, and randomly initialised embeddings for generative-model metrics
    discussed by Naeem et al. 2020); they respond to texture, noise, blur and intensity changes -- the kind of
    changes synthesis makes -- without an ImageNet bias or a download.

    Honest limits: random-feature FID/KID are **not comparable** to published Inception-FID numbers, nor to
    random-conv scores with another seed, ``dim`` or ``input_size`` (all are in :attr:`name`). Use them to
    *rank* methods or checkpoints within one study, computed with one extractor, and report the name next to
    every score. They are not semantic: two sets can match in random-conv statistics yet differ in anatomy.
    FID's bias grows with ``dim`` / N, so keep ``dim`` well below the number of images (default 256).

    Args:
        dim: feature length; a multiple of 8, >= 64 (default 256: 32 channels per stage).
        seed: weight seed, 0 <= seed < 2**32.
        input_size: images are resized to this square size (default 128; >= 16).
        in_channels: image channels the network takes (default 1; single-channel input is repeated if larger).
        intensity_range: ``None`` (per-image min-max) or a declared ``(lo, hi)``; see :func:`preprocess_images`.
    """

    version = "random-conv-v1"
    convs_per_stage = (1, 2, 2, 2)

    def __init__(
        self,
        dim: int = 256,
        seed: int = 0,
        input_size: int = 128,
        in_channels: int = 1,
        intensity_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        dim, seed, input_size, in_channels = int(dim), int(seed), int(input_size), int(in_channels)
        if dim < 64 or dim % 8:
            raise ValueError(f"dim must be a multiple of 8 and >= 64 (narrower random nets are unreliable), got {dim}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        if input_size < 16:
            raise ValueError(f"input_size must be >= 16 (4 stages, 3 poolings), got {input_size}")
        self.dim, self.seed, self.input_size, self.in_channels = dim, seed, input_size, in_channels
        self.intensity_range = None if intensity_range is None else tuple(float(v) for v in intensity_range)
        width = dim // 8
        rng = np.random.RandomState(seed)
        convs: list[nn.Conv2d] = []
        c_in = in_channels
        for n_convs in self.convs_per_stage:
            for _ in range(n_convs):
                conv = nn.Conv2d(c_in, width, kernel_size=3, padding=1, bias=False)
                weight = rng.standard_normal((width, c_in, 3, 3)) * np.sqrt(2.0 / (c_in * 9))
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
                convs.append(conv)
                c_in = width
        self.convs = nn.ModuleList(convs)
        self.requires_grad_(False)
        self.eval()
        name = f"{self.version} seed={seed} dim={dim} size={input_size}"
        if in_channels != 1:
            name += f" channels={in_channels}"
        if self.intensity_range is not None:
            name += f" range={self.intensity_range[0]:g}..{self.intensity_range[1]:g}"
        self.name = name

    def forward(self, images: Tensor) -> Tensor:
        device = self.convs[0].weight.device
        x = preprocess_images(images, self.input_size, self.in_channels, self.intensity_range).to(device)
        x = x * 2.0 - 1.0
        pooled, i = [], 0
        for stage, n_convs in enumerate(self.convs_per_stage):
            if stage:
                x = F.avg_pool2d(x, 2)
            for _ in range(n_convs):
                x = F.relu(self.convs[i](x))
                i += 1
            pooled += [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        return torch.cat(pooled, dim=1)

    def extra_repr(self) -> str:
        return self.name


_RESNET_DEPTHS = (10, 18, 34, 50, 101, 152, 200)
_DENSENETS = {121: "DenseNet121", 169: "DenseNet169", 201: "DenseNet201"}


# ------------------------------------------------------------------------------------------------- factory
