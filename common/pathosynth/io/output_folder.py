"""What a synthetic-dataset folder may be written with: its identity, its lock and the inputs it must not hold.

A synthetic dataset is only useful if every case in it came from the same bundle, checkpoints, sampler settings
and seed. So the folder records what wrote it (``output_identity.json``, written atomically by the first run) and
a later run with anything different is refused before any synthesis, with the differences spelt out; the user
either picks a new folder or passes ``--overwrite true``, which deletes the files the writer created there (the
ones its provenance records name, and its datalist/preview/archive) and nothing else. More cases or more samples
per case under the same identity is a resume, not a conflict.

A lock file (``synthesis.lock``, ``flock``-ed for the whole run by the one process that writes the folder's
shared files) refuses a second concurrent writer. ``flock`` is advisory and local: it holds between processes of
one machine (and on most network file systems that forward it), which is where two runs collide in practice.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserInputError
from .atomic import sha256_file, write_json

IDENTITY_FILE = "output_identity.json"
LOCK_FILE = "synthesis.lock"
RECORDS_FOLDER = "provenance"
OVERWRITE_HINT = "pass --overwrite true to delete"


class OutputFolderError(UserInputError):
    """The output folder cannot be written by this run: the message names the folder, the problem and the way out."""


@dataclass
class OutputIdentity:
    """What produced a synthetic dataset; two runs may share a folder only when these agree.

    ``checkpoints`` are the weight files used; they are hashed (SHA-256) when first needed -- at the run, not when a
    config is instantiated -- and only the hashes are compared (a checkpoint copied elsewhere is the same model).
    ``settings`` is the synthesiser's own description (method, variant, sampler).
    """

    bundle: Mapping
    checkpoints: Sequence[str | os.PathLike]
    base_seed: int
    settings: Mapping
    image_format: str
    _hashes: dict | None = field(default=None, init=False, repr=False)

    @property
    def checkpoint_hashes(self) -> dict[str, str]:
        """Checkpoint path -> SHA-256 (as provenance records carry them)."""
        if self._hashes is None:
            self._hashes = {str(path): sha256_file(path) for path in self.checkpoints}
        return self._hashes

    def compared(self) -> dict:
        """The JSON values that must match (after a JSON round trip, so tuples and lists compare equal)."""
        return json.loads(
            json.dumps(
                {
                    "bundle": dict(self.bundle),
                    "checkpoints_sha256": sorted(self.checkpoint_hashes.values()),
                    "base_seed": int(self.base_seed),
                    "settings": dict(self.settings),
                    "image_format": self.image_format,
                }
            )
        )

    def checkpoint_names(self) -> dict[str, str]:
        return {h: os.path.basename(p) for p, h in self.checkpoint_hashes.items()}

    def to_json(self) -> dict:
        import pathosynth

        return {
            "identity": self.compared(),
            "checkpoint_files": self.checkpoint_names(),
            "written_by": "pathosynth synthetic-dataset writer",
            "pathosynth_version": pathosynth.__version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, Mapping) and value:
        return {
            k: v
            for key, item in value.items()
            for k, v in _flatten(item, f"{prefix}.{key}" if prefix else str(key)).items()
        }
    if isinstance(value, list) and value and any(isinstance(v, (Mapping, list)) for v in value):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}[{i}]").items()}
    return {prefix: value}


def _shown(value, limit: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def identity_differences(old: Mapping, new: Mapping, checkpoint_files: Mapping[str, str] | None = None) -> list[str]:
    """``key: <old> in the folder, <new> now`` for every differing leaf of two ``compared()`` identities."""
    names = dict(checkpoint_files or {})
    flat_old, flat_new = _flatten(dict(old)), _flatten(dict(new))
    lines = []
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, "<absent>"), flat_new.get(key, "<absent>")
        if before == after:
            continue
        if key == "checkpoints_sha256":
            before = [f"{names.get(h, '?')} sha256 {h[:12]}" for h in before] if isinstance(before, list) else before
            after = [f"{names.get(h, '?')} sha256 {h[:12]}" for h in after] if isinstance(after, list) else after
        lines.append(f"{key}: {_shown(before)} in the folder, {_shown(after)} now")
    return lines


def read_records(folder: Path) -> list[dict]:
    """Provenance records (``provenance/*.json`` with an ``output_id``) of every finished output in ``folder``."""
    records = []
    for path in sorted((folder / RECORDS_FOLDER).glob("*.json")) if (folder / RECORDS_FOLDER).is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and record.get("output_id") == path.stem:
                records.append(record)
    return records


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _flat(values) -> list:
    if values is None or isinstance(values, (str, os.PathLike)):
        return [values] if values not in (None, "") else []
    return [item for value in values for item in _flat(value)]


def refuse_inputs(folder: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse an output folder that holds an input file, or that lies inside (or contains) an input folder:
    nothing a run reads (the dataset folder, the datalist, each case's image and label) may be written over."""
    out = Path(folder).expanduser().resolve()
    for given in _flat(inputs):
        path = Path(given).expanduser().resolve()
        if not path.exists():  # e.g. the default dataset_dir when a datalist is given: nothing there to protect
            continue
        if path.is_dir():
            if _inside(out, path) or _inside(path, out):
                raise OutputFolderError(
                    f"output_dir {out} {'is inside' if _inside(out, path) else 'contains'} the input folder {path}; "
                    "nothing in an input dataset is written: choose an output folder outside it"
                )
        elif _inside(path, out):
            raise OutputFolderError(
                f"output_dir {out} contains the input file {path}; nothing a run reads is "
                "written over: choose an output folder that holds no input"
            )


def check_writable(folder: str | os.PathLike, subfolders: Sequence[str] = ()) -> None:
    """Create ``folder`` (and ``subfolders``) and a probe file in each, so an unwritable destination is found before
    any synthesis (permission bits alone say nothing when running as root)."""
    for target in [Path(folder)] + [Path(folder) / s for s in subfolders]:
        try:
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target, prefix=".write-probe."):
                pass
        except OSError as error:
            raise OutputFolderError(
                f"output_dir {Path(folder).resolve()} is not writable: cannot create "
                f"{target} or a file in it ({error.strerror or error}); choose a writable "
                "output folder"
            ) from error


class OutputFolderLock:
    """An exclusive ``flock`` on ``<folder>/synthesis.lock`` while held; a second holder is refused at once.

    The file is removed on release; an acquirer that locked a file already unlinked by the previous holder
    (they raced) notices the changed inode and retries on the new file.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise OutputFolderError(
                    f"output_dir {self.path.parent.resolve()} is being written by another synthesis run "
                    f"({holder} holds {self.path}); wait for it to finish, or write to another output_dir"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def clear_previous_outputs(folder: Path, fixed_outputs: Sequence[str]) -> int:
    """Delete what the writer created in ``folder``: the files each provenance record names, the records, the
    identity file and the writer's ``fixed_outputs`` (datalist, preview, archive). Returns the number of cases."""
    records = read_records(folder)
    for record in records:
        for key in ("image", "label"):
            value = record.get(key)
            if isinstance(value, str) and value and _inside((folder / value).resolve(), folder.resolve()):
                with contextlib.suppress(FileNotFoundError):
                    (folder / value).unlink()
        (folder / RECORDS_FOLDER / f"{record['output_id']}.json").unlink()
    for name in (*fixed_outputs, IDENTITY_FILE):
        with contextlib.suppress(FileNotFoundError):
            (folder / name).unlink()
    for sub in sorted(
        {
            Path(r[k]).parts[0]
            for r in records
            for k in ("image", "label")
            if isinstance(r.get(k), str) and len(Path(r[k]).parts) > 1
        }
        | {RECORDS_FOLDER}
    ):
        with contextlib.suppress(OSError):
            (folder / sub).rmdir()  # only when empty: files the writer did not create stay
    return len(records)


def claim_output_folder(folder: Path, identity: OutputIdentity, fixed_outputs: Sequence[str], overwrite: bool) -> int:
    """Check ``folder`` against ``identity`` (refuse, or clear it when ``overwrite``) and record the identity.
    Returns the number of earlier cases deleted (``overwrite`` only).

    Call it while holding the folder's lock: it decides whether this run may add outputs to the folder.
    """
    new = identity.compared()
    path = folder / IDENTITY_FILE
    records = read_records(folder)
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            old, names = stored["identity"], {**stored.get("checkpoint_files", {}), **identity.checkpoint_names()}
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise OutputFolderError(
                f"output_dir {folder.resolve()}: its {IDENTITY_FILE} is unreadable ({error}); "
                "write to another output_dir"
            ) from error
        if old == new and not overwrite:
            return 0
        if not overwrite:
            differences = "; ".join(identity_differences(old, new, names))
            raise OutputFolderError(
                f"output_dir {folder.resolve()} holds {len(records)} synthetic cases made with other settings, and "
                f"this run's would be mixed with them: {differences}. Write to a new output_dir, or {OVERWRITE_HINT} "
                "the folder's earlier synthetic outputs and start over"
            )
    elif records and not overwrite:
        raise OutputFolderError(
            f"output_dir {folder.resolve()} holds {len(records)} synthetic cases without an {IDENTITY_FILE} (written "
            "by an older pathosynth), so nothing says they match this run. Write to a new output_dir, or "
            f"{OVERWRITE_HINT} them and start over"
        )
    elif not records:
        foreign = [name for name in fixed_outputs if (folder / name).exists()]
        if foreign:
            raise OutputFolderError(
                f"output_dir {folder.resolve()} already holds {', '.join(foreign)}, which this writer did not create "
                "and will not replace; write to another output_dir"
            )
    cleared = clear_previous_outputs(folder, fixed_outputs) if overwrite else 0
    write_json(path, identity.to_json())
    return cleared
