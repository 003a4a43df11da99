"""Label semantics as configuration.

Which label value is a lesion, and which is the anatomy that may hold it, differs between datasets
(EMIDEC: MI=3, PMO=4; another centre may use other values). Bundles therefore declare a
``labels`` map (class name -> value) and name the classes they synthesise; nothing in the code
hard-codes a value.

A *texture channel* is a list of class names whose union forms one mask channel. LeFusion-J uses
``[["MI"], ["PMO"]]`` (one channel per lesion class), RePaint and Cond-Diffusion use
``[["MI", "PMO"]]`` (one class-agnostic lesion channel), LeFusion-S one model per ``[["MI"]]`` /
``[["PMO"]]``.

*What a label value means* is also a property of the data: EMIDEC's 3 is myocardial infarction, ACDC's 3 the LV
cavity. Every layout declares its own map (:data:`EMIDEC_LABELS`, ``ACDC_LABELS``, a datalist's ``labels``), and
:func:`check_label_semantics` refuses a config whose names contradict it, so a model never learns the wrong anatomy
under a lesion's name. Names are compared by meaning (:data:`LABEL_SYNONYMS`: EMIDEC's "LV" is the LV cavity).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import DatasetError

EMIDEC_LABELS = {"background": 0, "LV": 1, "myocardium": 2, "MI": 3, "PMO": 4}

# meaning -> the names (after normalise_label_name) that say it; any other name means itself
LABEL_SYNONYMS = {
    "background": ("background", "bg"),
    "LV cavity": ("lv", "lv cavity", "lvc", "left ventricle", "left ventricular cavity", "lv blood pool"),
    "RV cavity": ("rv", "rv cavity", "rvc", "right ventricle", "right ventricular cavity", "rv blood pool"),
    "myocardium": ("myocardium", "myo", "lv myocardium", "healthy myocardium", "normal myocardium"),
    "MI": ("mi", "myocardial infarction", "infarction", "infarct", "scar"),
    "PMO": ("pmo", "mvo", "no reflow", "microvascular obstruction", "persistent microvascular obstruction"),
}
_MEANING_OF = {name: meaning for meaning, names in LABEL_SYNONYMS.items() for name in names}


def normalise_label_name(name: str) -> str:
    """Lower case, ``_``/``-`` as spaces, single spaces: "LV_Cavity" and "lv cavity" are one name."""
    return " ".join(re.sub(r"[_\-]", " ", str(name)).lower().split())


def label_meaning(name: str) -> str:
    """What a class name means: the :data:`LABEL_SYNONYMS` entry it belongs to, else the normalised name itself."""
    normal = normalise_label_name(name)
    return _MEANING_OF.get(normal, normal)


def parse_label_map(mapping: Mapping, source: str = "labels") -> dict[str, int]:
    """Class name -> value from either form in use: ours / nnU-Net v2 (``{"LV": 1}``) or MSD's dataset.json
    (``{"1": "LV"}``, value -> name)."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise DatasetError(
            f"{source} must be a non-empty mapping of class name -> value (or MSD's value -> name), got {mapping!r}"
        )
    if all(str(key).strip().isdigit() for key in mapping) and all(isinstance(v, str) for v in mapping.values()):
        return {str(name): int(key) for key, name in mapping.items()}
    if all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        return {str(name): int(value) for name, value in mapping.items()}
    raise DatasetError(
        f"{source} must map class names to integer values (or MSD's value strings to names), got {dict(mapping)}"
    )


def consecutive_label_values(labels: Mapping[str, int], purpose: str = "segmentation") -> dict[str, int]:
    """``labels`` when its values are ``background: 0`` and the integers 0..K-1, each once: what a segmenter with one
    output channel per class (and nnU-Net) needs, since a label value is read as a channel index. Otherwise an error
    naming the key, before training, instead of an index error deep inside the first batch."""
    values = {
        name: value
        for name, value in labels.items()
        if isinstance(value, numbers.Integral) and not isinstance(value, bool)
    }
    if (
        len(values) < len(labels)
        or values.get("background") != 0
        or sorted(values.values()) != list(range(len(values)))
    ):
        raise DatasetError(
            f"labels: {purpose} needs 'background': 0 and the values 0..K-1, each once (one output "
            f"channel per class); got {dict(labels)}. Renumber the label maps (e.g. MONAI's "
            "MapLabelValued) and give labels with consecutive values"
        )
    return values


def foreground_classes(labels: Mapping) -> list[str]:
    """The class names of ``labels`` (either form :func:`parse_label_map` reads) except the background, value 0 (MSD
    and nnU-Net reserve 0 for it), in the map's order.

    What a segmenter is scored on and what a preview outlines follow from the label map; configs derive them with
    ``$pathosynth.data.labels.foreground_classes(@labels)`` so that a dataset swap overrides ``labels`` alone.
    """
    return [name for name, value in parse_label_map(labels).items() if value != 0]


def lesion_classes_of(labels: Mapping) -> list[str]:
    """The class names of ``labels`` that mean a myocardial lesion (MI, PMO by :data:`LABEL_SYNONYMS`: "scar", "mvo"
    too), in the map's order; [] for a map without lesions (ACDC).

    Where lesions only decide which cases count as pathological (the segmentation bundle checks that such a case holds
    one), the lesion classes follow from the names; methods that synthesise lesions name theirs (``lesion_classes``).
    """
    return [name for name in parse_label_map(labels) if label_meaning(name) in ("MI", "PMO")]


def check_label_semantics(
    labels: Mapping[str, int], dataset_labels: Mapping[str, int], dataset: str, source: str = ""
) -> None:
    """Refuse a config whose ``labels`` contradict what the dataset's values mean.

    A value named differently (by meaning) in config and dataset, or one meaning at two values, is an error naming
    the dataset, the value and both meanings: "label 3 is the LV cavity in ACDC but the config calls 3 'MI'". Values
    only one side declares are not compared (a config may name a subset; validation reports undeclared values found).
    """
    meaning_at = {int(value): label_meaning(name) for name, value in dataset_labels.items()}
    value_of = {label_meaning(name): int(value) for name, value in dataset_labels.items()}
    problems = []
    for name, value in labels.items():
        meaning = label_meaning(name)
        value = int(value)
        if value in meaning_at and meaning_at[value] != meaning:
            problems.append(
                f"label {value} is the {meaning_at[value]} in {dataset} but the config calls {value} '{name}'"
            )
        elif meaning in value_of and value_of[meaning] != value:
            problems.append(
                f"the config calls {value} '{name}' but the {meaning} is label {value_of[meaning]} in {dataset}"
            )
    if problems:
        where = f"{source}: " if source else ""
        raise DatasetError(
            f"{where}" + "; ".join(problems) + f" (labels of {dataset}: {dict(dataset_labels)}; "
            f"config `labels`: {dict(labels)}). Set `labels` to the dataset's, or use data labelled as "
            "the config says."
        )


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


def lesion_values(
    labels: Mapping[str, int] | None, anatomy_class: str, mi_class: str, pmo_class: str
) -> tuple[int, int, int]:
    """(anatomy, MI, PMO) label values of a label map (EMIDEC's when ``labels`` is None)."""
    anatomy, mi, pmo = class_values(EMIDEC_LABELS if labels is None else labels, [anatomy_class, mi_class, pmo_class])
    return anatomy, mi, pmo


def label_to_masks(
    label: np.ndarray,
    labels: Mapping[str, int] | None = None,
    anatomy_class: str = "myocardium",
    mi_class: str = "MI",
    pmo_class: str = "PMO",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mi_extent, pmo, region)`` boolean masks of a label map: MI extent = MI ∪ PMO,
    region M_m = anatomy ∪ MI ∪ PMO."""
    anatomy, mi, pmo = lesion_values(labels, anatomy_class, mi_class, pmo_class)
    label = np.asarray(label)
    pmo_mask = label == pmo
    mi_extent = (label == mi) | pmo_mask
    return mi_extent, pmo_mask, mi_extent | (label == anatomy)
