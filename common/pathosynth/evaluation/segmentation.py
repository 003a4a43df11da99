"""Scoring a trained segmenter on a real test list: the downstream half of the LeFusion study (Tab. 1).

Each test volume goes through the same deterministic preprocessing as training, is segmented slice by
slice (or as a volume) by the configured inferer, and the prediction is mapped back to the original
voxel grid with MONAI's ``Invertd`` -- scores are computed against the label file as it is on disk,
never against a cropped or resampled copy. Per-case and summary scores go to ``scores.json``
atomically, with everything needed to trace them (seed, datalists and their SHA-256, checkpoint).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Invertd

from ..data.errors import DatasetError
from ..io.atomic import sha256_file, write_json
from ..io.nifti import read_nifti, write_nifti_like
from ..io.results import finite
from ..metrics.segmentation import segmentation_scores, summarise_scores

logger = logging.getLogger(__name__)

__all__ = ["SegmentationPredictor", "SegmentationScorer", "datalist_fingerprints"]


def datalist_fingerprints(paths: Sequence[str | os.PathLike] | str | os.PathLike | None) -> list[dict]:
    """``[{"path", "sha256"}]`` of datalists, so a score says exactly which cases made it."""
    if paths is None:
        return []
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    return [{"path": str(p), "sha256": sha256_file(p)} for p in paths]


class SegmentationPredictor:
    """Segment every case of a list and write each label map next to nothing else: ``predictions/<case_id>.nii.gz``.

    The map lies on the case's own voxel grid (preprocessing inverted), carries the source file's affine and
    header with an unsigned 8-bit type, appears atomically, and a case whose map exists is not segmented again.

    Args:
        network: the trained segmenter (eval mode is set here).
        cases: records with "image" and "case_id" ("label" is used by the scorer, not here).
        preprocessing: the deterministic transform applied at training time (must be invertible where it
            changes geometry: crops, pads).
        inferer: e.g. ``monai.inferers.SliceInferer`` for a 2D network on 3D volumes.
        output_dir: where ``predictions/`` goes.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        cases: Sequence[Mapping],
        preprocessing: Callable,
        inferer: Callable,
        output_dir: str | os.PathLike,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cases = list(cases)
        missing = [f"{r['case_id']}: {r['image']}" for r in self.cases if not Path(r["image"]).is_file()]
        if missing:
            raise DatasetError("images to segment do not exist:\n  " + "\n  ".join(missing))
        self.network = network
        self.preprocessing = preprocessing
        self.inferer = inferer
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.invert = Invertd(keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=True)

    def prediction_path(self, record: Mapping) -> Path:
        return self.output_dir / "predictions" / f"{record['case_id']}.nii.gz"

    def predict(self, record: Mapping) -> np.ndarray:
        """Label map of one case on its original voxel grid."""
        data = self.preprocessing({k: v for k, v in record.items() if k == "image" or (k == "label" and v)})
        image = data["image"].to(self.device)
        with torch.no_grad():
            logits = self.inferer(image[None], self.network)
        data["pred"] = logits[0].argmax(0, keepdim=True).to(torch.uint8).cpu()
        data["pred"].meta = data["image"].meta  # same geometry and history as the image it came from
        data["pred"].applied_operations = data["image"].applied_operations
        return np.asarray(self.invert(data)["pred"][0]).astype(np.uint8)

    def write(self, record: Mapping, prediction: np.ndarray, reference_path: str) -> None:
        write_nifti_like(self.prediction_path(record), prediction, read_nifti(reference_path)[1], dtype=np.uint8)

    def run(self) -> list[str]:
        """Segment the cases without a prediction yet; returns the prediction paths of all cases."""
        self.network.eval()
        for record in self.cases:
            if not self.prediction_path(record).exists():
                self.write(record, self.predict(record), record["image"])
                logger.info(f"{record['case_id']}: {self.prediction_path(record)}")
        return [str(self.prediction_path(r)) for r in self.cases]


class SegmentationScorer(SegmentationPredictor):
    """Segment every test case and score it per class (Dice, precision, recall, HD95, ASSD) into ``scores.json``.

    Args (besides :class:`SegmentationPredictor`'s):
        labels, classes: label semantics and the classes scored.
        spacing: voxel spacing for distances; None reads it from each label file's header.
        metadata: recorded with the scores (seed, datalists, checkpoint, ...).
        save_predictions: also write the label maps (``predictions/``).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        cases: Sequence[Mapping],
        preprocessing: Callable,
        inferer: Callable,
        labels: Mapping[str, int],
        classes: Sequence[str],
        output_dir: str | os.PathLike,
        device: torch.device | str = "cpu",
        spacing: Sequence[float] | None = None,
        metadata: Mapping | None = None,
        save_predictions: bool = False,
    ) -> None:
        super().__init__(network, cases, preprocessing, inferer, output_dir, device)
        unlabelled = [r["case_id"] for r in self.cases if not r.get("label")]
        if unlabelled:
            raise DatasetError(f"cases without a label cannot be scored: {unlabelled}")
        self.labels = dict(labels)
        self.classes = list(classes)
        self.spacing = None if spacing is None else [float(s) for s in spacing]
        self.metadata = dict(metadata or {})
        self.save_predictions = save_predictions

    @property
    def scores_path(self) -> Path:
        return self.output_dir / "scores.json"

    def run(self) -> dict:
        """Score all cases (skipped when ``scores.json`` exists: rerunning a finished study is free)."""
        if self.scores_path.exists():
            logger.info(f"{self.scores_path} exists; not scoring again")
            return json.loads(self.scores_path.read_text())
        self.network.eval()
        results = []
        for record in self.cases:
            prediction = self.predict(record)
            reference, label_image = read_nifti(record["label"])
            reference = np.asarray(reference)
            spacing = self.spacing or [float(v) for v in label_image.header.get_zooms()[: reference.ndim]]
            if self.save_predictions:
                self.write(record, prediction, record["label"])
            scores = segmentation_scores(prediction, reference, self.labels, self.classes, spacing=spacing)
            results.append(
                {"case_id": record["case_id"], **({"group": record["group"]} if record.get("group") else {}), **scores}
            )
            logger.info(f"{record['case_id']}: " + ", ".join(f"{c} Dice {scores[c]['dice']:.3f}" for c in self.classes))
        summary = summarise_scores([{c: case[c] for c in self.classes} for case in results])
        report = finite({"classes": self.classes, "summary": summary, "cases": results, **self.metadata})
        write_json(self.scores_path, report)
        return report  # as written (NaN -> null), so a first run and a rerun return the same
