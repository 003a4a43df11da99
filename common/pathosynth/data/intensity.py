"""How raw intensities become the [-1, 1] the lesion diffusion models work in, as one config choice.

Why: MRI has no absolute scale, so LeFusion min-max normalises each volume (``intensity: "minmax"``); CT is in
Hounsfield units, where a fixed window keeps the meaning of a value across scans (the official LeFusion LIDC code
clamps HU to [-1000, 400] and scales that to [-1, 1]: ``intensity: "window"``). Training preprocessing
(:class:`UnitIntensityd`) and the synthesiser (:func:`intensity_bounds`, then the same mapping and its inverse) share
this module, so the two cannot drift apart. The slice-wise models take [0, 1] per-volume min-max instead
(:func:`unit_range`: what the ``ScaleIntensityd(minv=0, maxv=1)`` of their training configs does, for synthesis and
slice classification; tests/test_slice_synthesizer.py checks the two agree).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from ..errors import UserInputError
from .transforms import min_max_to_unit

INTENSITY_MODES = ("minmax", "window")
CT_WINDOW = (-1000.0, 400.0)


def check_intensity(intensity: str, window: Sequence[float] | None) -> tuple[float, float] | None:
    """The window as floats (None for ``minmax``); a bad choice is an error naming the config key."""
    if intensity not in INTENSITY_MODES:
        raise UserInputError(f"`intensity` must be one of {INTENSITY_MODES}, got {intensity!r}")
    if intensity == "minmax":
        return None
    if window is None or len(window) != 2 or not float(window[0]) < float(window[1]):
        raise UserInputError(f"`window` must be [low, high] with low < high (CT: {list(CT_WINDOW)} HU), got {window!r}")
    return float(window[0]), float(window[1])


def intensity_bounds(image, intensity: str = "minmax", window: Sequence[float] | None = None) -> tuple[float, float]:
    """The raw values that map to -1 and 1: the volume's min and max, or the window."""
    bounds = check_intensity(intensity, window)
    if bounds is not None:
        return bounds
    return float(image.min()), float(image.max())


def unit_range(volume: np.ndarray) -> np.ndarray:
    """Per-volume min-max to [0, 1] (float32; a constant volume becomes zeros): MONAI's
    ``ScaleIntensityd(minv=0, maxv=1)``, the input scaling of the slice-wise models (FQCDM, EMIT-Diff, the
    reference-guided DDPM, the slice classifiers), applied the same way when they synthesise or classify."""
    volume = np.asarray(volume, dtype=np.float32)
    low, high = float(volume.min()), float(volume.max())
    return (volume - low) / (high - low) if high > low else np.zeros_like(volume)


def to_unit(image: np.ndarray, low: float, high: float, clip: bool = False) -> np.ndarray:
    """[low, high] -> [-1, 1] (float64), values outside clamped when ``clip`` (a window)."""
    unit = min_max_to_unit(image, low, high)
    return np.clip(unit, -1.0, 1.0) if clip else unit


class UnitIntensityd(MapTransform):
    """Training's normalisation: each key's image to [-1, 1] by ``intensity`` (per-volume min-max, or a clamped
    window), float32. With ``minmax`` it is MONAI's ``ScaleIntensityd(minv=-1, maxv=1)``."""

    def __init__(
        self,
        keys: KeysCollection,
        intensity: str = "minmax",
        window: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        check_intensity(intensity, window)
        self.intensity, self.window = intensity, window

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            values = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image)
            low, high = intensity_bounds(values, self.intensity, self.window)
            unit = to_unit(values, low, high, clip=self.intensity == "window").astype(np.float32)
            d[key] = convert_to_dst_type(unit, image, dtype=torch.float32)[0]  # a MetaTensor keeps its metadata
        return d
