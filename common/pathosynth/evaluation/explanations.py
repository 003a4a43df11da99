"""Which image regions a classifier relies on, for real and synthetic images side by side (paper Sec. 4.6, Fig. 7).

The paper explains predictions with LIME (Ribeiro et al. 2016): the image is cut into superpixels, many copies with
random superpixels hidden are classified, and a linear model fitted to those predictions gives each superpixel a
weight for the predicted class. We use the ``lime`` package with SLIC superpixels when it is installed; otherwise
MONAI's occlusion sensitivity (a sliding hidden patch; how much the predicted class's probability drops) stands in, and
the figure says which method made it. The map is signed: positive regions support the predicted class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch

from ..io.atomic import atomic_path

__all__ = ["explain", "explanation_method", "save_explanation_figure"]


def _lime():
    """(lime_image, SegmentationAlgorithm), or None when the optional ``lime`` package is not installed."""
    try:
        from lime import lime_image
        from lime.wrappers.scikit_image import SegmentationAlgorithm
    except ImportError:
        return None
    return lime_image, SegmentationAlgorithm


def explanation_method() -> str:
    return "lime" if _lime() is not None else "occlusion"


def _probabilities(network, device):
    @torch.no_grad()
    def classify(batch: np.ndarray) -> np.ndarray:  # LIME hands (N, H, W, 3) RGB copies
        images = torch.as_tensor(batch[..., :1], dtype=torch.float32).permute(0, 3, 1, 2).to(device)
        return torch.softmax(network(images), 1).cpu().numpy()

    return classify


def explain(
    network: torch.nn.Module,
    image: np.ndarray,
    method: str | None = None,
    num_samples: int = 1000,
    n_segments: int = 30,
    seed: int = 0,
    device="cpu",
) -> tuple[int, np.ndarray]:
    """(predicted class, (H, W) weight map) for one (1, H, W) image in [0, 1]."""
    network = network.eval().to(device)
    method = method or explanation_method()
    classify = _probabilities(network, device)
    rgb = np.repeat(np.asarray(image, dtype=np.float64)[0][..., None], 3, axis=-1)
    predicted = int(classify(rgb[None]).argmax())
    if method == "lime":
        modules = _lime()
        if modules is None:
            raise ImportError(
                "method 'lime' needs the lime package (pip install lime); 'occlusion' needs nothing extra"
            )
        lime_image, SegmentationAlgorithm = modules
        # compactness 10 (scikit-image's default, on Lab colours): lower values let noisy images collapse to one segment
        segmenter = SegmentationAlgorithm(
            "slic", n_segments=n_segments, compactness=10.0, start_label=0, channel_axis=-1
        )
        explanation = lime_image.LimeImageExplainer(random_state=seed).explain_instance(
            rgb,
            classify,
            labels=(predicted,),
            top_labels=None,
            hide_color=0.0,
            num_samples=num_samples,
            segmentation_fn=segmenter,
            random_seed=seed,
        )
        weights = np.zeros(explanation.segments.max() + 1)
        for segment, weight in explanation.local_exp[predicted]:
            weights[segment] = weight
        return predicted, weights[explanation.segments]
    if method == "occlusion":
        from monai.visualize import OcclusionSensitivity

        size = max(2, image.shape[-1] // 7)
        occlusion = OcclusionSensitivity(network, mask_size=size, n_batch=64, overlap=0.5, mode="gaussian")
        with torch.no_grad():
            maps, _ = occlusion(torch.as_tensor(image, dtype=torch.float32)[None].to(device))
        drop = -maps[0, predicted].cpu().numpy()  # MONAI gives the probability with each patch hidden
        return predicted, drop - drop.mean()
    raise ValueError(f"method must be 'lime' or 'occlusion', got {method!r}")


def save_explanation_figure(
    path: str | os.PathLike,
    network: torch.nn.Module,
    groups: dict[str, tuple[np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    per_class: int = 2,
    method: str | None = None,
    num_samples: int = 1000,
    seed: int = 0,
    device="cpu",
) -> dict:
    """A PNG with, for each group (e.g. "real", "synthetic") side by side, ``per_class`` images of every class and
    their explanation maps. ``groups``: name -> (images (N, 1, H, W) in [0, 1], labels (N,)). Returns a summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    method = method or explanation_method()
    rows = [(c, k) for c in range(len(class_names)) for k in range(per_class)]
    fig, axes = plt.subplots(len(rows), 2 * len(groups), squeeze=False, figsize=(2.4 * len(groups), 1.3 * len(rows)))
    summary = {"method": method, "groups": {}}
    for g, (group, (images, labels)) in enumerate(groups.items()):
        labels = np.asarray(labels)
        summary["groups"][group] = []
        for r, (c, k) in enumerate(rows):
            axis_image, axis_map = axes[r, 2 * g], axes[r, 2 * g + 1]
            axis_image.axis("off")
            axis_map.axis("off")
            members = np.flatnonzero(labels == c)
            if k >= len(members):
                continue
            image = np.asarray(images[members[k]])
            predicted, weights = explain(network, image, method, num_samples, seed=seed, device=device)
            summary["groups"][group].append({"index": int(members[k]), "label": c, "predicted": predicted})
            limit = float(np.abs(weights).max()) or 1.0
            axis_image.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            axis_map.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            axis_map.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6)
            axis_image.set_title(f"{group}: {class_names[c]}", fontsize=7)
            axis_map.set_title(f"{method} -> {class_names[predicted]}", fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return summary
