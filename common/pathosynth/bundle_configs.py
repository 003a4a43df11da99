"""Which config files a bundle run merges, and in which order.

A bundle's ``configs/common.json`` holds what all its workflows share (imports, paths, labels and the keys derived from
them, ``network_def``, the noise scheduler, sizes, the one checkpoint-metadata entry written by training and checked by
inference). It is listed first, before the workflow's base config (``train.json``, ``inference.json``, ...) and its
overlays: ``--config_file "['configs/common.json','configs/train.json','configs/smoke.json']"``. Every place that turns
config names into a ``--config_file`` list or a parser (tests, ``gpu_check``, ``pack``, the studies) goes through
:func:`config_files`, so none forgets the shared base; :func:`base_configs` finds the files a workflow starts from
(``pack`` makes each of them stand alone in an archive).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

COMMON_CONFIG = "common.json"
METADATA = "metadata.json"
MULTI_GPU_PREFIX = "multi_gpu_"  # overlays that scale a base out under torchrun
_REFERENCE = re.compile(r"@([A-Za-z_]\w*)")  # the first part of a MONAI reference "@id#sub#..."


def config_files(configs_dir: str | os.PathLike, names: Iterable[str | os.PathLike]) -> list[Path]:
    """The paths MONAI merges for ``names`` (file names in ``configs_dir``, or paths: absolute ones are kept), with
    the bundle's ``common.json`` first when it has one and ``names`` does not already list it."""
    folder = Path(configs_dir)
    files = [folder / name for name in names]
    common = folder / COMMON_CONFIG
    if common.is_file() and common not in files:
        files.insert(0, common)
    return files


def _references(value) -> set[str]:
    if isinstance(value, str):
        return set(_REFERENCE.findall(value))
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value))
    return set()


def base_configs(configs_dir: str | os.PathLike) -> list[Path]:
    """The configs a workflow starts from (``train*.json``, ``inference.json``, ``pipeline.json``, ...): those that
    define ``initialize`` and ``run`` and, after ``common.json``, stand alone (every id they reference is theirs or
    common's). Overlays are not bases: ``multi_gpu_*.json`` (by name: one may reference nothing but common's ids)
    and those that read another base's ids (``evaluate.json`` reads ``train_classifier.json``'s classifiers)."""
    folder = Path(configs_dir)
    common = folder / COMMON_CONFIG
    shared = set(json.loads(common.read_text())) if common.is_file() else set()
    bases = []
    for path in sorted(folder.glob("*.json")):
        if path.name in (COMMON_CONFIG, METADATA) or path.name.startswith(MULTI_GPU_PREFIX):
            continue
        content = json.loads(path.read_text())
        defines = {"initialize", "run"} <= set(content)
        if defines and _references(content) <= shared | set(content) | {"_meta_"}:
            bases.append(path)
    return bases
