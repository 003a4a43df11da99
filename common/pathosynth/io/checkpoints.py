"""Reading checkpoint files safely: ``torch.load(..., weights_only=True)`` with every failure named, and the metadata
that says what a network was trained with (inside our checkpoints, or beside MONAI's flat ``models/model.pt``).

A file concern, so it lives in ``io``: samplers, text vocabularies and the training engines all read checkpoints, and
none of them should import the training engines for it (docs/ARCHITECTURE.md, layers).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import MissingInputError, UserInputError

MONAI_MODEL_FILE = "model.pt"  # MONAI bundle convention for a bundle's main weights: a flat state dict
MONAI_MODEL_KEY = "model"  # key of the weights in models/model.pt files that archives before v0.3.0 wrote
METADATA_SUFFIX = "_metadata.json"  # beside a flat state dict: models/model.pt -> models/model_metadata.json


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> Mapping:
    """``torch.load(path, weights_only=True)`` of a checkpoint dict, with every failure a UserInputError naming the
    file and the problem: missing, a folder, truncated or corrupted, not a PyTorch file, a pickle of Python
    objects other than tensors/numbers/strings (which is never loaded), or not a dict."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise UserInputError(f"{what} {path} is a folder, not a checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise UserInputError(
                f"{what} {path} holds pickled Python objects, not only tensors, numbers and strings "
                "(e.g. a whole saved module); it is not loaded, for safety: save its state_dict() "
                "or use a checkpoint written by training"
            ) from None
        raise UserInputError(f"{what} {path} is not a PyTorch checkpoint ({first_line(err)})") from None
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as err:
        problem = "is empty" if path.stat().st_size == 0 else "is truncated or corrupted, or not a PyTorch checkpoint"
        raise UserInputError(
            f"{what} {path} {problem} ({type(err).__name__}: {first_line(err)}); copy it again or retrain"
        ) from None
    if not isinstance(state, Mapping):
        raise UserInputError(
            f"{what} {path} holds a {type(state).__name__}, not a checkpoint dict "
            "({'network': state_dict, 'metadata': ...} or a state dict)"
        )
    return state


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else "no detail"
    return "unsupported content" if "weights_only" in text else text[:200]  # never suggest loading unsafe pickles


def metadata_path(weights_path: str | os.PathLike) -> Path:
    """Where the metadata of a flat state dict lives: ``models/model.pt`` -> ``models/model_metadata.json``."""
    weights_path = Path(weights_path)
    return weights_path.with_name(weights_path.stem + METADATA_SUFFIX)


def weights_and_metadata(state: Mapping, path: Path) -> tuple[Mapping, Mapping | None]:
    """(weights, metadata) of an inference checkpoint: ours (``{"network", "metadata"}``), a pre-0.3.0 archive's
    ``{"model", "metadata"}``, or MONAI's flat ``models/model.pt`` with its metadata in the JSON file beside it
    (None when that file is absent)."""
    for key in ("network", MONAI_MODEL_KEY):
        if isinstance(state.get(key), Mapping):
            return state[key], state.get("metadata") or {}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(
            f"checkpoint {path} holds neither a 'network' state dict nor a flat state dict of "
            "tensors; pass an inference checkpoint <ckpt_dir>/<name>.pt or a bundle's models/model.pt"
        )
    sidecar = metadata_path(path)
    if not sidecar.is_file():
        return state, None
    try:
        return state, json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(
            f"{sidecar} (the metadata of {path.name}) is not valid JSON ({err}); copy it again from the bundle archive"
        ) from None


def checkpoint_metadata(path: str | os.PathLike) -> Mapping:
    """What an inference checkpoint records about its training (texture channels, vocabulary, ...), read from the
    checkpoint or, for a flat ``models/model.pt``, from ``models/model_metadata.json``; {} when nothing is recorded."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"checkpoint {path} does not exist")
    return weights_and_metadata(read_checkpoint(path), path)[1] or {}
