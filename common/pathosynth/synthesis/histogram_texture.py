"""Which lesion texture a histogram-conditioned model is asked for: the ``texture`` config choice.

- ``"source"``: the case's own lesion histograms (re-synthesis with the texture it had);
- ``"clusters"``: the k-means centres of the training histograms, read from ``<checkpoint>_histogram_clusters.json``
  (written at training), each bin perturbed by up to ±10 % from the case seed as in the official code; sample k of a
  case takes centre k mod K, so ``num_samples_per_case = K`` gives one variant per centre, darkest first;
- ``"histogram"``: explicit histograms from the config (``texture_histograms``: channel name -> bins, a channel name
  being its classes joined by "+", e.g. ``{"MI": [...], "PMO": [...]}``), normalised to sum 1;
- ``"reference"``: the lesion histograms of another case (``texture_reference``, a case id among ``cases``).

Every choice is checked when the synthesiser is built (:meth:`HistogramTexture.prepare`), before any case is
synthesised, and the histogram used is returned for the case's provenance record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..data.histograms import (
    check_range,
    clusters_path,
    perturb_histograms,
    read_histogram_clusters,
    volume_histograms,
)
from ..data.intensity import check_intensity
from ..diffusion.conditioned import ConditionedDenoiser, check_guidance
from ..errors import UserInputError
from ..seeding import derive_seed
from .results import read_case

TEXTURE_MODES = ("source", "clusters", "histogram", "reference")


def channel_name(classes: Sequence[str]) -> str:
    return "+".join(classes)


class HistogramTexture:
    """The texture request of each case and sample, and the guided denoiser that carries it.

    Args:
        texture: one of :data:`TEXTURE_MODES`.
        labels: class name -> label value.
        bins, value_range: the histograms the models were trained on (``histogram_bins``, ``histogram_range``).
        intensity, window: the normalisation of training (:mod:`pathosynth.data.intensity`).
        histograms: ``texture_histograms`` for ``"histogram"``.
        reference: ``texture_reference`` (a case id) for ``"reference"``; ``cases``: where to find it.
        guidance_scale: classifier-free guidance weight (1.0 = off).
        perturbation: relative per-bin perturbation of cluster centres.
    """

    def __init__(
        self,
        texture: str = "source",
        labels: Mapping[str, int] | None = None,
        bins: int = 16,
        value_range: Sequence[float] = (-1.0, 1.0),
        intensity: str = "minmax",
        window: Sequence[float] | None = None,
        histograms: Mapping[str, Sequence[float]] | None = None,
        reference: str | None = None,
        cases: Sequence[Mapping] = (),
        guidance_scale: float = 1.0,
        perturbation: float = 0.1,
    ) -> None:
        if texture not in TEXTURE_MODES:
            raise UserInputError(f"`texture` must be one of {TEXTURE_MODES}, got {texture!r}")
        check_intensity(intensity, window)
        self.texture, self.labels = texture, dict(labels or {})
        self.bins, self.value_range = int(bins), check_range(value_range)
        self.intensity, self.window = intensity, window
        self.histograms, self.reference, self.cases = histograms, reference, list(cases)
        self.guidance_scale, self.perturbation = float(guidance_scale), float(perturbation)
        self._fixed: dict[str, np.ndarray] = {}  # model name -> (C, bins) or (K, C, bins) for clusters
        self._files: dict[str, str] = {}

    def settings(self) -> dict:
        chosen = {"histogram": self.histograms, "reference": self.reference}.get(self.texture)
        return {
            "texture": self.texture,
            **({f"texture_{self.texture}": chosen} if chosen is not None else {}),
            "histogram_bins": self.bins,
            "histogram_range": list(self.value_range),
            "guidance_scale": self.guidance_scale,
        }

    def prepare(self, models: Sequence) -> None:
        """Check the request against every model before any synthesis: clusters files, explicit histograms, the
        reference case; fixed requests are computed once here."""
        for model in models:
            check_guidance(model.network, self.guidance_scale)
            if self.texture == "clusters":
                if not model.checkpoint:
                    raise UserInputError(f"texture 'clusters' needs the checkpoint of model {model.name}")
                path = clusters_path(model.checkpoint)
                self._fixed[model.name] = read_histogram_clusters(path, model.channels, self.bins, self.value_range)
                self._files[model.name] = str(path)
            elif self.texture == "histogram":
                self._fixed[model.name] = np.stack([self._explicit(names) for names in model.channels])
            elif self.texture == "reference":
                image, label = read_case(self._reference_case())
                self._fixed[model.name] = self._volume(image, label, model.channels)

    def _explicit(self, classes: Sequence[str]) -> np.ndarray:
        name = channel_name(classes)
        given = (self.histograms or {}).get(name) if isinstance(self.histograms, Mapping) else None
        values = np.asarray(given if given is not None else [], dtype=np.float64)
        if values.shape != (self.bins,) or (values < 0).any() or not values.sum() > 0:
            raise UserInputError(
                f"`texture_histograms` needs, for channel {name!r}, a list of {self.bins} non-negative numbers "
                f"(not all 0), e.g. {{{name!r}: [...]}}; got {given!r}"
            )
        return values / values.sum()

    def _reference_case(self) -> Mapping:
        found = [case for case in self.cases if case.get("case_id") == self.reference]
        if not found:
            known = [case.get("case_id") for case in self.cases]
            raise UserInputError(
                f"`texture_reference` {self.reference!r} is not a case of the dataset (cases: {known[:8]}"
                f"{', ...' if len(known) > 8 else ''})"
            )
        return found[0]

    def _volume(self, image: np.ndarray, label: np.ndarray, channels) -> np.ndarray:
        return volume_histograms(
            image, label, self.labels, channels, self.bins, self.value_range, self.intensity, self.window
        )

    def request(self, model, model_index: int, image, label, seed: int, sample_index: int) -> tuple[np.ndarray, dict]:
        """(C, bins) histograms asked of ``model`` for this case and sample, and their provenance entry."""
        info: dict = {"model": model.name, "channels": [list(c) for c in model.channels]}
        if self.texture == "source":
            histograms = self._volume(image, label, model.channels)
        elif self.texture == "clusters":
            centres = self._fixed[model.name]
            cluster = int(sample_index) % len(centres)
            rng = np.random.default_rng(derive_seed(seed, "histogram", model_index))
            histograms = perturb_histograms(centres[cluster], rng, self.perturbation)
            info |= {"cluster": cluster, "clusters": len(centres), "clusters_file": self._files[model.name]}
        else:
            histograms = self._fixed[model.name]
            if self.texture == "reference":
                info["reference_case"] = self.reference
        return histograms, {**info, "histogram": np.round(histograms, 6).tolist()}

    def denoiser(self, network, histograms: np.ndarray) -> ConditionedDenoiser:
        return ConditionedDenoiser(network, np.asarray(histograms).reshape(-1), self.guidance_scale)
