"""Class-labelled 2D images for the class-conditional DDPM, from a MedMNIST npz or from cardiac MRI volumes.

A MedMNIST file already has one class per image (:mod:`pathosynth.data.medmnist`). EMIDEC and ACDC folders have one
clinical group per case instead -- EMIDEC ``normal`` / ``pathological`` (``Case_N*`` / ``Case_P*``), ACDC ``NOR``,
``DCM``, ``HCM``, ``MINF``, ``RV`` (``Info.cfg``) -- so every short-axis slice of a case gets its case's group as class.
The stratified fraction is then drawn over *cases*, never slices: the slices of one heart are strongly correlated,
and a slice-level draw would spread one patient over the subset. Each volume is min-max scaled to [0, 1] and each
slice resized (area) to ``image_size``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from .errors import DatasetError
from .medmnist import medmnist_records, stratified_fraction

__all__ = ["class_image_records", "volume_slice_records"]


def volume_slice_records(dataset_dir: str | os.PathLike, class_names: Sequence[str], image_size: Sequence[int],
                         fraction: float = 0.2, seed: int = 0, max_per_class: int | None = None) -> list[dict]:
    """Slice records ``{"image": (1, H, W) float32 in [0, 1], "label", "case_id"}`` of a stratified fraction of the
    cases of an EMIDEC or ACDC folder, the class being the case's group named in ``class_names``."""
    import nibabel as nib
    import torch
    import torch.nn.functional as F

    from .layouts import detect_layout
    from .cases import load_cases
    from .splits import SPLIT_DEFAULTS

    layout = detect_layout(dataset_dir)
    cases = load_cases(str(dataset_dir), None, labels=dict(SPLIT_DEFAULTS[layout]["labels"]), lesion_classes=[], select="all")
    names = [str(c) for c in class_names]
    for case in cases:
        if case.get("group") not in names:
            raise DatasetError(f"case {case['case_id']} ({case['image']}) is in group {case.get('group')!r}, which is not one "
                               f"of the configured class_names {names}")
    case_labels = np.array([names.index(c["group"]) for c in cases])
    records = []
    for index in stratified_fraction(case_labels, fraction, seed, max_per_class):
        case = cases[index]
        volume = np.asarray(nib.load(case["image"]).get_fdata(), dtype=np.float32)
        low, high = float(volume.min()), float(volume.max())
        volume = (volume - low) / (high - low) if high > low else np.zeros_like(volume)
        slices = torch.from_numpy(np.moveaxis(volume, -1, 0)).unsqueeze(1)  # (Z, 1, H, W)
        slices = F.interpolate(slices, size=tuple(int(s) for s in image_size), mode="area").numpy()
        records += [{"image": image, "label": int(case_labels[index]), "case_id": f"{case['case_id']}_z{z:02d}"}
                    for z, image in enumerate(slices)]
    return records


def class_image_records(dataset: str | os.PathLike, class_names: Sequence[str], image_size: Sequence[int], split: str = "train",
                        fraction: float = 0.2, seed: int = 0, max_per_class: int | None = None) -> list[dict]:
    """Records of an EMIDEC/ACDC folder (:func:`volume_slice_records`; ``max_per_class`` counts cases) or of a MedMNIST
    npz (:func:`~pathosynth.data.medmnist.medmnist_records`, its ``split``; images must already be ``image_size``)."""
    from .layouts import detect_layout

    if detect_layout(dataset) in ("emidec", "acdc"):
        return volume_slice_records(dataset, class_names, image_size, fraction, seed, max_per_class)
    return medmnist_records(dataset, split, fraction, seed, max_per_class, num_classes=len(class_names))
