"""Classification scores of a downstream classifier: accuracy, precision, recall, F1 and ROC AUC.

Used to judge synthetic data by what it does for a task (e.g. a classifier trained with and without
augmentation). Conventions, stated because they change the numbers:

- Predicted class = argmax of the class scores; for binary scores of shape (N,) (the probability of class 1)
  the prediction is ``score >= 0.5``.
- ``average="macro"`` (default) is the unweighted mean over all classes (both classes for binary);
  ``"micro"`` pools all decisions (equal to accuracy for single-label data); ``"binary"`` reports class 1.
- A class never predicted has no precision (0/0); it is defined as 0 -- like scikit-learn's
  ``zero_division=0`` -- and ``result["note"]`` names the classes, because the 0 then pulls the macro mean
  down on purpose: a classifier that ignores a class should not look good. Recall of a class absent from
  ``y_true`` (only possible with ``num_classes``) and F1 with precision + recall = 0 are treated the same.
- AUC comes from MONAI's ``compute_roc_auc`` (ties count one half), one-vs-rest for each class and averaged
  over the classes where it is defined. One-vs-rest AUC needs positives and negatives: if ``y_true`` holds a
  single class the AUC is NaN and ``result["reason"]`` says why; classes absent from ``y_true`` are left out
  of the macro mean and named in the note.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_roc_auc

__all__ = ["classification_scores"]


def _zero_where_undefined(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _auc(y_true: np.ndarray, probabilities: np.ndarray, binary: bool) -> tuple[float, list[int]]:
    """AUC (macro one-vs-rest over defined classes) and the classes whose one-vs-rest AUC is undefined."""
    with warnings.catch_warnings():  # MONAI warns for undefined classes; we report them ourselves
        warnings.simplefilter("ignore", UserWarning)
        if binary:
            auc = float(compute_roc_auc(torch.from_numpy(probabilities[:, 1]), torch.from_numpy(y_true)))
            return auc, [] if math.isfinite(auc) else [0, 1]
        one_hot = np.eye(probabilities.shape[1])[y_true]
        per_class = np.asarray(compute_roc_auc(torch.from_numpy(probabilities), torch.from_numpy(one_hot), "none"))
    undefined = [int(c) for c in np.flatnonzero(np.isnan(per_class))]
    defined = per_class[~np.isnan(per_class)]
    return (float(defined.mean()) if defined.size else math.nan), undefined


def classification_scores(
    y_true: Sequence[int] | np.ndarray,
    y_score: np.ndarray | torch.Tensor,
    num_classes: int | None = None,
    average: str = "macro",
) -> dict[str, float | str]:
    """``{accuracy, precision, recall, f1, auc}`` of class scores against integer labels (see module docstring).

    ``y_score`` is (N, C) class probabilities (or any scores whose argmax is the prediction) or (N,) the
    probability of class 1 for a binary task. ``num_classes`` checks the scores' width and lets classes that
    never occur still count in the macro mean. Adds ``"note"`` when a zero-division convention was applied
    and ``"reason"`` when the AUC is NaN.
    """
    if average not in ("macro", "micro", "binary"):
        raise ValueError(f"average must be 'macro', 'micro' or 'binary', got {average!r}")
    labels = np.asarray(y_true.cpu() if isinstance(y_true, torch.Tensor) else y_true).astype(np.int64).ravel()
    scores = np.asarray(y_score.cpu() if isinstance(y_score, torch.Tensor) else y_score, dtype=np.float64)
    binary = scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1)
    if binary:
        scores = np.stack([1.0 - scores.ravel(), scores.ravel()], axis=1)
        predicted = (scores[:, 1] >= 0.5).astype(np.int64)
    elif scores.ndim == 2:
        predicted = scores.argmax(axis=1)
    else:
        raise ValueError(f"y_score must be (N,) or (N, C), got {scores.shape}")
    n_classes = scores.shape[1]
    if num_classes is not None and num_classes != n_classes:
        raise ValueError(f"num_classes={num_classes} but y_score has {n_classes} classes")
    if not len(labels) or len(labels) != len(scores) or labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"y_true must hold {len(scores)} labels in [0, {n_classes}), got {labels.tolist()[:20]}")
    if average == "binary" and n_classes != 2:
        raise ValueError("average='binary' needs a two-class task")

    confusion = np.bincount(labels * n_classes + predicted, minlength=n_classes**2).reshape(n_classes, n_classes)
    hits, n_predicted, n_true = np.diag(confusion), confusion.sum(axis=0), confusion.sum(axis=1)
    precision = _zero_where_undefined(hits, n_predicted)
    recall = _zero_where_undefined(hits, n_true)
    f1 = _zero_where_undefined(2 * precision * recall, precision + recall)
    averaged = {"macro": np.arange(n_classes), "binary": np.array([1]), "micro": np.array([], int)}[average]
    notes = []
    if (n_predicted[averaged] == 0).any():
        notes.append(f"classes {averaged[n_predicted[averaged] == 0].tolist()} never predicted: their precision is 0")
    if (n_true[averaged] == 0).any():
        notes.append(f"classes {averaged[n_true[averaged] == 0].tolist()} absent from y_true: their recall is 0")

    accuracy = float(hits.sum() / len(labels))
    if average == "micro":
        result: dict[str, float | str] = {
            "accuracy": accuracy,
            "precision": accuracy,
            "recall": accuracy,
            "f1": accuracy,
        }
    else:
        pick = (lambda v: float(v[1])) if average == "binary" else (lambda v: float(v.mean()))
        result = {"accuracy": accuracy, "precision": pick(precision), "recall": pick(recall), "f1": pick(f1)}
    result["auc"], undefined = _auc(labels, scores, binary)
    if math.isnan(result["auc"]):
        result["reason"] = f"auc undefined: y_true holds only class {np.unique(labels).tolist()}, no pos/neg pair"
    elif undefined:
        notes.append(f"auc: classes {undefined} absent from y_true are left out of the one-vs-rest mean")
    if notes:
        result["note"] = "; ".join(notes)
    return result
