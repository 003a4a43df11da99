"""A dataset swap needs only the keys that describe the data (issue 20).

Every label-driven bundle is trained and run on a phantom whose classes have other names and values than any default
(EMIDEC's cavity, myocardium, MI, PMO as "cavity" 5, "muscle" 7, "scar" 9, "mvo" 11, in a decathlon datalist that
declares its own ``labels``), overriding only the data path and ``labels`` (and, for methods that synthesise lesions,
the lesion keys: ``lesion_classes``, the anatomy that holds them). Channel counts, texture channels, classes previewed
or scored and sampling ratios must follow from those keys: a key that still repeated a default label name would fail
the run ("classes ['RV', ...] are not declared in labels").

The bundles run in this process (``monai.bundle.run``, smoke overlays, two cases) to keep the suite fast; that the
command-line check of ``monai.bundle run`` accepts exactly these overrides is tested on the same table without
running anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from conftest import bundle_configs
from pathosynth.data.cases import load_cases
from pathosynth.data.labels import EMIDEC_LABELS, foreground_classes, lesion_classes_of
from pathosynth.options import override_problems

LABELS = {"background": 0, "cavity": 5, "muscle": 7, "scar": 9, "mvo": 11}
# segmentation networks give one output channel per class and the segmentation bundles read the channel index as the
# label value, so they need consecutive values (nnU-Net's and MSD's convention): the same classes, values permuted
CONSECUTIVE = {"background": 0, "cavity": 3, "muscle": 4, "scar": 2, "mvo": 1}
LESIONS = {"lesion_classes": ["scar", "mvo"]}
SCALE = {"max_cases": 2, "num_samples_per_case": 1}  # test size, not data description

# bundle -> [(workflow, config files before smoke.json, data paths, the other keys a user sets)]. A data path names one
# of the datalists: "all" cases, the "lesions" ones (a run that synthesises into real lesions refuses a list holding a
# case without one), or all cases under the "consecutive" map.
ALL, LESION_CASES, CONSECUTIVE_CASES = {"datalist": "all"}, {"datalist": "lesions"}, {"datalist": "consecutive"}
MASK_KEYS = {**LESIONS, "anatomy_class": "muscle"}
SEGMENTATION_KEYS = {"labels": CONSECUTIVE}
RUNS = {
    "lesion_inpainting": [
        ("training", ["train.json"], LESION_CASES, LESIONS),
        ("inference", ["inference.json"], LESION_CASES, LESIONS),
    ],
    "lesion_mask_diffusion": [
        ("training", ["train.json"], LESION_CASES, MASK_KEYS),
        ("inference", ["inference.json"], ALL, MASK_KEYS),
    ],
    "label_guided_latent_diffusion": [
        ("training", ["train_autoencoder.json"], ALL, {}),
        ("training", ["train_diffusion.json"], ALL, {}),
        ("inference", ["inference.json"], ALL, {}),
    ],
    "text_edge_controlnet": [
        ("training", ["train_diffusion.json"], ALL, {}),
        ("training", ["train_controlnet.json"], ALL, {}),
        ("inference", ["inference.json"], ALL, {}),
        (
            "run",
            ["train_segmentation.json"],
            {"real_datalist": "consecutive", "synthetic_datalists": [], "test_datalist": "consecutive"},
            SEGMENTATION_KEYS,
        ),
    ],
    "reference_guided_ddpm": [
        ("training", ["train.json"], ALL, LESIONS),
        (
            "inference",
            ["inference.json"],
            {**ALL, "patch_datalist": "lesions"},
            {**LESIONS, "placement_classes": ["muscle"]},
        ),
    ],
    "downstream_segmentation": [
        (
            "run",
            ["train.json"],
            {"train_datalists": ["consecutive"], "test_datalist": "consecutive"},
            SEGMENTATION_KEYS,
        ),
        ("inference", ["inference.json"], CONSECUTIVE_CASES, SEGMENTATION_KEYS),
    ],
}


def _relabel(phantom_dir: Path, root: Path, labels: dict[str, int]) -> list[dict]:
    """Datalist entries of the phantom's cases with label maps rewritten to ``labels`` (images shared)."""
    folder = root / f"labels_{'_'.join(str(v) for v in labels.values())}"
    folder.mkdir()
    entries = []
    for case in load_cases(str(phantom_dir), labels=EMIDEC_LABELS, lesion_classes=["MI", "PMO"]):
        source = nib.load(case["label"])
        label = np.asarray(source.dataobj)
        relabelled = np.zeros_like(label)
        for old, new in zip(EMIDEC_LABELS.values(), labels.values()):  # the maps list the classes in the same order
            relabelled[label == old] = new
        path = folder / f"{case['case_id']}.nii.gz"
        nib.save(nib.Nifti1Image(relabelled, source.affine, source.header), path)
        entries.append({"image": case["image"], "label": str(path.relative_to(root)), "group": case["group"]})
    return entries


@pytest.fixture(scope="module")
def swapped(phantom_dir, tmp_path_factory) -> dict[str, Path]:
    """The EMIDEC-like phantom relabelled in decathlon datalists that declare their ``labels`` (MSD form): "all" cases
    (normal first), those with "lesions", and all cases under the consecutive map ("consecutive")."""
    root = tmp_path_factory.mktemp("swapped")
    entries, consecutive = _relabel(phantom_dir, root, LABELS), _relabel(phantom_dir, root, CONSECUTIVE)
    lists = {
        "all": (entries, LABELS),
        "lesions": ([e for e in entries if e["group"] == "pathological"], LABELS),
        "consecutive": (consecutive, CONSECUTIVE),
    }
    for name, (chosen, labels) in lists.items():
        (root / f"{name}.json").write_text(
            json.dumps(
                {"name": "relabelled phantom", "training": chosen, "labels": {str(v): k for k, v in labels.items()}}
            )
        )
    return {name: root / f"{name}.json" for name in lists}


def _data(paths: dict, datalists: dict[str, Path]) -> dict:
    """The data-path overrides of one run, each list named in ``paths`` replaced by its file."""
    return {
        key: [str(datalists[v]) for v in value] if isinstance(value, list) else str(datalists[value])
        for key, value in paths.items()
    }


def _configs(bundle: str, files) -> list[str]:
    return bundle_configs(bundle, *files, "smoke.json")


def _run_bundle(bundle: str, datalists: dict[str, Path], root: Path, steps=None) -> list[Path]:
    """Train and run ``bundle`` on the swapped data in this process (one checkpoint folder); the output folder of each
    step."""
    from monai.bundle import run

    outputs = []
    for index, (workflow, files, paths, keys) in enumerate(steps or RUNS[bundle]):
        configs = _configs(bundle, files)
        scale = {k: v for k, v in SCALE.items() if k in ConfigParser.load_config_files(configs)}
        outputs.append(root / f"{index}_{workflow}")
        overrides = {
            "labels": LABELS,
            "ckpt_dir": str(root / "ckpt"),
            "output_dir": str(outputs[-1]),
            **_data(paths, datalists),
            **keys,
            **scale,
        }
        run(workflow, config_file=configs, **overrides)
    return outputs


def _values(path) -> set[int]:
    return {int(v) for v in np.unique(np.asarray(nib.load(path).dataobj))}


def _synthetic(out: Path) -> list[dict]:
    """The written dataset keeps the data's label semantics: its datalist declares them, its labels use no other
    value."""
    content = json.loads((out / "datalist.json").read_text())
    assert {int(v): n for v, n in content["labels"].items()} == {v: n for n, v in LABELS.items()}
    assert content["training"] and (out / "preview.png").is_file()
    for entry in content["training"]:
        assert _values(out / entry["label"]) <= set(LABELS.values()), entry["label"]
    return content["training"]


def test_derived_classes_follow_the_label_map():
    assert foreground_classes(LABELS) == ["cavity", "muscle", "scar", "mvo"]
    msd_form = {str(v): n for n, v in LABELS.items()}
    assert foreground_classes(msd_form) == ["cavity", "muscle", "scar", "mvo"]
    assert lesion_classes_of(LABELS) == ["scar", "mvo"] and lesion_classes_of(EMIDEC_LABELS) == ["MI", "PMO"]
    assert lesion_classes_of({"background": 0, "RV": 1, "myocardium": 2, "LV": 3}) == []


@pytest.mark.parametrize("bundle,index", [(b, i) for b, steps in RUNS.items() for i in range(len(steps))])
def test_the_command_line_check_accepts_a_swap(bundle, index, tmp_path):
    """``monai.bundle run`` refuses unknown keys and values of another form than the default; a label map with other
    names and values, and the lesion keys, are neither."""
    workflow, files, paths, keys = RUNS[bundle][index]
    configs = _configs(bundle, files)
    config = ConfigParser.load_config_files(configs)
    datalists = {name: tmp_path / f"{name}.json" for name in ("all", "lesions", "consecutive")}
    overrides = {
        "labels": LABELS,
        "ckpt_dir": str(tmp_path),
        "output_dir": str(tmp_path),
        **_data(paths, datalists),
        **keys,
    }
    assert override_problems(config, overrides, [Path(c).name for c in configs]) == []
    assert override_problems(config, {**overrides, "labels": ["cavity"]})  # the check is on: a list is no label map


@pytest.mark.slow
def test_lesion_inpainting_swaps_with_labels_and_lesion_classes(swapped, tmp_path):
    out = _run_bundle("lesion_inpainting", swapped, tmp_path)[-1]
    for entry in _synthetic(out):
        label = np.asarray(nib.load(out / entry["label"]).dataobj)
        source = json.loads((out / entry["provenance"]).read_text())["source_label"]
        assert set(np.unique(label)) & {LABELS["scar"], LABELS["mvo"]}, "a re-textured case holds a lesion"
        assert np.array_equal(label, np.asarray(nib.load(source).dataobj)), "texture synthesis keeps the label map"


@pytest.fixture(scope="module")
def mask_model(swapped, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mask_swap")
    _run_bundle("lesion_mask_diffusion", swapped, root, RUNS["lesion_mask_diffusion"][:1])
    return root


@pytest.mark.slow
def test_lesion_mask_diffusion_trains_with_labels_and_lesion_keys(mask_model):
    assert (mask_model / "ckpt" / "diffmask.pt").is_file()


@pytest.mark.slow
def test_lesion_mask_diffusion_synthesises_with_labels_and_lesion_keys(swapped, mask_model):
    (out,) = _run_bundle("lesion_mask_diffusion", swapped, mask_model, RUNS["lesion_mask_diffusion"][1:])
    assert any(_values(out / e["label"]) & {LABELS["scar"]} for e in _synthetic(out))


@pytest.mark.slow
def test_label_guided_latent_diffusion_swaps_with_labels_only(swapped, tmp_path):
    _synthetic(_run_bundle("label_guided_latent_diffusion", swapped, tmp_path)[-1])
    assert (tmp_path / "ckpt" / "autoencoder.pt").is_file()
    metadata = torch.load(tmp_path / "ckpt" / "label_diffusion.pt", weights_only=True)["metadata"]
    assert metadata["labels"] == LABELS and metadata["label_channels"] == list(LABELS)  # one SPADE channel per class


@pytest.mark.slow
def test_text_edge_controlnet_swaps_with_labels_only(swapped, tmp_path):
    *_, synthetic, segmented = _run_bundle("text_edge_controlnet", swapped, tmp_path)
    assert {"text_diffusion.pt", "controlnet.pt"} <= {p.name for p in (tmp_path / "ckpt").iterdir()}
    _synthetic(synthetic)
    assert json.loads((segmented / "scores.json").read_text())["classes"] == ["cavity", "muscle", "scar", "mvo"]


@pytest.mark.slow
def test_reference_guided_ddpm_swaps_with_labels_and_lesion_keys(swapped, tmp_path):
    out = _run_bundle("reference_guided_ddpm", swapped, tmp_path)[-1]
    assert any(_values(out / e["label"]) & {LABELS["scar"], LABELS["mvo"]} for e in _synthetic(out))


@pytest.mark.slow
def test_downstream_segmentation_scores_the_swapped_classes(swapped, tmp_path):
    scored, predicted = _run_bundle("downstream_segmentation", swapped, tmp_path)
    assert json.loads((scored / "scores.json").read_text())["classes"] == ["cavity", "muscle", "scar", "mvo"]
    predictions = sorted((predicted / "predictions").glob("*.nii.gz"))
    assert predictions and all(_values(p) <= set(CONSECUTIVE.values()) for p in predictions)


@pytest.mark.parametrize(
    "bundle,config", [("downstream_segmentation", "train.json"), ("text_edge_controlnet", "train_segmentation.json")]
)
def test_segmentation_refuses_label_values_that_are_not_channel_indices(bundle, config):
    """A segmenter reads a label value as its output channel: values 5..11 are refused by key before any training,
    instead of an index error inside the first batch."""
    parser = ConfigParser()
    parser.read_config(_configs(bundle, [config]))
    parser.update({"labels": LABELS})
    check = next(step for step in parser.config["initialize"] if "consecutive_label_values" in step)
    parser.config["initialize"] = [check]
    parser.parse()
    with pytest.raises(RuntimeError) as err:
        parser.get_parsed_content("initialize")
    assert "labels: segmentation needs 'background': 0 and the values 0..K-1" in str(err.value.__cause__)
    parser.update({"labels": CONSECUTIVE})
    parser.parse()
    assert parser.get_parsed_content("initialize") == [CONSECUTIVE]
