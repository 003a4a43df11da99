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

All loading uses ``torch.load(..., weights_only=True)``: checkpoints are tensors, numbers and strings.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from ..io.atomic import atomic_path, sha256_file
from .distributed import rank_and_world, unwrap

logger = logging.getLogger(__name__)

MONAI_MODEL_FILE = "model.pt"  # MONAI bundle convention for a bundle's main weights (models/model.pt)
MONAI_MODEL_KEY = "model"  # the state-dict key MONAI Label's infer task reads from that file


def _save(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
    ) -> None:
        self.ckpt_dir = Path(ckpt_dir)
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
                raise TypeError(f"extra[{key!r}] ({type(obj).__name__}) has no state_dict/load_state_dict to save and restore")
        self.init_weights = Path(init_weights) if init_weights else None
        if self.init_weights is not None:  # a config naming a missing file fails before any training step
            if not self.init_weights.is_file():
                raise FileNotFoundError(f"init_weights {self.init_weights} does not exist (a weights file such as <ckpt_dir>/context_encoder.pt)")
            self.metadata["init_weights"] = {"path": str(self.init_weights), "sha256": sha256_file(self.init_weights)}

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
        if not (self.resume and self.latest_path.exists()):
            if self.init_weights is not None:
                for module in (self.network, self.ema_network):
                    if module is not None:
                        load_matching_weights(module, self.init_weights)
            return
        state = torch.load(self.latest_path, map_location="cpu", weights_only=True)
        unwrap(self.network).load_state_dict(state["network"])
        if self.ema_network is not None and state.get("ema_network") is not None:
            unwrap(self.ema_network).load_state_dict(state["ema_network"])
        self.optimizer.load_state_dict(state["optimizer"])
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
        logger.info(f"resumed {self.name} from {self.latest_path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}{also}")
        if self.init_weights is not None:
            logger.info(f"init_weights {self.init_weights} not loaded: a resumed run continues from its own checkpoint")

    def save(self, engine: Engine) -> None:
        """Atomically write the resume state and the inference weights (rank 0 only)."""
        if rank_and_world()[0] != 0:
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
        }
        if self.extra:
            resume_state["extra"] = {key: unwrap(obj).state_dict() for key, obj in self.extra.items()}
        _save(resume_state, self.latest_path)
        weights = ema_state if ema_state is not None else network_state
        _save({"network": weights, "metadata": {**self.metadata, "epoch": engine.state.epoch, "iteration": engine.state.iteration}}, self.weights_path)


def load_weights(network: torch.nn.Module, path: str | os.PathLike, expect: Mapping | None = None) -> torch.nn.Module:
    """Load inference weights into ``network`` (eval mode; a DDP wrapper is removed); check saved metadata against ``expect``.

    A missing file or a metadata mismatch (e.g. a LeFusion-S MI model used for PMO) raises a clear error.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist; train first (python -m monai.bundle run training ... --ckpt_dir {path.parent})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state.get("metadata", {})
    for key, value in (expect or {}).items():
        if key in saved and _plain(saved[key]) != _plain(value):
            raise ValueError(f"checkpoint {path} was trained with {key}={saved[key]!r}, but this run expects {value!r}")
    module = unwrap(network)
    module.load_state_dict(_inference_state_dict(state, path))
    return module.eval()  # inference never needs the DDP wrapper, whose forward would wait for the other ranks


def bundle_checkpoint(ckpt_dir: str | os.PathLike, name: str) -> str:
    """The weights file an inference config loads: ``<ckpt_dir>/<name>`` as training wrote it, else the MONAI
    bundle convention ``<ckpt_dir>/model.pt`` that a packed archive ships its main model as (MONAI Label loads
    exactly that file). A missing file is reported by :func:`load_weights`, naming the first choice."""
    own = Path(ckpt_dir) / name
    fallback = Path(ckpt_dir) / MONAI_MODEL_FILE
    return str(fallback if not own.exists() and fallback.exists() else own)


def export_monai_model(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rewrite an inference checkpoint (``{"network": ..., "metadata": ...}``) in the MONAI bundle format
    ``{"model": state_dict, "metadata": ...}``, which MONAI Label's bundle infer task loads into ``network_def``."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    _save({MONAI_MODEL_KEY: _inference_state_dict(state, source), "metadata": state.get("metadata", {})}, Path(target))


def _inference_state_dict(state: Mapping, path) -> Mapping:
    """The weights of an inference checkpoint: ours under ``network``, MONAI's (``models/model.pt``) under ``model``."""
    weights = state.get("network", state.get(MONAI_MODEL_KEY))
    if not isinstance(weights, Mapping):
        raise ValueError(f"checkpoint {path} holds neither a 'network' nor a '{MONAI_MODEL_KEY}' state dict; "
                         "pass an inference checkpoint <ckpt_dir>/<name>.pt")
    return weights


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
        raise FileNotFoundError(f"init_weights {path} does not exist (a weights file such as <ckpt_dir>/context_encoder.pt)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("network"), Mapping):
        state = state["network"]
    if not isinstance(state, Mapping):
        raise ValueError(f"init_weights {path} holds no state dict (expected {{'network': state_dict, ...}} or a state dict)")
    module = unwrap(network)
    own = module.state_dict()
    matched = {k: v for k, v in state.items() if k in own and isinstance(v, torch.Tensor) and v.shape == own[k].shape}
    skipped = [k for k in own if k not in matched]
    if not matched:
        raise ValueError(f"init_weights {path}: none of its {len(state)} tensors matches this network by name and shape "
                         f"(network tensors e.g. {list(own)[:3]}, file tensors e.g. {list(state)[:3]}); was it trained with another network?")
    module.load_state_dict(matched, strict=False)
    unused = len([k for k in state if k not in matched])
    logger.info(f"init_weights {path}: loaded {len(matched)} of the network's {len(own)} tensors; skipped {len(skipped)} "
                f"(kept their initial values: {', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}); {unused} tensors of the file unused")
    return list(matched), skipped


def _plain(value):
    """Lists/tuples (and config wrappers of them) compared as nested lists."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
