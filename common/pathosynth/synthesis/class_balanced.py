"""A class-balanced synthetic dataset from a class-conditional diffusion model: N images of every requested class.

Noise-only synthesis has no source case, so :class:`~pathosynth.engines.synthesis.SynthesisRunner` (which writes each
output on its source's NIfTI grid) does not fit; this runner keeps the same output contract (GUIDE §3) for it:

- sample ``i`` of class ``c`` is ``<c>_<i>``; its noise comes from its own generator seeded by (seed, c, i), so it does
  not depend on the batch size, the number of processes or what else is generated;
- each image is written atomically as an 8-bit PNG (MedMNIST's format), then its provenance record (bundle, checkpoint
  hash, seed, class, sampler settings) -- the record's existence means "finished", so a rerun skips it; a rerun with
  another checkpoint or sampler into the same folder is refused rather than mixed;
- under torchrun each rank takes every world-th sample; rank 0 then writes ``datalist.json`` (``image``, ``label`` =
  class index, ``source_image`` empty), the MedMNIST-style ``synthetic.npz`` (``train_images``/``train_labels``) and a
  ``preview.png`` grid (one row per class).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

import pathosynth

from ..data.medmnist import write_medmnist_npz
from ..diffusion.class_conditional import null_class_labels
from ..engines.distributed import barrier, rank_and_world
from ..io.atomic import atomic_path, sha256_file, write_json
from ..seeding import derive_seed

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, network, sampler, class_names: Sequence[str], num_per_class: int | Mapping[str, int],
                 image_shape: Sequence[int], space, output_dir: str | os.PathLike, seed: int = 0, batch_size: int = 64,
                 device: str | torch.device = "cpu", bundle: Mapping | None = None, checkpoints: Sequence[str] = (),
                 preview_per_class: int = 8, progress: bool = True) -> None:
        self.network, self.sampler, self.space = network, sampler, space
        self.class_names = [str(c) for c in class_names]
        wanted = num_per_class if isinstance(num_per_class, Mapping) else {c: num_per_class for c in self.class_names}
        unknown = sorted(set(wanted) - set(self.class_names))
        if unknown:
            raise ValueError(f"num_per_class names classes {unknown} that the model does not know ({self.class_names})")
        if any(int(n) < 0 for n in wanted.values()):
            raise ValueError(f"num_per_class must be >= 0, got {dict(wanted)}")
        self.num_per_class = {c: int(wanted[c]) for c in self.class_names if c in wanted}
        self.image_shape = tuple(int(s) for s in image_shape)
        self.output_dir = Path(output_dir)
        self.seed, self.batch_size, self.device = int(seed), int(batch_size), torch.device(device)
        self.bundle = dict(bundle or {})
        self.checkpoints = [str(c) for c in checkpoints]
        self.preview_per_class, self.progress = int(preview_per_class), progress

    def jobs(self) -> list[tuple[str, int]]:
        """Every (class name, sample index) in a fixed order; rank r takes every world-th one."""
        return [(c, i) for c, n in self.num_per_class.items() for i in range(n)]

    @staticmethod
    def output_id(class_name: str, index: int) -> str:
        return f"{re.sub(r'[^A-Za-z0-9_-]+', '-', class_name)}_{index:05d}"

    def _record_path(self, output_id: str) -> Path:
        return self.output_dir / "provenance" / f"{output_id}.json"

    def _check_rerun(self, hashes: dict, settings: dict) -> None:
        for record in self.records()[:1]:
            if record["checkpoints"] != hashes or record["synthesis"]["sampler"] != settings:
                raise ValueError(f"{self.output_dir} holds samples of another checkpoint or sampler "
                                 f"({record['output_id']}); write to a new output_dir")

    def run(self) -> dict:
        rank, world = rank_and_world()
        hashes = {path: sha256_file(path) for path in self.checkpoints}
        settings = self.sampler.settings()
        self._check_rerun(hashes, settings)
        mine = self.jobs()[rank::world]
        todo = [job for job in mine if not self._record_path(self.output_id(*job)).exists()]
        logger.info(f"rank {rank}/{world}: {len(mine)} synthetic images assigned, {len(mine) - len(todo)} already finished")
        batches = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"synthesis (rank {rank})", disable=not batches)
        for batch in batches:
            self._generate(batch, hashes, settings)
        barrier()
        datalist = self.write_outputs() if rank == 0 else {}
        barrier()
        return datalist

    @torch.no_grad()
    def _generate(self, batch: list[tuple[str, int]], hashes: dict, settings: dict) -> None:
        seeds = [derive_seed(self.seed, c, i) for c, i in batch]
        labels = torch.tensor([self.class_names.index(c) for c, _ in batch], device=self.device)
        null = null_class_labels(len(batch), len(self.class_names), self.device)
        samples = self.sampler(self.network, labels, null, self.image_shape, [torch.Generator().manual_seed(s) for s in seeds])
        images = (self.space.decode(samples).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        for (class_name, index), seed, image in zip(batch, seeds, images):
            self._write(class_name, index, seed, image, hashes, settings)

    def _write(self, class_name: str, index: int, seed: int, image: np.ndarray, hashes: dict, settings: dict) -> None:
        from PIL import Image

        output_id = self.output_id(class_name, index)
        image_path = self.output_dir / "images" / f"{output_id}.png"
        with atomic_path(image_path) as tmp:
            Image.fromarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)).save(tmp, format="PNG")
        write_json(self._record_path(output_id), {  # last: its existence marks the sample finished
            "output_id": output_id, "image": str(image_path.relative_to(self.output_dir)), "source_image": "",
            "label": self.class_names.index(class_name), "class_name": class_name, "sample_index": index,
            "seed": seed, "base_seed": self.seed, "bundle": self.bundle, "pathosynth_version": pathosynth.__version__,
            "checkpoints": hashes, "synthesis": {"sampler": settings, "image_shape": list(self.image_shape)},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})

    def records(self) -> list[dict]:
        """Provenance records of every finished sample in this output folder."""
        folder = self.output_dir / "provenance"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []

    def write_outputs(self) -> dict:
        """``datalist.json``, ``synthetic.npz`` and ``preview.png`` from every finished sample."""
        from PIL import Image

        records = self.records()
        entries = [{"image": r["image"], "label": r["label"], "class_name": r["class_name"], "source_image": "",
                    "case_id": r["output_id"], "provenance": f"provenance/{r['output_id']}.json"} for r in records]
        datalist = {"name": self.bundle.get("name", "pathosynth"), "bundle_version": self.bundle.get("version"),
                    "description": "class-balanced synthetic images; paths are relative to this file's folder",
                    "class_names": self.class_names, "training": entries}
        write_json(self.output_dir / "datalist.json", datalist)
        if records:
            images = np.stack([np.asarray(Image.open(self.output_dir / r["image"])) for r in records])
            write_medmnist_npz(self.output_dir / "synthetic.npz", {"train": (images, [r["label"] for r in records])})
            self._write_preview(records, images)
        return datalist

    def _write_preview(self, records: list[dict], images: np.ndarray) -> None:
        if self.preview_per_class <= 0:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = {c: [k for k, r in enumerate(records) if r["class_name"] == c][: self.preview_per_class] for c in self.num_per_class}
        rows = {c: ks for c, ks in rows.items() if ks}
        fig, axes = plt.subplots(len(rows), self.preview_per_class, squeeze=False,
                                 figsize=(1.2 * self.preview_per_class, 1.3 * len(rows)))
        for axis_row, (class_name, picks) in zip(axes, rows.items()):
            for column, axis in enumerate(axis_row):
                axis.axis("off")
                if column < len(picks):
                    axis.imshow(images[picks[column]], cmap="gray", vmin=0, vmax=255)
            axis_row[0].set_title(class_name, fontsize=8, loc="left")
        with atomic_path(self.output_dir / "preview.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
