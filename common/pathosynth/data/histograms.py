"""Lesion intensity histograms: the texture condition of the official LeFusion code's later models.

Why: a lesion's texture is largely its intensity distribution (a bright or a dark infarct, a solid or a ground-glass
nodule). Conditioning the denoiser on the histogram of each texture channel's lesion voxels (``bins`` bins over
``value_range`` of the normalised intensity, per channel, concatenated) lets a user ask for a texture. A histogram
here is a distribution: its bins sum to 1 per channel (0 everywhere for a channel without lesion voxels), so it does
not depend on the lesion's size.

At inference the official code draws requests from k-means centres of the training histograms, each bin perturbed by
up to ±10 %; :func:`histogram_clusters` and :func:`perturb_histograms` do that, and the centres are kept in a JSON file
beside the checkpoint (:func:`write_histogram_clusters`, checked by :func:`read_histogram_clusters`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from scipy.cluster.vq import kmeans2

from ..errors import MissingInputError, UserInputError
from ..io.atomic import write_json
from .intensity import intensity_bounds, to_unit
from .labels import channel_masks
from .layouts import read_json

CLUSTERS_SUFFIX = "_histogram_clusters.json"


def lesion_histograms(image, masks, bins: int = 16, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
    """(C, bins): per mask channel, the normalised histogram of ``image``'s voxels inside it (values outside
    ``value_range`` count in the end bins). ``image`` (...) and ``masks`` (C, ...) are arrays or tensors."""
    image = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
    masks = np.asarray(masks.detach().cpu() if isinstance(masks, torch.Tensor) else masks) > 0.5
    low, high = float(value_range[0]), float(value_range[1])
    out = np.zeros((len(masks), int(bins)))
    for channel, mask in enumerate(masks):
        values = np.clip(image[mask], low, high)
        if values.size:
            out[channel] = np.histogram(values, bins=int(bins), range=(low, high))[0] / values.size
    return out


def volume_histograms(
    image: np.ndarray,
    label: np.ndarray,
    labels: Mapping[str, int],
    channels: Sequence[Sequence[str]],
    bins: int = 16,
    value_range: Sequence[float] = (-1.0, 1.0),
    intensity: str = "minmax",
    window: Sequence[float] | None = None,
) -> np.ndarray:
    """(C, bins) lesion histograms of a raw volume, normalised as training normalises it: what a case's own texture
    is (``texture: "source"`` / ``"reference"``) and what the training clusters are computed from."""
    low, high = intensity_bounds(image, intensity, window)
    unit = to_unit(np.asarray(image), low, high, clip=intensity == "window")
    return lesion_histograms(unit, channel_masks(np.asarray(label), labels, channels), bins, value_range)


class LesionHistogramd(MapTransform):
    """Add ``histogram_key``: the flattened (C * bins) lesion histograms of a training crop, from the image's first
    channel (the texture channels repeat one image) inside each channel of ``mask_key``."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "lesion_mask",
        histogram_key: str = "histogram",
        bins: int = 16,
        value_range: Sequence[float] = (-1.0, 1.0),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key, self.histogram_key = mask_key, histogram_key
        self.bins, self.value_range = int(bins), check_range(value_range)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            histograms = lesion_histograms(d[key][0], d[self.mask_key], self.bins, self.value_range)
            d[self.histogram_key] = torch.as_tensor(histograms.reshape(-1), dtype=torch.float32)
        return d


def check_range(value_range: Sequence[float], key: str = "histogram_range") -> tuple[float, float]:
    if len(value_range) != 2 or not float(value_range[0]) < float(value_range[1]):
        raise UserInputError(f"`{key}` must be [low, high] with low < high, got {value_range!r}")
    return float(value_range[0]), float(value_range[1])


def histogram_clusters(histograms: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(k, ...) k-means centres of ``histograms`` (N, ...), ordered by mean intensity bin, darkest first (k-means++
    start, fixed seed: the same training cases give the same centres)."""
    flat = np.asarray(histograms, dtype=np.float64).reshape(len(histograms), -1)
    if not 1 <= int(k) <= len(flat):
        raise UserInputError(f"`texture_clusters` must lie in 1..{len(flat)} (the training cases), got {k!r}")
    centres, _ = kmeans2(flat, int(k), minit="++", seed=np.random.default_rng(seed))
    centres = centres.reshape(int(k), *np.shape(histograms)[1:])
    return centres[np.argsort([mean_bin(c) for c in centres], kind="stable")]


def mean_bin(histograms: np.ndarray) -> float:
    """The mean bin index over all channels: orders textures from dark to bright."""
    h = np.asarray(histograms).reshape(-1, np.shape(histograms)[-1])
    return float((h * np.arange(h.shape[-1])).sum() / max(h.sum(), 1e-12))


def perturb_histograms(histograms: np.ndarray, rng: np.random.Generator, amount: float = 0.1) -> np.ndarray:
    """Each bin times a factor drawn from [1 - amount, 1 + amount] (the official code's ±10 %), renormalised per
    channel so a request stays a distribution; an empty channel stays empty."""
    h = np.asarray(histograms, dtype=np.float64)
    h = h * rng.uniform(1.0 - amount, 1.0 + amount, size=h.shape)
    total = h.sum(axis=-1, keepdims=True)
    return np.divide(h, total, out=np.zeros_like(h), where=total > 0)


def clusters_path(checkpoint: str | os.PathLike) -> Path:
    """``<ckpt_dir>/<name>.pt`` -> ``<ckpt_dir>/<name>_histogram_clusters.json``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + CLUSTERS_SUFFIX)


def write_histogram_clusters(
    path: str | os.PathLike,
    centres: np.ndarray,
    channels: Sequence[Sequence[str]],
    bins: int,
    value_range: Sequence[float],
    extra: Mapping | None = None,
) -> None:
    """Atomically write the centres (k, C, bins) with what they mean: channels (class names), bins, range."""
    write_json(
        path,
        {
            "channels": [list(c) for c in channels],
            "bins": int(bins),
            "range": [float(v) for v in value_range],
            "centres": np.asarray(centres).round(8).tolist(),
            **dict(extra or {}),
        },
    )


def read_histogram_clusters(
    path: str | os.PathLike, channels: Sequence[Sequence[str]], bins: int, value_range: Sequence[float]
) -> np.ndarray:
    """The (k, C, bins) centres of a clusters file, checked against what this run conditions on; a missing file or
    one of other channels, bins or range is a UserInputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(
            f"histogram clusters file {path} does not exist; training a histogram-conditioned model writes it beside "
            "its checkpoint (configs/train_histogram.json), or choose another `texture`"
        )
    content = read_json(path, "histogram clusters file")
    want = {"channels": [list(c) for c in channels], "bins": int(bins), "range": [float(v) for v in value_range]}
    if not isinstance(content, dict) or "centres" not in content:
        raise UserInputError(f"histogram clusters file {path} holds no 'centres'; rerun training to rewrite it")
    differences = [
        f"{key} {content.get(key)!r} (this run: {value!r})" for key, value in want.items() if content.get(key) != value
    ]
    if differences:
        raise UserInputError(
            f"histogram clusters file {path} was written for other histograms: " + ", ".join(differences) + "; set "
            "`histogram_bins`, `histogram_range` and the lesion classes as at training"
        )
    centres = np.asarray(content["centres"], dtype=np.float64)
    if centres.ndim != 3 or centres.shape[1:] != (len(channels), int(bins)) or not len(centres):
        raise UserInputError(
            f"histogram clusters file {path}: 'centres' has shape {list(centres.shape)}, expected "
            f"[k, {len(channels)}, {int(bins)}]"
        )
    return centres
