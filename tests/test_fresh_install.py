"""A plain install runs every bundle (issue 17): a new virtual environment with requirements.txt and the project
installed without dependencies (no test packages) trains and synthesises with every bundle at smoke scale and builds
every network of every base config at paper scale (MONAI imports some packages only when a network with attention is
built); every bundle packed with those weights synthesises in a new virtual environment made from the archive's own
requirements.txt, with no checkout and no pathosynth installed.

Fast enough for every CI run: uv builds the environments (torch comes from the local wheel folder and is hard-linked
from uv's cache, not unpacked again), one environment per distinct requirements text, bundles one after another on
one thread. An unreachable package registry fails the test: CI has the registry, so that failure is real.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import BUNDLES, ROOT, toy_medmnist_npz
from pathosynth.bundle_configs import config_files
from pathosynth.deploy.archive import pack_bundle

ALL_BUNDLES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())
# where pip finds the local CPU torch wheel on these machines (pip's find-links); uv is told the same
FIND_LINKS = [p for p in os.environ.get("PIP_FIND_LINKS", "/opt/wheels").split() if Path(p).is_dir()]
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE")


def _requirement_names(lines) -> list[str]:
    """Canonical distribution names of requirement lines (comments, options and includes left out)."""
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0)).lower())
    return names


def test_setup_cfg_installs_what_requirements_txt_lists():
    """`pip install .` and `pip install -r requirements.txt` give the same packages (ranges in setup.cfg, the tested
    pins of torch and monai in requirements.txt)."""
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    install_requires = setup["options"]["install_requires"].splitlines()
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    assert sorted(_requirement_names(install_requires)) == sorted(_requirement_names(requirements))
    assert "einops" in _requirement_names(requirements)


def test_metadata_pins_the_tested_monai_line_and_declares_einops():
    """Each bundle pins the MONAI release it is tested with (1.6 line: 1.4's cosine schedule has alpha_bar_0 = 1) and
    declares einops, which MONAI's attention blocks import when a diffusion network is built."""
    for bundle in ALL_BUNDLES:
        metadata = json.loads((BUNDLES / bundle / "configs" / "metadata.json").read_text())
        assert metadata["monai_version"].startswith("1.6."), bundle
        assert "einops" in metadata["required_packages_version"], bundle


# ----------------------------------------------------------------------------------------------- fresh venvs


def _uv() -> str:
    from uv import find_uv_bin  # requirements-dev.txt

    return find_uv_bin()


class FreshVenvs:
    """Virtual environments made by uv from a requirements text (and the project without dependencies), one per
    distinct content in a test session. A failed install raises: the registry must be reachable."""

    def __init__(self, root: Path):
        self.root = root
        self.made: dict[str, Path] = {}
        self.seconds: dict[str, float] = {}

    def get(self, requirements: str, with_project: bool = False) -> Path:
        key = hashlib.sha256(requirements.encode() + bytes([with_project])).hexdigest()[:16]
        if key not in self.made:
            start = time.perf_counter()
            self.made[key] = self._create(self.root / key, requirements, with_project)
            self.seconds[key] = time.perf_counter() - start
        return self.made[key]

    def _create(self, folder: Path, requirements: str, with_project: bool) -> Path:
        folder.mkdir(parents=True)
        (folder / "requirements.txt").write_text(requirements)
        venv = folder / "venv"
        python = venv / "bin" / "python"
        links = [arg for path in FIND_LINKS for arg in ("--find-links", path)]
        self._uv("venv", "--quiet", "--python", sys.executable, str(venv))
        self._uv("pip", "install", "--python", str(python), *links, "-r", str(folder / "requirements.txt"))
        if with_project:  # a copy of what the sdist holds: building in the checkout would write build/ there
            source = folder / "project"
            shutil.copytree(
                ROOT / "common", source / "common", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
            for name in PROJECT_FILES:
                shutil.copy2(ROOT / name, source / name)
            self._uv(
                "pip",
                "install",
                "--python",
                str(python),
                "--no-deps",
                "--refresh-package",
                "pathosynth",
                "--reinstall-package",
                "pathosynth",
                str(source),
            )
        return python

    @staticmethod
    def _uv(*args: str) -> None:
        proc = subprocess.run([_uv(), *args], capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"uv {' '.join(args)} failed (is the package registry reachable?):\n{proc.stderr[-4000:]}"
        )


def _env(python: Path, home: Path) -> dict[str, str]:
    """Only what a user's shell would give: the venv first on PATH, no PYTHONPATH, one thread."""
    return {
        "PATH": f"{python.parent}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", str(home)),
        "OMP_NUM_THREADS": "1",
        "PYTHONNOUSERSITE": "1",
    }


def _bundle_run(
    python: Path, workflow: str, configs: list[Path], overrides: dict, cwd: Path, timings: list
) -> str | None:
    """``python -m monai.bundle run`` in the fresh venv; None when it succeeds, else the failure's tail."""
    cmd = [str(python), "-m", "monai.bundle", "run", workflow, "--config_file", str([str(c) for c in configs])]
    for key, value in overrides.items():
        cmd += [
            f"--{key}",
            value if isinstance(value, str) else json.dumps(value) if isinstance(value, list) else str(value),
        ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(python, cwd), capture_output=True, text=True, timeout=600)
    timings.append((f"{workflow} {' + '.join(c.name for c in configs)}", time.perf_counter() - start))
    return (
        None if proc.returncode == 0 else f"{' '.join(cmd)}\n--- rc {proc.returncode}, stderr:\n{proc.stderr[-3000:]}"
    )


# the weights a user packs per bundle (the inference config's main model first)
WEIGHTS = {
    "lesion_inpainting": ["lefusion_j.pt"],
    "lesion_mask_diffusion": ["diffmask.pt"],
    "reference_guided_ddpm": ["ddpm.pt"],
    "label_guided_latent_diffusion": ["label_diffusion.pt", "autoencoder.pt"],
    "text_edge_controlnet": ["text_diffusion.pt", "controlnet.pt"],
    "class_conditional_ddpm": ["class_diffusion.pt"],
    "downstream_segmentation": ["segmenter.pt"],
}


def _plans(data: dict[str, Path], work: Path) -> dict[str, dict]:
    """Each bundle's smoke runs (``pathosynth.gpu_check.smoke_plans``, the ones ``make gpu-check`` makes), with the
    weights a user packs and what the inference writes."""
    from pathosynth.gpu_check import smoke_plans

    plans = smoke_plans(data)
    assert sorted(plans) == ALL_BUNDLES == sorted(WEIGHTS), "a new bundle needs its smoke runs in pathosynth.gpu_check"
    # downstream_segmentation trains and scores in one "run"; its archive is checked by predicting the test list
    plans["downstream_segmentation"].update(infer={"datalist": data["split"] / "test.json"}, writes="predictions")
    for bundle, plan in plans.items():
        plan.update(ckpt=work / "ckpt" / bundle, weights=WEIGHTS[bundle])
        plan.setdefault("workflow", "training")
        plan.setdefault("writes", "datalist.json")
    return plans


def _check_outputs(out: Path, writes: str) -> str | None:
    if writes == "predictions":
        return None if list((out / "predictions").glob("*.nii.gz")) else f"{out}/predictions holds no prediction"
    entries = json.loads((out / "datalist.json").read_text())["training"] if (out / "datalist.json").is_file() else []
    missing = [e["image"] for e in entries if not (out / e["image"]).is_file()]
    return (
        None
        if entries and not missing
        else f"{out}/datalist.json lists no case, or images that do not exist: {missing}"
    )


# Builds every `*_def` network of every base config (after common.json; paper scale, no smoke overlay) in the fresh
# venv, on the meta device: the constructors run (and import what they need) without allocating or initialising weights.
BUILD_NETWORKS = """
import sys
from pathlib import Path
import torch
from monai.bundle import ConfigParser
from pathosynth.bundle_configs import base_configs, config_files
bundles, emidec, acdc = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
for bundle in sorted(p for p in bundles.iterdir() if (p / "configs" / "metadata.json").is_file()):
    for config in base_configs(bundle / "configs"):
        files = [str(f) for f in config_files(bundle / "configs", [config.name])]
        content = ConfigParser.load_config_files(files)
        parser = ConfigParser()
        parser.read_config(files)
        parser.read_meta(str(bundle / "configs" / "metadata.json"))
        acdc_labels = "RV" in (parser.config.get("labels") or {})
        parser.update({"dataset_dir": acdc if acdc_labels else emidec})
        for name in (k for k in content if k.endswith("_def")):
            with torch.device("meta"):
                net = parser.get_parsed_content(name)
            n_params = sum(p.numel() for p in net.parameters())
            print(bundle.name, config.name, name, type(net).__name__, n_params, flush=True)
"""


@pytest.fixture(scope="module")
def fresh_data(phantom_dir, acdc_phantom_dir, tmp_path_factory) -> dict[str, Path]:
    from pathosynth.data.splits import write_split

    root = tmp_path_factory.mktemp("fresh_data")
    npz = toy_medmnist_npz(root / "npz").parent
    write_split(phantom_dir, root / "split", test_fraction=0.5)
    return {"emidec": phantom_dir, "acdc": acdc_phantom_dir, "npz": npz, "split": root / "split"}


@pytest.mark.slow
def test_every_bundle_runs_from_a_plain_install_and_every_archive_from_its_own_requirements(fresh_data, tmp_path):
    """The install contract, end to end (one test so that parallel workers never build the same venvs twice)."""
    venvs, timings, failures = FreshVenvs(tmp_path / "venvs"), [], {}
    python = venvs.get((ROOT / "requirements.txt").read_text(), with_project=True)

    # only the declared packages: no test tool, and the project is the copy of this checkout
    listed = {
        p["name"].lower()
        for p in json.loads(
            subprocess.run(
                [_uv(), "pip", "list", "--python", str(python), "--format", "json"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
    }
    assert {"pathosynth", "einops", "monai", "torch"} <= listed and not listed & {
        "pytest",
        "nnunetv2",
        "mlflow",
        "itk",
        "uv",
    }
    installed = Path(
        subprocess.run(
            [str(python), "-c", "import pathosynth, os; print(os.path.dirname(pathosynth.__file__))"],
            capture_output=True,
            text=True,
            check=True,
            env=_env(python, tmp_path),
        ).stdout.strip()
    )
    stale = [
        str(p.relative_to(ROOT / "common" / "pathosynth"))
        for p in (ROOT / "common" / "pathosynth").rglob("*.py")
        if p.read_bytes() != (installed / p.relative_to(ROOT / "common" / "pathosynth")).read_bytes()
    ]
    assert installed.is_relative_to(python.parent.parent) and not stale, (
        f"installed pathosynth differs from the checkout: {stale}"
    )

    start = time.perf_counter()
    proc = subprocess.run(
        [str(python), "-c", BUILD_NETWORKS, str(BUNDLES), str(fresh_data["emidec"]), str(fresh_data["acdc"])],
        cwd=tmp_path,
        env=_env(python, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    timings.append(("paper-scale networks", time.perf_counter() - start))
    if proc.returncode:
        failures["paper-scale networks"] = proc.stderr[-3000:]
    built = {tuple(line.split()[:3]) for line in proc.stdout.splitlines()}
    assert {b for b, _, _ in built} == set(ALL_BUNDLES) or failures, proc.stdout

    plans = _plans(fresh_data, tmp_path)
    for bundle, plan in plans.items():
        configs = BUNDLES / bundle / "configs"
        for config, overrides in plan["train"]:
            out = plan["ckpt"] if plan["workflow"] == "run" else plan["ckpt"] / "logs"
            ckpt = {} if plan["workflow"] == "run" else {"ckpt_dir": plan["ckpt"]}
            error = _bundle_run(
                python,
                plan["workflow"],
                config_files(configs, [config, "smoke.json"]),
                {**overrides, **ckpt, "output_dir": out},
                tmp_path,
                timings,
            )
            if error:
                failures[f"{bundle} {config}"] = error
                break
        else:
            out = tmp_path / "synthetic" / bundle
            error = _bundle_run(
                python,
                "inference",
                config_files(configs, ["inference.json", "smoke.json"]),
                {**plan["infer"], "ckpt_dir": plan["ckpt"], "output_dir": out},
                tmp_path,
                timings,
            )
            error = error or _check_outputs(out, plan["writes"])
            if error:
                failures[f"{bundle} inference"] = error
            else:
                plan["trained"] = True

    # every bundle packed with its smoke weights: inference from the unpacked folder, in a venv of its requirements
    for bundle, plan in plans.items():
        if not plan.get("trained"):
            continue
        archive = pack_bundle(
            BUNDLES / bundle,
            tmp_path / "dist",
            weights=[plan["ckpt"] / w for w in plan["weights"]],
            overlays=["smoke.json"],
        )
        with zipfile.ZipFile(archive) as handle:
            handle.extractall(tmp_path / "unpacked")
        unpacked = tmp_path / "unpacked" / bundle
        archive_python = venvs.get((unpacked / "requirements.txt").read_text())
        out = tmp_path / "archive_synthetic" / bundle
        error = _bundle_run(
            archive_python,
            "inference",
            [unpacked / "configs" / "inference.json"],
            {**plan["infer"], "output_dir": out},
            unpacked,
            timings,
        )
        error = error or _check_outputs(out, plan["writes"])
        if error:
            failures[f"{bundle} archive inference"] = error
        elif bundle == "lesion_inpainting":  # the archive's own sampler keeps everything outside the lesions
            _check_background_kept(out)

    report = "\n".join(
        f"{seconds:6.1f} s  {what}"
        for what, seconds in [(f"venv {key}", s) for key, s in venvs.seconds.items()] + timings
    )
    print(f"fresh-install timings:\n{report}")
    assert not failures, "\n\n".join(f"== {what}\n{error}" for what, error in failures.items()) + f"\n\n{report}"


# `--tracking mlflow`: the training loss as the local MLflow store holds it, read with the venv's own mlflow
READ_MLFLOW_LOSS = """
import json, sys
import mlflow
client = mlflow.tracking.MlflowClient(tracking_uri=sys.argv[1])
runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
print(json.dumps([run.data.metrics for run in runs]))
"""


@pytest.mark.slow
def test_tracking_mlflow_needs_only_mlflow_on_top_of_a_plain_install(phantom_dir, tmp_path):
    """`--tracking mlflow` (MONAI's experiment management) records the training loss in a local MLflow store after
    `pip install mlflow` on top of requirements.txt. mlflow is in no other environment of the suite: MONAI's handlers
    import it on every start wherever it is installed (about a second per `monai.bundle` run)."""
    python = FreshVenvs(tmp_path / "venvs").get((ROOT / "requirements.txt").read_text() + "mlflow>=2.10\n", True)
    configs = config_files(BUNDLES / "lesion_inpainting" / "configs", ["train.json", "smoke.json"])
    logs, timings = tmp_path / "logs", []
    overrides = {"dataset_dir": phantom_dir, "max_cases": 2, "ckpt_dir": tmp_path / "ckpt", "output_dir": logs}
    error = _bundle_run(python, "training", configs, {**overrides, "tracking": "mlflow"}, tmp_path, timings)
    assert error is None, error
    proc = subprocess.run(
        [str(python), "-c", READ_MLFLOW_LOSS, f"sqlite:///{logs / 'mlruns.db'}"],
        cwd=tmp_path,
        env=_env(python, tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics and "train_loss" in metrics[0]


def _check_background_kept(out: Path) -> None:
    from pathosynth.io.nifti import read_nifti

    for entry in json.loads((out / "datalist.json").read_text())["training"]:
        synthetic, label = read_nifti(out / entry["image"])[0], read_nifti(out / entry["label"])[0]
        source = read_nifti(entry["source_image"])[0]
        outside = label < 3  # background, LV, myocardium: not a lesion
        assert np.array_equal(synthetic[outside], source[outside])
        assert (synthetic[~outside] != source[~outside]).any()
