"""Figures of the study reports: one way to get a headless pyplot, save atomically, and draw a row of image panels.

Reports run on servers without a display and may be interrupted; a half-written PNG must never look finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path

__all__ = ["image_row", "pyplot", "save_figure"]


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 90) -> None:
    """Lay out, write ``path`` atomically as PNG, and release the figure."""
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)


def image_row(
    path: str | Path,
    panels: Sequence[tuple[str, np.ndarray, str]],
    intensity_range: tuple[float, float],
    label_max: int,
) -> None:
    """One row of (title, 2-D array, colormap) panels, rotated for display: grey panels share ``intensity_range``
    (the real image's, so synthetic images are judged on its scale), label maps ("viridis") span 0..``label_max``."""
    fig, axes = pyplot().subplots(1, len(panels), figsize=(1.8 * len(panels), 2.1))
    for axis, (name, data, cmap) in zip(np.atleast_1d(axes), panels):
        low, high = (0, label_max) if cmap == "viridis" else intensity_range
        axis.imshow(np.rot90(data), cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(name, fontsize=7)
        axis.axis("off")
    save_figure(fig, path)
