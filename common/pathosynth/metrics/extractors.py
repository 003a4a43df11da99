"""Feature extractors by name, for configs and the CLI: the one place that knows every extractor class.

It sits above :mod:`.features` (the interface and the weight-free extractor) and :mod:`.pretrained_features`
(extractors built from local weights), so neither of those imports the other's dependants.
"""

from __future__ import annotations

import os

__all__ = ["EXTRACTORS", "make_extractor"]

from .features import _DENSENETS, _RESNET_DEPTHS, FeatureExtractor, RandomConvFeatures
from .pretrained_features import MonaiDenseNetFeatures, MonaiResNetFeatures, TorchvisionInceptionFeatures

EXTRACTORS: dict[str, str] = {
    "random-conv": "fixed-seed random conv net, no weights (RandomConvFeatures)",
    **{f"monai-resnet{d}": f"MONAI ResNet-{d}, local weights (MonaiResNetFeatures)" for d in _RESNET_DEPTHS},
    **{f"monai-densenet{d}": f"MONAI DenseNet-{d}, local weights (MonaiDenseNetFeatures)" for d in _DENSENETS},
    "torchvision-inception-v3": "torchvision Inception-v3, local weights (TorchvisionInceptionFeatures)",
}


def make_extractor(
    name: str = "random-conv", weights_path: str | os.PathLike | None = None, **kwargs
) -> FeatureExtractor:
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
            raise ValueError(
                "'random-conv' is weight-free and takes no weights_path; choose e.g. 'monai-resnet50' to use weights"
            )
        return RandomConvFeatures(**kwargs)
    if weights_path is None:
        raise ValueError(f"feature extractor {key!r} needs weights_path (a local state dict); nothing is downloaded")
    if key.startswith("monai-resnet"):
        return MonaiResNetFeatures(weights_path, depth=int(key[len("monai-resnet") :]), **kwargs)
    if key.startswith("monai-densenet"):
        return MonaiDenseNetFeatures(weights_path, depth=int(key[len("monai-densenet") :]), **kwargs)
    return TorchvisionInceptionFeatures(weights_path, **kwargs)
