"""The space a label-conditioned DDPM runs in, and the ways into and out of it.

FQCDM (Sec. 3.1, 3.3) diffuses the *continuous* encoder features F0 = E(I) of a frozen VQ autoencoder,
normalised; a generated F' is snapped to the codebook (Eq. 4, each vector replaced by its nearest
codebook row) and decoded (Eq. 5). The pixel-space baseline diffuses the image itself. Both are one
:class:`DiffusionSpace`: with an autoencoder it is the latent space, without one it is pixel space,
and in both the DDPM sees ``(x - shift) * scale``.

Normalisation rule (the paper only says "we normalize the latent features"): shift and scale are the
mean and 1/standard deviation of all encoder features of the training volumes, computed once before
training by :func:`estimate_latent_stats` and stored in the diffusion checkpoint's metadata, where
inference reads them back. Pixel space uses the fixed shift 0.5, scale 2 that maps [0, 1] to [-1, 1].
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from ..distributed import broadcast_from_rank0, rank_and_world
from ..errors import MissingInputError, UserInputError
from ..io.checkpoints import checkpoint_metadata

logger = logging.getLogger(__name__)

PIXEL_STATS = {"latent_shift": 0.5, "latent_scale": 2.0}


def _plain_tensor(x) -> torch.Tensor:
    """A MetaTensor (from MONAI transforms) as a plain tensor: networks and maths need no metadata."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class DiffusionSpace:
    """Encode images into the (normalised) diffusion space and decode samples back to images.

    Args:
        autoencoder: a trained MONAI ``VQVAE`` (frozen here: eval mode, no gradients), or None for pixel space.
        shift, scale: the normalisation ``(x - shift) * scale``. None = read ``latent_shift``/``latent_scale``
            from ``stats_checkpoint``'s metadata at first use (so an inference config can be built before
            the checkpoint exists, and the VQ-reconstruction baseline, which needs no statistics, never reads it).
        stats_checkpoint: a diffusion checkpoint written by :class:`~pathosynth.engines.checkpoint.ResumableCheckpoint`.
        quantize: replace generated features by codebook vectors before decoding (Eq. 4, FQCDM's "FQB"). False
            decodes the continuous features directly: the paper's ablation without the quantisation block (Tab. 5).
    """

    def __init__(
        self,
        autoencoder: torch.nn.Module | None = None,
        shift: float | None = None,
        scale: float | None = None,
        stats_checkpoint: str | os.PathLike | None = None,
        quantize: bool = True,
    ) -> None:
        if autoencoder is not None:
            autoencoder.eval().requires_grad_(False)
        self.autoencoder = autoencoder
        self.quantize_features = bool(quantize)
        self._shift = None if shift is None else float(shift)
        self._scale = None if scale is None else float(scale)
        self.stats_checkpoint = stats_checkpoint
        if (self._shift is None or self._scale is None) and stats_checkpoint is None:
            raise ValueError(
                "give shift and scale, or a stats_checkpoint whose metadata holds latent_shift/latent_scale"
            )
        self._latent_sizes: dict[tuple[int, ...], tuple[int, ...]] = {}

    @property
    def kind(self) -> str:
        return "pixel" if self.autoencoder is None else "latent"

    @property
    def device(self) -> torch.device:
        if self.autoencoder is None:
            return torch.device("cpu")
        return next(self.autoencoder.parameters()).device

    def _stats(self) -> tuple[float, float]:
        if self._shift is None or self._scale is None:
            path = Path(self.stats_checkpoint)
            if not path.exists():
                raise MissingInputError(f"checkpoint {path} does not exist; train the diffusion model first")
            meta = checkpoint_metadata(path)  # in the checkpoint, or beside a flat models/model.pt
            if "latent_shift" not in meta or "latent_scale" not in meta:
                raise UserInputError(f"checkpoint {path} holds no latent_shift/latent_scale in its metadata")
            self._shift, self._scale = float(meta["latent_shift"]), float(meta["latent_scale"])
        return self._shift, self._scale

    @property
    def shift(self) -> float:
        return self._stats()[0]

    @property
    def scale(self) -> float:
        return self._stats()[1]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """F0 = E(I) (Eq. 2): continuous, pre-quantisation encoder output; the images themselves in pixel space."""
        images = _plain_tensor(images).float()
        return images if self.autoencoder is None else self.autoencoder.encode(images)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised features, what the DDPM is trained on (Sec. 3.3)."""
        shift, scale = self._stats()
        return (self.features(images) - shift) * scale

    @torch.no_grad()
    def quantize(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 4: (codebook vectors, indices). Each feature vector is replaced by its nearest codebook row, looked
        up by index, so the result holds codebook rows exactly (MONAI's ``VQVAE.quantize`` adds a straight-through
        term that can differ in the last bit). Never updates the codebook (the autoencoder is in eval mode)."""
        if self.autoencoder is None:
            raise ValueError("pixel space has no codebook")
        self.autoencoder.eval()
        indices = self.autoencoder.quantizer.quantize(features.float())
        return self.autoencoder.quantizer.embed(indices), indices

    @torch.no_grad()
    def decode_features(self, features: torch.Tensor) -> torch.Tensor:
        """Images from un-normalised features: quantise (Eq. 4, unless disabled), then decode (Eq. 5); identity in
        pixel space."""
        if self.autoencoder is None:
            return features
        codes = self.quantize(features)[0] if self.quantize_features else features.float()
        return self.autoencoder.decode(codes)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Images from DDPM samples: un-normalise, then :meth:`decode_features`."""
        shift, scale = self._stats()
        return self.decode_features(samples / scale + shift)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """The autoencoder alone (the VQ-reconstruction baseline): encode, quantise, decode a real image."""
        if self.autoencoder is None:
            raise ValueError("the reconstruction baseline needs an autoencoder")
        return self.decode_features(self.features(images))

    def latent_size(self, image_size: Sequence[int]) -> tuple[int, ...]:
        """Spatial size of the diffusion space for images of ``image_size`` (found by encoding a blank image once)."""
        key = tuple(int(s) for s in image_size)
        if self.autoencoder is None:
            return key
        if key not in self._latent_sizes:
            probe = torch.zeros((1, 1, *key), device=self.device)
            self._latent_sizes[key] = tuple(self.features(probe).shape[2:])
        return self._latent_sizes[key]

    def settings(self) -> dict:
        """For provenance (statistics only when they are used, i.e. already known)."""
        out = {"space": self.kind}
        if self._shift is not None and self._scale is not None:
            out.update(latent_shift=self._shift, latent_scale=self._scale)
        return out


def _slices(item, key: str) -> torch.Tensor:
    """(N, C, H, W) slices of a dataset item: a dict with ``key`` or a tensor, (C, H, W) or (C, H, W, D)."""
    image = _plain_tensor(item[key] if isinstance(item, Mapping) else item).float()
    if image.ndim == 3:
        return image[None]
    if image.ndim == 4:
        return image.permute(3, 0, 1, 2)
    raise ValueError(f"expected a (C, H, W) slice or (C, H, W, D) volume, got shape {tuple(image.shape)}")


def estimate_latent_stats(
    autoencoder: torch.nn.Module,
    data: Iterable,
    device: str | torch.device | None = None,
    key: str = "image",
    batch_size: int = 32,
    max_items: int | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> dict[str, float]:
    """``{"latent_shift": mean, "latent_scale": 1 / std}`` of the encoder features F0 over ``data``.

    ``data`` yields volumes or slices (dicts with ``key`` or tensors) in [0, 1], preprocessed as for
    training; the first ``max_items`` are used. If ``checkpoint`` (this diffusion model's weights file)
    already records the statistics, they are returned unchanged, so a resumed run keeps the normalisation
    its network was trained with.

    Under torchrun every rank calls this: rank 0 estimates and broadcasts, so all replicas train the same
    normalisation (sums reduced on different GPUs need not agree to the last bit).
    """
    stats = None
    if rank_and_world()[0] == 0:
        stats = _estimate_latent_stats(autoencoder, data, device, key, batch_size, max_items, checkpoint)
    return broadcast_from_rank0(stats)


def _estimate_latent_stats(autoencoder, data, device, key, batch_size, max_items, checkpoint) -> dict[str, float]:
    if checkpoint is not None and Path(checkpoint).exists():
        meta = torch.load(checkpoint, map_location="cpu", weights_only=True).get("metadata", {})
        if "latent_shift" in meta and "latent_scale" in meta:
            logger.info(
                f"latent statistics from {checkpoint}: shift {meta['latent_shift']:.4g}, "
                f"scale {meta['latent_scale']:.4g}"
            )
            return {"latent_shift": float(meta["latent_shift"]), "latent_scale": float(meta["latent_scale"])}
    space = DiffusionSpace(autoencoder, shift=0.0, scale=1.0)
    device = torch.device(device) if device is not None else space.device
    total, total_sq, count = 0.0, 0.0, 0
    for index, item in enumerate(data):
        if max_items is not None and index >= int(max_items):
            break
        slices = _slices(item, key)
        for start in range(0, len(slices), batch_size):
            feats = space.features(slices[start : start + batch_size].to(device)).double()
            total += float(feats.sum())
            total_sq += float((feats * feats).sum())
            count += feats.numel()
    if count == 0:
        raise ValueError("no data to estimate the latent statistics from")
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    if not std > 1e-8:
        raise ValueError(f"encoder features are constant (std {std:.3g}); is the autoencoder trained?")
    logger.info(f"latent statistics over {count} feature values: mean {mean:.4g}, std {std:.4g}")
    return {"latent_shift": mean, "latent_scale": 1.0 / std}
