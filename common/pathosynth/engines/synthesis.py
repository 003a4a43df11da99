"""Synthesis runner shared by every bundle's ``inference.json``: cases in, a synthetic dataset out.

It owns the output contract (GUIDE §3) so no bundle re-implements it: each synthetic case is
written atomically (image, label, then its provenance record last — the record's existence means
"finished", so a rerun skips it); under torchrun each rank takes a disjoint, deterministic share
of the cases; rank 0 then writes ``datalist.json`` from all records and a preview PNG.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

import pathosynth

from ..io.atomic import sha256_file, write_json
from ..io.nifti import write_nifti_like
from ..io.preview import save_preview
from ..seeding import derive_seed
from .distributed import barrier, rank_and_world

logger = logging.getLogger(__name__)


class SynthesisRunner:
    """Run ``synthesize(record, seed)`` for every case and sample, with the bundle output contract.

    Args:
        cases: case records (``case_id``, ``image``, ``label``).
        synthesize: callable returning a result with ``image``, ``label`` (arrays in the source dtype),
            ``changed`` (bool mask of synthesised voxels) and ``info`` (dict for provenance).
        output_dir: where images/, labels/, provenance/, datalist.json and preview.png go.
        num_samples_per_case: synthetic variants per case (paper's P' = 1).
        seed: base seed; a case's seed is derived from (seed, case_id, sample index).
        bundle: {"name", "version"} of the bundle (its metadata.json).
        checkpoints: checkpoint files used, hashed into each provenance record.
        preview_cases: how many cases the preview PNG shows (0 = none).
        preview_labels: label values shown in the preview's mask panel (None = every non-zero label).
        progress: show a progress bar.
    """

    def __init__(
        self,
        cases: Sequence[Mapping],
        synthesize: Callable,
        output_dir: str | os.PathLike,
        num_samples_per_case: int = 1,
        seed: int = 0,
        bundle: Mapping | None = None,
        checkpoints: Sequence[str | os.PathLike] = (),
        preview_cases: int = 4,
        preview_labels: Sequence[int] | None = None,
        progress: bool = True,
    ) -> None:
        self.cases = list(cases)
        self.synthesize = synthesize
        self.output_dir = Path(output_dir)
        self.num_samples = int(num_samples_per_case)
        self.seed = int(seed)
        self.bundle = dict(bundle or {})
        self.checkpoints = [str(c) for c in checkpoints]
        self.preview_cases = int(preview_cases)
        self.preview_labels = None if preview_labels is None else [int(v) for v in preview_labels]
        self.progress = progress
        self._guard_inputs()

    def _guard_inputs(self) -> None:
        """Refuse an output folder that contains an input file: nothing in a user's dataset is overwritten."""
        out = self.output_dir.resolve()
        for case in self.cases:
            for key in ("image", "label"):
                if Path(case[key]).resolve().is_relative_to(out):
                    raise ValueError(f"output_dir {out} contains input file {case[key]}; choose an output folder outside the dataset")

    def jobs(self) -> list[tuple[Mapping, int]]:
        """All (case, sample index) pairs in a fixed order; rank r takes every world-th one."""
        return [(case, k) for case in self.cases for k in range(self.num_samples)]

    def output_id(self, case: Mapping, sample: int) -> str:
        return f"{case['case_id']}_syn{sample:02d}"

    def run(self) -> dict:
        rank, world = rank_and_world()
        mine = self.jobs()[rank::world]
        checkpoint_hashes = {path: sha256_file(path) for path in self.checkpoints}
        todo = [(c, k) for c, k in mine if not self._record_path(self.output_id(c, k)).exists()]
        logger.info(f"rank {rank}/{world}: {len(mine)} synthetic cases assigned, {len(mine) - len(todo)} already finished")
        iterator = todo
        if self.progress:
            from tqdm.auto import tqdm

            iterator = tqdm(todo, desc=f"synthesis (rank {rank})", disable=not todo)
        for case, sample in iterator:
            self._synthesize_one(case, sample, checkpoint_hashes)
        barrier()
        datalist = {}
        if rank == 0:
            datalist = self.write_datalist()
            self.write_preview()
        barrier()
        return datalist

    def _record_path(self, output_id: str) -> Path:
        return self.output_dir / "provenance" / f"{output_id}.json"

    def _synthesize_one(self, case: Mapping, sample: int, checkpoint_hashes: dict) -> None:
        output_id = self.output_id(case, sample)
        seed = derive_seed(self.seed, case["case_id"], sample)
        result = self.synthesize(case, seed)
        image_path = self.output_dir / "images" / f"{output_id}.nii.gz"
        label_path = self.output_dir / "labels" / f"{output_id}.nii.gz"
        write_nifti_like(image_path, result.image, nib.load(case["image"]))
        write_nifti_like(label_path, result.label, nib.load(case["label"]))
        record = {
            "output_id": output_id,
            "case_id": case["case_id"],
            "sample_index": sample,
            "image": str(image_path.relative_to(self.output_dir)),
            "label": str(label_path.relative_to(self.output_dir)),
            "source_image": str(case["image"]),
            "source_label": str(case["label"]),
            "seed": seed,
            "base_seed": self.seed,
            "bundle": self.bundle,
            "pathosynth_version": pathosynth.__version__,
            "checkpoints": checkpoint_hashes,
            "synthesis": result.info,
            "synthesised_voxels": int(result.changed.sum()),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self._record_path(output_id), record)  # last: its existence marks the case finished

    def records(self) -> list[dict]:
        """Provenance records of every finished synthetic case in this output folder."""
        folder = self.output_dir / "provenance"
        return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.exists() else []

    def write_datalist(self) -> dict:
        """``datalist.json`` (decathlon style, paths relative to output_dir) from all finished records."""
        entries = [
            {
                "image": r["image"],
                "label": r["label"],
                "source_image": r["source_image"],
                "case_id": r["output_id"],
                "source_case_id": r["case_id"],
                "provenance": f"provenance/{r['output_id']}.json",
            }
            for r in self.records()
        ]
        datalist = {
            "name": self.bundle.get("name", "pathosynth"),
            "description": "synthetic cases; paths are relative to this file's folder",
            "bundle_version": self.bundle.get("version"),
            "training": entries,
        }
        write_json(self.output_dir / "datalist.json", datalist)
        return datalist

    def write_preview(self) -> None:
        """``preview.png``: input | mask | synthetic for the first few finished cases."""
        if self.preview_cases <= 0:
            return
        rows = []
        for record in self.records()[: self.preview_cases]:
            source = nib.load(record["source_image"]).get_fdata()
            output = nib.load(self.output_dir / record["image"]).get_fdata()
            label = np.asanyarray(nib.load(self.output_dir / record["label"]).dataobj)
            shown = np.isin(label, self.preview_labels) if self.preview_labels is not None else label > 0
            rows.append({"name": record["output_id"], "input": source, "output": output, "label": np.where(shown, label, 0), "mask": shown})
        if rows:
            save_preview(self.output_dir / "preview.png", rows)
