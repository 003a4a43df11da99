"""Feature extractors built from a user-provided state dict (MONAI ResNet/DenseNet, torchvision Inception-v3).

Split from :mod:`.features` (the interface, preprocessing, the weight-free extractor and the factory) because
everything here is about one problem: loading someone else's weights safely -- never downloading, refusing
files that do not fit instead of silently leaving a network random, and naming the weights (file + SHA-256)
in every score. See :mod:`.features` for the table of extractors.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .features import _DENSENETS, _RESNET_DEPTHS, IMAGENET_MEAN, IMAGENET_STD, preprocess_images

__all__ = [
    "MonaiDenseNetFeatures",
    "MonaiResNetFeatures",
    "TorchvisionInceptionFeatures",
    "load_local_state_dict",
    "torchvision_available",
]


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
            raise ValueError(
                f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; expected a state dict for {architecture}"
            )
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    return out, path


def _load_checked(
    model: nn.Module, state: Mapping[str, Tensor], head_prefixes: Sequence[str], architecture: str, path: Path
) -> None:
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
        raise ValueError(
            f"{path} does not fit {architecture}: no {key!r} in the state dict (keys start {list(state)[:3]})"
        )
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

    def _finish(
        self,
        net: nn.Module,
        in_channels: int,
        input_size: int,
        normalization: str | None,
        intensity_range: Sequence[float] | None,
        arch: str,
        path: Path,
        extra: str = "",
    ) -> None:
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
        self._finish(
            net,
            conv1.shape[1],
            input_size,
            normalization,
            intensity_range,
            arch,
            path,
            f" conv1_stride={int(conv1_stride)} norm={{norm}}",
        )


# torchvision names dense-layer parts "denselayer1.norm1" (old releases: "norm.1"); MONAI "denselayer1.layers.norm1"
_TV_DENSE_KEY = re.compile(
    r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(weight|bias|running_mean|running_var|num_batches_tracked)$"
)


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
        net = getattr(nets, _DENSENETS[depth])(
            spatial_dims=2, in_channels=int(conv0.shape[1]), out_channels=1, pretrained=False
        )
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

    def __init__(
        self, weights_path: str | os.PathLike, input_size: int = 299, intensity_range: Sequence[float] | None = None
    ) -> None:
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
