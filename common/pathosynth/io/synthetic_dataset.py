"""The one writer of the synthetic-dataset contract, shared by every synthesising bundle.

A synthetic dataset folder holds, for each sample, its files (by an image-format strategy, written atomically) and
then its provenance record ``provenance/<id>.json`` -- the record's existence means "finished", so a rerun skips
it -- plus ``datalist.json`` (decathlon style, paths relative to the folder), a preview and the folder's identity.

Around the samples the writer guarantees, before any synthesis starts:

- no input (dataset folder, datalist file, case files) lies in the output folder, and the folder is writable;
- one writer at a time (a lock held for the run) and one identity per folder (see :mod:`.output_folder`):
  a rerun with other checkpoints, settings, seed, bundle or format is refused unless ``overwrite``;

and during the run: under torchrun each rank takes every world-th job of a fixed job list (so a sample does not
depend on the number of processes); rank 0 alone checks and claims the folder, holds the lock, and merges the
records into the datalist at the end. The other ranks follow rank 0's verdict, so the ranks of one run share
the folder while a second run is refused.
"""

from __future__ import annotations

import datetime
import logging
import numbers
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pathosynth

from .. import distributed
from ..errors import UserInputError
from .atomic import write_json
from .image_formats import NiftiFormat, PngFormat, SyntheticSample
from .output_folder import (
    RECORDS_FOLDER,
    OutputFolderError,
    OutputFolderLock,
    OutputIdentity,
    check_writable,
    claim_output_folder,
    read_records,
    refuse_inputs,
)

__all__ = [
    "NiftiFormat",
    "OutputFolderError",
    "OutputIdentity",
    "PngFormat",
    "SampleCountError",
    "SyntheticDatasetWriter",
    "SyntheticSample",
    "sample_count",
]

logger = logging.getLogger(__name__)


class SampleCountError(UserInputError):
    """A sample-count config value is not a whole number in range; the message names the key."""


def sample_count(value, key: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; a fraction, a string or a bool is an error naming ``key`` (never rounded:
    ``1.5`` samples is a typo, not one sample)."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or int(value) < minimum:
        raise SampleCountError(f"{key} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


class SyntheticDatasetWriter:
    """Write samples into ``output_dir`` with the synthetic-dataset contract.

    Args:
        output_dir: the synthetic dataset's folder.
        image_format: :class:`NiftiFormat`, :class:`PngFormat` or any object with their interface.
        identity: what produces the samples (bundle, checkpoint hashes, settings, base seed); the format is added.
        inputs: files and folders the run reads (dataset folder, datalist, case files): never written.
        overwrite: delete the folder's earlier synthetic outputs (only the writer's files) and start over.
        datalist_info: extra top-level keys of ``datalist.json`` (``name`` and ``description`` at least).
        entry_keys: extra datalist entry keys -> record key they copy (e.g. ``{"source_case_id": "case_id"}``).
        progress: show a progress bar.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        image_format,
        identity: OutputIdentity,
        inputs: Iterable[str | os.PathLike | None] = (),
        overwrite: bool = False,
        datalist_info: Mapping | None = None,
        entry_keys: Mapping[str, str] | None = None,
        progress: bool = True,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.format = image_format
        self.identity = identity
        self.identity.image_format = image_format.name
        self.overwrite = bool(overwrite)
        self.datalist_info = dict(datalist_info or {})
        self.entry_keys = dict(entry_keys or {})
        self.progress = progress
        refuse_inputs(self.output_dir, inputs)
        self._lock: OutputFolderLock | None = None

    def record_path(self, output_id: str) -> Path:
        return self.output_dir / RECORDS_FOLDER / f"{output_id}.json"

    def finished(self, output_id: str) -> bool:
        return self.record_path(output_id).exists()

    def open(self) -> None:
        """Rank 0 checks the folder (writable, unlocked, same identity or ``overwrite``), takes the lock and records
        the identity; every rank raises rank 0's refusal, so nothing is synthesised anywhere."""
        rank, _ = distributed.rank_and_world()
        refusal: Exception | None = None
        if rank == 0:
            try:
                check_writable(self.output_dir)
                self._lock = OutputFolderLock(self.output_dir)
                self._lock.acquire()
                cleared = claim_output_folder(self.output_dir, self.identity, self.format.fixed_outputs, self.overwrite)
                if cleared:
                    logger.warning(f"overwrite: deleted the {cleared} earlier synthetic cases of {self.output_dir}")
                check_writable(self.output_dir, (*self.format.folders, RECORDS_FOLDER))
            except Exception as error:  # every rank must hear of it, or the others wait forever
                self.close()
                refusal = error
        # the message, not the exception, crosses processes (any exception type pickles as text)
        message = distributed.broadcast_from_rank0(None if refusal is None else str(refusal))
        if refusal is not None:
            raise refusal
        if message is not None:
            raise OutputFolderError(message)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def write(self, sample: SyntheticSample) -> None:
        """The sample's files, then its provenance record (last: its existence marks the sample finished)."""
        files = self.format.write(self.output_dir, sample)
        record = {
            **sample.record,
            **files,
            "output_id": sample.output_id,
            "base_seed": int(self.identity.base_seed),
            "bundle": dict(self.identity.bundle),
            "checkpoints": self.identity.checkpoint_hashes,
            "pathosynth_version": pathosynth.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        write_json(self.record_path(sample.output_id), record)

    def run(
        self,
        jobs: Sequence,
        output_id: Callable[..., str],
        produce: Callable[[list], Iterable[SyntheticSample]],
        batch_size: int = 1,
        unit: str = "synthetic cases",
    ) -> dict:
        """Claim the folder, make this rank's unfinished share of ``jobs`` with ``produce(batch)``, merge on rank 0.

        ``jobs`` is the full, fixed list (tuples); ``output_id(*job)`` names a job's sample; returns the datalist
        (rank 0; {} elsewhere)."""
        rank, world = distributed.rank_and_world()
        self.open()
        try:
            mine = list(jobs)[rank::world]
            todo = [job for job in mine if not self.finished(output_id(*job))]
            logger.info(f"rank {rank}/{world}: {len(mine)} {unit} assigned, {len(mine) - len(todo)} already finished")
            batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
            if self.progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, desc=f"synthesis (rank {rank})", disable=not batches)
            for batch in batches:
                for sample in produce(batch):
                    self.write(sample)
            distributed.barrier()
            datalist = self.merge() if rank == 0 else {}
            distributed.barrier()
        finally:
            self.close()
        return datalist

    def records(self) -> list[dict]:
        """Provenance records of every finished sample in the folder."""
        return read_records(self.output_dir)

    def merge(self) -> dict:
        """``datalist.json`` from every finished record, then the format's extra files and preview."""
        records = self.records()
        entries = [
            {
                "image": r["image"],
                "label": r["label"],
                "source_image": r.get("source_image", ""),
                "case_id": r["output_id"],
                **{key: r[source] for key, source in self.entry_keys.items()},
                "provenance": f"{RECORDS_FOLDER}/{r['output_id']}.json",
            }
            for r in records
        ]
        datalist = {**self.datalist_info, "training": entries}
        write_json(self.output_dir / "datalist.json", datalist)
        self.format.finish(self.output_dir, records)
        return datalist
