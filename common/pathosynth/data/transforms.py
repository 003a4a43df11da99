"""MONAI dictionary transforms that turn label maps into what the lesion models train on.

The label map stays untouched; these add derived keys, so the same pipeline serves LeFusion-J/S,
RePaint and Cond-Diffusion by configuration alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from .labels import class_values


def masked_context(image: torch.Tensor, union: torch.Tensor, fill: float = -1.0) -> torch.Tensor:
    """Cond-Diffusion's conditioning: the lesion mask and the healthy image with the lesion blanked.

    ``image`` (C, ...) in [-1, 1], ``union`` (1, ...) in {0, 1}; returns (2, ...). Blanked voxels get
    ``fill`` (the bottom of the intensity range), so "no information" is not confused with mid-grey.
    """
    healthy = image[:1] * (1 - union) + fill * union
    return torch.cat([union, healthy], dim=0)


class LesionMasksd(MapTransform):
    """Add one mask channel per texture channel (``mask_key``) and optionally the Cond-Diffusion condition.

    Args:
        keys: the label key.
        labels: class name -> label value.
        channels: texture channels, each a list of class names (e.g. [["MI"], ["PMO"]] for LeFusion-J).
        mask_key: output key of the (C, ...) float mask.
        union_key: output key of the (1, ...) union of all channels — what lesion-centred cropping samples
            from (MONAI's crop samplers read a multi-channel label as one-hot and drop its first channel).
        image_key, condition_key: when ``condition_key`` is set, also add ``masked_context(image, union)``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        labels: Mapping[str, int],
        channels: Sequence[Sequence[str]],
        mask_key: str = "lesion_mask",
        union_key: str = "lesion_union",
        image_key: str = "image",
        condition_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.values = [class_values(labels, names) for names in channels]
        self.mask_key = mask_key
        self.union_key = union_key
        self.image_key = image_key
        self.condition_key = condition_key

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key])[0]
            masks = torch.stack([torch.isin(label, torch.as_tensor(v, device=label.device)) for v in self.values]).float()
            union = masks.amax(dim=0, keepdim=True)
            d[self.mask_key] = masks
            d[self.union_key] = union
            if self.condition_key:
                d[self.condition_key] = masked_context(torch.as_tensor(d[self.image_key]).float(), union)
        return d


def min_max_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] to [-1, 1] (LeFusion's per-volume min-max normalisation)."""
    scale = (high - low) if high > low else 1.0
    return (values.astype(np.float64) - low) / scale * 2.0 - 1.0


def unit_to_min_max(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Inverse of :func:`min_max_to_unit`."""
    scale = (high - low) if high > low else 1.0
    return (values.astype(np.float64) + 1.0) / 2.0 * scale + low


class LesionMaskTargetsd(MapTransform):
    """DiffMask training targets from a label map (paper Sec. 2.3, Eq. 4).

    Adds ``image_key``: the mask channels [MI extent, PMO] scaled to {-1, 1} (what the diffusion model
    generates); ``weight_key``: the anatomy region M_m repeated per channel (Eq. 4 counts the error only
    where lesions may occur); ``condition_key``: the anatomy the model is conditioned on — M_m, plus the
    LV cavity when ``cavity_class`` is given.
    """

    def __init__(
        self,
        keys: KeysCollection,
        labels: Mapping[str, int],
        anatomy_class: str = "myocardium",
        mi_class: str = "MI",
        pmo_class: str = "PMO",
        cavity_class: str | None = None,
        image_key: str = "image",
        weight_key: str = "region",
        condition_key: str = "anatomy",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.labels = dict(labels)
        self.classes = {"anatomy_class": anatomy_class, "mi_class": mi_class, "pmo_class": pmo_class}
        self.cavity = class_values(labels, [cavity_class]) if cavity_class else None
        self.image_key, self.weight_key, self.condition_key = image_key, weight_key, condition_key

    def __call__(self, data):
        from ..masks.postprocess import label_to_masks

        d = dict(data)
        for key in self.key_iterator(d):
            label = np.asarray(torch.as_tensor(d[key])[0].cpu())
            mi_extent, pmo, region = label_to_masks(label, self.labels, **self.classes)
            masks = torch.from_numpy(np.stack([mi_extent, pmo]).astype(np.float32))
            region_t = torch.from_numpy(region[None].astype(np.float32))
            d[self.image_key] = masks * 2 - 1
            d[self.weight_key] = region_t.expand(2, *region_t.shape[1:]).clone()
            condition = [region_t]
            if self.cavity is not None:
                condition.append(torch.from_numpy(np.isin(label, self.cavity)[None].astype(np.float32)))
            d[self.condition_key] = torch.cat(condition)
        return d
