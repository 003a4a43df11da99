"""MONAI dictionary transforms that turn label maps into what the lesion models train on, and the
random-rectangle masking of the context-encoder pretext task, and a low-resolution simulation that degrades a real image
and its synthetic variant alike.

The label map stays untouched; these add derived keys, so the same pipeline serves LeFusion-J/S,
RePaint and Cond-Diffusion by configuration alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, RandomizableTransform, RandSimulateLowResolutiond
from monai.utils import convert_to_tensor

from .labels import class_values, label_to_masks


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
            masks = torch.stack(
                [torch.isin(label, torch.as_tensor(v, device=label.device)) for v in self.values]
            ).float()
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


class RandRectangleMaskd(RandomizableTransform, MapTransform):
    """Blank one random rectangle of a 2-D image and keep both the original and the mask (context encoder).

    Pathak et al. (2016) learn features by inpainting: the network sees the image with a region removed and is
    scored on reconstructing that region only, so the loss needs to know where the region is. MONAI's
    ``RandCoarseDropoutd`` blanks regions but does not return them; this transform does.

    For the one key in ``keys`` (a (C, H, W) image): ``target_key`` gets the original image, the key the image with
    ``fill`` inside the rectangle (0 after z-score normalisation is the mean intensity, Pathak's fill), and
    ``mask_key`` a (1, H, W) float mask (1 = blanked). The rectangle covers a number of pixels drawn uniformly from
    ``area_fraction`` × H·W (inclusive, exact: rounding never leaves the range), with height/width ratio drawn
    log-uniformly from ``aspect_ratio``, at a uniform position. Seeded like every MONAI random transform
    (``set_random_state``; the bundle's ``set_determinism`` and DataLoader seed it).
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        target_key: str = "target",
        area_fraction: Sequence[float] = (0.1, 0.25),
        aspect_ratio: Sequence[float] = (0.5, 2.0),
        fill: float = 0.0,
        prob: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        if len(self.keys) != 1:
            raise ValueError(f"RandRectangleMaskd masks one image key; got {list(self.keys)}")
        self.area_fraction = (float(area_fraction[0]), float(area_fraction[1]))
        self.aspect_ratio = (float(aspect_ratio[0]), float(aspect_ratio[1]))
        if not 0.0 < self.area_fraction[0] <= self.area_fraction[1] <= 1.0:
            raise ValueError(f"area_fraction must satisfy 0 < low <= high <= 1, got {list(area_fraction)}")
        if not 0.0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
            raise ValueError(f"aspect_ratio must satisfy 0 < low <= high, got {list(aspect_ratio)}")
        self.mask_key, self.target_key, self.fill = mask_key, target_key, float(fill)
        self.box: tuple[slice, slice] | None = None

    def randomize(self, spatial_shape: Sequence[int]) -> None:
        super().randomize(None)
        if not self._do_transform:
            self.box = None
            return
        height, width = (int(s) for s in spatial_shape)
        low, high = (
            math.ceil(self.area_fraction[0] * height * width),
            math.floor(self.area_fraction[1] * height * width),
        )
        area = int(self.R.randint(max(low, 1), high + 1)) if high >= max(low, 1) else 0
        ratio = math.exp(self.R.uniform(math.log(self.aspect_ratio[0]), math.log(self.aspect_ratio[1])))
        ideal = math.sqrt(area * ratio)
        for h in sorted(range(1, height + 1), key=lambda v: (abs(v - ideal), v)):  # the height nearest the drawn shape
            w_low, w_high = max(1, -(-low // h)), min(width, high // h)  # whose width range keeps the area in range
            if area and w_low <= w_high:
                w = min(max(round(area / h), w_low), w_high)
                break
        else:
            raise ValueError(
                f"no rectangle of an image of {height}x{width} pixels covers {list(self.area_fraction)} of it"
            )
        top, left = int(self.R.randint(0, height - h + 1)), int(self.R.randint(0, width - w + 1))
        self.box = (slice(top, top + h), slice(left, left + w))

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 3:
                raise ValueError(
                    f"RandRectangleMaskd needs a (C, H, W) image under '{key}', got shape {tuple(image.shape)}"
                )
            self.randomize(image.shape[1:])
            mask = torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
            masked = image.clone()
            if self.box is not None:
                mask[(slice(None), *self.box)] = 1.0
                masked[(slice(None), *self.box)] = self.fill
            d[self.target_key], d[key], d[self.mask_key] = image, masked, mask
        return d


class JointRandSimulateLowResolutiond(RandSimulateLowResolutiond):
    """MONAI's ``RandSimulateLowResolutiond`` (down- then upsample by a random zoom factor) with one factor per call for
    all its keys.

    MONAI 1.6's dictionary version lets its array transform draw a new factor for every key, so a real image and its
    synthetic variant (EMIT-Diff Algorithm 1) would be degraded to different resolutions before being mixed patch by
    patch; here the factor is drawn once, as a dictionary transform's parameters usually are.
    """

    def __call__(self, data):
        d = dict(data)
        self.randomize(None)
        if self._do_transform:
            self.sim_lowres_tfm.randomize(None)
        for key in self.key_iterator(d):
            if self._do_transform:
                d[key] = self.sim_lowres_tfm(d[key], randomize=False)
            else:
                d[key] = convert_to_tensor(d[key], track_meta=get_track_meta(), dtype=torch.float32)
        return d
