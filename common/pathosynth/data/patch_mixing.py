"""EMIT-Diff Algorithm 1: train a segmenter on real images mixed patch-wise with their own synthetic variants.

Why: a text+edge-guided synthetic variant x_i keeps its source's anatomy (its label is the real label, reused) but
not its intensities. Mixing real and synthetic patches inside one training image, by a random patch mask m whose
real fraction is alpha, keeps the network from leaning on either appearance (paper Sec. 4.4, ablations Sec. 6.2-6.3).
Because every variant is pixel-aligned with its source, the mixing is only valid when real image, variant and label
went through the *same* spatial transforms -- configs give all of them the same keys in every spatial transform.

The pieces, in the order a training step meets them:

- :func:`pair_synthetic_variants`: real case records + synthetic datalists -> each real record with the list of
  its variants (the pairing key is the variant's ``source_image``); refuses a real case without a variant and a
  variant whose voxel grid differs from its source's, naming the files.
- :class:`RandSyntheticVariantd`: picks ONE variant i ~ 1..n each time a case is fetched (seeded like every MONAI
  random transform, so ``set_determinism`` makes runs repeatable).
- :class:`RandPatchMaskd` / :func:`random_patch_mask`: the patch mask m (1 = real), drawn per training image.
- :func:`prepare_patch_mixing_batch` + :class:`PatchMixingInferer`: the mixing step, in the paper's form
  (``mix="image"``: the network sees m*x0 + (1-m)*xi) or the official code's (``mix="prediction"``: the network
  sees x0 and xi in two forward passes and the loss sees m*C(x0) + (1-m)*C(xi)). In both, the target is
  m*y0 + (1-m)*yi, which is y when the variant reuses the real label (EMIT-Diff's case).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.inferers import Inferer
from monai.transforms import MapTransform, Randomizable, Transform

from .cases import check_data_labels
from .errors import DatasetError
from .layouts import read_datalist
from .validation import validate_cases

logger = logging.getLogger(__name__)

__all__ = [
    "MIX_MODES",
    "PatchMixingInferer",
    "RandPatchMaskd",
    "RandSyntheticVariantd",
    "mix_patches",
    "pair_synthetic_variants",
    "prepare_patch_mixing_batch",
    "random_patch_mask",
]

MIX_MODES = ("image", "prediction")
VARIANT, VARIANT_LABEL, VARIANT_ID, MASK = "variant", "variant_label", "variant_id", "mix_mask"


def random_patch_mask(
    spatial_shape: Sequence[int],
    patch_size: int | Sequence[int],
    alpha: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The paper's generate-random-patch(alpha, patch size), a float {0, 1} tensor of ``spatial_shape``; 1 = real.

    A uniform random matrix of ceil(shape / patch_size) entries, entries < alpha set to 1 and the rest to 0,
    upsampled by nearest neighbour (each entry repeated ``patch_size`` times along every axis), cropped to the
    shape. So every patch-aligned block is constant, and each block is real with probability alpha:
    alpha = 1 gives only real pixels, alpha = 0 only synthetic ones (U[0, 1) never reaches 1 nor stays below 0).
    """
    shape = tuple(int(s) for s in spatial_shape)
    patch = (
        (int(patch_size),) * len(shape)
        if isinstance(patch_size, (int, np.integer))
        else tuple(int(p) for p in patch_size)
    )
    if len(patch) != len(shape) or min(patch, default=1) < 1:
        raise ValueError(f"patch_size must be a positive int or one per spatial axis of {shape}, got {patch_size!r}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (the real-patch probability) must lie in [0, 1], got {alpha!r}")
    grid = [math.ceil(s / p) for s, p in zip(shape, patch)]
    mask = (torch.rand(grid, generator=generator) < float(alpha)).float()
    for axis, size in enumerate(patch):
        mask = mask.repeat_interleave(size, dim=axis)
    return mask[tuple(slice(0, s) for s in shape)].contiguous()


def mix_patches(real: torch.Tensor, synthetic: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """m*real + (1-m)*synthetic for a binary mask (B, 1, *spatial), broadcast over channels (and any stacked
    deep-supervision axis). Computed as a selection, which equals the formula for m in {0, 1} and keeps label
    values exact."""
    if real.shape != synthetic.shape:
        raise ValueError(
            "real and synthetic tensors must have one shape to mix, "
            f"got {tuple(real.shape)} and {tuple(synthetic.shape)}"
        )
    spatial = mask.shape[2:]
    if mask.shape[0] != real.shape[0] or tuple(real.shape[-len(spatial) :]) != tuple(spatial):
        raise ValueError(
            f"mask {tuple(mask.shape)} does not fit tensors of shape {tuple(real.shape)} "
            "(batch and spatial size must agree)"
        )
    mask = mask.reshape(mask.shape[0], *([1] * (real.ndim - 1 - len(spatial))), *spatial).to(real.device)
    return torch.where(mask > 0.5, real, synthetic)


# --- pairing -------------------------------------------------------------------------------------------------------


def _same_file_key(path: str | os.PathLike) -> str:
    return os.path.normcase(os.path.realpath(path))


def _grid(path: str) -> tuple[tuple[int, ...], np.ndarray]:
    """(spatial shape without trailing singleton axes, affine) from the NIfTI header alone."""
    image = nib.load(path)
    shape = tuple(int(s) for s in image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape, image.affine


def _variants_of_datalist(path: str | os.PathLike, labels: Mapping[str, int], key: str) -> tuple[list[dict], list[str]]:
    """Validated variant records ({image, label, case_id, source_image, datalist}) of one synthetic datalist, and the
    problems of entries that cannot be paired."""
    records = read_datalist(path, key)  # image/label paths resolved, ids unique
    check_data_labels(labels, datalist=path, source=f"synthetic datalist {path}")  # variant labels mean what ours do
    validate_cases(records, labels, source=f"synthetic datalist {path}")  # loads, shapes, affines, label values
    entries = json.loads(Path(path).read_text())[key]
    base = Path(path).resolve().parent
    variants, problems = [], []
    for index, (entry, record) in enumerate(zip(entries, records)):
        source = entry.get("source_image")
        if not source:
            problems.append(
                f"synthetic datalist {path}: entry {index} ({record['image']}) has no 'source_image', so it cannot be "
                "paired with its real image (SynthesisRunner datalists carry it)"
            )
            continue
        source = Path(source) if Path(source).is_absolute() else base / source
        variants.append(
            {
                "image": record["image"],
                "label": record["label"],
                "case_id": record["case_id"],
                "source_image": str(source),
                "datalist": str(path),
            }
        )
    return variants, problems


def pair_synthetic_variants(
    real_cases: Sequence[Mapping],
    synthetic_datalists: str | os.PathLike | Sequence[str | os.PathLike],
    labels: Mapping[str, int],
    datalist_key: str = "training",
    variants_per_case: int | None = None,
) -> list[dict]:
    """Every real case record with ``"variants"``: its synthetic variants, i = 1..n, in datalist order.

    A variant belongs to the real case whose image path its ``source_image`` names (paths compared after
    resolving links and relative parts). Checked before any training step, one :class:`DatasetError` listing
    every problem: a real case without a variant, a variant whose shape or affine differs from its source's
    (Algorithm 1 mixes pixel-aligned pairs), an entry without ``source_image``, and (``variants_per_case`` = n,
    the paper's augmentation ratio of Sec. 6.1) a case with fewer than n variants; with n set, the first n are
    used. Variants of images that are not among ``real_cases`` (e.g. of test cases) are left out, with a warning.
    """
    paths = (
        [synthetic_datalists]
        if isinstance(synthetic_datalists, (str, os.PathLike))
        else list(synthetic_datalists or [])
    )
    if not paths:
        raise DatasetError(
            "no synthetic datalist given: Algorithm 1 mixes each real image with one of its synthetic variants "
            "(leave synthetic_datalists empty only to train the baseline without mixing)"
        )
    if variants_per_case is not None and int(variants_per_case) < 1:
        raise ValueError(
            f"variants_per_case must be a positive number of variants (or null for all), got {variants_per_case!r}"
        )
    problems: list[str] = []
    by_source: dict[str, list[dict]] = {}
    for path in paths:
        variants, found = _variants_of_datalist(path, labels, datalist_key)
        problems += found
        for variant in variants:
            by_source.setdefault(_same_file_key(variant["source_image"]), []).append(variant)

    paired, used = [], set()
    for case in real_cases:
        used.add(_same_file_key(case["image"]))
        variants = by_source.get(_same_file_key(case["image"]), [])
        if not variants:
            problems.append(
                f"real case {case['case_id']}: no synthetic variant has source_image {case['image']} in "
                f"{[str(p) for p in paths]}; Algorithm 1 needs at least one variant of every real image"
            )
            continue
        if variants_per_case is not None:
            if len(variants) < int(variants_per_case):
                problems.append(
                    f"real case {case['case_id']} ({case['image']}) has {len(variants)} synthetic variant(s), "
                    f"fewer than variants_per_case={variants_per_case}"
                )
            variants = variants[: int(variants_per_case)]
        shape, affine = _grid(case["image"])
        for variant in variants:
            v_shape, v_affine = _grid(variant["image"])
            if v_shape != shape:
                problems.append(
                    f"synthetic variant {variant['image']} (datalist {variant['datalist']}) has shape {v_shape}, "
                    f"but its source {case['image']} has {shape}; Algorithm 1 mixes pixel-aligned pairs only"
                )
            elif not np.allclose(v_affine, affine, atol=1e-3):
                problems.append(
                    f"synthetic variant {variant['image']} (datalist {variant['datalist']}) has another affine "
                    f"than its source {case['image']}; Algorithm 1 mixes pixel-aligned pairs only"
                )
        paired.append({**case, "variants": variants})
    if problems:
        listing = "\n  ".join(problems)
        raise DatasetError(
            f"{len(problems)} problem(s) pairing real cases with synthetic variants; nothing was run:\n  {listing}"
        )
    unused_sources = set(by_source) - used
    if unused_sources:
        unused = [v["image"] for source in sorted(unused_sources) for v in by_source[source]]
        logger.warning(
            f"{len(unused)} synthetic variant(s) of {len(unused_sources)} image(s) that are not real training cases "
            f"are not used (e.g. {unused[0]}); check that no test image was synthesised into the training set"
        )
    counts = [len(case["variants"]) for case in paired]
    logger.info(
        f"Algorithm 1 pairing: {len(paired)} real cases, {sum(counts)} variants ({min(counts)}..{max(counts)} per case)"
    )
    return paired


# --- transforms ------------------------------------------------------------------------------------------------------


class RandSyntheticVariantd(Randomizable, Transform):
    """Algorithm 1 line 3, "random choose i ~ 1..n": put one of the case's variants under ``variant`` /
    ``variant_label`` (paths, loaded by the transforms that follow) and its id under ``variant_id``.

    Random, so a CacheDataset caches the real image and label and draws a fresh variant at every fetch; the
    choice follows MONAI's seeding (``set_determinism`` and the DataLoader's per-worker seeds).
    """

    def __init__(
        self,
        variants_key: str = "variants",
        image_key: str = VARIANT,
        label_key: str = VARIANT_LABEL,
        id_key: str = VARIANT_ID,
    ) -> None:
        self.variants_key, self.image_key, self.label_key, self.id_key = variants_key, image_key, label_key, id_key
        self._index = 0

    def randomize(self, data: int) -> None:
        self._index = int(self.R.randint(data))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        variants = d.get(self.variants_key)
        if not variants:
            raise DatasetError(
                f"case {d.get('case_id')} ({d.get('image')}) holds no synthetic variants under '{self.variants_key}'"
            )
        self.randomize(len(variants))
        chosen = variants[self._index]
        d[self.image_key], d[self.label_key], d[self.id_key] = chosen["image"], chosen["label"], chosen["case_id"]
        return d


class RandPatchMaskd(Randomizable, MapTransform):
    """Add the patch mask m (1, *spatial) of :func:`random_patch_mask` under ``mask_key``, shaped like ``keys``' first
    item, a new draw per call (per training image, after the spatial augmentation, so patches lie on the grid the
    network sees)."""

    def __init__(
        self,
        keys: KeysCollection,
        patch_size: int | Sequence[int],
        alpha: float,
        mask_key: str = MASK,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        random_patch_mask((1,), 1, alpha)  # a bad alpha fails while the config is parsed, not at the first step
        self.patch_size, self.alpha, self.mask_key = patch_size, float(alpha), mask_key
        self._seed = 0

    def randomize(self, data=None) -> None:
        self._seed = int(self.R.randint(2**31 - 1))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        self.randomize()
        reference = d[self.first_key(d)]
        generator = torch.Generator().manual_seed(self._seed)
        d[self.mask_key] = random_patch_mask(reference.shape[1:], self.patch_size, self.alpha, generator)[None]
        return d


# --- the training step -----------------------------------------------------------------------------------------------


def prepare_patch_mixing_batch(
    batchdata: Mapping, device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
    """SupervisedTrainer ``prepare_batch``: (x0, m*y0 + (1-m)*yi, (xi, m), {}).

    The trainer passes the extra arguments to its inferer, :class:`PatchMixingInferer`, which does the mixing
    of images or predictions. With the label reused by the variant the target is y0 itself.
    """

    def to(key):
        return batchdata[key].to(device=device, non_blocking=non_blocking, **kwargs)

    mask = to(MASK)
    return to("image"), mix_patches(to("label"), to(VARIANT_LABEL), mask), (to(VARIANT), mask), {}


class PatchMixingInferer(Inferer):
    """Algorithm 1 line 5 around any segmentation network.

    ``mix="image"`` (the paper's text): prediction = C(m*x0 + (1-m)*xi), one forward pass.
    ``mix="prediction"`` (the official code): prediction = m*C(x0) + (1-m)*C(xi), two forward passes (as upstream,
    so batch-norm statistics are those of the real and of the synthetic batch separately); the loss then sees each
    pixel's prediction from an unmixed image. Called without variant and mask it is the plain network
    (scoring, baseline).
    """

    def __init__(self, mix: str = "image") -> None:
        if mix not in MIX_MODES:
            raise ValueError(
                f"mix must be one of {MIX_MODES} ('image' = the paper's input mixing, 'prediction' = the official "
                f"code's prediction mixing), got {mix!r}"
            )
        self.mix = mix

    def __call__(
        self,
        inputs: torch.Tensor,
        network,
        variant: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *args,
        **kwargs,
    ):
        if variant is None:
            return network(inputs, *args, **kwargs)
        if self.mix == "image":
            return network(mix_patches(inputs, variant, mask), *args, **kwargs)
        real, synthetic = network(inputs, *args, **kwargs), network(variant, *args, **kwargs)
        if not isinstance(real, torch.Tensor):
            raise TypeError(f"mix='prediction' mixes tensor outputs; the network returned {type(real).__name__}")
        return mix_patches(real, synthetic, mask)
