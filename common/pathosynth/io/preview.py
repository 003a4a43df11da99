"""Preview PNGs so a user can eyeball a synthesis run at a glance: input | mask | synthetic panels, or a class grid."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np

from .atomic import atomic_path


def _zoom_box(mask2d: np.ndarray, margin: int = 24) -> tuple[slice, slice]:
    """In-plane box around the mask (whole slice when the mask is empty)."""
    coords = np.argwhere(mask2d)
    if coords.size == 0:
        return slice(None), slice(None)
    lo = np.maximum(coords.min(0) - margin, 0)
    hi = coords.max(0) + margin + 1
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1]))


def best_slice(mask: np.ndarray) -> int:
    """Index of the last-axis slice with the largest mask area."""
    return int(np.argmax(mask.reshape(-1, mask.shape[-1]).sum(0))) if mask.ndim == 3 else 0


def save_preview(
    path: str | os.PathLike, rows: Sequence[dict], titles: Sequence[str] = ("input", "mask", "synthetic")
) -> None:
    """Write a PNG grid, one row per case: each row dict has ``name``, ``input``, ``label`` (0 where nothing is to
    be shown), ``output`` -- or ``outputs``, several results side by side (e.g. two requested textures) -- (3-D or
    2-D arrays) and ``mask`` (the region of interest); the slice with the largest mask area is shown, zoomed on it,
    with the label values overlaid in the second panel. All panels of a row share one grey scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [list(row["outputs"]) if "outputs" in row else [row["output"]] for row in rows]
    columns = 2 + max(len(r) for r in results)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3 * columns, 3 * len(rows)), squeeze=False)
    for axis_row, row, outputs in zip(axes, rows, results):
        index = best_slice(row["mask"])
        pick = (lambda a: a[..., index]) if np.ndim(row["mask"]) == 3 else (lambda a: a)
        box = _zoom_box(pick(row["mask"]))
        image, label = pick(row["input"])[box], pick(row["label"])[box]
        outputs = [pick(output)[box] for output in outputs]
        low = float(min(image.min(), *(o.min() for o in outputs)))
        high = float(max(image.max(), *(o.max() for o in outputs)))
        axis_row[0].imshow(image.T, cmap="gray", vmin=low, vmax=high, origin="lower")
        axis_row[1].imshow(image.T, cmap="gray", vmin=low, vmax=high, origin="lower")
        axis_row[1].imshow(
            np.ma.masked_equal(label.T, 0), cmap="autumn", alpha=0.6, origin="lower", interpolation="nearest"
        )
        for axis, output in zip(axis_row[2:], outputs):
            axis.imshow(output.T, cmap="gray", vmin=low, vmax=high, origin="lower")
        for axis, title in zip(axis_row, titles):
            axis.set_title(f"{row['name']} · {title}" if title == titles[0] else title, fontsize=8)
        for axis in axis_row:
            axis.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def save_class_grid(path: str | os.PathLike, rows: Mapping[str, Sequence[np.ndarray]], columns: int) -> None:
    """Write a PNG grid of 8-bit images, one row per class (titled with its name), ``columns`` images per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {name: list(images)[:columns] for name, images in rows.items() if len(images)}
    if not rows or columns <= 0:
        return
    fig, axes = plt.subplots(len(rows), columns, squeeze=False, figsize=(1.2 * columns, 1.3 * len(rows)))
    for axis_row, (name, images) in zip(axes, rows.items()):
        for column, axis in enumerate(axis_row):
            axis.axis("off")
            if column < len(images):
                axis.imshow(images[column], cmap="gray", vmin=0, vmax=255)
        axis_row[0].set_title(name, fontsize=8, loc="left")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
