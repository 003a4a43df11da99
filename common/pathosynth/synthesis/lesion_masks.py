"""DiffMask sampling on whole volumes: lesion masks generated inside the anatomy of a target case.

The diffusion model generates two mask channels — MI extent and PMO — conditioned on the case's
anatomy (paper Sec. 2.3). Sampling reuses the inpainting sampler with the anatomy region M_m as the
"lesion" mask and "no lesion" (-1) as the known image, so every voxel outside M_m is exactly "no
lesion" at every step: generated lesions lie inside M_m by construction. The continuous output is
thresholded (at 0, or at the quantile that gives a requested lesion burden), smoothed, and PMO is
confined to the MI extent before the masks are written into the case's label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy import ndimage

from ..data.labels import class_values
from ..masks.postprocess import label_to_masks, postprocess_lesion_masks, write_lesions
from ..seeding import generator
from .results import SynthesisResult, new_mask_result
from .windows import covering_windows, pad_to


class LesionMaskSynthesizer:
    """Generate MI/PMO masks for a case's anatomy with a DiffMask model.

    Args:
        network: the mask denoiser; input = 2 noisy mask channels + the anatomy condition channels.
        sampler: a :class:`~pathosynth.diffusion.inpainting.LesionInpaintingSampler`.
        labels: class name -> label value.
        roi_size: crop size the model was trained on (H, W, D).
        cavity_class: also condition on this class (the LV cavity) — must match training.
        anatomy_class, mi_class, pmo_class: the class names of the anatomy that holds lesions (M_m) and of the two
            lesion classes (MI extent, PMO inside it) in ``labels``.
        target_burden: None = threshold the MI score at 0; a fraction of M_m = search the threshold whose
            post-processed mask covers that fraction (the achieved value is recorded; see :meth:`generate`).
        smoothing: keyword arguments of :func:`pathosynth.masks.postprocess.postprocess_lesion_masks`.
        device: where the network runs.
        checkpoint: the weights file, hashed into provenance records.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        sampler,
        labels: Mapping[str, int],
        roi_size: Sequence[int] = (72, 72, 10),
        cavity_class: str | None = None,
        target_burden: float | None = None,
        smoothing: Mapping | None = None,
        device: str | torch.device = "cpu",
        checkpoint: str | None = None,
        anatomy_class: str = "myocardium",
        mi_class: str = "MI",
        pmo_class: str = "PMO",
    ) -> None:
        if target_burden is not None and not 0 < target_burden < 1:
            raise ValueError(f"target_burden must be a fraction in (0, 1), got {target_burden}")
        self.network = network
        self.sampler = sampler
        self.labels = dict(labels)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.cavity = class_values(labels, [cavity_class]) if cavity_class else None
        self.target_burden = target_burden
        self.smoothing = dict(smoothing or {})
        self.device = torch.device(device)
        self.checkpoints = [str(checkpoint)] if checkpoint else []
        self.classes = {"anatomy_class": anatomy_class, "mi_class": mi_class, "pmo_class": pmo_class}

    def settings(self) -> dict:
        return {
            "mask_source": "diffmask",
            "roi_size": list(self.roi_size),
            "target_burden": self.target_burden,
            "smoothing": self.smoothing,
            **self.sampler.settings(),
        }

    def scores(self, label: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Continuous [MI extent, PMO] scores in [-1, 1] (-1 outside M_m), the region M_m, network calls."""
        _, _, region = label_to_masks(label, self.labels, **self.classes)
        if not region.any():
            raise ValueError(f"the case has no anatomy ({self.classes['anatomy_class']}) voxels to place lesions in")
        padded_region = pad_to(region, self.roi_size, False)
        condition = [padded_region]
        if self.cavity is not None:
            condition.append(pad_to(np.isin(label, self.cavity), self.roi_size, False))
        condition = np.stack(condition).astype(np.float32)
        work = np.full((2, *padded_region.shape), -1.0, dtype=np.float32)
        done = np.zeros(padded_region.shape, dtype=bool)
        calls = 0
        for index, window in enumerate(covering_windows(padded_region, self.roi_size)):
            channel_window = (slice(None),) + window
            todo = padded_region[window] & ~done[window]  # overlapping windows keep what is already generated
            mask = torch.from_numpy(np.repeat(todo[None], 2, axis=0).astype(np.float32))[None]
            known = torch.from_numpy(work[channel_window].copy())[None]
            cond = torch.from_numpy(condition[channel_window].copy())[None]
            out = self.sampler(
                known.to(self.device),
                self.network,
                mask=mask.to(self.device),
                condition=cond.to(self.device),
                generators=[generator(seed, "mask", index)],
            )
            work[channel_window] = out[0].cpu().numpy()
            done[window] |= padded_region[window]
            calls += self.sampler.last_network_evaluations
        crop = (slice(None),) + tuple(slice(0, s) for s in label.shape)
        return work[crop], region, calls

    def generate(self, label: np.ndarray, seed: int) -> tuple[np.ndarray, dict]:
        """A new label map: the case's anatomy with generated MI/PMO written into M_m.

        With a target burden the MI score is first smoothed in-plane (sigma 1 voxel, so a threshold cuts
        coherent regions rather than speckle), then the threshold is bisected until the post-processed
        lesion covers the requested fraction of M_m as closely as the score field allows.
        """
        scores, region, calls = self.scores(label, seed)
        pmo_scores = scores[1] > 0
        if self.target_burden is None:
            threshold = 0.0
            mi_extent, pmo = self._masks(scores[0] > threshold, pmo_scores, region)
        else:
            threshold, mi_extent, pmo = self._search_threshold(scores[0], pmo_scores, region)
        new_label = write_lesions(label, self.labels, mi_extent, pmo, **self.classes)
        info = {
            "network_evaluations": calls,
            "mi_threshold": threshold,
            "lesion_burden": float(mi_extent.sum() / region.sum()),
            "pmo_voxels": int(pmo.sum()),
        }
        return new_label, info

    def _masks(self, mi_candidates, pmo_candidates, region):
        mi_extent = mi_candidates & region
        return postprocess_lesion_masks(mi_extent, pmo_candidates & mi_extent, region, **self.smoothing)

    def _search_threshold(self, mi_scores, pmo_candidates, region, steps: int = 14):
        smooth = ndimage.gaussian_filter(mi_scores, sigma=(1.0, 1.0, 0.0))
        low, high = float(smooth[region].min()) - 1e-6, float(smooth[region].max())
        best = None
        for _ in range(steps):
            threshold = (low + high) / 2
            mi_extent, pmo = self._masks(smooth > threshold, pmo_candidates, region)
            burden = mi_extent.sum() / region.sum()
            if best is None or abs(burden - self.target_burden) < abs(best[1] - self.target_burden):
                best = (threshold, burden, mi_extent, pmo)
            low, high = (threshold, high) if burden > self.target_burden else (low, threshold)
        return best[0], best[2], best[3]

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """Runner callable: image unchanged, label with generated lesions."""
        return new_mask_result(self, record, seed)
