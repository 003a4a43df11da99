"""Dataset layouts -> a list of case records.

Users point a bundle at their data in its native layout (``--dataset_dir``) or at a MONAI
decathlon-style datalist (``--datalist``). Both become the same records: ``case_id``, ``image``,
``label`` (absolute paths) and ``group`` ("normal", "pathological", absent when the layout does not
say; the ACDC diagnosis such as "DCM" for ACDC). Records never hold None: an unknown optional fact is an absent key, so
MONAI's collate can batch any record. ACDC records also carry ``patient`` and ``phase``
(:mod:`pathosynth.data.acdc`). ``discover`` tells the layouts apart by their folder names. Validation
is separate (:mod:`pathosynth.data.validation`), so every layout is checked the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .acdc import ACDC_LABELS, ACDC_LAYOUT, discover_acdc, looks_like_acdc
from .errors import DatasetError
from .labels import EMIDEC_LABELS, parse_label_map

NIFTI_SUFFIXES = (".nii.gz", ".nii")
EMIDEC_LAYOUT = "Case_X/Images/Case_X.nii.gz + Case_X/Contours/Case_X.nii.gz"
OPTIONAL_KEYS = ("patient", "phase")  # carried from a datalist entry when present (patient-grouped splits)
LAYOUT_LABELS = {"emidec": ("EMIDEC", EMIDEC_LABELS), "acdc": ("ACDC", ACDC_LABELS)}  # what each layout's values mean


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
            without_none(
                {
                    "case_id": name,
                    "image": str(_find_nifti(case_dir / "Images", name).resolve()),
                    "label": str(_find_nifti(case_dir / "Contours", name).resolve()),
                    "group": group,
                }
            )
        )
    if not records:
        raise DatasetError(
            f"dataset_dir {root} holds no EMIDEC case folders (expected Case_X/Images/Case_X.nii.gz and "
            "Case_X/Contours/Case_X.nii.gz); for other layouts pass a decathlon datalist with --datalist FILE"
        )
    return records


def read_json(path: Path, what: str = "datalist") -> object:
    """The parsed JSON file, or a DatasetError naming it (missing, a folder, unreadable, not JSON)."""
    if path.is_dir():
        raise DatasetError(
            f"{what} {path} is a folder, not a JSON file; pass the datalist file itself (e.g. {path / 'datalist.json'})"
        )
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise DatasetError(f"{what} {path} cannot be read ({err.strerror or err})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{what} {path} is not valid JSON: {err}") from None


def _entry_path(path: Path, index: int, key: str, field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(
            f"datalist {path}: entry {index} of '{key}' has {field!r}: {value!r}; it must be a file path (a string)"
        )
    return value


def read_datalist(datalist: str | os.PathLike, key: str = "training", require_label: bool = True) -> list[dict]:
    """Cases of a decathlon-style datalist JSON; relative paths are relative to the JSON's folder.

    Entries need ``image`` and ``label`` (only ``image`` when ``require_label`` is False: images to segment,
    then without ``label`` when the entry has none); ``case_id`` and ``group`` are optional. Records hold no None
    values: a key the entry does not give is absent (MONAI's collate cannot batch None).
    """
    path = Path(datalist)
    content = read_json(path)
    entries = content.get(key) if isinstance(content, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f"datalist {path} has no non-empty list under key '{key}'")
    if isinstance(content, dict) and "labels" in content:
        parse_label_map(content["labels"], f"datalist {path}: 'labels'")
    base = path.resolve().parent
    records = []
    for index, entry in enumerate(entries):
        has_label = isinstance(entry, dict) and entry.get("label") not in (None, "")
        if not isinstance(entry, dict) or entry.get("image") in (None, "") or (require_label and not has_label):
            raise DatasetError(
                f"datalist {path}: entry {index} of '{key}' needs "
                f"{'image and label' if require_label else 'an image'} path"
            )
        image = Path(_entry_path(path, index, key, "image", entry["image"]))
        label = Path(_entry_path(path, index, key, "label", entry["label"])) if has_label else None
        record = {
            "case_id": str(entry.get("case_id") or _strip_nifti(image.name)),
            "image": str(image if image.is_absolute() else (base / image).resolve()),
            "label": None if label is None else str(label if label.is_absolute() else (base / label).resolve()),
            "group": entry.get("group"),
        } | {k: entry[k] for k in OPTIONAL_KEYS if entry.get(k) is not None}
        records.append(without_none(record))
    ids = [r["case_id"] for r in records]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DatasetError(f"datalist {path}: case ids {duplicates} appear more than once; add unique 'case_id' keys")
    return records


def without_none(record: dict) -> dict:
    """The record without None-valued keys: optional facts a layout does not know are absent, never None."""
    return {k: v for k, v in record.items() if v is not None}


def dataset_labels(
    dataset_dir: str | os.PathLike | None = None, datalist: str | os.PathLike | None = None
) -> tuple[str, dict[str, int]] | None:
    """(name, class name -> value) that the data declares: the layout's own map (EMIDEC, ACDC) or a datalist's
    ``labels`` (ours, nnU-Net's name -> value or MSD's value -> name); None when the data does not say."""
    if datalist:
        content = read_json(Path(datalist))
        if not isinstance(content, dict) or "labels" not in content:
            return None
        name = f" ({content['name']})" if isinstance(content.get("name"), str) and content["name"] else ""
        return f"datalist {datalist}{name}", parse_label_map(content["labels"], f"datalist {datalist}: 'labels'")
    layout = detect_layout(dataset_dir) if dataset_dir else None
    return LAYOUT_LABELS[layout] if layout else None


def detect_layout(dataset_dir: str | os.PathLike) -> str | None:
    """ "emidec" (``Case_*`` folders), "acdc" (``patient*`` folders with ``Info.cfg`` or ``*_frameYY.nii.gz``), or
    None."""
    root = Path(dataset_dir)
    if not root.is_dir():
        return None
    emidec = any(p.is_dir() and p.name.startswith("Case_") for p in root.iterdir())
    acdc = looks_like_acdc(root)
    if emidec and acdc:
        raise DatasetError(
            f"dataset_dir {root} holds both EMIDEC case folders (Case_*) and ACDC patient folders (patient*); "
            "point --dataset_dir at one dataset"
        )
    return "emidec" if emidec else "acdc" if acdc else None


def _discover_dir(dataset_dir: str | os.PathLike) -> list[dict]:
    root = Path(dataset_dir)
    layouts = f"the EMIDEC layout ({EMIDEC_LAYOUT}) or the ACDC layout ({ACDC_LAYOUT})"
    if not root.is_dir():
        raise DatasetError(
            f"dataset_dir {root} does not exist or is not a directory; pass --dataset_dir DIR in {layouts}, "
            "or --datalist FILE. `pathosynth phantom DIR` (EMIDEC) or `pathosynth phantom_acdc DIR` "
            "writes synthetic demo cases."
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
