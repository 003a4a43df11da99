"""Between a volume's in-plane grid and a 2-D model's grid, and back.

Training preprocesses volumes with MONAI ``ResizeWithPadOrCropd`` (a centred in-plane field of view,
``fov_size``) then ``Resized`` to ``image_size`` (area for images, nearest for labels). Synthesis has to
go the same way in and come back out, so that each synthetic volume lies on its label file's grid. The
pad/crop is taken from MONAI itself (applied once to an index map), so it cannot drift from training;
the way back is the exact inverse of the pad/crop after a bilinear resize to the field of view.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ResizeWithPadOrCrop


class SliceGrid:
    """In-plane geometry of one volume shape.

    Args:
        in_plane_shape: (H, W) of the volume's array.
        fov_size: the centred field of view (pixels of the volume grid) training used.
        image_size: the model's slice size.
    """

    def __init__(self, in_plane_shape: Sequence[int], fov_size: Sequence[int], image_size: Sequence[int]) -> None:
        self.in_plane_shape = tuple(int(s) for s in in_plane_shape)
        self.fov_size = tuple(int(s) for s in fov_size)
        self.image_size = tuple(int(s) for s in image_size)
        if len(self.in_plane_shape) != 2 or len(self.fov_size) != 2 or len(self.image_size) != 2:
            raise ValueError("in_plane_shape, fov_size and image_size must each have two values")
        height, width = self.in_plane_shape
        index = torch.arange(1, height * width + 1, dtype=torch.float64).reshape(1, height, width, 1)
        fov_index = ResizeWithPadOrCrop((*self.fov_size, -1))(index)
        # source[i] = flat in-plane index of field-of-view pixel i in the volume, -1 where training padded
        self.source = torch.as_tensor(fov_index).reshape(-1).round().long() - 1
        self._valid = self.source >= 0

    def to_model(self, volume: np.ndarray, mode: str = "area") -> torch.Tensor:
        """(H, W, D) array -> (D, 1, *image_size) float32 slices; ``mode`` "area" for images, "nearest" for labels."""
        volume = np.asarray(volume)
        if volume.shape[:2] != self.in_plane_shape:
            raise ValueError(f"volume in-plane shape {volume.shape[:2]} differs from the grid's {self.in_plane_shape}")
        depth = volume.shape[2] if volume.ndim == 3 else 1
        flat = torch.from_numpy(np.ascontiguousarray(volume.reshape(-1, depth).T, dtype=np.float32))  # (D, H*W)
        fov = torch.zeros((depth, self._valid.numel()), dtype=torch.float32)
        fov[:, self._valid] = flat[:, self.source[self._valid]]
        slices = fov.reshape(depth, 1, *self.fov_size)
        if self.fov_size != self.image_size:
            slices = F.interpolate(slices, size=self.image_size, mode=mode)
        return slices

    def from_model(self, slices: torch.Tensor, fill: float = 0.0) -> np.ndarray:
        """(D, 1, *image_size) slices -> (H, W, D) float32 array; voxels outside the field of view get ``fill``."""
        slices = torch.as_tensor(slices).detach().float().cpu()
        if self.fov_size != self.image_size:
            slices = F.interpolate(slices, size=self.fov_size, mode="bilinear", align_corners=False)
        depth = slices.shape[0]
        fov = slices.reshape(depth, -1)
        flat = torch.full((depth, int(np.prod(self.in_plane_shape))), float(fill), dtype=torch.float32)
        flat[:, self.source[self._valid]] = fov[:, self._valid]
        return flat.T.reshape(*self.in_plane_shape, depth).numpy()
