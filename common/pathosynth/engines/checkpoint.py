"""Resumable training checkpoints and safe weight loading.

MONAI's CheckpointSaver/Loader need the path of the checkpoint to resume from, which a user rerunning
the same command does not know. This handler keeps two files per model in ``ckpt_dir``:

- ``<name>_latest.pt``: everything needed to resume (network, EMA network, optimizer, trainer state, and
  any ``extra`` objects such as a GAN discriminator, its optimizer or an LR scheduler), rewritten atomically
  every ``save_every`` epochs and at the end; found automatically at start.
- ``<name>.pt``: the weights used for inference (EMA weights when an EMA is kept) plus the metadata
  that inference checks (texture channels), so a checkpoint cannot silently be used with the wrong
  lesion classes.

Fine-tuning starts a network from another model's weights (``init_weights``, e.g. a context-encoder
pretext model): :func:`load_matching_weights` copies the tensors whose name and shape agree. A run that
resumes continues from its own ``<name>_latest.pt`` and ignores ``init_weights``.

A checkpoint records what it was trained on, so a reused ``ckpt_dir`` cannot silently continue (or skip) a
different training: ``<name>_latest.pt`` and ``<name>.pt`` hold the ``metadata`` (the settings inference checks)
and the dataset fingerprint of the cases (:func:`dataset_fingerprint`). Resuming with other data or other
settings stops before any step and says what differs; resuming a finished run says so and trains nothing.

All loading uses ``torch.load(..., weights_only=True)``: checkpoints are tensors, numbers and strings. A missing,
truncated, corrupted or foreign file is a :class:`~pathosynth.errors.UserInputError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..distributed import rank_and_world, unwrap
from ..errors import MissingInputError, UserInputError
from ..io.atomic import atomic_path, sha256_file, write_json
from ..io.checkpoints import (
    MONAI_MODEL_FILE,
    first_line,
    metadata_path,
    read_checkpoint,
    weights_and_metadata,
)

logger = logging.getLogger(__name__)


FINGERPRINT_BYTES = 1 << 16  # bytes read from each end of every file a case names


def _save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _load_state(module: torch.nn.Module, weights: Mapping, path, strict: bool = True) -> None:
    """``load_state_dict``, with a mismatch (another architecture or size) named by file and first differences."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights] if strict else []
    unexpected = [k for k in weights if k not in own] if strict else []
    reshaped = [
        f"{k}: {list(weights[k].shape)} in the file, {list(own[k].shape)} in the network"
        for k in own
        if k in weights and isinstance(weights[k], torch.Tensor) and weights[k].shape != own[k].shape
    ]
    found = (
        ("tensors of another shape", reshaped),
        ("network tensors missing", missing),
        ("unknown tensors", unexpected),
    )
    problems = [f"{len(names)} {label} (e.g. {'; '.join(names[:2])})" for label, names in found if names]
    if problems:
        raise UserInputError(
            f"checkpoint {path} does not fit this network: {', '.join(problems)}; was it trained with "
            "other network settings or for another bundle?"
        )
    try:
        module.load_state_dict(weights, strict=strict)
    except RuntimeError as err:
        raise UserInputError(f"checkpoint {path} does not fit this network ({first_line(err)})") from None


def ensure_writable_folder(folder: str | os.PathLike, key: str = "ckpt_dir") -> Path:
    """Create ``folder`` and write and delete a probe file in it, so an unusable folder is reported before work
    (permission bits alone say nothing for root, a read-only mount or a path through a regular file)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write_probe_", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UserInputError(
            f"{key} {folder} is not a folder this run can write to ({err.strerror or err}); give another --{key}"
        ) from None
    return folder


def dataset_fingerprint(cases: Sequence) -> dict:
    """What a checkpoint records about its training data, cheaply: per case, a digest of its record, where every
    path of an existing file stands for that file's name, size and first and last 64 KiB (a gzip file's last bytes
    hold the CRC-32 and length of its whole content, so any change of a ``.nii.gz`` shows), arrays for their dtype,
    shape and bytes, and any other value for itself. Folders and mtimes do not count: a dataset copied or moved
    elsewhere keeps its fingerprint. Limit: an edit inside a large uncompressed file away from both ends is not seen.

    Returns ``{"fingerprint": hex, "count": n, "cases": {case id: short digest}}``."""
    digests = {}
    for index, case in enumerate(cases):
        h = hashlib.sha256()
        _digest(h, case)
        key = _case_id(case, index)
        while key in digests:
            key = f"{key}+"
        digests[key] = h.hexdigest()[:16]
    total = hashlib.sha256("\n".join(f"{k} {v}" for k, v in sorted(digests.items())).encode())
    return {"fingerprint": total.hexdigest(), "count": len(digests), "cases": dict(sorted(digests.items()))}


def _case_id(case, index: int) -> str:
    if isinstance(case, Mapping):
        for key in ("case_id", "id"):
            if case.get(key) not in (None, ""):
                return str(case[key])
        if isinstance(case.get("image"), (str, os.PathLike)):
            return Path(case["image"]).name
    return f"#{index}"


def _digest(h, value) -> None:
    if isinstance(value, Mapping):
        h.update(b"{")
        for key in sorted(value, key=str):
            h.update(repr(str(key)).encode())
            _digest(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            _digest(h, item)
        h.update(b"]")
    elif isinstance(value, (str, os.PathLike)) and os.sep in str(value) and os.path.exists(value):
        path = Path(value)
        h.update(f"path:{path.name}".encode())
        if path.is_file():
            size = path.stat().st_size
            h.update(f":{size}:".encode())
            with open(path, "rb") as handle:
                h.update(handle.read(FINGERPRINT_BYTES))
                if size > FINGERPRINT_BYTES:
                    handle.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
                    h.update(handle.read())
    elif isinstance(value, (torch.Tensor, np.ndarray)):
        array = np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
        h.update(f"array:{array.dtype}:{array.shape}:".encode())
        h.update(array.tobytes())
    else:
        h.update(repr(value).encode())


class ResumableCheckpoint:
    """Ignite handler: resume from ``<name>_latest.pt`` if present, save it every ``save_every`` epochs.

    Args:
        ckpt_dir: checkpoint folder.
        name: file stem (e.g. "lefusion_j").
        network: the trained network (DDP-wrapped is fine).
        optimizer: its optimizer.
        ema_network: the EMA copy (ignite ``EMAHandler.ema_model``) or None.
        metadata: saved with the inference weights (texture channels, variant, ...).
        save_every: epochs between saves (the last epoch always saves).
        resume: set False to start over even when a checkpoint exists.
        extra: further objects with ``state_dict``/``load_state_dict`` needed to resume but not to infer
            (e.g. ``{"discriminator": D, "discriminator_optimizer": opt_D, "lr_scheduler": sched}``); saved
            under ``"extra"`` in ``<name>_latest.pt`` only, so the inference weights stay the network's alone.
            Modules may be DDP-wrapped. A checkpoint without a saved entry leaves that object as it is
            (logged), so checkpoints written before an object was added still resume.
        init_weights: a weights file (``<name>.pt`` of another run) to start from when there is nothing to
            resume: tensors whose name and shape match are loaded, the rest keep their initial values
            (:func:`load_matching_weights`). Its path and SHA-256 are added to the saved metadata.
        cases: the training cases (the config's ``train#cases``); their :func:`dataset_fingerprint` is saved, and
            a resume with other cases is refused. None skips the data check.

    At construction (before any step) the folder is checked writable and an existing ``<name>_latest.pt`` is read
    and compared with this run: other data or other ``metadata`` (``init_weights`` aside, which a resumed run does
    not load) is a UserInputError saying what differs. A checkpoint written before fingerprints were recorded
    resumes with a logged note. A run whose checkpoint already reached ``max_epochs`` logs that it has nothing to
    do, trains nothing and rewrites nothing.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        name: str,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        ema_network: torch.nn.Module | None = None,
        metadata: Mapping | None = None,
        save_every: int = 1,
        resume: bool = True,
        extra: Mapping[str, object] | None = None,
        init_weights: str | os.PathLike | None = None,
        cases: Sequence | None = None,
    ) -> None:
        self.ckpt_dir = ensure_writable_folder(ckpt_dir)
        self.name = name
        self.network = network
        self.optimizer = optimizer
        self.ema_network = ema_network
        self.metadata = dict(metadata or {})
        self.save_every = max(1, int(save_every))
        self.resume = resume
        self.extra = dict(extra or {})
        for key, obj in self.extra.items():
            if not (callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))):
                raise TypeError(
                    f"extra[{key!r}] ({type(obj).__name__}) has no state_dict/load_state_dict to save and restore"
                )
        self.init_weights = Path(init_weights) if init_weights else None
        if self.init_weights is not None:  # a config naming a missing file fails before any training step
            if not self.init_weights.is_file():
                raise MissingInputError(
                    f"init_weights {self.init_weights} does not exist "
                    "(a weights file such as <ckpt_dir>/context_encoder.pt)"
                )
            self.metadata["init_weights"] = {"path": str(self.init_weights), "sha256": sha256_file(self.init_weights)}
        self.dataset = dataset_fingerprint(cases) if cases is not None else None
        self._finished = False
        resuming = self.resume and self.latest_path.exists()
        self._resume_state = read_checkpoint(self.latest_path) if resuming else None
        if self._resume_state is not None:
            self._check_same_training(self._resume_state)

    def _check_same_training(self, state: Mapping) -> None:
        """Refuse to continue a checkpoint trained on other data or with other settings, saying what differs."""
        differences = []
        saved_meta = state.get("metadata")
        if saved_meta is None:
            logger.info(
                f"{self.latest_path} records no training settings (an older checkpoint); "
                "resuming without comparing them"
            )
        else:
            for key in sorted(set(saved_meta) & set(self.metadata) - {"init_weights"}):
                if not _same_setting(saved_meta[key], self.metadata[key]):
                    differences.append(f"{key}: {saved_meta[key]!r} in the checkpoint, {self.metadata[key]!r} now")
        saved_data = state.get("dataset")
        if self.dataset is not None and saved_data is None:
            logger.info(
                f"{self.latest_path} records no dataset fingerprint (an older checkpoint); "
                "resuming without checking the data"
            )
        elif self.dataset is not None and saved_data["fingerprint"] != self.dataset["fingerprint"]:
            differences.append(_data_difference(saved_data, self.dataset))
        if differences:
            raise UserInputError(
                f"ckpt_dir {self.ckpt_dir} holds a {self.name} training that differs from this run "
                f"({self.latest_path.name}): " + "; ".join(differences) + ". Resuming would continue that model as "
                "if it were this one. Give a new --ckpt_dir to train this run (or rerun with the checkpoint's data and "
                "settings to continue it)"
            )

    @property
    def latest_path(self) -> Path:
        return self.ckpt_dir / f"{self.name}_latest.pt"

    @property
    def weights_path(self) -> Path:
        return self.ckpt_dir / f"{self.name}.pt"

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_every), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        """Restore network, EMA, optimizer and the trainer's epoch/iteration from the latest checkpoint."""
        if rank_and_world()[0] == 0:  # temporary files of a run killed while saving
            for stale in self.ckpt_dir.glob(f".{self.name}*.pt.*"):
                stale.unlink(missing_ok=True)
        state, self._resume_state = self._resume_state, None  # read and checked at construction
        if state is None and self.resume and self.latest_path.exists():  # a second run of the same engine
            state = read_checkpoint(self.latest_path)
            self._check_same_training(state)
        if state is None:
            if self.init_weights is not None:
                for module in (self.network, self.ema_network):
                    if module is not None:
                        load_matching_weights(module, self.init_weights)
            return
        missing = [key for key in ("network", "optimizer", "epoch", "iteration") if key not in state]
        if missing:
            raise UserInputError(
                f"checkpoint {self.latest_path} is no resume checkpoint (it lacks "
                f"{', '.join(missing)}); move it away or give a new --ckpt_dir"
            )
        _load_state(unwrap(self.network), state["network"], self.latest_path)
        if self.ema_network is not None and state.get("ema_network") is not None:
            _load_state(unwrap(self.ema_network), state["ema_network"], self.latest_path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise UserInputError(
                f"checkpoint {self.latest_path}: its optimizer state does not fit this run "
                f"({first_line(err)}); give a new --ckpt_dir"
            ) from None
        saved_extra = state.get("extra") or {}
        restored = []
        for key, obj in self.extra.items():
            if key in saved_extra:
                unwrap(obj).load_state_dict(saved_extra[key])
                restored.append(key)
            else:
                logger.warning(f"{self.latest_path} holds no saved state for {key!r}; it starts from its initial state")
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        also = f" (with {', '.join(restored)})" if restored else ""
        logger.info(
            f"resumed {self.name} from {self.latest_path} at epoch {engine.state.epoch}, "
            f"iteration {engine.state.iteration}{also}"
        )
        if self.init_weights is not None:
            logger.info(f"init_weights {self.init_weights} not loaded: a resumed run continues from its own checkpoint")
        max_epochs = getattr(engine.state, "max_epochs", None)
        if max_epochs is not None and engine.state.epoch >= max_epochs:
            self._finished = True  # nothing is trained, so nothing is rewritten
            total = max_epochs * (getattr(engine.state, "epoch_length", None) or 0)
            logger.warning(
                f"training already finished at step {engine.state.iteration} of max_steps {total} in "
                f"{self.ckpt_dir}; nothing to do (raise max_steps or use a new ckpt_dir)"
            )

    def save(self, engine: Engine) -> None:
        """Atomically write the resume state and the inference weights (rank 0 only)."""
        if rank_and_world()[0] != 0 or self._finished:
            return
        if engine.state.epoch in getattr(self, "_saved_epochs", set()):
            return  # EPOCH_COMPLETED and COMPLETED of the same epoch
        self._saved_epochs = getattr(self, "_saved_epochs", set()) | {engine.state.epoch}
        network_state = unwrap(self.network).state_dict()
        ema_state = unwrap(self.ema_network).state_dict() if self.ema_network is not None else None
        resume_state = {
            "network": network_state,
            "ema_network": ema_state,
            "optimizer": self.optimizer.state_dict(),
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "metadata": self.metadata,
            "dataset": self.dataset,
        }
        if self.extra:
            resume_state["extra"] = {key: unwrap(obj).state_dict() for key, obj in self.extra.items()}
        _save(resume_state, self.latest_path)
        weights = ema_state if ema_state is not None else network_state
        trained_on = {} if self.dataset is None else {"dataset": {k: self.dataset[k] for k in ("fingerprint", "count")}}
        _save(
            {
                "network": weights,
                "metadata": {
                    **self.metadata,
                    **trained_on,
                    "epoch": engine.state.epoch,
                    "iteration": engine.state.iteration,
                },
            },
            self.weights_path,
        )


def _data_difference(saved: Mapping, now: Mapping) -> str:
    """Which cases differ between two :func:`dataset_fingerprint` records, in a few words."""
    old, new = saved.get("cases") or {}, now.get("cases") or {}
    parts = []
    for label, names in (
        ("only in the checkpoint's data", [k for k in old if k not in new]),
        ("only in this run's", [k for k in new if k not in old]),
        ("with other files", [k for k in old if k in new and old[k] != new[k]]),
    ):
        if names:
            parts.append(f"{len(names)} {label} ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})")
    return (
        f"the data: trained on {saved.get('count')} cases (fingerprint {saved['fingerprint'][:12]}), this run has "
        f"{now['count']} (fingerprint {now['fingerprint'][:12]})" + (": " + ", ".join(parts) if parts else "")
    )


def load_weights(network: torch.nn.Module, path: str | os.PathLike, expect: Mapping | None = None) -> torch.nn.Module:
    """Load inference weights into ``network`` (eval mode; a DDP wrapper is removed); check saved metadata against
    ``expect``.

    A missing, broken or foreign file, weights of another architecture or a metadata mismatch (e.g. a LeFusion-S MI
    model used for PMO) raise a UserInputError naming the file and the problem. A flat state dict (MONAI's
    ``models/model.pt``) is checked against the ``models/model_metadata.json`` beside it; without that file the
    checks cannot be made, so it is refused when ``expect`` names settings.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"checkpoint {path} does not exist; train first "
            f"(python -m monai.bundle run training ... --ckpt_dir {path.parent})"
        )
    weights, saved = weights_and_metadata(read_checkpoint(path), path)
    if saved is None and expect:
        raise UserInputError(
            f"checkpoint {path} is a flat state dict and {metadata_path(path)}, which records what it "
            f"was trained with ({', '.join(expect)}), is missing; copy it from the bundle archive "
            "(pathosynth.cli pack --weights writes both)"
        )
    for key, value in (expect or {}).items():
        if key in (saved or {}) and _plain(saved[key]) != _plain(value):
            raise UserInputError(
                f"checkpoint {path} was trained with {key}={saved[key]!r}, but this run expects {value!r}"
            )
    module = unwrap(network)
    _load_state(module, weights, path)
    return module.eval()  # inference never needs the DDP wrapper, whose forward would wait for the other ranks


def bundle_checkpoint(ckpt_dir: str | os.PathLike, name: str) -> str:
    """The weights file an inference config loads: ``<ckpt_dir>/<name>`` as training wrote it, else the MONAI
    bundle convention ``<ckpt_dir>/model.pt`` that a packed archive ships its main model as (MONAI Label loads
    exactly that file). A missing file is reported by :func:`load_weights`, naming the first choice."""
    own = Path(ckpt_dir) / name
    fallback = Path(ckpt_dir) / MONAI_MODEL_FILE
    return str(fallback if not own.exists() and fallback.exists() else own)


def export_monai_model(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write an inference checkpoint (``{"network": ..., "metadata": ...}``) in the MONAI bundle format: ``target``
    (``models/model.pt``) a flat state dict, which ``monai.bundle.load``, model-zoo's ``ckpt_export`` and MONAI
    Label's bundle infer task read as it is, and its metadata as JSON beside it (``models/model_metadata.json``),
    which :func:`load_weights` checks. Returns the metadata file's path."""
    source = Path(source)
    weights, metadata = weights_and_metadata(read_checkpoint(source), source)
    if metadata is None:
        raise UserInputError(
            f"checkpoint {source} is a flat state dict without {metadata_path(source).name} beside "
            "it; pack the checkpoint training wrote (<ckpt_dir>/<name>.pt)"
        )
    try:
        json.dumps(_plain(dict(metadata)))
    except TypeError as err:
        raise UserInputError(f"checkpoint {source}: its metadata cannot be written as JSON ({err})") from None
    _save(dict(weights), Path(target))
    write_json(metadata_path(target), _plain(dict(metadata)))
    return metadata_path(target)


def load_matching_weights(network: torch.nn.Module, path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Start ``network`` from another model's weights: load every tensor whose name and shape match, keep the rest.

    Why: fine-tuning from a pretext task. A context encoder has the segmenter's architecture but a 1-channel
    reconstruction head, so its encoder and decoder carry over while the K-class output layer (and layers the
    pretext model lacks, such as deep-supervision heads) start fresh. Reads the ``<name>.pt`` format of
    :class:`ResumableCheckpoint` (``{"network": state_dict, "metadata": ...}``), a ``<name>_latest.pt`` or a
    bare state dict. Logs how many tensors were loaded and which were skipped.

    Returns (loaded names, skipped names of ``network``). Raises FileNotFoundError for a missing file and
    ValueError when no tensor matches (a file of another architecture, where starting "pretrained" would be a lie).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"init_weights {path} does not exist (a weights file such as <ckpt_dir>/context_encoder.pt)"
        )
    state = read_checkpoint(path, "init_weights")
    if isinstance(state.get("network"), Mapping):
        state = state["network"]
    module = unwrap(network)
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    skipped = [k for k in own if k not in matched]
    if not matched:
        raise UserInputError(
            f"init_weights {path}: none of its {len(state)} tensors matches this network by name and "
            f"shape (network tensors e.g. {list(own)[:3]}, file tensors e.g. {list(state)[:3]}); "
            "was it trained with another network?"
        )
    module.load_state_dict(matched, strict=False)
    unused = len([k for k in state if k not in matched])
    more = " ..." if len(skipped) > 8 else ""
    logger.info(
        f"init_weights {path}: loaded {len(matched)} of the network's {len(own)} tensors; skipped "
        f"{len(skipped)} (kept their initial values: {', '.join(skipped[:8])}{more}); "
        f"{unused} tensors of the file unused"
    )
    return list(matched), skipped


def _plain(value):
    """Lists/tuples (and config wrappers of them) compared as nested lists, dicts by their plain values."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _same_setting(saved, now) -> bool:
    """Two recorded training settings agree; a file recorded as ``{"path", "sha256"}`` compares by its content
    alone (a moved ckpt_dir holds the same base model)."""

    def content(value):
        if isinstance(value, Mapping):
            return {k: content(v) for k, v in value.items() if not (k == "path" and value.get("sha256"))}
        return [content(v) for v in value] if isinstance(value, list) else value

    return content(_plain(saved)) == content(_plain(now))
