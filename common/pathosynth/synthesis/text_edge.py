"""Real (image, label) case in, synthetic image with the same label out: EMIT-Diff, slice by slice on whole volumes.

For each slice the image and label are brought to the model grid exactly as training preprocessed them
(:class:`~pathosynth.synthesis.slice_grid.SliceGrid`), the edge map (image edges OR label boundaries) is computed
there, the prompt is the case's "modality, organ, category" plus one augmentation phrase drawn for this slice
(Sec. 4.4), and a sample is drawn with guided DDIM through the frozen text-conditioned UNet and the ControlNet.
Every slice has its own generators, derived from (seed, slice), for the noise and for the phrase, so neither the
batch a slice is drawn in nor the number of processes changes a result. The label is written unchanged; the image
goes back to the label file's grid in the source image's intensity range and dtype.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..data.intensity import unit_range
from ..diffusion.guided_ddim import GuidedDDIMSampler
from ..diffusion.latent import DiffusionSpace
from ..diffusion.text_edge import NULL_PROMPT
from ..io.nifti import read_nifti
from ..networks.edge_maps import EdgeCondition
from ..seeding import generator
from ..text.prompts import CasePrompts, augmented_prompt, join_prompt
from .results import SynthesisResult
from .slice_synthesizer import SliceSynthesizer


class TextEdgeSynthesizer(SliceSynthesizer):
    """EMIT-Diff synthesis of one case.

    Args:
        network: the frozen :class:`~pathosynth.networks.text_controlnet.TextConditionedUNet` (stage 1).
        controlnet: the trained MONAI ``ControlNet`` (stage 2); None samples from the text-only stage-1 model.
        sampler: a :class:`~pathosynth.diffusion.guided_ddim.GuidedDDIMSampler`.
        edge_condition: the :class:`~pathosynth.networks.edge_maps.EdgeCondition` the ControlNet was trained with.
        prompts: builds a case's prompt from its record.
        augmentation_phrases: one is appended to the prompt per slice, drawn at random (empty: none).
        space: the diffusion space (pixel: [-1, 1] <-> [0, 1]).
        fov_size, image_size: training's in-plane field of view and slice size.
        device, slice_batch_size: where and how many slices at once (memory only; results do not change).
        checkpoints: weight files, hashed into provenance by the runner.
        intensity_range: (low, high) of written images; None = the source image's min and max.
        name: for provenance.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        controlnet: torch.nn.Module | None,
        sampler: GuidedDDIMSampler,
        edge_condition: EdgeCondition,
        prompts: CasePrompts,
        augmentation_phrases: Sequence[str],
        space: DiffusionSpace,
        fov_size: Sequence[int],
        image_size: Sequence[int],
        device: str | torch.device = "cpu",
        slice_batch_size: int = 16,
        checkpoints: Sequence[str | os.PathLike] = (),
        intensity_range: Sequence[float] | None = None,
        name: str = "emit_diff",
    ) -> None:
        super().__init__(fov_size, image_size, device, slice_batch_size, checkpoints, intensity_range, name)
        self.network = network.eval()
        self.controlnet = controlnet.eval() if controlnet is not None else None
        self.sampler = sampler
        self.edge_condition = edge_condition
        self.prompts = prompts
        self.augmentation_phrases = [str(p) for p in augmentation_phrases]
        self.space = space

    def check_prompts(self, cases: Sequence[Mapping]) -> list[Mapping]:
        """Tokenize every prompt the cases can get (each with each phrase) before any sampling; returns ``cases``."""
        bases = sorted({self.prompts(case) for case in cases})
        texts = [join_prompt(b, p) for b in bases for p in (self.augmentation_phrases or [""])] + [NULL_PROMPT]
        self.network.tokenize(texts)
        return cases

    def settings(self) -> dict:
        return {
            "method": self.name,
            "fov_size": list(self.fov_size),
            "image_size": list(self.image_size),
            "controlnet": self.controlnet is not None,
            **self.sampler.settings(),
            **self.edge_condition.settings(),
            **self.space.settings(),
            "augmentation_phrases": self.augmentation_phrases,
        }

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> torch.Tensor:
        return self.network.encode_text(self.network.tokenize(prompts).to(self.device))

    def synthesize(self, image: np.ndarray, label: np.ndarray, prompt: str, seed: int) -> SynthesisResult:
        """A synthetic image on ``label``'s grid, guided by ``image``'s edges, ``label``'s boundaries and ``prompt``."""
        image, label = np.asarray(image), np.asarray(label)
        if label.ndim not in (2, 3) or image.shape != label.shape:
            raise ValueError(f"expected 2-D or 3-D image and label of one shape, got {image.shape} and {label.shape}")
        shape3 = label.shape if label.ndim == 3 else (*label.shape, 1)
        grid = self.grid(shape3[:2])
        slices = grid.to_model(unit_range(image.reshape(shape3)), mode="area")
        label_slices = grid.to_model(label.reshape(shape3), mode="nearest")
        edges = self.edge_condition(slices, label_slices)
        drawn = [
            augmented_prompt(prompt, self.augmentation_phrases, generator(seed, "augmentation", k))
            for k in range(len(slices))
        ]
        outputs, calls = [], 0
        channels = int(self.network.in_channels)
        for batch in self.batches(len(slices)):
            context = self._encode([drawn[k][0] for k in batch])
            null = self._encode([NULL_PROMPT] * len(batch))
            gens = [generator(seed, "slice", k) for k in batch]
            samples = self.sampler(
                self.network,
                context,
                null,
                (channels, *self.image_size),
                gens,
                self.controlnet,
                edges[batch].to(self.device) if self.controlnet is not None else None,
            )
            calls += len(batch) * self.sampler.last_network_evaluations
            outputs.append(self.space.decode(samples).cpu())
        out, written_range = self.written(grid.from_model(torch.cat(outputs), fill=0.0).reshape(label.shape), image)
        info = {
            **self.settings(),
            "prompt": prompt,
            "slice_prompts": [p for p, _ in drawn],
            "network_evaluations": calls,
            "intensity_range": written_range,
        }
        return SynthesisResult(out, label.copy(), np.ones(label.shape, dtype=bool), info)

    def synthesize_case(self, record: Mapping, seed: int) -> SynthesisResult:
        """The runner's per-case callable."""
        image = np.asarray(read_nifti(record["image"])[0])
        label = np.asarray(read_nifti(record["label"])[0])
        return self.synthesize(image, label, record.get("prompt") or self.prompts(record), seed)
