"""Up-front dataset validation: every case is checked before the first training or sampling step.

A diffusion run that dies on case 57 after an hour, or silently learns from a mislabelled case,
costs far more than reading every volume once. All problems are collected and raised as one
:class:`DatasetError` that names each case, its file and the problem. Nothing is ever written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import nibabel as nib
import numpy as np

from .errors import DatasetError
from .labels import class_values

logger = logging.getLogger(__name__)


def _load(path: str):
    """(array, affine) of a NIfTI file, or raise a message that names the file and the reason."""
    try:
        img = nib.load(path)
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise ValueError(f"file {path} does not exist") from None
    except Exception as err:  # nibabel raises many types for corrupt files; all mean "unreadable"
        raise ValueError(f"file {path} is not a readable NIfTI ({type(err).__name__}: {err})") from None
    return data, img.affine


def _spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton dimensions (a 4-D file with one frame is a volume)."""
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def warn_if_constant(case: str, path: str, image: np.ndarray) -> None:
    """An all-constant image loads and passes every check, yet carries nothing to learn (a blank export, a wrong
    file): worth a warning that names the file, not an error (a blank slice stack can be deliberate)."""
    if image.size and np.isfinite(image).all() and image.min() == image.max():
        logger.warning(
            f"{case}: image {path} is constant (every voxel {image.flat[0]}); it holds no structure to learn from"
        )


def check_case(
    record: Mapping,
    labels: Mapping[str, int],
    lesion_classes: Sequence[str] = (),
    require_lesion: bool | None = None,
) -> tuple[list[str], set[int]]:
    """Problems of one case (empty when it is fine) and the label values it holds.

    ``require_lesion``: True = the case must hold a voxel of ``lesion_classes``; None = required
    exactly when the layout declares the case pathological.
    """
    case = record["case_id"]
    problems: list[str] = []
    try:
        image, image_affine = _load(record["image"])
    except ValueError as err:
        return [f"{case}: image {err}"], set()
    try:
        label, label_affine = _load(record["label"])
    except ValueError as err:
        return [f"{case}: label {err}"], set()

    if _spatial(image.shape) != _spatial(label.shape):
        problems.append(
            f"{case}: image {record['image']} has shape {image.shape} but label {record['label']} has {label.shape}"
        )
    if len(_spatial(image.shape)) not in (2, 3):
        problems.append(f"{case}: image {record['image']} has shape {image.shape}; expected a 2-D or 3-D volume")
    if not np.allclose(image_affine, label_affine, atol=1e-3):
        problems.append(f"{case}: image and label affines differ ({record['image']} vs {record['label']})")
    if not np.issubdtype(image.dtype, np.integer) and not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        problems.append(f"{case}: image {record['image']} holds {bad} NaN/Inf voxels")
    warn_if_constant(case, record["image"], image)

    if not np.issubdtype(label.dtype, np.integer) and not np.array_equal(label, np.round(label)):
        problems.append(f"{case}: label {record['label']} holds non-integer values")
        return problems, set()
    values = set(np.unique(label).astype(int).tolist())
    declared = set(int(v) for v in labels.values())
    unknown = sorted(values - declared)
    if unknown:
        problems.append(
            f"{case}: label {record['label']} has values {unknown} not among the declared labels {dict(labels)}"
        )

    has_lesion = bool(values & set(class_values(labels, lesion_classes)))
    if lesion_classes:
        needs = require_lesion if require_lesion is not None else record.get("group") == "pathological"
        if needs and not has_lesion:
            why = (
                "it is declared pathological"
                if record.get("group") == "pathological"
                else "this run synthesises into real lesion masks"
            )
            problems.append(f"{case}: label {record['label']} has no {'/'.join(lesion_classes)} voxels, but {why}")
        if record.get("group") == "normal" and has_lesion:
            problems.append(
                f"{case}: declared normal (Case_N*) but label {record['label']} holds {'/'.join(lesion_classes)} voxels"
            )
    return problems, values


def check_image(record: Mapping) -> list[str]:
    """Problems of an image-only case (self-supervised pretraining reads no label): the file loads, is a 2-D or 3-D
    volume and holds no NaN/Inf."""
    case = record["case_id"]
    try:
        image, _ = _load(record["image"])
    except ValueError as err:
        return [f"{case}: image {err}"]
    problems = []
    if len(_spatial(image.shape)) not in (2, 3):
        problems.append(f"{case}: image {record['image']} has shape {image.shape}; expected a 2-D or 3-D volume")
    if not np.issubdtype(image.dtype, np.integer) and not np.isfinite(image).all():
        problems.append(f"{case}: image {record['image']} holds {int((~np.isfinite(image)).sum())} NaN/Inf voxels")
    warn_if_constant(case, record["image"], image)
    return problems


def validate_images(records: Sequence[Mapping], source: str = "dataset") -> None:
    """:func:`check_image` for every case; one DatasetError listing every problem found."""
    problems = [problem for record in records for problem in check_image(record)]
    if problems:
        listing = "\n  ".join(problems)
        raise DatasetError(f"{len(problems)} problem(s) in {source}; nothing was run:\n  {listing}")


def validate_cases(
    records: Sequence[Mapping],
    labels: Mapping[str, int],
    lesion_classes: Sequence[str] = (),
    require_lesion: bool | None = None,
    source: str = "dataset",
) -> list[set[int]]:
    """Check every case; raise one DatasetError listing every problem found.

    Returns, per case, the label values it holds (so callers can select cases without reading them again).
    """
    class_values(labels, lesion_classes)  # unknown class names are a config error, raised before any I/O
    problems: list[str] = []
    label_values: list[set[int]] = []
    for record in records:
        found, values = check_case(record, labels, lesion_classes, require_lesion)
        problems.extend(found)
        label_values.append(values)
    if problems:
        listing = "\n  ".join(problems)
        raise DatasetError(f"{len(problems)} problem(s) in {source}; nothing was run:\n  {listing}")
    return label_values
