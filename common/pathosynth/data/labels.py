"""Label semantics as configuration.

Which label value is a lesion, and which is the anatomy that may hold it, differs between datasets
(EMIDEC: MI=3, PMO=4; another centre may use other values). Bundles therefore declare a
``labels`` map (class name -> value) and name the classes they synthesise; nothing in the code
hard-codes a value.

A *texture channel* is a list of class names whose union forms one mask channel. LeFusion-J uses
``[["MI"], ["PMO"]]`` (one channel per lesion class), RePaint and Cond-Diffusion use
``[["MI", "PMO"]]`` (one class-agnostic lesion channel), LeFusion-S one model per ``[["MI"]]`` /
``[["PMO"]]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

EMIDEC_LABELS = {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}


def class_values(labels: Mapping[str, int], class_names: Sequence[str]) -> list[int]:
    """Label values of the named classes; an unknown name is a configuration error worth stopping for."""
    unknown = [name for name in class_names if name not in labels]
    if unknown:
        raise KeyError(f"classes {unknown} are not declared in labels {dict(labels)}")
    return [int(labels[name]) for name in class_names]


def channel_masks(label: np.ndarray, labels: Mapping[str, int], channels: Sequence[Sequence[str]]) -> np.ndarray:
    """Stack one boolean mask per texture channel: (C, *label.shape)."""
    return np.stack([np.isin(label, class_values(labels, names)) for names in channels])


def flatten_channels(channels: Sequence[Sequence[str]]) -> list[str]:
    """All class names used by a set of texture channels, in order, without repeats."""
    seen: list[str] = []
    for names in channels:
        seen.extend(n for n in names if n not in seen)
    return seen
