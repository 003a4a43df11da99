"""NIfTI reading and writing that keeps the source's geometry, header and data type.

Synthetic cases must line up voxel-for-voxel with their source (same affine, same dtype), and
voxels we did not synthesise must be bit-identical. So we read raw arrays with nibabel (no
resampling, no orientation change, no intensity scaling) and write with the source header.
"""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from .atomic import atomic_path


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Raw stored array (no scaling applied when the header has none) and the image for its header."""
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), img


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert float values to ``dtype``, rounding and clipping to its range for integer types."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def write_nifti_like(path: str | os.PathLike, data: np.ndarray, reference: nib.Nifti1Image, dtype=None) -> None:
    """Write ``data`` atomically with the reference's affine, header and stored dtype (or ``dtype``)."""
    dtype = np.dtype(dtype) if dtype is not None else reference.get_data_dtype()
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    out = nib.Nifti1Image(cast_like(np.asarray(data), dtype), reference.affine, header)
    with atomic_path(path) as tmp:
        nib.save(out, str(tmp))
