"""Class-labelled 2D images for the class-conditional DDPM, from a MedMNIST npz or from cardiac MRI volumes.

A MedMNIST file already has one class per image (:mod:`pathosynth.data.medmnist`). EMIDEC and ACDC folders have one
clinical group per case instead -- EMIDEC ``normal`` / ``pathological`` (``Case_N*`` / ``Case_P*``), ACDC ``NOR``,
``DCM``, ``HCM``, ``MINF``, ``RV`` (``Info.cfg``) -- so every short-axis slice of a case gets its case's group as class.
The stratified fraction is then drawn over *cases*, never slices: the slices of one heart are strongly correlated,
and a slice-level draw would spread one patient over the subset. Each volume is min-max scaled to [0, 1] and each
slice resized (area) to ``image_size``.

The lesion classifier of the reference-guided study needs a finer rule: a slice's class is whether *it* holds a
lesion label (EMIDEC MI / PMO), whatever its case's group -- a pathological heart also has lesion-free slices.
:func:`write_lesion_slices` applies that rule to any validated cases (a real split or a synthetic datalist of image +
label pairs) and writes PNG slices + a classifier datalist outside the sources.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .intensity import unit_range
from .medmnist import medmnist_records, stratified_fraction

__all__ = ["class_image_records", "lesion_slice_classes", "unit_slices", "volume_slice_records", "write_lesion_slices"]


def unit_slices(volume: np.ndarray, image_size: Sequence[int], fov_size: Sequence[int] | None = None) -> np.ndarray:
    """(Z, 1, H, W) float32 slices along the last axis of a 2D or 3D volume, min-max scaled to [0, 1] over the whole
    volume (so slices of one heart keep their relative brightness) and resized (area) to ``image_size``.

    ``fov_size`` first crops (or pads) every slice to that centred in-plane field of view -- the region a generative
    model was trained on and synthesises. Slices of real and synthetic images must show the same region: a
    synthetic image is empty outside its field of view, and a classifier would otherwise learn that frame."""
    import torch
    import torch.nn.functional as F
    from monai.transforms import ResizeWithPadOrCrop

    volume = np.asarray(volume, dtype=np.float32)
    volume = volume[..., None] if volume.ndim == 2 else volume
    if fov_size is not None:
        in_plane = ResizeWithPadOrCrop(spatial_size=[int(s) for s in fov_size])(np.moveaxis(volume, -1, 0))
        volume = np.moveaxis(np.asarray(in_plane, dtype=np.float32), 0, -1)
    slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(unit_range(volume), -1, 0))).unsqueeze(1)
    return F.interpolate(slices, size=tuple(int(s) for s in image_size), mode="area").numpy()


def lesion_slice_classes(label: np.ndarray, lesion_values: Sequence[int]) -> np.ndarray:
    """Per slice (last axis; a 2D label map is one slice): 1 when it holds a voxel of ``lesion_values``, else 0."""
    label = np.asarray(label)
    label = label[..., None] if label.ndim == 2 else label
    return np.isin(label, np.asarray(list(lesion_values))).any(axis=tuple(range(label.ndim - 1))).astype(np.int64)


def write_lesion_slices(
    cases: Sequence[dict],
    out_dir: str | os.PathLike,
    lesion_values: Sequence[int],
    image_size: Sequence[int],
    description: str = "",
    fov_size: Sequence[int] | None = None,
) -> Path:
    """Every slice of ``cases`` (validated records with ``image`` / ``label`` NIfTI paths, e.g. from
    :func:`~pathosynth.data.cases.load_cases`), cropped to the centred ``fov_size`` when given, as an 8-bit PNG
    ``OUT/images/<case>_zNN.png`` (:func:`unit_slices`) and
    ``OUT/datalist.json`` with class ``label`` 1 = "the slice holds a lesion label" (:func:`lesion_slice_classes`),
    0 = "no lesion", plus ``case_id`` and ``source_case_id``. Files are written atomically and the folder must lie
    outside the sources (nothing in a dataset is written). Returns the datalist path."""
    import nibabel as nib
    from PIL import Image

    from ..io.atomic import atomic_path, write_json
    from ..io.datalists import guard_sources

    if not cases:
        raise DatasetError(f"no cases to slice into {out_dir}")
    out = Path(out_dir).resolve()
    guard_sources(cases, out)
    entries = []
    for case in cases:
        slices = unit_slices(nib.load(case["image"]).get_fdata(), image_size, fov_size)
        classes = lesion_slice_classes(np.asanyarray(nib.load(case["label"]).dataobj), lesion_values)
        if len(classes) != len(slices):
            raise DatasetError(
                f"case {case['case_id']}: label {case['label']} has {len(classes)} slices, "
                f"image {case['image']} {len(slices)}"
            )
        for z, (image, label) in enumerate(zip(slices, classes)):
            name = f"images/{case['case_id']}_z{z:02d}.png"
            with atomic_path(out / name) as tmp:
                Image.fromarray(np.round(image[0] * 255).astype(np.uint8)).save(tmp, format="PNG")
            entries.append(
                {
                    "image": name,
                    "label": int(label),
                    "case_id": f"{case['case_id']}_z{z:02d}",
                    "source_case_id": case.get("source_case_id", case["case_id"]),
                }
            )
    counts = np.bincount([e["label"] for e in entries], minlength=2).tolist()
    write_json(
        out / "datalist.json",
        {
            "description": description or "2D slices; label 1 = the slice holds a lesion label",
            "class_names": ["no lesion", "lesion"],
            "class_counts": counts,
            "fov_size": [int(s) for s in fov_size] if fov_size is not None else None,
            "training": entries,
        },
    )
    return out / "datalist.json"


def volume_slice_records(
    dataset_dir: str | os.PathLike,
    class_names: Sequence[str],
    image_size: Sequence[int],
    fraction: float = 0.2,
    seed: int = 0,
    max_per_class: int | None = None,
) -> list[dict]:
    """Slice records ``{"image": (1, H, W) float32 in [0, 1], "label", "case_id"}`` of a stratified fraction of the
    cases of an EMIDEC or ACDC folder, the class being the case's group named in ``class_names``."""
    import nibabel as nib

    from .cases import load_cases
    from .layouts import detect_layout
    from .splits import SPLIT_DEFAULTS

    layout = detect_layout(dataset_dir)
    cases = load_cases(
        str(dataset_dir), None, labels=dict(SPLIT_DEFAULTS[layout]["labels"]), lesion_classes=[], select="all"
    )
    names = [str(c) for c in class_names]
    for case in cases:
        if case.get("group") not in names:
            raise DatasetError(
                f"case {case['case_id']} ({case['image']}) is in group {case.get('group')!r}, which is not one "
                f"of the configured class_names {names}"
            )
    case_labels = np.array([names.index(c["group"]) for c in cases])
    records = []
    for index in stratified_fraction(case_labels, fraction, seed, max_per_class):
        case = cases[index]
        slices = unit_slices(nib.load(case["image"]).get_fdata(), image_size)
        records += [
            {"image": image, "label": int(case_labels[index]), "case_id": f"{case['case_id']}_z{z:02d}"}
            for z, image in enumerate(slices)
        ]
    return records


def class_image_records(
    dataset: str | os.PathLike,
    class_names: Sequence[str],
    image_size: Sequence[int],
    split: str = "train",
    fraction: float = 0.2,
    seed: int = 0,
    max_per_class: int | None = None,
) -> list[dict]:
    """Records of an EMIDEC/ACDC folder (:func:`volume_slice_records`; ``max_per_class`` counts cases) or of a MedMNIST
    npz (:func:`~pathosynth.data.medmnist.medmnist_records`, its ``split``; images must already be ``image_size``)."""
    from .layouts import detect_layout

    if detect_layout(dataset) in ("emidec", "acdc"):
        return volume_slice_records(dataset, class_names, image_size, fraction, seed, max_per_class)
    return medmnist_records(dataset, split, fraction, seed, max_per_class, class_names=class_names)
