"""Label map in, paired image out: FQCDM slice by slice on whole volumes, and its two baselines.

For each slice of a label volume the label is brought to the model grid (field of view, resize), a DDPM
sample is drawn conditioned on it (Algorithm 1), un-normalised, snapped to the codebook (Eq. 4) and
decoded (Eq. 5); the slices are stacked and returned to the label file's grid. Modes:

- ``generate`` with a latent :class:`~pathosynth.diffusion.latent.DiffusionSpace`: FQCDM.
- ``generate`` with a pixel space: the pixel-space label-conditioned DDPM baseline.
- ``reconstruct``: the autoencoder alone (encode, quantise, decode the real image) — needs a source image.

The label is written unchanged; the image is the synthetic one, mapped from the model's [0, 1] to the
source image's intensity range (or ``intensity_range``), in the source's dtype; voxels outside the field
of view get the low end of that range.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data.intensity import unit_range
from ..diffusion.label_guided import LabelGuidedSampler, label_values_of, one_hot_labels
from ..diffusion.latent import DiffusionSpace
from ..distributed import unwrap
from ..io.nifti import read_nifti
from ..seeding import generator
from .results import SynthesisResult
from .slice_grid import SliceGrid
from .slice_synthesizer import SliceSynthesizer

MODES = ("generate", "reconstruct")


class LabelGuidedSynthesizer(SliceSynthesizer):
    """Synthesise an image for a label volume (or reconstruct a real one), slice by slice.

    Args:
        space: where the model runs (latent: FQCDM; pixel: the pixel DDPM baseline).
        labels: class name -> value, in the order of the network's SPADE channels.
        fov_size, image_size: the in-plane field of view and slice size used in training.
        network: the SPADE denoiser (``mode="generate"``).
        sampler: a :class:`~pathosynth.diffusion.label_guided.LabelGuidedSampler` (``mode="generate"``).
        mode: "generate" or "reconstruct" (see the module docstring).
        device: where the networks run.
        slice_batch_size: slices sampled together (does not change the result: every slice has its own seed).
        checkpoints: weight files used, hashed into provenance by the runner.
        intensity_range: (low, high) of written images; None = the source image's min and max ([0, 1] without one).
        name: for provenance.
    """

    def __init__(
        self,
        space: DiffusionSpace,
        labels: Mapping[str, int],
        fov_size: Sequence[int],
        image_size: Sequence[int],
        network: torch.nn.Module | None = None,
        sampler: LabelGuidedSampler | None = None,
        mode: str = "generate",
        device: str | torch.device = "cpu",
        slice_batch_size: int = 16,
        checkpoints: Sequence[str | os.PathLike] = (),
        intensity_range: Sequence[float] | None = None,
        name: str = "fqcdm",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "generate" and (network is None or sampler is None):
            raise ValueError("mode 'generate' needs a network and a sampler")
        if mode == "reconstruct" and space.autoencoder is None:
            raise ValueError("mode 'reconstruct' needs a latent space (an autoencoder)")
        super().__init__(fov_size, image_size, device, slice_batch_size, checkpoints, intensity_range, name)
        self.space = space
        self.labels = dict(labels)
        self.values = label_values_of(self.labels)
        self.network = network
        self.sampler = sampler
        self.mode = mode

    def settings(self) -> dict:
        """What produced a case, for provenance."""
        out = {
            "method": self.name,
            "mode": self.mode,
            "fov_size": list(self.fov_size),
            "image_size": list(self.image_size),
            "labels": self.labels,
            **self.space.settings(),
        }
        if self.mode == "generate":
            out.update(self.sampler.settings())
        return out

    def synthesize(self, label: np.ndarray, seed: int, image: np.ndarray | None = None) -> SynthesisResult:
        """A synthetic image on ``label``'s grid (``image``: the source, for its intensity range / reconstruction)."""
        label = np.asarray(label)
        if label.ndim not in (2, 3):
            raise ValueError(f"expected a 2-D or 3-D label array, got shape {label.shape}")
        if image is not None and np.shape(image) != label.shape:
            raise ValueError(f"image shape {np.shape(image)} differs from label shape {label.shape}")
        volume_label = label if label.ndim == 3 else label[..., None]
        grid = self.grid(volume_label.shape[:2])
        if self.mode == "generate":
            unit, calls = self._generate(grid, volume_label, seed)
        else:
            if image is None:
                raise ValueError("mode 'reconstruct' needs the source image")
            unit, calls = self._reconstruct(grid, np.asarray(image).reshape(volume_label.shape)), 0
        out, written_range = self.written(unit.reshape(label.shape), image)
        info = {**self.settings(), "network_evaluations": calls, "intensity_range": written_range}
        return SynthesisResult(out, label.copy(), np.ones(label.shape, dtype=bool), info)

    def _generate(self, grid: SliceGrid, label: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
        model_label = grid.to_model(label, mode="nearest")
        size = self.space.latent_size(self.image_size)
        channels = int(unwrap(self.network).in_channels)
        outputs, calls = [], 0
        for batch in self.batches(model_label.shape[0]):
            seg = one_hot_labels(model_label[batch], self.values, size=size).to(self.device)
            gens = [generator(seed, "slice", k) for k in batch]
            samples = self.sampler(self.network, seg, (channels, *size), gens)
            calls += len(batch) * self.sampler.last_network_evaluations  # per slice, so batching does not change it
            outputs.append(self.space.decode(samples).cpu())
        return grid.from_model(torch.cat(outputs), fill=0.0), calls

    def _reconstruct(self, grid: SliceGrid, image: np.ndarray) -> np.ndarray:
        slices = grid.to_model(unit_range(image), mode="area")
        outputs = [
            self.space.reconstruct(slices[batch].to(self.device)).cpu() for batch in self.batches(slices.shape[0])
        ]
        return grid.from_model(torch.cat(outputs), fill=0.0)

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """The runner's per-case callable: the record's label (and image, when it has one)."""
        label = np.asarray(read_nifti(record["label"])[0])
        image = np.asarray(read_nifti(record["image"])[0]) if record.get("image") else None
        return self.synthesize(label, seed, image)
