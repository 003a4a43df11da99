"""What every synthesiser returns, and the per-case plumbing they share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ..io.nifti import read_nifti


@dataclass
class SynthesisResult:
    """One synthetic case: arrays in the source's dtype plus what the preview and provenance need."""

    image: np.ndarray
    label: np.ndarray
    changed: np.ndarray
    info: dict = field(default_factory=dict)


def read_case(record: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) raw arrays of a case record."""
    return np.asarray(read_nifti(record["image"])[0]), np.asarray(read_nifti(record["label"])[0])


def settings_of(source) -> dict:
    """A synthesiser's settings for provenance (empty when it declares none)."""
    return source.settings() if hasattr(source, "settings") else {}


def new_mask_result(mask_source, record: Mapping, seed: int) -> SynthesisResult:
    """Runner callable of a mask source (``generate(label, seed) -> (label, info)``): the image unchanged,
    the label with the new lesions."""
    image, label = read_case(record)
    new_label, info = mask_source.generate(label, seed)
    return SynthesisResult(image.copy(), new_label, new_label != label, {**settings_of(mask_source), **info})
