"""Lesion masks: DiffMask post-processing inside the anatomy (M_m), MI ⊃ PMO containment, label maps <-> masks,
and realism statistics comparing real and generated masks."""

from .postprocess import (
    LESION_STRUCTURE,
    enforce_pmo_inside_mi,
    fill_holes_in_region,
    label_components,
    label_to_masks,
    pmo_inside_mi_voxels,
    postprocess_lesion_masks,
    remove_small_components,
    size_adaptive_parameters,
    smooth_mask,
    write_lesions,
)
from .realism import DISTRIBUTIONS, mask_statistics, realism_report, summarise, transmurality

__all__ = [
    "DISTRIBUTIONS",
    "LESION_STRUCTURE",
    "enforce_pmo_inside_mi",
    "fill_holes_in_region",
    "label_components",
    "label_to_masks",
    "mask_statistics",
    "pmo_inside_mi_voxels",
    "postprocess_lesion_masks",
    "realism_report",
    "remove_small_components",
    "size_adaptive_parameters",
    "smooth_mask",
    "summarise",
    "transmurality",
    "write_lesions",
]
