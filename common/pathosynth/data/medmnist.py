"""MedMNIST npz datasets (e.g. PneumoniaMNIST): read and check a split, take a stratified subset, write one.

A MedMNIST file holds ``<split>_images`` (N, H, W) or (N, H, W, C) uint8 and ``<split>_labels`` (N, 1) integer class
indices for the splits ``train``/``val``/``test`` (our PneumoniaMNIST copy has train and val only). The
class-conditional DDPM bundle trains on a stratified per-class fraction of ``train`` (the paper takes 20 % of every
class) and writes its synthetic datasets in the same format, so a classifier reads real and synthetic data the same way.
Labelled image datalists (``{"image": path, "label": class}`` entries, e.g. the bundle's ``datalist.json``) are read
too.

Everything is checked before use and a bad file raises one :class:`~pathosynth.data.errors.DatasetError` naming it.
Class semantics: a MedMNIST file is named after its dataset (``pneumoniamnist.npz``, ``pneumoniamnist_64.npz``), whose
class names MedMNIST's INFO declares (:data:`MEDMNIST_CLASSES`); configured ``class_names`` must agree with them.
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from .errors import DatasetError
from .labels import normalise_label_name
from .layouts import read_json

logger = logging.getLogger(__name__)

# class index -> name of MedMNIST v2 datasets (medmnist.INFO[flag]["label"]), for the files named after them
MEDMNIST_CLASSES = {
    "pneumoniamnist": ("normal", "pneumonia"),
    "breastmnist": ("malignant", "normal, benign"),
    "octmnist": ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
}

__all__ = [
    "MEDMNIST_CLASSES",
    "as_unit_images",
    "check_class_names",
    "check_image_shape",
    "dataset_class_names",
    "find_npz",
    "medmnist_records",
    "medmnist_splits",
    "read_labelled_images",
    "read_medmnist_split",
    "stratified_fraction",
    "write_medmnist_npz",
    "write_toy_medmnist_npz",
]


def find_npz(dataset: str | os.PathLike) -> Path:
    """The npz file itself, or the single ``*.npz`` inside a folder."""
    path = Path(dataset)
    if path.is_file():
        return path
    found = sorted(path.glob("*.npz")) if path.is_dir() else []
    if len(found) != 1:
        raise DatasetError(
            f"{path}: expected a MedMNIST .npz file or a folder holding exactly one, found {[p.name for p in found]}"
        )
    return found[0]


def _read_arrays(path: Path, names: Sequence[str] | None = None) -> tuple[list[str], dict[str, np.ndarray]]:
    """(keys, the named arrays) of an npz file; a truncated or foreign file is a DatasetError naming it."""
    try:
        with np.load(path, allow_pickle=False) as content:
            keys = list(content.files)
            missing = [name for name in names or () if name not in keys]
            if missing:
                raise DatasetError(f"{path}: no array {missing} (keys {sorted(keys)})")
            return keys, {name: content[name] for name in names or ()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{path}: cannot be read as a MedMNIST npz ({type(error).__name__}: {error})") from None


def medmnist_splits(dataset: str | os.PathLike) -> list[str]:
    """The splits (``train``, ``val``, ...) an npz holds images and labels for."""
    keys = set(_read_arrays(find_npz(dataset))[0])
    return sorted(
        k[: -len("_images")] for k in keys if k.endswith("_images") and k[: -len("_images")] + "_labels" in keys
    )


def read_medmnist_split(dataset: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W[, C]) as stored, labels (N,) int64) of one split, after checking keys, shapes and values."""
    path = find_npz(dataset)
    keys = _read_arrays(path)[0]
    if f"{split}_images" not in keys or f"{split}_labels" not in keys:
        raise DatasetError(
            f"{path}: no split '{split}' (keys {sorted(keys)}; need '{split}_images' and '{split}_labels')"
        )
    arrays = _read_arrays(path, [f"{split}_images", f"{split}_labels"])[1]
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.ndim not in (3, 4) or len(images) == 0:
        raise DatasetError(f"{path}: {split}_images must be (N, H, W) or (N, H, W, C) with N > 0, got {images.shape}")
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise DatasetError(
            f"{path}: {split}_labels must hold one class per image (multi-label tasks are not supported), "
            f"got {labels.shape}"
        )
    labels = labels.reshape(-1)
    if len(labels) != len(images):
        raise DatasetError(f"{path}: {len(images)} {split}_images but {len(labels)} {split}_labels")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise DatasetError(
            f"{path}: {split}_labels must be non-negative integer class indices, got {labels.dtype} min {labels.min()}"
        )
    if np.issubdtype(images.dtype, np.floating) and not np.isfinite(images).all():
        raise DatasetError(f"{path}: {split}_images holds NaN or Inf")
    _warn_degenerate(path, split, images, labels)
    return images, labels.astype(np.int64)


def _warn_degenerate(path: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Data that loads but teaches little: one class only (nothing to condition on or tell apart), constant images."""
    classes = np.unique(labels)
    if len(classes) == 1:
        logger.warning(
            f"{path}: every one of the {len(labels)} {split} images is class {int(classes[0])}; "
            "a class-conditional model or a classifier learns nothing from a single class"
        )
    flat = images.reshape(len(images), -1)
    constant = int((flat.min(axis=1) == flat.max(axis=1)).sum())
    if constant:
        logger.warning(f"{path}: {constant} of the {len(images)} {split}_images are constant (a single intensity)")


def dataset_class_names(dataset: str | os.PathLike) -> tuple[str, ...] | None:
    """Class names of a MedMNIST file named after its dataset (``pneumoniamnist.npz``, ``pneumoniamnist_128.npz``)."""
    return MEDMNIST_CLASSES.get(re.sub(r"_\d+$", "", find_npz(dataset).stem.lower()))


def check_class_names(dataset: str | os.PathLike, class_names: Sequence[str]) -> None:
    """Refuse ``class_names`` that contradict the MedMNIST dataset's own (class 1 of PneumoniaMNIST is pneumonia)."""
    known = dataset_class_names(dataset)
    if known is None:
        return
    path = find_npz(dataset)
    problems = [
        f"class {i} is '{known[i]}' in {path.stem} but the config calls {i} '{name}'"
        for i, name in enumerate(class_names)
        if i < len(known) and normalise_label_name(name) != normalise_label_name(known[i])
    ]
    if len(class_names) != len(known):
        problems.append(f"{path.stem} has {len(known)} classes but the config's class_names {len(class_names)}")
    if problems:
        raise DatasetError(f"{path}: " + "; ".join(problems) + f"; set class_names to {list(known)}")


def stratified_fraction(
    labels: np.ndarray, fraction: float = 0.2, seed: int = 0, max_per_class: int | None = None
) -> np.ndarray:
    """Sorted indices of a seeded random ``fraction`` of every class (at least one image each; paper: 20 %),
    optionally capped at ``max_per_class`` (CPU scale). Each class draws from its own seeded generator, so the
    subset of one class does not change when another class is added or removed."""
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    labels = np.asarray(labels).reshape(-1)
    chosen = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        n = max(1, int(round(float(fraction) * len(members))))
        n = n if max_per_class is None else min(n, int(max_per_class))
        order = np.random.default_rng([int(seed), int(value)]).permutation(len(members))
        chosen.append(members[order[:n]])
    return np.sort(np.concatenate(chosen))


def as_unit_images(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1]: uint8 / 255, other types min-max scaled per image."""
    images = np.asarray(images)
    channels = images[:, None] if images.ndim == 3 else np.moveaxis(images, -1, 1)
    if channels.dtype == np.uint8:
        return channels.astype(np.float32) / 255.0
    channels = channels.astype(np.float32)
    low = channels.min(axis=(1, 2, 3), keepdims=True)
    span = channels.max(axis=(1, 2, 3), keepdims=True) - low
    return np.divide(channels - low, span, out=np.zeros_like(channels), where=span > 0)


def medmnist_records(
    dataset: str | os.PathLike,
    split: str = "train",
    fraction: float = 1.0,
    seed: int = 0,
    max_per_class: int | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """MONAI dataset records ``{"image": (C, H, W) float32 in [0, 1], "label": class, "case_id"}`` of a stratified
    ``fraction`` of one split (index order, so the same settings always give the same subset). ``num_classes``: the
    labels must lie in [0, num_classes) (the configured class names). ``class_names``: the configured names, checked
    against the dataset's (:func:`check_class_names`); they also set ``num_classes``."""
    if class_names is not None:
        check_class_names(dataset, class_names)
        num_classes = len(class_names) if num_classes is None else num_classes
    images, labels = read_medmnist_split(dataset, split)
    if num_classes is not None and labels.max() >= int(num_classes):
        raise DatasetError(
            f"{find_npz(dataset)}: {split}_labels hold classes {np.unique(labels).tolist()} but only "
            f"{num_classes} class names are configured"
        )
    keep = stratified_fraction(labels, fraction, seed, max_per_class)
    unit = as_unit_images(images[keep])
    return [{"image": unit[i], "label": int(labels[j]), "case_id": f"{split}_{j:05d}"} for i, j in enumerate(keep)]


def check_image_shape(records: list[dict], shape: list[int], dataset: str | os.PathLike) -> list[dict]:
    """Refuse images whose (C, H, W) is not the configured one (the network's input), naming the file."""
    found = {tuple(r["image"].shape) for r in records}
    if found != {tuple(int(s) for s in shape)}:
        raise DatasetError(
            f"{find_npz(dataset)}: images are {sorted(found)} (C, H, W) but the config expects "
            f"{list(shape)}; set image_channels / image_size"
        )
    return records


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"):
        from PIL import Image

        return np.asarray(Image.open(path))
    import nibabel as nib

    return np.squeeze(np.asanyarray(nib.load(path).dataobj))


def read_labelled_images(
    source: str | os.PathLike, split: str = "train", datalist_key: str = "training"
) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, C, H, W) float32 in [0, 1], labels (N,)) from a MedMNIST npz (or its folder) or a datalist JSON
    whose ``datalist_key`` entries hold ``image`` (PNG or 2D NIfTI, relative to the JSON's folder) and ``label``
    (class index). This is what the classifier configs read, for real and synthetic data alike."""
    path = Path(source)
    if path.suffix.lower() != ".json":
        images, labels = read_medmnist_split(path, split)
        return as_unit_images(images), labels
    content = read_json(path)
    entries = content.get(datalist_key) if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"{path}: no '{datalist_key}' entries")
    images, labels = [], []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not entry["image"]:
            raise DatasetError(
                f"{path}: entry {index} of '{datalist_key}' needs an 'image' file path (a string), got {entry!r}"
            )
        file = path.parent / entry["image"]
        if not file.is_file():
            raise DatasetError(f"{path}: image {file} does not exist")
        label = entry.get("label")
        if isinstance(label, bool) or not isinstance(label, int) or label < 0:
            raise DatasetError(
                f"{path}: entry {entry['image']} needs a non-negative integer class 'label', got {label!r}"
            )
        images.append(_read_image(file))
        labels.append(label)
    if len({image.shape for image in images}) != 1:
        raise DatasetError(
            f"{path}: images differ in shape {sorted({str(i.shape) for i in images})}; resample them to one size first"
        )
    return as_unit_images(np.stack(images)), np.asarray(labels, dtype=np.int64)


def write_medmnist_npz(path: str | os.PathLike, splits: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write ``{split: (images uint8 (N, H, W[, C]), labels (N,))}`` as a MedMNIST npz, atomically."""
    arrays = {}
    for split, (images, labels) in splits.items():
        arrays[f"{split}_images"] = np.asarray(images, dtype=np.uint8)
        arrays[f"{split}_labels"] = np.asarray(
            labels, dtype=np.uint8 if np.max(labels, initial=0) < 256 else np.int64
        ).reshape(-1, 1)
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)
    return Path(path)


def write_toy_medmnist_npz(path: str | os.PathLike) -> Path:
    """A two-class MedMNIST-style npz of 16x16 images, 8 train + 4 val per class, dark vs bright upper half: what the
    tests and ``make gpu-check`` train and score the class-conditional bundle on. Not real data; seeded."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = np.repeat([0, 1], n)
        images = np.full((2 * n, 16, 16), 30.0)
        images[:, :8] = np.where(labels == 1, 220, 90)[:, None, None]
        return np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8), labels

    return write_medmnist_npz(path, {"train": split(8), "val": split(4)})
