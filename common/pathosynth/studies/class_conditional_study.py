"""The class-conditional DDPM's train-on-synthetic, test-on-real table (the paper's Tab. 2) in one resumable command.

    python -m pathosynth.cli class_conditional_study OUT --dataset_dir DATA/pneumoniamnist --scale cpu

The paper (diffusion models for synthetic medical datasets to train CNN classifiers, Sec. 4.5) trains CNNs on
synthetic images only and scores them on unseen real ones. We add the real-only and real + synthetic rows, so a
reader sees what the synthetic set is worth next to the real data it came from.

Steps (bundle workflow runs of ``class_conditional_ddpm``, scheduled and resumed by :class:`.bundle_study.BundleStudy`;
every step reads ``DATA`` -- a MedMNIST npz folder -- and writes under ``OUT`` only):

1. ``train_ddpm``: train.json, the DDPM on the seeded stratified ``train_fraction`` of the real training split.
2. ``synthesise``: inference.json, ``num_per_class`` images of every class (``OUT/synthetic``).
3. ``classify_<training data>`` / ``evaluate_<training data>``: train_classifier.json (k-fold cross-validation on
   ``synthetic``, ``real`` or ``real+synthetic``) and evaluate.json (every fold model and the fold ensemble on the
   real held-out split ``test_split``). The real-only classifier needs no synthetic data, so it trains while the DDPM
   does.
4. report: ``OUT/class_conditional_study.json`` (every number, with the scale, the code's commit and the wall times),
   ``OUT/class_conditional_study.md`` rendered from it alone and ``OUT/class_conditional_study.png`` (accuracy and AUC
   per row). The LIME figures of evaluate.json show real images and stay in ``OUT/classification``.

Scales: ``bundles/class_conditional_ddpm/configs/study/{ci,cpu,paper}.json``; their ``"bundle"`` section is the bundle
overlays and config values every step runs with (``cpu`` runs ``configs/cpu.json``, so the study and the bundle's
CPU overlay cannot drift apart).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from ..data.errors import DatasetError
from ..data.medmnist import find_npz, medmnist_splits
from ..evaluation.classification_report import (
    classification_results,
    plot_classification,
    read_reports,
    render_classification_report,
)
from ..io.atomic import atomic_path
from ..io.results import as_results, write_results
from .bundle_study import BundleStudy, StudyJob
from .reference_guided_study import GENERATE_AND_CLASSIFY_PHASES, classifier_jobs
from .results_markdown import provenance_markdown, wall_time_markdown

__all__ = ["TRAINING_DATA", "ClassConditionalStudy", "render_class_conditional_report"]

TRAINING_DATA = ("synthetic", "real", "real+synthetic")  # train_classifier.json's `training_data` values


class ClassConditionalStudy(BundleStudy):
    """Plan and run the study; see the module docstring. ``dataset_dir`` holds the MedMNIST npz (train split and the
    scale's ``test_split``)."""

    scale_bundle = "class_conditional_ddpm"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.training_data = self.scale_names("training_data", TRAINING_DATA)

    # ---- paths ---------------------------------------------------------------------------------------
    @property
    def ddpm_dir(self) -> Path:
        return self.out / "models" / "ddpm"

    @property
    def synthetic_dir(self) -> Path:
        return self.out / "synthetic"

    @property
    def classification_dir(self) -> Path:
        return self.out / "classification"

    # ---- plan ----------------------------------------------------------------------------------------
    def jobs_plan(self) -> list[StudyJob]:
        files, values = self.section("bundle")
        values.update(
            {
                "dataset_dir": str(self.dataset_dir),
                "ckpt_dir": str(self.ddpm_dir),
                "synthetic_dir": str(self.synthetic_dir),
            }
        )
        jobs = [
            StudyJob(
                "train_ddpm",
                self.scale_bundle,
                ["train.json", *files],
                {**values, "output_dir": str(self.out / "logs" / "tensorboard")},
                "training",
            ),
            StudyJob(
                "synthesise",
                self.scale_bundle,
                ["inference.json", *files],
                {**values, "output_dir": str(self.synthetic_dir), "progress": False},
                "inference",
                ["train_ddpm"],
            ),
        ]
        for data in self.training_data:
            classifier = {
                **values,
                "training_data": data,
                "ckpt_dir": str(self.out / "models" / "classifiers"),
                "output_dir": str(self.classification_dir),
            }
            jobs += classifier_jobs(data, files, classifier, ["synthesise"] if "synthetic" in data else [])
        return jobs

    # ---- report --------------------------------------------------------------------------------------
    def generative_record(self) -> dict:
        """What the synthetic rows rest on: the DDPM's training images (count per class, steps trained) and the
        sampler settings of the synthetic set, as its checkpoint metadata and provenance records state them."""
        metadata = torch.load(self.ddpm_dir / "class_diffusion.pt", weights_only=True, map_location="cpu")["metadata"]
        entries = json.loads((self.synthetic_dir / "datalist.json").read_text())["training"]
        first = json.loads((self.synthetic_dir / entries[0]["provenance"]).read_text())
        names = metadata["class_names"]
        return {
            "class_names": names,
            "ddpm_train_images": len(metadata["train_case_ids"]),
            "ddpm_train_fraction": metadata["train_fraction"],
            "ddpm_steps": metadata["iteration"],
            "synthetic_per_class": {n: sum(e["label"] == k for e in entries) for k, n in enumerate(names)},
            "sampler": first["synthesis"]["sampler"],
        }

    def write_report(self) -> Path:
        """``OUT/class_conditional_study.json`` (every number of the report), ``.md`` rendered from it alone
        (:func:`render_class_conditional_report`) and ``.png``."""
        reports = read_reports(self.classification_dir)
        results = as_results(
            {
                "study": "class_conditional_study",
                "scale": self.scale.get("name", self.scale_path.stem),
                "scale_settings": self.scale,
                "provenance": self.provenance("class_conditional_study"),
                "dataset_files": [self.dataset_npz().name],
                "generative": self.generative_record(),
                "classification": classification_results(reports),
                "step_seconds": self.step_timings(),
                "wall_time": self.wall_time(GENERATE_AND_CLASSIFY_PHASES, "class_conditional_study.json"),
            }
        )
        write_results(self.out / "class_conditional_study.json", results)
        with atomic_path(self.out / "class_conditional_study.md") as tmp:
            tmp.write_text(render_class_conditional_report(results))
        plot_classification(reports, self.out / "class_conditional_study.png")
        return self.out / "class_conditional_study.md"

    def dataset_npz(self) -> Path:
        """The npz every step reads; refused, naming it, when it is missing, ambiguous or has no training split."""
        npz = find_npz(self.dataset_dir)
        splits = medmnist_splits(npz)
        if "train" not in splits:
            raise DatasetError(f"{npz}: no 'train' split to train the DDPM and the classifiers on (found {splits})")
        return npz

    def run(self) -> Path:
        """All steps, then the report; returns the report path. The dataset is checked before any step starts."""
        self.dataset_npz()
        self.out.mkdir(parents=True, exist_ok=True)
        self.run_jobs(self.jobs_plan())
        return self.write_report()


def render_class_conditional_report(results: Mapping) -> str:
    """The generated Markdown of the class-conditional study from its results JSON alone (no discussion)."""
    generative, sampler = results["generative"], results["generative"]["sampler"]
    per_class = ", ".join(f"{n} {generative['synthetic_per_class'][n]}" for n in generative["class_names"])
    lines = [
        f"# Class-conditional DDPM: train on synthetic, test on real (scale {results['scale']})",
        "",
        provenance_markdown(results["provenance"]),
        "",
        f"Data: {', '.join(results['dataset_files'])}. The DDPM trained {generative['ddpm_steps']} steps on "
        f"{generative['ddpm_train_images']} real training images (the seeded stratified "
        f"{generative['ddpm_train_fraction']:.0%} of each class); the synthetic set is {per_class} images, sampled "
        f"with {sampler['num_inference_steps']} steps, η = {sampler['eta']}, guidance w = {sampler['guidance_scale']}.",
        "",
        "## Tab. 2 analogue",
        "",
        "Each score is the mean ± sample std over the cross-validation fold models, each scored on the real held-out "
        "split; the ensemble is the mean softmax of the fold models. Precision, recall and F1 are macro averages.",
        "",
        render_classification_report(results["classification"]).rstrip("\n"),
        "",
        "![accuracy and AUC per row](class_conditional_study.png)",
        "",
        wall_time_markdown(results["wall_time"]),
        "",
    ]
    return "\n".join(lines)
