"""Checks every bundle keeps (docs/ARCHITECTURE.md, Contracts): complete metadata, configs that parse and
instantiate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from conftest import BUNDLES
from pathosynth.bundle_configs import base_configs, config_files

BUNDLE_DIRS = sorted(p for p in BUNDLES.iterdir() if (p / "configs").is_dir())
REQUIRED_META = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "name",
    "task",
    "description",
    "authors",
    "references",
    "network_data_format",
    "intended_use",
)


def _json(path: Path):
    return json.loads(path.read_text())


def config_combinations(bundle: Path) -> list[list[str]]:
    """Every base config (train.json, inference.json, pipeline.json, ...: ``base_configs``) with each overlay meant
    for it (``<base>_*.json``, ``multi_gpu_<base>*.json``), always followed by smoke.json (common.json, listed first
    in every run, is added where the combination is read)."""
    configs = bundle / "configs"
    combos = []
    for base in base_configs(configs):
        stem = base.stem
        combos.append([base.name, "smoke.json"])
        for overlay in sorted(configs.glob(f"{stem}_*.json")) + sorted(configs.glob(f"multi_gpu_{stem}*.json")):
            combos.append([base.name, overlay.name, "smoke.json"])
    return combos


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_metadata_is_complete(bundle):
    meta = _json(bundle / "configs" / "metadata.json")
    missing = [k for k in REQUIRED_META if k not in meta]
    assert not missing, f"{bundle.name}/configs/metadata.json lacks {missing}"
    assert meta["version"] in meta["changelog"], "the current version needs a changelog entry"
    fmt = meta["network_data_format"]
    assert fmt.get("inputs") and fmt.get("outputs")
    for tensor in list(fmt["inputs"].values()) + list(fmt["outputs"].values()):
        assert {"type", "num_channels", "spatial_shape", "dtype"} <= set(tensor)
    import monai
    import torch

    assert meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_bundle_files_exist(bundle):
    for name in (
        "configs/metadata.json",
        "configs/inference.json",
        "configs/smoke.json",
        "configs/logging.conf",
        "docs/README.md",
        "docs/data_license.txt",
        "LICENSE",
    ):
        assert (bundle / name).exists(), f"{bundle.name} lacks {name}"
    assert list((bundle / "configs").glob("train*.json")), f"{bundle.name} has no train*.json"
    assert not list(bundle.rglob("*.py")), "bundles hold configs and docs; code lives in common/pathosynth"


WORKFLOW_IDS = {"imports", "initialize", "run", "finalize", "training", "inference", "evaluating"}
# handlers every rank of a multi-GPU training runs: they keep the model, optimiser or schedule in step (the others
# log, report or show progress, and run on rank 0 only)
EVERY_RANK_HANDLERS = {"ResumableCheckpoint", "EMAHandler", "LrScheduleHandler"}
COMBOS = [(bundle, combo) for bundle in BUNDLE_DIRS for combo in config_combinations(bundle)]


@pytest.fixture()
def process_group():
    """A one-process gloo group, so multi_gpu_* overlays (DDP, distributed samplers) can instantiate."""
    import torch.distributed as dist

    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("bundle,combo", COMBOS, ids=lambda c: c.name if isinstance(c, Path) else "+".join(c))
def test_every_config_instantiates(bundle, combo, phantom_dir, acdc_phantom_dir, tmp_path, process_group, monkeypatch):
    """Every (base + overlay + smoke) combination builds all its components on the phantom data.

    Weight loading is replaced by "keep the initial weights" (checkpoints come from training runs, which
    the bundle smoke tests cover); everything else — datasets, networks, samplers, runners — is built.
    """
    import pathosynth.engines.checkpoint

    def keep_initial_weights(network, path, expect=None):
        return network.eval()

    monkeypatch.setattr(pathosynth.engines.checkpoint, "load_weights", keep_initial_weights)
    parser = ConfigParser()
    parser.read_config([str(f) for f in config_files(bundle / "configs", combo)])
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    acdc = "acdc" in str(parser.config.get("dataset_dir")) or "RV" in (parser.config.get("labels") or {})
    data = acdc_phantom_dir if acdc else phantom_dir  # the bundle's own dataset kind
    parser.update({"dataset_dir": str(data), "ckpt_dir": str(tmp_path / "ckpt"), "output_dir": str(tmp_path / "out")})
    placeholders = [
        k
        for k in ("train_datalists", "test_datalist", "datalist", "real_datalist", "synthetic_datalists")
        if "/workspace/" in str(parser.config.get(k))
    ]
    if placeholders:  # configs that take split datalists instead of a dataset folder
        from pathosynth.data.splits import write_split

        split = write_split(data, tmp_path / "split", test_fraction=0.5)
        values = {
            "train_datalists": [split["train"]],
            "test_datalist": split["test"],
            "datalist": split["test"],
            "real_datalist": split["train"],
            "synthetic_datalists": [],
        }  # no synthetic set: the baseline path
        parser.update({k: values[k] for k in placeholders})
    parser.parse()
    if "texture_request" in parser.config and parser.config.get("texture") == "clusters":
        _write_training_clusters(parser)
    for key in parser.config:
        if key not in WORKFLOW_IDS:
            parser.get_parsed_content(key)
    if any(c.startswith("multi_gpu_") for c in combo) and "train" in parser.config:
        _check_rank0_only_handlers(parser, monkeypatch)


def _check_rank0_only_handlers(parser: ConfigParser, monkeypatch) -> None:
    """On ranks other than 0 a multi_gpu overlay disables (MONAI's ``_disabled_``) exactly the handlers that are not
    in EVERY_RANK_HANDLERS; an index that shifts when a base config's handler list changes fails here."""
    import pathosynth.distributed

    monkeypatch.setattr(pathosynth.distributed, "is_not_rank0", lambda: True)
    for index, handler in enumerate(parser["train#handlers"]):
        name = handler["_target_"].rsplit(".", 1)[-1]
        flag = f"train#handlers#{index}#_disabled_"
        disabled = "_disabled_" in handler and parser.get_parsed_content(flag, lazy=False)
        assert disabled != (name in EVERY_RANK_HANDLERS), f"{name} (train#handlers#{index}) on a rank other than 0"


def _write_training_clusters(parser: ConfigParser) -> None:
    """The histogram texture clusters file is a training artifact like the weights: written here as training would
    (uniform centres, the config's channels, bins and range), beside the checkpoint the config names."""
    import numpy as np

    from pathosynth.data.histograms import clusters_path, write_histogram_clusters

    channels, bins = parser.get_parsed_content("texture_channels"), parser.get_parsed_content("histogram_bins")
    centres = np.full((2, len(channels), bins), 1.0 / bins)
    target = clusters_path(parser.get_parsed_content("checkpoint"))
    target.parent.mkdir(parents=True, exist_ok=True)
    write_histogram_clusters(target, centres, channels, bins, parser.get_parsed_content("histogram_range"))


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_every_json_is_valid(bundle):
    for path in (bundle / "configs").glob("*.json"):
        _json(path)


def test_train_and_inference_networks_agree():
    """A checkpoint from train.json must load wherever the bundle uses it: the same network_def in every base config
    (as merged after common.json)."""
    for bundle in BUNDLE_DIRS:
        configs = bundle / "configs"
        if not (configs / "train.json").exists():
            continue
        trained = ConfigParser.load_config_files(config_files(configs, ["train.json"]))["network_def"]
        for base in base_configs(configs):
            content = ConfigParser.load_config_files(config_files(configs, [base.name]))
            if "network_def" in content:
                assert content["network_def"] == trained, (
                    f"{bundle.name}/{base.name} network_def differs from train.json"
                )


def test_config_lists_put_the_shared_base_first(tmp_path):
    """Every run merges configs/common.json first (once), then the names in order (an absolute overlay path stays as
    it is); a bundle without common.json keeps its list. Bases are what a workflow starts from: not a multi_gpu
    overlay (even one that references only common ids), not an overlay reading another base's ids."""
    configs = tmp_path / "configs"
    configs.mkdir()
    overlay = tmp_path / "elsewhere.json"
    files = {
        "common.json": {"seed": 0},
        "train.json": {"initialize": ["$@seed"], "run": ["$@net"], "net": 1},
        "train_classifier.json": {"initialize": [], "run": ["$@classifiers"], "classifiers": []},
        "evaluate.json": {"initialize": [], "run": ["$@classifiers"]},
        "multi_gpu_inference.json": {"initialize": ["$@seed"], "run": []},
        "smoke.json": {"seed": 1},
        "metadata.json": {"version": "0.1.0"},
    }
    for name, content in files.items():
        (configs / name).write_text(json.dumps(content))
    assert config_files(configs, ["train.json", "smoke.json", overlay]) == [
        configs / "common.json",
        configs / "train.json",
        configs / "smoke.json",
        overlay,
    ]
    assert config_files(configs, ["common.json", "train.json"]) == [configs / "common.json", configs / "train.json"]
    assert [p.name for p in base_configs(configs)] == ["train.json", "train_classifier.json"]
    (configs / "common.json").unlink()
    assert config_files(configs, ["train.json"]) == [configs / "train.json"]
