"""Anatomy reference + pathology patches in, a synthetic training pair out (Krishna et al., multi-conditioned DDPM).

Each slice of a reference case (2-D model; a 3-D model takes the whole volume as one item), brought to the model grid
exactly as training did (:class:`~pathosynth.synthesis.slice_grid.SliceGrid`, :class:`VolumeGrid`), is the anatomy
reference: it guides an unconditional DDPM at low-pass factor N_a until stop step a_a. Pathology patches, cut around
lesion regions of other cases on the same model grid (:class:`PathologyPatchBank`), are posed at random, prepared
against this item (Fig. 1b) and blended into it inside a chosen anatomy (e.g. the myocardium), each guiding with
factor N_p until a_p under its Gaussian weight W (Eq. 5). The label written is the reference's own label map with
the placed patches' lesion labels on top, so image and label form a training pair. Every item draws its noise,
patch and pose from generators derived from (seed, item), so neither the batch it is sampled in nor the number of
processes changes a result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.intensity import unit_range
from ..data.pathology_patches import (
    QUANTILE_RANGE,
    LesionPatch,
    cut_lesion_patches,
    place_patch,
    prepare_patch,
    random_centre,
    random_pose,
)
from ..diffusion.reference_guidance import GuidanceReference, ReferenceGuidedSampler
from ..io.nifti import cast_like
from ..seeding import generator
from .results import SynthesisResult, read_case
from .slice_grid import SliceGrid


def _factor(value: int | Sequence[int]) -> int | list[int]:
    """A low-pass factor N: one for every axis, or one per model axis (e.g. [4, 4, 1]: no low-pass across depth)."""
    return int(value) if isinstance(value, (int, float)) else [int(v) for v in value]


class VolumeGrid:
    """Whole volumes on a 3-D model's grid, as ``train.json`` + ``volumes_3d.json`` preprocess them: the centred
    in-plane field of view (:class:`SliceGrid`), then one resize of (fov, depth) to ``image_size``; and back."""

    def __init__(self, shape: Sequence[int], fov_size: Sequence[int], image_size: Sequence[int]) -> None:
        self.depth = int(shape[2]) if len(shape) == 3 else 1
        self.fov_size = tuple(int(s) for s in fov_size)
        self.image_size = tuple(int(s) for s in image_size)
        self.slices = SliceGrid(shape[:2], self.fov_size, self.fov_size)

    def to_model(self, volume: np.ndarray, mode: str = "area") -> torch.Tensor:
        """(H, W, D) -> (1, 1, *image_size)."""
        fov = self.slices.to_model(volume, mode)[:, 0].permute(1, 2, 0)[None, None]
        return F.interpolate(fov, size=self.image_size, mode=mode)

    def from_model(self, volume: torch.Tensor, fill: float = 0.0) -> np.ndarray:
        """(1, 1, *image_size) -> (H, W, D); trilinear, ``fill`` outside the field of view."""
        fov = F.interpolate(torch.as_tensor(volume).float().cpu(), size=(*self.fov_size, self.depth), mode="trilinear")
        return self.slices.from_model(fov[0, 0].permute(2, 0, 1)[:, None], fill)


def model_grid(shape: Sequence[int], fov_size: Sequence[int], image_size: Sequence[int]) -> SliceGrid | VolumeGrid:
    """The grid of a 2-D model (``image_size`` of two values: slices) or of a 3-D one (three values: whole volumes)."""
    return (
        SliceGrid(shape[:2], fov_size, image_size) if len(image_size) == 2 else VolumeGrid(shape, fov_size, image_size)
    )


def model_items(image: np.ndarray, label: np.ndarray, grid: SliceGrid | VolumeGrid) -> tuple[np.ndarray, np.ndarray]:
    """(H, W[, D]) image and label -> (S, *model spatial) unit-range images and labels on the model grid: the S = D
    slices of a 2-D model, or S = 1 volume of a 3-D one."""
    shape3 = label.shape if label.ndim == 3 else (*label.shape, 1)
    items = grid.to_model(unit_range(image).reshape(shape3), mode="area")[:, 0].numpy()
    labels = (
        grid.to_model(np.asarray(label).reshape(shape3).astype(np.float32), mode="nearest")[:, 0]
        .numpy()
        .round()
        .astype(np.int64)
    )
    return items, labels


class PathologyPatchBank:
    """Lesion patches (unit intensities, lesion labels) cut from lesion cases on the model grid.

    Args:
        cases: records with ``image``, ``label`` (e.g. ``load_cases(select="with_lesion")``).
        lesion_values: label values that make up a lesion (EMIDEC: 3 MI, 4 PMO).
        fov_size, image_size: training's in-plane field of view and model image size (2 values: slices; 3: volumes).
        patch_size: patch (h, w) on the model grid.
        min_voxels: lesion regions smaller than this (model grid pixels) are skipped.
        max_patches: keep the first N patches (the paper used six).
    """

    def __init__(
        self,
        cases: Sequence[Mapping],
        lesion_values: Sequence[int],
        fov_size: Sequence[int],
        image_size: Sequence[int],
        patch_size: Sequence[int],
        min_voxels: int = 4,
        max_patches: int | None = None,
    ) -> None:
        self.lesion_values = [int(v) for v in lesion_values]
        self.patch_size = [int(s) for s in patch_size]
        patches: list[LesionPatch] = []
        if len(self.patch_size) != len(image_size):
            raise ValueError(
                f"patch_size {self.patch_size} and image_size {list(image_size)} need the same number of axes"
            )
        for case in cases:
            image, label = read_case(case)
            items, labels = model_items(image, label, model_grid(label.shape, fov_size, image_size))
            for k, (item, item_label) in enumerate(zip(items, labels)):
                name = f"{case['case_id']}#slice{k}" if len(items) > 1 else str(case["case_id"])
                patches += cut_lesion_patches(
                    item, item_label, self.lesion_values, self.patch_size, min_voxels, source=name
                )
            if max_patches is not None and len(patches) >= max_patches:
                break
        self.patches = patches[:max_patches] if max_patches is not None else patches
        if not self.patches:
            raise ValueError(
                f"no lesion region of at least {min_voxels} pixels with labels {self.lesion_values} "
                f"in {len(cases)} cases"
            )

    def __len__(self) -> int:
        return len(self.patches)

    def draw(self, gen: torch.Generator) -> LesionPatch:
        return self.patches[int(torch.randint(len(self.patches), (), generator=gen))]


class ReferenceGuidedSynthesizer:
    """Multi-reference guided synthesis of one case (2-D model: slice by slice; 3-D model: the whole volume).

    Args:
        network: the trained unconditional denoiser (eval mode).
        sampler: a :class:`~pathosynth.diffusion.reference_guidance.ReferenceGuidedSampler`.
        patches: the pathology patch bank (None: anatomy guidance only).
        placement_values: label values where a patch centre may fall (e.g. myocardium).
        anatomy_factor, anatomy_stop_step: N_s (one value, or one per model axis) and a_s of the anatomy reference.
        pathology_factor, pathology_stop_step: N_s and a_s of every pathology patch.
        patches_per_slice: pathology references per slice, or per volume for a 3-D model (an item without placement
            anatomy gets none).
        placement_centre: a fixed (row, col) on the model grid instead of a random one inside the anatomy.
        edge_sigma_fraction: sigma of the Gaussian that blends the patch into the reference and of W, as a fraction
            of the patch size.
        quantile_range: q range of the patch normalisation.
        rotate, flip: random patch pose.
        fov_size, image_size, device, slice_batch_size, checkpoints: as in the other synthesisers.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        sampler: ReferenceGuidedSampler,
        patches: PathologyPatchBank | None,
        placement_values: Sequence[int],
        fov_size: Sequence[int],
        image_size: Sequence[int],
        anatomy_factor: int | Sequence[int] = 8,
        anatomy_stop_step: int = 0,
        pathology_factor: int | Sequence[int] = 4,
        pathology_stop_step: int = 0,
        patches_per_slice: int = 1,
        placement_centre: Sequence[int] | None = None,
        edge_sigma_fraction: float = 0.25,
        quantile_range: Sequence[float] = QUANTILE_RANGE,
        rotate: bool = True,
        flip: bool = True,
        device: str | torch.device = "cpu",
        slice_batch_size: int = 16,
        checkpoints: Sequence[str | os.PathLike] = (),
        name: str = "multi_conditioned_ddpm",
    ) -> None:
        self.network = network.eval()
        self.sampler = sampler
        self.patches = patches
        self.placement_values = [int(v) for v in placement_values]
        self.fov_size, self.image_size = tuple(int(s) for s in fov_size), tuple(int(s) for s in image_size)
        self.anatomy = {"factor": _factor(anatomy_factor), "stop_step": int(anatomy_stop_step)}
        self.pathology = {"factor": _factor(pathology_factor), "stop_step": int(pathology_stop_step)}
        self.patches_per_slice = int(patches_per_slice) if patches is not None else 0
        self.placement_centre = None if placement_centre is None else tuple(int(c) for c in placement_centre)
        self.edge_sigma_fraction = float(edge_sigma_fraction)
        self.quantile_range = tuple(float(q) for q in quantile_range)
        self.rotate, self.flip = bool(rotate), bool(flip)
        self.device = torch.device(device)
        self.slice_batch_size = max(1, int(slice_batch_size))
        self.checkpoints = [str(c) for c in checkpoints if c]
        self.name = name

    def settings(self) -> dict:
        return {
            "method": self.name,
            "fov_size": list(self.fov_size),
            "image_size": list(self.image_size),
            **self.sampler.settings(),
            "anatomy_reference": dict(self.anatomy),
            "pathology_reference": dict(self.pathology),
            "patches_per_slice": self.patches_per_slice,
            "placement_values": self.placement_values,
            "placement_centre": None if self.placement_centre is None else list(self.placement_centre),
            "weight": (
                f"spherical Gaussian, peak 1, sigma = {self.edge_sigma_fraction} x patch size, zero outside the patch"
            ),
            "quantile_range": list(self.quantile_range),
            "rotate": self.rotate,
            "flip": self.flip,
            "patch_bank": None
            if self.patches is None
            else {"patches": len(self.patches), "patch_size": self.patches.patch_size},
        }

    def place_pathology(self, reference: np.ndarray, label: np.ndarray, gen: torch.Generator):
        """(patch reference image, W, lesion label, drawn info) of one patch on one slice; zeros when no place."""
        centre = self.placement_centre or random_centre(np.isin(label, self.placement_values), gen)
        if centre is None:
            return reference.copy(), np.zeros_like(reference), np.zeros(label.shape, np.int64), None
        patch = self.patches.draw(gen)
        image, lesion, pose = random_pose(patch.image, patch.label, gen, self.rotate, self.flip)
        prepared, drawn = prepare_patch(image, reference, gen, self.quantile_range)
        placed, weight, lesion_map = place_patch(
            reference, prepared, lesion.astype(np.int64), centre, self.edge_sigma_fraction
        )
        return placed, weight, lesion_map, {"patch": patch.source, "centre": list(centre), **pose, **drawn}

    def synthesize(self, image: np.ndarray, label: np.ndarray, seed: int) -> SynthesisResult:
        image, label = np.asarray(image), np.asarray(label)
        if label.ndim not in (2, 3) or image.shape != label.shape:
            raise ValueError(f"expected 2-D or 3-D image and label of one shape, got {image.shape} and {label.shape}")
        grid = model_grid(label.shape, self.fov_size, self.image_size)
        slices, labels = model_items(image, label, grid)
        depth = len(slices)
        patch_refs = np.zeros((self.patches_per_slice, *slices.shape), np.float32)
        weights, lesions = np.zeros_like(patch_refs), np.zeros(slices.shape, np.int64)
        placements = []
        for k in range(depth):
            gen = generator(seed, "pathology", k)
            for p in range(self.patches_per_slice):
                patch_refs[p, k], weights[p, k], lesion, info = self.place_pathology(slices[k], labels[k], gen)
                lesions[k] = np.where(lesion > 0, lesion, lesions[k])
                placements.append(None if info is None else {"slice": k, **info})
        outputs = []
        for start in range(0, depth, self.slice_batch_size):
            batch = slice(start, min(depth, start + self.slice_batch_size))

            def model(a):  # unit range -> the model's [-1, 1], (B, 1, *spatial)
                return torch.from_numpy(2 * a[batch] - 1)[:, None].float().to(self.device)

            references = [GuidanceReference(model(slices), name="anatomy", **self.anatomy)]
            references += [
                GuidanceReference(
                    model(patch_refs[p]),
                    weight=torch.from_numpy(weights[p][batch])[:, None].to(self.device),
                    name=f"pathology{p}",
                    **self.pathology,
                )
                for p in range(self.patches_per_slice)
            ]
            gens = [generator(seed, "slice", k) for k in range(batch.start, batch.stop)]
            sample = self.sampler(self.network, references[0].image.shape, references, gens, self.device)
            outputs.append(((sample.cpu() + 1) / 2).clamp(0, 1))
        unit = np.clip(grid.from_model(torch.cat(outputs), fill=0.0), 0, 1).reshape(label.shape)
        low, high = float(image.min()), float(image.max())
        out_image = cast_like(low + unit * (high - low), image.dtype)
        out_label = self._label_with_lesions(label, lesions, grid)
        info = {
            **self.settings(),
            "placements": placements,
            "network_evaluations": depth * self.sampler.last_network_evaluations,
        }
        return SynthesisResult(out_image, out_label, np.ones(label.shape, dtype=bool), info)

    def _label_with_lesions(self, label: np.ndarray, lesions: np.ndarray, grid: SliceGrid | VolumeGrid) -> np.ndarray:
        """The reference's labels with the placed lesions on top, back on the label grid. Lesion values are written
        in bank order, each over the union of itself and the later ones, so nesting (PMO inside MI) survives."""
        out = label.copy().reshape(label.shape if label.ndim == 3 else (*label.shape, 1))
        values = self.patches.lesion_values if self.patches is not None else []
        for i, value in enumerate(values):
            region = np.isin(lesions, values[i:]).astype(np.float32)[:, None]
            out[grid.from_model(torch.from_numpy(region)) > 0.5] = value
        return out.reshape(label.shape)

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """The runner's per-case callable."""
        image, label = read_case(record)
        return self.synthesize(image, label, seed)
