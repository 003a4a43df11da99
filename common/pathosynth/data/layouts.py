"""Dataset layouts -> a list of case records.

Users point a bundle at their data in its native layout (``--dataset_dir``) or at a MONAI
decathlon-style datalist (``--datalist``). Both become the same records: ``case_id``, ``image``,
``label`` (absolute paths) and ``group`` ("normal", "pathological" or None when the layout does not
say; the ACDC diagnosis such as "DCM" for ACDC). ACDC records also carry ``patient`` and ``phase``
(:mod:`pathosynth.data.acdc`). ``discover`` tells the layouts apart by their folder names. Validation
is separate (:mod:`pathosynth.data.validation`), so every layout is checked the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .acdc import ACDC_LAYOUT, discover_acdc, looks_like_acdc
from .errors import DatasetError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
EMIDEC_LAYOUT = "Case_X/Images/Case_X.nii.gz + Case_X/Contours/Case_X.nii.gz"
OPTIONAL_KEYS = ("patient", "phase")  # carried from a datalist entry when present (patient-grouped splits)


def _strip_nifti(name: str) -> str:
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _find_nifti(folder: Path, stem: str) -> Path:
    """The case file if it exists with either suffix, else the expected .nii.gz path (validation reports it)."""
    for suffix in NIFTI_SUFFIXES:
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    return folder / f"{stem}.nii.gz"


def discover_emidec(dataset_dir: str | os.PathLike) -> list[dict]:
    """Cases of an EMIDEC-layout folder: ``Case_X/Images/Case_X.nii.gz`` + ``Case_X/Contours/Case_X.nii.gz``.

    The EMIDEC naming carries the clinical group: ``Case_N*`` normal, ``Case_P*`` pathological.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(
            f"dataset_dir {root} does not exist or is not a directory; pass --dataset_dir DIR (EMIDEC layout: "
            "Case_X/Images/Case_X.nii.gz + Case_X/Contours/Case_X.nii.gz) or --datalist FILE. "
            "`pathosynth phantom DIR` writes synthetic demo cases in that layout."
        )
    records = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("Case_")):
        name = case_dir.name
        group = {"N": "normal", "P": "pathological"}.get(name[5:6])
        records.append(
            {
                "case_id": name,
                "image": str(_find_nifti(case_dir / "Images", name).resolve()),
                "label": str(_find_nifti(case_dir / "Contours", name).resolve()),
                "group": group,
            }
        )
    if not records:
        raise DatasetError(
            f"dataset_dir {root} holds no EMIDEC case folders (expected Case_X/Images/Case_X.nii.gz and "
            "Case_X/Contours/Case_X.nii.gz); for other layouts pass a decathlon datalist with --datalist FILE"
        )
    return records


def read_datalist(datalist: str | os.PathLike, key: str = "training", require_label: bool = True) -> list[dict]:
    """Cases of a decathlon-style datalist JSON; relative paths are relative to the JSON's folder.

    Entries need ``image`` and ``label`` (only ``image`` when ``require_label`` is False: images to segment,
    their ``label`` is then None); ``case_id`` and ``group`` are optional.
    """
    path = Path(datalist)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"datalist {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"datalist {path} is not valid JSON: {err}") from None
    entries = content.get(key) if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"datalist {path} has no non-empty list under key '{key}'")
    base = path.resolve().parent
    records = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("image") or (require_label and not entry.get("label")):
            raise DatasetError(f"datalist {path}: entry {index} of '{key}' needs {'image and label' if require_label else 'an image'} path")
        image = Path(entry["image"])
        label = Path(entry["label"]) if entry.get("label") else None
        records.append(
            {
                "case_id": str(entry.get("case_id") or _strip_nifti(image.name)),
                "image": str(image if image.is_absolute() else (base / image).resolve()),
                "label": None if label is None else str(label if label.is_absolute() else (base / label).resolve()),
                "group": entry.get("group"),
            }
            | {k: entry[k] for k in OPTIONAL_KEYS if entry.get(k) is not None}
        )
    ids = [r["case_id"] for r in records]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DatasetError(f"datalist {path}: case ids {duplicates} appear more than once; add unique 'case_id' keys")
    return records


def detect_layout(dataset_dir: str | os.PathLike) -> str | None:
    """"emidec" (``Case_*`` folders), "acdc" (``patient*`` folders with ``Info.cfg`` or ``*_frameYY.nii.gz``), or None."""
    root = Path(dataset_dir)
    if not root.is_dir():
        return None
    emidec = any(p.is_dir() and p.name.startswith("Case_") for p in root.iterdir())
    acdc = looks_like_acdc(root)
    if emidec and acdc:
        raise DatasetError(f"dataset_dir {root} holds both EMIDEC case folders (Case_*) and ACDC patient folders (patient*); "
                           "point --dataset_dir at one dataset")
    return "emidec" if emidec else "acdc" if acdc else None


def _discover_dir(dataset_dir: str | os.PathLike) -> list[dict]:
    root = Path(dataset_dir)
    layouts = f"the EMIDEC layout ({EMIDEC_LAYOUT}) or the ACDC layout ({ACDC_LAYOUT})"
    if not root.is_dir():
        raise DatasetError(
            f"dataset_dir {root} does not exist or is not a directory; pass --dataset_dir DIR in {layouts}, "
            "or --datalist FILE. `pathosynth phantom DIR` (EMIDEC) or `pathosynth phantom_acdc DIR` writes synthetic demo cases."
        )
    layout = detect_layout(root)
    if layout == "emidec":
        return discover_emidec(root)
    if layout == "acdc" or any(p.is_dir() and p.name.startswith("patient") for p in root.iterdir()):
        return discover_acdc(root)  # patient folders without frames: discover_acdc says what each one lacks
    nested = [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".") and detect_layout(p)]
    hint = f"; did you mean --dataset_dir {nested[0]}?" if nested else ""
    raise DatasetError(
        f"dataset_dir {root} matches no known layout: expected {layouts}; for other layouts pass a decathlon datalist "
        f"with --datalist FILE{hint}"
    )


def discover(dataset_dir: str | None = None, datalist: str | None = None, datalist_key: str = "training") -> list[dict]:
    """One entry point for all inputs; a datalist wins when both are given, as it is the more explicit.

    ``dataset_dir`` may hold the EMIDEC or the ACDC layout; which one is told from the folder names.
    """
    if datalist:
        return read_datalist(datalist, datalist_key)
    if dataset_dir:
        return _discover_dir(dataset_dir)
    raise DatasetError("no input data: pass --dataset_dir DIR (EMIDEC or ACDC layout) or --datalist FILE")
