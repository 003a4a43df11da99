"""Export real + synthetic cases for downstream training: EMIDEC layout, decathlon datalist, nnU-Net v2 raw.

The datalist writer and the where-to-write rules are data-free and live in :mod:`pathosynth.io.datalists`.

Why: synthesis pays off only when a segmenter is trained on real + synthetic data (LeFusion trains nnU-Net on P+N''),
and each trainer wants its own layout. These exporters write it from the bundles' case records, copy files byte-for-byte
(no resampling or re-encoding can sneak in), keep a ``sources.json`` tracing every exported case to its source files,
write atomically, and never write into an input dataset (docs/ARCHITECTURE.md, Contracts).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib

import pathosynth

from ..io.atomic import atomic_path, write_json
from ..io.datalists import CaseSets, combined_cases, export_datalist, guard_sources, needs_write, parse_option
from .cases import load_cases
from .labels import EMIDEC_LABELS, consecutive_label_values
from .validation import validate_cases

NIFTI_ENDINGS = (".nii.gz", ".nii")
SOURCE_KEYS = ("name", "dataset_dir", "datalist", "select", "datalist_key")


def _ending(path: str | os.PathLike) -> str:
    if not str(path).endswith(NIFTI_ENDINGS):
        raise ValueError(f"{path} is not a NIfTI file (expected one of {NIFTI_ENDINGS})")
    return next(ending for ending in NIFTI_ENDINGS if str(path).endswith(ending))


def _copy_nifti(source: str | os.PathLike, target: Path) -> None:
    """Byte copy when the endings agree (bit-identical data and header); otherwise re-save the same image with
    nibabel."""
    with atomic_path(target) as tmp:
        if _ending(source) == _ending(target):
            shutil.copyfile(source, tmp)
        else:
            nib.save(nib.load(str(source)), str(tmp))


def _provenance(record: Mapping, set_name: str | None = None) -> dict:
    """What sources.json says about one exported case: enough to find its source files again."""
    keep = ("case_id", "image", "label", "source_image", "group", "dataset_dir")
    return {k: str(record[k]) for k in keep if record.get(k)} | ({"set": set_name} if set_name else {})


def export_emidec(records: Sequence[Mapping], out_dir: str | os.PathLike, prefix: str = "Case_S") -> list[dict]:
    """Write cases in the EMIDEC layout (``{prefix}0001/Images/…``, ``…/Contours/…``), numbered in record order.

    Conflicts are all found before anything is written, so a refused export leaves ``out_dir`` as it was and
    an identical rerun writes nothing. Returns the exported cases as ``discover_emidec`` would."""
    if not prefix.startswith("Case_") or not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise ValueError(
            f"prefix must start with 'Case_' (EMIDEC readers look for it) and use [A-Za-z0-9_-], got {prefix!r}"
        )
    records, out, copies, sources, exported = list(records), Path(out_dir), [], {}, []
    guard_sources(records, out)
    for number, record in enumerate(records, start=1):
        case_id = f"{prefix}{number:04d}"
        image = out / case_id / "Images" / f"{case_id}{_ending(record['image'])}"
        label = out / case_id / "Contours" / f"{case_id}{_ending(record['label'])}"
        copies += [(Path(record["image"]), image), (Path(record["label"]), label)]
        sources[case_id] = _provenance(record, record.get("set"))
        exported.append(
            {
                "case_id": case_id,
                "image": str(image.resolve()),
                "label": str(label.resolve()),
                "group": None,
                "source_case_id": record["case_id"],
            }
        )
    todo = [(source, target) for source, target in copies if needs_write(target, source=source)]
    write_sources = needs_write(out / "sources.json", content=sources)
    for source, target in todo:
        _copy_nifti(source, target)
    if write_sources:
        write_json(out / "sources.json", sources)
    return exported


def check_nnunet_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """nnU-Net v2 needs ``background: 0`` and label values 0..K-1, each once; say so before any file is written."""
    return consecutive_label_values(labels, "an nnU-Net export")


def export_nnunet(
    sets: CaseSets,
    out_root: str | os.PathLike,
    dataset_id: int,
    dataset_name: str,
    labels: Mapping[str, int],
    channel_names: Sequence[str] = ("LGE",),
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> Path:
    """An nnU-Net v2 raw dataset ``out_root/Dataset{id:03d}_{name}`` (imagesTr, labelsTr, dataset.json, sources.json).

    Every case is validated first (files load, label values declared, image/label shape and affine agree,
    no NaN): nnU-Net checks only at plan time and names our copy, not the user's source file. The dataset
    is built in a hidden sibling folder and renamed into place: nnU-Net never sees a half-written one."""
    labels = check_nnunet_labels(labels)
    if file_ending not in NIFTI_ENDINGS or len(channel_names) != 1:
        raise ValueError(
            f"need file_ending in {NIFTI_ENDINGS} and one channel (one image per case); "
            f"got {file_ending!r}, {channel_names}"
        )
    if not 1 <= int(dataset_id) <= 999 or not re.fullmatch(r"[A-Za-z0-9_-]+", dataset_name):
        raise ValueError(
            f"nnU-Net needs a dataset id in 1..999 and a name in [A-Za-z0-9_-]; got {dataset_id!r}, {dataset_name!r}"
        )
    cases = combined_cases(sets)
    records = [record for _, _, record in cases]
    folder = Path(out_root) / f"Dataset{int(dataset_id):03d}_{dataset_name}"
    guard_sources(records, folder)
    if folder.exists() and not (overwrite and (folder / "dataset.json").is_file()):
        raise FileExistsError(
            f"nnU-Net dataset folder {folder} exists; overwrite=True replaces it (if it holds a dataset.json)"
        )
    validate_cases(records, labels, source=f"nnU-Net export {folder.name}")

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    retired = staging.with_name(f"{staging.name}.old")
    try:
        for export_id, _, record in cases:
            _copy_nifti(record["image"], staging / "imagesTr" / f"{export_id}_0000{file_ending}")
            _copy_nifti(record["label"], staging / "labelsTr" / f"{export_id}{file_ending}")
        write_json(
            staging / "dataset.json",
            {
                "channel_names": {"0": channel_names[0]},
                "labels": labels,
                "numTraining": len(cases),
                "file_ending": file_ending,
                "description": (
                    f"pathosynth export of sets {[name for name, _ in sets]}; sources.json maps cases to source files"
                ),
                "reference": f"pathosynth {pathosynth.__version__}",
                "licence": "that of the source datasets in sources.json (may forbid redistribution)",
            },
        )
        write_json(
            staging / "sources.json", {export_id: _provenance(record, name) for export_id, name, record in cases}
        )
        if folder.exists():  # overwrite: move the old dataset aside, the new one in, then delete the old
            os.replace(folder, retired)
        os.replace(staging, folder)
        shutil.rmtree(retired, ignore_errors=True)  # only once the new one is in place; a failure leaves it recoverable
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def sets_from_sources(
    sources: Sequence[Mapping], labels: Mapping[str, int] | None = None, lesion_classes: Sequence[str] = ("MI", "PMO")
) -> list[tuple[str, list[dict]]]:
    """Named, validated case sets from ``{"name", "dataset_dir" | "datalist", "select"?, "datalist_key"?}`` mappings.

    Built on ``load_cases``, so a bad input stops the export with the message a bundle would give. Records gain
    ``dataset_dir`` (so no export lands in a source folder) and, from datalists, ``source_image`` (``read_datalist``
    drops it).
    """
    sets, labels = [], dict(labels or EMIDEC_LABELS)
    for source in sources:
        if (
            set(source) - set(SOURCE_KEYS)
            or "name" not in source
            or ("dataset_dir" in source) == ("datalist" in source)
        ):
            raise ValueError(
                f"a source needs 'name' and exactly one of 'dataset_dir'/'datalist' (keys {SOURCE_KEYS}); "
                f"got {dict(source)}"
            )
        key = source.get("datalist_key", "training")
        records = load_cases(
            source.get("dataset_dir"),
            source.get("datalist"),
            labels=labels,
            lesion_classes=list(lesion_classes),
            select=source.get("select", "all"),
            datalist_key=key,
        )
        root = Path(source.get("dataset_dir") or Path(source["datalist"]).parent).resolve()
        entries = json.loads(Path(source["datalist"]).read_text()).get(key, []) if source.get("datalist") else []
        known = {
            str((root / e["image"]).resolve()): str((root / e["source_image"]).resolve())
            for e in entries
            if e.get("source_image")
        }
        for record in records:
            record["dataset_dir"] = str(root)
            image = str(Path(record["image"]).resolve())
            if image in known:
                record["source_image"] = known[image]
        sets.append((str(source["name"]), records))
    if not sets or len({name for name, _ in sets}) != len(sets):
        raise ValueError(f"sources need distinct names (and at least one source), got {[name for name, _ in sets]}")
    return sets


def export(
    out: str,
    format: str = "nnunet",
    sources=(),
    dataset_id: int = 501,
    dataset_name: str = "Pathosynth",
    labels=None,
    lesion_classes=("MI", "PMO"),
    overwrite: bool = False,
) -> str:
    """CLI: combine real and synthetic sets into one training set for nnU-Net or MONAI.

        pathosynth export OUT --format nnunet --sources '[{"name": "P", "dataset_dir": "data/emidec",
                                                          "select": "with_lesion"},
                                                         {"name": "N2", "datalist": "synth/datalist.json"}]'

    ``format``: "nnunet" (OUT = the nnUNet_raw root), "emidec" (OUT = a new dataset folder) or "datalist"
    (OUT = a JSON file).
    """
    if format not in ("nnunet", "emidec", "datalist"):
        raise ValueError(f"format must be 'nnunet', 'emidec' or 'datalist', got {format!r}")
    labels = dict(parse_option(labels) or EMIDEC_LABELS)
    sets = sets_from_sources(parse_option(sources), labels, list(lesion_classes))
    count = sum(len(records) for _, records in sets)
    if format == "nnunet":
        return f"{count} cases in {export_nnunet(sets, out, dataset_id, dataset_name, labels, overwrite=overwrite)}"
    if format == "emidec":
        export_emidec([{**record, "set": name} for name, records in sets for record in records], out)
    else:
        export_datalist(sets, out, labels=labels)
    return f"{count} cases in {out}"
