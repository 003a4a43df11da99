"""Synthesis runner shared by every bundle's ``inference.json``: cases in, a synthetic dataset out.

Each case's synthesiser (``synthesize(record, seed)``) is all a bundle provides; the output contract (sharding by
rank, resume, atomic NIfTI files on the source grid, provenance, datalist, preview, the folder's identity and lock,
inputs never written) is the shared :class:`~pathosynth.io.synthetic_dataset.SyntheticDatasetWriter`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ..io.datalists import datalist_label_map
from ..io.synthetic_dataset import NiftiFormat, OutputIdentity, SyntheticDatasetWriter, SyntheticSample, sample_count
from ..seeding import derive_seed


def describe_synthesizer(synthesize: Callable) -> dict:
    """What produces the cases, for the output folder's identity: the ``settings()`` of the object a bound
    ``synthesize`` belongs to (method, variant, sampler), or of its parts when it has none (a pipeline of a mask and
    a texture source); a plain function is named."""
    owner = getattr(synthesize, "__self__", None)
    if owner is None:
        return {"synthesizer": getattr(synthesize, "__qualname__", type(synthesize).__name__)}
    return _describe(owner)


def _describe(owner) -> dict:
    if hasattr(owner, "settings"):
        return {"synthesizer": type(owner).__name__, **owner.settings()}
    parts = {
        name: _describe(value)
        for name, value in vars(owner).items()
        if value is not None and hasattr(value, "settings")
    }
    return {"synthesizer": type(owner).__name__, **parts}


class SynthesisRunner:
    """Run ``synthesize(record, seed)`` for every case and sample, with the bundle output contract. The record
    passed carries the ``sample_index`` too, so a synthesiser can make distinct variants of a case (texture clusters).

    Args:
        cases: case records (``case_id``, ``image``, ``label``).
        synthesize: callable returning a result with ``image``, ``label`` (arrays in the source dtype),
            ``changed`` (bool mask of synthesised voxels) and ``info`` (dict for provenance).
        output_dir: where images/, labels/, provenance/, datalist.json and preview.png go.
        num_samples_per_case: synthetic variants per case (paper's P' = 1); a whole number >= 1.
        seed: base seed; a case's seed is derived from (seed, case_id, sample index).
        bundle: {"name", "version"} of the bundle (its metadata.json).
        checkpoints: checkpoint files used, hashed into each provenance record and the folder's identity.
        preview_cases: how many cases the preview PNG shows (0 = none).
        preview_labels: label values shown in the preview's mask panel (None = every non-zero label).
        progress: show a progress bar.
        labels: class name -> value of the written label maps, recorded in ``datalist.json`` so that a bundle
            configured for other label semantics refuses the synthetic list.
        inputs: what else the cases came from (the datalist file, the dataset folder): never written.
        overwrite: delete the output folder's earlier synthetic outputs and start over (else a folder written with
            other settings is refused).
        settings: what produces the cases, for the folder's identity (default: :func:`describe_synthesizer`).
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
        inputs: Sequence[str | os.PathLike | None] = (),
        overwrite: bool = False,
        settings: Mapping | None = None,
        labels: Mapping[str, int] | None = None,
    ) -> None:
        self.num_samples = sample_count(num_samples_per_case, "num_samples_per_case")
        self.cases = list(cases)
        self.synthesize = synthesize
        self.output_dir = Path(output_dir)
        self.seed = int(seed)
        self.bundle = dict(bundle or {})
        self.checkpoints = [str(c) for c in checkpoints]
        case_files = [case[key] for case in self.cases for key in ("image", "label")]
        described = dict(settings) if settings is not None else describe_synthesizer(synthesize)
        identity = OutputIdentity(self.bundle, self.checkpoints, self.seed, described, NiftiFormat.name)
        self.writer = SyntheticDatasetWriter(
            self.output_dir,
            NiftiFormat(preview_cases, preview_labels),
            identity,
            inputs=[*inputs, *case_files],
            overwrite=overwrite,
            progress=progress,
            entry_keys={"source_case_id": "case_id"},
            datalist_info={
                "name": self.bundle.get("name", "pathosynth"),
                "bundle_version": self.bundle.get("version"),
                "description": "synthetic cases; paths are relative to this file's folder",
                **datalist_label_map(labels),
            },
        )

    def jobs(self) -> list[tuple[Mapping, int]]:
        """All (case, sample index) pairs in a fixed order; rank r takes every world-th one."""
        return [(case, k) for case in self.cases for k in range(self.num_samples)]

    def output_id(self, case: Mapping, sample: int) -> str:
        return f"{case['case_id']}_syn{sample:02d}"

    def run(self) -> dict:
        return self.writer.run(self.jobs(), self.output_id, self._produce)

    def _produce(self, batch: list[tuple[Mapping, int]]) -> list[SyntheticSample]:
        samples = []
        for case, index in batch:
            seed = derive_seed(self.seed, case["case_id"], index)
            result = self.synthesize({**case, "sample_index": index}, seed)  # which variant, for cycling textures
            record = {
                "case_id": case["case_id"],
                "sample_index": index,
                "source_image": str(case["image"]),
                "source_label": str(case["label"]),
                "seed": seed,
                "synthesis": result.info,
                "synthesised_voxels": int(result.changed.sum()),
            }
            samples.append(SyntheticSample(self.output_id(case, index), result.image, record, label=result.label))
        return samples

    def records(self) -> list[dict]:
        """Provenance records of every finished synthetic case in this output folder."""
        return self.writer.records()

    def write_datalist(self) -> dict:
        """``datalist.json`` (decathlon style, paths relative to output_dir) and the preview, from all finished
        records."""
        return self.writer.merge()
