"""The class-conditional DDPM's Tab. 2 study (train on synthetic / real / real + synthetic, test on real) at CI size.

Claims checked: every step runs the bundle with the scale's overlays and writes under the study folder; the real-only
classifier does not wait for the diffusion model; each training-data row is scored on the same real held-out split;
the Markdown is the rendering of the results JSON alone; the dataset is only read; a rerun repeats no step.
"""

from __future__ import annotations

import json

import pytest

from conftest import toy_medmnist_npz, tree_digest
from pathosynth.data.errors import DatasetError
from pathosynth.studies.class_conditional_study import TRAINING_DATA, ClassConditionalStudy
from pathosynth.studies.reports import render_report


def test_every_step_runs_the_cpu_overlay_and_only_the_synthetic_rows_wait_for_synthesis(tmp_path):
    study = ClassConditionalStudy(tmp_path / "data", tmp_path / "out", "cpu")
    plan = {job.name: job for job in study.jobs_plan()}
    assert list(plan) == [
        "train_ddpm",
        "synthesise",
        *(f"{step}_{data}" for data in TRAINING_DATA for step in ("classify", "evaluate")),
    ]
    assert all(job.configs[-1] == "cpu.json" and job.bundle == "class_conditional_ddpm" for job in plan.values())
    assert plan["classify_real"].needs == [] and plan["classify_synthetic"].needs == ["synthesise"]
    assert plan["classify_real+synthetic"].needs == ["synthesise"] and plan["synthesise"].needs == ["train_ddpm"]
    assert all(plan[f"evaluate_{d}"].needs == [f"classify_{d}"] for d in TRAINING_DATA)
    written = [v for job in plan.values() for k, v in job.settings.items() if k.endswith("_dir") and k != "dataset_dir"]
    assert written and all(str(study.out) in v for v in written)
    assert {job.settings["dataset_dir"] for job in plan.values()} == {str(study.dataset_dir)}


def test_an_unknown_training_data_name_is_refused_naming_the_scale(tmp_path):
    scale = tmp_path / "scale.json"
    scale.write_text(json.dumps({"training_data": ["real", "synthetic only"]}))
    with pytest.raises(ValueError, match=r"scale\.json.*unknown training_data \['synthetic only'\]"):
        ClassConditionalStudy(tmp_path / "data", tmp_path / "out", str(scale))


def test_a_folder_without_an_npz_is_refused_naming_it_before_any_step(tmp_path):
    (tmp_path / "data").mkdir()
    study = ClassConditionalStudy(tmp_path / "data", tmp_path / "out", "ci")
    with pytest.raises(DatasetError, match=r"data: expected a MedMNIST \.npz file"):
        study.run()
    assert not study.out.exists()


@pytest.mark.slow
def test_class_conditional_study_end_to_end_at_ci_scale(tmp_path):
    data = toy_medmnist_npz(tmp_path / "data").parent
    before = tree_digest(data)
    study = ClassConditionalStudy(data, tmp_path / "study", "ci")
    report = study.run()

    results_json = study.out / "class_conditional_study.json"
    results = json.loads(results_json.read_text())
    assert report.read_text() == render_report(results_json)  # the Markdown is its JSON's rendering
    reports = results["classification"]["reports"]
    assert [r["training_data"] for r in reports] == list(TRAINING_DATA)
    synthetic = sum(results["generative"]["synthetic_per_class"].values())
    assert [r["training"]["num_images"] for r in reports] == [synthetic, 16, 16 + synthetic]
    assert {(r["test_split"], r["num_test_images"]) for r in reports} == {("val", 8)}  # the same real test images
    assert results["provenance"]["code"] and results["scale_settings"]["name"] == "CI"
    assert set(results["step_seconds"]) == {job.name for job in study.jobs_plan()}
    assert (study.out / "class_conditional_study.png").is_file()
    assert tree_digest(data) == before  # the dataset is only read

    done = {p.name: p.stat().st_mtime_ns for p in (study.out / "jobs").glob("*.done")}
    ClassConditionalStudy(data, tmp_path / "study", "ci").run()
    assert {p.name: p.stat().st_mtime_ns for p in (study.out / "jobs").glob("*.done")} == done  # nothing re-ran
