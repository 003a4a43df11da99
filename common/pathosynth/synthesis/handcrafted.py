"""Hand-crafted controlled lesion synthesis: the "Hand-Crafted [9]" baseline (Hu et al. 2023) of LeFusion.

LeFusion (Sec. 3.1) describes it as: lesion morphology = overlapping ellipsoidal masks blurred by erosion
and dilation; lesion texture = Gaussian noise softened by interpolation and Gaussian filtering. Both halves
mirror the learned components' interfaces (``synthesize_case(record, seed) -> SynthesisResult``), so the
baseline runs through the same runner, previews and provenance as LeFusion and the comparison is fair.

Geometry is counted in voxels per axis: EMIDEC slices are ~10 mm thick against ~1.5 mm in-plane, so every
morphological and filtering step works in-plane (per slice) and through-plane extents are whole slices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..data.labels import EMIDEC_LABELS, class_values
from ..io.nifti import cast_like
from .results import SynthesisResult, new_mask_result, read_case

_CROSS = ndi.generate_binary_structure(2, 1)[..., None]  # in-plane 4-neighbourhood, per slice
_BURDEN_SEARCH_STEPS = 24  # bisection steps over log(scale) in [log 0.05, log 20]: ~1e-6 relative precision


def _checked_range(name: str, value: Sequence[float], minimum: float) -> tuple[float, float]:
    low, high = (float(v) for v in value)
    if not minimum <= low <= high:
        raise ValueError(f"{name} must be ({minimum} <=) low <= high, got {value}")
    return low, high


def _in_plane_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """In-plane bounding box of ``mask`` plus ``margin`` (all slices): the heart is ~1/20 of a 256 px slice."""
    rows, cols = np.nonzero(mask.any(axis=2))
    return tuple(slice(max(int(i.min()) - margin, 0), int(i.max()) + margin + 1) for i in (rows, cols)) + (slice(None),)


def _ellipsoid(shape, centre, axes, theta, scale: float) -> np.ndarray:
    """Voxels inside an ellipsoid rotated by ``theta`` in-plane, semi-axes ``axes * scale`` (voxels per axis)."""
    yy, xx, zz = (
        np.arange(n, dtype=float).reshape([-1 if i == a else 1 for i in range(3)]) - c
        for a, (n, c) in enumerate(zip(shape, centre))
    )
    u, v = yy * np.cos(theta) + xx * np.sin(theta), -yy * np.sin(theta) + xx * np.cos(theta)
    a, b, c = (max(s * scale, 1e-6) for s in axes)
    return (u / a) ** 2 + (v / b) ** 2 + (zz / c) ** 2 <= 1.0


class HandcraftedMasks:
    """Random MI (+ optional PMO core) masks from overlapping ellipsoids inside the myocardium.

    Args:
        labels: class name -> label value.
        anatomy_class, mi_class, pmo_class, cavity_class: healthy myocardium, infarct, no-reflow core, LV
            cavity. M_m (where lesions may occur) = anatomy | MI | PMO voxels of the input.
        num_ellipsoids: inclusive range; the first is centred on a random M_m voxel, each further one on a
            random M_m voxel inside the ellipsoids so far, so they overlap into ONE lesion (one culprit
            coronary territory) rather than scattered specks.
        radius_fraction: in-plane semi-axes (two, independent, random angle) as a fraction of the heart radius
            sqrt(area(LV | M_m) / pi) on the centre's slice. Ellipsoids are cut to the ~7 px wall, so they must
            be wide to give real-sized arcs.
        half_extent_slices: inclusive range of slices covered either side of the centre (through-plane
            semi-axis h + 0.5 slices: a 10 mm slice is in or out, never a 1.5 mm sliver).
            Defaults calibrated on the 85 real EMIDEC cases: burden (MI|PMO / M_m) quartiles 0.14/0.19/0.24
            (real 0.13/0.19/0.30), fraction of heart slices with lesion 0.71/0.86/1.0 (real: the same).
        pmo_probability: chance of a PMO core (real: 34 of 57 pathological cases = 0.60).
        pmo_scale: the core is the primary ellipsoid shrunk by this factor, seeded near the LV cavity; gives
            PMO / lesion quartiles 0.08/0.12/0.22 (real 0.07/0.11/0.20).
        smoothing_iterations: in-plane binary opening then closing ("erosion and dilation to blur the shapes").
        target_burden: wanted fraction of M_m covered by MI | PMO; all ellipsoids are scaled by one factor
            found by bisection (burden grows with the scale), keeping the closest result.
    """

    checkpoints: tuple = ()  # no learned weights: nothing to hash into provenance

    def __init__(
        self,
        labels: Mapping[str, int] = EMIDEC_LABELS,
        anatomy_class="myocardium",
        mi_class="MI",
        pmo_class="PMO",
        cavity_class="LV",
        num_ellipsoids=(2, 5),
        radius_fraction=(0.3, 0.8),
        half_extent_slices=(1, 4),
        pmo_probability=0.6,
        pmo_scale=(0.4, 0.8),
        smoothing_iterations=1,
        target_burden: float | None = None,
    ) -> None:
        self.labels = dict(labels)
        self.anatomy, self.mi, self.pmo, self.cavity = class_values(
            self.labels, [anatomy_class, mi_class, pmo_class, cavity_class]
        )
        self.num_ellipsoids = tuple(int(n) for n in _checked_range("num_ellipsoids", num_ellipsoids, 1))
        self.radius_fraction = _checked_range("radius_fraction", radius_fraction, 1e-3)
        self.half_extent_slices = tuple(int(n) for n in _checked_range("half_extent_slices", half_extent_slices, 0))
        self.pmo_scale = _checked_range("pmo_scale", pmo_scale, 1e-3)
        if not 0.0 <= pmo_probability <= 1.0:
            raise ValueError(f"pmo_probability must be in [0, 1], got {pmo_probability}")
        if target_burden is not None and not 0.0 < target_burden <= 1.0:
            raise ValueError(f"target_burden must be in (0, 1], got {target_burden}")
        self.pmo_probability, self.target_burden = float(pmo_probability), target_burden
        self.smoothing_iterations = int(smoothing_iterations)

    def settings(self) -> dict:
        """What produced a case, for provenance."""
        keys = (
            "num_ellipsoids",
            "radius_fraction",
            "half_extent_slices",
            "pmo_probability",
            "pmo_scale",
            "smoothing_iterations",
            "target_burden",
        )
        return {
            "mask_source": "handcrafted",
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in ((k, getattr(self, k)) for k in keys)},
        }

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """Runner callable: the image untouched (texture comes later), the label with a new lesion mask."""
        return new_mask_result(self, record, seed)

    def generate(self, label: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
        """A new label map with fresh MI/PMO inside M_m (every voxel outside M_m is kept), and what was drawn."""
        label = np.asarray(label)
        allowed_full = np.isin(label, [self.anatomy, self.mi, self.pmo])
        if not allowed_full.any():
            raise ValueError("case has no myocardium/MI/PMO voxels (M_m is empty): nowhere to place a lesion")
        heart_full = allowed_full | (label == self.cavity)
        box = _in_plane_box(heart_full, self.smoothing_iterations + 2)  # + margin for the morphology
        allowed, cavity = allowed_full[box], label[box] == self.cavity
        rng = np.random.default_rng(seed)
        ellipsoids = self._draw_ellipsoids(rng, allowed, np.sqrt(heart_full[box].sum(axis=(0, 1)) / np.pi))
        wants_pmo, pmo_factor = rng.random() < self.pmo_probability, rng.uniform(*self.pmo_scale)
        scale = 1.0 if self.target_burden is None else self._scale_for_burden(ellipsoids, allowed)
        lesion = self._lesion(ellipsoids, scale, allowed)
        core = self._pmo_core(rng, lesion, cavity, ellipsoids[0], scale * pmo_factor) if wants_pmo else None
        out = label.copy()
        region = out[box]  # a view: writes land in ``out``
        region[allowed] = self.anatomy
        region[lesion] = self.mi
        if core is not None:
            region[core] = self.pmo
        burden = float(lesion.sum() / allowed.sum())
        return out, {
            "lesion_burden": burden,
            "ellipsoids": len(ellipsoids),
            "radius_scale": scale,
            "pmo_placed": bool(core is not None and core.any()),
        }

    def _draw_ellipsoids(self, rng, allowed, heart_radius) -> list[tuple]:
        ellipsoids, union = [], np.zeros(allowed.shape, bool)
        for _ in range(rng.integers(self.num_ellipsoids[0], self.num_ellipsoids[1] + 1)):
            candidates = np.argwhere(allowed & union) if union.any() else np.argwhere(allowed)
            centre = candidates[rng.integers(len(candidates))]
            radius = max(float(heart_radius[centre[2]]), 1.0)
            a, b = rng.uniform(*self.radius_fraction, size=2) * radius
            c = rng.integers(self.half_extent_slices[0], self.half_extent_slices[1] + 1) + 0.5
            ellipsoids.append((centre, (a, b, c), rng.uniform(0, np.pi)))
            union |= _ellipsoid(allowed.shape, *ellipsoids[-1], 1.0)
        return ellipsoids

    def _lesion(self, ellipsoids, scale: float, allowed: np.ndarray) -> np.ndarray:
        """Union of ellipsoids in M_m, opened then closed in-plane, and in M_m again (closing can leave it).

        Smoothing never deletes the lesion entirely: if it would, the unsmoothed lesion is kept, so every
        generated case holds MI (a "pathological" case without a lesion would be a silent failure).
        """
        raw = np.zeros(allowed.shape, bool)
        for centre, axes, theta in ellipsoids:
            raw |= _ellipsoid(allowed.shape, centre, axes, theta, scale)
        raw &= allowed
        smooth = raw
        if self.smoothing_iterations > 0:
            smooth = ndi.binary_opening(raw, _CROSS, self.smoothing_iterations)
            smooth = ndi.binary_closing(smooth, _CROSS, self.smoothing_iterations) & allowed
        return smooth if smooth.any() else raw

    def _scale_for_burden(self, ellipsoids, allowed) -> float:
        total, target = allowed.sum(), float(self.target_burden)
        low, high, best = np.log(0.05), np.log(20.0), (np.inf, 1.0)
        for _ in range(_BURDEN_SEARCH_STEPS):
            mid = 0.5 * (low + high)
            burden = self._lesion(ellipsoids, float(np.exp(mid)), allowed).sum() / total
            best = min(best, (abs(burden - target), float(np.exp(mid))))
            low, high = (mid, high) if burden < target else (low, mid)
        return best[1]

    def _pmo_core(self, rng, lesion, cavity, primary, scale) -> np.ndarray | None:
        """A subendocardial core whose in-plane 4-neighbours are all lesion or LV cavity.

        Eligible voxels are lesion voxels none of whose in-plane 4-neighbours lies outside lesion | cavity,
        which is stricter than "no healthy-myocardium neighbour" (it also keeps PMO off the epicardial
        border). The core seed is drawn among the eligible voxels closest to the cavity (lowest quartile of
        in-plane distance), since no-reflow starts at the endocardium.
        """
        eligible = lesion & ~ndi.binary_dilation(~(lesion | cavity), _CROSS)
        if not eligible.any():
            return None
        distance = np.full(lesion.shape, np.inf)
        for z in np.flatnonzero(cavity.any(axis=(0, 1))):
            distance[..., z] = ndi.distance_transform_edt(~cavity[..., z])
        candidates = np.argwhere(eligible & (distance <= np.quantile(distance[eligible], 0.25, method="lower")))
        seed = candidates[rng.integers(len(candidates))]
        core = _ellipsoid(lesion.shape, seed, primary[1], primary[2], scale) & eligible
        components, _ = ndi.label(core)
        return components == components[tuple(seed)]


class HandcraftedTexture:
    """Lesion texture = class mean offset + class std x smoothed Gaussian noise, relative to the myocardium.

    Args:
        labels: class name -> label value.
        lesion_classes: classes whose voxels are re-synthesised.
        anatomy_class: the reference tissue (healthy myocardium); LGE lesion contrast is read against it.
        stats: class name -> (mean offset, std) in units of the volume's max - min, so the same numbers transfer
            between scanners and dtypes; ``fit`` measures them. Without either, ``synthesize`` refuses.
        noise_scale_voxels: in-plane size of a noise cell; noise is drawn on a grid this much coarser and cubic-
            interpolated up (blobs of ~2 voxels, like real LGE speckle), never across the thick slices.
        sigma: in-plane Gaussian filter of the interpolated noise (voxels).
        edge_sigma: in-plane Gaussian of the lesion mask used as blend weight with the original image, so the
            border voxels are half texture, half surroundings; only lesion voxels are ever written.
    """

    checkpoints: tuple = ()  # no learned weights: nothing to hash into provenance

    def __init__(
        self,
        labels: Mapping[str, int] = EMIDEC_LABELS,
        lesion_classes: Sequence[str] = ("MI", "PMO"),
        anatomy_class="myocardium",
        stats: Mapping[str, Sequence[float]] | None = None,
        noise_scale_voxels=2.0,
        sigma=1.0,
        edge_sigma=1.0,
    ) -> None:
        self.labels, self.lesion_classes = dict(labels), list(lesion_classes)
        self.lesion_values = class_values(self.labels, self.lesion_classes)
        self.anatomy = class_values(self.labels, [anatomy_class])[0]
        self.noise_scale_voxels, self.sigma, self.edge_sigma = (
            float(noise_scale_voxels),
            float(sigma),
            float(edge_sigma),
        )
        self.stats = None if stats is None else self._checked_stats(stats)

    def settings(self) -> dict:
        """What produced a case, for provenance."""
        return {
            "stats": None if self.stats is None else {k: list(v) for k, v in self.stats.items()},
            "noise_scale_voxels": self.noise_scale_voxels,
            "sigma": self.sigma,
            "edge_sigma": self.edge_sigma,
        }

    def _checked_stats(self, stats: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, float]]:
        missing = [name for name in self.lesion_classes if name not in stats]
        if missing:
            raise ValueError(f"stats lack lesion classes {missing} (fit on cases holding them, or pass them)")
        checked = {name: tuple(float(v) for v in stats[name]) for name in self.lesion_classes}
        if any(len(v) != 2 or v[1] < 0 for v in checked.values()):
            raise ValueError(f"stats must map class -> (mean offset, std >= 0), got {dict(stats)}")
        return checked

    def _reference(self, image, label, lesion) -> tuple[float, str]:
        """Healthy-myocardium mean; without any, the mean of a 2-voxel in-plane ring around the lesion."""
        healthy = label == self.anatomy
        if healthy.any():
            return float(image[healthy].mean()), "myocardium"
        ring = ndi.binary_dilation(lesion, _CROSS, iterations=2) & ~lesion
        return float(image[ring].mean() if ring.any() else image.mean()), "surroundings"

    def fit(self, records) -> HandcraftedTexture:
        """Per-class (offset, std) averaged over cases (each case weighs the same, however big its lesion)."""
        measured = {name: [] for name in self.lesion_classes}
        for record in records:
            image, label = read_case(record)
            image = image.astype(np.float64)
            lesion = np.isin(label, self.lesion_values)
            if not lesion.any():
                continue
            span = float(image.max() - image.min()) or 1.0
            reference = self._reference(image, label, lesion)[0]
            for name, value in zip(self.lesion_classes, self.lesion_values):
                voxels = image[label == value]
                if voxels.size:
                    measured[name].append(((voxels.mean() - reference) / span, voxels.std() / span))
        self.stats = self._checked_stats(
            {name: tuple(np.mean(rows, axis=0)) for name, rows in measured.items() if rows}
        )
        return self

    def synthesize(self, image: np.ndarray, label: np.ndarray, seed: int) -> SynthesisResult:
        """Fill every lesion-class voxel with hand-crafted texture; all other voxels are copied bit for bit."""
        if self.stats is None:
            raise RuntimeError(
                "HandcraftedTexture has no stats: pass stats={class: (offset, std)} or call fit(records)"
            )
        if image.shape != label.shape:
            raise ValueError(f"image shape {image.shape} differs from label shape {label.shape}")
        lesion = np.isin(label, self.lesion_values)
        out = image.copy()
        info = {"texture_source": "handcrafted", **self.settings()}
        if not lesion.any():
            return SynthesisResult(out, label.copy(), lesion, info)
        low, high = float(image.min()), float(image.max())
        span = (high - low) or 1.0
        reference, info["reference"] = self._reference(image.astype(np.float64), label, lesion)
        # Filters are truncated at 4 sigma, so a box with that margin gives the same result as the full volume.
        box = _in_plane_box(lesion, int(np.ceil(4 * max(self.sigma, self.edge_sigma, 0.0))) + 2)
        part, part_label, part_lesion = image[box], label[box], lesion[box]
        offset, spread = np.zeros(part.shape), np.zeros(part.shape)
        for name, value in zip(self.lesion_classes, self.lesion_values):
            offset[part_label == value], spread[part_label == value] = self.stats[name]
        texture = reference + span * (offset + spread * self._noise(np.random.default_rng(seed), part.shape))
        weight = ndi.gaussian_filter(part_lesion.astype(np.float64), (self.edge_sigma, self.edge_sigma, 0.0))
        blended = weight * texture + (1.0 - weight) * part
        # Clipped to the volume's range, so downstream min-max normalisation sees the same scale as the source.
        out[box][part_lesion] = cast_like(np.clip(blended[part_lesion], low, high), image.dtype)
        return SynthesisResult(out, label.copy(), lesion, info)

    def _noise(self, rng, shape) -> np.ndarray:
        """Zero-mean, unit-std field: coarse Gaussian noise, cubic-interpolated up, Gaussian-filtered in-plane."""
        cell = max(self.noise_scale_voxels, 1.0)
        coarse_shape = (int(np.ceil(shape[0] / cell)), int(np.ceil(shape[1] / cell)), shape[2])
        coarse = rng.standard_normal(coarse_shape)
        field = ndi.zoom(coarse, [s / c for s, c in zip(shape, coarse_shape)], order=3, mode="mirror")
        field = ndi.gaussian_filter(field, (self.sigma, self.sigma, 0.0))
        return (field - field.mean()) / (field.std() or 1.0)

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """Read a case record's image and label and synthesise (the runner's per-case callable)."""
        return self.synthesize(*read_case(record), seed)
