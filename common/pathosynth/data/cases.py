"""The cases a bundle works on: discovered, validated, then selected.

This is what bundle configs call (``pathosynth.data.cases.load_cases``), so validation runs while the
config is being resolved, before any trainer or sampler exists.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from .errors import DatasetError
from .labels import check_label_semantics, class_values
from .layouts import dataset_labels, discover, read_datalist
from .validation import validate_cases, validate_images

SELECTIONS = ("all", "with_lesion", "normal")


def load_cases(
    dataset_dir: str | None = None,
    datalist: str | Sequence[str] | None = None,
    labels: Mapping[str, int] | None = None,
    lesion_classes: Sequence[str] = (),
    select: str = "all",
    datalist_key: str = "training",
    max_cases: int | None = None,
    pathology_classes: Sequence[str] | None = None,
) -> list[dict]:
    """Validated case records.

    ``select``: "all"; "with_lesion" keeps cases holding ``lesion_classes`` voxels (every case of a
    user's datalist must then hold one, and EMIDEC ``Case_P*`` cases must); "normal" keeps cases the
    layout declares normal (or, without a declaration, that hold no lesion).
    ``pathology_classes`` (default ``lesion_classes``): the classes any pathological case must hold —
    a LeFusion-S PMO model selects cases with PMO, yet an MI-only pathological case is still valid data.
    ``max_cases`` keeps the first N selected cases (smoke runs).
    ``datalist`` may be a list of datalists (e.g. real + synthetic training sets): each is validated and
    selected on its own, and the cases are concatenated in order.
    The data's own label semantics (the layout's, or a datalist's ``labels``) must agree with ``labels`` by meaning
    (:func:`~pathosynth.data.labels.check_label_semantics`): ACDC's LV cavity is never trained as EMIDEC's MI.
    """
    if isinstance(datalist, (list, tuple)):
        if not datalist:
            raise DatasetError("an empty list of datalists holds no case to use")
        combined = [
            case
            for path in datalist
            for case in load_cases(None, path, labels, lesion_classes, select, datalist_key, None, pathology_classes)
        ]
        return combined[: int(max_cases)] if max_cases is not None else combined
    if datalist is not None and not isinstance(datalist, (str, os.PathLike)):
        path_list(datalist, "datalist")  # neither a path nor a list of paths: say so before reading anything
    if select not in SELECTIONS:
        raise ValueError(f"select must be one of {SELECTIONS}, got {select!r}")
    if labels is None:
        raise ValueError("labels (class name -> value) must be given")
    records = discover(dataset_dir, datalist, datalist_key)
    source = f"datalist {datalist}" if datalist else f"dataset_dir {dataset_dir}"
    check_data_labels(labels, dataset_dir, datalist, source)
    require = True if (select == "with_lesion" and datalist) else None
    pathology = list(pathology_classes or lesion_classes)
    label_values = validate_cases(records, labels, pathology, require_lesion=require, source=source)
    wanted = set(class_values(labels, lesion_classes))
    lesion_flags = [bool(values & wanted) for values in label_values]

    if select == "with_lesion":
        records = [r for r, lesion in zip(records, lesion_flags) if lesion and r.get("group") != "normal"]
    elif select == "normal":
        records = [
            r
            for r, lesion in zip(records, lesion_flags)
            if r.get("group") == "normal" or (r.get("group") is None and not lesion)
        ]
    if max_cases is not None:
        records = records[: int(max_cases)]
    if not records:
        raise DatasetError(f"{source} holds no case to use (selection '{select}' of {list(lesion_classes)})")
    return records


def check_data_labels(
    labels: Mapping[str, int],
    dataset_dir: str | None = None,
    datalist: str | os.PathLike | None = None,
    source: str = "",
) -> None:
    """Refuse ``labels`` that contradict the data's own: its layout's (EMIDEC, ACDC) or its datalist's ``labels``."""
    declared = dataset_labels(None if datalist else dataset_dir, datalist)
    if declared is not None:
        check_label_semantics(labels, declared[1], declared[0], source)


def path_list(value: str | os.PathLike | Sequence[str | os.PathLike], key: str) -> list[str]:
    """A config value naming one file or several as a list of paths: ``--train_datalists FILE`` (a string) is one
    file, not a list of characters. Anything else is a DatasetError naming the config key."""
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if (
        not isinstance(items, (list, tuple))
        or not items
        or not all(isinstance(v, (str, os.PathLike)) and str(v) for v in items)
    ):
        raise DatasetError(f"`{key}` must be a file path or a non-empty list of file paths, got {value!r}")
    return [str(v) for v in items]


def load_image_cases(
    datalist: str | os.PathLike | Sequence[str | os.PathLike], datalist_key: str = "training"
) -> list[dict]:
    """Validated image-only records of one or more datalists, concatenated in order.

    Self-supervised pretraining (the context encoder) learns from images alone: entries need only ``image``;
    a ``label`` they carry (synthetic sets do) is dropped, not read. Every image is checked first (exists, loads,
    2-D/3-D, no NaN/Inf) and one DatasetError names every bad file.
    """
    paths = path_list(datalist, "datalist")
    records = []
    for path in paths:
        cases = read_datalist(path, datalist_key, require_label=False)
        validate_images(cases, source=f"datalist {path}")
        records += [{k: v for k, v in case.items() if k != "label"} for case in cases]
    return records
