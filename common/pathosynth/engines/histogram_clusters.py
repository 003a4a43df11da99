"""Training writes the texture clusters a histogram-conditioned model is later asked for.

Why at training: inference (``texture: "clusters"``) must draw requests from the textures the model saw, and only
training knows its cases. The centres are computed from each training case's lesion histograms (the whole volume,
normalised as training normalises it), not from random crops, so the same cases always give the same file whatever
the crop draws, and they are what ``texture: "source"`` asks for on those cases. They are computed when the handler
is built (a bad ``texture_clusters`` stops the run before any step) and written when training starts, beside the
checkpoint: ``<ckpt_dir>/<name>_histogram_clusters.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
from ignite.engine import Engine, Events

from ..data.histograms import clusters_path, histogram_clusters, volume_histograms, write_histogram_clusters
from ..distributed import rank_and_world
from ..synthesis.results import read_case

logger = logging.getLogger(__name__)


class HistogramClustersWriter:
    """Ignite handler: k-means centres of the training cases' lesion histograms, written at ``Events.STARTED``.

    Args:
        cases: the training case records.
        ckpt_dir, name: the checkpoint folder and stem (the file goes beside ``<name>.pt``).
        labels, channels: class name -> value; the model's texture channels.
        bins, value_range: ``histogram_bins``, ``histogram_range``.
        clusters: k (``texture_clusters``).
        intensity, window: training's normalisation.
        seed: the k-means seed.
    """

    def __init__(
        self,
        cases: Sequence[Mapping],
        ckpt_dir: str | os.PathLike,
        name: str,
        labels: Mapping[str, int],
        channels: Sequence[Sequence[str]],
        bins: int = 16,
        value_range: Sequence[float] = (-1.0, 1.0),
        clusters: int = 4,
        intensity: str = "minmax",
        window: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        self.path = clusters_path(os.path.join(ckpt_dir, f"{name}.pt"))
        self.channels, self.bins, self.value_range = [list(c) for c in channels], int(bins), list(value_range)
        histograms = np.stack(
            [
                volume_histograms(*read_case(case), labels, channels, bins, value_range, intensity, window)
                for case in cases
            ]
        )
        self.centres = histogram_clusters(histograms, clusters, seed)
        self.cases = len(histograms)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.write)

    def write(self, engine: Engine | None = None) -> None:
        if rank_and_world()[0] != 0:
            return
        write_histogram_clusters(
            self.path, self.centres, self.channels, self.bins, self.value_range, {"training_cases": self.cases}
        )
        logger.info(f"wrote {len(self.centres)} texture clusters of {self.cases} training cases to {self.path}")
