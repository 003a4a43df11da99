"""The downstream segmenter: MONAI DynUNet laid out the way nnU-Net plans its U-Net.

The LeFusion paper scores synthetic data by what it does for nnU-Net. nnU-Net derives the network from
the patch size and voxel spacing: every stage halves an axis only while that axis still has at least
``2 * min_feature_size`` voxels and its spacing is not more than twice the finest spacing (thick slices
are not pooled until the in-plane resolution has caught up); an axis that is that much coarser gets
kernel size 1 instead of 3; features double per stage from ``base_filters`` up to ``max_filters``. The
same rules here give DynUNet's ``kernel_size``/``strides``/``filters`` so the benchmark is nnU-Net's
architecture trained by MONAI engines, in 2D (slice-wise, nnU-Net's choice for EMIDEC's 10 mm slices)
or 3D.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss
from monai.networks.nets import DynUNet

__all__ = ["plan_dynunet", "nnunet_dynunet", "StackedDeepSupervisionLoss"]


def plan_dynunet(
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    base_filters: int = 32,
    max_filters: int | None = None,
    min_feature_size: int = 4,
    max_stages: int = 7,
) -> dict:
    """``{"kernel_size", "strides", "upsample_kernel_size", "filters"}`` for DynUNet (nnU-Net's rules).

    ``max_filters`` defaults to nnU-Net's caps: 512 in 2D, 320 in 3D.
    """
    size = [int(s) for s in patch_size]
    dims = len(size)
    if dims not in (2, 3):
        raise ValueError(f"patch_size {list(patch_size)} must have 2 or 3 axes")
    current = [float(s) for s in (spacing if spacing is not None else [1.0] * dims)]
    if len(current) != dims:
        raise ValueError(f"spacing {list(spacing)} needs one value per axis of patch_size {size}")
    max_filters = max_filters or (512 if dims == 2 else 320)

    kernels = [[3 if s <= 2 * min(current) else 1 for s in current]]
    strides = [[1] * dims]
    while len(strides) < max_stages:
        finest = min(current)
        stride = [2 if (size[a] >= 2 * min_feature_size and current[a] <= 2 * finest) else 1 for a in range(dims)]
        if not any(s == 2 for s in stride):
            break
        size = [sz // st for sz, st in zip(size, stride)]
        current = [c * st for c, st in zip(current, stride)]
        strides.append(stride)
        kernels.append([3 if c <= 2 * min(current) else 1 for c in current])
    filters = [min(base_filters * 2**i, max_filters) for i in range(len(strides))]
    return {"kernel_size": kernels, "strides": strides, "upsample_kernel_size": strides[1:], "filters": filters}


def nnunet_dynunet(
    in_channels: int,
    out_channels: int,
    patch_size: Sequence[int],
    spacing: Sequence[float] | None = None,
    base_filters: int = 32,
    max_filters: int | None = None,
    min_feature_size: int = 4,
    deep_supervision: bool = True,
    deep_supr_num: int = 2,
) -> DynUNet:
    """DynUNet with nnU-Net's plan (instance norm, leaky ReLU, deep supervision on the two coarser heads)."""
    plan = plan_dynunet(patch_size, spacing, base_filters, max_filters, min_feature_size)
    stages = len(plan["strides"])
    if stages < 2:
        raise ValueError(f"patch_size {list(patch_size)} is too small to downsample even once")
    return DynUNet(
        spatial_dims=len(patch_size),
        in_channels=in_channels,
        out_channels=out_channels,
        kernel_size=plan["kernel_size"],
        strides=plan["strides"],
        upsample_kernel_size=plan["upsample_kernel_size"],
        filters=plan["filters"],
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep_supervision,
        deep_supr_num=min(deep_supr_num, stages - 2) if deep_supervision else 1,
        res_block=False,
    )


class StackedDeepSupervisionLoss(DeepSupervisionLoss):
    """MONAI's DeepSupervisionLoss for DynUNet's training output.

    In training mode a deeply supervised DynUNet returns its heads stacked on dim 1 (B, heads, C, ...),
    all upsampled to full size; DeepSupervisionLoss wants them as a list. Anything else (eval-mode output,
    a network without deep supervision) is scored as a single prediction.
    """

    def forward(self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.ndim == target.ndim + 1:
            input = list(torch.unbind(input, dim=1))
        return super().forward(input, target)
