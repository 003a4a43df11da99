"""lesion_inpainting end to end through `python -m monai.bundle run`, as a user runs it (smoke scale)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from conftest import run_bundle

BUNDLE = "lesion_inpainting"


def _train(dataset, ckpt, logs, overlays=(), **overrides):
    return run_bundle(
        "training",
        BUNDLE,
        ["train.json", *overlays, "smoke.json"],
        {"dataset_dir": dataset, "ckpt_dir": ckpt, "output_dir": logs, **overrides},
    )


def _infer(dataset, ckpt, out, overlays=(), **overrides):
    return run_bundle(
        "inference",
        BUNDLE,
        ["inference.json", *overlays, "smoke.json"],
        {"dataset_dir": dataset, "ckpt_dir": ckpt, "output_dir": out, **overrides},
    )


def _arrays(path):
    return np.asanyarray(nib.load(path).dataobj)


def check_synthetic_dataset(out: Path, source_dir: Path, lesion_values=(3, 4), paste="lesion"):
    """The output contract: datalist entries, provenance, preview; label unchanged; background bit-exact."""
    datalist = json.loads((out / "datalist.json").read_text())
    entries = datalist["training"]
    assert entries, "datalist.json lists no case"
    assert (out / "preview.png").stat().st_size > 1000
    for entry in entries:
        for key in ("image", "label", "source_image"):
            assert entry[key], key
        source = Path(entry["source_image"])
        assert source.is_relative_to(source_dir.resolve())
        record = json.loads((out / entry["provenance"]).read_text())
        assert {"bundle", "checkpoints", "seed", "synthesis"} <= set(record)
        assert record["bundle"]["version"] and all(len(h) == 64 for h in record["checkpoints"].values())
        if record["checkpoints"]:  # diffusion models report their network calls (hand-crafted textures have none)
            assert record["synthesis"]["network_evaluations"] > 0
        original = _arrays(source)
        synthetic = _arrays(out / entry["image"])
        label = _arrays(out / entry["label"])
        source_label = _arrays(record["source_label"])
        assert synthetic.dtype == original.dtype and synthetic.shape == original.shape
        assert np.array_equal(label, source_label), "the label map is unchanged"
        lesion = np.isin(source_label, lesion_values)
        if paste == "lesion":
            assert np.array_equal(synthetic[~lesion], original[~lesion]), "background must be bit-identical"
        assert not np.array_equal(synthetic[lesion], original[lesion]), "lesion voxels are synthesised"
        assert nib.load(out / entry["image"]).affine.tolist() == nib.load(source).affine.tolist()
    return entries


@pytest.fixture(scope="module")
def trained_j(phantom_dir, tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("ckpt")
    _train(phantom_dir, ckpt, ckpt / "logs")
    return ckpt


def test_training_writes_checkpoints_and_logs(trained_j):
    import torch

    assert (trained_j / "lefusion_j.pt").exists() and (trained_j / "lefusion_j_latest.pt").exists()
    weights = torch.load(trained_j / "lefusion_j.pt", weights_only=True)
    assert weights["metadata"]["texture_channels"] == [["MI"], ["PMO"]] and weights["metadata"]["iteration"] == 4
    assert list((trained_j / "logs" / "tensorboard" / "lefusion_j").glob("events.out.tfevents.*"))


def test_inference_lefusion_j_keeps_the_contract(phantom_dir, trained_j, tmp_path):
    out = tmp_path / "out"
    _infer(phantom_dir, trained_j, out)
    entries = check_synthetic_dataset(out, phantom_dir)
    assert sorted(e["source_case_id"] for e in entries) == ["Case_P001", "Case_P002", "Case_P003", "Case_P004"]


def test_rerun_skips_finished_cases_and_completes_missing_ones(phantom_dir, trained_j, tmp_path):
    out = tmp_path / "out"
    _infer(phantom_dir, trained_j, out, max_cases=2)
    first = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    proc = _infer(phantom_dir, trained_j, out)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    assert all(after[name] == mtime for name, mtime in first.items()), "finished cases are not rewritten"
    assert len(after) == 4
    assert "2 already finished" in proc.stdout + proc.stderr


def test_same_seed_same_case(phantom_dir, trained_j, tmp_path):
    """Reproducible: the same seed gives bit-identical synthetic images."""
    _infer(phantom_dir, trained_j, tmp_path / "a", max_cases=1)
    _infer(phantom_dir, trained_j, tmp_path / "b", max_cases=1)
    name = "Case_P001_syn00.nii.gz"
    assert np.array_equal(_arrays(tmp_path / "a" / "images" / name), _arrays(tmp_path / "b" / "images" / name))


def test_inference_refuses_a_checkpoint_of_other_lesion_classes(phantom_dir, trained_j, tmp_path):
    with pytest.raises(AssertionError, match="texture_channels"):
        _infer(phantom_dir, trained_j, tmp_path / "out", overlays=["inference_repaint.json"], variant="lefusion_j")


def test_bad_input_stops_before_training(phantom_dir, tmp_path):
    """A broken case gives one clear error naming it, and no checkpoint is written."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data)
    (data / "Case_P003" / "Contours" / "Case_P003.nii.gz").unlink()
    with pytest.raises(AssertionError, match="Case_P003: label file .* does not exist"):
        _train(data, tmp_path / "ckpt", tmp_path / "logs")
    assert not (tmp_path / "ckpt").exists() or not list((tmp_path / "ckpt").iterdir())


@pytest.mark.parametrize(
    "name,train_overlays,infer_overlays,paste",
    [
        ("repaint", [["train_repaint.json"]], ["inference_repaint.json"], "lesion"),
        ("cond_diffusion", [["train_cond_diffusion.json"]], ["inference_cond_diffusion.json"], "crop"),
        ("lefusion_s", [["train_lefusion_s.json"], ["train_lefusion_s.json"]], ["inference_lefusion_s.json"], "lesion"),
        ("handcrafted", [], ["inference_handcrafted.json"], "lesion"),
    ],
)
def test_baselines_and_lefusion_s_run(name, train_overlays, infer_overlays, paste, phantom_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    for index, overlays in enumerate(train_overlays):
        extra = {"lesion_class": ["MI", "PMO"][index]} if name == "lefusion_s" else {}
        _train(phantom_dir, ckpt, tmp_path / "logs", overlays=overlays, max_cases=2, **extra)
    out = tmp_path / "out"
    _infer(phantom_dir, ckpt, out, overlays=infer_overlays, max_cases=2)
    check_synthetic_dataset(out, phantom_dir, paste=paste)
