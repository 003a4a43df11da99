"""Image similarity between a synthetic and a real image: PSNR, SSIM, MS-SSIM, MAE, MSE, RMSE, whole or in a region.

Conventions (each chosen so that two methods evaluated by different people give comparable numbers):

- **Declared intensity range.** Both images are clipped to ``data_range = (low, high)`` and mapped to [0, 1]
  first. PSNR's peak is thus the declared range, not the data's max, and MAE/MSE/RMSE are in units of that
  range (times ``high - low`` for raw intensities): a data-derived peak would put two methods on different
  scales for the same case. Values beyond the range saturate; declare a wider one if overshoot matters.
- **Identical images** give MSE 0 and PSNR ``inf`` (the honest limit of 10·log10(1/MSE); average PSNR over
  cases with care, or report the median) and SSIM 1.
- **Regions.** MAE/MSE/RMSE/PSNR use the region's voxels only. SSIM is windowed, so the local SSIM map of the
  *whole* image is averaged over the region's voxels (the standard restriction: each window still sees the
  voxel's surroundings). Map centres need a full window (MONAI and Wang et al. crop the map by half a
  window), so region voxels within 5 px of the image edge do not count. MS-SSIM weights each scale's map by
  the region, average-pooled like the images.
- **Empty region** (or no full window in it): NaN and ``result["reason"]`` says why -- never 0 or inf, which
  would read as a perfect or a worst case.
- **Thick slices.** (H, W, D) volumes are D in-plane images: 2D windows per slice, then the mean (MS-SSIM:
  per slice, weighted by the slice's region voxels). Slices ~10 mm apart against ~1.5 mm pixels would make a
  3D window mix structures 1-2 cm apart as neighbours; the 11-voxel window is longer than the 4-10 slices.
- **MS-SSIM** needs its coarsest of 5 scales (in-plane / 16) to hold the 11-px window: >= 176 px in-plane.
  Smaller images get NaN with a reason; fewer scales would be a different, non-comparable metric.

SSIM maps come from MONAI's ``compute_ssim_and_cs`` (11-px Gaussian window, sigma 1.5, k1 0.01, k2 0.03).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.metrics.regression import compute_ssim_and_cs

from ..data.labels import class_values

__all__ = ["IMAGE_METRICS", "image_similarity", "lesion_region_similarity", "per_slice_ssim", "ssim_map"]

IMAGE_METRICS = ("psnr", "ssim", "ms_ssim", "mae", "mse", "rmse")
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, as in MONAI


def _spatial(array, spatial_dims: int | None, name: str) -> np.ndarray:
    """numpy (H, W) or (H, W, D); leading singleton axes (batch, channel) are dropped."""
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    dims = spatial_dims or min(a.ndim, 3)
    if dims not in (2, 3) or a.ndim < dims or any(n != 1 for n in a.shape[: a.ndim - dims]):
        raise ValueError(f"{name} must be (H, W) or (H, W, D) (leading singleton axes allowed), got {a.shape}")
    return a.reshape(a.shape[a.ndim - dims :])


def _normalise(image: np.ndarray, data_range: Sequence[float]) -> np.ndarray:
    low, high = (float(v) for v in data_range)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"data_range must be finite (low, high) with high > low, got {data_range}")
    if not np.isfinite(image).all():
        raise ValueError("images must be finite; NaN/inf intensities are an upstream bug, not a similarity")
    return (np.clip(image.astype(np.float64), low, high) - low) / (high - low)


def _slice_batch(volume: np.ndarray) -> torch.Tensor:
    """(H, W) -> (1, 1, H, W); (H, W, D) -> (D, 1, H, W): slices become the batch, so windows stay in-plane."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.atleast_3d(volume), -1, 0)[:, None])).float()


def _prepare(prediction, reference, data_range, spatial_dims: int | None) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _spatial(prediction, spatial_dims, "prediction"), _spatial(reference, spatial_dims, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    return _normalise(pred, data_range), _normalise(ref, data_range)


def _scales_needed(metrics: Sequence[str]) -> int:
    if unknown := [m for m in metrics if m not in IMAGE_METRICS]:
        raise ValueError(f"unknown metrics {unknown}; available: {IMAGE_METRICS}")
    return len(MS_SSIM_WEIGHTS) if "ms_ssim" in metrics else int("ssim" in metrics)


def _local_maps(pred01: np.ndarray, ref01: np.ndarray, n_scales: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """MONAI's (ssim, cs) valid-window maps of the slices at successive 2x-pooled scales (while the window fits);
    computed once per image pair and shared by all its regions."""
    x, y, maps = _slice_batch(pred01), _slice_batch(ref01), []
    while len(maps) < n_scales and min(x.shape[-2:]) >= SSIM_WINDOW:
        ssim, cs = compute_ssim_and_cs(x, y, 2, (SSIM_WINDOW,) * 2, (SSIM_SIGMA,) * 2, data_range=1.0)
        maps.append((ssim.double(), cs.double()))
        x, y = F.avg_pool2d(x, kernel_size=2), F.avg_pool2d(y, kernel_size=2)
    return maps


def _full_size(maps: list, shape: tuple[int, ...]) -> np.ndarray:
    """The scale-0 SSIM map at image size, NaN within half a window of the in-plane edge (no full window there)."""
    out, r = np.full(shape, np.nan), SSIM_WINDOW // 2
    if maps:
        local = np.moveaxis(maps[0][0][:, 0].numpy(), 0, -1)
        out[r : shape[0] - r, r : shape[1] - r] = local[..., 0] if len(shape) == 2 else local
    return out


def ssim_map(prediction, reference, data_range: tuple[float, float], spatial_dims: int | None = None) -> np.ndarray:
    """Local SSIM at every voxel (in-plane windows), NaN where no full window fits; shape of the inputs."""
    pred01, ref01 = _prepare(prediction, reference, data_range, spatial_dims)
    return _full_size(_local_maps(pred01, ref01, 1), pred01.shape)


def per_slice_ssim(prediction, reference, data_range: tuple[float, float]) -> np.ndarray:
    """SSIM of each slice of (H, W, D) volumes, shape (D,); a slice depends on that slice alone."""
    local = ssim_map(prediction, reference, data_range, spatial_dims=3)
    valid = ~np.isnan(local)
    with np.errstate(invalid="ignore"):
        return np.where(valid, local, 0.0).sum(axis=(0, 1)) / valid.sum(axis=(0, 1))


def _ms_ssim(maps: list, region: np.ndarray) -> tuple[float, str | None]:
    """MS-SSIM per slice (each scale's map averaged, pooled region as weights); slices weighted by region size."""
    n_scales = len(MS_SSIM_WEIGHTS)
    if len(maps) < n_scales:
        needed = SSIM_WINDOW << (n_scales - 1)
        return math.nan, (
            f"ms_ssim: {n_scales} scales of an {SSIM_WINDOW}-px window need >= {needed} px in-plane, "
            f"got {region.shape[0]}x{region.shape[1]}"
        )
    weight = _slice_batch(region.astype(np.float64)).double()
    slice_weight, r, per_scale = weight.sum(dim=(1, 2, 3)), SSIM_WINDOW // 2, []
    for scale, (ssim, cs) in enumerate(maps):
        local = ssim if scale == n_scales - 1 else cs  # MONAI: cs at every scale but the coarsest, SSIM there
        w = weight[..., r : weight.shape[-2] - r, r : weight.shape[-1] - r]
        per_scale.append(torch.relu((local * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3))))  # 0/0 -> NaN
        weight = F.avg_pool2d(weight, kernel_size=2)
    exponents = torch.tensor(MS_SSIM_WEIGHTS, dtype=torch.float64)[:, None]
    per_slice = (torch.stack(per_scale) ** exponents).prod(dim=0)
    usable = ~torch.isnan(per_slice) & (slice_weight > 0)
    if not usable.any():
        return math.nan, "ms_ssim: no region voxel has a full window at every scale (region at the image edge)"
    return float((per_slice[usable] * slice_weight[usable]).sum() / slice_weight[usable].sum()), None


def _region_scores(pred01, ref01, mask: np.ndarray, metrics: Sequence[str], maps: list) -> dict[str, float | str]:
    if not mask.any():
        return {**{m: math.nan for m in metrics}, "reason": "empty region: no voxels to compare"}
    diff = (pred01 - ref01)[mask]
    mse = float(np.mean(diff**2))
    values = {
        "mae": float(np.mean(np.abs(diff))),
        "mse": mse,
        "rmse": math.sqrt(mse),
        "psnr": math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse),
    }
    reasons = []
    if "ssim" in metrics:
        local = _full_size(maps, mask.shape)[mask]
        local = local[~np.isnan(local)]
        values["ssim"] = float(local.mean()) if local.size else math.nan
        if not local.size:
            reasons.append(f"ssim: no region voxel has a full {SSIM_WINDOW}-px window (small image or region at edge)")
    if "ms_ssim" in metrics:
        values["ms_ssim"], reason = _ms_ssim(maps, mask)
        reasons += [reason] if reason else []
    result: dict[str, float | str] = {m: values[m] for m in metrics}
    if reasons:
        result["reason"] = "; ".join(reasons)
    return result


def image_similarity(
    prediction,
    reference,
    data_range: tuple[float, float],
    region: np.ndarray | None = None,
    spatial_dims: int | None = None,
    metrics: Sequence[str] = IMAGE_METRICS,
) -> dict[str, float | str]:
    """Similarity of ``prediction`` to ``reference`` (numpy or torch, (H, W) or (H, W, D)) on the declared range.

    ``region`` (same shape, truthy = inside) restricts every metric as described in the module docstring.
    ``spatial_dims`` says how many trailing axes are spatial when leading singleton axes would make it
    ambiguous (e.g. (1, H, W) with ``spatial_dims=2``). Returns ``{metric: value}``, plus ``"reason"`` whenever
    a value is NaN.
    """
    n_scales = _scales_needed(metrics)
    pred01, ref01 = _prepare(prediction, reference, data_range, spatial_dims)
    mask = np.ones(ref01.shape, bool) if region is None else _spatial(region, ref01.ndim, "region").astype(bool)
    if mask.shape != ref01.shape:
        raise ValueError(f"region {mask.shape} does not match the images {ref01.shape}")
    maps = _local_maps(pred01, ref01, n_scales) if mask.any() else []
    return _region_scores(pred01, ref01, mask, metrics, maps)


def lesion_region_similarity(
    synthetic,
    real,
    label,
    labels: Mapping[str, int],
    classes: Sequence[str] = ("MI", "PMO"),
    data_range: tuple[float, float] | None = None,
    metrics: Sequence[str] = IMAGE_METRICS,
) -> dict[str, dict[str, float | str]]:
    """Per-lesion-class similarity of a synthetic case to the real one it was made from (LeFusion Tab. 2).

    Regions come from ``label`` (the real case's label map): each class in ``classes``, ``"all lesions"`` (their
    union) and ``"background"`` -- every voxel outside the lesions, which an inpainting method should leave
    as it was. ``data_range`` defaults to the real volume's (min, max): the real image defines the scale the
    synthetic one is judged on, and one range is shared by all regions of the case so they are comparable.
    """
    n_scales = _scales_needed(metrics)
    real_np = _spatial(real, None, "real")
    label_np = _spatial(label, real_np.ndim, "label")
    if label_np.shape != real_np.shape:
        raise ValueError(f"label {label_np.shape} does not match the images {real_np.shape}")
    data_range = (float(real_np.min()), float(real_np.max())) if data_range is None else data_range
    pred01, ref01 = _prepare(synthetic, real_np, data_range, real_np.ndim)
    regions = {name: label_np == value for name, value in zip(classes, class_values(labels, classes))}
    lesion = np.isin(label_np, class_values(labels, classes))
    regions.update({"all lesions": lesion, "background": ~lesion})
    maps = _local_maps(pred01, ref01, n_scales)  # once per case, shared by every region
    return {name: _region_scores(pred01, ref01, mask, metrics, maps) for name, mask in regions.items()}
