"""The ControlNet's edge condition: image edges OR-ed with the boundaries of every label class (EMIT-Diff Sec. 4.3).

EMIT-Diff extracts image edges with HED, a CNN whose weights would have to be downloaded; we use our torch Canny
(:func:`pathosynth.networks.edges.canny_edges`), which needs no weights, runs batched on the training device and
is deterministic. For fine-tuning on a segmentation task the paper adds "the edge derived from the segmentation
mask", so the synthetic image keeps the annotated structures where the label says they are: here every pixel whose
3x3 neighbourhood holds more than one label value (a 2-pixel band across each class border, background included).
Training and synthesis build the condition with the same object, on the same model-grid slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import as_flag
from .edges import canny_edges


def label_boundaries(label: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) label map -> float {0, 1} map of pixels whose 3x3 neighbourhood holds another label value.

    Replicate padding: the image border is not a boundary.
    """
    if label.ndim != 4 or label.shape[1] != 1:
        raise ValueError(f"expected a (B, 1, H, W) label map, got shape {tuple(label.shape)}")
    padded = F.pad(torch.round(label.float()), (1, 1, 1, 1), mode="replicate")
    high = F.max_pool2d(padded, 3, stride=1)
    low = -F.max_pool2d(-padded, 3, stride=1)
    return (high != low).float()


class EdgeCondition:
    """Edge map of (image, label) slices: Canny(image) OR boundaries(label), either part switchable.

    Args:
        low_threshold, high_threshold: Canny thresholds, fractions of each slice's largest gradient (``relative``).
        sigma: Canny Gaussian smoothing (pixels of the model grid).
        image_edges: include the Canny edges of the image.
        mask_boundaries: include the label class boundaries.
    """

    def __init__(
        self,
        low_threshold: float = 0.1,
        high_threshold: float = 0.2,
        sigma: float = 1.0,
        image_edges: bool = True,
        mask_boundaries: bool = True,
    ) -> None:
        self.low_threshold = float(low_threshold)
        self.high_threshold = float(high_threshold)
        self.sigma = float(sigma)
        self.image_edges = as_flag(image_edges, "image_edges")  # "--edge_image false" arrives as a string
        self.mask_boundaries = as_flag(mask_boundaries, "mask_boundaries")
        if not (self.image_edges or self.mask_boundaries):
            raise ValueError("the edge condition needs image_edges, mask_boundaries or both")

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        """(B, 1, H, W) image (any intensity range) and label -> (B, 1, H, W) float {0, 1} edge map."""
        image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
        edges = torch.zeros_like(image[:, :1], dtype=torch.float32)
        if self.image_edges:
            edges = torch.maximum(
                edges, canny_edges(image.float(), self.low_threshold, self.high_threshold, self.sigma)[:, :1]
            )
        if self.mask_boundaries:
            if label is None:
                raise ValueError("mask_boundaries needs the label map")
            label = label.as_tensor() if hasattr(label, "as_tensor") else torch.as_tensor(label)
            edges = torch.maximum(edges, label_boundaries(label.to(edges.device)))
        return edges

    def settings(self) -> dict:
        return {
            "edge_detector": "canny",
            "canny_low": self.low_threshold,
            "canny_high": self.high_threshold,
            "canny_sigma": self.sigma,
            "image_edges": self.image_edges,
            "mask_boundaries": self.mask_boundaries,
        }
