"""Shared fixtures: phantom data (the embedded default), real data when present, bundle paths."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pathosynth.bundle_configs import config_files

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "bundles"
REAL_DATA = Path(os.environ.get("PATHOSYNTH_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(1)  # tests run two xdist workers on two cores


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A small EMIDEC-layout phantom dataset (2 normal, 4 pathological cases), made once per worker."""
    from pathosynth.data.phantom import generate_emidec_like_dataset

    out = tmp_path_factory.mktemp("phantom")
    generate_emidec_like_dataset(out, n_normal=2, n_pathological=4, seed=7, in_plane=96)
    return out


@pytest.fixture(scope="session")
def acdc_phantom_dir(tmp_path_factory) -> Path:
    """A small ACDC-layout phantom dataset (4 patients, ED + ES frames), made once per worker."""
    from pathosynth.data.phantom import generate_acdc_like_dataset

    out = tmp_path_factory.mktemp("acdc_phantom")
    generate_acdc_like_dataset(out, n_patients=4, seed=7, in_plane=96)
    return out


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    """The real ACDC development split (../shared/data/acdc or $PATHOSYNTH_DATA/acdc)."""
    path = REAL_DATA / "acdc"
    if not path.is_dir():
        pytest.skip(f"real ACDC data not found at {path} (set PATHOSYNTH_DATA)")
    return path


@pytest.fixture(scope="session")
def emidec_dir() -> Path:
    """The real EMIDEC development split (../shared/data/emidec or $PATHOSYNTH_DATA/emidec)."""
    path = REAL_DATA / "emidec"
    if not path.is_dir():
        pytest.skip(f"real EMIDEC data not found at {path} (set PATHOSYNTH_DATA)")
    return path


def bundle_configs(bundle: str, *names: str) -> list[str]:
    """The ``--config_file`` list of a bundle run: its configs/common.json first, then ``names`` (file names in its
    configs/ folder, or paths) in order."""
    return [str(f) for f in config_files(BUNDLES / bundle / "configs", names)]


def run_bundle(
    workflow: str,
    bundle: str,
    configs: list[str],
    overrides: dict,
    cwd: Path = ROOT,
    env=None,
    timeout=600,
    nproc: int | None = None,
    check: bool = True,
):
    """Run ``python -m monai.bundle run`` as a user would (under ``torchrun --nproc_per_node nproc`` when given);
    returns the CompletedProcess (raises on failure unless ``check`` is False)."""
    files = bundle_configs(bundle, *configs)
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc
        else [sys.executable]
    )
    cmd = launcher + ["-m", "monai.bundle", "run", workflow, "--config_file", str(files)]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"bundle run failed ({proc.returncode}):\n{' '.join(cmd)}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def pneumoniamnist_dir() -> Path:
    """The real PneumoniaMNIST npz (../shared/data/pneumoniamnist or $PATHOSYNTH_DATA/pneumoniamnist)."""
    path = REAL_DATA / "pneumoniamnist"
    if not (path.is_dir() and any(path.glob("*.npz"))):
        pytest.skip(f"real PneumoniaMNIST data not found at {path} (set PATHOSYNTH_DATA)")
    return path


def toy_medmnist_npz(folder: Path) -> Path:
    """``folder/toymnist.npz``: the seeded two-class toy npz the class_conditional_ddpm tests train and score on."""
    from pathosynth.data.medmnist import write_toy_medmnist_npz

    return write_toy_medmnist_npz(folder / "toymnist.npz")


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``root``: "the dataset is unchanged" is equality of two digests."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def datalist_patients(datalist: str | Path) -> set[str]:
    """ACDC patients whose real files a datalist reads (its images and labels, or for synthetic cases their sources)."""
    content = json.loads(Path(datalist).read_text())["training"]
    return {
        part
        for e in content
        for key in ("image", "label", "source_image")
        if e.get(key)
        for part in Path(e[key]).parts
        if part.startswith("patient") and "_" not in part
    }
