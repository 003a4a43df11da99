"""Lesion inpainting as a MONAI ``Inferer``: the face the bundle shows to MONAI Label.

MONAI Label's bundle infer task runs ``inferer(inputs, network)`` on the single tensor under the bundle's input
key, with the network it built from ``network_def`` and ``models/model.pt``. The lesion_inpainting bundle's
``preprocessing`` therefore concatenates the image and its label map into that tensor (channel 0 image,
channel 1 labels); this inferer splits them again and synthesises each volume exactly as
``python -m monai.bundle run inference`` does (:class:`LesionTextureSynthesizer`: crop windows over the lesions,
the sampler, paste-back), so both paths share one implementation and the background stays bit-identical.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.inferers import Inferer

from .lesion_texture import LesionTextureSynthesizer, TextureModel

logger = logging.getLogger(__name__)


class LesionInpaintingInferer(Inferer):
    """Whole-volume lesion texture synthesis for an (image, label map) tensor.

    Args:
        sampler: a :class:`~pathosynth.diffusion.inpainting.LesionInpaintingSampler`.
        labels: class name -> label value.
        texture_channels: the network's texture channels (lists of class names), as in training.
        roi_size: crop size the network was trained on (H, W, D).
        conditional: Cond-Diffusion input (mask + healthy context) and whole-crop paste.
        seed: the synthesis seed of every request (the bundle's ``seed``), so a request is reproducible.
        name: model name for provenance.
        intensity, window: how raw values map to [-1, 1], as at training (:mod:`pathosynth.data.intensity`).
    """

    def __init__(
        self,
        sampler,
        labels: Mapping[str, int],
        texture_channels: Sequence[Sequence[str]],
        roi_size: Sequence[int],
        conditional: bool = False,
        seed: int = 0,
        name: str = "texture_model",
        intensity: str = "minmax",
        window: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.sampler = sampler
        self.labels = dict(labels)
        self.texture_channels = [list(c) for c in texture_channels]
        self.roi_size = tuple(int(r) for r in roi_size)
        self.conditional = bool(conditional)
        self.seed = int(seed)
        self.name = name
        self.intensity, self.window = intensity, window

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
        """``inputs``: (B, 2, H, W, D), channel 0 image intensities, channel 1 label map. Returns the synthetic
        images, (B, 1, H, W, D), on ``inputs``' device; voxels outside the lesions are the input's."""
        if inputs.ndim != 5 or inputs.shape[1] != 2:
            raise ValueError(
                "expected (batch, 2, H, W, D) with the image in channel 0 and the label map in channel 1, "
                f"got {tuple(inputs.shape)}; "
                "the bundle's preprocessing concatenates 'image' and 'label'"
            )
        model = TextureModel(
            network=network,
            channels=self.texture_channels,
            conditional=self.conditional,
            paste="crop" if self.conditional else "lesion",
            name=self.name,
        )
        synthesizer = LesionTextureSynthesizer(
            [model], self.sampler, self.labels, self.roi_size, inputs.device, self.intensity, self.window
        )
        outputs = []
        for item in torch.as_tensor(inputs).detach().cpu():
            image = item[0].numpy()
            label = np.rint(item[1].numpy()).astype(np.int16)
            result = synthesizer.synthesize(image, label, self.seed)
            if not result.changed.any():
                logger.warning(
                    "the label map holds none of the classes %s: the image is returned unchanged", self.texture_channels
                )
            outputs.append(torch.from_numpy(result.image))
        return torch.stack(outputs)[:, None].to(inputs.device)
