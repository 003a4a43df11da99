"""The ACDC layout (Bernard et al., IEEE TMI 2018): cine short-axis MRI, one folder per patient.

``patientXXX/patientXXX_frameYY.nii.gz`` + ``patientXXX_frameYY_gt.nii.gz`` for each labelled frame
(end-diastole and end-systole) and ``Info.cfg`` with ``Group: DCM`` and, in the original release,
``ED: 1`` / ``ES: 12``. Every labelled frame becomes one case record; the two frames of one heart share
a ``patient`` so that splits can keep them together (a frame-level split leaks test hearts into training).

Only names are read here; whether the files load and agree is :mod:`pathosynth.data.validation`'s job.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import DatasetError

ACDC_LABELS = {"background": 0, "RV": 1, "myocardium": 2, "LV": 3}
ACDC_GROUPS = (
    "NOR",
    "DCM",
    "HCM",
    "MINF",
    "RV",
)  # normal, dilated / hypertrophic cardiomyopathy, infarction, abnormal RV
ACDC_LAYOUT = "patientXXX/patientXXX_frameYY.nii.gz + patientXXX/patientXXX_frameYY_gt.nii.gz + patientXXX/Info.cfg"

_FRAME_FILE = re.compile(r"^(?P<stem>.+)_frame(?P<frame>\d+)(?P<gt>_gt)?\.nii(?P<gz>\.gz)?$")


def read_info_cfg(path: str | os.PathLike) -> dict[str, str]:
    """``Key: value`` lines of an ACDC ``Info.cfg``; a missing or unreadable file gives ``{}``."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            info[key.strip()] = value.strip()
    return info


def _frame_number(value: str | None) -> int | None:
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _patient_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("patient"))


def looks_like_acdc(dataset_dir: str | os.PathLike) -> bool:
    """True when the folder holds a ``patient*`` folder with an ``Info.cfg`` or a ``*_frameYY.nii[.gz]`` file."""
    root = Path(dataset_dir)
    if not root.is_dir():
        return False
    for folder in _patient_dirs(root):
        if (folder / "Info.cfg").is_file() or any(_FRAME_FILE.match(f.name) for f in folder.iterdir() if f.is_file()):
            return True
    return False


def _phases(frames: list[int], info: dict[str, str]) -> dict[int, str | None]:
    """ED/ES tag per frame number: from ``Info.cfg``'s ``ED:``/``ES:`` when they name every labelled frame, else by
    order (the earlier frame is end-diastole, the later end-systole, as in ACDC where ED is the first cine frame; a
    re-export that renumbered the frames 01/02 but kept ``ES: 12`` is tagged by order too)."""
    declared = {_frame_number(info.get("ED")): "ED", _frame_number(info.get("ES")): "ES"}
    declared.pop(None, None)
    if all(frame in declared for frame in frames):
        return {frame: declared[frame] for frame in frames}
    by_order = ("ED", "ES")
    return {frame: by_order[i] if i < len(by_order) else None for i, frame in enumerate(sorted(frames))}


def _hint_nested(root: Path) -> str:
    """The original archive nests patients one level down (``training/``, ``testing/``): point there."""
    nested = [p for p in sorted(root.iterdir()) if p.is_dir() and looks_like_acdc(p)]
    return f"; did you mean --dataset_dir {nested[0]}?" if nested else ""


def discover_acdc(dataset_dir: str | os.PathLike) -> list[dict]:
    """Cases of an ACDC-layout folder, one per labelled frame, sorted by case id.

    Record: ``case_id`` ("patient002_frame01"), ``image``, ``label`` (absolute paths), ``group`` (the
    ``Info.cfg`` Group, e.g. "DCM"; absent when the file is missing or unreadable), ``patient``
    ("patient002") and ``phase`` ("ED"/"ES"; absent for a third labelled frame without ED/ES lines).
    Layout problems of all folders are collected into one :class:`DatasetError`.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise DatasetError(f"dataset_dir {root} does not exist or is not a directory (ACDC layout: {ACDC_LAYOUT})")
    folders = _patient_dirs(root)
    if not folders:
        raise DatasetError(
            f"dataset_dir {root} holds no ACDC patient folders (expected {ACDC_LAYOUT}){_hint_nested(root)}"
        )

    records: list[dict] = []
    problems: list[str] = []
    for folder in folders:
        patient = folder.name
        frames: dict[str, dict[str, Path]] = {}
        for path in sorted(f for f in folder.iterdir() if f.is_file()):
            match = _FRAME_FILE.match(path.name)
            if not match:
                continue  # Info.cfg, the 4-D cine (patientXXX_4d.nii.gz), notes
            if match["stem"] != patient:
                problems.append(
                    f"{patient}: file {path} is named for '{match['stem']}', not for its folder '{patient}'"
                )
                continue
            kind = "label" if match["gt"] else "image"
            slot = frames.setdefault(match["frame"], {})
            if kind not in slot or match["gz"]:  # both .nii and .nii.gz: the compressed one wins
                slot[kind] = path
        if not frames:
            problems.append(f"{patient}: folder {folder} holds no {patient}_frameYY.nii.gz image with its _gt label")
            continue
        numbers = [int(f) for f in frames]
        if len(set(numbers)) < len(numbers):
            problems.append(f"{patient}: folder {folder} names one frame number twice ({sorted(frames)})")
            continue
        info = read_info_cfg(folder / "Info.cfg")
        phases = _phases(numbers, info)
        for frame, files in sorted(frames.items(), key=lambda item: int(item[0])):
            case_id = f"{patient}_frame{frame}"
            if "label" not in files:
                problems.append(f"{case_id}: image {files['image']} has no label {folder / (case_id + '_gt.nii.gz')}")
                continue
            if "image" not in files:
                problems.append(f"{case_id}: label {files['label']} has no image {folder / (case_id + '.nii.gz')}")
                continue
            record = {
                "case_id": case_id,
                "image": str(files["image"].resolve()),
                "label": str(files["label"].resolve()),
                "group": info.get("Group") or None,
                "patient": patient,
                "phase": phases[int(frame)],
            }
            records.append({k: v for k, v in record.items() if v is not None})  # unknown facts are absent, never None
    if problems:
        listing = "\n  ".join(problems)
        raise DatasetError(
            f"{len(problems)} problem(s) in the ACDC layout of dataset_dir {root} "
            f"(expected {ACDC_LAYOUT}):\n  {listing}"
        )
    return sorted(records, key=lambda r: r["case_id"])
