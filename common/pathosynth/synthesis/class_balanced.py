"""A class-balanced synthetic dataset from a class-conditional diffusion model: N images of every requested class.

Noise-only synthesis has no source case, so it writes 8-bit PNGs (MedMNIST's format) instead of NIfTI volumes on a
source grid; everything else is the shared synthetic-dataset writer (:mod:`pathosynth.io.synthetic_dataset`), as for
:class:`~pathosynth.engines.synthesis.SynthesisRunner`:

- sample ``i`` of class ``c`` is ``<c>_<i>``; its noise comes from its own generator seeded by (seed, c, i), so it does
  not depend on the batch size, the number of processes or what else is generated;
- each image is written atomically, then its provenance record (bundle, checkpoint hash, seed, class, sampler
  settings) -- the record's existence means "finished", so a rerun skips it; a rerun with another checkpoint, sampler
  or seed into the same folder is refused rather than mixed (``overwrite`` starts the folder over);
- under torchrun each rank takes every world-th sample; rank 0 then writes ``datalist.json`` (``image``, ``label`` =
  class index, ``source_image`` empty), the MedMNIST-style ``synthetic.npz`` (``train_images``/``train_labels``) and a
  ``preview.png`` grid (one row per class).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.medmnist import write_medmnist_npz
from ..diffusion.class_conditional import null_class_labels
from ..errors import UserInputError
from ..io.synthetic_dataset import OutputIdentity, PngFormat, SyntheticDatasetWriter, SyntheticSample, sample_count
from ..seeding import derive_seed

logger = logging.getLogger(__name__)


def _medmnist_train_split(path: Path, images: np.ndarray, labels: list[int]) -> None:
    """The synthetic set as a MedMNIST npz (its train split), so MedMNIST readers take it as it is."""
    write_medmnist_npz(path, {"train": (images, labels)})


class ClassBalancedSynthesis:
    """Generate ``num_per_class`` images of each class with a guided sampler and write them with the output contract.

    Args:
        network: the trained class-conditional UNet (``num_class_embeds = len(class_names) + 1``; the last is null).
        sampler: :class:`~pathosynth.diffusion.guided_ddim.GuidedDDIMSampler` with ``condition_key="class_labels"``.
        class_names: name of class index 0, 1, ... (as in training).
        num_per_class: N for every class, or ``{class name: N}`` to generate only those classes.
        image_shape: (C, H, W) of a sample.
        space: the diffusion space (decodes samples to [0, 1]).
        output_dir: images/, provenance/, datalist.json, synthetic.npz, preview.png go here.
        seed, batch_size, device: base seed; samples per network batch (memory only); where to sample.
        bundle, checkpoints: provenance ({"name", "version"}; weight files, hashed).
        preview_per_class: images per class row in preview.png (0: none). progress: progress bar.
        overwrite: delete the output folder's earlier synthetic outputs and start over (else a folder written with
            another checkpoint, sampler or seed is refused).
    """

    def __init__(
        self,
        network,
        sampler,
        class_names: Sequence[str],
        num_per_class: int | Mapping[str, int],
        image_shape: Sequence[int],
        space,
        output_dir: str | os.PathLike,
        seed: int = 0,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        bundle: Mapping | None = None,
        checkpoints: Sequence[str] = (),
        preview_per_class: int = 8,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        self.network, self.sampler, self.space = network, sampler, space
        self.class_names = [str(c) for c in class_names]
        if isinstance(num_per_class, Mapping):
            unknown = sorted(set(num_per_class) - set(self.class_names))
            if unknown:
                raise UserInputError(
                    f"num_per_class names classes {unknown} that the model does not know ({self.class_names})"
                )
            counts = {
                c: sample_count(num_per_class[c], f"num_per_class[{c!r}]", minimum=0)
                for c in self.class_names
                if c in num_per_class
            }
            sample_count(sum(counts.values()), "num_per_class (in total)")
        else:
            counts = dict.fromkeys(self.class_names, sample_count(num_per_class, "num_per_class"))
        self.num_per_class = counts
        self.image_shape = tuple(int(s) for s in image_shape)
        self.output_dir = Path(output_dir)
        self.seed, self.batch_size, self.device = int(seed), int(batch_size), torch.device(device)
        self.bundle = dict(bundle or {})
        self.checkpoints = [str(c) for c in checkpoints]
        settings = {
            "sampler": sampler.settings(),
            "image_shape": list(self.image_shape),
            "class_names": self.class_names,
        }
        identity = OutputIdentity(self.bundle, self.checkpoints, self.seed, settings, PngFormat.name)
        image_format = PngFormat(self.class_names, int(preview_per_class), archive=_medmnist_train_split)
        self.writer = SyntheticDatasetWriter(
            self.output_dir,
            image_format,
            identity,
            overwrite=overwrite,
            progress=progress,
            entry_keys={"class_name": "class_name"},
            datalist_info={
                "name": self.bundle.get("name", "pathosynth"),
                "bundle_version": self.bundle.get("version"),
                "description": "class-balanced synthetic images; paths are relative to this file's folder",
                "class_names": self.class_names,
            },
        )

    def jobs(self) -> list[tuple[str, int]]:
        """Every (class name, sample index) in a fixed order; rank r takes every world-th one."""
        return [(c, i) for c, n in self.num_per_class.items() for i in range(n)]

    @staticmethod
    def output_id(class_name: str, index: int) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', class_name)}_{index:05d}"

    def run(self) -> dict:
        return self.writer.run(
            self.jobs(), self.output_id, self._generate, batch_size=self.batch_size, unit="synthetic images"
        )

    @torch.no_grad()
    def _generate(self, batch: list[tuple[str, int]]) -> list[SyntheticSample]:
        seeds = [derive_seed(self.seed, c, i) for c, i in batch]
        labels = torch.tensor([self.class_names.index(c) for c, _ in batch], device=self.device)
        null = null_class_labels(len(batch), len(self.class_names), self.device)
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        samples = self.sampler(self.network, labels, null, self.image_shape, generators)
        images = (self.space.decode(samples).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        synthesis = {"sampler": self.writer.identity.settings["sampler"], "image_shape": list(self.image_shape)}
        return [
            SyntheticSample(
                self.output_id(class_name, index),
                image,
                {
                    "source_image": "",
                    "label": self.class_names.index(class_name),
                    "class_name": class_name,
                    "sample_index": index,
                    "seed": seed,
                    "synthesis": synthesis,
                },
            )
            for (class_name, index), seed, image in zip(batch, seeds, images)
        ]

    def records(self) -> list[dict]:
        """Provenance records of every finished sample in this output folder."""
        return self.writer.records()

    def write_outputs(self) -> dict:
        """``datalist.json``, ``synthetic.npz`` and ``preview.png`` from every finished sample."""
        return self.writer.merge()
