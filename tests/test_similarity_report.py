"""LeFusion Tab. 2 harness: methods ranked by lesion-region similarity to the real cases they re-texture."""

from __future__ import annotations

import json

import numpy as np

from pathosynth.data.cases import load_cases
from pathosynth.data.labels import EMIDEC_LABELS
from pathosynth.evaluation.similarity import similarity_report
from pathosynth.io.atomic import write_json
from pathosynth.io.nifti import read_nifti, write_nifti_like


def _method(phantom_dir, out, noise_sd):
    """A fake method: the real case with Gaussian noise of ``noise_sd`` added inside the lesions only."""
    entries = []
    for case in load_cases(phantom_dir, labels=EMIDEC_LABELS, lesion_classes=["MI", "PMO"], select="with_lesion"):
        image, image_ref = read_nifti(case["image"])
        label, label_ref = read_nifti(case["label"])
        lesion = np.isin(label, [3, 4])
        noisy = image.astype(float)
        noisy[lesion] += np.random.default_rng(0).normal(0, noise_sd, int(lesion.sum()))
        write_nifti_like(out / f"{case['case_id']}.nii.gz", noisy, image_ref)
        write_nifti_like(out / f"{case['case_id']}_label.nii.gz", label, label_ref)
        entries.append(
            {
                "image": f"{case['case_id']}.nii.gz",
                "label": f"{case['case_id']}_label.nii.gz",
                "source_image": case["image"],
            }
        )
    write_json(out / "datalist.json", {"training": entries})
    return out / "datalist.json"


def test_less_noise_ranks_higher_and_background_is_identical(phantom_dir, tmp_path):
    methods = {
        "faithful": _method(phantom_dir, tmp_path / "a", 2.0),
        "noisy": _method(phantom_dir, tmp_path / "b", 30.0),
    }
    summary = similarity_report(methods, tmp_path / "report")
    for region in ("MI", "PMO", "all lesions"):
        assert summary["faithful"][region]["psnr"]["mean"] > summary["noisy"][region]["psnr"]["mean"] + 10
        assert summary["faithful"][region]["ssim"]["mean"] > summary["noisy"][region]["ssim"]["mean"]
    assert summary["noisy"]["background"]["psnr"]["mean"] == float("inf")  # untouched background
    text = (tmp_path / "report" / "similarity.md").read_text()
    assert "| faithful | 4 |" in text and "| noisy | 4 |" in text
    assert json.loads((tmp_path / "report" / "similarity.json").read_text())["cases"]["noisy"][0]["source_image"]
    assert (tmp_path / "report" / "similarity.png").stat().st_size > 1000
