"""Datalists as files: the decathlon datalists we write, and the rules every exporter keeps about where it writes.

Data-free on purpose (no dataset layout, no validation): the data layer writes its split lists with
:func:`export_datalist`, and the dataset exporters (:mod:`pathosynth.data.exports`) and the synthetic-dataset writer
build on these helpers, so ``io`` never imports ``data``. The rules: never write into an input dataset
(:func:`guard_sources`), and a rerun keeps identical files and refuses to replace different ones (:func:`needs_write`).
"""

from __future__ import annotations

import filecmp
import json
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from .atomic import write_json

CaseSets = Sequence[tuple[str, Sequence[Mapping]]]


def datalist_label_map(labels: Mapping[str, int] | None) -> dict:
    """The ``"labels"`` entry a datalist we write carries (MSD's value -> name form), so a bundle configured for labels
    that mean something else refuses the list (``pathosynth.data.labels.check_label_semantics``); {} when unknown."""
    return {"labels": {str(int(value)): str(name) for name, value in labels.items()}} if labels else {}


def guard_sources(records: Sequence[Mapping], out: Path, inputs_below_ok: bool = False) -> None:
    """Refuse an output inside a source folder or holding an input file: nothing in an input dataset is ever written.

    Source folders: each file's folder, the record's ``dataset_dir`` and an EMIDEC root (``ROOT/Case_X/Images/…``).
    A datalist may sit above its inputs (that is what relative paths are for), hence ``inputs_below_ok``."""
    out = out.resolve()
    for record in records:
        files = [Path(record[key]).resolve() for key in ("image", "label")]
        folders = [f.parent for f in files] + [f.parents[2] for f in files if f.parent.name in ("Images", "Contours")]
        folders += [Path(record["dataset_dir"]).resolve()] if record.get("dataset_dir") else []
        for file in [] if inputs_below_ok else files:
            if file.is_relative_to(out):
                raise ValueError(
                    f"output {out} contains input file {file}; choose a folder outside the source datasets"
                )
        for folder in folders:
            if out.is_relative_to(folder):
                raise ValueError(
                    f"output {out} lies inside source folder {folder}; choose a folder outside the source datasets"
                )


def needs_write(target: Path, source: Path | None = None, content=None) -> bool:
    """False when ``target`` already holds exactly this (a rerun); FileExistsError when it holds something else."""
    if not target.exists():
        return True
    try:
        same = (
            filecmp.cmp(source, target, shallow=False)
            if source is not None
            else json.loads(target.read_text()) == content
        )
    except ValueError:  # includes JSON and Unicode decoding errors
        same = False
    if not same:
        raise FileExistsError(
            f"{target} exists with different content; refusing to overwrite it (export to a new folder or delete it)"
        )
    return False


def combined_cases(sets: CaseSets) -> list[tuple[str, str, Mapping]]:
    """(export id, set name, record) per case; ids are ``{set}_{case_id}`` in nnU-Net's safe alphabet, the same in
    every export format (an nnU-Net case matches its datalist entry). Colliding ids would drop cases: an error."""
    cases = [
        (re.sub(r"[^A-Za-z0-9_-]", "_", f"{name}_{r['case_id']}"), name, r) for name, records in sets for r in records
    ]
    counts = Counter(export_id for export_id, _, _ in cases)
    clashes = [f"{i} <- {name}:{record['case_id']}" for i, name, record in cases if counts[i] > 1]
    if clashes:
        raise ValueError(
            f"export case ids are not unique after sanitising '{{set}}_{{case_id}}': {clashes}; "
            "rename a set or its cases"
        )
    return cases


def portable_path(path: str, base: Path) -> str:
    """Relative to ``base`` when the file lies below it (the folder can move as a whole), else absolute."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)


def export_datalist(
    sets: CaseSets,
    out_path: str | os.PathLike,
    key: str = "training",
    labels: Mapping[str, int] | None = None,
    dataset: str | None = None,
) -> dict:
    """A decathlon datalist of all sets, readable by MONAI ``load_decathlon_datalist`` and our ``read_datalist``.

    Entries: image, label, case_id (unique across sets), source_case_id, set and, when known, source_image
    and group. ``labels`` (class name -> value, the semantics the cases were validated under) is recorded as MSD's
    ``"labels": {"0": "background", ...}`` and ``dataset`` (e.g. "ACDC") as ``"name"``, so a bundle configured for other
    labels refuses the list. Rerun-safe like the other exports: identical → kept, different → refused."""
    out, base, cases = Path(out_path), Path(out_path).resolve().parent, combined_cases(sets)
    guard_sources([record for _, _, record in cases], base, inputs_below_ok=True)
    entries = []
    for export_id, name, record in cases:
        known = {k: record[k] for k in ("source_image", "group") if record.get(k)}
        entries.append(
            {
                "image": portable_path(record["image"], base),
                "label": portable_path(record["label"], base),
                "case_id": export_id,
                "source_case_id": record["case_id"],
                "set": name,
            }
            | known
        )
    names = [name for name, _ in sets]
    datalist = {"description": f"pathosynth export of sets {names}; relative paths are relative to this file's folder"}
    datalist |= {"name": str(dataset)} if dataset else {}
    datalist |= datalist_label_map(labels)
    datalist[key] = entries
    if needs_write(out, content=datalist):
        write_json(out, datalist)
    return datalist


def parse_option(value):
    """Fire passes JSON-like options as Python objects; also accept a JSON string or the path of a JSON file."""
    return (
        (json.loads(value) if value.lstrip()[:1] in "[{" else json.loads(Path(value).read_text()))
        if isinstance(value, str)
        else value
    )
