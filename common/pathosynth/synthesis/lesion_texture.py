"""Lesion texture synthesis on whole volumes: crop, sample, paste back.

Given a real volume and its label map, every lesion voxel is re-synthesised by one or more texture
models (LeFusion-J: one model, one channel per lesion class; LeFusion-S: one model per class, run in
turn; RePaint: one class-agnostic channel; Cond-Diffusion: generates whole crops from its
conditioning). The written volume takes the synthesised value only where a model was asked to
synthesise (the lesion voxels, or whole crops for Cond-Diffusion); every other voxel is copied from
the input array, so the background is bit-identical by construction, not by numerical luck.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.labels import channel_masks
from ..data.transforms import masked_context, min_max_to_unit, unit_to_min_max
from ..io.nifti import cast_like
from ..seeding import generator
from .results import SynthesisResult, read_case
from .windows import covering_windows, pad_to

PASTE_MODES = ("lesion", "crop")


@dataclass
class TextureModel:
    """A trained texture network and what it synthesises.

    Args:
        network: the denoiser (called as ``network(x, timesteps)``).
        channels: texture channels, each a list of class names; must match the network's channels.
        conditional: feed Cond-Diffusion's (mask, healthy image) condition concatenated to the input.
        paste: "lesion" writes only lesion voxels (LeFusion, RePaint); "crop" writes whole windows
            (Cond-Diffusion, which regenerates the background it was conditioned on).
        name: for provenance.
        checkpoint: the weights file, hashed into provenance records.
    """

    network: torch.nn.Module
    channels: Sequence[Sequence[str]]
    conditional: bool = False
    paste: str = "lesion"
    name: str = "texture_model"
    checkpoint: str | None = None

    def __post_init__(self):
        if self.paste not in PASTE_MODES:
            raise ValueError(f"paste must be one of {PASTE_MODES}, got {self.paste!r}")
        if self.paste == "crop" and len(self.channels) != 1:
            raise ValueError("paste='crop' needs a single-channel model")


class LesionTextureSynthesizer:
    """Re-synthesise the lesions of whole volumes with lesion-focus diffusion models.

    Args:
        models: texture models, applied in order (LeFusion-S: MI then PMO).
        sampler: a :class:`~pathosynth.diffusion.inpainting.LesionInpaintingSampler`.
        labels: class name -> label value.
        roi_size: crop size the models were trained on, in array axis order (H, W, D).
        device: where the networks run.
    """

    def __init__(
        self,
        models: Sequence[TextureModel],
        sampler,
        labels: Mapping[str, int],
        roi_size: Sequence[int] = (72, 72, 10),
        device: str | torch.device = "cpu",
    ) -> None:
        if not models:
            raise ValueError("at least one texture model is needed")
        self.models = list(models)
        self.sampler = sampler
        self.labels = dict(labels)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.device = torch.device(device)

    @property
    def checkpoints(self) -> list[str]:
        """Weight files of the models, for provenance."""
        return [str(m.checkpoint) for m in self.models if m.checkpoint]

    def settings(self) -> dict:
        """What produced a case, for provenance."""
        return {
            "models": [
                {"name": m.name, "channels": [list(c) for c in m.channels], "paste": m.paste} for m in self.models
            ],
            "roi_size": list(self.roi_size),
            **self.sampler.settings(),
        }

    def synthesize(self, image: np.ndarray, label: np.ndarray, seed: int) -> SynthesisResult:
        """Synthesise lesion texture into ``image`` wherever ``label`` holds the models' classes."""
        if image.shape != label.shape:
            raise ValueError(f"image shape {image.shape} differs from label shape {label.shape}")
        low, high = float(image.min()), float(image.max())
        work = pad_to(min_max_to_unit(image, low, high).astype(np.float32), self.roi_size, -1.0)
        padded_label = pad_to(label, self.roi_size, 0)
        changed = np.zeros(work.shape, dtype=bool)
        calls = 0
        for model_index, model in enumerate(self.models):
            masks = channel_masks(padded_label, self.labels, model.channels)
            union = masks.any(axis=0)
            for window_index, window in enumerate(covering_windows(union, self.roi_size)):
                calls += self._synthesize_window(model, work, masks, window, seed, model_index, window_index)
                if model.paste == "crop":
                    changed[window] = True
            if model.paste == "lesion":
                changed |= union
        crop = tuple(slice(0, s) for s in image.shape)
        work, changed = work[crop], changed[crop]
        out = image.copy()
        out[changed] = cast_like(unit_to_min_max(work[changed], low, high), image.dtype)
        return SynthesisResult(out, label.copy(), changed, {"network_evaluations": calls})

    def _synthesize_window(self, model: TextureModel, work, masks, window, seed, model_index, window_index) -> int:
        """Sample one window in place; returns the number of network calls."""
        channel_window = (slice(None),) + window
        crop_masks = torch.from_numpy(masks[channel_window].astype(np.float32))[None]
        crop = torch.from_numpy(np.ascontiguousarray(work[window]))[None, None]
        crop = crop.expand(1, crop_masks.shape[1], *crop.shape[2:]).contiguous()
        condition = None
        if model.conditional:
            union = crop_masks[0].amax(dim=0, keepdim=True)
            condition = masked_context(crop[0], union)[None].to(self.device)
        gen = generator(seed, model_index, window_index)
        sampled = (
            self.sampler(
                crop.to(self.device),
                model.network,
                mask=crop_masks.to(self.device),
                condition=condition,
                generators=[gen],
            )[0]
            .cpu()
            .numpy()
        )
        if model.paste == "crop":
            work[window] = sampled[0]
        else:
            region = work[window]
            for channel, channel_mask in enumerate(masks[channel_window]):
                region[channel_mask] = sampled[channel][channel_mask]
        return self.sampler.last_network_evaluations

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """Read a case record's image and label and synthesise (the runner's per-case callable)."""
        result = self.synthesize(*read_case(record), seed)
        result.info.update(self.settings())
        return result
