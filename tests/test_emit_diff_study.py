"""The one-command EMIT-Diff study (Tab. 2 by k-fold cross-validation, Fig. 5 ablations), plan and CI-sized run.

Claims checked: the folds are disjoint and cover every patient; no generative model, synthesis or segmenter training
reads a test-fold patient; every Tab. 2 row (baseline, the nine classic augmentations, EMIT-Diff) and every Fig. 5
point is trained and reported; a run shared by Tab. 2 and an ablation is trained once; the dataset is only read; a
rerun does nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from test_committed_reports import EVAL_METRICS

from conftest import datalist_patients, tree_digest
from pathosynth.data.phantom import generate_acdc_like_dataset
from pathosynth.studies.emit_diff_study import AUGMENTATIONS, EmitDiffStudy, SegmentationRun
from pathosynth.studies.emit_diff_study_report import fold_summary
from pathosynth.studies.reports import render_report

SCALES = Path(__file__).resolve().parents[1] / "bundles" / "text_edge_controlnet" / "configs" / "study"


# --- the plan ------------------------------------------------------------------------------------------------------


def test_tab2_rows_and_ablations_are_planned_once_each(tmp_path):
    study = EmitDiffStudy(tmp_path / "data", tmp_path / "out", "cpu")
    runs = study.runs()
    assert [r.label for r in runs["tab2"]] == ["Baseline", *AUGMENTATIONS, "EMIT-Diff"]
    default = runs["tab2"][-1]
    assert (
        default in runs["ratio"] and default in runs["alpha"] and default in runs["patch_size"]
    )  # Fig. 5 passes through it
    fold0, fold1 = study.fold_runs(0), study.fold_runs(1)
    assert (
        len(fold0) == len(set(r.name for r in fold0)) and fold1 == runs["tab2"]
    )  # ablations only on fold 0 at CPU scale
    assert {r.variants_per_case for r in runs["ratio"]} == set(study.scale["ratios"])
    assert study.fold_variants(0) == max(study.scale["ratios"]) and study.fold_variants(1) == default.variants_per_case


def test_jobs_read_only_their_fold_and_name_their_augmentation(tmp_path):
    study = EmitDiffStudy(tmp_path / "data", tmp_path / "out", "ci")
    study.scale["layout"] = "acdc"  # the plan needs the labels; no data is read
    jobs = {job.name: job for job in study.jobs_plan()}
    assert len(jobs) == 3 * study.k + sum(len(study.fold_runs(f)) for f in range(study.k)) * len(study.seeds)
    for name, job in jobs.items():
        fold = int(re.search(r"fold(\d+)", name)[1])
        train = study.fold_datalist(fold, "train")
        if name.startswith(("train_", "synth_")):
            assert (
                job.settings["datalist"] == train
                and job.settings["dataset_dir"] is None
                and job.settings["max_cases"] is None
            )
        else:
            assert job.settings["real_datalist"] == train and job.settings["test_datalist"] == study.fold_datalist(
                fold, "test"
            )
            assert job.settings["synthetic_datalists"] in ([], [study.synthetic_datalist(fold)])
            assert bool(job.settings["synthetic_datalists"]) == (job.needs == [f"synth_fold{fold}"])
    mirror = jobs["segment_fold1_RandomMirror_seed0"]
    assert mirror.configs[-1] == "augmentation/mirror.json" and mirror.settings["augment"] is True
    baseline = jobs["segment_fold1_baseline_seed0"]
    assert baseline.settings["augment"] is False and baseline.settings["synthetic_datalists"] == []
    assert not any(c.startswith("augmentation/") for c in baseline.configs)
    ablation = jobs["segment_fold0_emit_diff_n2_alpha0.3_patch16_seed0"].settings
    assert (ablation["alpha"], ablation["patch_size"], ablation["variants_per_case"], ablation["augment"]) == (
        0.3,
        16,
        2,
        False,
    )


def test_scales_exist_and_the_paper_scale_keeps_the_papers_settings():
    for name in ("cpu", "ci", "paper"):
        scale = json.loads((SCALES / f"{name}.json").read_text())
        assert {"name", "description", "folds", "emit_diff", "ratios", "alphas", "patch_sizes", "segmentation"} <= set(
            scale
        )
    paper = json.loads((SCALES / "paper.json").read_text())
    assert paper["folds"] == 3 and paper["emit_diff"] == {"alpha": 0.6, "patch_size": 64, "variants_per_case": 50}
    assert paper["ablation_folds"] == "all" and paper["max_patients"] is None
    cpu = json.loads((SCALES / "cpu.json").read_text())
    assert cpu["folds"] == 3 and re.search(r"~[\d.]+ (h|min)\)$", cpu["name"])  # the name states what it costs


def test_study_refuses_unknown_augmentations_and_writing_into_the_dataset(acdc_phantom_dir, tmp_path):
    with pytest.raises(ValueError, match="only read"):
        EmitDiffStudy(acdc_phantom_dir, acdc_phantom_dir / "study", "ci")
    scale = json.loads((SCALES / "ci.json").read_text())
    (tmp_path / "scale.json").write_text(json.dumps({**scale, "augmentations": ["RandomContrast", "Cutout"]}))
    with pytest.raises(ValueError, match="unknown augmentations \\['Cutout'\\]"):
        EmitDiffStudy(acdc_phantom_dir, tmp_path / "out", str(tmp_path / "scale.json"))


def test_emidec_layout_gets_its_labels_and_classes(phantom_dir, tmp_path):
    study = EmitDiffStudy(phantom_dir, tmp_path / "out", "ci")
    assert study.layout == "emidec" and study.classes == ["LV", "myocardium", "MI", "PMO"] and study.labels["PMO"] == 4
    job = study.segmentation_job(0, SegmentationRun(), 0)
    assert job.settings["scored_classes"] == study.classes and job.settings["labels"] == study.labels


def _scores(path: Path, cases: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cases": cases}))
    return path


def test_fold_summary_is_mean_and_std_over_folds_of_case_means(tmp_path):
    def case(rv, lv, hd=None):
        return {
            "RV": {"dice": rv, "precision": rv, "recall": rv, "hd95": hd, "assd": hd},
            "LV": {"dice": lv, "precision": lv, "recall": lv, "hd95": 2.0, "assd": 1.0},
        }

    fold0 = [_scores(tmp_path / "f0" / "scores.json", [case(0.5, 0.7, 4.0), case(0.7, 0.9, None)])]  # RV 0.6, LV 0.8
    fold1 = [
        _scores(tmp_path / "f1s0" / "scores.json", [case(0.8, 1.0, 6.0)]),  # two seeds: RV (0.8+0.6)/2, LV 0.9
        _scores(tmp_path / "f1s1" / "scores.json", [case(0.6, 0.8, 8.0)]),
    ]
    summary = fold_summary([fold0, [], fold1], ["RV", "LV"])  # the middle fold has no scores (not run there)
    assert summary["dice"]["RV"]["per_fold"] == pytest.approx([0.6, 0.7]) and summary["dice"]["RV"]["n_folds"] == 2
    assert summary["dice"]["mean"]["per_fold"] == pytest.approx([0.7, 0.8])
    assert summary["dice"]["mean"]["mean"] == pytest.approx(0.75) and summary["dice"]["mean"]["std"] == pytest.approx(
        math.sqrt(0.005)
    )
    assert summary["hd95"]["RV"]["per_fold"] == pytest.approx([4.0, 7.0])  # an undefined distance is left out


# --- the CI-sized run ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_emit_diff_study_end_to_end_at_ci_scale(tmp_path):
    data = tmp_path / "data"
    generate_acdc_like_dataset(data, n_patients=8, seed=3, in_plane=96)
    before = tree_digest(data)
    study = EmitDiffStudy(data, tmp_path / "study", "ci")
    report = study.run()

    folds = json.loads((study.out / "split" / "folds.json").read_text())["folds"]
    test_patients = [{case.split("_frame")[0] for case in fold["test"]} for fold in folds]
    everyone = {p.name for p in data.iterdir() if p.is_dir()}
    assert len(folds) == 2 and sorted(p for t in test_patients for p in t) == sorted(everyone)  # disjoint and covering
    for fold, tested in zip(folds, test_patients):
        assert not tested & {case.split("_frame")[0] for case in fold["train"]}

    jobs = {p.stem: json.loads(p.read_text()) for p in (study.out / "jobs").glob("*.json")}
    assert len(jobs) == len(study.jobs_plan())
    for name, settings in jobs.items():  # nothing trained or synthesised reads a test-fold patient
        fold = int(re.search(r"fold(\d+)", name)[1])
        if name.startswith(("train_", "synth_")):
            read = [settings["datalist"]]
        else:
            read = [settings["real_datalist"], *settings["synthetic_datalists"]]
            assert datalist_patients(settings["test_datalist"]) == test_patients[fold]
        for datalist in read:
            assert datalist_patients(datalist) and not datalist_patients(datalist) & test_patients[fold], (
                f"{name} reads test patients via {datalist}"
            )
    for fold in range(study.k):  # the variants are of the fold's training cases, n per case
        synthetic = json.loads(Path(study.synthetic_datalist(fold)).read_text())["training"]
        assert datalist_patients(study.synthetic_datalist(fold)) == everyone - test_patients[fold]
        assert len(synthetic) == study.fold_variants(fold) * len(folds[fold]["train"])

    for fold in range(study.k):  # every planned run trained and scored on its fold
        for run in study.fold_runs(fold):
            scores = json.loads((study.segmentation_dir(fold, run, 0) / "scores.json").read_text())
            assert {"RV", "myocardium", "LV"} <= set(scores["cases"][0]) and len(scores["cases"]) == len(
                folds[fold]["test"]
            )
            assert scores["augmentation"] == run.augmentation and scores["mixing"] is run.synthetic
            if run.synthetic:
                assert (scores["alpha"], scores["patch_size"], scores["variants_per_case"]) == (
                    run.alpha,
                    run.patch_size,
                    run.variants_per_case,
                )

    text = report.read_text()
    assert render_report(report.parent / "emit_diff_study.json") == text  # the Markdown is its JSON, rendered
    assert study.augmentations == ["RandomMirror", "DeepStack"]  # the CI scale's subset of Tab. 2
    for row in ["Baseline", *study.augmentations, "EMIT-Diff"]:
        assert re.search(rf"^\| {row} \| [0-9]", text, re.M), row  # a Tab. 2 row with numbers
    for needle in [
        "Dice",
        "Precision",
        "Recall",
        "HD95 (mm)",
        "ASSD (mm)",
        "(a) augmentation ratio n",
        "(b) α",
        "(c) patch size",
        "Wall time",
        "CI scale",
    ]:
        assert needle in text
    assert (report.parent / "ablations.png").is_file()
    results = json.loads((report.parent / "emit_diff_study.json").read_text())
    for key, (_, number, _) in EVAL_METRICS["text_edge_controlnet"].items():  # metadata.json reads what exists
        assert 0 <= number(results) <= 1, key
    assert tree_digest(data) == before  # the dataset is only read

    done = {p.name: p.stat().st_mtime_ns for p in (study.out / "jobs").glob("*.done")}
    EmitDiffStudy(data, tmp_path / "study", "ci").run()  # a rerun does nothing
    assert {p.name: p.stat().st_mtime_ns for p in (study.out / "jobs").glob("*.done")} == done
