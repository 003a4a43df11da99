"""Per-class segmentation scores (Dice, precision, recall, HD95, ASSD) and their summary over cases.

Every number comes from a MONAI metric function on one-hot tensors: ``compute_dice``, ``get_confusion_matrix`` +
``compute_confusion_matrix_metric`` (precision, sensitivity), ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``, both spacing-aware, so distances are in the units of
``spacing`` (mm). Pass the true voxel spacing: the EMIDEC re-export carries a nominal (1, 1, 10) header while the
in-plane spacing is ~1.5 mm. HD95 is MONAI's: the larger of the two directed 95th percentiles of surface
distances (linear interpolation); ASSD is the mean over the surface voxels of both masks.

Empty masks (lesion classes are often absent from a case) get these values, never a silent 0 distance:

=====================  ====  =========  ======  ===========
case                   dice  precision  recall  hd95, assd
=====================  ====  =========  ======  ===========
both empty             1     NaN        NaN     0
reference empty only   0     0          NaN     NaN
prediction empty only  0     NaN        0       NaN
=====================  ====  =========  ======  ===========

Why: Dice is the agreement score, and "nothing there, nothing predicted" is full agreement -- with 0 for a
false alarm this rewards a model for not hallucinating lesions. Precision and recall are ratios conditioned on
the predicted / the true voxels; with none there is nothing to measure (0/0), and a 1 would inflate their means
with cases that say nothing about them. Two absent surfaces coincide (distance 0); a distance to a surface that
does not exist is undefined, not large -- any finite penalty would be arbitrary and ``inf`` would make every
mean infinite -- so it is NaN, Dice already carries the failure, and :func:`summarise_scores` counts the NaNs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_confusion_matrix_metric,
    compute_dice,
    compute_hausdorff_distance,
    get_confusion_matrix,
)

from ..data.labels import class_values

__all__ = ["SEGMENTATION_METRICS", "segmentation_scores", "summarise_scores"]

SEGMENTATION_METRICS = ("dice", "precision", "recall", "hd95", "assd")


def _one_hot(label: np.ndarray, values: Sequence[int]) -> torch.Tensor:
    """(1, C, *spatial) float one-hot of the given label values (only the requested classes, no background)."""
    return torch.from_numpy(np.stack([label == v for v in values])[None].astype(np.float32))


def segmentation_scores(
    prediction_label,
    reference_label,
    labels: Mapping[str, int],
    classes: Sequence[str],
    spacing: float | Sequence[float] = 1.0,
) -> dict[str, dict[str, float]]:
    """``{class: {dice, precision, recall, hd95, assd}}`` of a predicted label map against the reference one.

    Label maps are integer arrays (2D or 3D) of the values declared in ``labels``; ``spacing`` is a number
    (isotropic) or one value per axis. Empty masks follow the table in the module docstring.
    """
    pred = np.asarray(prediction_label.cpu() if isinstance(prediction_label, torch.Tensor) else prediction_label)
    ref = np.asarray(reference_label.cpu() if isinstance(reference_label, torch.Tensor) else reference_label)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} label maps differ in shape")
    spacing_list = [float(spacing)] * ref.ndim if np.isscalar(spacing) else [float(s) for s in spacing]
    if len(spacing_list) != ref.ndim:
        raise ValueError(f"spacing {spacing} needs one value per axis of the {ref.ndim}D label maps")
    values = class_values(labels, classes)
    y_pred, y = _one_hot(pred, values), _one_hot(ref, values)

    dice = compute_dice(y_pred, y, include_background=True, ignore_empty=False)[0]
    confusion = get_confusion_matrix(y_pred, y, include_background=True)
    precision = compute_confusion_matrix_metric("precision", confusion)[0]
    recall = compute_confusion_matrix_metric("sensitivity", confusion)[0]

    pred_any, ref_any = y_pred.flatten(2).any(-1)[0], y.flatten(2).any(-1)[0]
    hd95 = torch.where(pred_any | ref_any, math.nan, 0.0).double()  # both empty -> 0, one empty -> NaN
    assd = hd95.clone()
    both = torch.nonzero(pred_any & ref_any).flatten()
    if both.numel():
        pair = (y_pred[:, both], y[:, both])  # then include_background=True: the channels are our classes
        with warnings.catch_warnings():  # MONAI 1.5+ passes its own deprecated argument internally
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
            hd95[both] = compute_hausdorff_distance(*pair, True, percentile=95, spacing=spacing_list)[0].double()
            assd[both] = compute_average_surface_distance(*pair, True, symmetric=True, spacing=spacing_list)[0].double()

    columns = {"dice": dice, "precision": precision, "recall": recall, "hd95": hd95, "assd": assd}
    return {name: {metric: float(column[c]) for metric, column in columns.items()} for c, name in enumerate(classes)}


def summarise_scores(case_scores: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict]]:
    """Per group (class or region) and metric over cases: ``mean``, ``std`` (sample, ddof=1), ``n`` used, ``n_nan``.

    NaNs (undefined values, see the table above) are left out of mean and std and counted in ``n_nan`` so a
    table can say "HD95 over 7 of 10 cases". ``std`` is NaN below two values. Works for any
    ``{group: {metric: value}}`` per case (e.g. :func:`segmentation_scores`, ``lesion_region_similarity``);
    non-numeric entries such as ``"reason"`` are skipped; ``inf`` (PSNR of identical images) stays in and
    makes the mean ``inf``.
    """
    collected: dict[str, dict[str, list[float]]] = {}
    for case in case_scores:
        for group, scores in case.items():
            for metric, value in scores.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    collected.setdefault(group, {}).setdefault(metric, []).append(float(value))
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for group, metrics in collected.items():
        for metric, raw in metrics.items():
            values = np.asarray(raw)
            kept = values[~np.isnan(values)]
            with np.errstate(invalid="ignore"):  # std of values holding inf is NaN, quietly
                std = float(kept.std(ddof=1)) if kept.size > 1 else math.nan
            summary.setdefault(group, {})[metric] = {
                "mean": float(kept.mean()) if kept.size else math.nan,
                "std": std,
                "n": int(kept.size),
                "n_nan": int(values.size - kept.size),
            }
    return summary
