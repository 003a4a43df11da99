"""Pathology patches for reference guidance (Krishna et al. Sec. 2.2, Fig. 1b), for any dataset with a lesion label.

A patch is a window of a real image centred on one connected lesion region, with that region's lesion labels.
Before it guides a sample it is brought closer to the anatomy reference it will sit in:

1. histogram equalisation (contrast);
2. normalisation between the reference's minimum and its q-quantile, q drawn uniformly in [0.975, 0.995], so the
   patch spans the reference's intensity range (a random q varies how bright the pathology is);
3. Gaussian edge weighting: the patch is blended into the reference with a Gaussian window, so its intensities
   fade into the reference's towards the patch border and no step appears where the two meet. (The paper says the
   weighting "reduces pixel intensity at the edges"; fading to the reference minimum instead would paint a dark
   ring that the low-pass filter phi_N then smears into the lesion.)

Its guidance weight W (Eq. 5) is a spherical Gaussian centred on the patch, sigma a fraction of the patch size,
with peak 1, and zero outside the patch. For diversity a patch is randomly rotated and flipped (in-plane) and
placed at a random position (translation) inside a chosen anatomy (e.g. the myocardium). Arrays are 2-D (H, W)
or 3-D (H, W, D); rotation is in the (H, W) plane.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import HistogramNormalize
from scipy import ndimage

QUANTILE_RANGE = (0.975, 0.995)


@dataclass
class LesionPatch:
    """A window ``image`` around one lesion region and its ``label`` window (lesion values kept, others 0)."""

    image: np.ndarray
    label: np.ndarray
    source: str = ""


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def cut_lesion_patches(
    image: np.ndarray,
    label: np.ndarray,
    lesion_values: Sequence[int],
    patch_size: Sequence[int],
    min_voxels: int = 1,
    source: str = "",
) -> list[LesionPatch]:
    """One patch per connected lesion region (union of ``lesion_values``), centred on its centre of mass.

    Regions are found in 2-D per slice for (H, W, D) inputs when ``patch_size`` has two values, in 3-D when it has
    three. Windows reaching past the border are padded with the border value (image) and 0 (label).
    """
    image, label = np.asarray(image, dtype=np.float32), np.asarray(label)
    if image.shape != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} differ")
    size = tuple(int(s) for s in patch_size)
    if len(size) == 2 and image.ndim == 3:
        return [
            p
            for k in range(image.shape[2])
            for p in cut_lesion_patches(
                image[..., k], label[..., k], lesion_values, size, min_voxels, f"{source}#slice{k}"
            )
        ]
    if len(size) != image.ndim:
        raise ValueError(f"patch_size {size} does not fit a {image.ndim}-D image")
    lesion = np.isin(label, list(lesion_values))
    regions, count = ndimage.label(lesion)
    pad = [(s, s) for s in size]
    padded_image = np.pad(image, pad, mode="edge")
    padded_label = np.pad(np.where(lesion, label, 0), pad)
    patches = []
    for region in range(1, count + 1):
        voxels = regions == region
        if voxels.sum() < min_voxels:
            continue
        centre = np.round(ndimage.center_of_mass(voxels)).astype(int)
        window = tuple(slice(c + s - s // 2, c + s - s // 2 + s) for c, s in zip(centre, size))
        patches.append(
            LesionPatch(padded_image[window].copy(), padded_label[window].copy(), f"{source}#region{region}")
        )
    return patches


def gaussian_window(shape: Sequence[int], sigma_fraction: float = 0.25) -> np.ndarray:
    """Spherical Gaussian of peak 1 centred on the window; sigma = ``sigma_fraction`` x the smallest side."""
    sigma = sigma_fraction * min(shape)
    grids = np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in shape], indexing="ij")
    return np.exp(-sum(g**2 for g in grids) / (2 * sigma**2)).astype(np.float32)


def prepare_patch(
    patch: np.ndarray,
    reference: np.ndarray,
    generator: torch.Generator,
    quantile_range: Sequence[float] = QUANTILE_RANGE,
    num_bins: int = 256,
) -> tuple[np.ndarray, dict]:
    """Fig. 1b steps 1-2: equalise, then map into [min(reference), quantile_q(reference)], q drawn uniformly in
    ``quantile_range``. Returns the patch and what was drawn (q, the range); :func:`place_patch` weights the edges."""
    equalised = HistogramNormalize(num_bins=num_bins, min=0, max=1)(np.asarray(patch, dtype=np.float32))
    equalised = np.asarray(equalised, dtype=np.float32)
    q = _uniform(generator, *quantile_range)
    low, high = float(np.min(reference)), float(np.quantile(reference, q))
    return (low + equalised * (high - low)).astype(np.float32), {"quantile": q, "intensity_range": [low, high]}


def random_pose(
    image: np.ndarray, label: np.ndarray, generator: torch.Generator, rotate: bool = True, flip: bool = True
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Random in-plane rotation (uniform angle; linear for the image, nearest for the label) and flips per axis."""
    angle = _uniform(generator, 0.0, 360.0) if rotate else 0.0
    flips = [bool(torch.rand((), generator=generator) < 0.5) if flip else False for _ in range(image.ndim)]
    if angle:
        image = ndimage.rotate(image, angle, axes=(0, 1), reshape=False, order=1, mode="nearest")
        label = ndimage.rotate(label, angle, axes=(0, 1), reshape=False, order=0, mode="constant", cval=0)
    for axis, flipped in enumerate(flips):
        if flipped:
            image, label = np.flip(image, axis), np.flip(label, axis)
    return np.ascontiguousarray(image), np.ascontiguousarray(label), {"angle": angle, "flips": flips}


def place_patch(
    canvas: np.ndarray, patch: np.ndarray, label: np.ndarray, centre: Sequence[int], sigma_fraction: float = 0.25
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The patch blended into ``canvas`` (the anatomy reference) at ``centre``: (pathology reference image, weight W,
    lesion label), each of the canvas' shape. With g the Gaussian window, the image is canvas (1 - g) + patch g
    inside the patch (Fig. 1b step 3) and the canvas outside; W = g inside the patch (cropped at the canvas border)
    and 0 outside (Eq. 5)."""
    canvas_shape = tuple(int(s) for s in np.shape(canvas))
    image = np.array(canvas, dtype=np.float32)
    weight = np.zeros(canvas_shape, np.float32)
    lesion = np.zeros(canvas_shape, label.dtype)
    window = gaussian_window(patch.shape, sigma_fraction)
    dst, src = [], []
    for c, s, n in zip(centre, patch.shape, canvas_shape):
        start = int(c) - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:
            raise ValueError(f"patch centred at {tuple(centre)} lies outside the canvas {canvas_shape}")
        dst.append(slice(lo, hi))
        src.append(slice(lo - start, hi - start))
    dst, src = tuple(dst), tuple(src)
    weight[dst], lesion[dst] = window[src], label[src]
    image[dst] = image[dst] * (1 - window[src]) + patch[src] * window[src]
    return image, weight, lesion


def random_centre(region: np.ndarray, generator: torch.Generator) -> tuple[int, ...] | None:
    """A voxel of ``region`` drawn uniformly (None when the region is empty)."""
    voxels = np.argwhere(np.asarray(region, dtype=bool))
    if len(voxels) == 0:
        return None
    return tuple(int(v) for v in voxels[int(torch.randint(len(voxels), (), generator=generator))])
