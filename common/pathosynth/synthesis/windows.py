"""Crop windows that cover a mask: how whole volumes meet a network trained on fixed-size crops.

LeFusion trains on lesion-centred crops (official EMIDEC: 72x72 in-plane x 10 slices). At inference
a lesion may be larger than one crop, so we cover its bounding box with as few windows as possible
(evenly spread, overlapping when needed) and synthesise them one after another, each seeing the
texture already written by the previous ones.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np


def _axis_starts(lo: int, hi: int, size: int, roi: int) -> list[int]:
    """Window starts along one axis covering [lo, hi) with windows of length ``roi`` inside [0, size)."""
    count = max(1, math.ceil((hi - lo) / roi))
    if count == 1:
        start = int(round((lo + hi) / 2 - roi / 2))
        return [min(max(start, 0), size - roi)]
    return sorted({min(max(int(round(s)), 0), size - roi) for s in np.linspace(lo, hi - roi, count)})


def covering_windows(mask: np.ndarray, roi_size: Sequence[int]) -> list[tuple[slice, ...]]:
    """Windows of ``roi_size`` covering every True voxel of ``mask``; ``mask`` must be at least ``roi_size``.

    Windows holding no mask voxel are dropped. Returns [] for an empty mask.
    """
    if any(s < r for s, r in zip(mask.shape, roi_size)):
        raise ValueError(f"pad the volume to at least {tuple(roi_size)} first (got {mask.shape})")
    coords = np.argwhere(mask)
    if coords.size == 0:
        return []
    lo, hi = coords.min(0), coords.max(0) + 1
    starts = [_axis_starts(int(a), int(b), n, r) for a, b, n, r in zip(lo, hi, mask.shape, roi_size)]
    windows = []
    for corner in itertools.product(*starts):
        window = tuple(slice(c, c + r) for c, r in zip(corner, roi_size))
        if mask[window].any():
            windows.append(window)
    return windows


def pad_to(array: np.ndarray, roi_size: Sequence[int], value) -> np.ndarray:
    """Pad the trailing spatial axes at their end so each is at least ``roi_size``."""
    lead = array.ndim - len(roi_size)
    widths = [(0, 0)] * lead + [(0, max(0, r - s)) for s, r in zip(array.shape[lead:], roi_size)]
    return np.pad(array, widths, mode="constant", constant_values=value)
