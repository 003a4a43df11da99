"""What the slice-wise 2-D synthesizers (FQCDM's label-guided, EMIT-Diff's text/edge-guided) share.

Both run a model trained on slices of a centred in-plane field of view: a volume goes to the model's grid and back
(:class:`~pathosynth.synthesis.slice_grid.SliceGrid`), its slices are sampled a batch at a time (every slice has its own
seed, so the batch size changes memory, never the result), and the model's [0, 1] output is written in the source
image's intensity range and dtype so that a synthetic case can replace a real one in a segmentation dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..io.nifti import cast_like
from .slice_grid import SliceGrid


class SliceSynthesizer:
    """Geometry, slice batches and output intensities of a slice-wise synthesizer.

    Args:
        fov_size, image_size: training's in-plane field of view and slice size.
        device: where the networks run.
        slice_batch_size: slices sampled together (memory only; results do not change).
        checkpoints: weight files, hashed into provenance by the runner.
        intensity_range: (low, high) of written images; None = the source image's min and max ([0, 1] without one).
        name: for provenance.
    """

    def __init__(
        self,
        fov_size: Sequence[int],
        image_size: Sequence[int],
        device: str | torch.device = "cpu",
        slice_batch_size: int = 16,
        checkpoints: Sequence[str | os.PathLike] = (),
        intensity_range: Sequence[float] | None = None,
        name: str = "",
    ) -> None:
        self.fov_size = tuple(int(s) for s in fov_size)
        self.image_size = tuple(int(s) for s in image_size)
        self.device = torch.device(device)
        self.slice_batch_size = max(1, int(slice_batch_size))
        self._checkpoints = [str(c) for c in checkpoints if c]
        self.intensity_range = (
            None if intensity_range is None else (float(intensity_range[0]), float(intensity_range[1]))
        )
        self.name = name

    @property
    def checkpoints(self) -> list[str]:
        return list(self._checkpoints)

    def grid(self, in_plane_shape: Sequence[int]) -> SliceGrid:
        return SliceGrid(in_plane_shape, self.fov_size, self.image_size)

    def batches(self, n_slices: int) -> Iterator[list[int]]:
        """Slice indices, ``slice_batch_size`` at a time."""
        for start in range(0, n_slices, self.slice_batch_size):
            yield list(range(start, min(n_slices, start + self.slice_batch_size)))

    def written(self, unit: np.ndarray, source: np.ndarray | None) -> tuple[np.ndarray, list[float]]:
        """The model's output (``unit``, clipped to [0, 1]) in ``intensity_range`` or else ``source``'s range, in
        ``source``'s dtype (float32 without a source); returns the image and the range used."""
        if self.intensity_range is not None:
            low, high = self.intensity_range
        elif source is not None:
            low, high = float(np.min(source)), float(np.max(source))
        else:
            low, high = 0.0, 1.0
        dtype = np.asarray(source).dtype if source is not None else np.dtype(np.float32)
        return cast_like(low + np.clip(unit, 0.0, 1.0) * (high - low), dtype), [low, high]
