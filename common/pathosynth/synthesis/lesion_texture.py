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

from ..data.intensity import check_intensity, intensity_bounds, to_unit
from ..data.labels import channel_masks
from ..data.transforms import masked_context, unit_to_min_max
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
        intensity, window: how raw values map to the models' [-1, 1], as at training
            (:mod:`~pathosynth.data.intensity`: per-volume ``"minmax"``, or a clamped ``"window"`` for CT in HU).
        texture: a :class:`~pathosynth.synthesis.histogram_texture.HistogramTexture` for histogram-conditioned
            models (which texture each case and sample asks for); checked against the models here, before any case.
    """

    def __init__(
        self,
        models: Sequence[TextureModel],
        sampler,
        labels: Mapping[str, int],
        roi_size: Sequence[int] = (72, 72, 10),
        device: str | torch.device = "cpu",
        intensity: str = "minmax",
        window: Sequence[float] | None = None,
        texture=None,
    ) -> None:
        if not models:
            raise ValueError("at least one texture model is needed")
        check_intensity(intensity, window)
        self.intensity, self.window = intensity, window
        self.texture = texture
        if texture is not None:
            texture.prepare(models)
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
            # only what differs from the defaults, so existing output folders keep their identity
            **({"intensity": self.intensity, "window": list(self.window)} if self.intensity != "minmax" else {}),
            **(self.texture.settings() if self.texture is not None else {}),
        }

    def synthesize(self, image: np.ndarray, label: np.ndarray, seed: int, sample_index: int = 0) -> SynthesisResult:
        """Synthesise lesion texture into ``image`` wherever ``label`` holds the models' classes (``sample_index``:
        which variant of the case, for textures that cycle through requests)."""
        if image.shape != label.shape:
            raise ValueError(f"image shape {image.shape} differs from label shape {label.shape}")
        low, high = intensity_bounds(image, self.intensity, self.window)
        unit = to_unit(image, low, high, clip=self.intensity == "window")
        work = pad_to(unit.astype(np.float32), self.roi_size, -1.0)
        padded_label = pad_to(label, self.roi_size, 0)
        changed = np.zeros(work.shape, dtype=bool)
        calls = 0
        requests = []
        for model_index, model in enumerate(self.models):
            network = model.network
            if self.texture is not None:
                histograms, request = self.texture.request(model, model_index, image, label, seed, sample_index)
                network = self.texture.denoiser(network, histograms)
                requests.append(request)
            masks = channel_masks(padded_label, self.labels, model.channels)
            union = masks.any(axis=0)
            for window_index, window in enumerate(covering_windows(union, self.roi_size)):
                calls += self._synthesize_window(model, network, work, masks, window, seed, model_index, window_index)
                if model.paste == "crop":
                    changed[window] = True
            if model.paste == "lesion":
                changed |= union
        crop = tuple(slice(0, s) for s in image.shape)
        work, changed = work[crop], changed[crop]
        out = image.copy()
        out[changed] = cast_like(unit_to_min_max(work[changed], low, high), image.dtype)
        info = {"network_evaluations": calls, **({"texture_requests": requests} if requests else {})}
        return SynthesisResult(out, label.copy(), changed, info)

    def _synthesize_window(
        self, model: TextureModel, network, work, masks, window, seed, model_index, window_index
    ) -> int:
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
                network,
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
        """Read a case record's image and label and synthesise (the runner's per-case callable; the record's
        ``sample_index`` says which variant of the case this is)."""
        result = self.synthesize(*read_case(record), seed, int(record.get("sample_index", 0)))
        result.info.update(self.settings())
        return result
