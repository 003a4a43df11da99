"""How a synthetic sample becomes files: the image-format strategies of the synthetic-dataset writer.

The writer (:mod:`pathosynth.io.synthetic_dataset`) owns what every synthetic dataset shares (sharding, resume,
provenance, identity, datalist); a format owns only what depends on the file type: where a sample's files go and
how they are written (atomically), which extra files the merged dataset gets, and its preview.

- :class:`NiftiFormat`: image and label map on the grid (affine, header, dtype) of the case they came from.
- :class:`PngFormat`: an 8-bit image per sample whose label is a class index (MedMNIST style), optionally an
  archive of all of them (e.g. the MedMNIST npz) and a class-grid preview.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .atomic import atomic_path
from .nifti import write_nifti_like
from .preview import save_class_grid, save_preview


@dataclass
class SyntheticSample:
    """One generated sample: ``image`` (and a ``label`` array for segmentation formats) plus its provenance record
    (``seed``, ``source_image``, ...; for :class:`NiftiFormat` also ``source_label``, whose grids the files copy)."""

    output_id: str
    image: np.ndarray
    record: dict
    label: np.ndarray | None = None


class NiftiFormat:
    """``images/<id>.nii.gz`` and ``labels/<id>.nii.gz`` on the source case's grid; preview: input | mask | synthetic.

    Args:
        preview_cases: how many cases the preview shows (0 = no preview).
        preview_labels: label values shown in the preview's mask panel (None = every non-zero label).
    """

    name = "nifti"
    folders = ("images", "labels")
    fixed_outputs = ("datalist.json", "preview.png")

    def __init__(self, preview_cases: int = 4, preview_labels: Sequence[int] | None = None) -> None:
        self.preview_cases = int(preview_cases)
        self.preview_labels = None if preview_labels is None else [int(v) for v in preview_labels]

    def write(self, folder: Path, sample: SyntheticSample) -> dict:
        image_path, label_path = f"images/{sample.output_id}.nii.gz", f"labels/{sample.output_id}.nii.gz"
        write_nifti_like(folder / image_path, sample.image, nib.load(sample.record["source_image"]))
        write_nifti_like(folder / label_path, sample.label, nib.load(sample.record["source_label"]))
        return {"image": image_path, "label": label_path}

    def finish(self, folder: Path, records: Sequence[Mapping]) -> None:
        """``preview.png``: input | mask | synthetic of the first few finished cases."""
        rows = []
        for record in list(records)[: max(self.preview_cases, 0)]:
            source = nib.load(record["source_image"]).get_fdata()
            output = nib.load(folder / record["image"]).get_fdata()
            label = np.asanyarray(nib.load(folder / record["label"]).dataobj)
            shown = np.isin(label, self.preview_labels) if self.preview_labels is not None else label > 0
            rows.append(
                {
                    "name": record["output_id"],
                    "input": source,
                    "output": output,
                    "label": np.where(shown, label, 0),
                    "mask": shown,
                }
            )
        if rows:
            save_preview(folder / "preview.png", rows)


@dataclass
class PngFormat:
    """``images/<id>.png`` (8-bit, (C, H, W) arrays; the record's ``label`` is a class index).

    Args:
        class_names: class of label 0, 1, ... (preview rows, in this order, for the classes present).
        preview_per_class: images per class row of ``preview.png`` (0 = no preview).
        archive: ``(path, images (N, H, W[, C]) uint8, labels)`` writer of one file holding every sample, e.g. the
            MedMNIST npz; written as ``archive_name``.
    """

    class_names: Sequence[str]
    preview_per_class: int = 8
    archive: Callable[[Path, np.ndarray, list[int]], object] | None = None
    archive_name: str = "synthetic.npz"
    name: str = field(default="png", init=False)
    folders: tuple = field(default=("images",), init=False)

    @property
    def fixed_outputs(self) -> tuple[str, ...]:
        return ("datalist.json", "preview.png") + ((self.archive_name,) if self.archive is not None else ())

    def write(self, folder: Path, sample: SyntheticSample) -> dict:
        from PIL import Image

        image = np.asarray(sample.image)
        image_path = f"images/{sample.output_id}.png"
        with atomic_path(folder / image_path) as tmp:
            Image.fromarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)).save(tmp, format="PNG")
        return {"image": image_path}

    def finish(self, folder: Path, records: Sequence[Mapping]) -> None:
        """The archive of every sample and the class-grid preview."""
        from PIL import Image

        if not records:
            return
        images = np.stack([np.asarray(Image.open(folder / r["image"])) for r in records])
        if self.archive is not None:
            self.archive(folder / self.archive_name, images, [int(r["label"]) for r in records])
        if self.preview_per_class > 0:
            rows = {
                name: [image for image, r in zip(images, records) if r["label"] == index]
                for index, name in enumerate(self.class_names)
            }
            save_class_grid(folder / "preview.png", rows, self.preview_per_class)
