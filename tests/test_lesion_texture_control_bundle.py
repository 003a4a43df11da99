"""lesion_inpainting's texture control (histogram conditioning) and CT settings, end to end through
`python -m monai.bundle run` as a user runs them (smoke scale)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from test_lesion_inpainting_bundle import _arrays, _infer, _train, check_synthetic_dataset

from conftest import run_bundle

CLUSTERS = "lefusion_j_histogram_histogram_clusters.json"


@pytest.fixture(scope="module")
def trained_histogram(phantom_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt_histogram")
    _train(phantom_dir, ckpt, ckpt / "logs", overlays=["train_histogram.json"], texture_clusters=2)
    return ckpt


def _requests(out, entries):
    records = [json.loads((out / e["provenance"]).read_text()) for e in entries]
    return sorted(((r["sample_index"], r["case_id"], r["synthesis"]["texture_requests"][0]) for r in records))


@pytest.mark.slow
def test_training_writes_the_texture_clusters_beside_the_checkpoint(trained_histogram):
    clusters = json.loads((trained_histogram / CLUSTERS).read_text())
    assert clusters["channels"] == [["MI"], ["PMO"]] and clusters["bins"] == 16 and clusters["range"] == [-1, 1]
    assert np.shape(clusters["centres"]) == (2, 2, 16) and clusters["training_cases"] == 4
    saved = torch.load(trained_histogram / "lefusion_j_histogram.pt", weights_only=True)
    assert saved["metadata"]["histogram_bins"] == 16 and saved["metadata"]["histogram_dropout"] == 0.0
    assert "condition_embed.0.weight" in saved["network"] and "null_condition" not in saved["network"]


@pytest.mark.slow
def test_cluster_textures_give_one_variant_per_centre(phantom_dir, trained_histogram, tmp_path):
    out = tmp_path / "out"
    _infer(phantom_dir, trained_histogram, out, ["inference_histogram.json"], max_cases=1, num_samples_per_case=2)
    entries = check_synthetic_dataset(out, phantom_dir)
    (_, _, first), (_, _, second) = _requests(out, entries)
    assert (first["cluster"], second["cluster"]) == (0, 1) and first["clusters_file"].endswith(CLUSTERS)
    assert not np.allclose(first["histogram"], second["histogram"])
    images = [_arrays(out / e["image"]) for e in sorted(entries, key=lambda e: e["case_id"])]
    assert not np.array_equal(*images), "two requested textures give two images"


@pytest.mark.slow
def test_a_reference_case_texture_is_requested_and_recorded(phantom_dir, trained_histogram, tmp_path):
    out = tmp_path / "out"
    overrides = {"texture": "reference", "texture_reference": "Case_P002", "max_cases": 2}
    _infer(phantom_dir, trained_histogram, out, ["inference_histogram.json"], **overrides)
    entries = check_synthetic_dataset(out, phantom_dir)
    requests = _requests(out, entries)
    assert [r["reference_case"] for _, _, r in requests] == ["Case_P002", "Case_P002"]
    assert requests[0][2]["histogram"] == requests[1][2]["histogram"], "both cases ask for Case_P002's texture"


@pytest.mark.slow
def test_inference_without_the_clusters_file_stops_naming_it(phantom_dir, trained_histogram, tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(trained_histogram / "lefusion_j_histogram.pt", ckpt)
    out = tmp_path / "out"
    with pytest.raises(AssertionError, match=f"histogram clusters file {ckpt / CLUSTERS} does not exist"):
        _infer(phantom_dir, ckpt, out, ["inference_histogram.json"])
    assert not (out / "images").exists()


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    from pathosynth.data.phantom_ct import generate_ct_nodule_dataset

    out = tmp_path_factory.mktemp("ct_phantom")
    generate_ct_nodule_dataset(out, n_cases=3, seed=3, in_plane=48, num_slices=12)
    return out


@pytest.mark.slow
def test_ct_nodules_train_and_synthesise_with_a_hounsfield_window(ct_dir, tmp_path):
    """CT (HU, int16) with intensity "window": training and synthesis run from the datalist with its own labels; the
    background stays bit-exact and the nodule voxels change, within the window."""
    common = {"datalist": ct_dir / "dataset.json", "ckpt_dir": tmp_path / "ckpt", "roi_size": "[32, 32, 16]"}
    run_bundle(
        "training", "lesion_inpainting", ["train.json", "ct.json", "smoke.json"], {**common, "output_dir": tmp_path}
    )
    saved = torch.load(tmp_path / "ckpt" / "lefusion_j.pt", weights_only=True)["metadata"]
    assert saved["intensity"] == "window" and saved["window"] == [-1000, 400]
    assert saved["texture_channels"] == [["nodule"]]
    out = tmp_path / "out"
    run_bundle(
        "inference", "lesion_inpainting", ["inference.json", "ct.json", "smoke.json"], {**common, "output_dir": out}
    )
    entries = check_synthetic_dataset(out, ct_dir, lesion_values=(1,))
    for entry in entries:
        synthetic, label = _arrays(out / entry["image"]), _arrays(out / entry["label"])
        assert (
            synthetic.dtype == np.int16 and -1000 <= synthetic[label == 1].min() <= synthetic[label == 1].max() <= 400
        )


def test_histogram_overlays_compose_with_lefusion_s():
    """LeFusion-S + histograms: one class per model, so a 16-bin condition, and per-class files with their own name
    (beside, never over, the plain LeFusion-S weights)."""
    from monai.bundle import ConfigParser

    from conftest import bundle_configs

    train = ConfigParser()
    train.read_config(
        bundle_configs("lesion_inpainting", "train.json", "train_lefusion_s.json", "train_histogram.json")
    )
    train["lesion_class"] = "PMO"
    assert train.get_parsed_content("network_def").condition_dim == 16
    assert train.get_parsed_content("train#handlers#1#name") == "lefusion_s_PMO_histogram"
    assert train.get_parsed_content("train#clusters_writer#name") == "lefusion_s_PMO_histogram"
    infer = ConfigParser()
    infer.read_config(
        bundle_configs("lesion_inpainting", "inference.json", "inference_lefusion_s.json", "inference_histogram.json")
    )
    infer["ckpt_dir"] = "C"
    assert infer.get_parsed_content("class_checkpoints") == [
        "C/lefusion_s_MI_histogram.pt",
        "C/lefusion_s_PMO_histogram.pt",
    ]
    assert infer.get_parsed_content("network_def").condition_dim == 16
