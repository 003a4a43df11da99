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

Extractors (:func:`make_extractor` names):

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

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EXTRACTORS",
    "FeatureExtractor",
    "MonaiDenseNetFeatures",
    "MonaiResNetFeatures",
    "RandomConvFeatures",
    "TorchvisionInceptionFeatures",
    "load_local_state_dict",
    "make_extractor",
    "preprocess_images",
    "torchvision_available",
]

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
    size = (int(input_size), int(input_size)) if isinstance(input_size, (int, np.integer)) else tuple(int(s) for s in input_size)
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


# ------------------------------------------------------------------------------------ local-weights loading
def _sha256_prefix(path: Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def load_local_state_dict(weights_path: str | os.PathLike, architecture: str) -> tuple[dict[str, Tensor], Path]:
    """Load a user-provided state dict (never downloads); clear errors naming the expected ``architecture``.

    Accepts a plain state dict, or a checkpoint dict holding one under ``network`` (pathosynth checkpoints),
    ``state_dict``, ``model`` or ``net``; a ``module.`` prefix (DataParallel/DDP) is stripped.
    """
    if weights_path is None:
        raise ValueError(f"{architecture} needs a local weights file (weights_path); none was given")
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file not found: {path} -- expected a local state dict for {architecture} "
            f"(saved with torch.save(model.state_dict(), path)); nothing is downloaded. "
            f"Use the weight-free extractor 'random-conv' if no weights are available."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled modules, corrupt files, ...
        raise ValueError(
            f"could not load {path} with torch.load(weights_only=True) as a state dict for {architecture}: {err}. "
            f"Save the weights with torch.save(model.state_dict(), path), not the pickled model."
        ) from err
    for key in ("network", "state_dict", "model", "net"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"{path} does not hold a state dict for {architecture} (got {type(state).__name__})")
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, Tensor):
            raise ValueError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; expected a state dict for {architecture}")
        out[k[len("module."):] if k.startswith("module.") else k] = v
    return out, path


def _load_checked(model: nn.Module, state: Mapping[str, Tensor], head_prefixes: Sequence[str], architecture: str, path: Path) -> None:
    """``load_state_dict`` ignoring only the classifier head; any other missing/unexpected key is an error.

    Why: ``strict=False`` alone would silently leave a network random when keys do not match, and the report
    would then claim a pretrained embedding.
    """
    is_head = lambda k: any(k == p or k.startswith(p + ".") for p in head_prefixes)  # noqa: E731
    body = {k: v for k, v in state.items() if not is_head(k)}
    try:
        missing, unexpected = model.load_state_dict(body, strict=False)
    except RuntimeError as err:  # shape mismatches
        raise ValueError(f"{path} does not fit {architecture}: {err}") from err
    missing = [k for k in missing if not is_head(k)]
    unexpected = [k for k in unexpected if not is_head(k)]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not fit {architecture}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )


def _first_conv(state: Mapping[str, Tensor], key: str, architecture: str, path: Path) -> Tensor:
    if key not in state:
        raise ValueError(f"{path} does not fit {architecture}: no {key!r} in the state dict (keys start {list(state)[:3]})")
    w = state[key]
    if w.ndim != 4:
        raise ValueError(
            f"{path}: {key} has shape {tuple(w.shape)}; {architecture} features here are 2D (4-D conv weights), "
            f"3D weights (e.g. MedicalNet) cannot embed 2D slices"
        )
    return w


def _normalisation(normalization: str | None, channels: int) -> str:
    norm = normalization or ("imagenet" if channels == 3 else "unit")
    if norm not in ("imagenet", "unit", "symmetric"):
        raise ValueError(f"normalization must be 'imagenet', 'unit' or 'symmetric', got {normalization!r}")
    if norm == "imagenet" and channels != 3:
        raise ValueError(f"normalization='imagenet' needs 3-channel weights, these take {channels}")
    return norm


class _LocalWeightsExtractor(nn.Module):
    """Shared preprocessing + naming for extractors built from a user-provided state dict."""

    net: nn.Module
    in_channels: int
    input_size: int
    normalization: str
    intensity_range: tuple[float, float] | None

    def _finish(self, net: nn.Module, in_channels: int, input_size: int, normalization: str | None,
                intensity_range: Sequence[float] | None, arch: str, path: Path, extra: str = "") -> None:
        """Freeze the loaded network and record the preprocessing and the report name (shared by all builders)."""
        self.net = net.requires_grad_(False).eval()
        self.in_channels = int(in_channels)
        self.input_size = int(input_size)
        self.normalization = _normalisation(normalization, self.in_channels)
        self.intensity_range = None if intensity_range is None else tuple(float(v) for v in intensity_range)
        self._set_name(arch, path, extra.format(norm=self.normalization))

    def _set_name(self, arch: str, path: Path, extra: str = "") -> None:
        self.weights_path = path
        self.name = f"{arch} weights={path.name} sha256={_sha256_prefix(path)} size={self.input_size}{extra}"

    def _prepare(self, images: Tensor) -> Tensor:
        x = preprocess_images(images, self.input_size, self.in_channels, self.intensity_range)
        if self.normalization == "imagenet":
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            x = (x - mean) / std
        elif self.normalization == "symmetric":
            x = x * 2.0 - 1.0
        return x.to(next(self.net.parameters()).device)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self._prepare(images)).flatten(1)

    def extra_repr(self) -> str:
        return self.name


_RESNET_DEPTHS = (10, 18, 34, 50, 101, 152, 200)


class MonaiResNetFeatures(_LocalWeightsExtractor):
    """Penultimate-layer (global-average-pooled) features of a 2D MONAI ``ResNet`` with user-provided weights.

    The state dict may come from MONAI (``monai.networks.nets.resnetXX(spatial_dims=2, ...)``), from a
    pathosynth checkpoint, or from a torchvision ResNet (e.g. ImageNet or RadImageNet weights saved locally):
    the parameter names are the same. Input channels, first-conv kernel size and the downsample bias
    (torchvision: none, MONAI default: yes) are read from the weights; the classifier head (``fc``) is ignored.

    Args:
        weights_path: local state dict file (``torch.load(..., weights_only=True)``); nothing is downloaded.
        depth: 10, 18, 34 (512 features) or 50, 101, 152, 200 (2048 features).
        input_size: square size images are resized to (224 for ImageNet-style weights).
        conv1_stride: stride of the first conv, not recorded in weights: 2 for torchvision/ImageNet weights
            (default), 1 for MONAI's own default ``conv1_t_stride``. Use what the weights were trained with.
        normalization: after per-image [0, 1] scaling: ``"imagenet"`` (ImageNet mean/std; default for 3-channel
            weights), ``"unit"`` (keep [0, 1]; default for other channel counts) or ``"symmetric"`` ([-1, 1]).
        intensity_range: ``None`` (per-image min-max) or a declared ``(lo, hi)``.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike,
        depth: int = 50,
        input_size: int = 224,
        conv1_stride: int = 2,
        normalization: str | None = None,
        intensity_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        from monai.networks.nets import resnet as monai_resnet

        depth = int(depth)
        if depth not in _RESNET_DEPTHS:
            raise ValueError(f"depth must be one of {_RESNET_DEPTHS}, got {depth}")
        arch = f"monai-resnet{depth}"
        description = f"MONAI resnet{depth} (spatial_dims=2) or torchvision resnet{depth}"
        state, path = load_local_state_dict(weights_path, description)
        conv1 = _first_conv(state, "conv1.weight", description, path)
        bias_downsample = any(re.fullmatch(r"layer\d+\.0\.downsample\.0\.bias", k) for k in state)
        net = getattr(monai_resnet, f"resnet{depth}")(
            pretrained=False,
            spatial_dims=2,
            n_input_channels=int(conv1.shape[1]),
            conv1_t_size=int(conv1.shape[-1]),
            conv1_t_stride=int(conv1_stride),
            bias_downsample=bias_downsample,
            num_classes=1,
        )
        self.dim = int(net.fc.in_features)
        net.fc = nn.Identity()
        _load_checked(net, state, ["fc"], description, path)
        self._finish(net, conv1.shape[1], input_size, normalization, intensity_range, arch, path,
                     f" conv1_stride={int(conv1_stride)} norm={{norm}}")


_DENSENETS = {121: "DenseNet121", 169: "DenseNet169", 201: "DenseNet201"}
# torchvision names dense-layer parts "denselayer1.norm1" (old releases: "norm.1"); MONAI "denselayer1.layers.norm1"
_TV_DENSE_KEY = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$")


class MonaiDenseNetFeatures(_LocalWeightsExtractor):
    """Penultimate-layer (ReLU + global-average-pooled) features of a 2D MONAI DenseNet with user weights.

    Accepts MONAI/pathosynth state dicts and torchvision DenseNet state dicts (dense-layer keys are renamed as
    MONAI's own pretrained loader does); the classifier (``class_layers.out`` / ``classifier``) is ignored.
    Input channels are read from ``features.conv0.weight``. Arguments as :class:`MonaiResNetFeatures`
    (``depth`` 121 -> 1024, 169 -> 1664, 201 -> 1920 features).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike,
        depth: int = 121,
        input_size: int = 224,
        normalization: str | None = None,
        intensity_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        from monai.networks import nets

        depth = int(depth)
        if depth not in _DENSENETS:
            raise ValueError(f"depth must be one of {tuple(_DENSENETS)}, got {depth}")
        arch = f"monai-densenet{depth}"
        description = f"MONAI {_DENSENETS[depth]} (spatial_dims=2) or torchvision densenet{depth}"
        raw, path = load_local_state_dict(weights_path, description)
        state = {}
        for k, v in raw.items():
            m = _TV_DENSE_KEY.match(k)
            state[f"{m.group(1)}.layers.{m.group(2)}{m.group(3)}.{m.group(4)}" if m else k] = v
        conv0 = _first_conv(state, "features.conv0.weight", description, path)
        net = getattr(nets, _DENSENETS[depth])(spatial_dims=2, in_channels=int(conv0.shape[1]), out_channels=1, pretrained=False)
        self.dim = int(net.class_layers.out.in_features)
        net.class_layers.out = nn.Identity()
        _load_checked(net, state, ["class_layers.out", "classifier"], description, path)
        self._finish(net, conv0.shape[1], input_size, normalization, intensity_range, arch, path, " norm={norm}")


def _import_torchvision_models():
    """torchvision.models, or a clear ImportError (it is optional, and a build mismatched with torch fails)."""
    try:
        import torchvision.models as tv_models
    except Exception as err:  # ImportError, or e.g. RuntimeError "operator torchvision::nms does not exist"
        raise ImportError(
            f"torchvision is needed for the 'torchvision-inception-v3' extractor but could not be imported "
            f"({type(err).__name__}: {err}); install a torchvision matching torch {torch.__version__}, or use "
            f"'monai-resnet50' / 'monai-densenet121' with local weights, or the weight-free 'random-conv'"
        ) from err
    return tv_models


def torchvision_available() -> bool:
    """Whether torchvision imports in this environment."""
    try:
        _import_torchvision_models()
    except ImportError:
        return False
    return True


class TorchvisionInceptionFeatures(_LocalWeightsExtractor):
    """2048-d pool features of torchvision ``inception_v3`` with a local state dict (e.g. IMAGENET1K_V1 saved
    beforehand on a machine with internet). Needs an importable torchvision; raises ImportError otherwise.

    Images are scaled per image to [0, 1], repeated to 3 channels, resized to 299 and mapped to [-1, 1] (what
    torchvision's ``transform_input=True`` produces from ImageNet-normalised input). Not identical to the
    TF-Inception FID of the literature (different weights and resize); see the module docstring.
    """

    def __init__(self, weights_path: str | os.PathLike, input_size: int = 299, intensity_range: Sequence[float] | None = None) -> None:
        super().__init__()
        tv_models = _import_torchvision_models()
        description = "torchvision inception_v3 (aux_logits=True)"
        state, path = load_local_state_dict(weights_path, description)
        net = tv_models.inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
        self.dim = int(net.fc.in_features)
        net.fc = nn.Identity()
        _load_checked(net, state, ["fc"], description, path)
        self.net = net.requires_grad_(False).eval()
        self.in_channels, self.input_size = 3, int(input_size)
        self.normalization = "symmetric"
        self.intensity_range = None if intensity_range is None else tuple(float(v) for v in intensity_range)
        self._set_name("torchvision-inception-v3", path)


# ------------------------------------------------------------------------------------------------- factory
EXTRACTORS: dict[str, str] = {
    "random-conv": "fixed-seed random conv net, no weights (RandomConvFeatures)",
    **{f"monai-resnet{d}": f"MONAI ResNet-{d}, local weights (MonaiResNetFeatures)" for d in _RESNET_DEPTHS},
    **{f"monai-densenet{d}": f"MONAI DenseNet-{d}, local weights (MonaiDenseNetFeatures)" for d in _DENSENETS},
    "torchvision-inception-v3": "torchvision Inception-v3, local weights (TorchvisionInceptionFeatures)",
}


def make_extractor(name: str = "random-conv", weights_path: str | os.PathLike | None = None, **kwargs) -> FeatureExtractor:
    """Build an extractor by name (for configs and the CLI); see :data:`EXTRACTORS` for the choices.

    ``weights_path`` is required by every extractor except ``random-conv`` (which refuses one, so a config
    cannot believe it is using weights it is not); ``kwargs`` go to the extractor class.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key == "random-conv-v1":
        key = "random-conv"
    if key not in EXTRACTORS:
        raise ValueError(f"unknown feature extractor {name!r}; choices: {', '.join(EXTRACTORS)}")
    if key == "random-conv":
        if weights_path is not None:
            raise ValueError("'random-conv' is weight-free and takes no weights_path; choose e.g. 'monai-resnet50' to use weights")
        return RandomConvFeatures(**kwargs)
    if weights_path is None:
        raise ValueError(f"feature extractor {key!r} needs weights_path (a local state dict); nothing is downloaded")
    if key.startswith("monai-resnet"):
        return MonaiResNetFeatures(weights_path, depth=int(key[len("monai-resnet"):]), **kwargs)
    if key.startswith("monai-densenet"):
        return MonaiDenseNetFeatures(weights_path, depth=int(key[len("monai-densenet"):]), **kwargs)
    return TorchvisionInceptionFeatures(weights_path, **kwargs)
