"""Self-contained bundle archives: one zip that runs with ``python -m monai.bundle run`` without this repository.

An archive ``<bundle>_v<version>.zip`` holds ``<bundle>/`` with the bundle's configs, docs and LICENSE, the
pathosynth modules its configs need (at ``<bundle>/pathosynth``: ``python -m`` puts the working directory, and
MONAI Label the bundle directory, on ``sys.path``), a ``requirements.txt`` pinned from ``metadata.json``, and
optional weights in ``models/``. The first weights file is the bundle's main model and is stored in the MONAI
format: ``models/model.pt`` a flat state dict of ``network_def`` (what ``monai.bundle.load`` and MONAI Label load;
the inference configs fall back to it) and ``models/model_metadata.json`` what it was trained with (checked by
our inference); any others keep their names and our format. Every base config of the archive (``train*.json``,
``inference.json``, ...) has the bundle's shared ``configs/common.json`` merged in, so it stands alone: MONAI Label
and model-zoo's CI read ``inference.json`` and nothing else, ``monai.bundle.load``'s default workflow builds
``network_def`` from ``train.json``; ``common.json`` ships too, so the commands of the bundle's README run unchanged.
Config overlays the weights were trained with (e.g. a smaller network) are merged into ``inference.json`` and
``train.json`` as well, so every ``network_def`` of the archive fits its weights.

Packing refuses what would break later: a version without a changelog entry, an archive of that version that
already exists (versions are immutable; bump metadata.json), and code that imports a package metadata.json does
not declare.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from monai.bundle import ConfigParser

from ..bundle_configs import COMMON_CONFIG, base_configs, config_files
from ..engines.checkpoint import export_monai_model
from ..io.atomic import atomic_path
from ..io.checkpoints import MONAI_MODEL_FILE
from .imports import PACKAGE, PACKAGE_ROOT, canonical, code_closure, distribution_of

logger = logging.getLogger(__name__)

# metadata.json keys that pin a package outside ``required_packages_version``
PINNED_KEYS = {"monai": "monai_version", "torch": "pytorch_version", "numpy": "numpy_version"}
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed entry times: the same inputs give the same archive bytes


class PackError(ValueError):
    """A bundle cannot be packed; the message names the file and what to change."""


def declared_requirements(metadata: dict) -> dict[str, str]:
    """Canonical distribution name -> pinned version, as metadata.json declares them (pathosynth excluded: the
    archive carries its code)."""
    pins = {dist: metadata[key] for dist, key in PINNED_KEYS.items() if metadata.get(key)}
    for group in ("required_packages_version", "optional_packages_version"):
        pins.update({canonical(name): version for name, version in (metadata.get(group) or {}).items()})
    pins.pop(PACKAGE, None)
    return pins


def requirement_lines(metadata: dict) -> list[str]:
    """pip requirement lines for a fresh environment (``name==version``)."""
    return [f"{name}=={version}" for name, version in sorted(declared_requirements(metadata).items())]


def _check_metadata(metadata_path: Path) -> dict:
    try:
        metadata = json.loads(metadata_path.read_text())
    except FileNotFoundError:
        raise PackError(f"{metadata_path} is missing: a bundle needs configs/metadata.json") from None
    except json.JSONDecodeError as error:
        raise PackError(f"{metadata_path} is not valid JSON: {error}") from None
    version = metadata.get("version")
    if not version:
        raise PackError(f"{metadata_path} has no 'version'")
    if not (metadata.get("changelog") or {}).get(version):
        raise PackError(f"{metadata_path}: version {version} has no changelog entry; add one under 'changelog'")
    return metadata


def _check_requirements(metadata: dict, closure, metadata_path: Path) -> None:
    declared = set(declared_requirements(metadata))
    missing = {}
    for import_name, importers in sorted(closure.required.items()):
        dist = distribution_of(import_name)
        if dist not in declared:
            missing[dist] = f"{import_name} (imported by {', '.join(sorted(importers))})"
    if missing:
        lines = "\n".join(f"  {dist}: {why}" for dist, why in missing.items())
        raise PackError(
            f"{metadata_path} does not declare packages the bundle's code imports; add them to "
            f"'required_packages_version':\n{lines}"
        )


def bundle_files(bundle_dir: Path) -> list[Path]:
    """Configs, docs and LICENSE of a bundle (dot files and caches left out)."""
    files = [p for sub in ("configs", "docs") for p in sorted((bundle_dir / sub).rglob("*")) if p.is_file()]
    files = [
        p
        for p in files
        if not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(bundle_dir).parts)
    ]
    return files + [bundle_dir / "LICENSE"]


def merged_config(configs_dir: Path, overlays: Sequence[str | os.PathLike], base: str = "inference.json") -> bytes:
    """``base`` after the bundle's ``common.json`` and with the overlays applied, the way ``monai.bundle run`` merges
    them (``a#b`` keys replace nested items), as JSON bytes."""
    files = config_files(configs_dir, [base, *overlays])
    for path in files:
        if not path.is_file():
            raise PackError(f"config {path} does not exist")
    return json.dumps(ConfigParser.load_config_files([str(f) for f in files]), indent=4).encode() + b"\n"


def pack_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights: Sequence[str | os.PathLike] = (),
    overlays: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write ``<out_dir>/<bundle>_v<version>.zip`` (atomically) and return its path. ``overlays`` (paths, relative
    ones inside the bundle's configs/) are merged into the archive's inference.json and train.json."""
    bundle_dir = Path(bundle_dir).resolve()
    name = bundle_dir.name
    metadata_path = bundle_dir / "configs" / "metadata.json"
    metadata = _check_metadata(metadata_path)
    if not (bundle_dir / "LICENSE").is_file():
        raise PackError(f"{bundle_dir / 'LICENSE'} is missing: an archive must carry its licence")
    weights = [Path(w) for w in weights]
    for path in weights:
        if not path.is_file():
            raise PackError(f"weights file {path} does not exist")
    stored = [MONAI_MODEL_FILE] + [path.name for path in weights[1:]]  # names in models/: every file is kept
    clashes = sorted({name for name in stored if stored.count(name) > 1})
    if clashes:
        raise PackError(
            f"weights {[str(w) for w in weights]} would be stored as models/{stored} and overwrite each other "
            f"({', '.join(clashes)}); the first is stored as {MONAI_MODEL_FILE}, the others under their own "
            "names: rename one"
        )
    target = Path(out_dir) / f"{name}_v{metadata['version']}.zip"
    if target.exists():
        raise PackError(
            f"{target} already exists; an archive version is immutable: bump 'version' in {metadata_path} "
            "(with a changelog entry) or pack into another folder"
        )
    closure = code_closure(p for p in (bundle_dir / "configs").rglob("*.json") if p.name != "metadata.json")
    _check_requirements(metadata, closure, metadata_path)

    packed_metadata = {
        **metadata,
        "required_packages_version": {
            k: v for k, v in (metadata.get("required_packages_version") or {}).items() if canonical(k) != PACKAGE
        },
    }
    replaced = {metadata_path: json.dumps(packed_metadata, indent=4).encode() + b"\n"}
    configs = bundle_dir / "configs"
    for base in base_configs(configs):
        applied = overlays if base.name in ("inference.json", "train.json") else ()  # those whose network_def is loaded
        if applied or (configs / COMMON_CONFIG).is_file():
            replaced[base] = merged_config(configs, applied, base.name)
    with tempfile.TemporaryDirectory() as scratch, atomic_path(target) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:

            def add(arcname: str, data: bytes) -> None:
                info = zipfile.ZipInfo(f"{name}/{arcname}", date_time=ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)

            for path in bundle_files(bundle_dir):
                add(path.relative_to(bundle_dir).as_posix(), replaced[path] if path in replaced else path.read_bytes())
            for path in closure.files():
                add(f"{PACKAGE}/{path.relative_to(PACKAGE_ROOT).as_posix()}", path.read_bytes())
            add("requirements.txt", ("\n".join(requirement_lines(metadata)) + "\n").encode())
            for index, path in enumerate(weights):
                if index == 0:
                    exported = Path(scratch) / MONAI_MODEL_FILE
                    metadata_file = export_monai_model(path, exported)
                    add(f"models/{MONAI_MODEL_FILE}", exported.read_bytes())
                    add(f"models/{metadata_file.name}", metadata_file.read_bytes())
                else:
                    add(f"models/{path.name}", path.read_bytes())
    logger.info(
        f"packed {name} v{metadata['version']}: {len(closure.modules)} pathosynth modules, "
        f"{len(weights)} weights file(s) -> {target}"
    )
    for import_name, importers in sorted(closure.optional.items()):  # guarded imports: features, not requirements
        logger.info(f"optional, not pinned: {import_name} (used by {', '.join(sorted(importers))} when installed)")
    return target
