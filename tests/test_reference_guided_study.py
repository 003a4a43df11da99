"""The reference-guided DDPM's Tab. 1 study (classifier on real vs real + increasing synthetic) at CI size.

Claims checked: the split is by case and no test case reaches the DDPM training, the patch bank, the synthesis or
a classifier's training slices; the synthetic subsets are nested prefixes of one list (more synthetic only adds
slices); every training mix is scored (AUC, F1, accuracy, precision, recall) on the same real test slices; the
dataset is only read; a rerun does nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import tree_digest
from pathosynth.data.phantom import generate_emidec_like_dataset
from pathosynth.studies.reference_guided_study import METRICS, ReferenceGuidedStudy
from pathosynth.studies.reports import render_report


def test_mixes_are_real_then_each_synthetic_fraction_and_all_steps_are_planned(tmp_path):
    study = ReferenceGuidedStudy(tmp_path / "data", tmp_path / "out", "cpu")
    assert study.mixes() == {"real": 0.0, "real+synthetic025": 0.25, "real+synthetic050": 0.5, "real+synthetic100": 1.0}
    plan = {job.name: job for job in study.jobs_plan()}
    assert plan["synthesise"].settings["datalist"].endswith("train_normal.json")
    assert plan["synthesise"].settings["patch_datalist"].endswith("train_pathological.json")
    assert plan["classify_real"].needs == [] and plan["classify_real+synthetic050"].needs == ["synthesise"]
    assert all(
        job.settings["dataset_dir"] == str(study.slices("real_test"))
        for n, job in plan.items()
        if n.startswith("evaluate_")
    )


def test_synthetic_subsets_are_nested_prefixes_of_the_synthetic_slices(tmp_path):
    study = ReferenceGuidedStudy(tmp_path / "data", tmp_path / "out", "cpu")
    entries = [
        {"image": f"images/s{i}.png", "label": 1, "case_id": f"s{i}", "source_case_id": f"c{i // 2}"} for i in range(8)
    ]
    study.slices("synthetic").parent.mkdir(parents=True)
    study.slices("synthetic").write_text(json.dumps({"training": entries}))
    study.write_synthetic_subsets()
    subsets = [json.loads(study.synthetic_subset(f).read_text())["training"] for f in study.fractions]
    assert [len(s) for s in subsets] == [2, 4, 8]  # 25 %, 50 %, 100 %
    assert all(s == entries[: len(s)] for s in subsets)  # a larger amount only adds slices


def test_fractions_outside_the_unit_interval_are_refused(tmp_path):
    scale = tmp_path / "bad.json"
    scale.write_text(json.dumps({"synthetic_fractions": [0.5, 1.5]}))
    with pytest.raises(ValueError, match="synthetic_fractions"):
        ReferenceGuidedStudy(tmp_path / "data", tmp_path / "out", str(scale))


@pytest.mark.slow
def test_reference_guided_study_end_to_end_at_ci_scale(tmp_path):
    data = tmp_path / "data"
    generate_emidec_like_dataset(data, n_normal=4, n_pathological=4, seed=5, in_plane=64)
    before = tree_digest(data)
    study = ReferenceGuidedStudy(data, tmp_path / "study", "ci")
    report = study.run()

    split = json.loads((study.out / "split" / "split.json").read_text())
    test_cases = set(split["test"])
    assert test_cases and not test_cases & set(split["train"])

    def dataset_cases(datalist):  # the dataset cases whose files a datalist reads (ROOT/Case_X/Images/Case_X.nii.gz)
        return {
            Path(e.get("source_image", e["image"])).parts[-3]
            for e in json.loads(Path(datalist).read_text())["training"]
        }

    jobs = {p.stem: json.loads(p.read_text()) for p in (study.out / "jobs").glob("*.json")}
    assert not dataset_cases(jobs["train_ddpm"]["datalist"]) & test_cases  # DDPM
    assert not dataset_cases(jobs["synthesise"]["datalist"]) & test_cases  # anatomy references
    assert not dataset_cases(jobs["synthesise"]["patch_datalist"]) & test_cases  # patch bank
    synthetic = study.out / "synthetic" / "datalist.json"
    assert dataset_cases(synthetic) and not dataset_cases(synthetic) & test_cases  # synthesis
    allowed = {f"train_{case}" for case in split["train"]} | {
        e["case_id"] for e in json.loads(synthetic.read_text())["training"]
    }
    for name, settings in jobs.items():
        if name.startswith(
            "classify_"
        ):  # classifier training slices come from training cases and their synthetic pairs only
            for source in settings["train_sources"]:
                assert {e["source_case_id"] for e in json.loads(Path(source).read_text())["training"]} <= allowed, name
    assert {e["source_case_id"] for e in json.loads(study.slices("real_test").read_text())["training"]} == {
        f"test_{c}" for c in test_cases
    }
    # real and synthetic slices show the DDPM's field of view (synthetic images are empty outside it)
    assert study.generator_fov() == [64, 64]  # smoke.json's, through the ci scale's overlay
    for name in ("real_train", "real_test", "synthetic"):
        assert json.loads(study.slices(name).read_text())["fov_size"] == [64, 64], name

    content = json.loads((study.out / "reference_guided_study.json").read_text())
    assert {row["mix"] for row in content["scores"]} == set(study.mixes())
    for row in content["scores"]:
        assert all(0 <= row[m] <= 1 for m in METRICS)
        assert len(row["folds"]) > 1  # per-fold scores (k-fold CV), their mean reported
        assert row["auc"] == pytest.approx(sum(f["auc"] for f in row["folds"]) / len(row["folds"]))
        assert all("checkpoint" not in f and f["best_epoch"] <= f["stopped_epoch"] for f in row["folds"])
    n_real = next(r["n_train"] for r in content["scores"] if r["mix"] == "real")
    assert all(r["n_train"] == n_real + r["n_synthetic"] for r in content["scores"])
    assert report.exists() and (study.out / "scores_vs_synthetic.png").stat().st_size > 0
    text = report.read_text()
    assert render_report(study.out / "reference_guided_study.json") == text  # the Markdown is its JSON, rendered
    for needle in [
        "--scale ci",
        study.scale["description"],
        "fold ensemble",
        "scores_vs_synthetic.png",
        "Wall time",
        "invocation(s)",
        "| DDPM training | 1 |",
        f"| classifier training | {len(study.mixes())} |",
    ]:
        assert needle in text, needle  # a number is never reported without its scale and cost

    timings = study.step_timings()
    study.run()  # a rerun finds every step done
    assert study.step_timings() == timings
    assert tree_digest(data) == before
