"""Self-contained bundle archives (pack), and serving lesion_inpainting with MONAI Label's bundle infer task."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import BUNDLES, ROOT, run_bundle
from pathosynth.deploy import PackError, declared_requirements, pack_bundle
from pathosynth.deploy.imports import code_closure, distribution_of

ALL_BUNDLES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


def _members(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as handle:
        return set(handle.namelist())


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_every_bundle_packs_with_the_code_and_requirements_it_needs(bundle, tmp_path):
    """Each archive holds configs, docs, LICENSE and the pathosynth modules its configs reach; every package
    that code imports unguarded is pinned in the archive's requirements.txt; pathosynth itself is not a
    requirement (the archive carries it)."""
    archive = pack_bundle(BUNDLES / bundle, tmp_path)
    metadata = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    assert archive.name == f"{bundle}_v{metadata['version']}.zip"
    members = _members(archive)
    for required in ("configs/inference.json", "configs/metadata.json", "docs/README.md", "LICENSE", "requirements.txt", "pathosynth/__init__.py"):
        assert f"{bundle}/{required}" in members, required
    closure = code_closure((BUNDLES / bundle / "configs").rglob("*.json"))
    packed_code = {m for m in members if m.startswith(f"{bundle}/pathosynth/")}
    assert len(packed_code) == len(closure.modules)
    with zipfile.ZipFile(archive) as handle:
        requirements = handle.read(f"{bundle}/requirements.txt").decode().split()
        packed_metadata = json.loads(handle.read(f"{bundle}/configs/metadata.json"))
    pinned = {line.split("==")[0] for line in requirements}
    assert {distribution_of(name) for name in closure.required} <= pinned
    assert {"monai", "torch", "fire"} <= pinned and "pathosynth" not in pinned
    assert "pathosynth" not in packed_metadata["required_packages_version"]


def test_pack_is_deterministic_and_refuses_to_overwrite_a_version(tmp_path):
    """The same bundle packs to the same bytes; a second pack of one version into the same folder is refused
    (archive versions are immutable) and leaves the first archive untouched."""
    first = pack_bundle(BUNDLES / "lesion_mask_diffusion", tmp_path / "a")
    second = pack_bundle(BUNDLES / "lesion_mask_diffusion", tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    before = first.read_bytes()
    with pytest.raises(PackError, match="already exists.*bump 'version'"):
        pack_bundle(BUNDLES / "lesion_mask_diffusion", tmp_path / "a")
    assert first.read_bytes() == before
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")], "no partial archive left behind"


def test_pack_refuses_undeclared_imports_and_missing_changelog(tmp_path):
    """A bundle whose metadata misses a package its code imports, or whose version has no changelog entry, is
    refused before anything is written, and the message names metadata.json and the package."""
    bundle = tmp_path / "lesion_inpainting"
    shutil.copytree(BUNDLES / "lesion_inpainting", bundle)
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["required_packages_version"]["scipy"]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(PackError, match=r"metadata\.json does not declare(.|\n)*scipy: scipy \(imported by"):
        pack_bundle(bundle, tmp_path / "out")
    metadata["required_packages_version"]["scipy"] = "1.17.1"
    metadata["version"] = "9.9.9"
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(PackError, match="version 9.9.9 has no changelog entry"):
        pack_bundle(bundle, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_pack_requires_the_packages_monai_networks_import_when_built(tmp_path):
    """MONAI's DiffusionModelUNet imports einops only when built with attention, which the import analysis of our code
    cannot see (issue 17: four bundles crashed from a plain install); a bundle whose config builds one must declare
    einops, and the message says which network needs it."""
    bundle = tmp_path / "reference_guided_ddpm"
    shutil.copytree(BUNDLES / "reference_guided_ddpm", bundle)
    metadata_path = bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    del metadata["required_packages_version"]["einops"]
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(PackError, match=r"einops: einops \(imported by .*monai DiffusionModelUNet \(a config\)"):
        pack_bundle(bundle, tmp_path / "out")
    assert "einops" in code_closure((BUNDLES / "reference_guided_ddpm" / "configs").glob("*.json")).required


def test_declared_requirements_read_the_monai_metadata_keys():
    metadata = {"monai_version": "1.6.1", "pytorch_version": "2.13.0", "numpy_version": "2.4.6",
                "required_packages_version": {"PyTorch_Ignite": "0.5.5", "pathosynth": "0.1.0"},
                "optional_packages_version": {"lime": "0.2.0.1"}}
    assert declared_requirements(metadata) == {"monai": "1.6.1", "torch": "2.13.0", "numpy": "2.4.6",
                                               "pytorch-ignite": "0.5.5", "lime": "0.2.0.1"}


@pytest.fixture(scope="module")
def inpainting_archive(phantom_dir, tmp_path_factory) -> Path:
    """lesion_inpainting trained at smoke scale, packed with its weights and the smoke overlay merged into
    inference.json (the network size the weights have), unpacked into a fresh folder outside the repository."""
    work = tmp_path_factory.mktemp("archive")
    run_bundle("training", "lesion_inpainting", ["train.json", "smoke.json"],
               {"dataset_dir": phantom_dir, "ckpt_dir": work / "ckpt", "output_dir": work / "logs"})
    archive = pack_bundle(BUNDLES / "lesion_inpainting", work / "dist", weights=[work / "ckpt" / "lefusion_j.pt"], overlays=["smoke.json"])
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(work / "unpacked")
    return work / "unpacked" / "lesion_inpainting"


def _lesion_case(phantom_dir: Path) -> tuple[Path, Path]:
    image = sorted(phantom_dir.glob("Case_P*/Images/*.nii.gz"))[0]
    return image, image.parent.parent / "Contours" / image.name


@pytest.mark.slow
def test_monai_label_bundle_infer_task_serves_lesion_inpainting(inpainting_archive, phantom_dir, tmp_path):
    """MONAI Label's own BundleInferTask (monailabel 0.8.5) accepts the unpacked bundle and, for an image + label
    map request, writes the synthetic image: voxels outside the lesions bit-identical to the input, lesions
    re-synthesised, and exactly what the bundle's synthesizer gives for the same arrays and seed. The code it
    runs is the archive's copy of pathosynth."""
    pytest.importorskip("monailabel", reason="test dependency: pip install --no-deps -r requirements-monailabel.txt")
    image, label = _lesion_case(phantom_dir)
    result = tmp_path / "result.npz"
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "monailabel_infer.py"), str(inpainting_archive), str(image), str(label), str(result)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = np.load(result)
    assert Path(str(out["code"])).is_relative_to(inpainting_archive)
    written, expected, source, labels = out["written"], out["expected"], out["image"], out["label"]
    assert written.shape == source.shape and written.dtype == source.dtype
    lesion = labels >= 3
    assert np.array_equal(written[~lesion], source[~lesion])
    assert (written[lesion] != source[lesion]).mean() > 0.5
    assert np.array_equal(written, expected)
