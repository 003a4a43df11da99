"""Self-contained bundle archives (pack), and serving lesion_inpainting with MONAI Label's bundle infer task."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from conftest import BUNDLES, ROOT, bundle_configs, run_bundle
from pathosynth.bundle_configs import base_configs, config_files
from pathosynth.deploy.archive import PackError, declared_requirements, pack_bundle
from pathosynth.deploy.imports import code_closure, distribution_of
from pathosynth.engines.checkpoint import export_monai_model, load_weights
from pathosynth.errors import UserInputError

MONAILABEL_SHIM = ROOT / "tests" / "monailabel_shim"  # stands in for a torchvision that cannot load beside CPU torch

ALL_BUNDLES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


def _members(archive: Path) -> set[str]:
    with zipfile.ZipFile(archive) as handle:
        return set(handle.namelist())


@pytest.mark.parametrize("bundle", ALL_BUNDLES)
def test_every_bundle_packs_with_the_code_and_requirements_it_needs(bundle, tmp_path):
    """Each archive holds configs, docs, LICENSE and the pathosynth modules its configs reach; every package
    that code imports unguarded is pinned in the archive's requirements.txt; pathosynth itself is not a
    requirement (the archive carries it). Each packed base config stands alone: it is the bundle's common.json
    merged with it (MONAI Label and model-zoo's CI read inference.json and nothing else)."""
    archive = pack_bundle(BUNDLES / bundle, tmp_path)
    metadata = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
    assert archive.name == f"{bundle}_v{metadata['version']}.zip"
    members = _members(archive)
    for required in (
        "configs/inference.json",
        "configs/metadata.json",
        "docs/README.md",
        "LICENSE",
        "requirements.txt",
        "pathosynth/__init__.py",
    ):
        assert f"{bundle}/{required}" in members, required
    closure = code_closure((BUNDLES / bundle / "configs").rglob("*.json"))
    packed_code = {m for m in members if m.startswith(f"{bundle}/pathosynth/")}
    assert len(packed_code) == len(closure.modules)
    with zipfile.ZipFile(archive) as handle:
        requirements = handle.read(f"{bundle}/requirements.txt").decode().split()
        packed_metadata = json.loads(handle.read(f"{bundle}/configs/metadata.json"))
        configs = BUNDLES / bundle / "configs"
        for base in base_configs(configs):
            packed = json.loads(handle.read(f"{bundle}/configs/{base.name}"))
            assert packed == ConfigParser.load_config_files(config_files(configs, [base.name])), base.name
            assert "imports" in packed and "initialize" in packed, base.name
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
    metadata = {
        "monai_version": "1.6.1",
        "pytorch_version": "2.13.0",
        "numpy_version": "2.4.6",
        "required_packages_version": {"PyTorch_Ignite": "0.5.5", "pathosynth": "0.1.0"},
        "optional_packages_version": {"lime": "0.2.0.1"},
    }
    assert declared_requirements(metadata) == {
        "monai": "1.6.1",
        "torch": "2.13.0",
        "numpy": "2.4.6",
        "pytorch-ignite": "0.5.5",
        "lime": "0.2.0.1",
    }


@pytest.fixture(scope="module")
def inpainting_archive(phantom_dir, tmp_path_factory) -> Path:
    """lesion_inpainting trained at smoke scale, packed with its weights and the smoke overlay merged into
    inference.json (the network size the weights have), unpacked into a fresh folder outside the repository."""
    work = tmp_path_factory.mktemp("archive")
    run_bundle(
        "training",
        "lesion_inpainting",
        ["train.json", "smoke.json"],
        {"dataset_dir": phantom_dir, "ckpt_dir": work / "ckpt", "output_dir": work / "logs"},
    )
    archive = pack_bundle(
        BUNDLES / "lesion_inpainting", work / "dist", weights=[work / "ckpt" / "lefusion_j.pt"], overlays=["smoke.json"]
    )
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
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "monailabel_infer.py"),
            str(inpainting_archive),
            str(image),
            str(label),
            str(result),
        ],
        env=_monailabel_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    out = np.load(result)
    assert Path(str(out["code"])).is_relative_to(inpainting_archive)
    written, expected, source, labels = out["written"], out["expected"], out["image"], out["label"]
    assert written.shape == source.shape and written.dtype == source.dtype
    lesion = labels >= 3
    assert np.array_equal(written[~lesion], source[~lesion])
    assert (written[lesion] != source[lesion]).mean() > 0.5
    assert np.array_equal(written, expected)


def _monailabel_env() -> dict:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(MONAILABEL_SHIM), os.environ.get("PYTHONPATH")])),
    }


def test_packed_model_pt_is_a_flat_state_dict_whose_metadata_inference_checks(tmp_path):
    """models/model.pt is MONAI's flat state dict; what it was trained with lives in models/model_metadata.json,
    and load_weights still refuses it for other settings, or when that file is gone (the checks could not be made)."""
    network = torch.nn.Conv3d(2, 2, 1)
    torch.save(
        {"network": network.state_dict(), "metadata": {"texture_channels": [["MI"], ["PMO"]]}},
        tmp_path / "lefusion_j.pt",
    )
    sidecar = export_monai_model(tmp_path / "lefusion_j.pt", tmp_path / "models" / "model.pt")
    flat = torch.load(tmp_path / "models" / "model.pt", weights_only=True)
    assert set(flat) == set(network.state_dict()) and all(
        torch.equal(flat[k], v) for k, v in network.state_dict().items()
    )
    assert sidecar == tmp_path / "models" / "model_metadata.json"
    assert json.loads(sidecar.read_text()) == {"texture_channels": [["MI"], ["PMO"]]}
    fresh = torch.nn.Conv3d(2, 2, 1)
    load_weights(fresh, tmp_path / "models" / "model.pt", {"texture_channels": (["MI"], ["PMO"])})
    assert torch.equal(fresh.weight, network.weight)
    with pytest.raises(UserInputError, match=r"trained with texture_channels=\[\['MI'\], \['PMO'\]\]"):
        load_weights(fresh, tmp_path / "models" / "model.pt", {"texture_channels": [["PMO"], ["MI"]]})
    sidecar.unlink()
    with pytest.raises(UserInputError, match=r"flat state dict and .*model_metadata.json.*is missing"):
        load_weights(fresh, tmp_path / "models" / "model.pt", {"texture_channels": [["MI"], ["PMO"]]})


def _bundle_load(bundle_dir: Path) -> torch.nn.Module:
    """``monai.bundle.load`` of an unpacked bundle folder as a user calls it (local folder, inference workflow)."""
    from monai.bundle import load

    return load(
        bundle_dir.name,
        bundle_dir=str(bundle_dir.parent),
        workflow_type="inference",
        device="cpu",
        source="monaihosting",
    )


def _same_weights(network: torch.nn.Module, trained: dict) -> bool:
    state = network.state_dict()
    return set(state) == set(trained) and all(torch.equal(state[k], v) for k, v in trained.items())


@pytest.mark.slow
def test_monai_bundle_load_returns_the_packed_trained_weights(inpainting_archive, phantom_dir, tmp_path):
    """monai.bundle.load(name, bundle_dir=<unpacked archive>, workflow_type='inference') builds network_def without
    any dataset and returns it with exactly the trained weights of models/model.pt (lesion_inpainting trained at
    smoke scale; reference_guided_ddpm with perturbed weights); our own inference reads the same file."""
    trained = torch.load(inpainting_archive.parent.parent / "ckpt" / "lefusion_j.pt", weights_only=True)["network"]
    assert _same_weights(_bundle_load(inpainting_archive), trained)

    bundle = "reference_guided_ddpm"
    configs = bundle_configs(bundle, "inference.json", "smoke.json")
    parser = ConfigParser()
    parser.read_config(configs)
    network = parser.get_parsed_content("network_def")
    for parameter in network.parameters():  # distinct from any freshly initialised network
        torch.nn.init.normal_(parameter)
    torch.save({"network": network.state_dict(), "metadata": {}}, tmp_path / "ddpm.pt")
    archive = pack_bundle(BUNDLES / bundle, tmp_path / "dist", weights=[tmp_path / "ddpm.pt"], overlays=["smoke.json"])
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(tmp_path / "unpacked")
    assert _same_weights(_bundle_load(tmp_path / "unpacked" / bundle), network.state_dict())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def monailabel_server(inpainting_archive, phantom_dir, tmp_path_factory):
    """The real MONAI Label server (``monailabel start_server``) on 127.0.0.1 with its ``monaibundle`` sample app
    (shipped in the monailabel wheel, run offline with a local zoo source) serving the unpacked lesion_inpainting
    archive, and a local datastore holding one phantom image. Stopped (its whole process group) after the tests."""
    pytest.importorskip("monailabel", reason="MONAI Label server: pip install --no-deps -r requirements-monailabel.txt")
    # installed with it (no-deps): an import that fails here is a line requirements-monailabel.txt lacks, not a skip
    for module in ("uvicorn", "fastapi", "multipart", "jwt", "dicomweb_client", "google.auth", "requests"):
        importlib.import_module(module)
    sample_app = Path(sysconfig.get_path("data")) / "monailabel" / "sample-apps" / "monaibundle"
    if not sample_app.is_dir():
        pytest.skip(f"monailabel's monaibundle sample app not found at {sample_app}")
    work = tmp_path_factory.mktemp("monailabel")
    app = work / "app"
    shutil.copytree(sample_app, app, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(inpainting_archive, app / "model" / "lesion_inpainting")
    image, label = _lesion_case(phantom_dir)
    (work / "studies").mkdir()
    shutil.copyfile(image, work / "studies" / image.name)
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        str(app),
        "--studies",
        str(work / "studies"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--conf",
        "models",
        "lesion_inpainting",
        "--conf",
        "zoo_source",
        "local",
        "--conf",
        "skip_trainers",
        "true",
        "--conf",
        "sam2",
        "false",
    ]
    import requests

    with open(work / "server.log", "w") as log:
        server = subprocess.Popen(
            command, cwd=work, env=_monailabel_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )  # its own process group, stopped as a whole

    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise AssertionError(
                    f"MONAI Label server exited ({server.returncode}):\n{(work / 'server.log').read_text()[-4000:]}"
                )
            try:
                if requests.get(f"{url}/info/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"MONAI Label server not up in 60 s:\n{(work / 'server.log').read_text()[-4000:]}")
            time.sleep(0.5)
        yield {"url": url, "image": image, "label": label, "image_id": image.name.split(".")[0], "work": work}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.mark.slow
def test_monai_label_server_synthesises_lesions_over_http(monailabel_server, tmp_path):
    """POST /infer/lesion_inpainting?image=<datastore id> with the label map as the request's 'label' file answers
    HTTP 200 with a NIfTI image: every voxel outside the lesions bit-identical to the datastore image, the lesions
    re-synthesised."""
    import requests

    server = monailabel_server
    with open(server["label"], "rb") as label_file:
        response = requests.post(
            f"{server['url']}/infer/lesion_inpainting",
            params={"image": server["image_id"], "output": "image"},
            files={"label": (server["label"].name, label_file)},
            timeout=300,
        )
    assert response.status_code == 200, response.text[-2000:]
    result = tmp_path / "result.nii.gz"
    result.write_bytes(response.content)
    written = np.asarray(nib.load(result).dataobj)
    source = np.asarray(nib.load(server["image"]).dataobj)
    labels = np.asarray(nib.load(server["label"]).dataobj)
    assert written.shape == source.shape
    lesion = labels >= 3
    assert lesion.any() and np.array_equal(written[~lesion], source[~lesion])
    assert (written[lesion] != source[lesion]).mean() > 0.5


@pytest.mark.slow
def test_monai_label_server_refuses_a_request_without_the_label_map(monailabel_server):
    """Without the label map the server answers 422 (not 500 with KeyError: 'label'), and says what to send."""
    import requests

    server = monailabel_server
    response = requests.post(
        f"{server['url']}/infer/lesion_inpainting", params={"image": server["image_id"], "output": "image"}, timeout=120
    )
    assert response.status_code == 422, response.text[-2000:]
    detail = response.json()["detail"]
    assert "lesion_inpainting needs 'label'" in detail and "request's 'label' file" in detail


@pytest.mark.slow
def test_monai_label_info_describes_a_synthesis_model(monailabel_server):
    """/info/ lists lesion_inpainting with the bundle's version, and a description and labels that say it returns a
    synthetic image (MONAI Label names its labels after the channels of metadata.json's first network output)."""
    import requests

    info = requests.get(f"{monailabel_server['url']}/info/", timeout=30).json()["models"]["lesion_inpainting"]
    metadata = json.loads((BUNDLES / "lesion_inpainting" / "configs" / "metadata.json").read_text())
    assert info["version"] == metadata["version"] and info["dimension"] == 3
    assert [name.split(" (")[0] for name in info["labels"]] == [
        "synthetic image: mi lesion texture",
        "synthetic image: pmo lesion texture",
    ]
    assert info["description"].startswith("Synthesises")
